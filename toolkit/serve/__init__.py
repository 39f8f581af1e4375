"""Run a real Triton server on a model repository: find it, start it, wait until ready, stop it.

``TritonServer(ServerOptions(repository=...))`` is a context manager; see :mod:`toolkit.serve.server`.
"""

from toolkit.serve.locate import (
    TritonInstall,
    backend_python,
    bundled_tritonserver,
    check_python_backend_env,
    default_cache_root,
    find_tritonserver,
    prepare_backend_dir,
)
from toolkit.serve.options import (
    MODEL_CONTROL_MODES,
    ServerOptions,
    build_argv,
    build_env,
    python_library_dir,
)
from toolkit.serve.ports import check_ports_free, free_port, port_is_free
from toolkit.serve.server import TritonServer

__all__ = [
    "MODEL_CONTROL_MODES",
    "ServerOptions",
    "TritonInstall",
    "TritonServer",
    "backend_python",
    "build_argv",
    "build_env",
    "python_library_dir",
    "bundled_tritonserver",
    "check_ports_free",
    "check_python_backend_env",
    "default_cache_root",
    "find_tritonserver",
    "free_port",
    "port_is_free",
    "prepare_backend_dir",
]
