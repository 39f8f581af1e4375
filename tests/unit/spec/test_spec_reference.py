"""Every spec key is documented: each field of each spec dataclass has a line under ``Attributes:``.

The spec reference page is generated from these docstrings, so an undocumented key would be a key
users cannot look up.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import toolkit.spec.sections
from toolkit.spec.reference import (
    attribute_docs,
    sections,
    spec_reference_markdown,
    undocumented_fields,
)
from toolkit.spec.schema import Spec

SECTIONS = list(sections())


def _defined_spec_dataclasses() -> set[type]:
    found = {Spec}
    for info in pkgutil.iter_modules(toolkit.spec.sections.__path__):
        module = importlib.import_module(f"toolkit.spec.sections.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__:
                found.add(cls)
    return found


def test_the_reference_reaches_every_spec_dataclass() -> None:
    reached = {section.cls for section in SECTIONS}
    assert _defined_spec_dataclasses() - reached == set()
    assert {"", "features", "tiers[]", "routing.rules[]", "pools[]", "kubernetes"} <= {
        s.key for s in SECTIONS
    }


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.key or "top")
def test_every_field_of_every_spec_section_is_documented(section) -> None:
    fields = {field.name for field in dataclasses.fields(section.cls)}
    assert fields - set(attribute_docs(section.cls)) == set()


def test_the_check_finds_an_undocumented_field() -> None:
    @dataclasses.dataclass
    class Half:
        """A section.

        Attributes:
            shown: Documented,
                over two lines.
        """

        shown: int = 0
        hidden: int = 0

    assert attribute_docs(Half) == {"shown": "Documented, over two lines."}
    assert {f.name for f in dataclasses.fields(Half)} - set(attribute_docs(Half)) == {"hidden"}
    assert undocumented_fields() == {}


def test_the_page_has_a_row_per_key_with_its_default() -> None:
    page = spec_reference_markdown()
    assert "## `routing.budget`" in page
    assert "| `queue_timeout_ms` | number | `100.0` |" in page
    assert "| `policy` | `static` \\| `rules` \\| `cascade` \\| `learned` | `rules` |" in page
    assert "| `source` |" not in page
    for section in SECTIONS:
        for field in dataclasses.fields(section.cls):
            if field.name != "source":
                assert f"| `{field.name}` |" in page
