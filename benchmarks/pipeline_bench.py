"""Pipeline overhead: `pipeline run` against the bare scikit-learn fit and predict it wraps.

Both sides train the same estimator (the default preprocessing in front of
HistGradientBoostingClassifier) on the same 200k synthetic rows with the same split; the bare
side fits on the training rows and predicts the held-out rows, in memory. The pipeline also reads
the file, fingerprints the data, saves the model with skops, writes the reference profile, scores
held-out data, compares with production (second run) and publishes to the registry: the embedded
MLflow store the bot uses by default (an MLflow run with its params, metrics and artifacts, a
registered version, the candidate and production aliases). Threads: the estimator uses its default
OpenMP threads on both sides alike; everything else runs in one thread.

Goal (issue 2): pipeline run at most 1.3 times the bare fit and predict.

    python benchmarks/pipeline_bench.py [--rows 200000] [--format parquet|csv]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import load_dataset, split_dataset
from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri
from pipeline.registry_port import RegistryPort
from pipeline.run import run_pipeline
from pipeline.spec import load_project
from pipeline.train import build_estimator

TOML = """
[project]
name = "bench"

[data]
path = "data.{ext}"
target = "label"

[model]
estimator = "sklearn.ensemble.HistGradientBoostingClassifier"
params = {{ max_iter = 100 }}

[metrics]
primary = "roc_auc"
others = ["accuracy", "log_loss"]

[gates]
max_regression = 0.05
"""


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 20))
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(20)])
    for i in range(3):
        frame[f"c{i}"] = rng.choice([f"level{k}" for k in range(8)], size=rows)
    logit = numeric[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.3]) + (frame["c0"] == "level1") * 0.7
    frame["label"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame.loc[rng.random(rows) < 0.02, "x3"] = np.nan
    return frame


def bare_fit_predict(project: Path) -> float:
    spec = load_project(project)
    dataset = load_dataset(spec.data, spec.root)
    x_train, x_test, y_train, _ = split_dataset(dataset, spec.data, stratify_labels=True)
    estimator, _ = build_estimator(spec.model, x_train, seed=spec.data.split.seed, project_root=spec.root)
    start = time.perf_counter()
    estimator.fit(x_train, y_train)
    estimator.predict(x_test)
    return time.perf_counter() - start


def timed_run(project: Path, registry: RegistryPort):
    start = time.perf_counter()
    result = run_pipeline(project, registry, trigger="benchmark")
    elapsed = time.perf_counter() - start
    assert result.status in {"succeeded", "not_promoted"}, result.error
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--repeat", type=int, default=3, help="alternating measurements of each side (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "mlops.toml").write_text(textwrap.dedent(TOML.format(ext=args.format)))
        frame = synthetic(args.rows)
        if args.format == "parquet":
            frame.to_parquet(project / "data.parquet", index=False)
        else:
            frame.to_csv(project / "data.csv", index=False)
        data_dir = Path(tmp) / "state"
        registry = MlflowRegistry(embedded_tracking_uri(data_dir), data_dir=data_dir)

        # No production model yet, so no comparison; it also creates the store (MLflow's migrations).
        first, _ = timed_run(project, registry)
        bare, runs, last = [], [], None
        for _ in range(args.repeat):  # alternate, so a busy moment hits both sides alike
            bare.append(bare_fit_predict(project))
            elapsed, last = timed_run(project, registry)
            runs.append(elapsed)

    print(f"{args.rows} rows x 23 features from {args.format}, HistGradientBoostingClassifier(max_iter=100), "
          f"{args.repeat} alternating repeats")
    print(f"bare fit + predict (in memory)       best {min(bare):6.2f} s  median {statistics.median(bare):6.2f} s")
    print(f"pipeline run (against production)    best {min(runs):6.2f} s  median {statistics.median(runs):6.2f} s")
    print(f"first pipeline run (nothing to compare with; creates the MLflow store): {first:.2f} s")
    print("stages of the last run: " + ", ".join(f"{s.name} {s.duration_s:.2f}s" for s in last.stages))
    ratio = min(runs) / min(bare)
    print(f"ratio (best/best): {ratio:.2f}x  (goal <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'}); "
          f"ratio (median/median): {statistics.median(runs) / statistics.median(bare):.2f}x; "
          f"held-out roc_auc {last.validation['metrics']['roc_auc']:.4f}")


if __name__ == "__main__":
    main()
