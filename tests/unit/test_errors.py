"""The one helper every module uses to turn a library's error into part of a one-line message."""

from __future__ import annotations

from toolkit.cli import error_line
from toolkit.errors import ExportError, RepositoryError, first_line, one_line


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


def test_an_option_at_fault_reads_as_its_name_in_the_library_and_its_flag_on_the_command_line() -> None:
    error = RepositoryError("lite=onnx-int3: unknown variant", option="pins")
    assert str(error) == "pins lite=onnx-int3: unknown variant"
    assert (error.option, error.detail) == ("pins", "lite=onnx-int3: unknown variant")
    assert error_line(error) == "--pin lite=onnx-int3: unknown variant"
    assert error_line(ExportError("'gold' is not a tier", option="tiers")) == "--tier 'gold' is not a tier"
    assert error_line(RepositoryError("plain")) == "plain"
