"""How much slower mlops-bot's commands start than a bare Python interpreter, and what they import.

Sides, each a fresh process, timed the same way (best and median of ``--repeat`` runs, sides taking
turns so a burst of load elsewhere does not land on one side only; one thread each, as they start):

- ``python -c pass``: the bare interpreter, the baseline;
- ``mlops-bot --help``: what every command pays before it does anything;
- ``mlops-bot status``: the bot read from its state and registry, on embedded defaults;
- ``mlops-bot models list``: the registry alone.

``status`` and ``models list`` read a data folder prepared once with ``mlops-bot pipeline run`` of
the bundled example (its time shown separately, not in the figures). Every side runs with Python's
bytecode caches, as an installed mlops-bot has them (``PYTHONDONTWRITEBYTECODE`` is dropped, and
the preparation writes them). Goals: ``--help`` under 0.3 s more than the bare interpreter (issue 2)
and none of scikit-learn, pandas or the service SDKs imported by ``--help`` or ``status``; the
modules ``status`` imports that take longest are listed (``python -X importtime``), to see where
its time goes.

    python benchmarks/startup_bench.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("sklearn", "pandas", "pyarrow", "scipy", "github", "slack_sdk", "azure", "matplotlib", "skops", "mlflow")


def timed_in_turns(commands: dict[str, list[str]], repeat: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Each command run ``repeat`` times, the commands taking turns; wall seconds per run."""
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            timings[name].append(time.perf_counter() - start)
    return timings


def heavy_imports(arguments: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """The HEAVY packages that ``mlops-bot ARGUMENTS`` has imported by the time it ends."""
    probe = (
        "import sys; from bot.cli import main\n"
        f"try:\n    main({arguments!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env, cwd=cwd)
    listed = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY:")).removeprefix("HEAVY:")
    return [name for name in listed.split(",") if name]


def slowest_imports(arguments: list[str], env: dict[str, str], cwd: str, count: int = 8) -> list[tuple[str, float]]:
    """The top-level imports of ``python -m bot ARGUMENTS`` that took longest, with their cumulative ms
    (``-X importtime``, which itself slows imports: read the shares, not the absolute figures)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "bot", *arguments], capture_output=True,
                          text=True, check=True, env=env, cwd=cwd)
    top_level = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # one space: imported by the command itself, not by another module
            top_level.append((name.strip(), int(cumulative) / 1000))
    return sorted(top_level, key=lambda item: -item[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    # The installed console script when there is one (what users run), else the same entry point.
    script = shutil.which("mlops-bot", path=str(Path(sys.executable).parent))
    bot = [script] if script else [sys.executable, "-m", "bot"]
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "MLOPS_DATA_DIR": str(Path(folder) / "data")}
        env = {name: value for name, value in env.items()
               if not name.startswith(("GITHUB_", "SLACK_", "AZURE_", "MLFLOW_")) and name != "PYTHONDONTWRITEBYTECODE"}
        start = time.perf_counter()
        subprocess.run([*bot, "pipeline", "run"], check=True, capture_output=True, env=env, cwd=folder)
        prepared = time.perf_counter() - start
        commands = {"python -c pass": [sys.executable, "-c", "pass"], "mlops-bot --help": [*bot, "--help"],
                    "mlops-bot status": [*bot, "status"], "mlops-bot models list": [*bot, "models", "list"]}
        timings = timed_in_turns(commands, args.repeat, env)
        loaded = {name: heavy_imports(arguments, env, folder) for name, arguments in
                  (("--help", ["--help"]), ("status", ["status"]))}
        slowest = slowest_imports(["status"], env, folder)
    print(f"machine: {os.cpu_count()} CPUs; each side a fresh process, {args.repeat} runs, sides in turn; "
          f"prepared the data folder (pipeline run of the bundled example) in {prepared:.1f} s, not timed below")
    bare = statistics.median(timings["python -c pass"])
    print(f"{'side':<24}{'best ms':>10}{'median ms':>11}{'extra ms (median)':>19}{'ratio (median)':>16}")
    for name, runs in timings.items():
        median = statistics.median(runs)
        print(f"{name:<24}{min(runs) * 1000:>10.1f}{median * 1000:>11.1f}{(median - bare) * 1000:>19.1f}"
              f"{median / bare:>15.2f}x")
    extra = statistics.median(timings["mlops-bot --help"]) - bare
    print(f"--help extra start-up (median): {extra * 1000:.1f} ms (goal < 300 ms: {'met' if extra < 0.3 else 'NOT met'})")
    status_extra = statistics.median(timings["mlops-bot status"]) - bare
    print(f"status extra start-up (median): {status_extra * 1000:.1f} ms, "
          f"{statistics.median(timings['mlops-bot status']) / statistics.median(timings['mlops-bot --help']):.2f}x --help")
    for name, modules in loaded.items():
        print(f"heavy modules imported by {name}: {', '.join(modules) if modules else 'none'}")
    print("status's slowest top-level imports (-X importtime, cumulative ms): "
          + ", ".join(f"{name} {ms:.0f}" for name, ms in slowest))


if __name__ == "__main__":
    main()
