"""The install as a user gets it: a fresh virtualenv, ``pip install .``, the client and nothing more.

The other extras are checked by every CLI test: :func:`helpers.run_cli` runs each command with only the
extras it needs importable (``train``, ``export`` and ``deploy`` without ``serve``'s pytriton or
``fleet``'s boto3, ``infer`` and ``bench`` with the base install only, and so on).
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest
from helpers import ROOT, run_cli

from toolkit.extras import COMMAND_EXTRAS, EXTRAS

pytestmark = pytest.mark.slow

HEAVY = ("torch", "onnx", "onnxruntime", "pytriton", "boto3", "pyarrow", "matplotlib")


@pytest.fixture(scope="module")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with ``pip install -c constraints.txt .`` (no extras, not editable)."""
    folder = tmp_path_factory.mktemp("base-venv")
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["-c", str(ROOT / "constraints.txt"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return folder / "bin"


def test_the_base_install_is_a_client_without_torch_onnx_or_the_server(base_install: Path) -> None:
    probe = subprocess.run(
        [
            str(base_install / "python"),
            "-c",
            "import importlib.util as u; import toolkit.client; "
            f"print(','.join(m for m in {HEAVY!r} if u.find_spec(m)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == ""
    for command in ("infer", "bench"):
        helped = subprocess.run(
            [str(base_install / "toolkit"), command, "--help"], capture_output=True, text=True
        )
        assert helped.returncode == 0 and "Usage: toolkit" in helped.stdout


def test_init_writes_the_packaged_spec_and_examples_from_the_wheel(
    base_install: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [str(base_install / "toolkit"), "init", str(tmp_path / "project")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    written = sorted(
        str(p.relative_to(tmp_path / "project")) for p in (tmp_path / "project").rglob("*") if p.is_file()
    )
    shipped = sorted(
        str(p.relative_to(ROOT))
        for d in ("ensembles", "examples")
        for p in (ROOT / d).rglob("*.*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert written == shipped
    assert (tmp_path / "project" / "ensembles" / "ads_ranking.yaml").read_bytes() == (
        ROOT / "ensembles" / "ads_ranking.yaml"
    ).read_bytes()
    assert "toolkit train && toolkit export && toolkit deploy && toolkit demo" in proc.stdout
    again = subprocess.run(
        [str(base_install / "toolkit"), "init", str(tmp_path / "project")], capture_output=True, text=True
    )
    assert again.returncode == 1 and "--force" in again.stderr


@pytest.mark.parametrize(
    "command", ["train", "export", "deploy", "calibrate", "evaluate", "serve", "demo", "k8s"]
)
def test_a_command_without_its_extra_stops_with_one_line_naming_it(base_install: Path, command: str) -> None:
    proc = subprocess.run([str(base_install / "toolkit"), command], capture_output=True, text=True)
    extra = COMMAND_EXTRAS[command][0]
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: toolkit {command} needs the '{extra}' extra ({EXTRAS[extra][0]} is not installed): "
        f"pip install 'adaptive-ranking-toolkit[{extra}]'"
    ]


def test_every_command_has_its_extras_listed_and_every_extra_is_in_pyproject() -> None:
    import tomllib

    from toolkit.cli import _COMMANDS

    assert set(COMMAND_EXTRAS) == set(_COMMANDS)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert set(EXTRAS) | {"all", "dev"} == set(extras)
    assert extras["all"] == [f"adaptive-ranking-toolkit[{','.join(EXTRAS)}]"]


def test_an_import_of_a_missing_extra_mid_command_becomes_the_same_one_line(pipeline) -> None:
    proc = run_cli(
        "deploy",
        "--spec",
        str(pipeline.spec_path),
        "--out",
        "s3://bucket/prefix",
        extras=["export", "serve"],
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: toolkit deploy needs the 'fleet' extra (boto3 is not installed): "
        "pip install 'adaptive-ranking-toolkit[fleet]'"
    ]


def test_the_gpu_check_script_parses_and_uses_only_options_the_cli_has() -> None:
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text(encoding="utf-8")
    for command, option in (
        ("export", "--precision"),
        ("export", "--force"),
        ("deploy", "--target"),
        ("deploy", "--out"),
    ):
        assert f"{option}" in text
        assert option in run_cli(command, "--help").stdout
    from toolkit.spec.variants import VARIANTS

    (precisions,) = [
        line.split("--precision ")[1].split()[0] for line in text.splitlines() if "--precision " in line
    ]
    assert set(precisions.split(",")) <= set(VARIANTS)
    assert "'.[export,serve,gpu]'" in text and "-c constraints.txt" in text
