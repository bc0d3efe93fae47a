"""One side of benchmarks/drift_bench.py's comparison, run in a fresh process and timed there.

    python benchmarks/drift_sides.py SIDE --reference REF.parquet --current CUR.parquet --threads N

The parent sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and ARROW_IO_THREADS
to N before this process starts (Arrow sizes its CPU pool from OMP_NUM_THREADS). This module
imports only the standard library at the top, so that ``import_seconds`` is the cost of the
side's own libraries in a fresh interpreter, and ``compute_seconds`` runs from reading the
Parquet files to a verdict per feature. The last line of stdout is one JSON object.

Sides:
  engine           pipeline.drift.check_drift(reference file, current file), per-feature tests only:
                   the reference is profiled inside the timing
  engine-full      the same with the engine's default configuration (adds the domain classifier)
  scipy            pandas.read_parquet of both files, then per column scipy.stats.ks_2samp (numeric)
                   or chi2_contingency on the two count vectors (categorical), on all rows;
                   drifted when p < 0.05; columns spread over N threads
  evidently        pandas.read_parquet of both files, then Evidently's Report([DataDriftPreset()])
                   with its defaults; drifted as its per-column drift metric says
  profile          the monitoring path at training time: read the reference file, build the
                   engine's reference profile and write it to --profile-dir
  monitor          the monitoring path at each batch: check the current file against the
                   profile stored in --profile-dir, per-feature tests only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _import(side: str) -> dict:
    if side in ("engine", "engine-full", "monitor"):
        from pipeline.drift import DriftConfig, check_drift
        return {"DriftConfig": DriftConfig, "check_drift": check_drift}
    if side == "profile":
        import pandas as pd

        from pipeline.profile import build_reference_profile
        return {"pd": pd, "build_reference_profile": build_reference_profile}
    if side == "scipy":
        import numpy as np
        import pandas as pd
        import pyarrow.parquet  # noqa: F401  (pandas reads Parquet through it)
        from scipy import stats
        return {"np": np, "pd": pd, "stats": stats}
    if side == "evidently":
        import pandas as pd
        import pyarrow.parquet  # noqa: F401
        try:
            from evidently import Report
            from evidently.presets import DataDriftPreset
        except ImportError:  # Evidently before 0.7
            from evidently.metric_preset import DataDriftPreset
            from evidently.report import Report
        return {"pd": pd, "Report": Report, "DataDriftPreset": DataDriftPreset}
    raise SystemExit(f"unknown side {side!r}")


def _engine(lib: dict, arguments, multivariate: bool, reference) -> tuple[dict, dict]:
    config = lib["DriftConfig"](workers=arguments.threads, multivariate=multivariate)
    report = lib["check_drift"](reference, Path(arguments.current), config=config)
    extra = {"dataset_drifted": bool(report.drifted), "reference_sample_rows": report.reference["sample_rows"]}
    if report.multivariate is not None:
        extra["classifier_auc"] = report.multivariate.auc
    return {f.name: bool(f.drifted) for f in report.features}, extra


def _scipy(lib: dict, arguments) -> tuple[dict, dict]:
    from concurrent.futures import ThreadPoolExecutor

    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    np, pd, stats = lib["np"], lib["pd"], lib["stats"]
    reference, current = pd.read_parquet(arguments.reference), pd.read_parquet(arguments.current)

    def p_value(name: str) -> float:
        left, right = reference[name], current[name]
        if is_numeric_dtype(left.dtype) and not is_bool_dtype(left.dtype):
            return float(stats.ks_2samp(left.to_numpy(), right.to_numpy()).pvalue)
        counts = pd.concat([left.value_counts(dropna=False), right.value_counts(dropna=False)], axis=1).fillna(0)
        return float(stats.chi2_contingency(counts.to_numpy(dtype=np.float64).T).pvalue)

    names = list(reference.columns)
    with ThreadPoolExecutor(arguments.threads) as pool:
        p_values = dict(zip(names, pool.map(p_value, names)))
    return {name: p < 0.05 for name, p in p_values.items()}, {}


def _evidently(lib: dict, arguments) -> tuple[dict, dict]:
    pd = lib["pd"]
    reference, current = pd.read_parquet(arguments.reference), pd.read_parquet(arguments.current)
    report = lib["Report"](metrics=[lib["DataDriftPreset"]()])
    snapshot = report.run(reference_data=reference, current_data=current)
    verdict, methods = {}, set()
    for metric in (snapshot if snapshot is not None else report).dict()["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method, threshold, value = str(config["method"]), float(config["threshold"]), float(metric["value"])
        # p-value tests drift below the threshold; distances (Wasserstein, Jensen-Shannon, PSI) at or above it.
        below = "p_value" in method
        methods.add(f"{method} {'<' if below else '>='} {threshold:g}")
        verdict[str(config["column"])] = value < threshold if below else value >= threshold
    return verdict, {"methods": sorted(methods)}


def _profile(lib: dict, arguments) -> tuple[dict, dict]:
    start = time.perf_counter()
    frame = lib["pd"].read_parquet(arguments.reference)
    read = time.perf_counter() - start
    lib["build_reference_profile"](frame, model="bench").write(Path(arguments.profile_dir))
    return {}, {"read_seconds": read, "build_seconds": time.perf_counter() - start - read}


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _threads_in_use() -> dict:
    """What the pools really are, read after the timing."""
    found: dict = {}
    try:
        import pyarrow as pa
        found["arrow_cpu"], found["arrow_io"] = pa.cpu_count(), pa.io_thread_count()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
        found["blas"] = sorted({f"{pool['internal_api']}={pool['num_threads']}" for pool in threadpool_info()})
    except ImportError:
        pass
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("side", choices=("engine", "engine-full", "scipy", "evidently", "profile", "monitor"))
    parser.add_argument("--reference", required=True)
    parser.add_argument("--current", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--profile-dir", default=None)
    parser.add_argument("--import-only", action="store_true", help="import and exit (a warm-up, not timed)")
    arguments = parser.parse_args()

    start = time.perf_counter()
    lib = _import(arguments.side)
    imported = time.perf_counter()
    if arguments.import_only:
        print(json.dumps({"import_seconds": imported - start}))
        return 0
    if arguments.side == "engine":
        verdict, extra = _engine(lib, arguments, False, Path(arguments.reference))
    elif arguments.side == "engine-full":
        verdict, extra = _engine(lib, arguments, True, Path(arguments.reference))
    elif arguments.side == "monitor":
        verdict, extra = _engine(lib, arguments, False, Path(arguments.profile_dir))
    elif arguments.side == "scipy":
        verdict, extra = _scipy(lib, arguments)
    elif arguments.side == "evidently":
        verdict, extra = _evidently(lib, arguments)
    else:
        verdict, extra = _profile(lib, arguments)
    done = time.perf_counter()
    versions = {name: getattr(sys.modules[name], "__version__", "?")
                for name in ("numpy", "pandas", "pyarrow", "scipy", "sklearn", "evidently") if name in sys.modules}
    print(json.dumps({"import_seconds": imported - start, "compute_seconds": done - imported, "verdict": verdict,
                      "peak_rss": _peak_rss(), "threads": _threads_in_use(), "versions": versions,
                      "python": sys.version.split()[0], "pid": os.getpid(), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
