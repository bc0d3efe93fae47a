"""The bot's Markdown, shown to a person: rendered on a terminal, as written everywhere else
(pipes, files, test buffers), for the console chat, the local board and ``mlops-bot board show``."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.store import Store
from integrations.local import (
    ConsoleChat,
    LocalBoard,
    create_local_tables,
    show_markdown,
)
from tests.conftest import PROJECT

REPORT = """**Model v2 trained** for `tiny`

| metric | v2 | production |
|---|---|---|
| roc_auc | 0.991 | 0.982 |

<details><summary>Data and gates</summary>

- rows: 569
- gates: passed

</details>"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def detection_left_to_the_output(monkeypatch):
    """Whatever the machine running the tests sets, each test decides what counts as a terminal."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "100")


@pytest.fixture
def store(tmp_path):
    store = Store.for_path(tmp_path / "state.db")
    create_local_tables(store.engine)
    return store


def assert_rendered(shown: str) -> None:
    """The Markdown was rendered: styled, the table drawn, no Markdown or HTML syntax left."""
    assert "\x1b[1m" in shown  # bold
    text = ANSI.sub("", shown)
    for syntax in ("**", "|---|", "<details>", "<summary>", "`tiny`"):
        assert syntax not in text
    assert re.search(r"roc_auc\s+0\.991\s+0\.982", text)
    assert "─" in text  # the table's rule
    assert "Data and gates" in text and "• rows: 569" in text


def test_console_chat_prints_plain_text_when_not_on_a_terminal(store):
    out = io.StringIO()
    chat = ConsoleChat(store.engine, out=out)
    chat.post("mlops", REPORT, marker="m1")
    assert out.getvalue() == "💬 #mlops\n" + "".join(f"   │ {line}\n" if line else "\n" for line in REPORT.split("\n"))


def test_console_chat_renders_markdown_on_a_terminal(store, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # what a terminal says of itself, as rich reads it
    out = io.StringIO()
    ConsoleChat(store.engine, out=out).post("mlops", REPORT, marker="m1")
    shown = out.getvalue()
    assert_rendered(shown)
    assert ANSI.sub("", shown).startswith("💬 #mlops\n")


def test_board_prints_plain_text_off_a_terminal_and_renders_on_one(store, monkeypatch):
    out = io.StringIO()
    board = LocalBoard(store.engine, out=out)
    ticket = board.open("retrain:tiny", "Retrain tiny", REPORT, ("retrain",), marker="retrain:tiny")
    board.comment(ticket.id, REPORT, marker="c1")
    assert out.getvalue().endswith("[ticket:1] mlops-bot:\n" + "".join(
        f"    {line}\n" if line else "\n" for line in REPORT.split("\n")))

    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    rendered = io.StringIO()
    LocalBoard(store.engine, out=rendered).comment(ticket.id, REPORT, marker="c2")
    assert_rendered(rendered.getvalue())


@pytest.mark.parametrize("force_terminal", [True, False])
def test_force_terminal_overrides_detection(force_terminal, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "0" if force_terminal else "1")
    out = io.StringIO()
    show_markdown(out, "heading", REPORT, plain="plain text", force_terminal=force_terminal)
    if force_terminal:
        assert_rendered(out.getvalue())
    else:
        assert out.getvalue() == "plain text\n"


def test_a_message_without_body_is_its_heading_alone():
    out = io.StringIO()
    show_markdown(out, "[board] closed #1", "", plain="[board] closed #1", force_terminal=True)
    assert ANSI.sub("", out.getvalue()) == "[board] closed #1\n"


@pytest.fixture
def board_cli(repo, tmp_path, monkeypatch):
    """``mlops-bot board show`` on a board holding ticket 1 (body and one comment: REPORT)."""
    monkeypatch.chdir(tmp_path)
    # No MLOPS_ setting of the developer's reaches here: conftest's autouse fixture removed them.
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(repo / PROJECT))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    engine = Store.for_path(tmp_path / "state" / "state.db").engine
    create_local_tables(engine)  # as the bot does when it starts
    board = LocalBoard(engine)
    ticket = board.open("retrain:tiny", "Retrain tiny", REPORT, ("retrain",), marker="retrain:tiny")
    board.comment(ticket.id, REPORT, marker="c1")
    return lambda: CliRunner().invoke(cli, ["board", "show", "1"])


def test_board_show_piped_prints_the_text_as_written(board_cli):
    shown = board_cli()
    assert shown.exit_code == 0, shown.output
    lines = shown.output.split("\n")
    assert lines[0] == "ticket:1 [open] Retrain tiny" and lines[1] == ""
    assert "\n".join(lines[2:2 + len(REPORT.split("\n"))]) == REPORT
    assert "--- mlops-bot at " in shown.output and shown.output.endswith(REPORT + "\n\n")
    assert "\x1b[" not in shown.output


def test_board_show_on_a_terminal_renders_the_markdown(board_cli, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    shown = board_cli()
    assert shown.exit_code == 0, shown.output
    assert_rendered(shown.output)
    text = ANSI.sub("", shown.output)
    assert text.startswith("ticket:1 [open] Retrain tiny\n") and "--- mlops-bot at " in text
