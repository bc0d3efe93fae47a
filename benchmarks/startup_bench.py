"""How much slower `mlops-bot --help` starts than a bare Python interpreter, and what it imports.

Goal (issue 2): under 0.3 s more than `python -c pass`, and none of scikit-learn, pandas or the
service SDKs imported.

    python benchmarks/startup_bench.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("sklearn", "pandas", "scipy", "github", "slack_sdk", "azure", "matplotlib", "skops")


def best_and_median(command: list[str], repeat: int) -> tuple[float, float]:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timings.append(time.perf_counter() - start)
    return min(timings), statistics.median(timings)


def heavy_imports() -> list[str]:
    probe = (
        "import sys; from bot.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [name for name in done.stderr.strip().split(",") if name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    bare_best, bare_median = best_and_median([sys.executable, "-c", "pass"], args.repeat)
    # The installed console script when there is one (what users run), else the same entry point.
    script = shutil.which("mlops-bot", path=str(Path(sys.executable).parent))
    cli = [script, "--help"] if script else [sys.executable, "-c", "from bot.cli import main; main(['--help'])"]
    cli_best, cli_median = best_and_median(cli, args.repeat)
    loaded = heavy_imports()
    print(f"python -c pass        best {bare_best * 1000:7.1f} ms   median {bare_median * 1000:7.1f} ms")
    print(f"mlops-bot --help      best {cli_best * 1000:7.1f} ms   median {cli_median * 1000:7.1f} ms")
    extra = cli_median - bare_median
    print(f"extra start-up (median): {extra * 1000:.1f} ms  (goal < 300 ms: {'met' if extra < 0.3 else 'NOT met'})")
    print(f"ratio (median): {cli_median / bare_median:.2f}x a bare interpreter")
    print(f"heavy modules imported by --help: {', '.join(loaded) if loaded else 'none'}")


if __name__ == "__main__":
    main()
