"""The toolkit's exception family.

Every error the toolkit raises on purpose derives from :class:`ToolkitError`. The CLI prints its
message as one line and exits with code 1; messages are full sentences that name the file, key,
tensor or flag at fault.
"""


def first_line(exc: BaseException, *, with_type: bool = True) -> str:
    """The first line of an exception's message, for one-line errors.

    Args:
        exc: An exception, usually from a library.
        with_type: Prefix the exception's type (``ValueError: ...``); without it, an exception with no
            message gives its type's name.
    """
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else ""
    if not with_type:
        return line or type(exc).__name__
    return f"{type(exc).__name__}: {line}".rstrip(": ")


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with each run of whitespace (newlines too) made one space, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 3] + "..."


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose.

    Args:
        message: What went wrong, one line.
        option: When an option of a library call is at fault, its name (a field of the stage's
            options, such as ``pins``); the message then reads ``<option> <message>`` and the command
            line shows the option's flag instead (``--pin``).

    Attributes:
        option: The option at fault, or "".
        detail: The message without the option's name.
    """

    def __init__(self, message: str = "", *, option: str = "") -> None:
        super().__init__(f"{option} {message}" if option else message)
        self.option = option
        self.detail = message


class SpecError(ToolkitError):
    """An ensemble spec file is missing, unreadable or invalid."""


class DataError(ToolkitError):
    """Input data (generated or read) is malformed or inconsistent with the spec."""


class CheckpointError(ToolkitError):
    """A checkpoint is missing, unreadable or does not match the spec."""


class ExportError(ToolkitError):
    """Exporting a tier to ONNX (or a derived variant) failed."""


class ParityError(ExportError):
    """An exported model disagrees with PyTorch beyond the tolerance.

    Attributes:
        max_abs_error: Maximum absolute difference per output name.
    """

    def __init__(self, message: str, max_abs_error: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.max_abs_error = dict(max_abs_error or {})


class RepositoryError(ToolkitError):
    """Writing or reading a Triton model repository failed."""


class ServerError(ToolkitError):
    """Starting, probing or stopping a Triton server failed."""


class UserModelError(ToolkitError):
    """A user's model (factory, checkpoint or ONNX file) does not fit its tier's spec entry."""
