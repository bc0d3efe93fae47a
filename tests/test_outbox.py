from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.events import Event, RunFinished
from bot.leader import LeaseLeader
from bot.outbox import Delivered, DeliveryReport, Outbox, PermanentError
from bot.store import EffectRow, LostLease, NewEffect, Store
from integrations.ports import TransientError, marker_comment
from tests.standby import run_out_lease

# Not imported from tests.conftest: the crash test's child process imports this module, and
# conftest would make it load pandas and numpy first.
REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, tzinfo=UTC)
LOSE_RESPONSE = "write, then lose the response"


class StillClock:
    """Time that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class FakeChat:
    """A pretend service that keeps what was written, each with the marker hidden in it."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, marker: str, text: str) -> int:
        self.writes.append(f"{text} {marker_comment(marker)}")
        return len(self.writes)

    def find(self, marker: str) -> int | None:
        hidden = marker_comment(marker)
        return next((n for n, write in enumerate(self.writes, 1) if hidden in write), None)


class ScriptedHandler:
    """Writes each effect's text to the chat; ``script`` says how the next deliveries go wrong.

    A script step is an exception to raise before writing, or LOSE_RESPONSE: write, then raise
    as a timeout would. With the script used up, deliveries succeed.
    """

    def __init__(self, chat: FakeChat, script=(), follow_ups=lambda effect: ()) -> None:
        self.chat, self.script, self.follow_ups = chat, list(script), follow_ups
        self.calls: list[str] = []

    def deliver(self, effect: EffectRow) -> Delivered:
        self.calls.append(f"deliver {effect.key}")
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        number = self.chat.write(effect.key, effect.payload.get("text", ""))
        if step == LOSE_RESPONSE:
            raise TransientError("read timed out", outcome_unknown=True)
        return Delivered({"message": number}, self.follow_ups(effect))

    def find_done(self, effect: EffectRow) -> Delivered | None:
        self.calls.append(f"find_done {effect.key}")
        number = self.chat.find(effect.key)
        return None if number is None else Delivered({"message": number, "found": True}, self.follow_ups(effect))


@pytest.fixture
def clock() -> StillClock:
    return StillClock()


@pytest.fixture
def store(state_url: str, clock: StillClock):
    """A store on SQLite, then on PostgreSQL (tests/postgres.py)."""
    store = Store(state_url, clock=clock)
    yield store
    store.close()


