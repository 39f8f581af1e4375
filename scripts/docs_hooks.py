"""MkDocs hooks: the pages written from the code and from other files of the repository.

- ``index.md``: README.md, its links rewritten to the site's pages.
- ``reference/spec.md``: the spec reference, from the schema's docstrings (:mod:`toolkit.spec.reference`).
- ``results/<name>.md`` and their plots: the reports ``make bench`` writes to ``benchmarks/results/``.
- ``changelog.md``: CHANGELOG.md.

The command reference (``reference/cli.md``) is written by mkdocs-click from the click commands.

Pages in ``docs/`` link to benchmark reports as ``../benchmarks/results/<name>.md``, which works on
a code host; :func:`on_page_markdown` points those links at the site's copies.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _readme_as_index() -> str:
    text = (ROOT / "README.md").read_text()
    text = text.replace("](docs/", "](")
    text = text.replace("](CHANGELOG.md)", "](changelog.md)")
    text = text.replace("[LICENSE](LICENSE)", "[LICENSE](license.md)")
    return text


def _license() -> str:
    return "# License\n\n```text\n" + (ROOT / "LICENSE").read_text() + "```\n"


def on_files(files: Files, config) -> Files:
    """Add the generated pages and the benchmark reports to the site's files."""
    from toolkit.spec.reference import spec_reference_markdown

    pages = {
        "index.md": _readme_as_index(),
        "reference/spec.md": spec_reference_markdown(),
        "changelog.md": (ROOT / "CHANGELOG.md").read_text(),
        "license.md": _license(),
    }
    for path in sorted(RESULTS.glob("*.md")):
        pages[f"results/{path.name}"] = path.read_text()
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    for path in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    return files


_PLACEHOLDER = re.compile(r"<([a-z][a-z_]*)>")
_HTML_TAGS = frozenset(
    [
        "a",
        "b",
        "br",
        "code",
        "dd",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)


def on_page_content(html: str, page, config, files) -> str:
    """Tidy what mkdocs-click writes from the commands' help texts.

    An option without a default shows ``-`` (mkdocs-click prints click's internal ``UNSET`` marker),
    and placeholders such as ``<artifacts>`` in a help text show as text instead of vanishing as
    unknown HTML tags.
    """
    if page.file.src_uri != "reference/cli.md":
        return html
    html = html.replace("<code>Sentinel.UNSET</code>", "-")
    return _PLACEHOLDER.sub(
        lambda m: m.group(0) if m.group(1) in _HTML_TAGS else f"&lt;{m.group(1)}&gt;", html
    )


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Point links to ``../benchmarks/results/`` at the site's copies of the reports."""
    depth = page.file.src_uri.count("/")
    results = "../" * depth + "results/"
    return re.sub(r"\]\((?:\.\./)+benchmarks/results/", f"]({results}", markdown)
