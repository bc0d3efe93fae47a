"""Fixtures of the reliability suite, and the summary line each of its tests adds to the CI log.

The summary goes through ``pytest_terminal_summary``, so it is printed whether or not ``-s`` is
given: for example ``reliability faults[sqlite]: events 512, faults injected 431, crashes 0,
effects 1204, lost: 0, doubled: 0``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.fixtures import azure_devops_emulator, github_emulator, slack_emulator  # noqa: F401
from tests.reliability.world import World

_LINES: list[str] = []


@pytest.fixture
def report(request) -> Iterator:
    """``report(text)`` adds a line to the suite's summary in the CI log, named after the test."""
    name = request.node.name.removeprefix("test_")

    def add(text: str) -> None:
        _LINES.append(f"reliability {name}: {text}")

    yield add


@pytest.fixture
def world(github_emulator, slack_emulator, azure_devops_emulator, tmp_path) -> World:  # noqa: F811
    """GitHub, Slack and Azure DevOps emulators set up for one bot, and the example project."""
    return World(github_emulator, slack_emulator, azure_devops_emulator, tmp_path)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _LINES:
        return
    terminalreporter.section("reliability suite")
    for line in _LINES:
        terminalreporter.write_line(line)
