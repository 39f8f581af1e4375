"""The request schema (``features``) and the data it is generated or read from (``data``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from toolkit.spec.sections.common import KeyedValueError, check_name


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
