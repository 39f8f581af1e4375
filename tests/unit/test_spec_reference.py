"""Every spec key is documented: each field of each spec dataclass has a line under ``Attributes:``.

The spec reference is written from these docstrings, so an undocumented key would be a key users
cannot look up.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

import toolkit.spec.schema as schema

SPEC_CLASSES = [
    cls
    for _, cls in inspect.getmembers(schema, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == schema.__name__
]


def documented_attributes(cls: type) -> set[str]:
    """Names listed under the Google-style ``Attributes:`` section of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    section = re.split(r"\n\S", section, maxsplit=1)[0]  # up to the next unindented heading
    return set(re.findall(r"^ {4}(\w+)(?: \([^)]*\))?:", section, re.M))


def test_the_schema_has_its_sections() -> None:
    names = {cls.__name__ for cls in SPEC_CLASSES}
    assert {"Spec", "ExportSpec", "RoutingSpec", "TritonSpec", "KubernetesSpec", "PoolSpec"} <= names


@pytest.mark.parametrize("cls", SPEC_CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_of_every_spec_section_is_documented(cls: type) -> None:
    fields = {field.name for field in dataclasses.fields(cls)}
    assert fields - documented_attributes(cls) == set()


def test_the_check_finds_an_undocumented_field() -> None:
    @dataclasses.dataclass
    class Half:
        """A section.

        Attributes:
            shown: Documented.
        """

        shown: int = 0
        hidden: int = 0

    assert {f.name for f in dataclasses.fields(Half)} - documented_attributes(Half) == {"hidden"}
