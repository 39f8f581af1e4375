"""Choose the backend of the tier and preprocess models for the server that will run them."""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import RepositoryError, ServerError


def available_backends(tritonserver: Path | None = None) -> tuple[Path, frozenset[str]]:
    """The server ``toolkit serve`` would run, and the backends found beside it.

    Looks in ``<prefix>/backends`` of the binary (``/opt/tritonserver/backends`` in the NGC image);
    the bundled server has only the python backend.
    """
    from toolkit.serve.locate import find_tritonserver

    install = find_tritonserver(tritonserver)
    if install.python_backend_dir is not None:
        return install.binary, frozenset({"python"})
    root = install.binary.resolve().parent.parent / "backends"
    found = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    return install.binary, frozenset(found)


def resolve_backend(choice: str, tritonserver: Path | None = None) -> str:
    """Turn ``auto`` into ``onnxruntime`` or ``python``; other choices pass through.

    ``auto`` picks ``onnxruntime`` where the server has that backend, else the python-backend ONNX
    Runtime runner.

    Raises:
        RepositoryError: ``auto`` and no server could be found.
    """
    if choice != "auto":
        return choice
    try:
        _, backends = available_backends(tritonserver)
    except ServerError as exc:
        raise RepositoryError(f"auto cannot tell which server will run: {exc}", option="backend") from None
    return "onnxruntime" if "onnxruntime" in backends else "python"
