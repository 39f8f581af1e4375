"""Request logs on disk: streaming readers and a writer for Criteo TSV, Parquet and CSV files.

A log holds one row per impression (candidate). Rows of one request are consecutive and share the
``request_id`` column; without one, every row is a request with one candidate. The user columns
(user dense, user sparse, history) and the optional request value (``columns.value``: what the
request is worth) are taken from a request's first row and must agree on its other rows. Files are
read in chunks of ``data.files.chunk_rows`` rows, so memory stays bounded whatever the file size; a
request that spans two chunks is carried over whole into the next one.

Value rules: empty dense values and ids read as 0 (an id of 0 is "missing"); dense values must be
finite; ids must fit INT64; labels must lie in [0, 1]; request values must be given, finite and
positive. Criteo categorical columns are hex strings, the other formats hold decimal ids. Criteo
logs have no history and no value column. A history is a list of ids (Parquet) or ids separated by
spaces, oldest first; the newest ``features.history.length`` are kept and shorter ones are
left-padded with 0. Errors are :class:`~toolkit.errors.DataError` with a one-line message naming
the file and column.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
    default_columns,
)
from toolkit.data.log_values import (
    Fail,
    is_text,
    parse_floats,
    parse_hex_ids,
    parse_ids,
)
from toolkit.data.log_writer import write_requests
from toolkit.data.requests import RequestSet
from toolkit.errors import DataError, first_line
from toolkit.spec.schema import LogColumns, LogFiles, Spec

__all__ = [
    "CRITEO_COLUMNS",
    "CRITEO_DENSE",
    "CRITEO_LABEL",
    "CRITEO_SPARSE",
    "LogSummary",
    "concat_requests",
    "default_columns",
    "dense_statistics",
    "iter_requests",
    "read_requests",
    "summarize",
    "write_requests",
]

_MIN_BLOCK = 1 << 20
_MAX_BLOCK = 1 << 26
_BLOCK_BYTES_PER_ROW = 512
_LISTED_COLUMNS = 40


@dataclass(frozen=True)
class LogSummary:
    """What one pass over a log found: sizes, clicks and the dense features' moments.

    Attributes:
        requests: Requests in the log.
        candidates: Rows (candidates) in the log.
        clicks: Sum of the labels.
        user_mean: FLOAT64 [Du], mean of each user dense feature, counted once per request.
        user_std: FLOAT64 [Du], population standard deviation of the same.
        ad_mean: FLOAT64 [Da], mean of each ad dense feature over every candidate.
        ad_std: FLOAT64 [Da], population standard deviation of the same.
    """

    requests: int
    candidates: int
    clicks: float
    user_mean: np.ndarray
    user_std: np.ndarray
    ad_mean: np.ndarray
    ad_std: np.ndarray

    @property
    def ctr(self) -> float:
        """Clicks per candidate."""
        return self.clicks / self.candidates


def iter_requests(spec: Spec, path: str | Path, chunk_rows: int | None = None) -> Iterator[RequestSet]:
    """Stream the requests of a log in chunks of complete requests, in file order.

    Args:
        spec: The spec; ``data.files`` gives the format and the columns.
        path: A log file, or a folder whose files (sorted by name; names starting with ``.`` or
            ``_`` skipped) are read one after the other. A request never spans two files.
        chunk_rows: Rows read at a time (default ``data.files.chunk_rows``). A chunk holds about
            this many rows: the last request of a read is carried into the next chunk.

    Yields:
        Request sets with raw ids and ``informative`` all False; ``values`` from
        ``columns.value``, or None when the spec names no value column.

    Raises:
        DataError: The file is missing or unreadable, a column is missing, or a value is invalid.
    """
    files = _files_spec(spec)
    rows = chunk_rows or files.chunk_rows
    if rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {rows}")
    for file in _log_files(path):
        for table, first_row in _request_tables(file, spec, rows):
            yield _to_requests(_Chunk(file, table, first_row, files.format), spec)


def read_requests(spec: Spec, path: str | Path, max_requests: int) -> RequestSet:
    """The first ``max_requests`` requests of a log (all of them if it holds fewer).

    Reading stops at the chunk that completes them; the rest of the file is never read.

    Args:
        spec: The spec; ``data.files`` gives the format and the columns.
        path: A log file or a folder of them (see :func:`iter_requests`).
        max_requests: Requests wanted.

    Returns:
        The requests, in file order.

    Raises:
        DataError: As :func:`iter_requests`, or the log holds no requests.
    """
    if max_requests < 1:
        raise ValueError(f"max_requests must be positive, got {max_requests}")
    chunks: list[RequestSet] = []
    count = 0
    stream = iter_requests(spec, path)
    try:
        for chunk in stream:
            chunks.append(chunk)
            count += chunk.num_requests
            if count >= max_requests:
                break
    finally:
        stream.close()
    if not count:
        raise DataError(f"{path}: the log holds no requests")
    requests = concat_requests(chunks)
    if requests.num_requests > max_requests:
        requests = requests.subset(np.arange(max_requests))
    return requests


def summarize(spec: Spec, path: str | Path) -> LogSummary:
    """Count the requests, candidates and clicks of a log and the moments of its dense features.

    One streaming pass; the moments of each chunk are merged with Chan's parallel update in
    FLOAT64, so the result does not drift with the file size.

    Args:
        spec: The spec; ``data.files`` gives the format and the columns.
        path: A log file or a folder of them (see :func:`iter_requests`).

    Returns:
        The summary.

    Raises:
        DataError: As :func:`iter_requests`, or the log holds no requests.
    """
    user, ad = _Moments(spec.features.user_dense), _Moments(spec.features.ad_dense)
    clicks = 0.0
    for chunk in iter_requests(spec, path):
        user.add(chunk.user_dense)
        ad.add(chunk.ad_dense)
        clicks += float(chunk.labels.sum(dtype=np.float64))
    if not user.count:
        raise DataError(f"{path}: the log holds no requests")
    return LogSummary(
        requests=user.count,
        candidates=ad.count,
        clicks=clicks,
        user_mean=user.mean,
        user_std=user.std,
        ad_mean=ad.mean,
        ad_std=ad.std,
    )


def dense_statistics(spec: Spec, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and population standard deviation of the dense features over a whole log.

    Args:
        spec: The spec; ``data.files`` gives the format and the columns.
        path: A log file or a folder of them (see :func:`iter_requests`).

    Returns:
        ``(user_mean, user_std, ad_mean, ad_std)`` as FLOAT64 arrays; user features count once per
        request, ad features once per candidate.

    Raises:
        DataError: As :func:`summarize`.
    """
    s = summarize(spec, path)
    return s.user_mean, s.user_std, s.ad_mean, s.ad_std


