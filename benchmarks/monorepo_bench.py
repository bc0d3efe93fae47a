"""What serving several model projects from one bot costs per event (issue 17, item 1).

One repository holding 1, 3 or 10 model projects (found with MLOPS_PROJECT_DIR unset, as
`mlops-bot run` finds them), the same work for each: ``--events`` merged changes, each touching one
project (in turn), and as many `/status <project>` commands typed on changes (`/status` where
there is one project: the same answer, from the same reads), all through the real
local adapters, the SQLite state store, the router (bot/routing.py) and the outbox, with a
pipeline that finishes at once (benchmarks/bot_bench.py's NoOpEngine), so the figure is the bot's
own overhead. A merge is offered to every project's planner, which is the cost that grows with the
number of projects; a command goes to the one it names.

Each side is timed the same way: poll and deliver everything, wall time and CPU seconds of this
process, from a new state database each run, the median of ``--repeat`` runs. Building the bot
(finding the projects, opening the embedded MLflow store) is preparation, shown apart. One
thread on every side. Baseline: one project, in the same run.

    python benchmarks/monorepo_bench.py [--events 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bot_bench import SPEC, NoOpEngine, SyntheticMerges  # benchmarks/bot_bench.py

from bot.app import build
from bot.settings import Settings
from bot.store import Store
from integrations.local import create_local_tables
from integrations.ports import Change, Target


def repository(root: Path, projects: int) -> list[str]:
    """A folder holding ``projects`` model projects, models/m0 ... ; their names."""
    names = [f"m{n}" for n in range(projects)]
    for name in names:
        folder = root / "models" / name
        folder.mkdir(parents=True)
        (folder / "mlops.toml").write_text(textwrap.dedent(SPEC.format(name=name)))
    return names


def run(projects: int, events: int) -> tuple[float, float, float]:
    """(preparation seconds, wall seconds, CPU seconds) to poll and deliver ``events`` merges and as
    many commands with ``projects`` model projects in the repository."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = repository(root / "repo", projects)
        started = time.perf_counter()
        settings = Settings(data_dir=root / "state", repo_dir=root / "repo", watch_branch="main")
        store = Store(settings.state_database_url)
        create_local_tables(store.engine)
        now = datetime.now(UTC)
        changes = [Change("repo", n, f"change {n}", "", "dev", f"{n:040x}", now, branch="main",
                          paths=(f"models/{names[n % projects]}/train.py",)) for n in range(1, events + 1)]
        scm = SyntheticMerges(store.engine, root / "repo", branch="main", changes=changes, out=None)
        app = build(settings, store=store, scm=scm, engine=NoOpEngine(), out=None)
        assert sorted(app.router.lifecycles) == sorted(names), list(app.router.lifecycles)
        for n in range(events):  # with one project, no name: `/status m0` would be a bad argument there
            command = "/status" if projects == 1 else f"/status {names[n % projects]}"
            scm.add_comment(Target("change", "repo", 1 + n), command)
        app.bootstrap()  # each project's first run, asked for here so that the timed poll has only the events
        app.deliver()
        prepared = time.perf_counter() - started
        start, start_cpu = time.perf_counter(), time.process_time()
        handled = app.poll()
        app.deliver()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        assert not app.store.effects(status="pending"), "effects left undelivered"
        assert handled == 2 * events, handled
        store.close()
        return prepared, elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="merged changes, and as many commands (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side, in turns; the median is reported")
    args = parser.parse_args()
    sides = (1, 3, 10)
    results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in sides}
    for _ in range(args.repeat):
        for n in sides:  # in turns, so a burst of load elsewhere lands on every side
            results[n].append(run(n, args.events))
    print(f"{args.events} merged changes (each touching one project) + {args.events} `/status <project>` commands, "
          f"local adapters, SQLite state, no-op pipeline, one thread; median of {args.repeat} runs per side")
    print(f"{'projects':>8}  {'wall s':>7}  {'CPU s':>6}  {'events/s':>9}  {'CPU ms/event':>12}  {'vs 1 project':>12}  "
          f"{'preparation s':>13}")
    base = None
    for n in sides:
        prepared = statistics.median(r[0] for r in results[n])
        wall = statistics.median(r[1] for r in results[n])
        cpu = statistics.median(r[2] for r in results[n])
        per_event = cpu / (2 * args.events) * 1000
        base = base or per_event
        print(f"{n:>8}  {wall:>7.2f}  {cpu:>6.2f}  {2 * args.events / wall:>9,.0f}  {per_event:>12.2f}  "
              f"{per_event / base:>11.2f}x  {prepared:>13.2f}")


if __name__ == "__main__":
    main()
