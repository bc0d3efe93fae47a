"""Several bots that all work on one PostgreSQL database (MLOPS_WORK_SHARING=lanes): lanes claimed
and delivered in parallel, each in order, each effect once; a killed or paused worker's lanes pass
on with a new token, and what it did is found before anything is repeated."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
import sqlalchemy as sa

from bot.outbox import DeliveryReport
from bot.store import ClaimFence, LostClaim, Store
from bot.workers import LaneWorker
from tests.test_outbox import FakeChat, ScriptedHandler, StillClock, make_outbox, owe
from tests.test_standby import Ticks


@pytest.fixture
def clock() -> StillClock:
    return StillClock()


@pytest.fixture
def chat() -> FakeChat:
    return FakeChat()


def run_out_worker(url: str, holder: str) -> None:
    """What the database's clock does to a worker's row while the worker is stopped: it runs out."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE workers SET expires_at = started_at WHERE holder = :holder"),
                         {"holder": holder})
    finally:
        engine.dispose()


class Workers:
    """``count`` workers, each with a store of its own (as in its own process), all joined."""

    def __init__(self, url: str, clock, count: int, *, lanes_per_round: int = 10, takeover_s: float = 60) -> None:
        self.stores = [Store(url, clock=clock) for _ in range(count)]
        self.workers = [LaneWorker(store, takeover_s=takeover_s, lanes_per_round=lanes_per_round)
                        for store in self.stores]
        for worker in self.workers:
            assert worker.step()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for store in self.stores:
            store.close()


@pytest.fixture
def two(postgres_url, clock):
    workers = Workers(postgres_url, clock, 2, lanes_per_round=2)
    yield workers
    workers.close()


def test_a_lane_held_by_a_working_worker_is_not_delivered_by_another(two, chat, clock):
    (first, second), (first_store, second_store) = two.workers, two.stores
    owe(first_store, "a1", "a2", lane="a")
    owe(first_store, "b1", lane="b")
    owe(first_store, "c1", "c2", lane="c")
    seen_by_second: list[str] = []

    class SecondWorksMeanwhile(ScriptedHandler):
        def deliver(self, effect):
            if not seen_by_second:  # while the first delivers its first round (lanes a and b)
                handler = ScriptedHandler(chat)
                make_outbox(second_store, handler, clock).deliver_due(fence=second.fence())
                seen_by_second.extend(handler.calls)
            return super().deliver(effect)

    report = make_outbox(first_store, SecondWorksMeanwhile(chat), clock).deliver_due(fence=first.fence())
    assert seen_by_second == ["deliver c1", "deliver c2"]  # lane c only: a and b were the first's
    assert report == DeliveryReport(delivered=3)
    texts = [write.split(" <!--")[0] for write in chat.writes]
    assert sorted(texts) == sorted(f"text of {key}" for key in ("a1", "a2", "b1", "c1", "c2"))
    assert texts.index("text of a1") < texts.index("text of a2")
    assert texts.index("text of c1") < texts.index("text of c2")
    # Lanes with nothing due are released at the end of a round: nobody holds any now.
    assert first.fence().claims == {} and second.fence().claims == {}
    assert [row.lanes for row in first_store.workers()] == [0, 0]


def test_a_pipeline_run_is_a_round_of_its_own_and_its_worker_holds_no_other_lane_meanwhile(two, chat, clock):
    from bot.outbox import Outbox
    from bot.store import NewEffect
    from bot.workers import LONG_KINDS

    (first, second), (first_store, second_store) = two.workers, two.stores
    assert "pipeline.run" in LONG_KINDS
    first_store.add_effects("merge", [NewEffect("pipeline:r1", "pipeline.run", {"text": "run"}, "pipeline:m")])
    owe(first_store, "a1", lane="a")
    owe(first_store, "b1", lane="b")
    meanwhile: list[str] = []

    class LongRun(ScriptedHandler):
        def deliver(self, effect):
            # minutes of training: the first worker holds the run's lane alone, the second takes the rest
            assert first.fence().claims == {"pipeline:m": 1}
            handler = ScriptedHandler(chat)
            make_outbox(second_store, handler, clock).deliver_due(fence=second.fence())
            meanwhile.extend(handler.calls)
            return super().deliver(effect)

    chat_handler = ScriptedHandler(chat)
    box = Outbox(first_store, {"pipeline.run": LongRun(chat), "chat.post": chat_handler}, ingest=lambda event: None,
                 clock=clock, jitter=lambda: 0.5)
    assert box.deliver_due(fence=first.fence()) == DeliveryReport(delivered=1)
    assert meanwhile == ["deliver a1", "deliver b1"]
    assert chat_handler.calls == []


