"""Which GitHub Project the bot keeps its retrain tickets on, as ``MLOPS_GITHUB_PROJECT`` names it.

The settings check the value with ``parse_project_ref`` when they are read; the composition root
hands the ``ProjectRef`` to ``integrations/github_projects.py``. Nothing here talks to GitHub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ProjectRef", "parse_project_ref"]


@dataclass(frozen=True)
class ProjectRef:
    """A project: its owner's login, its number, and whether the owner is an organization or a user
    (None when given as ``owner/number``, which does not say)."""

    owner: str
    number: int
    kind: str | None = None  # "organization", "user" or None

    def __str__(self) -> str:
        return f"{self.owner}/{self.number}"


_PROJECT_URL = re.compile(r"/(orgs|users)/([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)/projects/([1-9][0-9]*)(?:/.*)?")
_SHORT = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)/([1-9][0-9]*)")


def parse_project_ref(text: str) -> ProjectRef:
    """``https://github.com/orgs/acme/projects/3``, ``https://github.com/users/maya/projects/1`` (any
    host: GitHub Enterprise too, a view's URL too) or ``acme/3``; ValueError saying what is expected."""
    text = text.strip()
    if short := _SHORT.fullmatch(text):
        return ProjectRef(short[1], int(short[2]))
    parts = urlsplit(text)
    found = _PROJECT_URL.fullmatch(parts.path.rstrip("/")) if parts.scheme in {"http", "https"} else None
    if found is None:
        raise ValueError("expected a project's URL (https://github.com/orgs/ORG/projects/N or "
                         "https://github.com/users/USER/projects/N) or OWNER/N")
    return ProjectRef(found[2], int(found[3]), "organization" if found[1] == "orgs" else "user")
