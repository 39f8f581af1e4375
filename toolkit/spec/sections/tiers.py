"""The tiers (``tiers``), the models users bring, and how demo tiers train (``training``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from toolkit.spec.sections.common import KeyedValueError, check_name
from toolkit.spec.variants import TARGETS

USER_TENSORS = ("user_dense", "user_sparse", "user_history")
"""Request tensors with one row per request."""
CANDIDATE_TENSORS = ("ad_dense", "ad_sparse")
"""Request tensors with one row per candidate."""
DENSE_TENSORS = ("user_dense", "ad_dense")
"""Request tensors holding FP32 feature values (the others hold ids)."""
MODEL_DTYPES = ("float32", "int64", "int32")
"""Dtypes a user model's input may be given in."""


@dataclass(frozen=True)
class ModelInput:
    """One input of a user model, made from request tensors.

    Attributes:
        name: The model's name for it: the ``forward`` argument of a PyTorch model, the graph input
            of an ONNX file.
        tensors: Request tensors it is made of (``user_dense``, ``user_sparse``, ``user_history``,
            ``ad_dense``, ``ad_sparse``), after the preprocess step; several are concatenated along
            the feature axis in the order given (a per-pair model's user tensors tiled to N rows
            first).
        dtype: ``float32``, ``int64`` or ``int32``; the request tensors are cast to it in the graph.
            Default: ``float32`` if every tensor is dense, else ``int64``.
        values: ``preprocessed``: dense features normalised with the training statistics (what the
            demo tiers take); ``raw``: dense features as the client sent them (the tier undoes the
            normalisation in its graph), for a model trained on raw values. Ids are always folded.
    """

    name: str
    tensors: tuple[str, ...]
    dtype: str = ""
    values: Literal["preprocessed", "raw"] = "preprocessed"

    def __post_init__(self) -> None:
        if not self.name:
            raise KeyedValueError("name", "must not be empty")
        if not self.tensors:
            raise KeyedValueError("tensors", "name at least one request tensor")
        known = USER_TENSORS + CANDIDATE_TENSORS
        for i, tensor in enumerate(self.tensors):
            if tensor not in known:
                raise KeyedValueError(f"tensors[{i}]", f"expected one of {', '.join(known)}, got {tensor!r}")
        if len(set(self.tensors)) != len(self.tensors):
            raise KeyedValueError("tensors", "names a request tensor twice")
        if self.values == "raw" and not any(t in DENSE_TENSORS for t in self.tensors):
            raise KeyedValueError(
                "values", "raw applies to dense features (user_dense, ad_dense); ids are always folded"
            )
        if self.dtype and self.dtype not in MODEL_DTYPES:
            raise KeyedValueError("dtype", f"expected one of {', '.join(MODEL_DTYPES)}, got {self.dtype!r}")

    @property
    def resolved_dtype(self) -> str:
        """``dtype``, or its default for these tensors."""
        if self.dtype:
            return self.dtype
        return "float32" if all(t in DENSE_TENSORS for t in self.tensors) else "int64"

    @property
    def level(self) -> str:
        """``user`` (one row per request), ``candidate`` (one per candidate) or ``mixed``."""
        users = [t in USER_TENSORS for t in self.tensors]
        return "user" if all(users) else "candidate" if not any(users) else "mixed"


