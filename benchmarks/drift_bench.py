"""Drift engine benchmark: the engine against SciPy and Evidently on equal work, in one run.

    python benchmarks/drift_bench.py                    # 1M rows x 25 columns (20 numeric, 5 text), a third shifted
    python benchmarks/drift_bench.py --evidently-python /path/to/evidently-venv/bin/python
    python benchmarks/drift_bench.py --quick            # the same at 100k rows, 1 run per side: a smoke run
    python benchmarks/drift_bench.py --threads 1,2      # every side at 1 thread and at 2
    python benchmarks/drift_bench.py --scale            # adds 1M rows x 1,000 float32 columns (4 GB) from Parquet,
                                                        # checked against a stored profile (monitoring path)

Equal work. A reference and a current Parquet file are generated once (not timed). Every side
then runs in a fresh process (benchmarks/drift_sides.py) that imports its libraries, reads
both files and returns a drift verdict per feature; nothing is prepared in advance for any
side, so the engine profiles the raw reference inside its timing. Every side gets the same
number of runs (``--repeat``, interleaved round by round so that load from elsewhere falls on
all alike), and the output gives the import of the side's libraries (median), then the best
and the median of the work from reading the files to the verdict and of the whole process
as this script times it from outside. Threads are the same for all: OMP/OPENBLAS/MKL_NUM_THREADS
and Arrow's CPU and I/O pools are set to ``--threads`` in each process (and read back), the
engine gets ``workers=threads`` and SciPy's per-column tests run on a pool of that many
threads; Evidently has no thread setting of its own.

Evidently 0.7 does not import under pandas 3, so it runs under another interpreter: a venv
made with ``python -m venv DIR && DIR/bin/pip install 'evidently>=0.7,<0.8' 'pandas>=2.2,<3'
pyarrow`` (the project is found through PYTHONPATH), passed as ``--evidently-python`` or
``DRIFT_BENCH_EVIDENTLY_PYTHON``. The engine and SciPy are run under that interpreter too,
so that ratios against Evidently compare the same pandas.

The monitoring path, where the reference profile is made once at training time and each
batch is checked against the stored profile, is a separate section: it is what the bot does
in production, but its preparation happened earlier, so it is printed apart with the
preparation time beside it and is never divided by the raw-file baselines.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.drift import DriftConfig, check_drift
from pipeline.profile import build_reference_profile

# Features that really moved, and two that moved by a trivial 0.01 sd that should not count.
SHIFTED = ("num_00", "num_01", "num_02", "num_03", "num_04", "num_05", "cat_0", "cat_1")
TRIVIAL = ("num_06", "num_07")
_CATEGORY_SIZES = (8, 20, 3, 50, 200)
# Text columns as the bot reads them from Parquet: Arrow strings, in pandas 3 ("str") and in
# pandas 2 ("string[pyarrow]"), rather than pandas 2's default of Python objects.
TEXT_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else "string[pyarrow]"
_ROOT = Path(__file__).resolve().parent.parent
_SIDES_SCRIPT = Path(__file__).resolve().parent / "drift_sides.py"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ARROW_IO_THREADS")

# --------------------------------------------------------------------------- data

def make_frame(rows: int, seed: int, shifted: bool) -> pd.DataFrame:
    """20 numeric features of several shapes and 5 string features; ``shifted`` moves a third."""
    rng = np.random.default_rng(seed)
    s = 1.0 if shifted else 0.0
    columns = {
        "num_00": rng.normal(0.5 * s, 1, rows),  # mean shift, half a standard deviation
        "num_01": rng.normal(0.2 * s, 1, rows),  # smaller mean shift
        "num_02": rng.lognormal(0, 1 + 0.5 * s, rows),  # wider tail
        "num_03": rng.uniform(0.1 * s, 1 + 0.1 * s, rows),  # range moved
        "num_04": rng.poisson(3 + 0.6 * s, rows).astype(np.float64),  # counts, many ties
        "num_05": rng.normal(0, 1 + 0.5 * s, rows),  # spread only
        "num_06": rng.normal(0.01 * s, 1, rows),  # trivial
        "num_07": rng.normal(100 + 0.01 * 5 * s, 5, rows),  # trivial
    }
    for index in range(8, 20):
        shape = index % 4
        columns[f"num_{index:02d}"] = (rng.normal(0, 1, rows) if shape == 0 else rng.exponential(2, rows) if shape == 1
                                       else rng.standard_t(4, rows) if shape == 2
                                       else rng.integers(0, 1_000, rows).astype(np.float64))
    for index, size in enumerate(_CATEGORY_SIZES):
        labels = np.array([f"c{index}_{value}" for value in range(size)] + ["brand-new"], dtype=object)
        weights = np.linspace(1, 2, size)
        weights = np.append(weights / weights.sum(), 0.0)
        if shifted and index == 0:
            weights[:size] = weights[:size][::-1]  # common and rare categories swap places
        if shifted and index == 1:
            weights = np.append(weights[:size] * 0.85, 0.15)  # a category never seen before
        columns[f"cat_{index}"] = pd.Series(labels[rng.choice(size + 1, rows, p=weights)], dtype=TEXT_DTYPE)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- sides in fresh processes

LABELS = {
    "engine": "engine: check_drift(reference, current files)",
    "engine-full": "engine, default check (+ domain classifier)",
    "scipy": "SciPy: ks_2samp / chi2_contingency, all rows",
    "evidently": "Evidently: Report([DataDriftPreset()])",
    "profile": "at training: read reference, build + write profile",
    "monitor": "each batch: check current file against the profile",
}
SHORT = {"engine": "engine", "engine-full": "engine + classifier", "scipy": "SciPy", "evidently": "Evidently"}
RULES = {"engine": "BH-adjusted tests and effect floors", "engine-full": "BH-adjusted tests and effect floors",
         "scipy": "p < 0.05 per column", "evidently": "its defaults"}


@dataclass
class Runs:
    """The fresh-process runs of one side, under one interpreter, at one thread count."""

    side: str
    env: str
    threads: int
    results: list[dict] = field(default_factory=list)
    failure: str | None = None

    def best(self, key: str) -> float:
        return min(result[key] for result in self.results)

    def median(self, key: str) -> float:
        return statistics.median(result[key] for result in self.results)


def _child_environment(threads: int) -> dict[str, str]:
    environment = dict(os.environ)
    # Imports are timed as in an installed environment, with bytecode cached by the warm-up run.
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    environment.update({name: str(threads) for name in _THREAD_VARIABLES})
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_ROOT), environment.get("PYTHONPATH"))))
    return environment


def _run_side(python: str, side: str, threads: int, files: dict[str, Path], *, import_only: bool = False) -> dict:
    command = [python, str(_SIDES_SCRIPT), side, "--threads", str(threads), "--reference", str(files["reference"]),
               "--current", str(files["current"]), "--profile-dir", str(files["profile"])]
    if import_only:
        command.append("--import-only")
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=_child_environment(threads), cwd=_ROOT)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        tail = (finished.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{side} under {python} exited {finished.returncode}: {tail}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["process_seconds"] = seconds
    return result


def _evidently_interpreter(requested: str | None) -> tuple[str | None, str]:
    """The interpreter that runs Evidently, or None and the reason there is none."""
    python = requested or sys.executable
    if not Path(python).exists():
        return None, f"{python} does not exist"
    check = "import evidently, pandas; print(evidently.__version__, pandas.__version__)"
    probe = subprocess.run([python, "-c", check], capture_output=True, text=True, env=_child_environment(1))
    if probe.returncode == 0:
        return python, probe.stdout.strip()
    reason = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
    if requested:
        return None, f"importing evidently under {python} failed: {reason}"
    return None, (f"not importable here ({reason}); Evidently 0.7 needs pandas < 3, so make a venv with "
                  "`python -m venv DIR && DIR/bin/pip install 'evidently>=0.7,<0.8' 'pandas>=2.2,<3' pyarrow` "
                  "and pass --evidently-python DIR/bin/python")


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _pair(runs: Runs, key: str) -> str:
    return f"{_seconds(runs.best(key))} / {_seconds(runs.median(key))} s"


def _flagged(runs: Runs) -> set[str]:
    return {name for name, drifted in runs.results[0]["verdict"].items() if drifted}


def _write_inputs(rows: int, directory: Path) -> dict[str, Path]:
    files = {"reference": directory / "reference.parquet", "current": directory / "current.parquet",
             "profile": directory / "profile"}
    make_frame(rows, 0, shifted=False).to_parquet(files["reference"])
    make_frame(rows, 1, shifted=True).to_parquet(files["current"])
    return files


# --------------------------------------------------------------------------- the main comparison

def main_section(rows: int, repeat: int, thread_counts: list[int], evidently_python: str | None, work: Path,
                 quick: bool = False) -> bool:
    start = time.perf_counter()
    files = _write_inputs(rows, work)
    generated = time.perf_counter() - start
    reference_mb, current_mb = (files[name].stat().st_size / 2**20 for name in ("reference", "current"))
    evidently, evidently_note = _evidently_interpreter(evidently_python)
    envs = {"A": sys.executable}
    plan = [("engine", "A"), ("engine-full", "A"), ("scipy", "A")]
    if evidently is not None and Path(evidently).absolute() == Path(sys.executable).absolute():
        plan.append(("evidently", "A"))
    elif evidently is not None:  # another interpreter: the engine and SciPy run under it too
        envs["B"] = evidently
        plan += [("engine", "B"), ("scipy", "B"), ("evidently", "B")]
    monitoring = [("profile", "A"), ("monitor", "A")]

    threads_text = ", ".join(map(str, thread_counts))
    print(f"== equal raw work: {rows:,} rows x 25 columns (20 numeric, 5 text) in each of two Parquet files; "
          f"{len(SHIFTED)} features shifted, {len(TRIVIAL)} shifted trivially (0.01 sd) ==")
    print(f"inputs:  {files['reference'].name} ({reference_mb:,.0f} MB) and {files['current'].name} "
          f"({current_mb:,.0f} MB), the same two files for every side; generated once in {generated:.1f} s, not timed")
    print("work:    each run is a fresh process that imports its side's libraries, reads both files and returns a "
          "drift verdict per feature; nothing is prepared in advance (the engine profiles the raw reference inside "
          "its timing)")
    print(f"timing:  best / median of {repeat} fresh processes for every row, the same for every side, rounds "
          f"interleaved; import = median time to import the side's libraries; read+decide = from reading the files to the "
          f"verdict; end to end = the whole process timed from outside (interpreter start, import, work, exit)")
    print(f"threads: {threads_text} for every side: {'/'.join(_THREAD_VARIABLES)} and Arrow's CPU pool set to it "
          f"(read back below), engine workers = it, SciPy's columns on a pool of that many threads; Evidently has "
          f"no thread setting of its own")
    for env, python in envs.items():
        print(f"env {env}:   {python}")
    if evidently is None:
        print(f"Evidently: NOT RUN: {evidently_note}")
    print(f"machine: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}; "
          f"load average before {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()

    for side, env in plan + monitoring:  # warm-up: caches bytecode and files; not timed
        _run_side(envs[env], side, thread_counts[0], files, import_only=True)
    _run_side(envs["A"], "profile", thread_counts[0], files)  # the monitor rows need a stored profile

    table = {(side, env, threads): Runs(side, env, threads) for threads in thread_counts
             for side, env in plan + monitoring}
    started = time.perf_counter()
    for _ in range(repeat):
        for threads in thread_counts:
            for side, env in plan + monitoring:
                runs = table[side, env, threads]
                if runs.failure:
                    continue
                try:
                    runs.results.append(_run_side(envs[env], side, threads, files))
                except RuntimeError as error:
                    runs.failure = str(error)
    load_after = os.getloadavg()[0]

    ok = True
    versions = {}
    for runs in table.values():
        if runs.results:
            versions.setdefault(runs.env, {}).update(runs.results[0]["versions"])
    for env in envs:
        print(f"env {env}:   " + ", ".join(f"{name} {version}" for name, version in versions.get(env, {}).items()))
    print(f"all runs took {time.perf_counter() - started:.0f} s; load average after {load_after:.2f}")
    for threads in thread_counts:
        print()
        print(f"-- {threads} thread{'s' if threads > 1 else ''}, raw files to verdict "
              f"(ratios: this row's best / the engine's best under the same env) --")
        print(f"{'side':50s} {'env':>3s} {'import':>7s} {'read+decide best / median':>26s} {'x engine':>8s} "
              f"{'end to end best / median':>25s} {'x engine':>8s} {'peak RSS':>9s}")
        for side, env in plan:
            runs = table[side, env, threads]
            if not runs.results:
                print(f"{LABELS[side]:50s} {env:>3s} FAILED: {runs.failure}")
                ok = False
                continue
            engine = table["engine", env, threads]
            ratio = (lambda key: f"{runs.best(key) / engine.best(key):7.1f}x") if engine.results else (lambda key: "")
            print(f"{LABELS[side]:50s} {env:>3s} {runs.median('import_seconds'):6.2f}s "
                  f"{_pair(runs, 'compute_seconds'):>26s} {ratio('compute_seconds'):>8s} "
                  f"{_pair(runs, 'process_seconds'):>25s} {ratio('process_seconds'):>8s} "
                  f"{runs.median('peak_rss') / 2**20:7,.0f}MB")
            if runs.failure:
                print(f"{'':50s}     (a later run failed: {runs.failure})")
        pools = {json.dumps(result["threads"], sort_keys=True) for runs in table.values() if runs.threads == threads
                 for result in runs.results}
        print(f"{'thread pools read back from the processes':50s}     " + "; ".join(sorted(pools)))
        if evidently is None:
            print(f"{LABELS['evidently']:50s}     NOT RUN: {evidently_note}")

    threads = thread_counts[-1]
    print()
    print(f"detection at {threads} thread{'s' if threads > 1 else ''} (truth: {', '.join(SHIFTED)}; "
          f"trivially shifted: {', '.join(TRIVIAL)})")
    truth = set(SHIFTED)
    engine_found: set[str] | None = None
    for side, env in plan:
        runs = table[side, env, threads]
        if not runs.results:
            continue
        found = _flagged(runs)
        steady = all({n for n, d in r["verdict"].items() if d} == found for r in runs.results)
        print(f"  {SHORT[side] + ', env ' + env:26s} {RULES[side]:36s} flagged {len(found):2d}: "
              f"found {len(found & truth)}/{len(truth)}, false alarms {sorted(found - truth) or 'none'}"
              + ("" if steady else "  (NOT the same in every run)"))
        if "methods" in runs.results[0]:
            print(f"  {'':26s} ({'; '.join(runs.results[0]['methods'])})")
        if side == "engine" and env == "A":
            engine_found = found
    detected = engine_found == truth
    print(f"  [{'PASS' if detected else 'FAIL'}] engine: every shifted feature found, no false alarm, "
          f"trivial shifts silenced")
    ok &= detected or quick

    print()
    print("== monitoring path (engine only, env A): the profile is made once at training time and stored; each batch "
          "is then checked against it ==")
    print("   not comparable with the rows above: no baseline there was given a stored preparation, so no ratio is "
          "printed; the raw-file engine row is roughly the two steps below in one process")
    profile_mb = sum(path.stat().st_size for path in files["profile"].iterdir()) / 2**20
    for threads in thread_counts:
        build, check = table["profile", "A", threads], table["monitor", "A", threads]
        if not build.results or not check.results:
            print(f"   {threads} threads: FAILED: {build.failure or check.failure}")
            ok = False
            continue
        print(f"-- {threads} thread{'s' if threads > 1 else ''} (best / median of {repeat} fresh processes) --")
        print(f"   {LABELS['profile']:52s} read {_pair(build, 'read_seconds')}, build + write "
              f"{_pair(build, 'build_seconds')}; end to end {_pair(build, 'process_seconds')} "
              f"(import {build.median('import_seconds'):.2f} s); profile on disk {profile_mb:.1f} MB")
        print(f"   {LABELS['monitor']:52s} read+decide {_pair(check, 'compute_seconds')}; end to end "
              f"{_pair(check, 'process_seconds')} (import {check.median('import_seconds'):.2f} s); "
              f"peak RSS {check.median('peak_rss') / 2**20:,.0f} MB; flagged {len(_flagged(check))}, "
              f"found {len(_flagged(check) & truth)}/{len(truth)}")
    return ok


def scale_section(rows: int, columns: int, work: Path) -> bool:
    size = rows * columns * 4
    print()
    print(f"== scale, monitoring path: {rows:,} rows x {columns:,} float32 columns ({size / 1e9:.1f} GB) read "
          f"from Parquet, checked against a stored profile; engine only, one fresh process each ==")
    shifted = set(range(0, columns, 3))
    start = time.perf_counter()
    batch_path = work / "batch.parquet"
    _write_parquet(batch_path, rows, columns, shifted, seed=11)
    written = time.perf_counter() - start
    reference_rows = min(rows, 100_000)
    reference = _float_frame(np.random.default_rng(12).standard_normal((columns, reference_rows), dtype=np.float32))
    start = time.perf_counter()
    build_reference_profile(reference, model="scale").write(work / "profile")
    built = time.perf_counter() - start
    del reference
    gc.collect()
    print(f"wrote the batch ({batch_path.stat().st_size / 1e9:.2f} GB on disk) in {written:.1f} s (not timed); "
          f"the profile of {reference_rows:,} in-memory reference rows (training time) took {built:.1f} s "
          f"to build and write; below, one fresh process each, imports excluded, the default configuration "
          f"(classifier included, threads: every core, {os.cpu_count()})")
    read = _child("read", work)
    check = _child("check", work)
    flagged = set(check["drifted"])
    truth = {f"f{index:04d}" for index in shifted}
    print(f"{'read every column group only (pyarrow)':50s} {read['seconds']:8.1f}s   "
          f"peak RSS {megabytes(read['peak_rss'])}")
    print(f"{'full drift check (profile + Parquet)':50s} {check['seconds']:8.1f}s   "
          f"peak RSS {megabytes(check['peak_rss'])}"
          f"   (of which {megabytes(check['rss_before'])} is Python and its libraries, before reading)")
    print(f"detection: {len(flagged & truth)}/{len(truth)} shifted columns found, {len(flagged - truth)} false alarms; "
          f"verdict drifted={check['verdict']}, severity={check['severity']}, "
          f"domain classifier AUC {check['auc']:.3f}")
    goals = [
        (f"under 2 minutes: {check['seconds']:.1f} s", check["seconds"] < 120),
        (f"under 1.5 GB peak memory: {check['peak_rss'] / 2**30:.2f} GiB", check["peak_rss"] < 1.5 * 2**30),
        ("detection: every shifted column found, no false alarm", flagged == truth),
    ]
    print("goals")
    for text, ok in goals:
        print(f"  [{verdict(ok)}] {text}")
    return all(ok for _, ok in goals)


def _float_frame(matrix: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({f"f{index:04d}": matrix[index] for index in range(matrix.shape[0])}, copy=False)


def _write_parquet(path: Path, rows: int, columns: int, shifted: set[int], seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = [f"f{index:04d}" for index in range(columns)]
    schema = pa.schema([(name, pa.float32()) for name in names])
    step = max(1, min(rows, 100_000_000 // columns))  # about 400 MB generated at a time
    moved = np.array(sorted(shifted))
    # Random floats neither compress nor dictionary-encode; writers fall back to plain pages.
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for begin in range(0, rows, step):
            block = rng.standard_normal((columns, min(step, rows - begin)), dtype=np.float32)
            block[moved] += np.float32(0.3)
            writer.write_table(pa.table([block[index] for index in range(columns)], schema=schema))
            del block


def _child(mode: str, work: Path) -> dict:
    """Run one measurement in a fresh process, so its peak RSS is its own."""
    command = [sys.executable, __file__, "--child", mode, str(work)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _memory_status(field: str) -> int:
    """VmHWM (peak) or VmRSS (now) of this process in bytes. ru_maxrss would also count the
    parent's pages at the moment it spawned this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(mode: str, work: Path) -> None:
    rss_before = _memory_status("VmRSS")
    start = time.perf_counter()
    result: dict = {}
    if mode == "read":
        from pipeline.monitor import open_batch

        batch = open_batch(work / "batch.parquet")
        for group in batch.column_groups(batch.columns, DriftConfig().memory_budget_bytes):
            del group
    else:
        report = check_drift(work / "profile", work / "batch.parquet")
        result = {"drifted": [f.name for f in report.features if f.drifted], "verdict": report.drifted,
                  "severity": report.severity, "auc": report.multivariate.auc}
    result.update(seconds=time.perf_counter() - start, rss_before=rss_before, peak_rss=_memory_status("VmHWM"))
    print(json.dumps(result))


