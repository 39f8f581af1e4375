"""Typed, frozen objects that an ensemble spec file is validated into.

Each dataclass checks its own invariants in ``__post_init__`` and raises :class:`ValueError` with a
short statement of what was expected; :mod:`toolkit.spec.load` turns that into a
:class:`~toolkit.errors.SpecError` that names the file and the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from toolkit.router.policy import LOCAL_TIERS, REQUEST_FEATURES
from toolkit.spec.variants import FP32, TARGETS, VARIANTS, check_variant

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""Names of ensembles, tiers and tables: Triton-legal model names, no path separators."""


class KeyedValueError(ValueError):
    """A ValueError about a key below the object being validated.

    Attributes:
        key: Dotted key path relative to that object, for example ``routing.default_tier``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def check_name(value: str, what: str, key: str = "name") -> None:
    """Raise KeyedValueError (on ``key``) unless ``value`` is a legal model/tier/table name."""
    if not NAME_PATTERN.match(value):
        raise KeyedValueError(
            key,
            f"{what} {value!r} is not a legal name: use a letter, then letters, digits, '_' or '-' "
            "(at most 64 characters, no path separators)",
        )


@dataclass(frozen=True)
class SparseFeature:
    """One categorical feature and its embedding table.

    Attributes:
        name: Feature name, unique within the spec.
        vocab: Rows in the table. Row 0 is kept for "missing"; raw id 0 maps to it and every other
            raw id folds into rows ``1 .. vocab-1`` as ``1 + (id - 1) % (vocab - 1)``.
    """

    name: str
    vocab: int

    def __post_init__(self) -> None:
        check_name(self.name, "feature name")
        if self.vocab < 2:
            raise KeyedValueError("vocab", f"must be at least 2, got {self.vocab}")


@dataclass(frozen=True)
class HistoryFeature:
    """The user's recently engaged ads, as ids of the table named ``table``.

    Attributes:
        length: L, the number of history slots the tiers see (longer histories keep the newest L,
            shorter ones are left-padded with 0).
        table: Name of the ad sparse feature whose ids and embedding table the history shares.
    """

    length: int
    table: str

    def __post_init__(self) -> None:
        if not 1 <= self.length <= 4096:
            raise KeyedValueError("length", f"must be between 1 and 4096, got {self.length}")


@dataclass(frozen=True)
class Features:
    """The request schema: sizes of each request tensor and its tables.

    Attributes:
        user_dense: Width D of ``user_dense`` [1, D], numeric user and context features.
        ad_dense: Width of ``ad_dense`` [N, D], numeric candidate features.
        user_sparse: Categorical user and context features, one column each of ``user_sparse`` [1, S].
        ad_sparse: Categorical candidate features, one column each of ``ad_sparse`` [N, S].
        history: The user's recently engaged ads, ``user_history`` [1, L].
    """

    user_dense: int
    ad_dense: int
    user_sparse: tuple[SparseFeature, ...]
    ad_sparse: tuple[SparseFeature, ...]
    history: HistoryFeature

    def __post_init__(self) -> None:
        if self.user_dense < 1 or self.ad_dense < 1:
            raise ValueError("user_dense and ad_dense must be at least 1")
        if not self.user_sparse or not self.ad_sparse:
            raise ValueError("user_sparse and ad_sparse need at least one feature each")
        names = [f.name for f in self.user_sparse + self.ad_sparse]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique, repeated: {', '.join(dupes)}")
        if self.history.table not in [f.name for f in self.ad_sparse]:
            raise KeyedValueError(
                "history.table",
                f"{self.history.table!r} must name one of the ad_sparse features "
                f"({', '.join(f.name for f in self.ad_sparse)})",
            )

    @property
    def history_vocab(self) -> int:
        """Rows of the table the history indexes."""
        return self.ad_sparse[self.history_table_index].vocab

    @property
    def history_table_index(self) -> int:
        """Column of ``ad_sparse`` whose table the history shares."""
        return [f.name for f in self.ad_sparse].index(self.history.table)


@dataclass(frozen=True)
class CandidateRange:
    """How many candidates a generated request carries (uniform between the bounds).

    Attributes:
        min: Fewest candidates of a request (at least 1).
        max: Most candidates of a request.
    """

    min: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ValueError(f"need 1 <= min <= max, got min={self.min}, max={self.max}")


LOG_FORMATS = ("criteo", "parquet", "csv")
"""Request-log file formats ``data.files`` can read."""


@dataclass(frozen=True)
class LogColumns:
    """Which columns of a log file make up each part of a request.

    Attributes:
        request_id: Column whose value groups rows into requests (rows of one request are
            consecutive); empty: every row is a request with one candidate.
        label: Click column (0/1).
        user_dense: Columns of ``user_dense``, as many as ``features.user_dense``.
        user_sparse: Columns of ``user_sparse``, one per ``features.user_sparse`` entry.
        history: Column holding the history ids (a list, or ids separated by spaces); empty: none.
        ad_dense: Columns of ``ad_dense``, as many as ``features.ad_dense``.
        ad_sparse: Columns of ``ad_sparse``, one per ``features.ad_sparse`` entry.
        value: Column holding what each request is worth (a finite, positive number, e.g. an ad
            auction's expected revenue; like the user columns, taken from a request's first row and
            equal on its other rows); empty: none, every request is worth 1. Parquet and CSV only.
    """

    user_dense: tuple[str, ...]
    user_sparse: tuple[str, ...]
    ad_dense: tuple[str, ...]
    ad_sparse: tuple[str, ...]
    request_id: str = ""
    label: str = "label"
    history: str = ""
    value: str = ""

    def names(self) -> list[str]:
        """Every column named, in a fixed order."""
        extra = [c for c in (self.request_id, self.label, self.history, self.value) if c]
        return [*extra, *self.user_dense, *self.user_sparse, *self.ad_dense, *self.ad_sparse]


@dataclass(frozen=True)
class LogFiles:
    """Request logs to train and evaluate on instead of generated data.

    Attributes:
        format: ``criteo`` (the display-advertising TSV: label, I1..I13, C1..C26 in hex),
            ``parquet`` or ``csv`` (one row per impression, with a header).
        train: File (or folder of files) training streams through.
        holdout: File held-out sets are read from (the first ``data.holdout_requests`` requests).
        calibration: File calibration sets (quantization, routing gate) come from; empty: ``train``.
        columns: Which columns make up each request tensor.
        chunk_rows: Rows read at a time; memory stays bounded by this, whatever the file size.
    """

    format: Literal["criteo", "parquet", "csv"]
    train: str
    holdout: str
    columns: LogColumns
    calibration: str = ""
    chunk_rows: int = 65536

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise KeyedValueError("chunk_rows", f"must be positive, got {self.chunk_rows}")


@dataclass(frozen=True)
class DataSpec:
    """The data tiers train and are evaluated on: generated (the default) or read from logs.

    Attributes:
        train_requests: Generated requests to train on (read logs: the whole ``files.train``).
        holdout_requests: Held-out requests for metrics, parity checks and evaluation.
        candidates: Candidate count per generated request.
        informative_share: Share of generated users with long, informative histories.
        files: Request logs to read instead of generating data.
    """

    train_requests: int = 60000
    holdout_requests: int = 6000
    candidates: CandidateRange = field(default_factory=lambda: CandidateRange(8, 48))
    informative_share: float = 0.35
    files: LogFiles | None = None

    def __post_init__(self) -> None:
        if self.train_requests < 1 or self.holdout_requests < 1:
            raise ValueError("train_requests and holdout_requests must be positive")
        if not 0.0 <= self.informative_share <= 1.0:
            raise KeyedValueError("informative_share", f"must lie in [0, 1], got {self.informative_share}")


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
    """

    name: str
    architecture: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    model: UserModelSpec | None = None
    pool: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "tier name")
        if bool(self.architecture) == (self.model is not None):
            raise ValueError(
                f"tier {self.name!r}: give exactly one of architecture (a demo architecture) and "
                "model (your own model)"
            )
        if self.model is not None and self.params:
            raise KeyedValueError("params", "belongs to an architecture; a user model takes model.kwargs")

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


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed difference between an exported model and PyTorch.

    Attributes:
        atol: Absolute part: ``|onnx - torch| <= atol + rtol * |torch|``.
        rtol: Relative part of the same bound.
    """

    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        for key in ("atol", "rtol"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise KeyedValueError(key, f"must be a number >= 0, got {value}")


@dataclass(frozen=True)
class AcceptanceSpec:
    """The acceptance check every exported variant must pass on the held-out requests to be deployable.

    Both bounds compare the variant under ONNX Runtime (or TensorRT) with the fp32 PyTorch model on
    the same requests. The NE bound is two-sided, because a variant is meant to be the same model:
    a large change either way means it computes something else (a lucky gain on one held-out set is
    not a reason to serve it). The AUC bound is one-sided, as in MLPerf.

    Attributes:
        max_ne_change: Largest relative change in normalized entropy, either way (0.001 = 0.1%).
        min_auc_ratio: Smallest AUC as a share of fp32's (0.999 = the MLPerf DLRM "99.9%" target).
    """

    max_ne_change: float = 0.001
    min_auc_ratio: float = 0.999

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_ne_change) or self.max_ne_change < 0:
            raise KeyedValueError("max_ne_change", f"must be a number >= 0, got {self.max_ne_change}")
        if not math.isfinite(self.min_auc_ratio) or not 0 < self.min_auc_ratio <= 1:
            raise KeyedValueError("min_auc_ratio", f"must lie in (0, 1], got {self.min_auc_ratio}")


@dataclass(frozen=True)
class TensorRTSpec:
    """How TensorRT engines are built (on machines with a GPU and the ``tensorrt`` package).

    The optimization profile covers the candidate dimension N from 1 to ``max_candidates``, tuned
    for ``opt_candidates``.

    Attributes:
        opt_candidates: N the kernels are tuned for.
        max_candidates: Largest N the engine accepts; 0 means ``triton.max_candidates``.
        workspace_mb: Builder workspace limit in MiB.
    """

    opt_candidates: int = 64
    max_candidates: int = 0
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.opt_candidates < 1:
            raise KeyedValueError("opt_candidates", f"must be positive, got {self.opt_candidates}")
        if self.max_candidates < 0:
            raise KeyedValueError("max_candidates", f"must be >= 0, got {self.max_candidates}")
        if self.max_candidates and self.max_candidates < self.opt_candidates:
            raise KeyedValueError(
                "max_candidates",
                f"must be at least opt_candidates ({self.opt_candidates}), got {self.max_candidates}",
            )
        if self.workspace_mb < 16:
            raise KeyedValueError("workspace_mb", f"must be at least 16, got {self.workspace_mb}")


@dataclass(frozen=True)
class ExportSpec:
    """Export settings.

    Attributes:
        opset: ONNX opset version.
        parity_requests: Held-out requests each exported model is checked on.
        tolerance: Allowed difference of the fp32 ONNX model against PyTorch
            (|onnx - torch| <= atol + rtol * |torch|).
        timing_candidates: Candidate counts at which each exported variant is timed.
        timing_rounds: Interleaved rounds in which a tier's variants are timed (the median counts),
            so that drift of a shared machine affects every variant alike.
        precisions: Variants to build per tier (``onnx-fp32`` is always built: the others are made
            from it).
        required: Variants that must pass for ``toolkit export`` to succeed; any other variant may
            be FAILED or SKIPPED and the run still exits 0.
        quantization_requests: Generated requests (from the training distribution) that calibrate
            ``onnx-int8-static`` and the TensorRT int8/fp8 engines (read from ``calibration_requests``
            too, the key's old name).
        acceptance: The acceptance check on the held-out requests (read from ``gate`` too, the
            key's old name).
        tensorrt: TensorRT engine settings.
    """

    opset: int = 18
    parity_requests: int = 32
    tolerance: Tolerance = field(default_factory=Tolerance)
    timing_candidates: tuple[int, ...] = (16, 64, 256)
    timing_rounds: int = 3
    precisions: tuple[str, ...] = tuple(VARIANTS)
    required: tuple[str, ...] = (FP32,)
    quantization_requests: int = 256
    acceptance: AcceptanceSpec = field(default_factory=AcceptanceSpec)
    tensorrt: TensorRTSpec = field(default_factory=TensorRTSpec)

    def __post_init__(self) -> None:
        if self.parity_requests < 1:
            raise KeyedValueError("parity_requests", "must be positive")
        if not self.timing_candidates or any(n < 1 for n in self.timing_candidates):
            raise KeyedValueError("timing_candidates", "must be a non-empty list of positive counts")
        if self.timing_rounds < 1:
            raise KeyedValueError("timing_rounds", f"must be positive, got {self.timing_rounds}")
        if self.quantization_requests < 1:
            raise KeyedValueError(
                "quantization_requests", f"must be positive, got {self.quantization_requests}"
            )
        for key in ("precisions", "required"):
            for i, name in enumerate(getattr(self, key)):
                try:
                    check_variant(name)
                except ValueError as exc:
                    raise KeyedValueError(f"{key}[{i}]", str(exc)) from None
        missing = [v for v in self.required if v not in self.built_variants]
        if missing:
            raise KeyedValueError("required", f"{missing[0]!r} is required but not listed in precisions")

    @property
    def built_variants(self) -> tuple[str, ...]:
        """Variants export builds, in catalogue order: ``precisions`` plus ``onnx-fp32``."""
        wanted = {FP32, *self.precisions}
        return tuple(v for v in VARIANTS if v in wanted)


RuleOp = Literal["<", "<=", ">", ">=", "==", "!="]
RULE_FEATURES = REQUEST_FEATURES
"""Request-level features a rule may test: those the router computes."""


@dataclass(frozen=True)
class Rule:
    """Route to ``tier`` when ``feature op value`` holds for a request.

    Attributes:
        feature: A request-level feature the router computes: ``history_length`` (non-padding
            history ids after preprocessing) or ``num_candidates``.
        op: Comparison operator.
        value: Right-hand side.
        tier: Tier to use when the rule matches.
    """

    feature: str
    op: RuleOp
    value: float
    tier: str

    def __post_init__(self) -> None:
        if self.feature not in RULE_FEATURES:
            raise KeyedValueError(
                "feature", f"must be one of {', '.join(RULE_FEATURES)}, got {self.feature!r}"
            )


@dataclass(frozen=True)
class CascadeSpec:
    """The ``cascade`` policy: the default tier scores every candidate, ``tier`` re-scores the top.

    Attributes:
        tier: The bigger tier that re-scores the default tier's top candidates.
        top_k: How many top candidates it re-scores (all of them when N is smaller).
    """

    tier: str = ""
    top_k: int = 8

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise KeyedValueError("top_k", f"must be positive, got {self.top_k}")


@dataclass(frozen=True)
class BudgetSpec:
    """Latency budgets, applied on top of any policy.

    The router caps each request's tier at the most expensive one it expects to answer within the
    request's ``latency_budget_ms`` (or ``default_ms``).

    Attributes:
        default_ms: Budget of requests that give none; 0 means no budget.
        percentile: Percentile of the router's recent calls of a tier that estimates its latency.
        window: Recent calls kept per tier and candidate-count bucket.
        max_age_s: Calls older than this many seconds no longer count, so a tier stepped away from
            under load is probed again once the load has passed.
    """

    default_ms: float = 0.0
    percentile: float = 90.0
    window: int = 64
    max_age_s: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.default_ms) or self.default_ms < 0:
            raise KeyedValueError("default_ms", f"must be a number >= 0, got {self.default_ms}")
        if not 0 < self.percentile <= 100:
            raise KeyedValueError("percentile", f"must lie in (0, 100], got {self.percentile}")
        if self.window < 1:
            raise KeyedValueError("window", f"must be positive, got {self.window}")
        if not math.isfinite(self.max_age_s) or self.max_age_s <= 0:
            raise KeyedValueError("max_age_s", f"must be a positive number, got {self.max_age_s}")


@dataclass(frozen=True)
class LearnedSpec:
    """The ``learned`` policy: a gate fitted by ``toolkit calibrate``, and its price.

    Attributes:
        target_share: Share of requests the largest tier should serve; ``toolkit calibrate`` picks
            the price ``lambda`` that gives it on the gate's requests.
        target_cost_mflop: Instead of a share: the mean MFLOP per request to spend (0: use
            ``target_share``).
        calibration_requests: Requests the gate is fitted and priced on (0: as many as
            ``data.holdout_requests`` from a calibration set, up to 20,000 cross-fitted).
        gate: ``request``: a small model of its own over the user's ids, the history's items and
            the candidates (embeddings, a pooled history, each candidate's attention over the
            history, candidate-set statistics); ``summary``: an MLP over the dense user features,
            history length and N only.
        cheapest_first: Run the cheapest tier on every request first and give its scores to the
            gate; a request the gate keeps on the cheapest tier is answered with them.
        fit_on: Where the gate learns the tiers' behaviour out of sample. ``calibration``:
            requests no tier trained on (generated ones with a seed of their own, or the first
            ``calibration_requests`` of ``data.files.calibration``); ``cross_fit``: the training
            requests, scored by tier copies trained on the other ``folds`` (every tier is
            retrained ``folds`` times); ``auto``: ``calibration`` for generated data and for logs
            with a calibration file, else ``cross_fit``.
        folds: Folds of ``cross_fit``.
        targets: What the gate may learn, per candidate: ``kl`` (label-free KL(p_big || p_small)),
            ``gain`` (the realised log-loss gain), ``blend`` (their mean). With more than one,
            ``toolkit calibrate`` keeps the one that routes best in a 3-fold validation.
    """

    target_share: float = 0.3
    target_cost_mflop: float = 0.0
    calibration_requests: int = 0
    gate: Literal["request", "summary"] = "request"
    cheapest_first: bool = False
    fit_on: Literal["auto", "calibration", "cross_fit"] = "auto"
    folds: int = 3
    targets: tuple[str, ...] = ("kl", "gain", "blend")

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_share <= 1.0:
            raise KeyedValueError("target_share", f"must lie in [0, 1], got {self.target_share}")
        if not math.isfinite(self.target_cost_mflop) or self.target_cost_mflop < 0:
            raise KeyedValueError("target_cost_mflop", f"must be a number >= 0, got {self.target_cost_mflop}")
        if self.calibration_requests < 0:
            raise KeyedValueError("calibration_requests", f"must be >= 0, got {self.calibration_requests}")
        if self.folds < 2:
            raise KeyedValueError("folds", f"must be at least 2, got {self.folds}")
        known = ("kl", "gain", "blend")
        if not self.targets:
            raise KeyedValueError("targets", f"must name at least one of {', '.join(known)}")
        for i, target in enumerate(self.targets):
            if target not in known:
                raise KeyedValueError(
                    f"targets[{i}]", f"unknown target {target!r}; expected one of {', '.join(known)}"
                )
        if len(set(self.targets)) != len(self.targets):
            raise KeyedValueError("targets", f"names a target twice: {list(self.targets)}")


@dataclass(frozen=True)
class RoutingSpec:
    """The routing policy and its knobs.

    Attributes:
        policy: ``static`` serves ``default_tier`` always; ``rules`` serves the tier of the first
            matching rule, else ``default_tier``; ``cascade`` scores every candidate with
            ``default_tier`` and re-scores the top ``cascade.top_k`` with ``cascade.tier``;
            ``learned`` serves the tier whose predicted gain beats its cost (``toolkit calibrate``
            fits the gate). With any policy, the request parameter ``tier`` forces a tier by name.
        default_tier: Tier used when no rule matches (and the only tier of ``static``).
        rules: Ordered rules; the first that matches wins.
        cascade: Settings of the ``cascade`` policy.
        budget: Latency budgets, applied on top of any policy.
        learned: Settings of the ``learned`` policy.
    """

    policy: Literal["static", "rules", "cascade", "learned"] = "rules"
    default_tier: str = ""
    rules: tuple[Rule, ...] = ()
    cascade: CascadeSpec = field(default_factory=CascadeSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    learned: LearnedSpec = field(default_factory=LearnedSpec)


@dataclass(frozen=True)
class TritonSpec:
    """Settings of the generated Triton repository and of the server that runs it.

    Attributes:
        backend: Backend of the tier and preprocess models: ``onnxruntime`` (NGC tritonserver),
            ``python`` (an ONNX Runtime runner in the python backend, for servers without the
            onnxruntime backend, such as the embedded one) or ``auto`` (pick by the server).
        max_candidates: Largest N a request may carry.
        router_instances: Instances of the router model (>= 2: with one, a queue policy stalls bursts
            on the 2.51 server; each runs one request at a time).
        queue_timeout_ms: How long a request may wait in the router's queue (the ensemble's only
            queue) before it is rejected with UNAVAILABLE; a client's request ``timeout`` can only
            shorten it; 0 means no bound.
        tier_instances: Instances of each tier model.
        tier_timeout_ms: Deadline of each of the router's tier calls: past it the router gives up
            and the next cheaper tier answers; a tier (other than the cheapest) whose recent calls
            (``routing.budget.percentile``) take longer is not called until its slow calls age out
            (``routing.budget.max_age_s``); 0: no deadline. A tier the router runs in its own
            process (``local_tiers: inprocess``) is not cut off mid-call; only its slow calls count.
        local_tiers: How the router calls the tiers it serves beside it on the CPU (and the gate):
            ``inprocess`` runs an ONNX Runtime session on the file Triton serves in the router's own
            process (no second hop); ``bls`` calls the tier model through BLS. GPU tiers, TensorRT
            plans and other pools' tiers are called through BLS or gRPC either way.
        host: Address the server binds to.
        grpc_port: gRPC port.
        http_port: HTTP port.
        metrics_port: Metrics port.
        target: Hardware the deployed tiers run on: ``cpu`` (ONNX variants on CPU instances) or
            ``gpu`` (TensorRT engines, or ONNX Runtime with the TensorRT accelerator, on GPU
            instances of an NGC tritonserver).
        pin: Variant to deploy per tier, instead of the fastest one that passed the acceptance check.
    """

    backend: Literal["auto", "onnxruntime", "python"] = "auto"
    max_candidates: int = 1024
    router_instances: int = 2
    queue_timeout_ms: float = 100.0
    tier_instances: int = 1
    tier_timeout_ms: float = 1000.0
    local_tiers: Literal["inprocess", "bls"] = "inprocess"
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    target: Literal["cpu", "gpu"] = "cpu"
    pin: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise KeyedValueError("target", f"expected one of {', '.join(TARGETS)}, got {self.target!r}")
        for tier, variant in self.pin.items():
            if not isinstance(variant, str):
                raise KeyedValueError(f"pin.{tier}", f"expected a variant name, got {variant!r}")
            try:
                check_variant(variant)
            except ValueError as exc:
                raise KeyedValueError(f"pin.{tier}", str(exc)) from None
        if self.local_tiers not in LOCAL_TIERS:
            raise KeyedValueError(
                "local_tiers", f"expected one of {', '.join(LOCAL_TIERS)}, got {self.local_tiers!r}"
            )
        if self.max_candidates < 1:
            raise KeyedValueError("max_candidates", f"must be positive, got {self.max_candidates}")
        if self.router_instances < 2:
            raise KeyedValueError(
                "router_instances",
                f"must be at least 2 (one instance runs one request at a time), got {self.router_instances}",
            )
        if self.tier_instances < 1:
            raise KeyedValueError("tier_instances", f"must be positive, got {self.tier_instances}")
        if not math.isfinite(self.tier_timeout_ms) or self.tier_timeout_ms < 0:
            raise KeyedValueError("tier_timeout_ms", f"must be a number >= 0, got {self.tier_timeout_ms}")
        if not math.isfinite(self.queue_timeout_ms) or self.queue_timeout_ms < 0:
            raise KeyedValueError("queue_timeout_ms", f"must be a number >= 0, got {self.queue_timeout_ms}")
        for port in (self.grpc_port, self.http_port, self.metrics_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"ports must lie in 1..65535, got {port}")


@dataclass(frozen=True)
class ValidationSpec:
    """What the router does with requests that are well-formed but outside the schema's ranges.

    Negative ids, non-finite dense features, a candidate count of 0 or above
    ``triton.max_candidates`` and disagreeing candidate counts are always refused.

    Attributes:
        out_of_range_ids: An id at or above its table's vocabulary: ``fold`` it into the table as
            the preprocess step does (and count it), or ``reject`` the request.
        long_history: A history longer than ``features.history.length``: ``reject`` the request, or
            ``truncate`` it to its newest L ids (and count it).
    """

    out_of_range_ids: Literal["fold", "reject"] = "fold"
    long_history: Literal["reject", "truncate"] = "reject"


POOL_NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")
"""Pool names: DNS labels (they name a repository folder and the pool's Kubernetes objects)."""

_HOST_PORT = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>\d{1,5})$"
)
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_address(value: str, key: str) -> None:
    """Raise KeyedValueError (on ``key``) unless ``value`` is a gRPC address ``host:port``."""
    match = _HOST_PORT.match(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise KeyedValueError(
            key, f"expected a gRPC address host:port (port 1-65535, IPv6 in brackets), got {value!r}"
        )


@dataclass(frozen=True)
class PoolSpec:
    """A pool: one Triton deployment (a set of identical servers) that serves some of the tiers.

    The first pool of ``pools`` is the *entry* pool: its servers hold the ensemble, the router, the
    preprocess step and the gate besides their tiers, and clients call them. The router calls tiers
    of its own pool through BLS and tiers of other pools over gRPC, at ``addresses``.

    Attributes:
        name: Pool name, a DNS label (``cpu``, ``big``); ``toolkit deploy`` writes its repository
            to ``<out>/<name>``.
        hardware: ``cpu`` or ``gpu``: the deploy target of its tiers (``gpu``: TensorRT engines or
            ONNX Runtime on GPU instances of an NGC tritonserver) and what its pods request.
        addresses: gRPC addresses (``host:port``) of the pool's servers, which the router of the
            entry pool calls; tried in turn when one is unreachable. Default: the pool's Kubernetes
            Service (from the ``kubernetes`` section). ``toolkit deploy --pool-address`` overrides.
        timeout_ms: Deadline of the router's calls to this pool (0: ``triton.tier_timeout_ms``).
        retry_after_ms: How long the router leaves an address alone after a call to it failed or
            timed out; then one request tries it again.
        cpu: CPU request of each of its pods (a Kubernetes quantity: ``"4"``, ``"500m"``).
        memory: Memory request and limit of each pod (``"8Gi"``).
        gpus: GPUs per pod (``nvidia.com/gpu``); default 1 for ``gpu`` pools, 0 for ``cpu`` pools.
        min_replicas: Fewest pods the autoscaler keeps.
        max_replicas: Most pods the autoscaler starts.
        cpu_target_utilization: Autoscaler target, percent of the CPU request.
        queue_time_target_us: When > 0, the autoscaler also scales on Triton's mean queue time per
            request (microseconds) through a custom-metrics adapter.
    """

    name: str
    hardware: Literal["cpu", "gpu"] = "cpu"
    addresses: tuple[str, ...] = ()
    timeout_ms: float = 0.0
    retry_after_ms: float = 1000.0
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = -1
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_target_utilization: int = 70
    queue_time_target_us: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not POOL_NAME_PATTERN.match(self.name):
            raise KeyedValueError(
                "name",
                f"pool name {self.name!r} is not a DNS label: lowercase letters, digits and '-', starting "
                "with a letter, at most 32 characters",
            )
        if self.hardware not in TARGETS:
            raise KeyedValueError("hardware", f"expected one of {', '.join(TARGETS)}, got {self.hardware!r}")
        for i, address in enumerate(self.addresses):
            check_address(address, f"addresses[{i}]")
        if len(set(self.addresses)) != len(self.addresses):
            raise KeyedValueError("addresses", "addresses must differ")
        if not math.isfinite(self.timeout_ms) or self.timeout_ms < 0:
            raise KeyedValueError("timeout_ms", f"must be a number >= 0, got {self.timeout_ms}")
        if not math.isfinite(self.retry_after_ms) or self.retry_after_ms <= 0:
            raise KeyedValueError("retry_after_ms", f"must be a number > 0, got {self.retry_after_ms}")
        if self.gpus == -1:
            object.__setattr__(self, "gpus", 1 if self.hardware == "gpu" else 0)
        if self.gpus < 0:
            raise KeyedValueError("gpus", f"must be >= 0, got {self.gpus}")
        if self.hardware == "gpu" and self.gpus < 1:
            raise KeyedValueError("gpus", "a gpu pool needs at least 1 GPU per pod")
        if self.hardware == "cpu" and self.gpus:
            raise KeyedValueError("gpus", f"a cpu pool requests no GPUs, got {self.gpus}")
        if self.min_replicas < 1:
            raise KeyedValueError("min_replicas", f"must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise KeyedValueError(
                "max_replicas", f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}"
            )
        if not 1 <= self.cpu_target_utilization <= 1000:
            raise KeyedValueError(
                "cpu_target_utilization",
                f"must be a percentage in 1..1000, got {self.cpu_target_utilization}",
            )
        if self.queue_time_target_us < 0:
            raise KeyedValueError("queue_time_target_us", f"must be >= 0, got {self.queue_time_target_us}")