def _query(url: str, query: str) -> list[tuple]:
    """What another connection (another process) finds."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


@pytest.fixture
def chat() -> FakeChat:
    return FakeChat()


def owe(store: Store, *keys: str, lane: str = "lane", cause: str = "event-1", kind: str = "chat.post") -> None:
    store.add_effects(cause, [NewEffect(key, kind, {"text": f"text of {key}"}, lane) for key in keys])


def make_outbox(store: Store, handler, clock: StillClock, *, ingest=lambda event: None, **options) -> Outbox:
    return Outbox(store, {"chat.post": handler}, ingest=ingest, clock=clock, jitter=lambda: 0.5, **options)


def test_delivers_each_lane_in_order(store, chat, clock):
    owe(store, "a1", "a2", "a3", lane="a")
    owe(store, "b1", "b2", lane="b")

    report = make_outbox(store, ScriptedHandler(chat), clock).deliver_due()

    assert report == DeliveryReport(delivered=5)
    assert [write.split()[2] for write in chat.writes] == ["a1", "b1", "a2", "b2", "a3"]
    assert store.effect("a3").status == "done" and store.effect("a3").result == {"message": 5}
    assert store.outbox_stats()["pending"] == 0


def test_transient_failures_back_off_exponentially(store, chat, clock):
    owe(store, "a1")
    failing = ScriptedHandler(chat, [TransientError("503")] * 4)
    box = make_outbox(store, failing, clock, base_delay_s=2.0, max_delay_s=10.0)

    waits = []
    for _ in range(4):
        assert box.deliver_due() == DeliveryReport(retried=1)
        assert box.deliver_due() == DeliveryReport()  # not due again yet
        effect = store.effect("a1")
        waits.append((effect.next_attempt_at - clock.now).total_seconds())
        clock.now = effect.next_attempt_at

    # 2 s doubling per failure, capped at 10 s, times 0.75 (jitter fixed at 0.5)
    assert waits == [1.5, 3.0, 6.0, 7.5]
    assert (effect.attempts, effect.last_error, effect.outcome_unknown) == (4, "TransientError: 503", False)
    assert box.deliver_due() == DeliveryReport(delivered=1)
    assert len(chat.writes) == 1


def test_retry_after_is_honoured_when_longer(store, chat, clock):
    owe(store, "a1", "b1")
    owe(store, "c1", lane="other")
    handler = ScriptedHandler(chat, [TransientError("slow down", retry_after=60), TransientError("hm", retry_after=0.1)])
    make_outbox(store, handler, clock).deliver_due()

    assert store.effect("a1").next_attempt_at == START + timedelta(seconds=60)
    assert store.effect("c1").next_attempt_at == START + timedelta(seconds=1.5)


def test_too_many_failures_make_an_effect_dead_and_free_its_lane(store, chat, clock):
    owe(store, "a1", "a2")
    box = make_outbox(store, ScriptedHandler(chat, [TransientError("503")] * 3), clock, max_attempts=3)

    reports = []
    for _ in range(3):
        reports.append(box.deliver_due())
        clock.now += timedelta(hours=1)

    assert reports == [DeliveryReport(retried=1), DeliveryReport(retried=1), DeliveryReport(dead=1, delivered=1)]
    dead = store.effect("a1")
    assert (dead.status, dead.attempts) == ("dead", 3)
    assert dead.last_error == "TransientError: 503 (gave up after 3 attempts)"
    assert store.effect("a2").status == "done"


def test_a_permanent_error_is_dead_at_once(store, chat, clock):
    owe(store, "a1", "a2")
    report = make_outbox(store, ScriptedHandler(chat, [PermanentError("404 no such pull request")]), clock).deliver_due()

    assert report == DeliveryReport(dead=1, delivered=1)
    assert store.effect("a1").status == "dead"
    assert store.effect("a1").last_error == "PermanentError: 404 no such pull request"
    assert [write.split()[2] for write in chat.writes] == ["a2"]


def test_an_effect_nobody_handles_is_dead_with_a_reason(store, chat, clock):
    owe(store, "a1", kind="jira.open")
    assert make_outbox(store, ScriptedHandler(chat), clock).deliver_due() == DeliveryReport(dead=1)
    assert store.effect("a1").last_error == "no handler for effect kind 'jira.open' (known: chat.post)"


def test_an_unknown_outcome_is_looked_for_before_repeating(store, chat, clock):
    owe(store, "a1", "a2")
    handler = ScriptedHandler(chat, [LOSE_RESPONSE])
    box = make_outbox(store, handler, clock)

    assert box.deliver_due() == DeliveryReport(retried=1)
    assert store.effect("a1").outcome_unknown
    clock.now += timedelta(minutes=1)
    assert box.deliver_due() == DeliveryReport(recovered=1, delivered=1)

    assert handler.calls == ["deliver a1", "find_done a1", "deliver a2"]
    assert chat.writes == [f"text of a1 {marker_comment('a1')}", f"text of a2 {marker_comment('a2')}"]
    assert store.effect("a1").result == {"message": 1, "found": True}
    assert not store.effect("a1").outcome_unknown


def test_an_unknown_outcome_that_did_not_happen_is_delivered(store, chat, clock):
    owe(store, "a1")
    handler = ScriptedHandler(chat, [TransientError("read timed out", outcome_unknown=True),
                                     TransientError("connection refused")])
    box = make_outbox(store, handler, clock)
    for _ in range(3):
        box.deliver_due()
        clock.now += timedelta(minutes=1)

    # The timed-out write may still be served later: every repeat looks for it first, not only the next.
    assert handler.calls == ["deliver a1", "find_done a1", "deliver a1", "find_done a1", "deliver a1"]
    assert len(chat.writes) == 1 and store.effect("a1").status == "done"


def test_a_surprising_exception_counts_as_an_unknown_outcome(store, chat, clock):
    owe(store, "a1")
    handler = ScriptedHandler(chat, [KeyError("id")])
    box = make_outbox(store, handler, clock)
    box.deliver_due()
    assert store.effect("a1").outcome_unknown and store.effect("a1").last_error == "KeyError: 'id'"


def test_follow_up_events_are_ingested_before_the_effect_is_complete(store, chat, clock):
    owe(store, "run:r1", cause="merged:abc")
    finished = RunFinished(run_id="r1", model="churn", status="succeeded")
    ingested = []

    def ingest(event: Event) -> None:
        ingested.append((event.key, store.effect("run:r1").status))

    handler = ScriptedHandler(chat, follow_ups=lambda effect: (finished,))
    assert make_outbox(store, handler, clock, ingest=ingest).deliver_due() == DeliveryReport(delivered=1)
    assert ingested == [("run-finished:r1", "pending")]
    assert store.effect("run:r1").status == "done"


def test_a_failure_between_ingest_and_complete_recovers_without_repeating(store, chat, clock):
    owe(store, "run:r1")
    finished = RunFinished(run_id="r1", model="churn", status="succeeded")
    ingested = []

    def ingest(event: Event) -> None:  # the dispatcher: idempotent by event key, failing once
        if not ingested:
            ingested.append("failed")
            raise RuntimeError("database went away")
        store.ingest(event.key, event.kind, "pipeline", event.to_dict())
        ingested.append(event.key)

    handler = ScriptedHandler(chat, follow_ups=lambda effect: (finished,))
    box = make_outbox(store, handler, clock, ingest=ingest)
    assert box.deliver_due() == DeliveryReport(retried=1)
    clock.now += timedelta(minutes=1)
    assert box.deliver_due() == DeliveryReport(recovered=1)

    assert handler.calls == ["deliver run:r1", "find_done run:r1"]
    assert ingested == ["failed", "run-finished:r1"] and len(chat.writes) == 1
    assert store.seen("run-finished:r1")


def test_should_stop_is_asked_between_effects(store, chat, clock):
    owe(store, "a1", "a2")
    owe(store, "b1", lane="b")
    handler = ScriptedHandler(chat)
    report = make_outbox(store, handler, clock).deliver_due(should_stop=lambda: len(handler.calls) >= 2)

    assert report == DeliveryReport(delivered=2)
    assert [e.key for e in store.effects(status="pending")] == ["a2"]


def test_limit_bounds_one_delivery_round(store, chat, clock):
    owe(store, "a1", "a2", "a3")
    assert make_outbox(store, ScriptedHandler(chat), clock).deliver_due(limit=2) == DeliveryReport(delivered=2)


def test_logs_name_effects_but_never_their_payload(store, chat, clock, caplog):
    store.add_effects("e1", [NewEffect("a1", "chat.post", {"text": "token=s3cr3t"}, "lane")])
    handler = ScriptedHandler(chat, [TransientError("rejected token=s3cr3t")])
    box = make_outbox(store, handler, clock, max_attempts=2)
    with caplog.at_level(logging.INFO, logger="mlops_bot.outbox"):
        box.deliver_due()
        clock.now += timedelta(minutes=1)
        box.deliver_due()

    assert len(caplog.messages) == 2
    assert "a1 (chat.post) failed (TransientError)" in caplog.messages[0]
    assert "a1 (chat.post) delivered" in caplog.messages[1]
    assert "s3cr3t" not in caplog.text


# Rounds: the store is written once per round, not several times per effect.

def test_a_round_is_marked_before_any_of_it_is_tried(store, chat, clock):
    owe(store, "a1", lane="a")
    owe(store, "b1", lane="b")
    owe(store, "c1", lane="c")
    seen = []

    class Looking(ScriptedHandler):
        def deliver(self, effect):
            seen.append({key: (store.effect(key).status, store.effect(key).outcome_unknown) for key in ("a1", "b1", "c1")})
            return super().deliver(effect)

    assert make_outbox(store, Looking(chat), clock).deliver_due() == DeliveryReport(delivered=3)
    # Every effect of the round is marked before the first is tried; completions are stored when
    # the round ends, before the lanes move on.
    assert seen[0] == {"a1": ("pending", True), "b1": ("pending", True), "c1": ("pending", True)}
    assert seen[2] == seen[0]
    assert [(e.status, e.outcome_unknown) for e in map(store.effect, ("a1", "b1", "c1"))] == [("done", False)] * 3


def test_a_lane_moves_on_only_once_its_effect_is_stored_done(store, chat, clock):
    owe(store, "a1", "a2", lane="a")
    seen = []

    class Looking(ScriptedHandler):
        def deliver(self, effect):
            seen.append((effect.key, store.effect("a1").status))
            return super().deliver(effect)

    make_outbox(store, Looking(chat), clock).deliver_due()
    assert seen == [("a1", "pending"), ("a2", "done")]


def test_the_store_is_written_once_per_round(store, chat, clock):
    import sqlalchemy as sa

    for lane in "abcde":
        owe(store, f"{lane}1", f"{lane}2", lane=lane)
    commits = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(conn.info.get("mlops_bot_writer", False)))
    assert make_outbox(store, ScriptedHandler(chat), clock).deliver_due() == DeliveryReport(delivered=10)
    # Three rounds (five effects, five, none): each begins with one write; the reads are none.
    assert commits == [True, True, True]


def test_an_effect_with_follow_ups_is_stored_done_before_the_next_is_tried(store, chat, clock):
    owe(store, "run:r1", lane="pipeline")
    owe(store, "b1", lane="b")
    finished = RunFinished(run_id="r1", model="churn", status="succeeded")
    seen = []

    class Looking(ScriptedHandler):
        def deliver(self, effect):
            seen.append((effect.key, store.effect("run:r1").status))
            return super().deliver(effect)

    handler = Looking(chat, follow_ups=lambda effect: (finished,) if effect.key == "run:r1" else ())
    make_outbox(store, handler, clock, ingest=lambda event: None).deliver_due()
    assert seen == [("run:r1", "pending"), ("b1", "done")]


def test_stopping_clears_the_marks_of_what_was_not_tried(store, chat, clock):
    owe(store, "a1", lane="a")
    owe(store, "b1", lane="b")
    handler = ScriptedHandler(chat)
    report = make_outbox(store, handler, clock).deliver_due(should_stop=lambda: len(handler.calls) >= 1)

    assert report == DeliveryReport(delivered=1)
    assert (store.effect("a1").status, store.effect("a1").outcome_unknown) == ("done", False)
    assert (store.effect("b1").status, store.effect("b1").outcome_unknown) == ("pending", False)
    make_outbox(store, handler, clock).deliver_due()
    assert handler.calls == ["deliver a1", "deliver b1"]  # not looked for: it never happened


def test_what_a_delivery_writes_to_the_store_is_stored_with_its_completion(store, chat, clock, state_url):
    owe(store, "a1", lane="a")
    owe(store, "b1", lane="b")
    committed = []

    def stored() -> list[tuple]:
        return [(key, status, int(posted)) for key, status, posted in _query(
            state_url, "SELECT e.key, e.status, s.key IS NOT NULL FROM effects e"
                       " LEFT JOIN state s ON s.namespace = 'posted' AND s.key = e.key ORDER BY e.key")]

    class Writing(ScriptedHandler):
        def deliver(self, effect):
            committed.append(stored())
            store.put_state("posted", effect.key, {"at": "now"})
            store.link("effect", effect.key, "posted_to", "chat", "general")
            assert store.get_state("posted", effect.key) == {"at": "now"}
            return super().deliver(effect)

    make_outbox(store, Writing(chat), clock).deliver_due()
    assert committed == [[("a1", "pending", 0), ("b1", "pending", 0)]] * 2  # nothing of a1 stored before b1
    assert stored() == [("a1", "done", 1), ("b1", "done", 1)]
    assert [link.dst_id for link in store.links("effect", "b1")] == ["general"]


# A leader paused past its lease (SIGSTOP, a long stall) while another bot took over.

def test_a_leader_paused_past_its_lease_stores_nothing_and_the_next_finds_what_it_did(
        state_url, chat, clock, caplog):
    paused_store, next_store = Store(state_url, clock=clock), Store(state_url, clock=clock)
    paused = LeaseLeader(paused_store, takeover_s=60, holder="paused")
    successor = LeaseLeader(next_store, takeover_s=60, holder="next")
    try:
        owe(paused_store, "a1", "a2", lane="a")
        assert paused.step() and not successor.step()
        with pytest.raises(LostLease):  # a standby's fence: no term, nothing may be stored under it
            next_store.set_cursor("github:comments", "c1", fence=successor.fence())
        fence = paused.fence()

        class PausedAfterWriting(ScriptedHandler):
            def deliver(self, effect):
                delivered = super().deliver(effect)  # the outside write is made; then the process stops
                run_out_lease(state_url)
                assert successor.step()  # while it is stopped, the next bot takes the lease over
                return delivered  # and it wakes up, believing it still leads

        with pytest.raises(LostLease), caplog.at_level(logging.WARNING, logger="mlops_bot.outbox"):
            make_outbox(paused_store, PausedAfterWriting(chat), clock).deliver_due(fence=fence)
        assert "lost the lease while delivering: effect(s) a1 left for the new leader" in caplog.text
        assert [(e.key, e.status, e.outcome_unknown) for e in sorted(paused_store.effects(), key=lambda e: e.id)] \
            == [("a1", "pending", True), ("a2", "pending", False)]  # a1 not done, and looked for first
        paused.lost(fence)
        assert not paused.leading() and successor.leading()

        handler = ScriptedHandler(chat)
        report = make_outbox(next_store, handler, clock).deliver_due(fence=successor.fence())
        assert report == DeliveryReport(delivered=1, recovered=1)
        assert handler.calls == ["find_done a1", "deliver a2"]
        assert [write.split(" <!--")[0] for write in chat.writes] == ["text of a1", "text of a2"]  # a1 once
    finally:
        successor.stop()
        paused.stop()
        paused_store.close()
        next_store.close()


def test_a_write_the_paused_leader_makes_after_the_next_one_looked_is_found_before_a_repeat(
        state_url, chat, clock):
    paused_store, next_store = Store(state_url, clock=clock), Store(state_url, clock=clock)
    paused = LeaseLeader(paused_store, takeover_s=60, holder="paused")
    successor = LeaseLeader(next_store, takeover_s=60, holder="next")
    try:
        owe(paused_store, "a1")
        assert paused.step()
        fence = paused.fence()
        refused_once = ScriptedHandler(chat, [TransientError("connection refused")])  # did not happen
        successor_box = make_outbox(next_store, refused_once, clock)

        class PausedBeforeWriting(ScriptedHandler):
            def deliver(self, effect):
                # Stopped before its write, past its lease: the next bot takes over and tries a1 itself.
                run_out_lease(state_url)
                assert successor.step()
                assert successor_box.deliver_due(fence=successor.fence()) == DeliveryReport(retried=1)
                return super().deliver(effect)  # then it wakes up and writes after all

        with pytest.raises(LostLease):
            make_outbox(paused_store, PausedBeforeWriting(chat), clock).deliver_due(fence=fence)
        clock.now += timedelta(minutes=1)
        assert successor_box.deliver_due(fence=successor.fence()) == DeliveryReport(recovered=1)
        assert refused_once.calls == ["find_done a1", "deliver a1", "find_done a1"]
        assert len(chat.writes) == 1 and next_store.effect("a1").status == "done"
    finally:
        successor.stop()
        paused.stop()
        paused_store.close()
        next_store.close()


def test_a_paused_leader_cannot_retry_or_give_up_an_effect_either(state_url, chat, clock):
    paused_store = Store(state_url, clock=clock)
    paused = LeaseLeader(paused_store, takeover_s=60, holder="paused")
    successor = LeaseLeader(paused_store, takeover_s=60, holder="next")
    try:
        owe(paused_store, "a1")
        assert paused.step()

        class PausedThenFailing(ScriptedHandler):
            def deliver(self, effect):
                run_out_lease(state_url)
                assert successor.step()
                raise PermanentError("422 from the service")

        with pytest.raises(LostLease):
            make_outbox(paused_store, PausedThenFailing(chat), clock).deliver_due(fence=paused.fence())
        assert (paused_store.effect("a1").status, paused_store.effect("a1").outcome_unknown) == ("pending", True)
    finally:
        successor.stop()
        paused.stop()
        paused_store.close()


# The crash test: a bot process killed at random moments, again and again.

KILLS = 30
RUNS = 20  # pipeline-run effects; each one's follow-up event owes an announcement
POSTS = 80
_SPAWN_AHEAD = 3


class FileService:
    """A slowish outside service that appends each write to a file, and sometimes fails."""

    def __init__(self, path: Path, rng: random.Random, flaky: float = 0.1) -> None:
        self.path, self.rng, self.flaky = path, rng, flaky

    def append(self, marker: str, text: str) -> None:
        self._pause()
        if self.rng.random() < self.flaky:
            raise TransientError("connection refused")
        line = f"{text} {marker_comment(marker)}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)  # one append: a kill lands before or after it, never inside
        finally:
            os.close(fd)
        self._pause()  # the response on its way back: a kill here leaves the outcome unknown
        if self.rng.random() < self.flaky:
            raise TransientError("read timed out", outcome_unknown=True)

    def contains(self, marker: str) -> bool:
        return marker_comment(marker) in self.path.read_text()

    def _pause(self) -> None:
        time.sleep(self.rng.uniform(0, 0.006))


class FileHandler:
    """Appends to the service; like the bot's handlers, also records what it did in the store."""

    def __init__(self, service: FileService, store: Store) -> None:
        self.service, self.store = service, store

    def deliver(self, effect: EffectRow) -> Delivered:
        self.service.append(effect.key, effect.payload["text"])
        self._record(effect)
        return Delivered({"found": False}, self._follow_ups(effect))

    def find_done(self, effect: EffectRow) -> Delivered | None:
        if not self.service.contains(effect.key):
            return None
        self._record(effect)
        return Delivered({"found": True}, self._follow_ups(effect))

    def _record(self, effect: EffectRow) -> None:
        self.store.put_state("appended", effect.key, {"lane": effect.lane})
        self.store.link("effect", effect.key, "appended_to", "file", "service")

    def _follow_ups(self, effect: EffectRow) -> tuple[Event, ...]:
        run_id = effect.payload.get("run_id")
        return () if run_id is None else (RunFinished(run_id=run_id, model="churn", status="succeeded"),)


