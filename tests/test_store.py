from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.store import SCHEMA_VERSION, Link, NewEffect, Store, StoreError
from tests.conftest import FakeClock

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def still() -> FakeClock:
    """A clock that moves only when a test moves it."""
    return FakeClock(START, step=timedelta(0))


@pytest.fixture
def store(tmp_path: Path, still: FakeClock):
    store = Store.for_path(tmp_path / "state" / "state.db", clock=still)
    yield store
    store.close()


def effect(key: str, lane: str = "lane", **payload) -> NewEffect:
    return NewEffect(key=key, kind="scm.reply", payload=payload, lane=lane)


def test_ingest_stores_a_key_once_but_always_moves_the_cursor(store: Store):
    assert store.ingest("gh:comment:1", "command", "github", {"body": "/retrain"}, [effect("reply:1")],
                        cursor=("github:comments", "c1"))
    assert not store.ingest("gh:comment:1", "command", "github", {"body": "changed"}, [effect("reply:1b")],
                            cursor=("github:comments", "c2"))

    assert store.seen("gh:comment:1") and not store.seen("gh:comment:2")
    assert store.cursor("github:comments") == "c2"
    [event] = store.events()
    assert (event.key, event.kind, event.source, event.payload) == ("gh:comment:1", "command", "github",
                                                                    {"body": "/retrain"})
    assert [e.key for e in event.effects] == ["reply:1"]
    assert store.effect("reply:1b") is None


def test_ingest_is_one_transaction(store: Store):
    store.set_cursor("github:comments", "c1")
    unserialisable = NewEffect("reply:2", "scm.reply", {"when": object()}, "lane")

    with pytest.raises(TypeError, match="not JSON serializable"):
        store.ingest("gh:comment:1", "command", "github", {}, [effect("reply:1"), unserialisable],
                     cursor=("github:comments", "c2"))

    assert not store.seen("gh:comment:1")
    assert store.effect("reply:1") is None and store.effects() == []
    assert store.cursor("github:comments") == "c1"


def test_an_effect_key_is_stored_once(store: Store):
    store.ingest("e1", "command", "github", {}, [effect("reply:1", text="first"), effect("reply:1", text="again")])
    store.ingest("e2", "command", "github", {}, [effect("reply:1", text="later"), effect("reply:2")])
    store.add_effects("e2", [effect("reply:2", text="found later"), effect("reply:3")])

    assert [(e.key, e.cause, e.payload) for e in reversed(store.effects())] == [
        ("reply:1", "e1", {"text": "first"}), ("reply:2", "e2", {}), ("reply:3", "e2", {}),
    ]


def test_due_effects_wait_for_their_time_and_their_lane(store: Store, still: FakeClock):
    store.ingest("e1", "command", "github", {}, [effect("a1", "a"), effect("a2", "a"), effect("b1", "b")])
    a1, b1 = store.effect("a1"), store.effect("b1")
    assert [e.key for e in store.due_effects()] == ["a1", "b1"]

    store.retry_later(a1.id, "boom", at=START + timedelta(seconds=10), outcome_unknown=True)
    assert [e.key for e in store.due_effects()] == ["b1"]  # a2 waits behind a1

    still.now = START + timedelta(seconds=10)
    retried = store.due_effects()[0]
    assert (retried.key, retried.attempts, retried.last_error, retried.outcome_unknown) == ("a1", 1, "boom", True)
    assert retried.next_attempt_at == START + timedelta(seconds=10)

    store.give_up(a1.id, "gone")
    store.complete(b1.id, {"id": "c-9"})
    assert [e.key for e in store.due_effects()] == ["a2"]  # a dead effect no longer blocks its lane
    assert store.effect("b1").result == {"id": "c-9"} and store.effect("b1").done_at == still.now
    assert store.effect("a1").status == "dead"
    assert [e.key for e in store.effects(status="dead")] == ["a1"]
    assert store.due_effects(limit=0) == []


