"""Two bots on one PostgreSQL database: one leads, the other stands by and takes over when the
leader dies, carrying on from the stored cursors and outbox with nothing lost or repeated."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.leader import LeaseLeader, SoleLeader, leadership_for
from bot.store import LostLease, Store
from integrations.ports import Target
from tests.conftest import PROJECT
from tests.standby import Bot, bot_env, delivered, run_out_lease, settled
from tests.standby import query as _query
from tests.standby import wait_until as _wait_until
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
        leadership = leadership_for(store, takeover_s=30, sharing="leader")
        assert isinstance(leadership, SoleLeader) and leadership.leading()
    finally:
        store.close()


# --- two real bots -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stopped_by", ["SIGKILL", "SIGSTOP"], ids=["killed", "paused-past-its-lease"])
def test_the_standby_takes_over_when_the_leader_dies_or_stalls_and_nothing_is_lost_or_repeated(
        make_app, repo: Path, tmp_path: Path, postgres_url: str, stopped_by: str):
    """Killed (SIGKILL), or paused (SIGSTOP) past its lease and then resumed (SIGCONT) while the
    new leader works: the paused one wakes up in the middle of whatever it was doing, and must find
    the lead gone before it stores or repeats anything."""
    # Migrates the database; the scenario's inputs go in it.
    app = make_app(state_url=postgres_url, work_sharing="leader")
    for number in range(2):
        drifted_batch(app, f"b{number}.csv", shift=3.0 + number, seed=number)
    for number, body in enumerate(["/status", "/validate", "/help", "/retrian", "/status"]):
        app.scm.add_comment(Target("change", app.scm.repo, 40 + number), body)
    data_dir = app.settings.data_dir
    env = bot_env(postgres_url, project_dir=repo / PROJECT, data_dir=data_dir, takeover_s=TAKEOVER_S)
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
        leader.process.send_signal(getattr(signal, stopped_by))
        killed = time.monotonic()
        if stopped_by == "SIGKILL":
            leader.process.wait(timeout=30)
        done_at_kill, owed_at_kill = _query(engine, "SELECT count(*) FILTER (WHERE status = 'done'), count(*)"
                                                    " FROM effects")[0]
        took_over = standby.wait_for("now leading (term 2", timeout=TAKEOVER_S * 5) - killed
        print(f"\nthe standby took over {took_over:.2f} s after the leader was stopped by {stopped_by} "
              f"(MLOPS_TAKEOVER_S={TAKEOVER_S}), with {done_at_kill} of {owed_at_kill} effects done")
        if stopped_by == "SIGSTOP":
            time.sleep(1.0)  # the new leader at work
            leader.process.send_signal(signal.SIGCONT)
            leader.wait_for("no longer leading (term 1", timeout=60, after=killed)

        # New work after the takeover reaches the new leader too.
        app.scm.add_comment(Target("change", app.scm.repo, 50), "/status")
        app.scm.add_comment(Target("change", app.scm.repo, 51), "/retrian")

        _wait_until(settled(engine, answered_where="number IN (50, 51)", answered=2), timeout=240,
                    what="the new leader to finish the work")
        if stopped_by == "SIGSTOP":  # it stood by since, and stops cleanly
            assert "now leading (term" not in leader.log().split("no longer leading (term 1", 1)[1]
            leader.process.send_signal(signal.SIGTERM)
            leader.process.wait(timeout=60)
            assert leader.process.returncode == 0, leader.log()[-3000:]
        standby.process.send_signal(signal.SIGTERM)
        standby.process.wait(timeout=60)
        assert standby.process.returncode == 0, standby.log()[-3000:]
        assert "handed the lead back" in standby.log()
    finally:
        for bot in (leader, standby):
            if bot is not None and bot.process.poll() is None:
                bot.process.kill()
                bot.process.wait()

    done = delivered(engine, data_dir)
    print(f"{done.events} events, {done.effects} effects, each done once")
    engine.dispose()
    assert done.not_done == []
    assert done.doubled == []  # no comment, chat message, ticket or model made twice
    assert len(done.tickets) == 1  # one drift episode, one ticket
    assert sum("Did you mean" in body for body in done.bot_comments) == 2  # each typo answered once
    assert done.events >= 7 + 2  # every comment and batch was seen
    assert done.runs  # and no pipeline run made two models (in doubled)


def test_run_once_does_nothing_while_another_bot_leads(make_app, postgres_url: str):
    from bot.scheduler import AnotherBotLeads, run_once

    app = make_app(state_url=postgres_url, work_sharing="leader")
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


def test_run_once_paused_past_its_lease_stops_without_storing_what_it_did(make_app, postgres_url: str):
    from bot.scheduler import AnotherBotLeads, run_once

    app = make_app(state_url=postgres_url, work_sharing="leader")
    other = LeaseLeader(app.store, takeover_s=30, holder="the bot that took over")
    polled = app.poll

    def poll_then_pause(*, fence=None) -> int:
        found = polled(fence=fence)
        # The process stops here (SIGSTOP) past its lease; meanwhile another bot takes it over.
        run_out_lease(postgres_url)
        assert other.step()
        return found

    app.poll = poll_then_pause
    try:
        with pytest.raises(AnotherBotLeads, match=r"another mlops-bot took over state database .* during the run"):
            run_once(app)
        owed = app.store.effects()
        assert owed and all(e.status == "pending" and e.attempts == 0 for e in owed)  # left for the new leader
        assert app.store.lease("mlops-bot").held_by("the bot that took over")  # the paused one did not end it
    finally:
        other.stop()


def test_a_leader_paused_past_its_lease_mid_poll_stores_none_of_it_and_its_successor_reads_it_all(
        make_app, postgres_url: str, monkeypatch):
    """The paused leader read the comments, then lost the lease: what it read is neither stored nor
    does its cursor move (a cursor written late would move back over what the successor read)."""
    app = make_app(state_url=postgres_url, work_sharing="leader")
    for number, body in enumerate(["/status", "/help"]):
        app.scm.add_comment(Target("change", app.scm.repo, 60 + number), body)
    paused = LeaseLeader(app.store, takeover_s=30, holder="the paused bot")
    successor = LeaseLeader(Store(postgres_url), takeover_s=30, holder="the bot that took over")
    read_comments = app.scm.new_comments

    def read_then_pause(cursor):
        found = read_comments(cursor)
        # The process stops here (SIGSTOP) past its lease; meanwhile another bot takes it over.
        run_out_lease(postgres_url)
        assert successor.step()
        return found

    try:
        assert paused.step()
        fence = paused.fence()
        monkeypatch.setattr(app.scm, "new_comments", read_then_pause)
        with pytest.raises(LostLease, match=r"was taken: the bot that took over \(term 2\) leads now"):
            app.poll(fence=fence)
        assert [e for e in app.store.events() if e.kind == "command"] == []
        assert app.store.cursor("local:comments") is None
        assert app.store.lease("mlops-bot").held_by("the bot that took over")

        monkeypatch.setattr(app.scm, "new_comments", read_comments)
        assert app.poll(fence=successor.fence()) >= 2  # the successor reads and stores them, once
        assert sorted(e.payload["comment"]["body"] for e in app.store.events() if e.kind == "command") == [
            "/help", "/status"]
        assert app.store.cursor("local:comments") is not None
    finally:
        successor.stop()
        paused.stop()