@dataclass(frozen=True)
class KubernetesSpec:
    """Where and how ``toolkit k8s`` runs the pools on a Kubernetes cluster.

    Attributes:
        namespace: Namespace of every object (default: the ensemble name as a DNS label).
        repository: ``s3://bucket/prefix`` the repositories are published to with ``toolkit deploy
            --out``; a pool reads ``<repository>/<pool>`` (a spec without pools reads ``repository``).
        s3_endpoint: An S3-compatible endpoint (``host:port`` or ``https://host:port``), or empty for
            AWS S3.
        s3_secret: Secret with ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` for Triton, or
            empty to rely on the pods' identity (``service_account``).
        s3_region: ``AWS_DEFAULT_REGION`` of the pods, or empty.
        service_account: Service account of the pods, or empty.
        image: Triton image of the pools (default: the NGC tritonserver release the toolkit's
            bundled server matches).
        entry_image: Image of the entry pool when it differs (with remote pools its router needs
            ``tritonclient[grpc]`` in the python backend's Python; ``toolkit k8s`` writes a
            Dockerfile for it).
        cluster_domain: The cluster's DNS domain, for the pools' Service addresses.
        kubernetes_version: Version whose schemas the manifests are validated against.
        kserve: Write KServe InferenceServices instead of Deployments and Services.
        model_control_mode: ``explicit`` (load every model at start; changes roll out as new pods)
            or ``poll``.
        image_tensorrt: TensorRT version of the image, for images the NGC release table does not
            list (empty: from the table). TensorRT plans built by another version are refused.
        engine_cache: Size of a PersistentVolumeClaim (``"10Gi"``) that keeps ONNX Runtime's TensorRT
            engines for the GPU pools serving ONNX variants, so a new pod reuses them instead of
            building them on its first requests; empty for none (each pod builds its own).
        engine_cache_class: StorageClass of that claim (it must offer ReadWriteMany); empty for the
            cluster's default.
        build_engines: Also write a Job per such GPU pool that starts the pool's own image on its
            repository once, so its TensorRT builds every engine into the cache before the pool
            serves. Needs ``engine_cache``.
    """

    namespace: str = ""
    repository: str = ""
    s3_endpoint: str = ""
    s3_secret: str = ""
    s3_region: str = ""
    service_account: str = ""
    image: str = ""
    entry_image: str = ""
    cluster_domain: str = "cluster.local"
    kubernetes_version: str = "1.30"
    kserve: bool = False
    model_control_mode: Literal["explicit", "poll"] = "explicit"
    image_tensorrt: str = ""
    engine_cache: str = ""
    engine_cache_class: str = ""
    build_engines: bool = False

    def __post_init__(self) -> None:
        if self.image_tensorrt and not re.match(r"^\d+\.\d+\.\d+(\.\d+)?$", self.image_tensorrt):
            raise KeyedValueError(
                "image_tensorrt",
                f"expected a TensorRT version such as 10.5.0.18, got {self.image_tensorrt!r}",
            )
        if self.engine_cache and not re.match(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti)$", self.engine_cache):
            raise KeyedValueError(
                "engine_cache", f"expected a storage size such as 10Gi, got {self.engine_cache!r}"
            )
        if self.build_engines and not self.engine_cache:
            raise KeyedValueError(
                "build_engines", "the engine-build Job writes into the engine cache: set engine_cache too"
            )
        if self.repository and not self.repository.startswith("s3://"):
            raise KeyedValueError(
                "repository", f"expected an s3://bucket/prefix URL, got {self.repository!r}"
            )
        if self.namespace and not _NAMESPACE.match(self.namespace):
            raise KeyedValueError(
                "namespace", f"{self.namespace!r} is not a DNS label (lowercase letters, digits and '-')"
            )
        if not re.match(r"^\d+\.\d+$", self.kubernetes_version):
            raise KeyedValueError(
                "kubernetes_version", f"expected MAJOR.MINOR such as 1.30, got {self.kubernetes_version!r}"
            )


