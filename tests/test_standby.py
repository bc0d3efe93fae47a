"""Two bots on one PostgreSQL database: one leads, the other stands by and takes over when the
leader dies, carrying on from the stored cursors and outbox with nothing lost or repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.leader import LeaseLeader, SoleLeader, leadership_for
from bot.store import Store
from integrations.ports import Target
from tests.conftest import PROJECT
from tests.test_bot import drifted_batch

TAKEOVER_S = 4.0  # the test's MLOPS_TAKEOVER_S


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_bot_leads_and_another_takes_over_when_its_lease_runs_out(postgres_url: str):
    stores = [Store(postgres_url), Store(postgres_url)]
    ticks = Ticks()
    first, second = (LeaseLeader(store, takeover_s=2.0, holder=name, monotonic=ticks)
                     for store, name in zip(stores, ("first", "second")))
    changes: list[tuple[str, bool]] = []
    first._on_change = lambda leading: changes.append(("first", leading))
    second._on_change = lambda leading: changes.append(("second", leading))
    try:
        assert first.step() and first.term == 1
        assert not second.step()  # standing by
        assert first.step()  # renewed
        time.sleep(2.0 * 0.7 + 1.1)  # the first stops renewing (it died); its lease runs out
        assert second.step() and second.term == 2
        ticks.now += 0.5
        assert not first.step()  # back from the dead: its renewal is refused, it stands by
        assert changes == [("first", True), ("second", True), ("first", False)]
        second.stop()  # hands the lease back: the first takes it at once
        assert first.step() and first.term == 3
    finally:
        first.stop()
        for store in stores:
            store.close()


def test_a_leader_that_cannot_renew_stops_leading_before_its_lease_can_expire(postgres_url: str):
    store = Store(postgres_url)
    ticks = Ticks()
    leader = LeaseLeader(store, takeover_s=10.0, holder="me", monotonic=ticks)
    try:
        assert leader.step()
        ticks.now += 10.0 * 0.7 * 0.89
        assert leader.leading()
        ticks.now += 10.0 * 0.7 * 0.02  # past 90% of the lease on its own clock, renewed or not
        assert not leader.leading()
    finally:
        leader.stop()
        store.close()


def test_on_sqlite_the_bot_leads_alone(tmp_path: Path):
    store = Store.for_path(tmp_path / "state.db")
    try:
        leadership = leadership_for(store, takeover_s=30)
        assert isinstance(leadership, SoleLeader) and leadership.leading()
    finally:
        store.close()


# --- two real bots -------------------------------------------------------------------------------


class Bot:
    """``mlops-bot run`` in a process of its own, its log lines kept with the time they came."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env, cwd=cwd,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip()))

    def wait_for(self, text: str, timeout: float) -> float:
        """When a line with ``text`` came (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if text in line:
                    return at
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name} never logged {text!r}:\n" + self.log()[-4000:])

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _query(engine: sa.Engine, query: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(query)).all()


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_the_standby_takes_over_when_the_leader_is_killed_and_nothing_is_lost_or_repeated(
        make_app, repo: Path, tmp_path: Path, postgres_url: str):
    app = make_app(state_url=postgres_url)  # migrates the database; the scenario's inputs go in it
    for number in range(2):
        drifted_batch(app, f"b{number}.csv", shift=3.0 + number, seed=number)
    for number, body in enumerate(["/status", "/validate", "/help", "/retrian", "/status"]):
        app.scm.add_comment(Target("change", app.scm.repo, 40 + number), body)
    data_dir = app.settings.data_dir
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
           "MLOPS_STATE_URL": postgres_url, "MLOPS_PROJECT_DIR": str(repo / PROJECT), "MLOPS_DATA_DIR": str(data_dir),
           "MLOPS_TAKEOVER_S": str(TAKEOVER_S), "MLOPS_POLL_INTERVAL_S": "0.5", "MLOPS_MONITOR_INTERVAL_S": "1",
           "MLOPS_DELIVER_INTERVAL_S": "0.3", "MLOPS_DRIFT_COOLDOWN_S": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    leader = Bot("the first bot", env, tmp_path)
    standby = None
    try:
        leader.wait_for("now leading (term 1", timeout=120)
        standby = Bot("the second bot", env, tmp_path)
        standby.wait_for("standing by", timeout=120)
        # Kill the leader in the middle of its work: some effects done, more owed.
        _wait_until(lambda: _query(engine, "SELECT count(*) FROM effects WHERE status = 'done'")[0][0] >= 2,
                    timeout=180, what="the leader to deliver some effects")
        leader.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.process.wait(timeout=30)
        done_at_kill, owed_at_kill = _query(engine, "SELECT count(*) FILTER (WHERE status = 'done'), count(*)"
                                                    " FROM effects")[0]
        took_over = standby.wait_for("now leading (term 2", timeout=TAKEOVER_S * 5) - killed
        assert took_over <= TAKEOVER_S, f"the standby took {took_over:.2f} s to take over (at most {TAKEOVER_S} s)"
        print(f"\nthe standby took over {took_over:.2f} s after the leader was killed (MLOPS_TAKEOVER_S={TAKEOVER_S}), "
              f"with {done_at_kill} of {owed_at_kill} effects done")

        # New work after the takeover reaches the new leader too.
        app.scm.add_comment(Target("change", app.scm.repo, 50), "/status")
        app.scm.add_comment(Target("change", app.scm.repo, 51), "/retrian")

        quiet_since: list = []

        def settled() -> bool:
            """Nothing pending, the new comments answered, both batches checked, no new effect for a while."""
            pending, effects = _query(engine, "SELECT count(*) FILTER (WHERE status = 'pending'), count(*)"
                                              " FROM effects")[0]
            answered = _query(engine, "SELECT count(DISTINCT number) FROM local_comments"
                                      " WHERE by_bot AND number IN (50, 51)")[0][0]
            checked = _query(engine, "SELECT count(*) FROM state WHERE namespace = 'batches'")[0][0]
            state = (pending == 0 and answered == 2 and checked == 2, effects)
            if not quiet_since or quiet_since[1] != state:
                quiet_since[:] = [time.monotonic(), state]
            return state[0] and time.monotonic() - quiet_since[0] > 3
        _wait_until(settled, timeout=240, what="the new leader to finish the work")
        standby.process.send_signal(signal.SIGTERM)
        standby.process.wait(timeout=60)
        assert standby.process.returncode == 0, standby.log()[-3000:]
        assert "handed the lead back" in standby.log()
    finally:
        for bot in (leader, standby):
            if bot is not None and bot.process.poll() is None:
                bot.process.kill()
                bot.process.wait()

    not_done = _query(engine, "SELECT key, status, last_error FROM effects WHERE status != 'done'")
    bot_comments = [row.body for row in _query(engine, "SELECT body FROM local_comments WHERE by_bot")]
    ticket_comments = [row.body for row in _query(engine, "SELECT body FROM local_ticket_comments")]
    chat = _query(engine, "SELECT channel, thread, marker FROM local_chat")
    tickets = _query(engine, "SELECT key, state FROM local_tickets")
    events = _query(engine, "SELECT count(*) FROM events")[0][0]
    print(f"{events} events, {len(_query(engine, 'SELECT id FROM effects'))} effects, each done once")
    engine.dispose()
    assert not_done == []
    markers = Counter(body.rsplit("<!-- mlops-bot:", 1)[-1] for body in bot_comments + ticket_comments)
    assert [m for m, n in markers.items() if n > 1] == []  # no comment twice
    chat_markers = Counter((row.channel, row.thread, row.marker) for row in chat)
    assert [m for m, n in chat_markers.items() if n > 1] == []  # no chat message twice
    assert len(tickets) == 1  # one drift episode, one ticket
    assert sum("Did you mean" in body for body in bot_comments) == 2  # each typo answered once
    assert events >= 7 + 2  # every comment and batch was seen
    from pipeline.registry import ModelRegistry

    runs = Counter(version.run_id for version in ModelRegistry(data_dir / "registry").versions())
    assert runs and all(n == 1 for n in runs.values())  # no pipeline run made two models


def test_run_once_does_nothing_while_another_bot_leads(make_app, postgres_url: str):
    from bot.scheduler import AnotherBotLeads, run_once

    app = make_app(state_url=postgres_url)
    other = LeaseLeader(app.store, takeover_s=30, holder="the running bot")
    assert other.step()
    try:
        with pytest.raises(AnotherBotLeads, match=r"another mlops-bot leads state database .* \(the running bot\)"):
            run_once(app)
        assert app.store.events() == []
    finally:
        other.stop()  # hands the lead back: now --once leads for its run
    assert run_once(app)["effects"] >= 1
    assert app.store.lease("mlops-bot").expires_at <= app.store.lease("mlops-bot").now  # and hands it back
