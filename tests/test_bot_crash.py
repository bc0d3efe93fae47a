"""Kill the bot with SIGKILL at random moments of a busy scenario, restart it, and check that
every effect happened exactly once and nothing was lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from integrations.ports import Target
from tests.test_bot import drifted_batch

# The bot's local source control and chat with slow writes, and a run to the end: what a child bot process
# builds on.
SLOW_ADAPTERS = r"""
import sys, time
from pathlib import Path
from bot.app import build
from bot.settings import Settings
from integrations.local import ConsoleChat, LocalGitSource

class Slow:
    # Slow writes make the kills land inside deliveries, where exactly-once is hardest.
    def __getattribute__(self, name):
        attribute = object.__getattribute__(self, name)
        if name in {"post", "reply", "update", "edit_reply", "react", "set_status"}:
            def slow(*args, **kwargs):
                time.sleep(0.03)
                value = attribute(*args, **kwargs)
                time.sleep(0.03)
                return value
            return slow
        return attribute

class SlowChat(Slow, ConsoleChat): pass
class SlowSource(Slow, LocalGitSource): pass

def run_to_the_end(app, cycles):
    for _ in range(cycles):
        app.run_once()
        if not app.store.effects(status="pending") and app.monitor() == 0:
            break
    app.deliver()
    print("finished", flush=True)
"""

CHILD = SLOW_ADAPTERS + r"""
repo, data = Path(sys.argv[1]), Path(sys.argv[2])
settings = Settings(project_dir=repo / "models/tiny", data_dir=data, drift_cooldown_s=0)
from bot.store import Store
store = Store(settings.state_database_url)
from integrations.local import create_local_tables
create_local_tables(store.engine)
app = build(settings, store=store, chat=SlowChat(store.engine, out=None),
            scm=SlowSource(store.engine, repo, out=None), out=None)
run_to_the_end(app, 50)
"""


def test_killed_at_random_the_bot_loses_nothing_and_repeats_nothing(make_app, repo, tmp_path):
    app = make_app()  # prepares the state database and the scenario's inputs
    for number in range(3):
        drifted_batch(app, f"b{number}.csv", shift=3.0 + number, seed=number)
    for number, body in enumerate(["/status", "/validate", "/help", "/retrian", "/status"]):
        app.scm.add_comment(Target("change", app.scm.repo, 40 + number), body)
    data_dir = app.settings.data_dir
    app.store.close()
    kills = kill_at_random_then_finish([sys.executable, "-c", CHILD, str(repo), str(data_dir)], seed=7)
    assert kills >= 3
    found = local_outcome(data_dir)
    pending, bot_comments, ticket_comments = found["pending"], found["bot_comments"], found["ticket_comments"]
    chat, tickets = found["chat"], found["tickets"]
    with sa.create_engine(f"sqlite:///{data_dir / 'state.db'}").connect() as conn:
        events = conn.execute(sa.text("select count(*) from events")).scalar_one()
    assert pending == []
    markers = Counter(body.rsplit("<!-- mlops-bot:", 1)[-1] for body in bot_comments + ticket_comments)
    assert [m for m, n in markers.items() if n > 1] == []
    chat_markers = Counter((row.channel, row.thread, row.marker) for row in chat)
    assert [m for m, n in chat_markers.items() if n > 1] == []
    assert [t for t in tickets if t.state == "open"].__len__() <= 1
    assert len(tickets) == 1
    replies_on = Counter(body for body in bot_comments if "Did you mean" in body)
    assert sum(replies_on.values()) == 1
    assert events >= 5 + 3  # every comment and batch was seen
    registry_versions = _versions_by_run(data_dir)
    assert all(n == 1 for n in registry_versions.values())


def _versions_by_run(data_dir) -> Counter:
    from tests.conftest import open_embedded_registry

    return Counter(v.run_id for v in open_embedded_registry(data_dir).versions())


def kill_at_random_then_finish(command: list[str], *, seed: int, runs: int = 8, finish_s: float = 300) -> int:
    """Start the bot's ``command`` ``runs`` times, each SIGKILLed 1 to 3 s in if still running, then
    once more to its end (which must succeed); returns how many runs were killed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    rng, kills = random.Random(seed), 0
    for _ in range(runs):
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.0, 3.0))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(timeout=60)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=finish_s, check=False)
    assert final.returncode == 0 and "finished" in final.stdout, final.stderr[-2000:]
    return kills


def local_outcome(data_dir: Path) -> dict:
    """What the bot left in its state database and on the embedded services: the effects not done,
    its comments on changes and tickets, its chat messages and its tickets."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'state.db'}")
    with engine.connect() as conn:
        found = {
            "pending": conn.execute(sa.text("select key, status, last_error from effects where status != 'done'")).all(),
            "bot_comments": [row.body for row in conn.execute(sa.text("select body from local_comments where by_bot"))],
            "ticket_comments": [row.body for row in conn.execute(sa.text("select body from local_ticket_comments"))],
            "chat": conn.execute(sa.text("select channel, thread, marker from local_chat")).all(),
            "tickets": conn.execute(sa.text("select key, state from local_tickets")).all(),
        }
    engine.dispose()
    return found
