"""The code that runs in Triton's python backend parses and links on the serving image's Python.

The router package and the python models run on the image's system Python, not on the toolkit's:
3.10 in the default image (:data:`toolkit.ngc.OLDEST_PYTHON`). No 3.10 interpreter is installed here,
so two checks stand in for one: the files parse under 3.10's grammar, and they use no standard-library
name that 3.10 lacks. ``ruff`` checks the same files with ``target-version = "py310"``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from toolkit.ngc import OLDEST_PYTHON, RELEASES

ROOT = Path(__file__).resolve().parents[2]
SERVER_FILES = sorted(
    [
        *(ROOT / "toolkit" / "router").glob("*.py"),
        *(ROOT / "toolkit" / "repository" / "python_models").glob("*.py"),
    ]
)

NEWER_THAN_310 = {
    "asyncio": {"timeout", "timeout_at", "TaskGroup", "Runner", "Barrier"},
    "datetime": {"UTC"},
    "typing": {
        "Self",
        "LiteralString",
        "Never",
        "assert_never",
        "reveal_type",
        "Required",
        "NotRequired",
        "TypeVarTuple",
        "Unpack",
        "override",
        "TypeAliasType",
        "ReadOnly",
        "TypeIs",
    },
    "enum": {"StrEnum", "verify", "ReprEnum", "EnumCheck"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "itertools": {"batched"},
    "math": {"exp2", "cbrt"},
    "operator": {"call"},
    "logging": {"getLevelNamesMapping"},
    "warnings": {"deprecated"},
    "copy": {"replace"},
}
"""Standard-library names added in Python 3.11, 3.12 or 3.13, by module."""
NEWER_MODULES = {"tomllib", "wsgiref.types"}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}


def newer_names(tree: ast.AST) -> list[str]:
    """``module.name`` uses of standard-library names that Python 3.10 lacks."""
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
                if alias.name in NEWER_MODULES:
                    found.append(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEWER_MODULES:
                found.append(node.module)
            found += [
                f"{node.module}.{a.name}" for a in node.names if a.name in NEWER_THAN_310.get(node.module, ())
            ]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id, node.value.id)
            if node.attr in NEWER_THAN_310.get(module, ()):
                found.append(f"{module}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(node.id)
        elif isinstance(node, ast.TryStar):
            found.append("except*")
    return found


def test_the_oldest_image_python_is_the_default_image_one() -> None:
    assert OLDEST_PYTHON == "3.10" == RELEASES["24.10"].python
    assert len(SERVER_FILES) >= 8


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_server_side_code_parses_and_links_on_the_image_python(path: Path) -> None:
    version = tuple(int(part) for part in OLDEST_PYTHON.split("."))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=version)
    assert newer_names(tree) == []


def test_the_scan_finds_what_python_310_lacks() -> None:
    source = (
        "import asyncio, datetime as dt\nfrom typing import Self\nimport tomllib\n"
        "async def f():\n    async with asyncio.timeout(1):\n        return dt.UTC\n"
        "def g():\n    raise ExceptionGroup('x', [])\n"
    )
    assert sorted(newer_names(ast.parse(source))) == sorted(
        ["typing.Self", "tomllib", "asyncio.timeout", "datetime.UTC", "ExceptionGroup"]
    )
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))
