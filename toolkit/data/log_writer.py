"""Writing request sets as Criteo TSV, Parquet or CSV logs that :mod:`toolkit.data.logs` reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from toolkit.data.log_columns import (
    CRITEO_COLUMNS,
    CRITEO_DENSE,
    CRITEO_LABEL,
    CRITEO_SPARSE,
    check_format,
    default_columns,
)
from toolkit.data.requests import RequestSet
from toolkit.errors import DataError
from toolkit.spec.schema import LogColumns, Spec


def write_requests(requests: RequestSet, spec: Spec, path: str | Path, format: str) -> None:
    """Write a request set as a log file that :func:`iter_requests` reads back.

    Columns: ``data.files.columns`` when the spec has ``data.files`` (for ``criteo`` only if those
    files are Criteo too), else :func:`default_columns` (with a ``value`` column when the requests
    carry ``values``). Parquet and CSV get one row per candidate with its request's user columns
    repeated; request ids are the request's index; the history holds the non-padding ids, oldest
    first (a list in Parquet, ids separated by spaces in CSV); the value column (when the columns
    name one) holds each request's value on each of its rows, 1 when the requests carry none.
    Criteo gets ``label, I1..I13, C1..C26`` without a header: dense values as they are, ids in
    lowercase hex, id 0 and unused columns empty. It has no request id (each row reads back as a
    request with one candidate), no history and no value (request values are not written).

    Args:
        requests: The requests (raw ids).
        spec: The spec the requests follow.
        path: File to write (its folder is created).
        format: ``criteo``, ``parquet`` or ``csv``.

    Raises:
        DataError: The columns do not fit the format (or name one column twice), or a Criteo id is
            negative.
    """
    check_format(format)
    files = spec.data.files
    use_spec = files is not None and (format != "criteo" or files.format == "criteo")
    if use_spec and files is not None:
        columns = files.columns
    else:
        columns = default_columns(spec, format, values=requests.values is not None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "criteo":
        _write_criteo(requests, columns, path)
        return
    table = _table(requests, columns, history_as_text=format == "csv")
    if format == "parquet":
        pq.write_table(table, path)
    else:
        pa_csv.write_csv(table, path)


def _history_lists(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and values of each row's ids from its first non-zero one (the padding dropped)."""
    nonzero = history != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), history.shape[1])
    keep = np.arange(history.shape[1])[None, :] >= first[:, None]
    counts = keep.sum(axis=1)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32), history[keep]


def _table(requests: RequestSet, columns: LogColumns, history_as_text: bool) -> pa.Table:
    names = columns.names()
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(f"cannot write a log that names column {repeated[0]!r} twice")
    of = requests.request_index()
    data: dict[str, pa.Array] = {}
    if columns.request_id:
        data[columns.request_id] = pa.array(of.astype(np.int64))
    data[columns.label] = pa.array(requests.labels.astype(np.float32))
    for j, name in enumerate(columns.user_dense):
        data[name] = pa.array(requests.user_dense[of, j])
    for j, name in enumerate(columns.user_sparse):
        data[name] = pa.array(requests.user_sparse[of, j])
    if columns.history:
        offsets, values = _history_lists(requests.user_history)
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64())).take(pa.array(of))
        if history_as_text:
            lists = pc.binary_join(pc.cast(lists, pa.list_(pa.string())), " ")
        data[columns.history] = lists
    if columns.value:
        data[columns.value] = pa.array(requests.value_weights()[of])
    for j, name in enumerate(columns.ad_dense):
        data[name] = pa.array(requests.ad_dense[:, j])
    for j, name in enumerate(columns.ad_sparse):
        data[name] = pa.array(requests.ad_sparse[:, j])
    return pa.table(data)


def _hex_text(ids: np.ndarray, column: str) -> pa.Array:
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        raise DataError(f"criteo column {column!r}: id {ids[negative[0]]} is negative; Criteo ids are hex")
    return pa.array([format(v, "x") if v else None for v in ids.tolist()], pa.string())


def _write_criteo(requests: RequestSet, columns: LogColumns, path: Path) -> None:
    if columns.request_id or columns.history or columns.value:
        raise DataError(
            f"{path}: criteo logs have no request id, history or value column; the spec names one"
        )
    checks = [(columns.label, (CRITEO_LABEL,))]
    checks += [(c, CRITEO_DENSE) for c in columns.user_dense + columns.ad_dense]
    checks += [(c, CRITEO_SPARSE) for c in columns.user_sparse + columns.ad_sparse]
    for name, allowed in checks:
        if name not in allowed:
            raise DataError(f"{path}: {name!r} is not a Criteo column for this value ({allowed[0]}..)")
    names = columns.names()
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: cannot write a log that names column {repeated[0]!r} twice")
    of = requests.request_index()
    labels = requests.labels
    integral = bool(np.all(labels == np.round(labels)))
    data = {name: pa.nulls(requests.num_candidates, pa.string()) for name in CRITEO_COLUMNS}
    data[columns.label] = pc.cast(pa.array(labels.astype(np.int64) if integral else labels), pa.string())
    for j, name in enumerate(columns.user_dense):
        data[name] = pc.cast(pa.array(requests.user_dense[of, j]), pa.string())
    for j, name in enumerate(columns.ad_dense):
        data[name] = pc.cast(pa.array(requests.ad_dense[:, j]), pa.string())
    for j, name in enumerate(columns.user_sparse):
        data[name] = _hex_text(requests.user_sparse[of, j], name)
    for j, name in enumerate(columns.ad_sparse):
        data[name] = _hex_text(requests.ad_sparse[:, j], name)
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pa_csv.write_csv(pa.table(data), path, options)