def test_outbox_stats(store: Store, still: FakeClock):
    assert store.outbox_stats() == {"pending": 0, "dead": 0, "done": 0, "oldest_pending_age_s": None}
    store.ingest("e1", "command", "github", {}, [effect("a1", "a"), effect("b1", "b"), effect("c1", "c")])
    still.now += timedelta(seconds=30)
    store.complete(store.effect("a1").id, {})
    store.give_up(store.effect("b1").id, "no")
    assert store.outbox_stats() == {"pending": 1, "dead": 1, "done": 1, "oldest_pending_age_s": 30.0}


def test_links_are_idempotent_and_trace_walks_both_ways(store: Store):
    store.link("change", "org/repo!7", "triggered", "run", "run-1")
    store.link("change", "org/repo!7", "triggered", "run", "run-1")
    store.link("run", "run-1", "produced", "model", "churn:v3")
    store.link("model", "churn:v3", "announced_in", "chat", "C1/171.2")
    store.link("ticket", "ops#12", "closed_by", "change", "org/repo!7")
    store.link("model", "churn:v2", "replaced_by", "model", "churn:v3")
    store.link("other", "x", "unrelated", "other", "y")

    assert [(l.src_kind, l.relation, l.dst_id) for l in store.links("run", "run-1")] == [
        ("change", "triggered", "run-1"), ("run", "produced", "churn:v3"),
    ]
    traced = store.trace("chat", "C1/171.2")
    assert [l.relation for l in traced] == ["announced_in", "produced", "replaced_by", "triggered", "closed_by"]
    assert all(isinstance(l, Link) for l in traced)
    assert [l.relation for l in store.trace("chat", "C1/171.2", depth=2)] == ["announced_in", "produced",
                                                                             "replaced_by"]
    assert store.trace("nothing", "here") == []


def test_state_by_namespace(store: Store):
    assert store.get_state("episodes", "churn") is None
    store.put_state("episodes", "churn", {"ticket": 12})
    store.put_state("episodes", "churn", {"ticket": 13})
    store.put_state("episodes", "aardvark", {"ticket": 1})
    store.put_state("threads", "churn", {"ts": "171.2"})

    assert store.get_state("episodes", "churn") == {"ticket": 13}
    assert store.state_items("episodes") == [("aardvark", {"ticket": 1}), ("churn", {"ticket": 13})]


