"""The tickets a text refers to (``#12``, ``AB#12``): read by every adapter and by the core alike."""

from __future__ import annotations

import re

__all__ = ["find_ticket_references"]


def find_ticket_references(text: str, patterns: tuple[str, ...]) -> list[tuple[str, int]]:
    """(pattern name, number) for each ticket a text refers to; names are ``local``/``github`` for ``#N``,
    ``azure`` for ``AB#N``; order of first mention, no repeats."""
    found: list[tuple[str, int]] = []
    for pattern in patterns:
        name = "azure" if pattern.startswith("AB#") or "AB#" in pattern else "local"
        for match in re.finditer(pattern, text):
            reference = (name, int(match.group(1)))
            if reference not in found:
                found.append(reference)
    return found
