"""Events per second through the dispatcher and the outbox, and the idle bot's resident memory.

Throughput: 1,000 commands (`/status`, typed at the console) and 1,000 merged changes (each with
a no-op pipeline that finishes at once) go through the real local adapters, the SQLite state
store and the outbox: poll, dispatch, every effect delivered, every follow-up event handled.
Each run starts from a new state database; the figure is the median of `--repeat` runs (3),
so one run slowed by other work on the machine does not decide it. The CPU seconds the process
used are shown next to the wall-clock time: far fewer means the machine was busy elsewhere.
Baseline in the same run: the bare cost of the state store alone, one `ingest` per event.

Idle memory: `mlops-bot run` on the bundled example (after a first run has trained the model),
read from /proc after its first cycle, while it waits for the next.

Goals (issue 4): at least 500 events per second; idle memory under 150 MB.

    python benchmarks/bot_bench.py [--events 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import build  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store import NewEffect, Store  # noqa: E402
from integrations.local import LocalGitSource  # noqa: E402
from integrations.ports import Change, RunHandle, Target  # noqa: E402


class NoOpEngine:
    """A pipeline that finishes at once, so the figure is the bot's own overhead."""

    name = "noop"

    def __init__(self) -> None:
        self.runs: dict[str, RunHandle] = {}

    def start(self, project, *, run_id, trigger, reason, context, promote=True) -> RunHandle:
        result = {"run_id": run_id, "model": project, "status": "succeeded", "version": None, "promoted": False,
                  "stages": [], "validation": None, "reasons": []}
        self.runs[run_id] = RunHandle(run_id, "succeeded", result=result)
        return self.runs[run_id]

    def status(self, run_id):
        return self.runs.get(run_id)


class SyntheticMerges(LocalGitSource):
    """The local source, with a queue of merged changes instead of git commits."""

    def __init__(self, *args, changes: list[Change], **kwargs):
        super().__init__(*args, **kwargs)
        self._changes = changes

    def merged_changes(self, cursor):
        start = int(cursor or 0)
        batch = self._changes[start:]
        return batch, str(start + len(batch)) if batch else cursor


# A model project's mlops.toml: its data is never read, as the pipeline is a no-op.
SPEC = """
    [project]
    name = "{name}"
    [data]
    path = "data.csv"
    target = "y"
    [model]
    estimator = "sklearn.linear_model.LogisticRegression"
    [metrics]
    primary = "accuracy"
"""


def project(root: Path) -> Path:
    folder = root / "repo" / "model"
    folder.mkdir(parents=True)
    (folder / "mlops.toml").write_text(textwrap.dedent(SPEC.format(name="bench")))
    return folder


def throughput(events: int) -> tuple[float, float, int, float]:
    """Seconds to poll and deliver everything, events per second, effects delivered, CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = project(root)
        settings = Settings(project_dir=folder, data_dir=root / "state", repo_dir=root / "repo", watch_branch="main",
                            project_paths=["model"])
        store = Store(settings.state_database_url)
        from integrations.local import create_local_tables

        create_local_tables(store.engine)
        now = datetime.now(UTC)
        changes = [Change("repo", n, f"change {n}", "", "dev", f"{n:040x}", now, branch="main", paths=("model/x.py",))
                   for n in range(1, events + 1)]
        scm = SyntheticMerges(store.engine, root / "repo", branch="main", changes=changes, out=None)
        app = build(settings, store=store, scm=scm, engine=NoOpEngine(), out=None)
        for n in range(events):
            scm.add_comment(Target("change", "repo", 10_000 + n), "/status")
        start, start_cpu = time.perf_counter(), time.process_time()
        handled = app.poll()
        report = app.deliver()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        assert not app.store.effects(status="pending"), "effects left undelivered"
        assert handled == 2 * events, handled
        store.close()
        return elapsed, 2 * events / elapsed, report.delivered, cpu


def bare_store(events: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bare.db")
        start = time.perf_counter()
        for n in range(2 * events):
            store.ingest(f"event-{n}", "bench", "bench", {"n": n}, [NewEffect(f"effect-{n}", "noop", {}, "lane")])
        elapsed = time.perf_counter() - start
        store.close()
        return 2 * events / elapsed


def idle_memory() -> float | None:
    if not Path("/proc/self/status").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLOPS_DATA_DIR": str(Path(tmp) / "state"), "MLOPS_POLL_INTERVAL_S": "3600",
               "MLOPS_MONITOR_INTERVAL_S": "3600", "MLOPS_LOG_LEVEL": "WARNING"}
        bot = [sys.executable, "-m", "bot", "run"]
        subprocess.run([*bot, "--once"], env=env, cwd=tmp, check=True, capture_output=True, timeout=600)
        process = subprocess.Popen(bot, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(15)  # the first cycle runs at start; then it idles until the next
            rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        finally:
            process.terminate()
            process.wait(timeout=30)
        return rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="commands, and as many merged changes (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs; the median is reported (default 3)")
    args = parser.parse_args()
    runs = sorted((throughput(args.events) for _ in range(max(1, args.repeat))), key=lambda run: run[1])
    elapsed, rate, delivered, cpu = runs[(len(runs) - 1) // 2]  # the median (the lower one of an even count)
    bare = bare_store(args.events)
    print(f"{args.events} commands + {args.events} merged changes (no-op pipeline), local adapters, SQLite state")
    print(f"  handled in {elapsed:.2f} s ({cpu:.2f} s of CPU): {rate:,.0f} events/s, {delivered} effects delivered "
          f"(goal >= 500 events/s: {'met' if rate >= 500 else 'NOT met'})")
    if len(runs) > 1:
        print(f"  median of {len(runs)} runs: " + ", ".join(f"{run[1]:,.0f}" for run in runs) + " events/s")
    print(f"  bare store ingest (one event + one effect each): {bare:,.0f} events/s; the bot runs at "
          f"{rate / bare:.2f}x that")
    memory = idle_memory()
    if memory is None:
        print("idle memory: not measured (no /proc on this system)")
    else:
        print(f"idle `mlops-bot run` resident memory: {memory:.0f} MB (goal < 150 MB: {'met' if memory < 150 else 'NOT met'})")


if __name__ == "__main__":
    main()