def crash_child(db: str, service_file: str, seed: str) -> None:
    """The bot as the crash test runs it: deliver until nothing is pending (``db``: the store's URL)."""
    sys.stdin.readline()  # imported and ready: wait for the parent's word
    print("started", flush=True)
    store = Store(db)

    def ingest(event: RunFinished) -> None:  # as the dispatcher does: the event owes an announcement
        announce = NewEffect(f"announce:{event.run_id}", "file.append", {"text": f"{event.run_id} finished"},
                             lane="announce")
        store.ingest(event.key, event.kind, "pipeline", event.to_dict(), [announce])

    handler = FileHandler(FileService(Path(service_file), random.Random(int(seed))), store)
    box = Outbox(store, {"file.append": handler}, ingest=ingest, base_delay_s=0.001, max_delay_s=0.005,
                 max_attempts=1000)
    while store.outbox_stats()["pending"]:
        box.deliver_due()
        time.sleep(0.001)  # only effects waiting out a back-off are left


def _done_without_record(db: str) -> list[str]:
    return [key for (key,) in _query(
        db, "SELECT key FROM effects e WHERE status = 'done' AND ("
            " NOT EXISTS (SELECT 1 FROM state s WHERE s.namespace = 'appended' AND s.key = e.key)"
            " OR NOT EXISTS (SELECT 1 FROM links l WHERE l.src_id = e.key AND l.relation = 'appended_to'))")]


