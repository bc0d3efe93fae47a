"""Retrain data assembly: the project's data plus labelled production rows, against pandas alone.

The same Parquet files on both sides: the project's training file (``--rows`` rows) and
``--batches`` labelled batch files holding ``--production-rows`` rows between them. Each row has 20
numeric features, one categorical feature (declared in ``[data] categorical``), a unique integer id
(``[data] id_column``, shuffled, so no shortcut for sorted ids applies) and a 0/1 target.

- assemble: ``read_labelled_production`` over the batches folder, then ``assemble_training_data``:
  it reads every file (into Arrow; pandas gets one copy of the whole table at the end), checks the
  schema contract, aligns the columns, de-duplicates by id, fingerprints the whole table and each
  source, and returns features, target and observed times.
- pandas: ``pd.read_parquet`` of each file and one ``pd.concat``; no checks, no fingerprint.

After the timing, each side digests its result's features and target row by row (the same
function on both sides); the run stops if the two differ, so both sides did the same reading.

Timing rule, the same for both sides: ``--rounds`` rounds, each running both sides (in turn
first), each side in a fresh Python subprocess that imports what it needs and then runs the work
``--repeat`` times (the time to produce the result; freeing the previous run's result is not timed,
on either side). The figure is the best (minimum) wall time over all of a side's runs, the
median is shown beside it, and so is the best CPU time (all threads), which a busy machine
disturbs less. Alternating the sides keeps a burst of load elsewhere from landing on one side
only. Peak memory is a subprocess's peak resident set size (``ru_maxrss``), shown whole and above
the resident size after imports (the largest over a side's subprocesses). The files are generated
first, in a temporary folder, and that time is shown separately. Threads: pyarrow's pools (shown)
on both sides (reading, and converting to pandas); the assembly also hashes rows on up to
min(4, CPUs) threads and checks ids for repeats on one more thread.

Goal (issue 12): assemble at most 1.3 times pandas alone.

    python benchmarks/retrain_data_bench.py [--rows 1000000] [--production-rows 1000000] [--batches 10]
                                            [--rounds 5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

GOAL = 1.3
FEATURES = 20

TOML = """
[project]
name = "bench"

[data]
path = "data/train.parquet"
target = "label"
id_column = "row_id"
categorical = ["region"]

[model]
estimator = "sklearn.linear_model.LogisticRegression"

[metrics]
primary = "roc_auc"

