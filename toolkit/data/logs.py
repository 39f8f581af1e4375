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

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from toolkit.data.requests import RequestSet
from toolkit.errors import DataError, first_line
from toolkit.spec.schema import LOG_FORMATS, LogColumns, LogFiles, Spec

CRITEO_LABEL = "label"
CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = (CRITEO_LABEL, *CRITEO_DENSE, *CRITEO_SPARSE)
"""Columns of a Criteo display-advertising TSV row, in file order."""

_MIN_BLOCK = 1 << 20
_MAX_BLOCK = 1 << 26
_BLOCK_BYTES_PER_ROW = 512
_LISTED_COLUMNS = 40
_INT64_LIMIT = 1 << 63
_HEX_DIGITS = 16
_NIBBLE = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate("0123456789abcdef"):
    _NIBBLE[ord(_c)] = _i
    _NIBBLE[ord(_c.upper())] = _i
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(?i:inf|infinity|nan)")
_SHIFTS = np.arange(4 * (_HEX_DIGITS - 1), -1, -4, dtype=np.uint64)

_NUMERIC_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal)

Fail = Callable[[int, str], DataError]
"""Builds the error for the value at an index of the array being parsed."""


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
    _check_format(format)
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
    _check_format(format)
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


def _check_format(format: str) -> None:
    if format not in LOG_FORMATS:
        raise DataError(f"unknown log format {format!r}; expected one of {', '.join(LOG_FORMATS)}")


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
    labels = _floats(chunk.column(columns.label), chunk.fail(columns.label), required=True)
    outside = np.flatnonzero((labels < 0) | (labels > 1))
    if outside.size:
        raise chunk.fail(columns.label)(int(outside[0]), f"label {labels[outside[0]]:g} is not in [0, 1]")

    def user(name: str, values: np.ndarray) -> np.ndarray:
        _agree(chunk, columns.request_id, name, first, values != values[first])
        return values[starts]

    ids = _hex_ids if chunk.format == "criteo" else _ids
    user_dense = [user(c, _floats(chunk.column(c), chunk.fail(c))) for c in columns.user_dense]
    user_sparse = [user(c, ids(chunk.column(c), chunk.fail(c))) for c in columns.user_sparse]
    length = spec.features.history.length
    if columns.history:
        history = _history(chunk, columns.history, columns.request_id, first, starts, length)
    else:
        history = np.zeros((len(starts), length), dtype=np.int64)
    ad_dense = [_floats(chunk.column(c), chunk.fail(c)) for c in columns.ad_dense]
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
    values = _floats(chunk.column(name), fail, required=True)
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


