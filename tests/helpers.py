"""Helpers shared by the test modules: a tiny spec and running the CLI as a user would."""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "ensembles" / "ads_ranking.yaml"


# ad_id keeps 512 rows: the demo generator needs enough items (3/4 of the vocabulary) to fill each of
# its 32 categories; much smaller ad_id vocabularies make it fail (see the unit-test report).
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "features": {
        "user_dense": 3,
        "ad_dense": 2,
        "user_sparse": [{"name": "user_segment", "vocab": 11}, {"name": "user_geo", "vocab": 7}],
        "ad_sparse": [
            {"name": "ad_id", "vocab": 512},
            {"name": "advertiser", "vocab": 13},
            {"name": "ad_category", "vocab": 9},
        ],
        "history": {"length": 6, "table": "ad_category"},
    },
    "data": {
        "train_requests": 40,
        "holdout_requests": 20,
        "candidates": {"min": 2, "max": 6},
        "informative_share": 0.5,
    },
    "tiers": [
        {"name": "lite", "architecture": "lite", "params": {"embedding_dim": 4, "hidden": [8, 4]}},
        {
            "name": "standard",
            "architecture": "standard",
            "params": {"embedding_dim": 4, "cross_layers": 2, "hidden": [8]},
        },
        {
            "name": "xl",
            "architecture": "xl",
            "params": {"embedding_dim": 8, "heads": 2, "layers": 1, "hidden": [8]},
        },
    ],
    "routing": {
        "policy": "rules",
        "default_tier": "lite",
        "rules": [{"feature": "history_length", "op": ">=", "value": 3, "tier": "xl"}],
    },
    "triton": {"max_candidates": 16, "router_instances": 2, "tier_instances": 1},
}


TRAINED = {
    "data": {"train_requests": 2000, "holdout_requests": 200, "candidates": {"min": 2, "max": 24}},
    "export": {"parity_requests": 8, "timing_candidates": [8], "timing_rounds": 1, "opset": 18},
    "triton": {"max_candidates": 1024},
}
"""What the tiny spec adds when it is trained, exported and served: enough requests to learn from,
and export settings that keep the pipeline to seconds."""


def tiny_spec_dict(folder: Path | None = None) -> dict:
    """The tiny test spec as parsed YAML gives it (a fresh, mutable copy).

    Args:
        folder: Where its checkpoints, artifacts and repository go when the spec is run through the
            pipeline; then it also gets :data:`TRAINED`'s data and export settings. None: only
            validated or built in code, no outputs.
    """
    data = copy.deepcopy(TINY_SPEC)
    if folder is None:
        return data
    data["data"] = {**data["data"], **copy.deepcopy(TRAINED["data"])}
    data["export"] = copy.deepcopy(TRAINED["export"])
    data["triton"] = {**data["triton"], **TRAINED["triton"]}
    data["paths"] = {
        "checkpoints": str(folder / "checkpoints"),
        "artifacts": str(folder / "artifacts"),
        "repository": str(folder / "model_repository"),
    }
    return data


