"""Unit tests of toolkit.serve and `toolkit serve` that never start a real Triton server."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from toolkit.cli import cli, main
from toolkit.errors import ServerError
from toolkit.serve import (
    ServerOptions,
    TritonInstall,
    TritonServer,
    build_argv,
    build_env,
    bundled_tritonserver,
    check_python_backend_env,
    find_tritonserver,
    free_port,
    port_is_free,
    prepare_backend_dir,
    python_library_dir,
)
from toolkit.serve import server as server_module

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def wait_for_line(server: TritonServer, prefix: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log_tail(50).splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.02)
    raise AssertionError(f"no log line starting with {prefix!r} within {timeout} s")


def process_alive(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is still a live (non-zombie) process after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.02)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def free_ports_options(repository: Path, **kwargs: Any) -> ServerOptions:
    return ServerOptions(
        repository=repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        **kwargs,
    )


def fake_bundled(tmp_path: Path) -> TritonInstall:
    backend = tmp_path / "src" / "backends" / "python"
    backend.mkdir(parents=True)
    (backend / "libtriton_python.so").write_bytes(b"\x7fELF fake")
    (backend / "triton_python_backend_utils.py").write_text("X = 1\n", encoding="utf-8")
    (backend / "__pycache__").mkdir()
    (backend / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    stubs = tmp_path / "src" / "stubs"
    write_script(stubs / PY_VERSION / "triton_python_backend_stub", "exit 0")
    binary = write_script(tmp_path / "src" / "bin" / "tritonserver", "exit 0")
    return TritonInstall(
        binary=binary,
        kind="bundled",
        libs_dir=tmp_path / "src" / "libs",
        python_backend_dir=backend,
        stubs_dir=stubs,
        cache_dir=tmp_path / "src" / "caches",
    )


# ServerOptions


def test_serveroptions_raises_when_repository_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_repository"
    with pytest.raises(ServerError, match="no_such_repository"):
        ServerOptions(repository=missing)


def test_serveroptions_raises_when_port_out_of_range(repository: Path) -> None:
    with pytest.raises(ServerError, match="--http-port"):
        ServerOptions(repository=repository, http_port=70000)


def test_serveroptions_raises_when_two_endpoints_share_a_port(repository: Path) -> None:
    with pytest.raises(ServerError, match="--grpc-port and --metrics-port are both 9000"):
        ServerOptions(repository=repository, grpc_port=9000, metrics_port=9000)


def test_serveroptions_raises_when_load_models_outside_explicit_mode(repository: Path) -> None:
    with pytest.raises(ServerError, match="explicit"):
        ServerOptions(repository=repository, load_models=("tier_small",))


def test_serveroptions_raises_when_model_name_has_a_path_separator(repository: Path) -> None:
    with pytest.raises(ServerError, match="path separators"):
        ServerOptions(repository=repository, model_control_mode="explicit", load_models=("../x",))


@pytest.mark.parametrize("item", ["python", "python,", "python,=1", ",key=1", "python,key"])
def test_serveroptions_raises_when_backend_config_malformed(repository: Path, item: str) -> None:
    with pytest.raises(ServerError, match="backend,key=value"):
        ServerOptions(repository=repository, backend_config=(item,))


def test_serveroptions_converts_strings_and_lists_when_given(repository: Path) -> None:
    raw: dict[str, Any] = {"repository": str(repository), "backend_config": ["python,a=1"]}
    options = ServerOptions(**raw)
    assert options.repository == repository
    assert options.backend_config == ("python,a=1",)


# argv and environment


def test_build_argv_binds_every_endpoint_to_the_host_when_built(repository: Path) -> None:
    options = ServerOptions(
        repository=repository, host="127.0.0.1", grpc_port=9101, http_port=9100, metrics_port=9102
    )
    argv = build_argv(options, TritonInstall(binary=Path("/opt/tritonserver"), kind="path"), None)
    assert argv[0] == "/opt/tritonserver"
    for flag in (
        f"--model-repository={repository.resolve()}",
        "--grpc-address=127.0.0.1",
        "--grpc-port=9101",
        "--http-address=127.0.0.1",
        "--http-port=9100",
        "--metrics-address=127.0.0.1",
        "--metrics-port=9102",
        "--exit-timeout-secs=5",
        "--model-control-mode=none",
    ):
        assert flag in argv
    assert not any(arg.startswith(("--backend-directory", "--cache-directory")) for arg in argv)
    assert not any(arg.startswith("--log-verbose") for arg in argv)


def test_build_argv_passes_backend_dir_and_options_when_bundled(tmp_path: Path, repository: Path) -> None:
    install = fake_bundled(tmp_path)
    options = ServerOptions(
        repository=repository,
        exit_timeout_s=2,
        model_control_mode="explicit",
        load_models=("a", "b"),
        backend_config=("python,shm-default-byte-size=16777216",),
        log_verbose=1,
        extra_args=("--strict-readiness=false",),
    )
    argv = build_argv(options, install, tmp_path / "backends")
    assert f"--backend-directory={tmp_path / 'backends'}" in argv
    assert f"--cache-directory={install.cache_dir}" in argv
    assert "--exit-timeout-secs=2" in argv
    assert "--model-control-mode=explicit" in argv
    assert [a for a in argv if a.startswith("--load-model")] == ["--load-model=a", "--load-model=b"]
    assert "--backend-config=python,shm-default-byte-size=16777216" in argv
    assert "--log-verbose=1" in argv
    assert argv[-1] == "--strict-readiness=false"


def test_build_env_puts_python_bin_and_bundled_libs_first_when_bundled(tmp_path: Path) -> None:
    install = fake_bundled(tmp_path)
    base = {"PATH": "/usr/bin:/venv/bin", "LD_LIBRARY_PATH": "/usr/lib", "HOME": "/home/u"}
    env = build_env(install, Path("/venv/bin"), base)
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert env["LD_LIBRARY_PATH"] == f"{install.libs_dir}:/usr/lib"
    assert env["HOME"] == "/home/u"
    assert base["PATH"] == "/usr/bin:/venv/bin"


def test_build_env_puts_the_python_library_between_the_bundled_libs_and_the_rest(tmp_path: Path) -> None:
    install = fake_bundled(tmp_path)
    env = build_env(install, Path("/venv/bin"), {"LD_LIBRARY_PATH": "/usr/lib"}, Path("/py/lib"))
    assert env["LD_LIBRARY_PATH"] == f"{install.libs_dir}:/py/lib:/usr/lib"


def test_python_library_dir_holds_this_interpreters_shared_library_when_it_has_one() -> None:
    folder = python_library_dir()
    soname = sysconfig.get_config_var("INSTSONAME")
    assert folder is None or (folder / soname).is_file()


def test_build_env_leaves_ld_library_path_alone_when_server_on_path() -> None:
    install = TritonInstall(binary=Path("/opt/tritonserver/bin/tritonserver"), kind="path")
    env = build_env(install, Path("/venv/bin"), {"PATH": "/usr/bin"})
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert "LD_LIBRARY_PATH" not in env


# locating the server


def test_find_tritonserver_returns_explicit_when_path_given(tmp_path: Path) -> None:
    binary = write_script(tmp_path / "custom" / "tritonserver", "exit 0")
    install = find_tritonserver(binary)
    assert install.kind == "explicit"
    assert install.binary == binary
    assert install.libs_dir is None
    assert not install.needs_backend_dir


def test_find_tritonserver_raises_when_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="nowhere/tritonserver"):
        find_tritonserver(tmp_path / "nowhere" / "tritonserver")


def test_find_tritonserver_raises_when_explicit_path_not_executable(tmp_path: Path) -> None:
    binary = tmp_path / "tritonserver"
    binary.write_text("not a program", encoding="utf-8")
    with pytest.raises(ServerError, match="not executable"):
        find_tritonserver(binary)


def test_find_tritonserver_prefers_path_when_one_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = write_script(tmp_path / "bin" / "tritonserver", "exit 0")
    monkeypatch.setenv("PATH", str(binary.parent))
    install = find_tritonserver(None)
    assert install.kind == "path"
    assert install.binary == binary


def test_find_tritonserver_returns_bundled_when_none_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    install = find_tritonserver(None)
    assert install.kind == "bundled"
    assert install.binary.name == "tritonserver"
    assert install.libs_dir is not None and install.libs_dir.name == "nvidia_pytriton.libs"
    assert install.needs_backend_dir


def test_find_tritonserver_keeps_bundled_layout_when_explicit_is_the_bundled_binary() -> None:
    bundled = bundled_tritonserver()
    assert bundled is not None
    install = find_tritonserver(bundled.binary)
    assert install.kind == "explicit"
    assert install.libs_dir == bundled.libs_dir
    assert install.stubs_dir == bundled.stubs_dir


def test_find_tritonserver_raises_when_nothing_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("toolkit.serve.locate.bundled_tritonserver", lambda: None)
    with pytest.raises(ServerError, match="--tritonserver"):
        find_tritonserver(None)


# backend directory


def test_prepare_backend_dir_copies_backend_and_stub_when_bundled(tmp_path: Path) -> None:
    install = fake_bundled(tmp_path)
    backend_dir = prepare_backend_dir(install, tmp_path / "cache")
    assert backend_dir is not None
    python_dir = backend_dir / "python"
    assert (python_dir / "libtriton_python.so").read_bytes() == b"\x7fELF fake"
    assert (python_dir / "triton_python_backend_utils.py").is_file()
    assert not (python_dir / "__pycache__").exists()
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)


def test_prepare_backend_dir_reuses_the_copy_when_called_again(tmp_path: Path) -> None:
    install = fake_bundled(tmp_path)
    first = prepare_backend_dir(install, tmp_path / "cache")
    assert first is not None
    marker = first / "python" / "mine"
    marker.write_text("kept", encoding="utf-8")
    second = prepare_backend_dir(install, tmp_path / "cache")
    assert second == first
    assert marker.read_text(encoding="utf-8") == "kept"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.name]


def test_prepare_backend_dir_returns_none_when_server_brings_its_own(tmp_path: Path) -> None:
    install = TritonInstall(binary=tmp_path / "tritonserver", kind="path")
    assert prepare_backend_dir(install, tmp_path / "cache") is None


def test_prepare_backend_dir_raises_when_no_stub_for_this_python(tmp_path: Path) -> None:
    install = fake_bundled(tmp_path)
    assert install.stubs_dir is not None
    (install.stubs_dir / PY_VERSION).rename(install.stubs_dir / "2.7")
    with pytest.raises(ServerError, match=rf"Python {PY_VERSION}.*available: 2\.7"):
        prepare_backend_dir(install, tmp_path / "cache")


# python backend environment


def test_check_python_backend_env_raises_when_numpy_is_2(tmp_path: Path) -> None:
    python = write_script(tmp_path / "python", 'echo "2.1.0"')
    with pytest.raises(ServerError, match=r"numpy 2\.1\.0.*numpy<2"):
        check_python_backend_env(python, require_onnxruntime=False)


def test_check_python_backend_env_raises_when_numpy_missing(tmp_path: Path) -> None:
    python = write_script(
        tmp_path / "python", "echo \"ModuleNotFoundError: No module named 'numpy'\" >&2; exit 1"
    )
    with pytest.raises(ServerError, match="cannot import numpy.*No module named 'numpy'"):
        check_python_backend_env(python, require_onnxruntime=False)


def test_check_python_backend_env_raises_when_onnxruntime_missing(tmp_path: Path) -> None:
    python = write_script(
        tmp_path / "python",
        'case "$2" in *onnxruntime*) echo "No module named onnxruntime" >&2; exit 1;; esac\necho 1.26.4',
    )
    with pytest.raises(ServerError, match="onnxruntime"):
        check_python_backend_env(python, require_onnxruntime=True)
    check_python_backend_env(python, require_onnxruntime=False)


def test_check_python_backend_env_raises_when_interpreter_missing(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        check_python_backend_env(tmp_path / "python")


def test_check_python_backend_env_passes_when_project_venv() -> None:
    check_python_backend_env(Path(sys.executable), require_onnxruntime=True)


# ports


def test_free_port_returns_a_bindable_port_when_called() -> None:
    port = free_port()
    assert 1 <= port <= 65535
    assert port_is_free("127.0.0.1", port)


def test_port_is_free_returns_false_when_someone_listens(listening_socket: socket.socket) -> None:
    assert not port_is_free("127.0.0.1", listening_socket.getsockname()[1])


def test_tritonserver_start_raises_naming_port_and_flag_when_port_taken(
    repository: Path, listening_socket: socket.socket
) -> None:
    taken = listening_socket.getsockname()[1]
    options = ServerOptions(
        repository=repository, grpc_port=taken, http_port=free_port(), metrics_port=free_port()
    )
    server = TritonServer(options)
    with pytest.raises(ServerError, match=rf"Port {taken} .*--grpc-port"):
        server.start()
    assert server.pid is None


# process handling with fake servers


def test_tritonserver_wait_ready_raises_with_log_when_process_exits(tmp_path: Path, repository: Path) -> None:
    fake = write_script(tmp_path / "tritonserver", 'echo "args: $*"\necho "E0101 00:00:00 boom" >&2\nexit 3')
    log = tmp_path / "logs" / "server.log"
    server = TritonServer(
        free_ports_options(repository, tritonserver=fake, log_file=log, require_onnxruntime=False)
    )
    server.start()
    with pytest.raises(ServerError) as caught:
        server.wait_ready(timeout=30)
    message = str(caught.value)
    assert "exited with code 3" in message
    assert "E0101 00:00:00 boom" in message
    assert "--grpc-address=127.0.0.1" in message
    assert server.returncode == 3
    assert server.log_path == log
    assert not server.running


def test_tritonserver_wait_ready_stops_server_when_deadline_passes(tmp_path: Path, repository: Path) -> None:
    fake = write_script(tmp_path / "tritonserver", "echo starting\nexec sleep 60")
    server = TritonServer(free_ports_options(repository, tritonserver=fake, require_onnxruntime=False))
    server.start()
    with pytest.raises(ServerError, match=r"not ready after 0.5 s(.|\n)*starting"):
        server.wait_ready(timeout=0.5)
    assert server.returncode is not None
    assert not server.running


def test_tritonserver_stop_kills_process_group_when_sigint_ignored(
    tmp_path: Path, repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_KILL_GRACE_S", 0.3)
    fake = write_script(tmp_path / "tritonserver", "trap '' INT\nsleep 60 &\necho \"child $!\"\nwait")
    server = TritonServer(
        free_ports_options(repository, tritonserver=fake, exit_timeout_s=0, require_onnxruntime=False)
    )
    server.start()
    child = int(wait_for_line(server, "child ").split()[1])
    server.stop()
    assert server.returncode == -signal.SIGKILL
    assert not process_alive(child)
    server.stop()
    assert server.returncode == -signal.SIGKILL


def test_tritonserver_stop_does_nothing_when_never_started(repository: Path) -> None:
    server = TritonServer(ServerOptions(repository=repository))
    server.stop()
    assert server.pid is None
    assert server.log_tail() == ""


def test_tritonserver_start_raises_when_already_running(tmp_path: Path, repository: Path) -> None:
    fake = write_script(tmp_path / "tritonserver", "exec sleep 60")
    server = TritonServer(free_ports_options(repository, tritonserver=fake, require_onnxruntime=False))
    server.start()
    try:
        with pytest.raises(ServerError, match="already running"):
            server.start()
    finally:
        server.stop()
    assert server.returncode == -signal.SIGINT


def test_tritonserver_start_spawns_a_new_process_when_restarted_after_stop(
    tmp_path: Path, repository: Path
) -> None:
    fake = write_script(tmp_path / "tritonserver", "exec sleep 60")
    server = TritonServer(free_ports_options(repository, tritonserver=fake, require_onnxruntime=False))
    server.start()
    first = server.pid
    server.stop()
    server.start()
    try:
        assert server.running
        assert server.pid != first
    finally:
        server.stop()
    assert not server.running


def test_tritonserver_log_tail_returns_last_lines_when_log_written(tmp_path: Path, repository: Path) -> None:
    fake = write_script(tmp_path / "tritonserver", "for i in 1 2 3 4 5; do echo line$i; done")
    server = TritonServer(free_ports_options(repository, tritonserver=fake, require_onnxruntime=False))
    server.start()
    with pytest.raises(ServerError):
        server.wait_ready(timeout=30)
    assert server.log_tail(2) == "line4\nline5"


def test_tritonserver_urls_point_at_loopback_when_bound_to_all_addresses(repository: Path) -> None:
    server = TritonServer(
        ServerOptions(repository=repository, host="0.0.0.0", grpc_port=1, http_port=2, metrics_port=3)
    )
    assert server.grpc_url == "127.0.0.1:1"
    assert server.http_url == "127.0.0.1:2"
    assert server.metrics_url == "http://127.0.0.1:3/metrics"


# CLI


def test_serve_command_help_explains_every_option_when_asked() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--spec",
        "--repository",
        "--host",
        "--grpc-port",
        "--http-port",
        "--metrics-port",
        "--tritonserver",
        "--log-file",
        "--model-control-mode",
        "--load-model",
        "--startup-timeout",
        "--backend-config",
        "--log-verbose",
    ):
        assert option in result.output


def test_serve_command_exits_1_with_one_line_when_repository_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--repository", "absent_repository"])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Model repository absent_repository does not exist")
    assert err.count("\n") == 1


def test_serve_command_exits_1_naming_flag_when_port_taken(
    repository: Path,
    listening_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(repository.parent)
    taken = listening_socket.getsockname()[1]
    args = ["serve", "--repository", str(repository), "--http-port", str(taken)]
    args += ["--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 1
    assert "--http-port" in capsys.readouterr().err