def concat_requests(sets: Iterable[RequestSet]) -> RequestSet:
    """One request set holding the requests of ``sets`` in order.

    ``values`` is None when no set has values; otherwise sets without values count as worth 1 each.
    """
    sets = list(sets)
    if not sets:
        raise ValueError("concat_requests needs at least one request set")
    if len(sets) == 1:
        return sets[0]
    values = None
    if any(s.values is not None for s in sets):
        values = np.concatenate([s.value_weights() for s in sets])
    starts = np.cumsum([0] + [s.num_candidates for s in sets[:-1]])
    offsets = [sets[0].offsets[:1]] + [s.offsets[1:] + start for s, start in zip(sets, starts, strict=True)]
    return RequestSet(
        user_dense=np.concatenate([s.user_dense for s in sets]),
        user_sparse=np.concatenate([s.user_sparse for s in sets]),
        user_history=np.concatenate([s.user_history for s in sets]),
        ad_dense=np.concatenate([s.ad_dense for s in sets]),
        ad_sparse=np.concatenate([s.ad_sparse for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        offsets=np.concatenate(offsets).astype(np.int64),
        informative=np.concatenate([s.informative for s in sets]),
        values=values,
    )


def _files_spec(spec: Spec) -> LogFiles:
    if spec.data.files is None:
        raise DataError(f"{spec.source or spec.name}: the spec has no data.files to read logs with")
    return spec.data.files


def _log_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        if not found:
            raise DataError(f"{path}: the log folder holds no files")
        return found
    if not path.exists():
        raise DataError(f"{path}: log file not found")
    return [path]


def _needed(columns: LogColumns) -> list[str]:
    return list(dict.fromkeys(columns.names()))


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED_COLUMNS])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LISTED_COLUMNS else "")


def _read_batches(file: Path, spec: Spec, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    files = _files_spec(spec)
    needed = _needed(files.columns)
    if files.format == "criteo" and files.columns.history:
        raise DataError(f"{file}: criteo logs have no history column; leave data.files.columns.history empty")
    if files.format == "criteo" and files.columns.value:
        raise DataError(f"{file}: criteo logs have no value column; leave data.files.columns.value empty")
    try:
        if files.format == "parquet":
            yield from _parquet_batches(file, needed, chunk_rows)
        else:
            yield from _csv_batches(file, needed, chunk_rows, criteo=files.format == "criteo")
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{file}: cannot read it as {files.format}: {first_line(exc, with_type=False)}"
        ) from None


