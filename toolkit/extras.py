"""Optional parts of the install (pip extras): which modules each brings and which commands need it.

The base install is a client: numpy, tritonclient, click, rich and pyyaml are enough for
``toolkit infer``, ``toolkit bench``, ``toolkit init`` and :mod:`toolkit.client`. Everything else comes
with an extra, and a command that lacks one stops with one line naming the extra to install.
"""

from __future__ import annotations

import importlib.util

from toolkit.errors import ToolkitError

DISTRIBUTION = "adaptive-ranking-toolkit"
"""The name ``pip install`` takes."""

EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "onnx", "onnxscript", "onnxruntime", "pyarrow", "matplotlib"),
    "serve": ("pytriton", "onnxruntime"),
    "fleet": ("boto3", "kubernetes_validate"),
    "gpu": ("tensorrt", "polygraphy"),
}
"""Top-level modules each extra installs (import names, not distribution names)."""

COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("export",),
    "data": ("export",),
    "export": ("export",),
    "calibrate": ("export",),
    "evaluate": ("export",),
    "deploy": ("export",),
    "k8s": ("fleet",),
    "serve": ("serve",),
    "demo": ("export", "serve"),
    "tune": ("export", "serve"),
    "infer": (),
    "bench": (),
    "init": (),
}
"""Extras each command needs before it starts. A command may need more for some inputs (``deploy`` to an
``s3://`` URL needs ``fleet``); those are named when the import fails."""

_MODULE_EXTRA: dict[str, str] = {}
for _extra, _modules in EXTRAS.items():
    for _module in _modules:
        _MODULE_EXTRA.setdefault(_module, _extra)


class MissingExtraError(ToolkitError):
    """A command needs an optional part of the install that is not installed.

    Attributes:
        extra: The extra to install.
        module: The module that is missing.
    """

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra ({module} is not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'"
        )
        self.extra = extra
        self.module = module


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (any dotted name; its top level decides), or None."""
    return _MODULE_EXTRA.get(module.partition(".")[0])


def missing_modules(extra: str) -> list[str]:
    """Modules of ``extra`` that cannot be found in this environment.

    Raises:
        KeyError: ``extra`` is not one of :data:`EXTRAS`.
    """
    return [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(what: str, *extras: str) -> None:
    """Raise :class:`MissingExtraError` for the first of ``extras`` not fully installed.

    Args:
        what: What needs them, for the message (``toolkit export``).
        extras: Names from :data:`EXTRAS`.
    """
    for extra in extras:
        missing = missing_modules(extra)
        if missing:
            raise MissingExtraError(what, extra, missing[0])


def require_for_command(command: str) -> None:
    """:func:`require` the extras of a ``toolkit`` subcommand (:data:`COMMAND_EXTRAS`)."""
    require(f"toolkit {command}", *COMMAND_EXTRAS.get(command, ()))


def explain(exc: ModuleNotFoundError, what: str) -> MissingExtraError | None:
    """The :class:`MissingExtraError` for an import that failed because an extra is missing, else None."""
    name = exc.name or ""
    extra = extra_of(name)
    if extra is None:
        return None
    return MissingExtraError(what, extra, name.partition(".")[0])
