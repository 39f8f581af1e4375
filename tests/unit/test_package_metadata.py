"""The installed package says what it is: its licence, and the licence file beside it."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_package_declares_the_apache_2_licence_and_ships_its_text() -> None:
    meta = importlib.metadata.metadata("adaptive-ranking-toolkit")

    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