def test_a_killed_workers_lanes_pass_on_after_its_row_runs_out_and_its_effect_is_looked_for(
        two, chat, clock, postgres_url):
    (first, second), (first_store, second_store) = two.workers, two.stores
    owe(first_store, "a1", "a2", lane="a")
    begun = first_store.next_round(fence=first.fence())  # the first marks a1 and dies during it
    assert [effect.key for effect in begun] == ["a1"] and first.fence().claims == {"a": 1}
    handler = ScriptedHandler(chat)
    assert make_outbox(second_store, handler, clock).deliver_due(fence=second.fence()) == DeliveryReport()
    run_out_worker(postgres_url, first.holder)
    assert make_outbox(second_store, handler, clock).deliver_due(fence=second.fence()) == DeliveryReport(delivered=2)
    assert handler.calls == ["find_done a1", "deliver a1", "deliver a2"]  # looked for before it was repeated
    claims = dict(sa.create_engine(postgres_url, poolclass=sa.pool.NullPool).connect().execute(
        sa.text("SELECT lane, token FROM lane_claims")).all())
    assert claims == {"a": 2}  # taken over with the lane's next token


def test_a_worker_paused_past_its_row_stores_nothing_and_the_next_finds_what_it_did(
        two, chat, clock, postgres_url, caplog):
    (paused, other), (paused_store, other_store) = two.workers, two.stores
    owe(paused_store, "a1", "a2", lane="a")
    fence = paused.fence()

    class PausedAfterWriting(ScriptedHandler):
        def deliver(self, effect):
            delivered = super().deliver(effect)  # the outside write is made; then the process stops
            run_out_worker(postgres_url, paused.holder)  # while it is stopped, its row runs out
            return delivered  # and it wakes up, believing it still works

    with pytest.raises(LostClaim), caplog.at_level(logging.WARNING, logger="mlops_bot.outbox"):
        make_outbox(paused_store, PausedAfterWriting(chat), clock).deliver_due(fence=fence)
    assert "effect(s) a1 left for the new leader" in caplog.text
    assert not paused_store.seen("nothing") and paused_store.effect("a1").status == "pending"
    paused.lost(fence)
    assert not paused.leading()
    handler = ScriptedHandler(chat)
    assert make_outbox(other_store, handler, clock).deliver_due(fence=other.fence()) \
        == DeliveryReport(delivered=1, recovered=1)
    assert handler.calls == ["find_done a1", "deliver a2"]
    assert [write.split(" <!--")[0] for write in chat.writes] == ["text of a1", "text of a2"]  # a1 once
    assert paused.step() and paused.holder != fence.holder  # it joins again, under a new name


def test_a_lane_taken_over_refuses_the_old_holders_write_even_if_its_row_was_renewed(two, clock, postgres_url):
    (first, second), (first_store, second_store) = two.workers, two.stores
    owe(first_store, "a1", lane="a")
    stale = first.fence()
    first_store.next_round(fence=stale)
    run_out_worker(postgres_url, first.holder)
    second_store.next_round(fence=second.fence())  # lane a, token 2
    with pytest.raises(LostClaim, match="no longer holds lane"):
        # as if its row had been renewed meanwhile: the lane's token still says another holds it
        first_store.engine.dispose()
        with sa.create_engine(postgres_url, poolclass=sa.pool.NullPool).begin() as conn:
            conn.execute(sa.text("UPDATE workers SET expires_at = now() + interval '1 minute' WHERE holder = :h"),
                         {"h": stale.holder})
        first_store.finish_attempts({first_store.effect("a1").id: {}}, fence=stale)
    assert first_store.effect("a1").status == "pending"


def test_each_interval_of_a_job_is_run_by_one_worker(two):
    first, second = two.workers
    assert [worker.may_run("poll", 3600) for worker in (first, second, first)] == [True, False, False]
    assert first.may_run("monitor", 3600)  # each job has intervals of its own


