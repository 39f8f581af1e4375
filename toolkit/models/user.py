"""Models users bring as tiers: a PyTorch factory (plus checkpoint) or a ready ONNX file.

A user model takes its own inputs, made from the request tensors by the tier's ``model.inputs``
mapping. :class:`InputAdapter` builds them (casting, concatenating, and for a per-pair model tiling
the user tensors to one row per candidate); :class:`UserTier` wraps the model so it takes the five
request tensors and returns probabilities [N], like every demo tier. Everything about a user model
that does not fit its spec entry is reported as one :class:`~toolkit.errors.UserModelError` line
that names the tier.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import UserModelError, first_line
from toolkit.spec.schema import USER_TENSORS, TierSpec, UserModelSpec

TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32}


def tier_error(tier: str, problem: str) -> UserModelError:
    """The one-line error about user tier ``tier``: ``tier '<name>': <problem>``."""
    return UserModelError(f"tier {tier!r}: {problem}")


Statistics = dict[str, torch.Tensor]
"""The preprocess step's dense statistics (``user_mean``, ``user_std``, ``ad_mean``, ``ad_std``, [1, D])."""

RAW_STATISTICS = {"user_dense": ("user_mean", "user_std"), "ad_dense": ("ad_mean", "ad_std")}
"""Which statistics undo the normalisation of each dense request tensor."""


def needs_statistics(model: UserModelSpec) -> bool:
    """Whether any input takes raw dense values (so the adapter needs the preprocess statistics)."""
    return any(i.values == "raw" for i in model.inputs)


class InputAdapter(nn.Module):
    """The five request tensors -> a user model's inputs, in the order of ``model.inputs``.

    Inputs with ``values: raw`` get their dense tensors de-normalised (``x * std + mean``). For a
    per-pair model the user tensors are tiled to one row per candidate (``expand``).
    """

    def __init__(self, model: UserModelSpec, statistics: Statistics | None = None) -> None:
        super().__init__()
        self.items = [
            (i.name, i.tensors, TORCH_DTYPES[i.resolved_dtype], i.values == "raw") for i in model.inputs
        ]
        self.pair = model.layout == "pair"
        if needs_statistics(model):
            if statistics is None:
                raise ValueError("an input takes raw dense values: the preprocess statistics are needed")
            for key, value in statistics.items():
                self.register_buffer(key, value.detach().clone().float())

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """The model's inputs from one preprocessed request (user tensors with leading dim 1)."""
        tensors = dict(
            zip(REQUEST_TENSORS, (user_dense, user_sparse, user_history, ad_dense, ad_sparse), strict=True)
        )
        n = ad_dense.shape[0]
        out = []
        for _name, names, dtype, raw in self.items:
            parts = []
            for name in names:
                t = tensors[name]
                if raw and name in RAW_STATISTICS:
                    mean, std = RAW_STATISTICS[name]
                    t = t * getattr(self, std) + getattr(self, mean)
                if self.pair and name in USER_TENSORS:
                    t = t.expand(n, t.shape[1])
                parts.append(t.to(dtype))
            out.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
        return tuple(out)

    @property
    def names(self) -> list[str]:
        """The model's input names, in order."""
        return [item[0] for item in self.items]


def as_probabilities(tier: str, output: Any, n: int, kind: str) -> torch.Tensor:
    """A user model's output for ``n`` candidates as probabilities [N].

    Raises:
        UserModelError: The output is not one tensor of shape [N] or [N, 1].
    """
    if isinstance(output, tuple | list) and len(output) == 1:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise tier_error(
            tier, f"the model returned {type(output).__name__}; expected one tensor of shape [N]"
        )
    if tuple(output.shape) not in ((n,), (n, 1)):
        raise tier_error(
            tier,
            f"the model's output has shape {list(output.shape)} for {n} candidates; "
            f"expected [{n}] or [{n}, 1] (one score per candidate)",
        )
    scores = output.reshape(n).float()
    return torch.sigmoid(scores) if kind == "logit" else scores


class UserTier(nn.Module):
    """A user's PyTorch model behind the demo tiers' interface: request tensors in, probabilities out.

    Attributes:
        model: The user's module.
        adapter: Builds its inputs from the request tensors.
    """

    def __init__(self, tier: TierSpec, model: nn.Module, statistics: Statistics | None = None) -> None:
        super().__init__()
        assert tier.model is not None
        self.tier_name = tier.name
        self.spec = tier.model
        self.model = model
        self.adapter = InputAdapter(tier.model, statistics)

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
    ) -> torch.Tensor:
        """Click probabilities [N] for one request (user tensors with leading dim 1)."""
        inputs = self.adapter(user_dense, user_sparse, user_history, ad_dense, ad_sparse)
        output = self.model(**dict(zip(self.adapter.names, inputs, strict=True)))
        return as_probabilities(self.tier_name, output, ad_dense.shape[0], self.spec.output)


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    if not folder:
        yield
        return
    resolved = str(Path(folder).resolve())
    sys.path.insert(0, resolved)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(resolved)


