"""Drift engine benchmark: speed, peak memory and detection results against baselines, in one run.

    python benchmarks/drift_bench.py            # 1M rows x (20 numeric + 5 categorical), a third shifted
    python benchmarks/drift_bench.py --quick    # the same at 100k rows: a smoke run
    python benchmarks/drift_bench.py --scale    # adds 1M rows x 1,000 float32 columns (4 GB) read from Parquet

Every ratio compares figures measured in this run on this machine. Times are the best of
``--repeat`` runs; peak memory is measured in separate runs under tracemalloc (the extra
memory a method allocates while the batch is already loaded), and for the Parquet case as
the peak resident set size of a fresh process. Detection results are printed next to the
timings so that speed is never bought with wrong answers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.drift import DriftConfig, check_drift
from pipeline.profile import build_reference_profile, category_counts

# Features that really moved, and two that moved by a trivial 0.01 sd that should not count.
SHIFTED = ("num_00", "num_01", "num_02", "num_03", "num_04", "num_05", "cat_0", "cat_1")
TRIVIAL = ("num_06", "num_07")
_CATEGORY_SIZES = (8, 20, 3, 50, 200)
# Text columns as the bot reads them from Parquet: Arrow strings, in pandas 3 ("str") and in
# pandas 2 ("string[pyarrow]"), rather than pandas 2's default of Python objects.
TEXT_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else "string[pyarrow]"


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


# --------------------------------------------------------------------------- methods

def sort_floor(batch: pd.DataFrame, workers: int = 1) -> None:
    """Sort each numeric column once with NumPy: what any exact ECDF comparison must at least do."""
    columns = [batch[name].to_numpy() for name in batch.columns if name.startswith("num_")]
    if workers == 1:
        for column in columns:
            np.sort(column)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(np.sort, columns))


def scipy_loop(profile, batch: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The usual way: one scipy.stats call per column, on the same inputs the engine sees."""
    results = {}
    for feature in profile.features:
        if feature.kind == "numeric":
            reference = profile.sample[feature.name].to_numpy()
            current = batch[feature.name].to_numpy()
            ks = stats.ks_2samp(reference, current)
            results[feature.name] = {"statistic": ks.statistic, "p_value": ks.pvalue,
                                     "wasserstein": stats.wasserstein_distance(reference, current)}
        else:
            current = category_counts(batch[feature.name])
            labels = sorted(set(feature.categorical.counts) | set(current.index))
            table = np.array([[feature.categorical.counts.get(label, 0) for label in labels],
                              [int(current.get(label, 0)) for label in labels]])
            chi2 = stats.chi2_contingency(table)
            results[feature.name] = {"statistic": chi2.statistic, "p_value": chi2.pvalue}
    return results


def evidently_runner(reference: pd.DataFrame, batch: pd.DataFrame):
    """Evidently's data-drift preset, if Evidently is installed (it is not a dependency)."""
    try:
        try:
            from evidently import Report
            from evidently.presets import DataDriftPreset
        except ImportError:
            from evidently.metric_preset import DataDriftPreset
            from evidently.report import Report
    except ImportError:
        return None

    def run():
        report = Report(metrics=[DataDriftPreset()])
        result = report.run(reference_data=reference, current_data=batch)
        return result if result is not None else report
    return run


# --------------------------------------------------------------------------- measuring