def test_a_worker_that_cannot_renew_stops_working_before_its_row_can_run_out(postgres_url):
    store = Store(postgres_url)
    ticks = Ticks()
    worker = LaneWorker(store, takeover_s=10.0, monotonic=ticks)
    try:
        assert worker.step()
        ticks.now += 10.0 * 0.7 * 0.89
        assert worker.leading()
        ticks.now += 10.0 * 0.7 * 0.02
        assert not worker.leading()
        assert worker.fence().claims == {}
    finally:
        worker.stop()
        store.close()


def test_a_worker_that_stops_leaves_and_frees_its_lanes_at_once(postgres_url, clock):
    workers = Workers(postgres_url, clock, 2)
    try:
        (first, second), (first_store, second_store) = workers.workers, workers.stores
        owe(first_store, "a1", lane="a")
        first_store.next_round(fence=first.fence())
        first.stop()
        assert [row.holder for row in second_store.workers()] == [second.holder]
        assert [effect.key for effect in second_store.next_round(fence=second.fence())] == ["a1"]
    finally:
        workers.close()


def test_three_workers_deliver_many_lanes_at_once_each_effect_once_and_each_lane_in_order(postgres_url, clock):
    workers = Workers(postgres_url, clock, 3, lanes_per_round=4)
    written: list[tuple[str, str]] = []  # (worker, key), in the order written
    lock = threading.Lock()
    lanes, per_lane = 24, 5
    keys = [[f"l{lane}-{n}" for n in range(per_lane)] for lane in range(lanes)]
    for lane, lane_keys in enumerate(keys):
        owe(workers.stores[0], *lane_keys, lane=f"l{lane}")

    class Recorder(ScriptedHandler):
        def __init__(self, name):
            super().__init__(FakeChat())
            self.name = name

        def deliver(self, effect):
            time.sleep(random.uniform(0, 0.004))  # a call to a service
            with lock:
                written.append((self.name, effect.key))
            return super().deliver(effect)

    def work(index: int) -> None:
        box = make_outbox(workers.stores[index], Recorder(f"w{index}"), clock)
        while box.deliver_due(fence=workers.workers[index].fence()) != DeliveryReport():
            pass

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        order = [key for _, key in written]
        assert sorted(order) == sorted(key for lane_keys in keys for key in lane_keys)  # each once
        for lane_keys in keys:
            assert [key for key in order if key in lane_keys] == lane_keys  # each lane in order
        by_worker = defaultdict(int)
        for name, _ in written:
            by_worker[name] += 1
        assert len(by_worker) >= 2, by_worker  # shared, not one doing it all
        assert all(store.effect(keys[0][0]).status == "done" for store in workers.stores[:1])
    finally:
        workers.close()


def test_on_sqlite_lanes_mode_is_the_one_bot_working_alone(tmp_path):
    from bot.leader import SoleLeader, leadership_for

    store = Store.for_path(tmp_path / "state.db")
    try:
        assert isinstance(leadership_for(store, takeover_s=30, sharing="lanes"), SoleLeader)
    finally:
        store.close()


def test_an_unregistered_worker_may_store_nothing(postgres_url, clock):
    store = Store(postgres_url, clock=clock)
    try:
        owe(store, "a1", lane="a")
        with pytest.raises(LostClaim, match="is gone"):
            store.next_round(fence=ClaimFence("never-joined"))
        assert store.effect("a1").outcome_unknown is False
    finally:
        store.close()


class Crew:
    """Worker processes (``mlops-bot run``, tests/standby.py's ``Bot``), started, replaced and stopped; as a
    context, none is left running."""

    def __init__(self, env: dict[str, str], cwd, count: int) -> None:
        from tests.standby import Bot

        self.env, self.cwd = env, cwd
        self.started = [Bot(f"worker {n}", env, cwd) for n in range(count)]
        self.live = list(self.started)

    def replace(self, victim) -> None:
        """``victim`` is dead: a new worker takes its place, as an orchestrator would start one."""
        from tests.standby import Bot

        self.live.remove(victim)
        replacement = Bot(f"worker {len(self.started)}", self.env, self.cwd)
        self.started.append(replacement)
        self.live.append(replacement)

    def stop(self) -> None:
        """SIGTERM to each live worker: each finishes its effect in flight and exits cleanly."""
        import signal

        for bot in self.live:
            bot.process.send_signal(signal.SIGTERM)
        for bot in self.live:
            bot.process.wait(timeout=60)
            assert bot.process.returncode == 0, bot.log()[-3000:]

    def __enter__(self) -> Crew:
        return self

    def __exit__(self, *_exc: object) -> None:
        for bot in self.started:
            if bot.process.poll() is None:
                bot.process.kill()
                bot.process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stopped_by", ["SIGKILL", "SIGSTOP"], ids=["killed", "paused-past-its-row"])