def write_spec(path: Path, data: dict) -> Path:
    """Write a spec dict as YAML and return the path."""
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def only_extras(extras: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """A Python command and environment in which only the base install and ``extras`` are installed.

    The modules of every other extra (:data:`toolkit.extras.EXTRAS`) are absent from its path, as after
    ``pip install 'adaptive-ranking-toolkit[EXTRAS]'``: the interpreter runs without ``site`` (``-S``) on
    a folder that links every entry of this virtualenv's site-packages except theirs.

    Returns:
        The interpreter's arguments (prepend to ``-m toolkit ...`` or ``-c ...``) and the environment.
    """
    from toolkit.extras import EXTRAS

    keep = {module for extra in extras for module in EXTRAS[extra]}
    absent = sorted({module for modules in EXTRAS.values() for module in modules} - keep)
    site = _site_without(tuple(absent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return [sys.executable, "-S"], env


_SITES: dict[tuple[str, ...], Path] = {}


def _site_without(absent: tuple[str, ...]) -> Path:
    if absent in _SITES:
        return _SITES[absent]
    source = Path(sysconfig.get_paths()["purelib"])
    folder = Path(tempfile.mkdtemp(prefix="site-without-"))
    for entry in source.iterdir():
        top = entry.name.split(".")[0].split("-")[0]
        if top in absent or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
            continue
        (folder / entry.name).symlink_to(entry)
    _SITES[absent] = folder
    return folder


LOCAL_SERVER_EXTRAS = {"deploy": ("serve",)}
"""Extras a command needs beyond its own when it targets the local server, as the tests do: ``deploy
--backend auto`` asks the bundled tritonserver (the ``serve`` extra) which backends it has."""


def run_cli(
    *args: str, check: bool = True, timeout: float = 600, extras: Iterable[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m toolkit ARGS`` as a user would and return the completed process (text output).

    It runs with only the extras its command needs installed (:data:`toolkit.extras.COMMAND_EXTRAS`,
    or ``extras``), so every command the tests run also checks that its extra is enough.
    """
    from toolkit.extras import COMMAND_EXTRAS

    command = next((arg for arg in args if not arg.startswith("-")), "")
    needs = (*COMMAND_EXTRAS.get(command, ()), *LOCAL_SERVER_EXTRAS.get(command, ()))
    if any(arg.startswith("s3://") for arg in args):
        needs += ("fleet",)  # publishing to or reading from S3 goes through boto3
    python, env = only_extras(needs if extras is None else extras)
    proc = subprocess.run(
        [*python, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"toolkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


CONFIG_FEATURES = {
    "user_dense": 3,
    "ad_dense": 2,
    "user_sparse": [{"name": "user_segment", "vocab": 11}, {"name": "user_geo", "vocab": 7}],
    "ad_sparse": [
        {"name": "ad_id", "vocab": 50},
        {"name": "advertiser", "vocab": 13},
        {"name": "ad_category", "vocab": 9},
    ],
    "history": {"length": 6, "table": "ad_category"},
}
"""Features of the small spec the stored ``.pbtxt`` files were written from (fixed here, not
derived from the demo spec, so the expected files only change when the code does)."""

CONFIG_TIERS = [
    {"name": "small", "architecture": "lite", "params": {"embedding_dim": 4, "hidden": [8]}},
    {"name": "big", "architecture": "xl", "params": {"embedding_dim": 8, "heads": 2, "hidden": [8]}},
]
"""Tiers of that spec."""


def free_port_options(repository: Path, log_file: Path) -> Any:
    """Server options for ``repository`` on free ports, logging to ``log_file``."""
    from toolkit.serve import ServerOptions

    return ServerOptions.on_free_ports(repository, log_file=log_file)


@contextlib.contextmanager
def serving(repository: Path, log_dir: Path) -> Iterator[Any]:
    """A real tritonserver on ``repository`` on free ports; skips the test where there is none."""
    from toolkit.errors import ServerError
    from toolkit.serve import TritonServer, find_tritonserver

    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver on this machine: {exc}")
    with TritonServer(free_port_options(repository, log_dir / "tritonserver.log")) as running:
        yield running


def stand_in_onnx(kind: str, tag: str, opset: int = 18) -> bytes:
    """A small valid ONNX model with the request tensors as inputs, named ``tag`` (its graph name).

    ``kind`` is ``preprocess`` (each input passed through as ``<name>_pre``), ``tier`` (``score`` [N],
    the sum of ``ad_dense`` per candidate) or ``gate`` (``gains`` [1, 2]); deploy can fuse and copy it
    like an exported model.
    """
    from onnx import TensorProto, helper

    from toolkit.data.requests import REQUEST_TENSORS

    types = {"user_dense": TensorProto.FLOAT, "ad_dense": TensorProto.FLOAT}
    dims = ["rows", "width"]
    inputs = [
        helper.make_tensor_value_info(n, types.get(n, TensorProto.INT64), dims) for n in REQUEST_TENSORS
    ]
    if kind == "preprocess":
        nodes = [helper.make_node("Identity", [n], [f"{n}_pre"]) for n in REQUEST_TENSORS]
        outputs = [
            helper.make_tensor_value_info(f"{n}_pre", types.get(n, TensorProto.INT64), dims)
            for n in REQUEST_TENSORS
        ]
    elif kind == "tier":
        axes = helper.make_tensor("a", TensorProto.INT64, [1], [1])
        nodes = [
            helper.make_node("Constant", [], ["axes"], value=axes),
            helper.make_node("ReduceSum", ["ad_dense", "axes"], ["score"], keepdims=0),
        ]
        outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["rows"])]
    else:
        gains = helper.make_tensor("g", TensorProto.FLOAT, [1, 2], [0.1, 0.2])
        nodes = [helper.make_node("Constant", [], ["gains"], value=gains)]
        outputs = [helper.make_tensor_value_info("gains", TensorProto.FLOAT, [1, 2])]
    graph = helper.make_graph(nodes, tag, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model.SerializeToString()


def onnx_graph_name(path: Path) -> str:
    """The graph name of the ONNX model at ``path`` (what :func:`stand_in_onnx` calls its tag)."""
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.name


@contextlib.contextmanager
def http_endpoint(answer: Callable[[str], tuple[int, bytes]]) -> Iterator[str]:
    """A local HTTP server whose every GET is answered by ``answer(path) -> (status, body)``.

    Yields its address, ``http://127.0.0.1:PORT``; it stops when the block ends.
    """
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
