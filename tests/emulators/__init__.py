"""Local HTTP emulators of the outside services, for the real SDK clients in tests."""

from typing import Any

from .framework import (
    FAULT_KINDS,
    Clock,
    Faults,
    HttpEmulator,
    LoggedRequest,
    OpenAPISchemas,
    Request,
    RequestLog,
    Response,
    paginate,
)

__all__ = [
    "FAULT_KINDS",
    "Clock",
    "Faults",
    "GitHubEmulator",
    "GitHubState",
    "HttpEmulator",
    "LoggedRequest",
    "OpenAPISchemas",
    "Request",
    "RequestLog",
    "Response",
    "github_schemas",
    "paginate",
]

_GITHUB = ("GitHubEmulator", "GitHubState", "github_schemas")


def __getattr__(name: str) -> Any:
    # imported on first use, so that ``python -m tests.emulators.github`` runs the module only once
    if name in _GITHUB:
        from . import github

        return getattr(github, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