def _is_text(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def _text(arr: pa.Array) -> pa.Array:
    arr = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    return pc.if_else(pc.equal(arr, ""), "0", arr).fill_null("0")


def _first_bad(values: list[str], pattern: re.Pattern[str]) -> tuple[int, str]:
    for i, value in enumerate(values):
        if not pattern.fullmatch(value):
            return i, value
    return -1, ""


def _floats(arr: pa.Array, fail: Fail, required: bool = False) -> np.ndarray:
    if required:
        empty = arr.is_null()
        if _is_text(arr):
            empty = pc.or_(empty, pc.equal(pc.utf8_trim_whitespace(arr), ""))
        where = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
        if where.size:
            raise fail(int(where[0]), "value is empty")
    if _is_text(arr):
        text = _text(arr)
        try:
            values = pc.cast(text, pa.float32())
        except pa.ArrowInvalid as exc:
            i, value = _first_bad(text.to_pylist(), _NUMBER)
            raise fail(
                max(i, 0), f"{value!r} is not a number" if i >= 0 else first_line(exc, with_type=False)
            ) from None
        out = values.to_numpy(zero_copy_only=False)
    elif any(check(arr.type) for check in _NUMERIC_TYPES):
        out = pc.cast(arr, pa.float64(), safe=False).fill_null(0.0).to_numpy().astype(np.float32)
    else:
        raise fail(0, f"holds {arr.type}, expected numbers")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise fail(int(bad[0]), f"{out[bad[0]]} is not a finite number (as FP32)")
    return out


def _ids(arr: pa.Array, fail: Fail) -> np.ndarray:
    if _is_text(arr):
        text = _text(arr)
        try:
            return pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid as exc:
            values = text.to_pylist()
            i, value = _first_bad(values, _INTEGER)
            if i >= 0:
                raise fail(i, f"{value!r} is not an integer id") from None
            big = [j for j, v in enumerate(values) if not -_INT64_LIMIT <= int(v) < _INT64_LIMIT]
            if big:
                raise fail(big[0], f"id {values[big[0]]} does not fit INT64") from None
            raise fail(0, first_line(exc, with_type=False)) from None
    if pa.types.is_unsigned_integer(arr.type):
        values = pc.cast(arr, pa.uint64()).fill_null(0).to_numpy()
        big = np.flatnonzero(values >= np.uint64(_INT64_LIMIT))
        if big.size:
            raise fail(int(big[0]), f"id {values[big[0]]} does not fit INT64")
        return values.astype(np.int64)
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, pa.int64()).fill_null(0).to_numpy()
    if pa.types.is_floating(arr.type):
        values = pc.cast(arr, pa.float64()).fill_null(0.0).to_numpy()
        bad = np.flatnonzero((values != np.round(values)) | ~(np.abs(values) < _INT64_LIMIT))
        if bad.size:
            raise fail(int(bad[0]), f"{values[bad[0]]} is not an INT64 id")
        return values.astype(np.int64)
    raise fail(0, f"holds {arr.type}, expected integer ids")


def _hex_ids(arr: pa.Array, fail: Fail) -> np.ndarray:
    """Criteo categorical values: hex strings of up to 16 digits; empty is 0 (missing)."""
    n = len(arr)
    if not n:
        return np.zeros(0, dtype=np.int64)
    if not _is_text(arr):
        raise fail(0, f"holds {arr.type}, expected hex ids")
    text = pc.utf8_trim_whitespace(arr.cast(pa.string())).fill_null("")
    padded = pc.utf8_lpad(text, _HEX_DIGITS, "0").cast(pa.string())
    bounds = np.frombuffer(padded.buffers()[1], dtype=np.int32)[padded.offset : padded.offset + n + 1]
    wrong = np.flatnonzero(np.diff(bounds) != _HEX_DIGITS)
    if wrong.size:
        raise fail(int(wrong[0]), f"{text[int(wrong[0])].as_py()!r} is not a hex id of at most 16 digits")
    chars = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[bounds[0] : bounds[0] + n * _HEX_DIGITS]
    nibbles = _NIBBLE[chars.reshape(n, _HEX_DIGITS)]
    bad = np.flatnonzero((nibbles < 0).any(axis=1))
    if bad.size:
        raise fail(int(bad[0]), f"{text[int(bad[0])].as_py()!r} is not a hex id")
    values = (nibbles.astype(np.uint64) << _SHIFTS).sum(axis=1, dtype=np.uint64)
    big = np.flatnonzero(values >= np.uint64(_INT64_LIMIT))
    if big.size:
        raise fail(int(big[0]), f"id {text[int(big[0])].as_py()} does not fit INT64")
    return values.astype(np.int64)


def _history(
    chunk: _Chunk, name: str, request_id: str, first: np.ndarray, starts: np.ndarray, length: int
) -> np.ndarray:
    arr = chunk.column(name)
    n = len(arr)
    if _is_text(arr):
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
    if _is_text(flat):
        keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        flat, rows = flat.filter(pa.array(keep)), rows[keep]
    values = _ids(flat, chunk.fail(name, rows)) if len(flat) else np.zeros(0, dtype=np.int64)
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
