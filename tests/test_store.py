from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store import (
    SCHEMA_VERSION,
    Fence,
    Link,
    LostLease,
    NewEffect,
    Store,
    StoreError,
    schema_status,
)
from tests.conftest import FakeClock

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def still() -> FakeClock:
    """A clock that moves only when a test moves it."""
    return FakeClock(START, step=timedelta(0))


@pytest.fixture
def store(state_url: str, still: FakeClock):
    """A store on SQLite, then on PostgreSQL (tests/postgres.py)."""
    store = Store(state_url, clock=still)
    yield store
    store.close()


def _run_sql(url: str, *statements: str) -> list[list[tuple]]:
    """Run statements on a connection of their own (another process, after a crash), committed."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    results = []
    try:
        with engine.begin() as conn:
            for statement in statements:
                result = conn.execute(sa.text(statement))
                results.append([tuple(row) for row in result] if result.returns_rows else [])
    finally:
        engine.dispose()
    return results


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


def test_reopening_keeps_everything(state_url: str, still: FakeClock):
    first = Store(state_url, clock=still)
    first.ingest("e1", "command", "github", {"n": 1}, [effect("a1")], cursor=("github", "c7"))
    first.link("change", "r!1", "triggered", "run", "run-1")
    first.put_state("episodes", "churn", {"open": True})
    first.close()

    store = Store(state_url, clock=still)
    assert store.cursor("github") == "c7"
    assert store.seen("e1")
    [event] = store.events(kind="command")
    assert event.received_at == START and event.received_at.tzinfo is not None
    assert store.effect("a1").created_at == START
    assert store.links("run", "run-1")[0].created_at == START
    assert store.get_state("episodes", "churn") == {"open": True}
    assert store.events(kind="drift_found") == []
    store.close()


def test_a_newer_schema_is_refused(state_url: str):
    first = Store(state_url)
    label = first.label
    first.close()
    _run_sql(state_url, "UPDATE schema_info SET value = '3' WHERE name = 'schema_version'")
    with pytest.raises(StoreError) as raised:
        Store(state_url)
    assert str(raised.value) == (
        f"state database {label} was written by a newer mlops-bot (schema 3, this one knows {SCHEMA_VERSION}); "
        "upgrade mlops-bot"
    )

    # A migration this mlops-bot does not know: a newer one wrote the database.
    _run_sql(state_url, f"UPDATE schema_info SET value = '{SCHEMA_VERSION}' WHERE name = 'schema_version'",
             "UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError) as raised:
        Store(state_url)
    assert str(raised.value) == (
        f"state database {label} was written by a newer mlops-bot (revision 0099, this one knows up to "
        f"{schema_status(state_url).head}); upgrade mlops-bot"
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
    assert f"state database {path} is from before schema versions (older); upgrading it to revision 0003" \
        in caplog.messages
    assert store.cursor("github") == "c1"
    assert store.ingest("e1", "command", "github", {}, [effect("a1")])
    store.close()

    caplog.clear()
    Store.for_path(path).close()
    assert caplog.messages == []


def _old_format_tables() -> sa.MetaData:
    """The tables as the store made them before it had migrations (schema_info said 1)."""
    metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
                                              "ix": "ix_%(table_name)s_%(column_0_N_name)s"})
    key, name, time = sa.String(512), sa.String(128), sa.DateTime(timezone=True)
    sa.Table("schema_info", metadata, sa.Column("name", sa.String(64), primary_key=True),
             sa.Column("value", sa.String(255), nullable=False))
    sa.Table("cursors", metadata, sa.Column("source", key, primary_key=True),
             sa.Column("value", sa.Text, nullable=False),
             sa.Column("updated_at", time, nullable=False))
    sa.Table("events", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("key", key, nullable=False, unique=True), sa.Column("kind", name, nullable=False),
             sa.Column("source", name, nullable=False), sa.Column("payload", sa.Text, nullable=False),
             sa.Column("received_at", time, nullable=False), sa.Index(None, "kind", "id"))
    sa.Table("effects", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("key", key, nullable=False, unique=True), sa.Column("kind", name, nullable=False),
             sa.Column("payload", sa.Text, nullable=False), sa.Column("lane", key, nullable=False),
             sa.Column("cause", key, nullable=False), sa.Column("status", sa.String(16), nullable=False),
             sa.Column("attempts", sa.Integer, nullable=False), sa.Column("next_attempt_at", time, nullable=False),
             sa.Column("last_error", sa.Text), sa.Column("outcome_unknown", sa.Boolean, nullable=False),
             sa.Column("result", sa.Text), sa.Column("created_at", time, nullable=False), sa.Column("done_at", time),
             sa.Index(None, "status", "lane", "id"), sa.Index(None, "cause"))
    columns = ("src_kind", "src_id", "relation", "dst_kind", "dst_id")
    sa.Table("links", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             *(sa.Column(c, key if c.endswith("_id") else name, nullable=False) for c in columns),
             sa.Column("created_at", time, nullable=False), sa.UniqueConstraint(*columns),
             sa.Index(None, "dst_kind", "dst_id"))
    sa.Table("state", metadata, sa.Column("namespace", name, primary_key=True), sa.Column("key", key, primary_key=True),
             sa.Column("value", sa.Text, nullable=False), sa.Column("updated_at", time, nullable=False))
    return metadata


def test_a_database_from_before_migrations_is_upgraded_in_place(state_url: str, still: FakeClock,
                                                                 caplog: pytest.LogCaptureFixture):
    from click.testing import CliRunner

    from bot.cli import cli

    metadata = _old_format_tables()
    engine = sa.create_engine(state_url, poolclass=sa.pool.NullPool)
    at = START - timedelta(days=1)
    with engine.begin() as conn:
        metadata.create_all(conn)
        tables = metadata.tables
        conn.execute(tables["schema_info"].insert(), {"name": "schema_version", "value": "1"})
        conn.execute(tables["cursors"].insert(), {"source": "github:comments", "value": "c41", "updated_at": at})
        conn.execute(tables["events"].insert(), {"key": "gh:comment:41", "kind": "command", "source": "github",
                                                 "payload": '{"body": "/status"}', "received_at": at})
        conn.execute(tables["effects"].insert(), [
            {"key": key, "kind": "scm.reply", "payload": "{}", "lane": "lane", "cause": "gh:comment:41",
             "status": status, "attempts": 0, "next_attempt_at": at, "outcome_unknown": False, "created_at": at,
             "result": result, "done_at": at if status == "done" else None}
            for key, status, result in (("reply:41", "done", '{"id": 9}'), ("react:41", "pending", None))])
        conn.execute(tables["links"].insert(), {"src_kind": "change", "src_id": "r!1", "relation": "triggered",
                                                "dst_kind": "run", "dst_id": "run-1", "created_at": at})
        conn.execute(tables["state"].insert(), {"namespace": "episodes", "key": "churn", "value": '{"open": true}',
                                                "updated_at": at})
    engine.dispose()
    assert (schema_status(state_url).revision, schema_status(state_url).legacy) == (None, 1)
    env = {"MLOPS_STATE_URL": state_url}
    assert "from before migrations" in CliRunner().invoke(cli, ["db", "current"], env=env).output

    with caplog.at_level(logging.WARNING, logger="mlops_bot.store"):
        store = Store(state_url, clock=still)
    assert f"state database {store.label} is revision 0001 (older); upgrading it to revision 0003" in caplog.messages
    assert store.schema_upgrade == ("0001", "0003")
    # Everything is still there, and works as before.
    assert store.cursor("github:comments") == "c41"
    [event] = store.events()
    assert (event.key, event.payload, event.received_at) == ("gh:comment:41", {"body": "/status"}, at)
    assert [(e.key, e.status, e.result) for e in event.effects] == [("reply:41", "done", {"id": 9}),
                                                                     ("react:41", "pending", None)]
    assert [e.key for e in store.due_effects()] == ["react:41"]
    assert [link.dst_id for link in store.links("change", "r!1")] == ["run-1"]
    assert store.get_state("episodes", "churn") == {"open": True}
    assert store.ingest("gh:comment:42", "command", "github", {}, [effect("reply:42")])
    assert store.effect("reply:42").id > store.effect("react:41").id  # the ids carry on
    assert store.take_lease("mlops-bot", "me", ttl_s=30).held_by("me")  # the new tables are there
    assert store.workers() == [] and store.claim_job("poll", "me", every_s=60)
    store.close()
    assert _run_sql(state_url, "SELECT version_num FROM alembic_version",
                    "SELECT value FROM schema_info") == [[("0003",)], [(str(SCHEMA_VERSION),)]]
    status = schema_status(state_url)
    assert (status.revision, status.current) == ("0003", True)
    result = CliRunner().invoke(cli, ["db", "upgrade"], env=env)
    assert result.exit_code == 0 and "already at the newest revision" in result.output
    assert "0003: current" in CliRunner().invoke(cli, ["db", "current"], env=env).output


def test_db_upgrade_creates_a_new_database(state_url: str):
    import json

    from click.testing import CliRunner

    from bot.cli import cli

    result = CliRunner().invoke(cli, ["db", "upgrade", "--json"], env={"MLOPS_STATE_URL": state_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) | {"database": None} == {"database": None, "from": None, "to": "0003",
                                                                "upgraded": True}
    assert _run_sql(state_url, "SELECT version_num FROM alembic_version") == [[("0003",)]]


def test_bots_starting_together_migrate_once(state_url: str):
    from concurrent.futures import ThreadPoolExecutor

    def open_store(_n: int) -> tuple | None:
        store = Store(state_url)
        try:
            return store.schema_upgrade
        finally:
            store.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        upgrades = list(pool.map(open_store, range(4)))
    assert sorted(upgrades, key=repr) == [(None, "0003"), None, None, None]  # one migrated, three found it done


# Leases: one of several bots leads.

def test_a_lease_is_taken_once_renewed_by_its_holder_and_released(store: Store):
    first = store.take_lease("mlops-bot", "a", ttl_s=60)
    assert first.held_by("a") and first.term == 1
    assert (first.expires_at - first.now).total_seconds() == pytest.approx(60)
    other = store.take_lease("mlops-bot", "b", ttl_s=60)  # held: b only learns who leads
    assert (other.holder, other.term, other.held_by("b")) == ("a", 1, False)
    assert store.renew_lease("mlops-bot", "b", 1, ttl_s=60) is None
    assert store.renew_lease("mlops-bot", "a", 1, ttl_s=60).held_by("a")
    assert not store.release_lease("mlops-bot", "b", 1)
    assert store.release_lease("mlops-bot", "a", 1)
    taken = store.take_lease("mlops-bot", "b", ttl_s=60)  # released: free at once, in a new term
    assert (taken.holder, taken.term, taken.held_by("b")) == ("b", 2, True)
    assert store.renew_lease("mlops-bot", "a", 1, ttl_s=60) is None  # a's term is over
    assert store.lease("mlops-bot").holder == "b" and store.lease("other") is None


def test_an_expired_lease_passes_to_the_next_bot(store: Store):
    store.take_lease("mlops-bot", "a", ttl_s=1)
    time.sleep(2.1)  # the database's clock decides (whole seconds on SQLite)
    taken = store.take_lease("mlops-bot", "b", ttl_s=30)
    assert (taken.holder, taken.term) == ("b", 2)
    assert store.renew_lease("mlops-bot", "a", 1, ttl_s=30) is None


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


def test_a_store_locked_after_opening_reports_it_too(tmp_path: Path):
    Store.for_path(tmp_path / "state" / "state.db").close()
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

def _committed(url: str, query: str) -> list[tuple]:
    """What another connection (another process, after a crash) would find."""
    return _run_sql(url, query)[0]


def test_deferred_writes_wait_for_the_next_write_transaction(state_url: str, still: FakeClock):
    path = state_url
    store = Store(path, clock=still)
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


def test_only_the_deferring_thread_defers(state_url: str, still: FakeClock):
    import threading

    path = state_url
    store = Store(path, clock=still)
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


def test_a_failed_transaction_keeps_the_deferred_writes(state_url: str, still: FakeClock):
    path = state_url
    store = Store(path, clock=still)
    with store.deferred_writes():
        store.put_state("threads", "t1", {"id": 1})
        with pytest.raises(TypeError):
            store.ingest("e1", "command", "github", {"when": object()})
        assert _committed(path, "SELECT key FROM state") == []
        store.ingest("e2", "command", "github", {})
        assert _committed(path, "SELECT key FROM state") == [("t1",)]
    store.close()


def test_close_writes_what_was_deferred(state_url: str, still: FakeClock):
    path = state_url
    store = Store(path, clock=still)
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


def test_on_postgresql_a_writer_holds_the_writer_lock_from_begin(postgres_url: str):
    """One writer at a time, as on SQLite: effect ids are committed in the order they are given,
    which the lanes' order needs when two bots write at once."""
    from bot.store import _WRITER_LOCK

    Store(postgres_url).close()
    probe = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool).connect()
    seen = []

    def clock() -> datetime:  # read inside the store's transactions, after their BEGIN
        with probe.begin():
            free = probe.execute(sa.text(f"SELECT pg_try_advisory_xact_lock({_WRITER_LOCK})")).scalar()
        seen.append("free" if free else "locked")
        return START

    store = Store(postgres_url, clock=clock)
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