def test_three_workers_share_the_work_and_random_stops_lose_nothing_and_double_nothing(
        make_app, repo, tmp_path, postgres_url, stopped_by):
    """Three `mlops-bot run` processes with MLOPS_WORK_SHARING=lanes on one PostgreSQL database. A
    random worker is stopped three times while they work, new comments coming all along: SIGKILLed
    (and replaced, as an orchestrator would), or paused with SIGSTOP past its row and resumed, when it
    wakes up in the middle of whatever it was doing. In the end every effect is done once, and each
    comment was answered once."""
    import signal

    from integrations.ports import Target
    from tests.conftest import PROJECT
    from tests.standby import bot_env, delivered, query, settled, wait_until
    from tests.test_bot import drifted_batch

    app = make_app(state_url=postgres_url)  # migrates the database; the scenario's inputs go in it
    for number in range(2):
        drifted_batch(app, f"b{number}.csv", shift=3.0 + number, seed=number)
    bodies = ["/status", "/validate", "/help", "/retrian", "/status", "/drift", "/help", "/retrian"]
    for number, body in enumerate(bodies):
        app.scm.add_comment(Target("change", app.scm.repo, 40 + number), body)
    data_dir = app.settings.data_dir
    env = bot_env(postgres_url, project_dir=repo / PROJECT, data_dir=data_dir, takeover_s=4.0, sharing="lanes")
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    rng = random.Random(17)
    with Crew(env, tmp_path, 3) as crew:
        for bot in crew.live:
            bot.wait_for("working as", timeout=120)
        for kill in range(3):
            done = query(engine, "SELECT count(*) FROM effects WHERE status = 'done'")[0][0]
            wait_until(lambda: query(engine, "SELECT count(*) FROM effects WHERE status = 'done'")[0][0] > done,
                       timeout=180, what="the workers to deliver more effects")
            victim = rng.choice(crew.live)
            victim.process.send_signal(getattr(signal, stopped_by))
            stopped = time.monotonic()
            app.scm.add_comment(Target("change", app.scm.repo, 60 + kill), "/status")
            app.scm.add_comment(Target("change", app.scm.repo, 70 + kill), "/retrian")
            if stopped_by == "SIGKILL":
                victim.process.wait(timeout=30)
                crew.replace(victim)
                crew.live[-1].wait_for("working as", timeout=120)
            else:
                time.sleep(4.0 * 0.7 + 1.5)  # past its row's life: the others take its lanes over
                victim.process.send_signal(signal.SIGCONT)
                victim.wait_for("stopped working", timeout=60, after=stopped)
                victim.wait_for("working as", timeout=60, after=stopped)  # and it joins again

        wait_until(settled(engine, answered_where="number >= 60", answered=6), timeout=300,
                   what="the workers to finish the work")
        shown = subprocess.run([sys.executable, "-m", "bot", "status"], env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)
        assert "workers: 3 sharing the work" in shown.stdout, shown.stdout + shown.stderr
        crew.stop()
        assert all("left: its lanes are free for the others at once" in bot.log() for bot in crew.live)

    done = delivered(engine, data_dir)
    polled_by = {row.holder for row in query(engine, "SELECT holder FROM job_claims WHERE job = 'poll'")}
    assert polled_by  # the polls were claimed, one worker per interval
    workers_that_delivered = [bot.name for bot in crew.started
                              if " delivered" in bot.log() or " recovered" in bot.log()]
    print(f"\n{done.events} events, {done.effects} effects, each done once; delivered by "
          f"{', '.join(workers_that_delivered)}")
    engine.dispose()
    assert done.not_done == []
    assert done.doubled == []  # no comment, chat message, ticket or model made twice
    assert len(done.tickets) == 1  # one drift episode, one ticket
    assert sum("Did you mean" in body for body in done.bot_comments) == 2 + 3  # each typo answered once
    assert len(workers_that_delivered) >= 2  # the work was shared