def best_time(function, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_memory(function) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def megabytes(size: float) -> str:
    return f"{size / 2**20:,.0f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------- sections

def main_section(rows: int, repeat: int, quick: bool = False) -> bool:
    print(f"== {rows:,} rows x 25 features (20 numeric, 5 categorical); "
          f"{len(SHIFTED)} shifted, {len(TRIVIAL)} shifted trivially (0.01 sd) ==")
    start = time.perf_counter()
    reference, batch = make_frame(rows, 0, shifted=False), make_frame(rows, 1, shifted=True)
    print(f"data generated in {time.perf_counter() - start:.1f} s")
    build_seconds, profile = best_time(lambda: build_reference_profile(reference, model="bench"), 1)
    batch_bytes = int(batch.memory_usage(deep=True).sum())
    print(f"reference profile built in {build_seconds:.2f} s (done once, at packaging); "
          f"batch size in memory {megabytes(batch_bytes)}; {os.cpu_count()} cores; "
          f"load average before timing {os.getloadavg()[0]:.2f}")
    print(f"pandas {pd.__version__}, numpy {np.__version__}; text columns as {TEXT_DTYPE!r} (Arrow strings)")

    per_feature = DriftConfig(multivariate=False)
    methods = {
        "engine (per-feature tests)": lambda: check_drift(profile, batch, config=per_feature),
        "engine (full check, + domain classifier)": lambda: check_drift(profile, batch),
        "sort floor (np.sort per numeric column, 1 core)": lambda: sort_floor(batch, 1),
        "sort floor, 2 threads (for reference)": lambda: sort_floor(batch, 2),
        "scipy.stats per-column loop": lambda: scipy_loop(profile, batch),
    }
    evidently = evidently_runner(reference, batch)
    if evidently is not None:
        methods["Evidently DataDriftPreset"] = evidently
    times, outputs, peaks = {}, {}, {}
    fast = [name for name in methods if not name.startswith(("scipy", "Evidently"))]
    for _ in range(repeat):  # interleaved, so that load from elsewhere falls on every method alike
        for name in fast:
            seconds, outputs[name] = best_time(methods[name], 1)
            times[name] = min(times.get(name, float("inf")), seconds)
    for name in methods:
        if name not in fast:
            times[name], outputs[name] = best_time(methods[name], 1)
    for name, function in methods.items():
        peaks[name] = peak_memory(function)

    engine_name = "engine (per-feature tests)"
    engine = times[engine_name]
    print(f"times: best of {repeat} interleaved runs (slow baselines: one run); "
          f"load average after timing {os.getloadavg()[0]:.2f}")
    print()
    print(f"{'method':50s} {'time':>9s} {'vs engine':>10s} {'peak extra memory':>18s} {'vs batch':>9s}")
    for name in methods:
        print(f"{name:50s} {times[name]:8.3f}s {times[name] / engine:9.1f}x {megabytes(peaks[name]):>18s} "
              f"{peaks[name] / batch_bytes:8.2f}x")
    if evidently is None:
        print(f"{'Evidently DataDriftPreset':50s} not installed")

    report, full_report = outputs[engine_name], outputs["engine (full check, + domain classifier)"]
    baseline = outputs["scipy.stats per-column loop"]
    truth = set(SHIFTED)
    flagged = {f.name for f in report.features if f.drifted}
    naive = {name for name, result in baseline.items() if result["p_value"] < 0.05}
    print()
    print("detection (truth: " + ", ".join(SHIFTED) + "; trivially shifted: " + ", ".join(TRIVIAL) + ")")
    for label, found in (("engine", flagged), ("scipy loop, p < 0.05 per column", naive)):
        print(f"  {label:32s} flagged {len(found):2d}: found {len(found & truth)}/{len(truth)} shifted, "
              f"false alarms {sorted(found - truth) or 'none'}")
    print(f"  engine verdict: drifted={report.drifted}, severity={report.severity}; "
          f"full check: drifted={full_report.drifted}, severity={full_report.severity}, "
          f"domain classifier AUC {full_report.multivariate.auc:.3f}")
    ks_gap = max(abs(f.statistic - baseline[f.name]["statistic"]) for f in report.features if f.test == "ks")
    p_gap = max(_relative(f.p_value, baseline[f.name]["p_value"]) for f in report.features)
    w_gap = max(_relative(f.statistics["wasserstein"]["value"], baseline[f.name]["wasserstein"])
                for f in report.features if f.test == "ks")
    chi_gap = max(_relative(f.statistic, baseline[f.name]["statistic"]) for f in report.features if f.test == "chi2")
    print(f"  agreement with SciPy: max |KS difference| {ks_gap:.1e}, max relative p-value difference {p_gap:.1e}, "
          f"Wasserstein {w_gap:.1e}, chi-square {chi_gap:.1e}")

    floor = times["sort floor (np.sort per numeric column, 1 core)"]
    full = times["engine (full check, + domain classifier)"]
    goals = [
        (f"per-feature engine at least 10x faster than the SciPy loop: "
         f"{times['scipy.stats per-column loop'] / engine:.1f}x", times["scipy.stats per-column loop"] / engine >= 10),
        (f"per-feature engine within 1.5x the sort floor: {engine / floor:.2f}x", engine / floor <= 1.5),
        (f"per-feature engine peak memory under 1.5x the batch: {peaks[engine_name] / batch_bytes:.2f}x",
         peaks[engine_name] / batch_bytes < 1.5),
        (f"full check (with the domain classifier) peak memory under 1.5x the batch: "
         f"{peaks['engine (full check, + domain classifier)'] / batch_bytes:.2f}x",
         peaks["engine (full check, + domain classifier)"] / batch_bytes < 1.5),
        ("detection: every shifted feature found, no false alarm, trivial shifts silenced",
         flagged == truth),
    ]
    if evidently is not None:
        ratio = times["Evidently DataDriftPreset"] / engine
        goals.append((f"at least 100x faster than Evidently: {ratio:.0f}x", ratio >= 100))
    print()
    print("goals" + (" (set for 1M rows: at this size fixed per-feature costs dominate, so a --quick run "
                     "only shows that everything runs)" if quick else ""))
    for text, ok in goals:
        print(f"  [{verdict(ok)}] {text}")
    if evidently is None:
        print("  [n/a ] at least 100x faster than Evidently: Evidently not installed")
    print(f"  [info] full check (with the domain classifier): {full:.3f} s = {full / floor:.2f}x the sort floor, "
          f"{times['scipy.stats per-column loop'] / full:.1f}x faster than the SciPy loop")
    return quick or all(ok for _, ok in goals)


def _relative(value: float, expected: float) -> float:
    return abs(value - expected) / max(abs(expected), 1e-300) if expected else abs(value)


def scale_section(rows: int, columns: int, work: Path) -> bool:
    size = rows * columns * 4
    print()
    print(f"== scale: {rows:,} rows x {columns:,} float32 columns ({size / 1e9:.1f} GB) read from Parquet ==")
    shifted = set(range(0, columns, 3))
    start = time.perf_counter()
    batch_path = work / "batch.parquet"
    _write_parquet(batch_path, rows, columns, shifted, seed=11)
    reference_rows = min(rows, 100_000)
    reference = _float_frame(np.random.default_rng(12).standard_normal((columns, reference_rows), dtype=np.float32))
    build_reference_profile(reference, model="scale").write(work / "profile")
    del reference
    gc.collect()
    print(f"wrote the batch ({batch_path.stat().st_size / 1e9:.2f} GB on disk) and a profile of "
          f"{reference_rows:,} reference rows in {time.perf_counter() - start:.1f} s")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scale sizes down for a smoke run")
    parser.add_argument("--scale", action="store_true", help="also run the 1M x 1,000 float32 Parquet case")
    parser.add_argument("--skip-main", action="store_true", help="run only the --scale section")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per fast method (best is kept)")
    parser.add_argument("--tmpdir", default=None, help="where the --scale case writes its Parquet (deleted after)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child[0], Path(arguments.child[1]))
        return 0
    ok = True
    if not arguments.skip_main:
        ok &= main_section(100_000 if arguments.quick else 1_000_000, arguments.repeat, arguments.quick)
    if arguments.scale:
        work = Path(tempfile.mkdtemp(prefix="drift-bench-", dir=arguments.tmpdir))
        try:
            ok &= scale_section(*((100_000, 200) if arguments.quick else (1_000_000, 1_000)), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
