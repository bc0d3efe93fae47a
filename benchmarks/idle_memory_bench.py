"""The bot's resident memory at idle, before and after ten pipeline runs (issue 14).

A bot on embedded defaults runs in a subprocess of its own, driven through its own entry points
(``bot.app.build`` and ``run_once``, the cycle the scheduler and `mlops-bot run --once` call), on a
private git repository holding a copy of the bundled example:

1. preparation (not measured): `mlops-bot run --once` in another process trains the first model,
   so the measured bot starts with a model in production and its cursor at the newest commit;
2. idle: the measured bot is built and runs one cycle with nothing to do: it never trained;
3. ten runs: ten commits touching the project folder, each a merged change the bot runs the
   pipeline for (train, package, validate in the pipeline's child process, as by default), the
   bot's cycle repeated until its outbox is empty; then one more cycle with nothing to do.

Each figure is the bot process's resident set size (psutil if installed, else /proc/PID/status
VmRSS), read by this process while the bot waits for its next instruction. Goal: after the ten
runs within 10 MB of idle, and under 150 MB. Beside it, not in the goal: the resident memory of the
processes the bot started that still run (the loader its runs' fresh-process checks are forked from,
pipeline/loader.py, which ends after 10 minutes without a check).

    python benchmarks/idle_memory_bench.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import git

EXAMPLE = REPO / "examples" / "breast_cancer"
PROJECT = "models/breast_cancer"
GOAL_GROWTH_MB, GOAL_TOTAL_MB = 10.0, 150.0

# The measured bot. It says "measure <label>" and waits for a line on stdin before going on, so the
# figure is read while it is idle; "runs <n>" is the number of pipeline runs its registry recorded.
DRIVER = textwrap.dedent("""
    import sys, subprocess
    from benchmarks.common import settle
    from bot.app import build
    from bot.settings import load_settings

    def pause(label):
        print("measure", label, flush=True)
        sys.stdin.readline()

    repo, project, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = build(load_settings(None), out=None)
    model = app.lifecycle.project.name
    before = len(app.registry.runs(model, limit=1000))
    settle(app)
    pause("idle")
    for number in range(1, runs + 1):
        with open(f"{project}/CHANGES.txt", "a") as notes:  # a merged change touching the project
            notes.write(f"change {number}\\n")
        for args in (["add", "-A"], ["commit", "-q", "-m", f"change {number}"]):
            subprocess.run(["git", "-C", repo, "-c", "user.email=b@example.com", "-c", "user.name=b", *args],
                           check=True, capture_output=True)
        settle(app, rounds=400)
        if number in (1, runs // 2):
            pause(f"after {number} run(s)")
    settle(app)
    print("runs", len(app.registry.runs(model, limit=1000)) - before, flush=True)
    pause(f"after {runs} runs")
""")


def resident_mb(pid: int) -> float:
    try:
        import psutil
    except ImportError:
        status = Path(f"/proc/{pid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def children_mb(pid: int) -> float:
    """RSS (MB) of the processes ``pid`` started that still run: the loader of fresh-process checks
    (pipeline/loader.py) once a run has needed it, which holds its libraries until it is idle."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # each thread's own: the loader is started by one
        try:
            children += (task / "children").read_text().split()
        except OSError:
            pass
    total = 0.0
    for child in children:
        try:
            total += resident_mb(int(child))
        except (OSError, StopIteration):  # it ended meanwhile
            pass
    return total


def measure(runs: int) -> tuple[dict[str, float], dict[str, float], int, float]:
    """RSS (MB) at each of the driver's pauses, of the bot and of its child processes; the pipeline
    runs it made; the preparation's seconds."""
    with tempfile.TemporaryDirectory(prefix="mlops-idle-") as folder:
        repo = Path(folder) / "repo"
        shutil.copytree(EXAMPLE, repo / PROJECT, ignore=shutil.ignore_patterns("__pycache__"))
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "the example")
        # Embedded defaults: none of the environment's service settings, a data folder of its own.
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("MLOPS_", "GITHUB_", "SLACK_", "AZURE_", "MLFLOW_"))}
        env |= {"MLOPS_DATA_DIR": str(Path(folder) / "data"), "MLOPS_PROJECT_DIR": str(repo / PROJECT),
                "MLOPS_LOG_LEVEL": "WARNING", "MLOPS_DRIFT_COOLDOWN_S": "0",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bot", "run", "--once"], env=env, cwd=folder, check=True,
                       capture_output=True, timeout=900)
        prepared = time.perf_counter() - start
        bot = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo), str(repo / PROJECT), str(runs)], env=env, cwd=folder,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        figures, children, made = {}, {}, -1
        try:
            for line in bot.stdout:
                kind, _, rest = line.strip().partition(" ")
                if kind == "measure":
                    figures[rest] = resident_mb(bot.pid)
                    children[rest] = children_mb(bot.pid)
                    bot.stdin.write("\n")
                    bot.stdin.flush()
                elif kind == "runs":
                    made = int(rest)
            if bot.wait(timeout=60) != 0:
                raise RuntimeError(f"the measured bot exited with status {bot.returncode}")
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.wait()
    return figures, children, made, prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="pipeline runs after the idle figure (default 10)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        try:
            import psutil
        except ImportError:
            sys.exit("idle memory: needs psutil or /proc to read a process's resident memory")
    figures, children, made, prepared = measure(args.runs)
    idle, final = figures["idle"], figures[f"after {args.runs} runs"]
    print(f"bot on embedded defaults (bundled example), one process; prepared (first model trained by "
          f"`mlops-bot run --once`, another process) in {prepared:.1f} s, not measured")
    print(f"pipeline runs made by the measured bot: {made} (asked for {args.runs})")
    for label, value in figures.items():
        print(f"  {label:<22}{value:>8.1f} MB resident; its child processes {children[label]:.1f} MB "
              "(the loader of fresh-process checks, once a run needed it; not in the goal)")
    growth = final - idle
    met = growth <= GOAL_GROWTH_MB and final < GOAL_TOTAL_MB
    print(f"after/idle: {final / idle:.2f}x, +{growth:.1f} MB (goal: within {GOAL_GROWTH_MB:g} MB of idle and "
          f"< {GOAL_TOTAL_MB:g} MB: {'met' if met else 'NOT met'})")
    if args.json:
        print(json.dumps({"idle_mb": idle, "final_mb": final, "figures": figures, "runs": made}))


if __name__ == "__main__":
    main()
