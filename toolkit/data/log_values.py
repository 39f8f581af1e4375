"""Parsing a log column's values: numbers, decimal and hex ids, each bad value named by row."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from toolkit.errors import DataError, first_line

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


def is_text(arr: pa.Array) -> bool:
    """Whether the column holds strings (CSV and Criteo columns read as text)."""
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def _text(arr: pa.Array) -> pa.Array:
    arr = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    return pc.if_else(pc.equal(arr, ""), "0", arr).fill_null("0")


def first_bad(values: list[str], pattern: re.Pattern[str]) -> tuple[int, str]:
    """Index and text of the first value that does not match ``pattern``."""
    for i, value in enumerate(values):
        if not pattern.fullmatch(value):
            return i, value
    return -1, ""


def parse_floats(arr: pa.Array, fail: Fail, required: bool = False) -> np.ndarray:
    """Finite float32 values of a column (empty reads as 0 unless ``required``); ``fail`` names a bad row."""
    if required:
        empty = arr.is_null()
        if is_text(arr):
            empty = pc.or_(empty, pc.equal(pc.utf8_trim_whitespace(arr), ""))
        where = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
        if where.size:
            raise fail(int(where[0]), "value is empty")
    if is_text(arr):
        text = _text(arr)
        try:
            values = pc.cast(text, pa.float32())
        except pa.ArrowInvalid as exc:
            i, value = first_bad(text.to_pylist(), _NUMBER)
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


def parse_ids(arr: pa.Array, fail: Fail) -> np.ndarray:
    """Non-negative decimal ids of a column as int64 (empty reads as 0); ``fail`` names a bad row."""
    if is_text(arr):
        text = _text(arr)
        try:
            return pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid as exc:
            values = text.to_pylist()
            i, value = first_bad(values, _INTEGER)
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


def parse_hex_ids(arr: pa.Array, fail: Fail) -> np.ndarray:
    """Hex ids of a Criteo categorical column as int64 (empty reads as 0); ``fail`` names a bad row."""
    """Criteo categorical values: hex strings of up to 16 digits; empty is 0 (missing)."""
    n = len(arr)
    if not n:
        return np.zeros(0, dtype=np.int64)
    if not is_text(arr):
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
