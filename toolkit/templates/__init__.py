"""The files ``toolkit init`` writes: the default spec (``ensembles/``) and the examples (``examples/``).

In a checkout of the repository, ``ensembles`` and ``examples`` at the top level link here.
"""
