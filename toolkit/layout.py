"""Names of the files one stage leaves for another, in a module without heavy imports.

``toolkit deploy`` writes the marker; ``toolkit serve``, the S3 publisher and ``toolkit k8s`` read it,
the last two without the ``export`` extra and without importing the repository writer.
"""

from __future__ import annotations

MARKER = "toolkit-repository.json"
"""File at the repository's top level that says the toolkit wrote it (Triton ignores top-level files)."""
