"""The one helper every module uses to turn a library's error into part of a one-line message."""

from __future__ import annotations

from toolkit.errors import first_line, one_line


def test_first_line_keeps_the_type_and_the_first_line_of_the_message() -> None:
    assert first_line(ValueError("bad shape\n  at node 3")) == "ValueError: bad shape"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("  disk full  \nmore"), with_type=False) == "disk full"
    assert first_line(RuntimeError(), with_type=False) == "RuntimeError"


def test_one_line_flattens_whitespace_and_cuts_at_the_limit() -> None:
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line("x" * 300, 240) == "x" * 237 + "..."
    assert len(one_line("word " * 100, 50)) == 50
    assert one_line(42) == "42"