def test_reopening_keeps_everything(tmp_path: Path, still: FakeClock):
    path = tmp_path / "state.db"
    first = Store.for_path(path, clock=still)
    first.ingest("e1", "command", "github", {"n": 1}, [effect("a1")], cursor=("github", "c7"))
    first.link("change", "r!1", "triggered", "run", "run-1")
    first.put_state("episodes", "churn", {"open": True})
    first.close()

    store = Store(f"sqlite:///{path}", clock=still)
    assert store.cursor("github") == "c7"
    assert store.seen("e1")
    [event] = store.events(kind="command")
    assert event.received_at == START and event.received_at.tzinfo is not None
    assert store.effect("a1").created_at == START
    assert store.links("run", "run-1")[0].created_at == START
    assert store.get_state("episodes", "churn") == {"open": True}
    assert store.events(kind="drift_found") == []
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "state.db"
    Store.for_path(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_info SET value = '3' WHERE name = 'schema_version'")
    conn.close()

    with pytest.raises(StoreError) as raised:
        Store.for_path(path)
    assert str(raised.value) == (
        f"state database {path} was written by a newer mlops-bot (schema 3, this one knows {SCHEMA_VERSION}); "
        "upgrade mlops-bot"
    )


def test_an_older_schema_is_upgraded_in_place(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:  # a database from before schema versions: cursors only
        conn.execute("CREATE TABLE cursors (source VARCHAR(512) PRIMARY KEY, value TEXT NOT NULL,"
                     " updated_at DATETIME NOT NULL)")
        conn.execute("INSERT INTO cursors VALUES ('github', 'c1', '2025-12-31 00:00:00.000000')")
    conn.close()

    with caplog.at_level(logging.WARNING, logger="mlops_bot.store"):
        store = Store.for_path(path)
    assert f"state database {path} is schema 0 (older); it will be upgraded" in caplog.messages
    assert store.cursor("github") == "c1"
    assert store.ingest("e1", "command", "github", {}, [effect("a1")])
    store.close()

    caplog.clear()
    Store.for_path(path).close()
    assert caplog.messages == []


def test_a_locked_database_is_reported(tmp_path: Path):
    path = tmp_path / "state.db"
    Store.for_path(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as raised:
            Store.for_path(path, busy_timeout_s=0.5)
        assert time.monotonic() - started < 3
    finally:
        other.close()
    assert str(raised.value) == f"state database {path} is locked by another process (is another mlops-bot running?)"


def test_a_store_locked_after_opening_reports_it_too(store: Store, tmp_path: Path):
    other = sqlite3.connect(tmp_path / "state" / "state.db", isolation_level=None)
    store_with_short_wait = Store.for_path(tmp_path / "state" / "state.db", busy_timeout_s=0.2)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="is locked by another process"):
            store_with_short_wait.set_cursor("github", "c1")
    finally:
        other.close()
        store_with_short_wait.close()


def test_not_a_database(tmp_path: Path):
    path = tmp_path / "state.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match=r"state database .*state.db cannot be opened: file is not a database"):
        Store.for_path(path)


def test_other_adapters_can_add_tables(store: Store):
    import sqlalchemy as sa

    board = sa.Table("board_tickets", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    board.create(store.engine)
    assert "board_tickets" in sa.inspect(store.engine).get_table_names()


# The outbox's steps, each one transaction.

def test_next_round_records_the_round_before_and_marks_the_next(store: Store):
    store.ingest("e1", "command", "github", {}, [effect("a1", "a"), effect("a2", "a"), effect("b1", "b"),
                                                 effect("c1", "c")])
    a1, b1, c1 = (store.effect(key) for key in ("a1", "b1", "c1"))
    store.begin_attempt(c1.id)  # c1 was tried before: its outcome is unknown

    first = store.next_round(limit=10)
    assert [(e.key, e.outcome_unknown) for e in first] == [("a1", False), ("b1", False), ("c1", True)]
    assert all(store.effect(key).outcome_unknown for key in ("a1", "b1", "c1"))  # marked before any is tried
    assert not store.effect("a2").outcome_unknown

    # a1 done, b1 never tried (the outbox stopped), c1 retried later: a2 is the only one due now
    store.retry_later(c1.id, "503", at=START + timedelta(minutes=1), outcome_unknown=True)
    second = store.next_round(limit=10, results={a1.id: {"id": 7}}, untried=[b1.id])
    assert [e.key for e in second] == ["a2", "b1"]
    assert (store.effect("a1").status, store.effect("a1").result) == ("done", {"id": 7})
    assert not store.effect("a1").outcome_unknown
    assert [e.outcome_unknown for e in second] == [False, False]  # b1's mark was cleared, then set again

    store.finish_attempts({e.id: {} for e in second})
    assert store.next_round(limit=10) == []
    assert [e.key for e in store.effects(status="pending")] == ["c1"]


def test_finishing_an_unknown_effect_is_refused(store: Store):
    with pytest.raises(StoreError, match="has no effect with id 99"):
        store.finish_attempts({99: {}})
    with pytest.raises(StoreError, match="has no effect with id 98"):
        store.begin_attempt(98)


# Writes deferred to the next transaction.

def _committed(path: Path, query: str) -> list[tuple]:
    """What another connection (another process, after a crash) would find."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def test_deferred_writes_wait_for_the_next_write_transaction(tmp_path: Path, still: FakeClock):
    path = tmp_path / "state.db"
    store = Store.for_path(path, clock=still)
    store.ingest("e1", "command", "github", {}, [effect("a1")])
    a1 = store.effect("a1")
    with store.deferred_writes():
        store.put_state("threads", "t1", {"id": 1})
        store.put_state("threads", "t1", {"id": 2})
        store.link("run", "r1", "built_from", "commit", "c1")
        assert store.get_state("threads", "t1") == {"id": 2}  # this process sees them at once
        assert _committed(path, "SELECT key FROM state") == []
        assert _committed(path, "SELECT relation FROM links") == []

        # The next write transaction carries them: a completion is never stored without them.
        store.finish_attempts({a1.id: {}})
        assert _committed(path, "SELECT key, value FROM state") == [("t1", '{"id": 2}')]
        assert _committed(path, "SELECT relation FROM links") == [("built_from",)]
        assert _committed(path, "SELECT status FROM effects") == [("done",)]

        store.put_state("threads", "t2", {"id": 3})
        assert store.links("run", "r1")[0].dst_id == "c1"  # reading links or state lists writes first
        assert _committed(path, "SELECT key FROM state ORDER BY key") == [("t1",), ("t2",)]

        store.link("run", "r1", "triggered_by", "change", "repo:1")
    assert _committed(path, "SELECT count(*) FROM links") == [(2,)]  # and the block's end
    store.close()


def test_only_the_deferring_thread_defers(tmp_path: Path, still: FakeClock):
    import threading

    path = tmp_path / "state.db"
    store = Store.for_path(path, clock=still)
    with store.deferred_writes():
        store.put_state("episodes", "churn", {"severity": "low"})
        other = threading.Thread(target=store.put_state, args=("episodes", "churn", {"severity": "high"}))
        other.start()
        other.join()
        # The other thread's write is immediate and comes after the deferred one, which it carries.
        assert _committed(path, "SELECT value FROM state") == [('{"severity": "high"}',)]
        assert store.get_state("episodes", "churn") == {"severity": "high"}
    store.close()
    assert _committed(path, "SELECT value FROM state") == [('{"severity": "high"}',)]


def test_a_failed_transaction_keeps_the_deferred_writes(tmp_path: Path, still: FakeClock):
    path = tmp_path / "state.db"
    store = Store.for_path(path, clock=still)
    with store.deferred_writes():
        store.put_state("threads", "t1", {"id": 1})
        with pytest.raises(TypeError):
            store.ingest("e1", "command", "github", {"when": object()})
        assert _committed(path, "SELECT key FROM state") == []
        store.ingest("e2", "command", "github", {})
        assert _committed(path, "SELECT key FROM state") == [("t1",)]
    store.close()


def test_close_writes_what_was_deferred(tmp_path: Path, still: FakeClock):
    path = tmp_path / "state.db"
    store = Store.for_path(path, clock=still)
    with store.deferred_writes():
        store.link("run", "r1", "built_from", "commit", "c1")
        store.close()
    assert _committed(path, "SELECT relation FROM links") == [("built_from",)]


# Connections kept between calls.

def test_a_writer_holds_the_write_lock_from_begin(tmp_path: Path):
    path = tmp_path / "state.db"
    Store.for_path(path).close()
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    seen = []

    def clock() -> datetime:  # read inside the store's transactions, before their first statement
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            seen.append("free")
        except sqlite3.OperationalError:
            seen.append("locked")
        return START

    store = Store.for_path(path, clock=clock)
    seen.clear()
    store.set_cursor("github", "c1")
    store.due_effects()
    assert seen == ["locked", "free"]  # a writer from BEGIN, a reader never
    store.close()
    probe.close()


def test_the_store_recovers_after_a_failed_transaction(tmp_path: Path):
    path = tmp_path / "state.db"
    store = Store.for_path(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="is locked by another process"):
            store.set_cursor("github", "c1")
        assert store.cursor("github") is None  # in WAL, readers do not wait for the writer
    finally:
        other.close()
    store.set_cursor("github", "c2")
    assert store.cursor("github") == "c2"
    store.close()


def test_a_store_is_usable_from_several_threads(tmp_path: Path, still: FakeClock):
    from concurrent.futures import ThreadPoolExecutor

    store = Store.for_path(tmp_path / "state.db", clock=still)

    def work(n: int) -> bool:
        store.ingest(f"e{n}", "command", "github", {"n": n}, [effect(f"reply:{n}", lane=f"l{n % 3}")])
        store.put_state("n", str(n), {"n": n})
        return store.seen(f"e{n}") and store.get_state("n", str(n)) == {"n": n}

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(40)))
    assert store.outbox_stats()["pending"] == 40
    store.close()