def test_bots_set_to_share_the_work_differently_never_work_side_by_side(postgres_url, clock, caplog):
    """One bot with MLOPS_WORK_SHARING=leader, another with lanes, on one database: each waits for the
    other and says why; and if both started in the same instant, the store refuses either's writes."""
    from bot.leader import LeaseLeader

    stores = [Store(postgres_url, clock=clock) for _ in range(3)]
    leader = LeaseLeader(stores[0], takeover_s=60, holder="the leader")
    worker = LaneWorker(stores[1], takeover_s=60)
    try:
        assert leader.step()
        with caplog.at_level(logging.ERROR, logger="mlops_bot.workers"):
            assert not worker.step() and not worker.step()
        assert caplog.text.count("the leader leads this state database alone (MLOPS_WORK_SHARING=leader): this bot "
                                 "waits") == 1
        leader.stop()  # hands the lead back: the worker joins
        assert worker.step()
        second = LeaseLeader(stores[2], takeover_s=60, holder="a second leader")
        with caplog.at_level(logging.ERROR, logger="mlops_bot.leader"):
            assert not second.step()
        assert "1 worker(s) share the work of this state database (MLOPS_WORK_SHARING=lanes)" in caplog.text

        # Both in the same instant: a lease taken beside a joined worker. Neither may store its work.
        stores[2].take_lease("mlops-bot", "a second leader", ttl_s=60)
        owe(stores[1], "a1", lane="a")
        with pytest.raises(LostClaim, match="leads this database alone"):
            stores[1].next_round(fence=worker.fence())
        lease = stores[2].lease("mlops-bot")
        from bot.store import Fence, LostLease

        with pytest.raises(LostLease, match="shares the work of this database"):
            stores[2].set_cursor("github:comments", "c1", fence=Fence("mlops-bot", lease.holder, lease.term))
        assert stores[1].effect("a1").outcome_unknown is False and stores[2].cursor("github:comments") is None
    finally:
        worker.stop()
        for store in stores:
            store.close()


def test_run_once_works_beside_the_workers_as_one_of_them(make_app, postgres_url):
    """`mlops-bot run --once` (cron) on a database that workers share: it joins them for its run, does
    its part, and leaves; beside a bot that leads alone it does nothing and says why."""
    from bot.leader import LeaseLeader
    from bot.scheduler import AnotherBotLeads, run_once
    from integrations.ports import Target

    app = make_app(state_url=postgres_url)  # lanes: the default on PostgreSQL
    assert app.settings.work_sharing == "lanes"
    app.scm.add_comment(Target("change", app.scm.repo, 41), "/help")
    other_store = Store(postgres_url)
    other = LaneWorker(other_store, takeover_s=60)
    try:
        assert other.step()
        assert run_once(app)["effects"] >= 1
        assert [row.holder for row in app.store.workers()] == [other.holder]  # it joined, and left
    finally:
        other.stop()
        other_store.close()
    leader = LeaseLeader(app.store, takeover_s=60, holder="a bot set to lead alone")
    try:
        assert leader.step()
        with pytest.raises(AnotherBotLeads, match="another mlops-bot leads state database"):
            run_once(app)
    finally:
        leader.stop()