def _spawn(db: str, service_file: Path, seed: int) -> subprocess.Popen:
    code = "import sys; from tests.test_outbox import crash_child; crash_child(*sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, str(db), str(service_file), str(seed)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_killed_at_random_moments_no_effect_is_lost_or_repeated(tmp_path: Path, state_url: str):
    db, service_file = state_url, tmp_path / "service.log"
    service_file.touch()
    store = Store(db)
    for n in range(RUNS + POSTS):
        payload = {"text": f"write {n}", **({"run_id": f"r{n}"} if n < RUNS else {})}
        store.ingest(f"event-{n}", "command", "test", {}, [NewEffect(f"post:{n}", "file.append", payload, f"lane-{n % 5}")])
    store.close()

    rng = random.Random(20260101)
    written_at_kill = []
    # Children are started ahead, while the one before them works, to hide their start-up time.
    runs = range(KILLS + 1)
    waiting = deque(_spawn(db, service_file, seed) for seed in runs[:_SPAWN_AHEAD])
    try:
        for run in runs:
            child = waiting.popleft()
            if run + _SPAWN_AHEAD in runs:
                waiting.append(_spawn(db, service_file, seed=run + _SPAWN_AHEAD))
            child.stdin.write(b"go\n")
            child.stdin.flush()
            assert child.stdout.readline() == b"started\n", child.stderr.read().decode()
            if run < KILLS:
                time.sleep(rng.uniform(0, 0.12))
                child.kill()
                child.communicate()
                written_at_kill.append(len(service_file.read_text().splitlines()))
                # What a delivery recorded in the store is never lost once it is done.
                assert _done_without_record(db) == [], f"kill {run}"
            else:
                _, errors = child.communicate(timeout=60)
                assert child.returncode == 0, errors.decode()
    finally:
        for child in waiting:  # only when the test failed half-way
            child.kill()
            child.communicate()

    lines = service_file.read_text().splitlines()
    markers = [re.search(r"<!-- mlops-bot:(.*) -->", line).group(1) for line in lines]
    owed = [f"post:{n}" for n in range(RUNS + POSTS)] + [f"announce:r{n}" for n in range(RUNS)]
    assert Counter(markers) == Counter(owed)  # every effect, exactly once

    store = Store(db)
    assert store.outbox_stats() | {"oldest_pending_age_s": None} == {
        "pending": 0, "dead": 0, "done": len(owed), "oldest_pending_age_s": None,
    }
    assert all(store.seen(f"run-finished:r{n}") for n in range(RUNS))
    assert _done_without_record(db) == []
    effects = sorted(store.effects(limit=1000), key=lambda effect: effect.id)
    for lane in {effect.lane for effect in effects}:  # and each lane in the order it was owed
        in_lane = [effect.key for effect in effects if effect.lane == lane]
        assert [marker for marker in markers if marker in in_lane] == in_lane
    recovered = sum(effect.result["found"] for effect in effects)
    store.close()

    # The kills came while there was work left, and some hit between a write and its record.
    assert sum(written < len(owed) for written in written_at_kill) >= KILLS // 2, written_at_kill
    assert recovered > 0


