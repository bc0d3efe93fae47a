"""Crashes: ``mlops-bot run`` (a real process, settings from the environment) killed with SIGKILL at
random moments of a scenario on GitHub, Azure Boards and Slack, and started again each time; in
the end every event is handled and every effect is in the emulators exactly once.

The kills land wherever the bot happens to be: starting up, polling, delivering an effect (its
answer lost with the process), training, checking drift. A few of the calls fail as well (5%), so
that restarts also meet effects in back-off and writes whose outcome is unknown.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from tests.reliability.world import audit, chatter, read_store

RUNS = 10  # kills, each in a fresh process
SECRET = "crash-webhook-secret"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("mlops-bot")
    return [str(script), "run"] if script.exists() else [sys.executable, "-m", "bot", "run"]


def _environment(world, state_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "GITHUB_", "SLACK_", "AZURE_DEVOPS_"))}
    return keep | world.env(state_url, MLOPS_POLL_INTERVAL_S="0.5", MLOPS_MONITOR_INTERVAL_S="1",
                            MLOPS_DELIVER_INTERVAL_S="0.3", MLOPS_TAKEOVER_S="2", MLOPS_LOG_LEVEL="INFO",
                            GITHUB_WEBHOOK_SECRET=SECRET, PYTHONUNBUFFERED="1")


class Bot:
    """``mlops-bot run`` in a subprocess, its stderr in a file."""

    def __init__(self, world, state_url: str):
        self.env, self.cwd = _environment(world, state_url), world.root
        self.logs = world.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.started = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.started += 1
        self.log = self.logs / f"run-{self.started:02d}.log"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(_command(), cwd=self.cwd, env=self.env, stdout=self._out,
                                        stderr=subprocess.STDOUT)

    def running(self, timeout_s: float = 60) -> bool:
        """Wait for the scheduler's "running" line (the jobs have started)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if b"mlops-bot running" in self.log.read_bytes():
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> bool:
        """SIGKILL; whether the process was still alive to be killed."""
        alive = self.process.poll() is None
        if alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._out.close()
        return alive

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        finally:
            self._out.close()
        return code

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("run-*.log")))


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _cursor_set(state_url: str) -> bool:
    engine = sa.create_engine(state_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("select count(*) from cursors where source = 'github:changes'")).scalar() == 1
    except sa.exc.DBAPIError:  # not created yet
        return False
    finally:
        engine.dispose()


def _settled(world, state_url: str) -> bool:
    """Nothing pending, and everything the scenario did is an event."""
    try:
        _events, effects = read_store(state_url)
        return not world.unseen(state_url) and bool(effects) and all(e["status"] != "pending" for e in effects)
    except sa.exc.DBAPIError:
        return False


def test_killed_again_and_again_the_bot_loses_nothing_and_doubles_nothing(world, state_url, report):
    started = time.monotonic()
    rng = random.Random(31)
    bot = Bot(world, state_url)
    # The first look sets the cursors (merges before it are history, not news) and trains the first model.
    bot.start()
    assert bot.running(), bot.output()[-3000:]
    _wait_for(lambda: _cursor_set(state_url), 60, "the first poll")
    world.fail_a_fifth(seed=40, rate=0.05)

    pulls = [world.open_pull(f"Change {n}", touches_project=n != 2) for n in range(4)]
    issues = [world.open_issue(f"Question {n}") for n in range(2)]
    targets = pulls + issues

    def talk(count: int) -> None:
        for _ in range(count):
            author, body = chatter(rng)
            world.comment(rng.choice(targets), author, body)

    script = [
        lambda: talk(8), lambda: world.merge(pulls[0]), lambda: talk(8),
        lambda: world.batch("b1.csv", shift=0.0, seed=1), lambda: world.comment(pulls[1], "bob", "/validate"),
        lambda: talk(8), lambda: world.batch("b2.csv", shift=2.5, seed=2), lambda: world.merge(pulls[1]),
        lambda: talk(8), lambda: world.comment(issues[0], "bob", "/drift"), lambda: world.merge(pulls[2]),
        lambda: world.comment(issues[0], "bob", "/retrain after the drift"), lambda: talk(8),
        lambda: world.batch("b3.csv", shift=3.0, seed=3), lambda: world.merge(pulls[3]), lambda: talk(8),
    ]
    kills, kill_points = 0, []
    for run in range(RUNS):
        if run:
            bot.start()
            if rng.random() < 0.2:  # now and then while it is still starting up
                time.sleep(rng.uniform(0.3, 2.0))
                kill_points.append("starting")
                kills += bot.kill()
                continue
            assert bot.running(), bot.output()[-3000:]
        for _ in range(2):  # the world moves on while the bot runs
            if script:
                script.pop(0)()
        time.sleep(rng.uniform(0.2, 3.0))
        kill_points.append("running")
        kills += bot.kill()
    while script:
        script.pop(0)()

    # The last run is left alone until it has caught up with everything.
    bot.start()
    assert bot.running(), bot.output()[-3000:]
    _wait_for(lambda: _settled(world, state_url), 120, "the bot to catch up")
    code = bot.stop()
    assert code == 0, bot.output()[-3000:]

    result = audit(world, state_url, world.data_dir)
    faults = world.faults_fired
    report(f"{result.line()}; faults injected {sum(faults.values())}, crashes {kills} (SIGKILL: "
           f"{kill_points.count('starting')} while starting, {kill_points.count('running')} while running), "
           f"processes {bot.started}, comments {len(world.facts.comments)}, merges {len(world.facts.merges)}, "
           f"batches {len(world.facts.batches)}, {time.monotonic() - started:.0f} s")
    result.assert_clean()
    assert kills >= RUNS - 2