[retrain]
include_production = true
keep_training_data = true
"""


def synthetic(rows: int, ids: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    numeric = rng.normal(size=(rows, FEATURES))
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(FEATURES)])
    frame["region"] = rng.choice(["north", "south", "east", "west", "centre"], size=rows)
    frame["row_id"] = ids
    frame["label"] = (numeric[:, 0] - 0.5 * numeric[:, 1] + rng.normal(size=rows) > 0).astype(np.int64)
    return frame


def generate(folder: Path, rows: int, production_rows: int, batches: int) -> None:
    rng = np.random.default_rng(0)
    ids = rng.permutation(rows + production_rows).astype(np.int64)
    (folder / "project" / "data").mkdir(parents=True)
    (folder / "project" / "mlops.toml").write_text(textwrap.dedent(TOML))
    synthetic(rows, ids[:rows], rng).to_parquet(folder / "project" / "data" / "train.parquet", index=False)
    (folder / "batches").mkdir()
    (folder / "labels").mkdir()
    bounds = np.linspace(rows, rows + production_rows, batches + 1).astype(int)
    for number, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), start=1):
        path = folder / "batches" / f"batch-{number:03d}.parquet"
        synthetic(stop - start, ids[start:stop], rng).to_parquet(path, index=False)
        written = time.time() - (batches - number) * 60  # one batch a minute, the last one now
        os.utime(path, (written, written))


def files_of(folder: Path) -> list[Path]:
    return [folder / "project" / "data" / "train.parquet", *sorted((folder / "batches").glob("*.parquet"))]


def run_side(side: str, folder: Path, repeat: int) -> dict:
    """In the subprocess: run one side ``repeat`` times and report times, peak memory, the result's
    shape and, computed after the timing, a digest of its content (features and target, row by row)."""
    if side == "assemble":
        from pipeline.data import assemble_training_data
        from pipeline.production import read_labelled_production
        from pipeline.spec import load_project

        spec = load_project(folder / "project")

        def work():
            production = read_labelled_production(
                folder / "batches", folder / "labels", target=spec.data.target, id_column=spec.data.id_column,
                now=datetime.now(UTC), max_age_days=spec.retrain.max_age_days, max_rows=spec.retrain.max_rows,
            )
            dataset = assemble_training_data(spec, production)
            if dataset.problems:
                raise RuntimeError(f"the assembly reported problems: {dataset.problems}")
            return dataset

        def described(dataset) -> tuple[int, int, str, pd.DataFrame]:
            # The id column is read and used (de-duplication, fingerprint) but kept out of the features.
            table = dataset.features.assign(**{spec.data.target: dataset.target})
            return len(dataset.features), dataset.features.shape[1] + 2, dataset.fingerprint, table
    else:
        paths = files_of(folder)

        def work():
            return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)

        def described(frame) -> tuple[int, int, str, pd.DataFrame]:
            return len(frame), frame.shape[1], "", frame.drop(columns=["row_id"])

    import pyarrow as pa

    settled = _rss_now()
    times, cpu, result = [], [], None
    for _ in range(repeat):
        result = None  # the previous run's result is freed before the next run, on both sides
        started, started_cpu = time.perf_counter(), time.process_time()
        result = work()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows, columns, fingerprint, table = described(result)
    from pipeline.data import fingerprint as content_of  # not timed: the same digest of either side's rows

    return {"times": times, "cpu": cpu, "rows": rows, "columns": columns, "fingerprint": fingerprint,
            "content": content_of(table), "peak_mb": peak, "after_imports_mb": settled,
            "arrow_threads": pa.cpu_count(), "arrow_io_threads": pa.io_thread_count()}


def _rss_now() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(side: str, folder: Path, repeat: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--side", side, "--folder", str(folder), "--repeat", str(repeat)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="the project's training rows")
    parser.add_argument("--production-rows", type=int, default=1_000_000, help="labelled production rows")
    parser.add_argument("--batches", type=int, default=10, help="batch files the production rows are spread over")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each running both sides in fresh subprocesses")
    parser.add_argument("--repeat", type=int, default=2, help="runs of a side in each of its subprocesses")
    parser.add_argument("--side", choices=["assemble", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.folder, args.repeat)))
        return

    with tempfile.TemporaryDirectory(prefix="retrain-data-bench-") as temporary:
        folder = Path(temporary)
        started = time.perf_counter()
        generate(folder, args.rows, args.production_rows, args.batches)
        generated = time.perf_counter() - started
        size = sum(path.stat().st_size for path in files_of(folder)) / 2**20
        print(f"files: {args.rows:,} training rows + {args.production_rows:,} labelled production rows in "
              f"{args.batches} batches, {FEATURES} numeric + 1 categorical feature + id + target, Parquet, "
              f"{size:.0f} MiB; generated in {generated:.1f} s (not timed below)")
        runs: dict[str, list[dict]] = {"pandas": [], "assemble": []}
        for round_number in range(args.rounds):
            order = ("pandas", "assemble") if round_number % 2 == 0 else ("assemble", "pandas")
            for side in order:
                runs[side].append(measure(side, folder, args.repeat))
        results = {side: _combined(measured) for side, measured in runs.items()}

    pandas_side, ours = results["pandas"], results["assemble"]
    if ours["rows"] != pandas_side["rows"] or ours["columns"] != pandas_side["columns"]:
        raise SystemExit(f"the sides disagree: assemble gave {ours['rows']} rows x {ours['columns']} columns, "
                         f"pandas {pandas_side['rows']} x {pandas_side['columns']}")
    if ours["content"] != pandas_side["content"]:
        raise SystemExit("the sides disagree on the rows' values: the assembled features and target differ from "
                         "the files read by pandas")
    print(f"machine: {os.cpu_count()} CPUs; pyarrow threads {ours['arrow_threads']} (I/O {ours['arrow_io_threads']}) "
          f"on both sides; row hashing on up to {min(4, os.cpu_count() or 1)} threads (assemble only)")
    print(f"timing: {args.rounds} rounds x {args.repeat} runs per side, each round a fresh subprocess per side, "
          "sides alternating; best wall time (median beside it) and best CPU time; peak = peak RSS")
    print(f"{'side':<10} {'best s':>8} {'median s':>9} {'best CPU s':>11} {'peak MiB':>9} {'above imports':>14}")
    for name, result in (("pandas", pandas_side), ("assemble", ours)):
        print(f"{name:<10} {min(result['times']):>8.3f} {statistics.median(result['times']):>9.3f} "
              f"{min(result['cpu']):>11.3f} {result['peak_mb']:>9.0f} {result['above_imports_mb']:>14.0f}")
    ratio = min(ours["times"]) / min(pandas_side["times"])
    cpu_ratio = min(ours["cpu"]) / min(pandas_side["cpu"])
    memory = ours["above_imports_mb"] / pandas_side["above_imports_mb"]
    print(f"rows {ours['rows']:,}, fingerprint {ours['fingerprint'][:23]}...; both sides hold the same features "
          "and target, row by row (checked after timing)")
    print(f"ratio assemble / pandas: time {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'missed'}), "
          f"CPU time {cpu_ratio:.2f}x, peak memory above imports {memory:.2f}x")


def _combined(measured: list[dict]) -> dict:
    """One side's subprocesses together: all their runs, the largest peak memory."""
    first = measured[0]
    return {
        "times": [t for one in measured for t in one["times"]],
        "cpu": [t for one in measured for t in one["cpu"]],
        "rows": first["rows"], "columns": first["columns"], "fingerprint": first["fingerprint"],
        "content": first["content"],
        "peak_mb": max(one["peak_mb"] for one in measured),
        "above_imports_mb": max(one["peak_mb"] - one["after_imports_mb"] for one in measured),
        "arrow_threads": first["arrow_threads"], "arrow_io_threads": first["arrow_io_threads"],
    }


if __name__ == "__main__":
    main()