def import_factory(tier: TierSpec) -> Callable[..., Any]:
    """Import ``model.factory`` (``package.module:callable``) of a user tier.

    Raises:
        UserModelError: The module cannot be imported, has no such attribute, or it is not callable.
    """
    assert tier.model is not None
    module_name, _, attr = tier.model.factory.partition(":")
    if tier.model.path and not Path(tier.model.path).is_dir():
        raise tier_error(tier.name, f"model.path {tier.model.path!r} is not a folder")
    with _on_path(tier.model.path):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's module's
            raise tier_error(tier.name, f"cannot import {module_name!r} ({first_line(exc)})") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise tier_error(tier.name, f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise tier_error(tier.name, f"{tier.model.factory!r} is not callable")
    return target


def factory_source_digest(tier: TierSpec) -> str:
    """sha256 of the file that defines a user tier's factory ('' when it has none), for fingerprints."""
    factory = import_factory(tier)
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:
        source = None
    if not source or not Path(source).is_file():
        return ""
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def _state_dict(tier: str, path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise tier_error(tier, f"checkpoint {str(path)!r} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles of whole modules land here too
        raise tier_error(
            tier,
            f"checkpoint {str(path)!r} cannot be loaded with weights_only=True ({first_line(exc)}); "
            "save model.state_dict()",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise tier_error(
            tier, f"checkpoint {str(path)!r} holds no state_dict (a mapping of names to tensors)"
        )
    return data


def check_signature(tier: TierSpec, model: nn.Module) -> None:
    """Check the model's ``forward`` arguments against the tier's mapped inputs.

    Raises:
        UserModelError: A mapped input the model does not take, or an argument it needs unmapped.
    """
    assert tier.model is not None
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    mapped = [i.name for i in tier.model.inputs]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    extra = [n for n in mapped if n not in named]
    if extra and not takes_any:
        raise tier_error(
            tier.name,
            f"model.inputs maps {extra[0]!r}, but the model's forward() takes ({', '.join(named)})",
        )
    needed = [
        n
        for n, p in params.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in mapped
    ]
    if needed:
        raise tier_error(
            tier.name,
            f"the model's forward() needs input {needed[0]!r}, which model.inputs does not map "
            f"(it maps {', '.join(mapped)})",
        )


def build_user_model(tier: TierSpec, statistics: Statistics | None = None) -> UserTier:
    """Build a factory tier's model, load its checkpoint and check its signature.

    ``statistics`` (the preprocess step's) are needed when an input takes raw dense values.

    Raises:
        UserModelError: Factory not importable or failing, not a module, checkpoint missing or not
            fitting, or the signature does not match the mapping.
    """
    assert tier.model is not None and tier.model.factory
    factory = import_factory(tier)
    try:
        model = factory(**tier.model.kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory may fail any way
        raise tier_error(tier.name, f"factory {tier.model.factory!r} failed ({first_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise tier_error(
            tier.name,
            f"factory {tier.model.factory!r} returned {type(model).__name__}, expected a torch.nn.Module",
        )
    if tier.model.checkpoint:
        path = Path(tier.model.checkpoint)
        state = _state_dict(tier.name, path)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
            detail = lines[0].replace("torch.Size", "").rstrip(".") if lines else first_line(exc)
            raise tier_error(
                tier.name, f"checkpoint {str(path)!r} does not fit the model ({detail})"
            ) from None
        if result.missing_keys or result.unexpected_keys:
            parts = []
            if result.missing_keys:
                parts.append(f"missing {', '.join(result.missing_keys[:3])}")
            if result.unexpected_keys:
                parts.append(f"unexpected {', '.join(result.unexpected_keys[:3])}")
            raise tier_error(
                tier.name, f"checkpoint {str(path)!r} does not fit the model ({'; '.join(parts)})"
            )
    check_signature(tier, model)
    return UserTier(tier, model.eval(), statistics).eval()


def check_outputs(tier: TierSpec, model: nn.Module, example: dict[str, np.ndarray]) -> None:
    """Run a tier on one preprocessed request, and on its first candidate alone, checking the output.

    Raises:
        UserModelError: The model fails on its mapped inputs (most often a dtype it does not take),
            returns the wrong shape, or non-finite or out-of-range scores.
    """
    spec = tier.model
    assert spec is not None
    single = {**example, "ad_dense": example["ad_dense"][:1], "ad_sparse": example["ad_sparse"][:1]}
    for inputs in (example, single):
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in REQUEST_TENSORS]
        try:
            with torch.no_grad():
                scores = model(*tensors)
        except UserModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's forward may fail any way
            mapped = ", ".join(f"{i.name}: {i.resolved_dtype}" for i in spec.inputs)
            raise tier_error(
                tier.name,
                f"the model fails on its mapped inputs ({mapped}): {first_line(exc)}; "
                "check model.inputs (dtype, tensors)",
            ) from None
        values = scores.numpy()
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise tier_error(
                tier.name,
                f"scores lie in [{values.min():.4g}, {values.max():.4g}], not in [0, 1]; "
                f"set model.output to {'logit' if spec.output == 'probability' else 'probability'}?",
            )