def _parquet_batches(file: Path, needed: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(file) as reader:
        names = reader.schema_arrow.names
        missing = [c for c in needed if c not in names]
        if missing:
            raise DataError(f"{file}: no column {missing[0]!r}; the file has columns {_listing(names)}")
        yield from reader.iter_batches(batch_size=chunk_rows, columns=needed)


def _csv_batches(file: Path, needed: list[str], chunk_rows: int, criteo: bool) -> Iterator[pa.RecordBatch]:
    block = min(max(chunk_rows * _BLOCK_BYTES_PER_ROW, _MIN_BLOCK), _MAX_BLOCK)
    if criteo:
        unknown = [c for c in needed if c not in CRITEO_COLUMNS]
        if unknown:
            raise DataError(
                f"{file}: no column {unknown[0]!r}; Criteo rows have columns label, I1..I13, C1..C26"
            )
        read = pa_csv.ReadOptions(column_names=list(CRITEO_COLUMNS), block_size=block)
        parse = pa_csv.ParseOptions(delimiter="\t", quote_char=False)
    else:
        read = pa_csv.ReadOptions(block_size=block)
        parse = pa_csv.ParseOptions()
    convert = pa_csv.ConvertOptions(
        include_columns=needed, column_types=dict.fromkeys(needed, pa.string()), strings_can_be_null=False
    )
    try:
        reader = pa_csv.open_csv(file, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowKeyError:
        names = pa_csv.open_csv(file, read_options=read, parse_options=parse).schema.names
        missing = [c for c in needed if c not in names]
        raise DataError(f"{file}: no column {missing[0]!r}; the file has columns {_listing(names)}") from None
    with reader:
        yield from reader


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        size += batch.num_rows
        while size >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            pending = table.slice(rows).to_batches()
            size -= rows
    if size:
        yield pa.Table.from_batches(pending)


def _request_tables(file: Path, spec: Spec, chunk_rows: int) -> Iterator[tuple[pa.Table, int]]:
    """Tables of complete requests and the file row each starts at."""
    request_id = _files_spec(spec).columns.request_id
    first_row = 0
    carry: pa.Table | None = None
    for table in _rebatch(_read_batches(file, spec, chunk_rows), chunk_rows):
        if not request_id:
            yield table, first_row
            first_row += table.num_rows
            continue
        if carry is not None:
            table = pa.concat_tables([carry, table])
        ids = _plain(table.column(request_id))
        if ids.null_count:
            row = first_row + int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{file}: column {request_id!r}: empty request id in row {row + 1}")
        starts = _request_starts(ids)
        last = int(starts[-1])
        if last == 0:
            carry = table
            continue
        yield table.slice(0, last), first_row
        first_row += last
        carry = table.slice(last)
    if carry is not None and carry.num_rows:
        yield carry, first_row


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _request_starts(ids: pa.Array) -> np.ndarray:
    if len(ids) < 2:
        return np.zeros(1, dtype=np.int64)
    changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.flatnonzero(changed) + 1]).astype(np.int64)


@dataclass(frozen=True)
class _Chunk:
    """Rows of complete requests from one file, and where they are in it."""

    file: Path
    table: pa.Table
    first_row: int
    format: str

    def column(self, name: str) -> pa.Array:
        return _plain(self.table.column(name))

    def fail(self, name: str, rows: np.ndarray | None = None) -> Fail:
        """An error builder for column ``name``; ``rows`` maps value indices to chunk rows."""

        def build(index: int, message: str) -> DataError:
            row = self.first_row + int(index if rows is None else rows[index]) + 1
            return DataError(f"{self.file}: column {name!r}, row {row}: {message}")

        return build