@dataclass(frozen=True)
class UserModelSpec:
    """A tier the user brings: a PyTorch model built by a factory, or a ready ONNX file.

    Attributes:
        factory: ``package.module:callable`` returning an ``nn.Module`` (called with ``kwargs``).
        onnx: Instead of a factory: an ONNX file whose graph inputs are ``inputs``.
        path: Folder put first on ``sys.path`` while importing the factory (optional).
        kwargs: Keyword arguments of the factory.
        checkpoint: ``state_dict`` file loaded into the factory's model with
            ``torch.load(weights_only=True)``; empty: the model as the factory returns it.
        layout: ``request``: one row of user tensors per request and N candidate rows (the user side
            computed once); ``pair``: one row per user-candidate pair (the deployed graph tiles the
            user tensors to N rows).
        output: What the model returns per candidate, shape [N] or [N, 1]: ``probability`` or
            ``logit`` (the deployed tier applies the sigmoid).
        inputs: The model's inputs, made from request tensors.
    """

    inputs: tuple[ModelInput, ...]
    factory: str = ""
    onnx: str = ""
    path: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    layout: Literal["request", "pair"] = "request"
    output: Literal["probability", "logit"] = "probability"

    def __post_init__(self) -> None:
        if bool(self.factory) == bool(self.onnx):
            raise ValueError("give exactly one of factory (package.module:callable) and onnx (a file)")
        if self.factory and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", self.factory):
            raise KeyedValueError("factory", f"expected package.module:callable, got {self.factory!r}")
        if self.onnx and (self.checkpoint or self.kwargs or self.path):
            raise ValueError("an onnx tier takes no checkpoint, kwargs or path (its weights are in the file)")
        if not self.inputs:
            raise KeyedValueError("inputs", "map at least one model input onto the request tensors")
        names = [i.name for i in self.inputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KeyedValueError("inputs", f"input names must be unique, repeated: {', '.join(dupes)}")
        for i, item in enumerate(self.inputs):
            if item.level == "mixed" and self.layout != "pair":
                raise KeyedValueError(
                    f"inputs[{i}].tensors",
                    "mixes user-level and candidate-level tensors, which only a per-pair model "
                    "(layout: pair) can take as one input",
                )
        if not any(i.level != "user" for i in self.inputs):
            raise KeyedValueError("inputs", "no input holds candidate tensors (ad_dense or ad_sparse)")


@dataclass(frozen=True)
class TierSpec:
    """One tier: a registered architecture and its size knobs, or a model the user brings.

    Attributes:
        name: Tier name; also the Triton model name of the deployed tier.
        architecture: A registered architecture (``lite``, ``standard``, ``xl``).
        params: Size knobs of that architecture; validated by its config class.
        model: Instead of an architecture: the user's PyTorch model or ONNX file.
        pool: With ``pools``: the pool whose servers run this tier (default: the entry pool, the
            first of ``pools``).
        instances: Instances of this tier's model (0: ``triton.tier_instances``). They do the
            tier's work when the router calls it through BLS or over gRPC (``local_tiers: bls``,
            GPU tiers, other pools); a CPU tier the router runs in its own process only loads them.
        instance_kind: ``cpu`` or ``gpu``: where this tier's instances run, whatever the deployment's
            target (``triton.target`` or deploy's ``--target``); a ``cpu`` tier on a GPU server runs
            an ONNX variant on the server's CPU cores, which leaves the GPU to the larger tiers and
            saves the small ones the copy to the device. Empty (the default): the target. Not
            with ``pools`` (a pool's ``hardware`` sets its tiers').
    """

    name: str
    architecture: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    model: UserModelSpec | None = None
    pool: str = ""
    instances: int = 0
    instance_kind: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "tier name")
        if bool(self.architecture) == (self.model is not None):
            raise ValueError(
                f"tier {self.name!r}: give exactly one of architecture (a demo architecture) and "
                "model (your own model)"
            )
        if self.model is not None and self.params:
            raise KeyedValueError("params", "belongs to an architecture; a user model takes model.kwargs")
        if not isinstance(self.instances, int) or self.instances < 0:
            raise KeyedValueError(
                "instances", f"must be a count >= 0 (0: triton.tier_instances), got {self.instances!r}"
            )
        if self.instance_kind and self.instance_kind not in TARGETS:
            raise KeyedValueError(
                "instance_kind",
                f"expected one of {', '.join(TARGETS)} (or none: the target's), got {self.instance_kind!r}",
            )

    @property
    def kind(self) -> str:
        """``builtin`` (a registered architecture), ``factory`` (a user PyTorch model) or ``onnx``."""
        if self.model is None:
            return "builtin"
        return "factory" if self.model.factory else "onnx"

    @property
    def trainable(self) -> bool:
        """Whether ``toolkit train`` trains this tier (only registered architectures)."""
        return self.model is None


@dataclass(frozen=True)
class TrainingSpec:
    """How the demo tiers are trained.

    Attributes:
        epochs: Passes over the training requests.
        batch_requests: Requests per optimizer step (each with all its candidates).
        learning_rate: Adam's peak learning rate (a one-cycle schedule; constant under four steps).
        weight_decay: Adam's weight decay.
    """

    epochs: int = 1
    batch_requests: int = 64
    learning_rate: float = 0.005
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_requests < 1:
            raise ValueError("epochs and batch_requests must be positive")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise KeyedValueError("learning_rate", f"must be a positive number, got {self.learning_rate}")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise KeyedValueError("weight_decay", f"must be a number >= 0, got {self.weight_decay}")
