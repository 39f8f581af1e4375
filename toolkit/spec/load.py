"""Read an ensemble spec file into typed, frozen :mod:`toolkit.spec.schema` objects."""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml

from toolkit.errors import SpecError
from toolkit.spec.schema import KeyedValueError, Spec

DEFAULT_SPEC = Path("ensembles/ads_ranking.yaml")


def load_spec(path: str | Path = DEFAULT_SPEC) -> Spec:
    """Load and validate a spec file.

    Args:
        path: YAML file to read.

    Returns:
        The validated spec; its ``source`` is ``path``.

    Raises:
        SpecError: The file is missing, is not YAML, or a key is missing, unknown or invalid. The
            message names the file, the key and what was expected.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = ""
        if path == DEFAULT_SPEC:
            hint = "; run `toolkit init` to write the default spec here, or pass --spec"
        raise SpecError(f"{path}: spec file not found{hint}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    return spec_from_dict(data, source=str(path))


def spec_from_dict(data: Any, source: str = "<dict>") -> Spec:
    """Validate a parsed spec (a mapping) into a :class:`Spec`.

    Args:
        data: The parsed YAML document.
        source: Name used in error messages (usually the file path).

    Raises:
        SpecError: A key is missing, unknown or invalid.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {_kind(data)}")
    data = {**_renamed_keys(data, source), "source": source}
    return _build(Spec, data, source, "")


RENAMED_KEYS: dict[str, tuple[str, str]] = {
    "gate": ("export", "acceptance"),
    "calibration_requests": ("export", "quantization_requests"),
}
"""Old key -> (section, new key): keys renamed in a section, still read, with a warning."""


def _renamed_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``data`` with renamed keys under their new names; each old key read gives a FutureWarning.

    Raises:
        SpecError: A section has both the old and the new name of a key.
    """
    out = dict(data)
    for old, (section, new) in RENAMED_KEYS.items():
        values = out.get(section)
        if not isinstance(values, dict) or old not in values:
            continue
        if new in values:
            raise SpecError(
                f"{source}: key '{section}.{old}' is the old name of '{section}.{new}'; "
                f"give only '{section}.{new}'"
            )
        values = dict(values)
        values[new] = values.pop(old)
        out[section] = values
        warnings.warn(
            f"{source}: key '{section}.{old}' is now '{section}.{new}'; the old name is still read, but "
            "will stop being read in a later release",
            FutureWarning,
            stacklevel=3,
        )
    return out


def build_dataclass(cls: type, data: Any, source: str, key: str) -> Any:
    """Validate a mapping into the dataclass ``cls`` the way spec sections are validated.

    Used for sections whose class is chosen at run time, such as a tier's ``params``.

    Args:
        cls: Dataclass to build.
        data: Parsed mapping.
        source: Spec file name for messages.
        key: Dotted key of ``data`` in the spec, for messages.

    Raises:
        SpecError: A key is missing, unknown or invalid.
    """
    return _build(cls, data, source, key)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) else type(value).__name__


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def _fail(source: str, key: str, message: str) -> SpecError:
    where = f"key '{key}'" if key else "top level"
    return SpecError(f"{source}: {where}: {message}")


def _build(cls: type, data: Any, source: str, key: str) -> Any:
    if not isinstance(data, dict):
        raise _fail(source, key, f"expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _fail(
            source, _join(key, unknown[0]), f"unknown key; expected one of: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default:
                raise _fail(source, _join(key, name), "required key is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], source, _join(key, name))
    try:
        return cls(**kwargs)
    except KeyedValueError as exc:
        raise _fail(source, _join(key, exc.key) if key else exc.key, str(exc)) from None
    except ValueError as exc:
        raise _fail(source, key, str(exc)) from None


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key)
    if origin is Literal:
        if value not in args:
            raise _fail(source, key, f"expected one of {', '.join(map(str, args))}, got {_kind(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _fail(source, key, f"expected a list, got {_kind(value)}")
        return tuple(_convert(args[0], v, source, _join(key, i)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a mapping, got {_kind(value)}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return _convert(args[0], value, source, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(source, key, f"expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, f"expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(source, key, f"expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(source, key, f"expected a string, got {_kind(value)}")
        return value
    return value
