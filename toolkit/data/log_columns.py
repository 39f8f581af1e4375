"""The columns of a request log: Criteo's fixed layout and the default layout of Parquet and CSV logs."""

from __future__ import annotations

from toolkit.errors import DataError
from toolkit.spec.schema import LOG_FORMATS, LogColumns, Spec

CRITEO_LABEL = "label"
CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = (CRITEO_LABEL, *CRITEO_DENSE, *CRITEO_SPARSE)
"""Columns of a Criteo display-advertising TSV row, in file order."""


def default_columns(spec: Spec, format: str, values: bool = False) -> LogColumns:
    """The columns :func:`write_requests` uses when the spec names none.

    Parquet and CSV: ``request_id``, ``label``, ``user_dense_0..``, the user sparse feature names,
    ``history``, ``ad_dense_0..``, the ad sparse feature names and, if ``values``, ``value``.
    Criteo: ``label``; the user dense then ad dense features on ``I1..``, the user sparse then ad
    sparse features on ``C1..``; no request id (every row is a request), no history and no value.

    Args:
        spec: The spec whose features the columns hold.
        format: ``criteo``, ``parquet`` or ``csv``.
        values: Whether the log holds request values (a ``value`` column); ignored for Criteo.

    Returns:
        The column mapping, ready for a spec's ``data.files.columns``.

    Raises:
        DataError: The format is unknown, or the features do not fit Criteo's 13 integer and 26
            categorical columns.
    """
    check_format(format)
    f = spec.features
    if format == "criteo":
        dense, sparse = f.user_dense + f.ad_dense, len(f.user_sparse) + len(f.ad_sparse)
        if dense > len(CRITEO_DENSE) or sparse > len(CRITEO_SPARSE):
            raise DataError(
                f"criteo logs hold {len(CRITEO_DENSE)} dense and {len(CRITEO_SPARSE)} categorical "
                f"columns; the features need {dense} dense and {sparse} categorical"
            )
        nu = len(f.user_sparse)
        return LogColumns(
            user_dense=CRITEO_DENSE[: f.user_dense],
            ad_dense=CRITEO_DENSE[f.user_dense : dense],
            user_sparse=CRITEO_SPARSE[:nu],
            ad_sparse=CRITEO_SPARSE[nu:sparse],
            label=CRITEO_LABEL,
        )
    return LogColumns(
        request_id="request_id",
        label="label",
        user_dense=tuple(f"user_dense_{i}" for i in range(f.user_dense)),
        user_sparse=tuple(s.name for s in f.user_sparse),
        history="history",
        ad_dense=tuple(f"ad_dense_{i}" for i in range(f.ad_dense)),
        ad_sparse=tuple(s.name for s in f.ad_sparse),
        value="value" if values else "",
    )


def check_format(format: str) -> None:
    """Raise DataError unless ``format`` is one of :data:`~toolkit.spec.schema.LOG_FORMATS`."""
    if format not in LOG_FORMATS:
        raise DataError(f"unknown log format {format!r}; expected one of {', '.join(LOG_FORMATS)}")
