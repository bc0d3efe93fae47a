"""The embedded adapters' own storage: the statements built once, the connection kept between calls."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store import Store
from integrations.local import ConsoleChat, LocalBoard, LocalGitSource, create_local_tables
from integrations.ports import Comment, MessageRef, Target

CHANGE = Target("change", "repo", 7)
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path):
    store = Store.for_path(tmp_path / "state.db", busy_timeout_s=0.2)
    create_local_tables(store.engine)
    yield store
    store.close()


@pytest.fixture
def source(store: Store, tmp_path: Path) -> LocalGitSource:
    return LocalGitSource(store.engine, tmp_path, branch="main", out=None, clock=lambda: WHEN)


def test_reactions_are_added_once_and_kept_sorted(source: LocalGitSource):
    comment = source.add_comment(CHANGE, "/status")
    for reaction in ("eyes", "eyes", "+1", "eyes"):
        source.react(comment, reaction)
    source.react(Comment("999", CHANGE, "you", "", WHEN), "eyes")  # no such comment: nothing happens

    with source.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, reactions FROM local_comments")).all() == [(1, "+1,eyes")]


def test_a_status_is_set_then_replaced(source: LocalGitSource):
    source.set_status("repo", "abc", state="pending", description="running", context="ci")
    source.set_status("repo", "abc", state="success", description="v2", context="ci", url="u")
    source.set_status("repo", "abc", state="pending", description="other", context="lint")

    assert source.status_of("repo", "abc", "ci") == ("success", "v2")
    assert source.status_of("repo", "abc", "lint") == ("pending", "other")
    assert source.status_of("repo", "def", "ci") is None
    with source.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM local_statuses")).scalar() == 2


def test_writes_are_found_by_their_marker(source: LocalGitSource, store: Store):
    reply = source.reply(CHANGE, "hello", marker="m1")
    source.reply(Target("change", "repo", 8), "elsewhere", marker="m2")
    source.edit_reply(CHANGE, reply, "hello again", marker="m1")
    assert source.find_reply(CHANGE, "m1") == reply
    assert source.find_reply(CHANGE, "m2") is None
    assert [c.body for c in source.comments_on(CHANGE)] == ["hello again\n\n<!-- mlops-bot:m1 -->"]

    chat = ConsoleChat(store.engine, out=None, clock=lambda: WHEN)
    top = chat.post("alerts", "drift", marker="episode:1")
    in_thread = chat.reply(top, "details", marker="r1")
    chat.update(top, "drift, resolved")
    assert chat.find_message("alerts", "episode:1") == top
    assert chat.find_message("alerts", "r1", thread=top.id) == in_thread
    assert chat.find_message("alerts", "r1") is None  # not at the top level
    assert [(m["text"], m["updated"]) for m in chat.messages("alerts")] == [("drift, resolved", 1), ("details", 0)]

    board = LocalBoard(store.engine, out=None, clock=lambda: WHEN)
    ticket = board.open("retrain:churn", "Drift", "body", ("retrain",), marker="retrain:churn")
    note = board.comment(ticket.id, "worse", marker="c1")
    assert board.find_open("retrain:churn") == ticket
    assert board.find_comment(ticket.id, "c1") == note
    board.close(ticket.id)
    assert board.find_open("retrain:churn") is None and board.get(ticket.id).state == "closed"


def test_older_tables_get_the_indexes(tmp_path: Path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:  # the tables as the first version made them: no indexes
        conn.execute("CREATE TABLE local_comments (id INTEGER PRIMARY KEY, target_kind VARCHAR(16) NOT NULL,"
                     " repo VARCHAR(200) NOT NULL, number INTEGER NOT NULL, author VARCHAR(100) NOT NULL,"
                     " body TEXT NOT NULL, by_bot BOOLEAN NOT NULL, reactions TEXT NOT NULL,"
                     " created_at VARCHAR(40) NOT NULL)")
        conn.execute("INSERT INTO local_comments VALUES (1, 'change', 'repo', 7, 'mlops-bot',"
                     " 'old <!-- mlops-bot:m0 -->', 1, '', '2025-12-31T00:00:00+00:00')")
    conn.close()
    store = Store.for_path(path)
    create_local_tables(store.engine)
    create_local_tables(store.engine)  # again: nothing to add

    indexes = {index["name"] for index in sa.inspect(store.engine).get_indexes("local_comments")}
    assert "ix_local_comments_target" in indexes
    assert LocalGitSource(store.engine, tmp_path, branch="main", out=None).find_reply(CHANGE, "m0") == "1"
    store.close()


def test_an_adapter_works_again_after_a_failed_write(source: LocalGitSource, tmp_path: Path):
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
    try:
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            source.reply(CHANGE, "hello", marker="m1")
    finally:
        other.close()
    assert source.find_reply(CHANGE, "m1") is None  # the failed write left nothing behind
    assert source.reply(CHANGE, "hello", marker="m1") == "1"


def test_chat_refs_survive_a_new_adapter(store: Store):
    first = ConsoleChat(store.engine, out=None, clock=lambda: WHEN)
    ref = first.post("pipeline", "started", marker="episode:run-1")
    del first  # its connection goes back to the pool
    second = ConsoleChat(store.engine, out=None, clock=lambda: WHEN)
    assert second.find_message("pipeline", "episode:run-1") == MessageRef("pipeline", ref.id)