def test_a_leader_paused_while_looking_for_an_earlier_attempt_does_not_write_when_it_wakes(
        state_url, chat, clock):
    """The look is a request: a leader paused during it wakes up with an answer that may be stale
    (the bot that took over may have written since), so it asks whether it still leads first."""
    paused_store, next_store = Store(state_url, clock=clock), Store(state_url, clock=clock)
    ticks = [1000.0]
    paused = LeaseLeader(paused_store, takeover_s=60, holder="paused", monotonic=lambda: ticks[0])
    successor = LeaseLeader(next_store, takeover_s=60, holder="next")
    try:
        owe(paused_store, "a1", "a2", lane="a")
        paused_store.retry_later(paused_store.effect("a1").id, "timed out", at=clock(), outcome_unknown=True)
        assert paused.step()

        class PausedWhileLooking(ScriptedHandler):
            def find_done(self, effect):
                found = super().find_done(effect)  # nothing yet; then the process stops
                run_out_lease(state_url)
                assert successor.step()
                ticks[0] += 60  # its own clock moved on while it was stopped
                return found

        handler = PausedWhileLooking(chat)
        with pytest.raises(LostLease):  # what the round did is stored under the lease: refused, so it stands by
            make_outbox(paused_store, handler, clock).deliver_due(fence=paused.fence(),
                                                                   should_stop=lambda: not paused.leading())

        assert handler.calls == ["find_done a1"]  # never written
        assert chat.writes == []
        assert (next_store.effect("a1").status, next_store.effect("a1").outcome_unknown) == ("pending", True)
        later = ScriptedHandler(chat)
        assert make_outbox(next_store, later, clock).deliver_due(fence=successor.fence()) == DeliveryReport(delivered=2)
        assert later.calls == ["find_done a1", "deliver a1", "deliver a2"] and len(chat.writes) == 2
    finally:
        successor.stop()
        paused.stop()
        paused_store.close()
        next_store.close()
