"""Real bots on one state database, shared by tests/test_standby.py and benchmarks/standby_bench.py:
``mlops-bot run`` in a process of its own (its log lines kept with the time they came), the
settings such a bot runs with, and the check that every effect was delivered exactly once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent


class Bot:
    """``mlops-bot run`` in a process of its own, its log lines kept with the time they came."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path, *, stdout=subprocess.DEVNULL) -> None:
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env, cwd=cwd,
                                        stdout=stdout, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip()))

    def wait_for(self, text: str | re.Pattern, timeout: float, *, after: float = float("-inf")) -> float:
        """When a line with ``text`` (or matching it) came (time.monotonic()); the first that came after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if at > after and (text.search(line) if isinstance(text, re.Pattern) else text in line):
                    return at
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name} never logged {text!r}:\n" + self.log()[-4000:])

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)


def bot_env(state_url: str, *, project_dir: Path, data_dir: Path, takeover_s: float,
            sharing: str = "leader") -> dict[str, str]:
    """The environment of a bot on ``state_url``: quick intervals, none of the caller's MLOPS_ settings,
    the work shared as ``sharing`` says (MLOPS_WORK_SHARING). Its registry, the embedded MLflow store in
    ``data_dir``, is seeded here, before any bot starts."""
    from tests.conftest import seed_embedded_mlflow

    seed_embedded_mlflow(data_dir)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
            "MLOPS_STATE_URL": state_url, "MLOPS_PROJECT_DIR": str(project_dir), "MLOPS_DATA_DIR": str(data_dir),
            "MLOPS_TAKEOVER_S": str(takeover_s), "MLOPS_POLL_INTERVAL_S": "0.5", "MLOPS_MONITOR_INTERVAL_S": "1",
            "MLOPS_DELIVER_INTERVAL_S": "0.3", "MLOPS_DRIFT_COOLDOWN_S": "0", "MLOPS_WORK_SHARING": sharing,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def query(engine: sa.Engine, query: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(query)).all()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def settled(engine: sa.Engine, *, answered_where: str, answered: int, batches: int = 2, quiet_s: float = 3.0):
    """For ``wait_until``: nothing pending, ``answered`` changes (those ``answered_where`` picks among the
    bot's comments, an SQL condition) answered, ``batches`` batches checked, and no new effect for ``quiet_s``."""
    quiet_since: list = []

    def condition() -> bool:
        pending, effects = query(engine, "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM effects")[0]
        replied = query(engine, f"SELECT count(DISTINCT number) FROM local_comments WHERE by_bot AND {answered_where}")
        checked = query(engine, "SELECT count(*) FROM state WHERE namespace = 'batches'")[0][0]
        state = (pending == 0 and replied[0][0] == answered and checked == batches, effects)
        if not quiet_since or quiet_since[1] != state:
            quiet_since[:] = [time.monotonic(), state]
        return state[0] and time.monotonic() - quiet_since[0] > quiet_s
    return condition


@dataclass
class Delivered:
    """What the bots did, read back from the state database and the model registry."""

    events: int
    effects: int
    not_done: list = field(default_factory=list)  # (key, status, last_error) of each effect not done
    doubled: list[str] = field(default_factory=list)  # what was done more than once; [] is the goal
    bot_comments: list[str] = field(default_factory=list)  # bodies, on changes
    tickets: list = field(default_factory=list)  # (key, state) on the local board
    chat_messages: int = 0
    runs: Counter = field(default_factory=Counter)  # model versions made by each pipeline run


def delivered(engine: sa.Engine, data_dir: Path) -> Delivered:
    """Every effect, comment, ticket, chat message and model version, and which were doubled."""
    from tests.conftest import open_embedded_registry

    bot_comments = [row.body for row in query(engine, "SELECT body FROM local_comments WHERE by_bot")]
    ticket_comments = [row.body for row in query(engine, "SELECT body FROM local_ticket_comments")]
    chat = query(engine, "SELECT channel, thread, marker FROM local_chat")
    tickets = query(engine, "SELECT key, state FROM local_tickets")
    markers = Counter(body.rsplit("<!-- mlops-bot:", 1)[-1] for body in bot_comments + ticket_comments)
    chat_markers = Counter((row.channel, row.thread, row.marker) for row in chat)
    open_tickets = Counter(row.key for row in tickets if row.state == "open")  # a new episode may reuse a key
    runs = Counter(version.run_id for version in open_embedded_registry(data_dir).versions())
    doubled = ([f"comment {m!r} x{n}" for m, n in markers.items() if n > 1]
               + [f"chat message {m!r} x{n}" for m, n in chat_markers.items() if n > 1]
               + [f"open ticket {k!r} x{n}" for k, n in open_tickets.items() if n > 1]
               + [f"run {r!r} made {n} models" for r, n in runs.items() if n > 1])
    return Delivered(events=query(engine, "SELECT count(*) FROM events")[0][0],
                     effects=query(engine, "SELECT count(*) FROM effects")[0][0],
                     not_done=query(engine, "SELECT key, status, last_error FROM effects WHERE status != 'done'"),
                     doubled=doubled, bot_comments=bot_comments, tickets=tickets, chat_messages=len(chat), runs=runs)


def run_out_lease(url: str) -> None:
    """What the database's clock does to a lease while its holder is paused (SIGSTOP): it runs out."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE leases SET expires_at = acquired_at"))
    finally:
        engine.dispose()