def test_a_store_is_usable_from_several_threads(state_url: str, still: FakeClock):
    from concurrent.futures import ThreadPoolExecutor

    store = Store(state_url, clock=still)

    def work(n: int) -> bool:
        store.ingest(f"e{n}", "command", "github", {"n": n}, [effect(f"reply:{n}", lane=f"l{n % 3}")])
        store.put_state("n", str(n), {"n": n})
        return store.seen(f"e{n}") and store.get_state("n", str(n)) == {"n": n}

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(40)))
    assert store.outbox_stats()["pending"] == 40
    store.close()


def test_the_revisions_read_from_the_files_are_alembics():
    """`head` and `known` read the revision graph without Alembic; Alembic runs the upgrades."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from bot import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    scripts = ScriptDirectory.from_config(config)
    assert migrations.head() == scripts.get_current_head()
    every = {script.revision for script in scripts.walk_revisions()}
    assert every and all(migrations.known(rev) for rev in every)
    assert not migrations.known("9999")


# Fencing: a leader's progress is stored only while its lease stands.

def _lease_taken_by_b_after(store: Store) -> Fence:
    """a's fence for the term b then took over (released at once, as ending a lease does, rather
    than waited out): what a leader paused past its lease still carries when it wakes up."""
    first = store.take_lease("mlops-bot", "a", ttl_s=60)
    assert store.release_lease("mlops-bot", "a", first.term)
    assert store.take_lease("mlops-bot", "b", ttl_s=60).held_by("b")
    return Fence("mlops-bot", "a", first.term)


def test_writes_under_a_lost_lease_are_refused_and_write_nothing(store: Store):
    store.ingest("e1", "command", "github", {}, [effect("a1", "a"), effect("b1", "b")])
    store.set_cursor("github:comments", "c1")
    a1, b1 = store.next_round(limit=10)  # both marked: their outcome is unknown until recorded
    stale = _lease_taken_by_b_after(store)

    with pytest.raises(LostLease, match="b \\(term 2\\) leads now"):
        store.finish_attempts({a1.id: {"id": 7}}, [b1.id], fence=stale)
    with pytest.raises(LostLease):
        store.next_round(limit=10, results={a1.id: {"id": 7}}, fence=stale)
    with pytest.raises(LostLease):
        store.set_cursor("github:comments", "c2", fence=stale)
    with pytest.raises(LostLease):
        store.give_up(a1.id, "PermanentError", fence=stale)
    with pytest.raises(LostLease):
        store.retry_later(a1.id, "503", at=START, outcome_unknown=False, fence=stale)

    assert [(e.key, e.status, e.outcome_unknown, e.attempts) for e in sorted(store.effects(), key=lambda e: e.id)] == [
        ("a1", "pending", True, 0), ("b1", "pending", True, 0)]  # still marked: the next leader looks first
    assert store.cursor("github:comments") == "c1"


def test_writes_under_a_lease_that_ran_out_are_refused(store: Store):
    store.ingest("e1", "command", "github", {}, [effect("a1")])
    (a1,) = store.next_round(limit=10)
    lease = store.take_lease("mlops-bot", "a", ttl_s=0)  # ends as it starts, by the database's clock
    with pytest.raises(LostLease, match="ran out"):
        store.finish_attempts({a1.id: {}}, fence=Fence("mlops-bot", "a", lease.term))
    assert store.effect("a1").status == "pending"


def test_writes_under_the_standing_lease_are_made(store: Store):
    store.ingest("e1", "command", "github", {}, [effect("a1", "a"), effect("b1", "b")])
    _lease_taken_by_b_after(store)
    current = Fence("mlops-bot", "b", 2)
    a1, b1 = store.next_round(limit=10, fence=current)
    store.finish_attempts({a1.id: {"id": 7}}, [b1.id], fence=current)
    store.set_cursor("github:comments", "c2", fence=current)
    assert [(e.key, e.status, e.outcome_unknown) for e in sorted(store.effects(), key=lambda e: e.id)] == [
        ("a1", "done", False), ("b1", "pending", False)]
    assert store.cursor("github:comments") == "c2"


def test_a_refused_write_drops_the_writes_its_deliveries_deferred(store: Store):
    store.ingest("e1", "command", "github", {}, [effect("a1")])
    (a1,) = store.next_round(limit=10)
    stale = _lease_taken_by_b_after(store)
    with store.deferred_writes():
        store.put_state("threads", "run-1", {"ts": "1.1"})  # what the delivery of a1 wrote beside it
        with pytest.raises(LostLease):
            store.finish_attempts({a1.id: {}}, fence=stale)
    # Lost with the completion, as after a crash: the next leader's delivery of a1 writes it again.
    assert store.get_state("threads", "run-1") is None


def test_on_postgresql_a_fenced_write_waits_for_a_lease_being_taken_and_sees_it_taken(postgres_url: str):
    store = Store(postgres_url)
    try:
        store.ingest("e1", "command", "github", {}, [effect("a1")])
        (a1,) = store.next_round(limit=10)
        first = store.take_lease("mlops-bot", "a", ttl_s=60)
        taking = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
        with taking.connect() as conn:
            transaction = conn.begin()
            # Another bot's take_lease, half-way: the row locked and changed, not yet committed.
            conn.execute(sa.text("SELECT * FROM leases WHERE name = 'mlops-bot' FOR UPDATE"))
            conn.execute(sa.text("UPDATE leases SET holder = 'b', term = term + 1 WHERE name = 'mlops-bot'"))
            outcome: list[BaseException | None] = []

            def finish() -> None:
                try:
                    store.finish_attempts({a1.id: {}}, fence=Fence("mlops-bot", "a", first.term))
                    outcome.append(None)
                except BaseException as error:  # noqa: BLE001 - handed to the test
                    outcome.append(error)

            writer = threading.Thread(target=finish)
            writer.start()
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('tuple', 'transactionid')"
            for _ in range(500):  # until the fenced write waits for the row (or, unfenced, is done)
                if outcome or _run_sql(postgres_url, waiting)[0][0][0]:
                    break
                writer.join(0.01)
            transaction.commit()
            writer.join(30)
        taking.dispose()
        assert len(outcome) == 1 and isinstance(outcome[0], LostLease)
        assert store.effect("a1").status == "pending"
    finally:
        store.close()
