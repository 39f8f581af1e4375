"""End-to-end tests of toolkit.serve: each starts the real embedded tritonserver on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from toolkit.errors import ServerError
from toolkit.serve import ServerOptions, TritonServer, find_tritonserver, free_port, port_is_free

pytestmark = pytest.mark.e2e

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

DOUBLE_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x * 2).astype(x.dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

BROKEN_MODEL = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("broken on purpose")

    def execute(self, requests):
        return []
"""


@pytest.fixture(scope="module", autouse=True)
def _need_tritonserver() -> None:
    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver available: {exc}")


def add_model(repository: Path, name: str, source: str) -> None:
    version = repository / name / "1"
    version.mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(CONFIG.format(name=name), encoding="utf-8")
    (version / "model.py").write_text(source, encoding="utf-8")


def options_on_free_ports(repository: Path, **kwargs: Any) -> ServerOptions:
    return ServerOptions(
        repository=repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        exit_timeout_s=2,
        startup_timeout_s=120.0,
        **kwargs,
    )


def process_gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether ``pid`` is gone or a zombie within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def double_over_grpc(url: str, values: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
        tensor.set_data_from_numpy(values)
        result = client.infer("double", [tensor], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
        return result.as_numpy("OUTPUT0")


def test_tritonserver_doubles_input_and_leaves_nothing_behind_when_python_model_served(
    tmp_path: Path,
) -> None:
    add_model(tmp_path / "repo", "double", DOUBLE_MODEL)
    options = options_on_free_ports(tmp_path / "repo", log_file=tmp_path / "server.log")
    with TritonServer(options) as server:
        pid = server.pid
        assert pid is not None
        assert server.is_ready()
        values = np.array([1.0, -2.5, 3.0, 0.0], dtype=np.float32)
        np.testing.assert_array_equal(double_over_grpc(server.grpc_url, values), values * 2)
        assert len(group_members(pid)) >= 2
    assert server.returncode == 0
    assert process_gone(pid)
    assert group_members(pid) == []
    for port in options.ports.values():
        assert port_is_free(options.host, port)
    assert "Started GRPCInferenceService at 127.0.0.1:" in (tmp_path / "server.log").read_text()


def test_tritonserver_start_fails_with_model_error_when_model_initialize_raises(tmp_path: Path) -> None:
    add_model(tmp_path / "repo", "double", DOUBLE_MODEL)
    add_model(tmp_path / "repo", "broken", BROKEN_MODEL)
    server = TritonServer(options_on_free_ports(tmp_path / "repo"))
    server.start()
    pid = server.pid
    assert pid is not None
    with pytest.raises(ServerError) as caught:
        server.wait_ready()
    message = str(caught.value)
    assert "exited with code 1 before it was ready" in message
    assert "failed to load 'broken'" in message
    assert "broken on purpose" in message
    assert "failed to load all models" in message
    assert process_gone(pid)
    assert group_members(pid) == []


def test_tritonserver_loads_only_listed_models_when_control_mode_explicit(tmp_path: Path) -> None:
    add_model(tmp_path / "repo", "double", DOUBLE_MODEL)
    add_model(tmp_path / "repo", "broken", BROKEN_MODEL)
    options = options_on_free_ports(tmp_path / "repo", model_control_mode="explicit", load_models=("double",))
    with TritonServer(options) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.is_model_ready("double")
        assert not client.is_model_ready("broken")
        values = np.arange(5, dtype=np.float32)
        np.testing.assert_array_equal(double_over_grpc(server.grpc_url, values), values * 2)


def test_tritonserver_reports_not_ready_but_serves_when_explicit_load_of_broken_model_fails(
    tmp_path: Path,
) -> None:
    add_model(tmp_path / "repo", "double", DOUBLE_MODEL)
    add_model(tmp_path / "repo", "broken", BROKEN_MODEL)
    options = options_on_free_ports(tmp_path / "repo", model_control_mode="explicit", load_models=("double",))
    with TritonServer(options) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="broken on purpose"):
            client.load_model("broken")
        assert server.running
        assert not client.is_model_ready("broken")
        assert not client.is_server_ready()
        assert not server.is_ready()
        assert client.is_model_ready("double")
        values = np.arange(5, dtype=np.float32)
        np.testing.assert_array_equal(double_over_grpc(server.grpc_url, values), values * 2)


def test_tritonserver_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    add_model(tmp_path / "repo", "double", DOUBLE_MODEL)
    options = options_on_free_ports(tmp_path / "repo")
    parent_script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from toolkit.serve import ServerOptions, TritonServer
        server = TritonServer(ServerOptions(
            repository=Path({str(options.repository)!r}),
            grpc_port={options.grpc_port}, http_port={options.http_port},
            metrics_port={options.metrics_port}, exit_timeout_s=2,
        ))
        server.start()
        server.wait_ready()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    server_pid = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"parent did not report a server pid (got {line!r})"
        server_pid = int(line)
        assert not process_gone(server_pid, timeout=0)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        assert process_gone(server_pid, timeout=30)
        assert group_members(server_pid) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if server_pid is not None and not process_gone(server_pid, timeout=0):
            os.killpg(server_pid, signal.SIGKILL)