@dataclass(frozen=True)
class PathsSpec:
    """Where each stage writes, relative to the working directory unless absolute.

    Attributes:
        checkpoints: ``toolkit train``'s checkpoints and training report.
        artifacts: ``toolkit export``'s variants and manifest, and the later stages' reports.
        repository: The Triton model repository ``toolkit deploy`` writes.
    """

    checkpoints: str = "checkpoints"
    artifacts: str = "artifacts"
    repository: str = "model_repository"


@dataclass(frozen=True)
class Spec:
    """A whole ensemble spec.

    Attributes:
        name: Ensemble name; the Triton model clients call.
        seed: Seed of the generated data and of training.
        features: The request schema.
        tiers: Tiers in order of rising cost; the first is the cheapest.
        data: Generated data sizes.
        training: Training settings.
        export: Export settings.
        routing: Routing policy.
        triton: Repository and server settings.
        validation: What the router does with out-of-range ids and long histories.
        paths: Output folders.
        pools: Where the tiers run, one Triton deployment per pool, the entry pool first (empty:
            one deployment serves everything).
        kubernetes: Settings of ``toolkit k8s``.
        source: File the spec was read from (empty when built in code).
    """

    name: str
    features: Features
    tiers: tuple[TierSpec, ...]
    seed: int = 7
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    routing: RoutingSpec = field(default_factory=RoutingSpec)
    triton: TritonSpec = field(default_factory=TritonSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    paths: PathsSpec = field(default_factory=PathsSpec)
    pools: tuple[PoolSpec, ...] = ()
    kubernetes: KubernetesSpec = field(default_factory=KubernetesSpec)
    source: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "ensemble name")
        if not self.tiers:
            raise KeyedValueError("tiers", "at least one tier is needed")
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KeyedValueError("tiers", f"tier names must be unique, repeated: {', '.join(dupes)}")
        reserved = {self.name, *self.reserved_model_names}
        clash = sorted(reserved & set(names))
        if clash:
            raise KeyedValueError(
                "tiers", f"tier names clash with the ensemble's own models: {', '.join(clash)}"
            )
        files = self.data.files
        if files is not None:
            sizes = {
                "user_dense": self.features.user_dense,
                "user_sparse": len(self.features.user_sparse),
                "ad_dense": self.features.ad_dense,
                "ad_sparse": len(self.features.ad_sparse),
            }
            for part, size in sizes.items():
                given = len(getattr(files.columns, part))
                if given != size:
                    raise KeyedValueError(
                        f"data.files.columns.{part}",
                        f"names {given} columns but features give {part} {size}",
                    )
        if self.routing.default_tier and self.routing.default_tier not in names:
            raise KeyedValueError(
                "routing.default_tier",
                f"expected one of the tiers ({', '.join(names)}), got {self.routing.default_tier!r}",
            )
        for tier in self.triton.pin:
            if tier not in names:
                raise KeyedValueError(
                    f"triton.pin.{tier}", f"expected one of the tiers ({', '.join(names)}) as key"
                )
        if self.routing.policy == "cascade":
            others = [n for n in names if n != self.default_tier]
            if self.routing.cascade.tier not in others:
                raise KeyedValueError(
                    "routing.cascade.tier",
                    f"expected a tier other than the default tier ({', '.join(others) or 'none'}), "
                    f"got {self.routing.cascade.tier!r}",
                )
        for i, rule in enumerate(self.routing.rules):
            if rule.tier not in names:
                raise KeyedValueError(
                    f"routing.rules[{i}].tier",
                    f"expected one of the tiers ({', '.join(names)}), got {rule.tier!r}",
                )
        self._check_pools()

    def _check_pools(self) -> None:
        pools = [p.name for p in self.pools]
        dupes = sorted({n for n in pools if pools.count(n) > 1})
        if dupes:
            raise KeyedValueError("pools", f"pool names must be unique, repeated: {', '.join(dupes)}")
        for i, tier in enumerate(self.tiers):
            if tier.pool and not pools:
                raise KeyedValueError(f"tiers[{i}].pool", "names a pool, but the spec has no pools section")
            if tier.pool and tier.pool not in pools:
                raise KeyedValueError(
                    f"tiers[{i}].pool", f"expected one of the pools ({', '.join(pools)}), got {tier.pool!r}"
                )
        if not pools:
            return
        if self.tier_pool(self.tiers[0].name) != self.entry_pool:
            raise KeyedValueError(
                "tiers[0].pool",
                f"the cheapest tier {self.tiers[0].name!r} must run in the entry pool {self.entry_pool!r} "
                "(the first of pools): it answers when every other tier fails",
            )
        if self.triton.target != "cpu":
            raise KeyedValueError(
                "triton.target", "with pools, each pool's hardware is its target; leave triton.target out"
            )
        used = {self.tier_pool(t.name) for t in self.tiers}
        for i, pool in enumerate(self.pools):
            if pool.name not in used and i > 0:
                raise KeyedValueError(f"pools[{i}]", f"pool {pool.name!r} runs no tier")

    @property
    def default_tier(self) -> str:
        """The tier served when no rule matches: ``routing.default_tier`` or the cheapest tier."""
        return self.routing.default_tier or self.tiers[0].name

    @property
    def tier_names(self) -> tuple[str, ...]:
        """Tier names in order of rising cost."""
        return tuple(t.name for t in self.tiers)

    @property
    def preprocess_model(self) -> str:
        """Triton model name of the preprocess step."""
        return f"{self.name}_preprocess"

    @property
    def router_model(self) -> str:
        """Triton model name of the router."""
        return f"{self.name}_router"

    @property
    def gate_model(self) -> str:
        """Triton model name of the learned policy's gate."""
        return f"{self.name}_gate"

    @property
    def reserved_model_names(self) -> tuple[str, ...]:
        """Model names the ensemble itself uses besides the tiers."""
        return (self.preprocess_model, self.router_model, self.gate_model)

    @property
    def entry_models(self) -> tuple[str, ...]:
        """Models the entry pool (or the one repository) serves besides tiers, entry point first.

        The ensemble, the preprocess step, the router and, with the learned policy, the gate.
        """
        models = (self.name, self.preprocess_model, self.router_model)
        return (*models, self.gate_model) if self.routing.policy == "learned" else models

    @property
    def entry_pool(self) -> str:
        """The pool clients call (the first of ``pools``), or "" without pools."""
        return self.pools[0].name if self.pools else ""

    def tier_pool(self, name: str) -> str:
        """The pool tier ``name`` runs in ("" without pools)."""
        return self.tier(name).pool or self.entry_pool

    def pool(self, name: str) -> PoolSpec:
        """Return the pool called ``name``.

        Raises:
            KeyError: No pool has that name.
        """
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def pool_tiers(self, name: str) -> tuple[str, ...]:
        """Tiers of pool ``name``, cheapest first."""
        return tuple(t.name for t in self.tiers if self.tier_pool(t.name) == name)

    @property
    def remote_tiers(self) -> tuple[str, ...]:
        """Tiers the router calls over gRPC: those outside the entry pool."""
        return tuple(t.name for t in self.tiers if self.tier_pool(t.name) != self.entry_pool)

    def tier(self, name: str) -> TierSpec:
        """Return the tier called ``name``.

        Raises:
            KeyError: No tier has that name.
        """
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)
