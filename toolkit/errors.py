"""The toolkit's exception family.

Every error the toolkit raises on purpose derives from :class:`ToolkitError`. The CLI prints its
message as one line and exits with code 1; messages are full sentences that name the file, key,
tensor or flag at fault.
"""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception from a library, for one-line errors."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose."""


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