def test_doctor_says_how_the_bots_share_the_work_and_names_a_bot_set_otherwise(repo, tmp_path, monkeypatch,
                                                                               postgres_url):
    from click.testing import CliRunner

    from bot.cli import cli
    from bot.leader import LeaseLeader
    from tests.conftest import PROJECT, seed_embedded_mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(repo / PROJECT))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_STATE_URL", postgres_url)
    seed_embedded_mlflow(tmp_path / "state")
    store = Store(postgres_url)
    worker = LaneWorker(store, takeover_s=60)
    try:
        assert worker.step()
        healthy = CliRunner().invoke(cli, ["doctor"])
        assert "✓ state database (MLOPS_WORK_SHARING=lanes: 1 worker(s) at work)" in healthy.output, healthy.output
        monkeypatch.setenv("MLOPS_WORK_SHARING", "leader")
        mixed = CliRunner().invoke(cli, ["doctor"])
        assert mixed.exit_code == 1 and "Traceback" not in mixed.output
        assert ("✗ state database (one bot leads): 1 worker(s) share its work (MLOPS_WORK_SHARING=lanes): this bot "
                "would stand by\n    fix: give every bot on the database the same MLOPS_WORK_SHARING (this one: "
                "leader)") in mixed.output
        worker.stop()
        leader = LeaseLeader(store, takeover_s=60, holder="the leader")
        assert leader.step()
        monkeypatch.setenv("MLOPS_WORK_SHARING", "lanes")
        assert "✗ state database (work shared by lanes): the leader leads it alone" in \
            CliRunner().invoke(cli, ["doctor"]).output
        leader.stop()
    finally:
        worker.stop()
        store.close()


@pytest.mark.slow
def test_three_workers_serving_three_model_projects_lose_nothing_and_double_nothing_through_random_kills(
        tmp_path, postgres_url, monkeypatch):
    """Three workers started in a repository of three model projects (MLOPS_PROJECT_DIR unset) on one
    PostgreSQL database: each project's first model, a merge touching two projects, drift in two, and
    commands naming a project or none, while random workers are SIGKILLed and replaced. Every effect
    is done once, each drifted project has one ticket, and the bare /retrain is asked about once."""
    import io
    import signal

    from bot.app import build
    from bot.settings import Settings
    from tests.conftest import FakeClock, seed_embedded_mlflow
    from tests.standby import REPO, delivered, query, settled, wait_until
    from tests.test_monorepo import PROJECTS, _monorepo, work_on_two_projects

    repo = _monorepo(tmp_path / "repo")
    data_dir = tmp_path / "state"
    seed_embedded_mlflow(data_dir)
    monkeypatch.chdir(repo)
    app = build(Settings(data_dir=data_dir, state_url=postgres_url, drift_cooldown_s=0), clock=FakeClock(),
                out=io.StringIO())  # migrates the database; the scenario's inputs go in it
    assert sorted(app.router.lifecycles) == sorted(PROJECTS)
    app.poll()  # where the repository's history starts for the bots (and each project's first model, owed)
    work_on_two_projects(app, repo)
    app.store.close()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
           "MLOPS_STATE_URL": postgres_url, "MLOPS_DATA_DIR": str(data_dir), "MLOPS_TAKEOVER_S": "4",
           "MLOPS_POLL_INTERVAL_S": "0.5", "MLOPS_MONITOR_INTERVAL_S": "1", "MLOPS_DELIVER_INTERVAL_S": "0.3",
           "MLOPS_DRIFT_COOLDOWN_S": "0", "MLOPS_WORK_SHARING": "lanes",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    rng = random.Random(23)
    with Crew(env, repo, 3) as crew:
        for _ in range(3):
            done = query(engine, "SELECT count(*) FROM effects WHERE status = 'done'")[0][0]
            wait_until(lambda: query(engine, "SELECT count(*) FROM effects WHERE status = 'done'")[0][0] > done,
                       timeout=300, what="the workers to deliver more effects")
            victim = rng.choice(crew.live)
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=30)
            crew.replace(victim)
        wait_until(settled(engine, answered_where="number = 2", answered=1, quiet_s=5), timeout=600,
                   what="the workers to finish the work")
        crew.stop()

    done = delivered(engine, data_dir)
    engine.dispose()
    assert done.not_done == []
    assert done.doubled == []  # no comment, chat message, ticket or model made twice
    assert sorted(key for key, state in done.tickets if state == "open") == ["retrain:churn", "retrain:fraud"]
    assert sum("several model projects" in body for body in done.bot_comments) == 1  # the bare /retrain
    from collections import Counter

    from tests.conftest import open_embedded_registry

    versions = Counter(version.model for version in open_embedded_registry(data_dir).versions())
    print(f"\n{done.events} events, {done.effects} effects, each done once; model versions {dict(versions)}")
    # Each project's first model; the merge ran the two projects it touched (and only those).
    assert versions["churn"] == 2 and versions["fraud"] >= 2 and versions["demand"] == 1
