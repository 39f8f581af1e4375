"""Names and the keyed error every spec section validates with."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""Names of ensembles, tiers and tables: Triton-legal model names, no path separators."""


class KeyedValueError(ValueError):
    """A ValueError about a key below the object being validated.

    Attributes:
        key: Dotted key path relative to that object, for example ``routing.default_tier``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def check_name(value: str, what: str, key: str = "name") -> None:
    """Raise KeyedValueError (on ``key``) unless ``value`` is a legal model/tier/table name."""
    if not NAME_PATTERN.match(value):
        raise KeyedValueError(
            key,
            f"{what} {value!r} is not a legal name: use a letter, then letters, digits, '_' or '-' "
            "(at most 64 characters, no path separators)",
        )
