"""Pytest fixtures for the emulators (imported into tests/conftest.py)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .azure_devops import AzureDevOpsEmulator, AzureDevOpsSchemas, azure_devops_schemas
from .framework import OpenAPISchemas
from .github import GitHubEmulator, github_schemas
from .slack import SlackEmulator, slack_schemas

__all__ = ["REFDATA", "REQUIRE_REFDATA", "refdata_missing_reason", "azure_devops_emulator", "github_emulator", "no_proxy_for_loopback", "refdata_dir", "slack_emulator"]

#: ../shared/refdata next to the repository (as in CI); never copied into the project
REFDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "refdata"


#: Set by .ci/run: in CI the reference data must be there, and its absence fails the run.
REQUIRE_REFDATA = "REQUIRE_REFDATA"


def refdata_missing_reason() -> str | None:
    """Why the reference data cannot be used, or None when it is there."""
    path = REFDATA.resolve()
    if path.is_dir():
        return None
    return (f"../shared/refdata not found at {path}: the tests that read it skip and the emulators' "
            "answers go unchecked against the services' descriptions; put the shared folder beside the clone")


def refdata_dir() -> Path:
    """The reference data folder; without it the calling test skips (fails under REQUIRE_REFDATA=1)."""
    reason = refdata_missing_reason()
    if reason:
        if os.environ.get(REQUIRE_REFDATA) == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return REFDATA.resolve()


@functools.cache
def _github_schemas() -> OpenAPISchemas | None:
    path = REFDATA.resolve()
    return github_schemas(path) if path.is_dir() else None


@functools.cache
def _slack_schemas() -> OpenAPISchemas | None:
    path = REFDATA.resolve()
    return slack_schemas(path) if path.is_dir() else None


@functools.cache
def _azure_devops_schemas() -> AzureDevOpsSchemas | None:
    path = REFDATA.resolve()
    return azure_devops_schemas(path) if path.is_dir() else None


@pytest.fixture
def no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps requests to the emulators off any HTTP proxy the environment names."""
    for name in ("NO_PROXY", "no_proxy"):
        kept = [h for h in os.environ.get(name, "").split(",") if h]
        monkeypatch.setenv(name, ",".join([*kept, "127.0.0.1", "localhost"]))


def _running(emulator, name: str, against: str) -> Iterator:
    """Serve ``emulator`` for one test; fail it at teardown on a handler error, or on a request or an
    answer (error answers and injected faults included) outside ``against`` (the service's description)."""
    with emulator:
        yield emulator
    if emulator.errors:
        pytest.fail(f"the {name} emulator failed:\n" + "\n".join(emulator.errors), pytrace=False)
    if emulator.violations:
        shown = "\n".join(emulator.violations[:20])
        pytest.fail(f"the {name} emulator answered outside {against}:\n{shown}", pytrace=False)


@pytest.fixture
def github_emulator(no_proxy_for_loopback: None) -> Iterator[GitHubEmulator]:
    """A running GitHub emulator, stopped afterwards.

    When ../shared/refdata is present, every response whose operation and status GitHub's
    description covers is checked against its schema, and the test fails at teardown if any
    did not conform (or if a handler raised).
    """
    yield from _running(GitHubEmulator(schemas=_github_schemas()), "GitHub", "GitHub's schemas")


@pytest.fixture
def slack_emulator(no_proxy_for_loopback: None) -> Iterator[SlackEmulator]:
    """A running Slack emulator, stopped afterwards.

    When ../shared/refdata is present, every answer of a method Slack's description covers (or
    that ``tests/emulators/slack.py`` transcribes) is checked against its schema, and the test
    fails at teardown if any did not conform (or if a handler raised).
    """
    yield from _running(SlackEmulator(schemas=_slack_schemas()), "Slack", "Slack's schemas")


@pytest.fixture
def azure_devops_emulator(no_proxy_for_loopback: None) -> Iterator[AzureDevOpsEmulator]:
    """A running Azure DevOps emulator (organization ``fakeorg``, PAT ``test-pat``), stopped afterwards.

    When ../shared/refdata is present, every answer whose operation and status Microsoft's 7.1
    specs cover is checked against its schema, and the test fails at teardown if any did not
    conform (or if a handler raised).
    """
    yield from _running(AzureDevOpsEmulator(schemas=_azure_devops_schemas()), "Azure DevOps", "the specs")
