"""The spec reference, written from the schema: every key, its type, its default and its docstring line.

The documentation site's spec reference page is this module's :func:`spec_reference_markdown`, so
a key is documented exactly when its dataclass's ``Attributes:`` section describes it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass

from toolkit.spec.schema import Spec

NOT_IN_FILES = {(Spec, "source")}
"""Fields set by the loader, not read from a spec file."""


@dataclass(frozen=True)
class Section:
    """One dataclass of the spec and where it sits in the YAML file.

    Attributes:
        key: The YAML key path, ``[]`` marking a list item (``tiers[]``, ``routing.rules[]``); empty
            for the top level.
        cls: The dataclass the key is validated into.
    """

    key: str
    cls: type


def attribute_docs(cls: type) -> dict[str, str]:
    """Map each name under the class docstring's Google-style ``Attributes:`` to its description.

    Continuation lines (indented deeper than the name) are joined to their name's description.
    """
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    section = re.split(r"\n\S", doc.split("Attributes:", 1)[1], maxsplit=1)[0]
    docs: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        match = re.match(r"^ {4}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2).strip()
        elif name and line.strip():
            docs[name] = f"{docs[name]} {line.strip()}"
    return docs


def _dataclass_in(annotation: object) -> tuple[type | None, bool]:
    """The dataclass an annotation holds (directly, in a tuple, or optional) and whether it is a list."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation, False
    args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    is_list = typing.get_origin(annotation) in (tuple, list)
    for arg in args:
        found, _ = _dataclass_in(arg)
        if found is not None:
            return found, is_list
    return None, False


def sections(root: type = Spec, key: str = "") -> Iterator[Section]:
    """Every dataclass reachable from ``root`` through its fields, depth first, with its key path."""
    yield Section(key, root)
    hints = typing.get_type_hints(root)
    for field in dataclasses.fields(root):
        child, is_list = _dataclass_in(hints[field.name])
        if child is not None:
            path = f"{key}.{field.name}" if key else field.name
            yield from sections(child, f"{path}[]" if is_list else path)


def _type_text(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (tuple, list):
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_text(args[0])} → {_type_text(args[1])}"
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        kept = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a) for a in kept)
        return f"{text} (optional)" if len(kept) < len(args) else text
    if dataclasses.is_dataclass(annotation):
        return "section"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", typing.Any: "any"}
    return names.get(annotation, str(annotation))


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section defaults)"
    else:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return "`[]`" if not value else "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def undocumented_fields() -> dict[str, list[str]]:
    """Fields, by section key, that the section's docstring does not describe (empty when complete)."""
    missing: dict[str, list[str]] = {}
    for section in sections():
        docs = attribute_docs(section.cls)
        names = [f.name for f in dataclasses.fields(section.cls) if f.name not in docs]
        if names:
            missing[section.key or "(top level)"] = names
    return missing


def spec_reference_markdown() -> str:
    """The spec reference as a markdown page: one table of keys per section of the spec file."""
    lines = [
        "# Spec reference",
        "",
        "Every key of a spec file, generated from the docstrings of the dataclasses the file is "
        "validated into (`toolkit/spec/`). Keys are relative to their section; `[]` marks a list "
        "whose items take the keys shown. A key left out takes its default.",
        "",
    ]
    for section in sections():
        summary = (inspect.getdoc(section.cls) or "").split("\n\n", 1)[0].replace("\n", " ")
        docs = attribute_docs(section.cls)
        hints = typing.get_type_hints(section.cls)
        lines += [f"## `{section.key}`" if section.key else "## Top level", "", summary, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for field in dataclasses.fields(section.cls):
            if (section.cls, field.name) in NOT_IN_FILES:
                continue
            child, _ = _dataclass_in(hints[field.name])
            kind = _type_text(hints[field.name])
            if child is not None:
                target = f"{section.key}.{field.name}" if section.key else field.name
                kind = f"{kind} (see `{target}`)"
            text = docs.get(field.name, "").replace("|", "\\|")
            lines.append(f"| `{field.name}` | {kind} | {_default_text(field)} | {text} |")
        lines.append("")
    return "\n".join(lines)