def _to_requests(chunk: _Chunk, spec: Spec) -> RequestSet:
    columns = _files_spec(spec).columns
    n = chunk.table.num_rows
    starts = (
        _request_starts(chunk.column(columns.request_id))
        if columns.request_id
        else np.arange(n, dtype=np.int64)
    )
    offsets = np.append(starts, n).astype(np.int64)
    first = np.repeat(starts, np.diff(offsets))
    labels = parse_floats(chunk.column(columns.label), chunk.fail(columns.label), required=True)
    outside = np.flatnonzero((labels < 0) | (labels > 1))
    if outside.size:
        raise chunk.fail(columns.label)(int(outside[0]), f"label {labels[outside[0]]:g} is not in [0, 1]")

    def user(name: str, values: np.ndarray) -> np.ndarray:
        _agree(chunk, columns.request_id, name, first, values != values[first])
        return values[starts]

    ids = parse_hex_ids if chunk.format == "criteo" else parse_ids
    user_dense = [user(c, parse_floats(chunk.column(c), chunk.fail(c))) for c in columns.user_dense]
    user_sparse = [user(c, ids(chunk.column(c), chunk.fail(c))) for c in columns.user_sparse]
    length = spec.features.history.length
    if columns.history:
        history = _history(chunk, columns.history, columns.request_id, first, starts, length)
    else:
        history = np.zeros((len(starts), length), dtype=np.int64)
    ad_dense = [parse_floats(chunk.column(c), chunk.fail(c)) for c in columns.ad_dense]
    ad_sparse = [ids(chunk.column(c), chunk.fail(c)) for c in columns.ad_sparse]
    values = user(columns.value, _values(chunk, columns.value)) if columns.value else None
    return RequestSet(
        user_dense=np.stack(user_dense, axis=1).astype(np.float32),
        user_sparse=np.stack(user_sparse, axis=1).astype(np.int64),
        user_history=history,
        ad_dense=np.stack(ad_dense, axis=1).astype(np.float32),
        ad_sparse=np.stack(ad_sparse, axis=1).astype(np.int64),
        labels=labels.astype(np.float32),
        offsets=offsets,
        informative=np.zeros(len(starts), dtype=bool),
        values=values,
    )


def _values(chunk: _Chunk, name: str) -> np.ndarray:
    """Request values of every row of column ``name``: given, finite (as FP32) and positive."""
    fail = chunk.fail(name)
    values = parse_floats(chunk.column(name), fail, required=True)
    bad = np.flatnonzero(~(values > 0))
    if bad.size:
        raise fail(int(bad[0]), f"value {values[bad[0]]:g} is not positive")
    return values


def _agree(chunk: _Chunk, request_id: str, name: str, first: np.ndarray, differs: np.ndarray) -> None:
    bad = np.flatnonzero(differs)
    if not bad.size:
        return
    row = int(bad[0])
    rid = chunk.column(request_id)[row].as_py()
    raise DataError(
        f"{chunk.file}: request {rid}: column {name!r}, row {chunk.first_row + row + 1}, differs "
        f"from the request's first row (row {chunk.first_row + int(first[row]) + 1})"
    )


def _history(
    chunk: _Chunk, name: str, request_id: str, first: np.ndarray, starts: np.ndarray, length: int
) -> np.ndarray:
    arr = chunk.column(name)
    n = len(arr)
    if is_text(arr):
        lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(arr.cast(pa.string())).fill_null(""))
    elif (
        pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
    ):
        lists = arr
    else:
        raise chunk.fail(name)(0, f"holds {arr.type}, expected a list of ids or ids separated by spaces")
    flat = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    if is_text(flat):
        keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        flat, rows = flat.filter(pa.array(keep)), rows[keep]
    values = parse_ids(flat, chunk.fail(name, rows)) if len(flat) else np.zeros(0, dtype=np.int64)
    counts = np.bincount(rows, minlength=n).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if request_id and len(starts) < n:
        differs = counts != counts[first]
        if values.size:
            pos = np.arange(values.size) - bounds[rows]
            ref = np.minimum(bounds[first[rows]] + pos, values.size - 1)
            mismatched = rows[values != values[ref]]
            differs[mismatched] = True
        _agree(chunk, request_id, name, first, differs)
    ends = bounds[1:][starts]
    take = ends[:, None] - length + np.arange(length)[None, :]
    valid = take >= bounds[:-1][starts][:, None]
    if not values.size:
        return np.zeros((len(starts), length), dtype=np.int64)
    return np.where(valid, values[np.clip(take, 0, values.size - 1)], 0).astype(np.int64)


class _Moments:
    """Running count, mean and sum of squared deviations of the rows of [k, d] arrays."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.mean = np.zeros(width, dtype=np.float64)
        self.m2 = np.zeros(width, dtype=np.float64)

    def add(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        if not k:
            return
        x = rows.astype(np.float64)
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        total = self.count + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * k / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))
