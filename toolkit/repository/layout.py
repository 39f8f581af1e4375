"""Names of the files ``toolkit deploy`` writes beside the models.

Kept free of heavy imports: the commands that serve, publish or check a repository read them without
the ``export`` extra.
"""

from __future__ import annotations

MARKER = "toolkit-repository.json"
"""File at the repository's top level that says the toolkit wrote it (Triton ignores top-level files)."""
