"""The README and the pages in docs/ link to files and headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
GENERATED = {ROOT / "docs" / "reference" / "spec.md"}
"""Pages only the site has (scripts/docs_hooks.py writes them); `mkdocs build --strict` checks them."""
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def outside_code(path: Path) -> list[tuple[int, str]]:
    """Numbered lines of a Markdown file, fenced code blocks left out."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for _, line in outside_code(path) if (m := re.match(r"^#{1,6} (.*)$", line))}


def broken_links(page: Path) -> list[str]:
    """``file:line: target`` of every local link whose file or heading does not exist."""
    broken = []
    for number, line in outside_code(page):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if resolved in GENERATED:
                continue
            if not resolved.exists() or (
                anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)
            ):
                broken.append(f"{page.name}:{number}: {target}")
    return broken


def test_the_readme_is_the_front_door() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_lands_on_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_check_finds_a_broken_anchor_and_a_missing_file(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](#title) [bad](#nowhere) [gone](gone.md)\n```\n# not a heading [x](#x)\n```\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"title"}
    assert broken_links(page) == ["page.md:3: #nowhere", "page.md:3: gone.md"]