def megabytes(size: float) -> str:
    return f"{size / 2**20:,.0f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k rows and one run per side: a smoke run")
    parser.add_argument("--scale", action="store_true", help="also run the 1M x 1,000 float32 Parquet case")
    parser.add_argument("--skip-main", action="store_true", help="run only the --scale section")
    parser.add_argument("--repeat", type=int, default=None,
                        help="fresh-process runs of every side (the same for all; default 3, 1 with --quick)")
    parser.add_argument("--threads", default="2",
                        help="comma-separated thread counts, every side run at each (default 2)")
    parser.add_argument("--evidently-python", default=os.environ.get("DRIFT_BENCH_EVIDENTLY_PYTHON"),
                        help="an interpreter with Evidently 0.7 and pandas < 3 (default: "
                             "$DRIFT_BENCH_EVIDENTLY_PYTHON, else this interpreter if it has Evidently)")
    parser.add_argument("--tmpdir", default=None, help="where the Parquet inputs are written (deleted after)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child[0], Path(arguments.child[1]))
        return 0
    repeat = arguments.repeat or (1 if arguments.quick else 3)
    thread_counts = [int(value) for value in arguments.threads.split(",")]
    ok = True
    if not arguments.skip_main:
        work = Path(tempfile.mkdtemp(prefix="drift-bench-", dir=arguments.tmpdir))
        try:
            ok &= main_section(100_000 if arguments.quick else 1_000_000, repeat, thread_counts,
                               arguments.evidently_python, work, arguments.quick)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if arguments.scale:
        work = Path(tempfile.mkdtemp(prefix="drift-bench-", dir=arguments.tmpdir))
        try:
            ok &= scale_section(*((100_000, 200) if arguments.quick else (1_000_000, 1_000)), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
