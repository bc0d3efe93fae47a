"""Performance estimation (CBPE) benchmark: how far the estimate is off, next to the naive estimate,
and what it costs per batch, all measured in one run.

    python benchmarks/performance_bench.py            # 20k-row batches, 1M rows for the cost
    python benchmarks/performance_bench.py --quick    # 5k-row batches, 100k rows for the cost

Two worlds of four standard-normal features, labels drawn from a known P(y | x):

* "linear": P(y | x) = sigmoid(1.5 x0 - x1 + 0.5 x2 - 0.4), which the model can learn exactly;
* "curved": the same plus 0.5 x0^2 + 0.6 x2 x3 + 0.5 sin(2 x2), which it cannot (real models are
  wrong somewhere).

In each, a logistic regression (standard scaling in front, like the pipeline's default
preprocessing) is trained on 50,000 reference rows; its calibration and its validation metrics come
from 20,000 held-out rows of the same sample, as the pipeline's validate stage fits them. Then
batches arrive, their labels drawn from the world's P(y | x) unless said otherwise:

* covariate shift, model right: x0..x2 spread shrinks to (1 - 0.3 s) of the reference, crowding
  rows at the decision boundary; the case CBPE is made for;
* concept shift: x as in the reference, but P(y | x) changed (x1's effect halved, then reversed);
  the case CBPE cannot see;
* covariate shift, model wrong: in the curved world, the means of x0 and x1 move by -0.6 s, into
  the region where the x0^2 term the model lacks matters: P(y | score) changes, and CBPE sees only
  part of the drop.

Per batch: the realised accuracy and ROC AUC, the CBPE estimate and its absolute error, and the
naive estimate (the validation metric carried forward) and its error. Then how the error depends
on the number of held-out rows the calibration was fitted on. Then the cost at ``--cost-rows``
rows: estimate_performance alone, the model's predict_proba shown separately, and, as the
baseline, computing the realised metrics once labels are known (scikit-learn's accuracy_score and
roc_auc_score on the same probabilities); best of ``--repeat``, threads stated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from pipeline.performance import Calibration, estimate_performance, fit_calibration, measured_performance
from pipeline.validate import model_outputs, score

FEATURES = ["x0", "x1", "x2", "x3"]
METRICS = ["accuracy", "roc_auc"]
TRAIN_ROWS, HELD_OUT_ROWS = 50_000, 20_000


# --------------------------------------------------------------------------- the worlds

def truth(x: np.ndarray, world: str, concept: str = "reference") -> np.ndarray:
    """P(y = 1 | x) in ``world``; a ``concept`` other than "reference" changes the relation itself."""
    x0, x1, x2, x3 = x.T
    x1_effect = {"reference": -1.0, "x1 halved": -0.5, "x1 reversed": 1.0}[concept]
    logit = 1.5 * x0 + x1_effect * x1 + 0.5 * x2 - 0.4
    if world == "curved":
        logit = logit + 0.5 * x0**2 + 0.6 * x2 * x3 + 0.5 * np.sin(2 * x2)
    return 1.0 / (1.0 + np.exp(-logit))


def draw(rng: np.random.Generator, rows: int, world: str, *, spread: float = 0.0, move: float = 0.0,
         concept: str = "reference") -> tuple[pd.DataFrame, pd.Series]:
    """Reference rows, with x0..x2 shrunk by ``spread`` steps and x0, x1 moved by ``move`` steps."""
    x = rng.normal(0.0, 1.0, (rows, 4))
    x[:, :3] *= 1.0 - 0.3 * spread
    x[:, :2] -= 0.6 * move
    labels = (rng.random(rows) < truth(x, world, concept)).astype(np.int64)
    return pd.DataFrame(x, columns=FEATURES), pd.Series(labels, name="label")


class Reference:
    """A model trained in one world, with the calibration and metrics its validation records."""

    def __init__(self, rng: np.random.Generator, world: str, held_out_rows: int = HELD_OUT_ROWS):
        self.world = world
        train_x, train_y = draw(rng, TRAIN_ROWS, world)
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000)).fit(train_x, train_y)
        self.classes = list(self.model.classes_)
        held_x, held_y = draw(rng, held_out_rows, world)
        self.calibration = self.calibrate(held_x, held_y)
        self.validated = score(self.model, held_x, held_y, task="classification", names=METRICS)

    def calibrate(self, features: pd.DataFrame, labels: pd.Series) -> Calibration:
        _, probabilities = model_outputs(self.model, features, probabilities=True)
        # Through JSON, as the monitor reads it back from metadata.json.
        stored = json.loads(json.dumps(fit_calibration(probabilities, labels.to_numpy(), self.classes).to_dict()))
        return Calibration.from_dict(stored)

    def judge(self, features: pd.DataFrame, labels: pd.Series, calibration: Calibration | None = None):
        _, probabilities = model_outputs(self.model, features, probabilities=True)
        realised = measured_performance(self.model, features, labels, task="classification", metrics=METRICS)
        estimated = estimate_performance(calibration or self.calibration, probabilities, self.classes)
        return realised, estimated


def _best(function, repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


# --------------------------------------------------------------------------- the run

SCENARIOS = (
    [("covariate, model right", f"spread {step:.1f}", "linear", {"spread": step}) for step in (0, 0.5, 1, 1.5, 2, 2.5)]
    + [("concept shift", name, "linear", {"concept": name}) for name in ("x1 halved", "x1 reversed")]
    + [("covariate, model wrong", f"move {step:.1f}", "curved", {"move": step}) for step in (0, 0.5, 1, 1.5, 2)]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches and cost rows: a smoke run")
    parser.add_argument("--batch-rows", type=int, default=None, help="rows per batch (default 20,000)")
    parser.add_argument("--cost-rows", type=int, default=None, help="rows for the cost (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings are the best of this many runs")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl)")
    parser.add_argument("--seed", type=int, default=20260512)
    args = parser.parse_args()
    batch_rows = args.batch_rows or (5_000 if args.quick else 20_000)
    cost_rows = args.cost_rows or (100_000 if args.quick else 1_000_000)
    rng = np.random.default_rng(args.seed)

    with threadpool_limits(args.threads):
        references = {world: Reference(rng, world) for world in ("linear", "curved")}
        for reference in references.values():
            knots = len(reference.calibration.curves[0].scores)
            size = len(json.dumps(reference.calibration.to_dict()))
            print(f"{reference.world} world: trained on {TRAIN_ROWS:,} rows, calibrated and validated on "
                  f"{HELD_OUT_ROWS:,} held-out rows: accuracy {reference.validated['accuracy']:.4f}, ROC AUC "
                  f"{reference.validated['roc_auc']:.4f}; calibration {knots} knots, {size:,} bytes of JSON")
        print(f"batches: {batch_rows:,} rows each; seed {args.seed}\n")

        rows = []
        for scenario, name, world, shift in SCENARIOS:
            reference = references[world]
            realised, estimated = reference.judge(*draw(rng, batch_rows, world, **shift))
            rows.append((scenario, name, realised, estimated, reference.validated))
        _print_estimates(rows)
        _print_held_out_effect(rng, references["linear"], batch_rows)
        _print_cost(rng, references["linear"], cost_rows, args.repeat, args.threads)


def _print_estimates(rows) -> None:
    header = (f"{'scenario':23s} {'batch':12s} {'acc':>6s} {'CBPE':>6s} {'|err|':>6s} {'naive':>6s} {'|err|':>6s}"
              f"   {'AUC':>6s} {'CBPE':>6s} {'|err|':>6s} {'naive':>6s} {'|err|':>6s}")
    print(header)
    print("-" * len(header))
    for scenario, name, realised, estimated, validated in rows:
        cells = [f"{realised[m]:6.3f} {estimated[m]:6.3f} {abs(estimated[m] - realised[m]):6.3f} "
                 f"{validated[m]:6.3f} {abs(validated[m] - realised[m]):6.3f}" for m in METRICS]
        print(f"{scenario:23s} {name:12s} {cells[0]}   {cells[1]}")
    print("(acc/AUC realised from the labels; CBPE the estimate before labels; naive the validation metric "
          "carried forward; |err| = |estimate - realised|)\n")
    for scenario in dict.fromkeys(row[0] for row in rows):
        group = [row for row in rows if row[0] == scenario]
        for metric in METRICS:
            cbpe = np.mean([abs(row[3][metric] - row[2][metric]) for row in group])
            naive = np.mean([abs(row[4][metric] - row[2][metric]) for row in group])
            worst = max(abs(row[3][metric] - row[2][metric]) for row in group)
            print(f"mean |error| {scenario:23s} {metric:8s}: CBPE {cbpe:.4f} (worst {worst:.4f}), "
                  f"naive {naive:.4f}: CBPE's error is {cbpe / naive:.2f}x the naive one's")
    print()


def _print_held_out_effect(rng, reference: Reference, batch_rows: int) -> None:
    """The calibration's sample size: few held-out rows give a noisy and, for ROC AUC, optimistic estimate."""
    draws = 10
    batches = [draw(rng, batch_rows, reference.world, spread=step) for step in (0, 1, 2)]
    print(f"held-out rows behind the calibration ({reference.world} world; {draws} calibrations x 3 batches, "
          "spread 0, 1, 2)")
    print(f"{'held-out rows':>14s} {'acc |err|':>10s} {'acc bias':>9s} {'AUC |err|':>10s} {'AUC bias':>9s}")
    for size in (100, 300, 1_000, 3_000, HELD_OUT_ROWS):
        signed: dict[str, list[float]] = {metric: [] for metric in METRICS}
        for _ in range(draws):
            calibration = reference.calibrate(*draw(rng, size, reference.world))
            for features, labels in batches:
                realised, estimated = reference.judge(features, labels, calibration)
                for metric in METRICS:
                    signed[metric].append(estimated[metric] - realised[metric])
        print(f"{size:14,d} " + " ".join(
            f"{np.mean(np.abs(signed[metric])):10.4f} {np.mean(signed[metric]):+9.4f}" for metric in METRICS))
    print()


def _print_cost(rng, reference: Reference, rows: int, repeat: int, threads: int) -> None:
    features, labels = draw(rng, rows, reference.world, spread=1.0)
    labels = labels.to_numpy()
    model, calibration, classes = reference.model, reference.calibration, reference.classes
    probabilities = model_outputs(model, features, probabilities=True)[1]
    predict = _best(lambda: model_outputs(model, features, probabilities=True), repeat)
    estimate = _best(lambda: estimate_performance(calibration, probabilities, classes), repeat)
    realised = _best(lambda: (accuracy_score(labels, probabilities.argmax(axis=1)),
                              roc_auc_score(labels, probabilities[:, 1])), repeat)
    libraries = sorted({f"{info['internal_api']} ({info['num_threads']})" for info in threadpool_info()})
    print(f"cost per batch of {rows:,} rows, best of {repeat}; BLAS/OpenMP limited to {threads} thread(s) "
          f"[{', '.join(libraries)}]; numpy's sort, interp and cumsum run on one thread; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"  estimate_performance (expected accuracy and ROC AUC)          {estimate * 1e3:8.1f} ms")
    print(f"  model predict_proba (shown apart: the drift check needs it too) {predict * 1e3:8.1f} ms")
    print(f"  baseline: realised accuracy + ROC AUC from labels (sklearn)     {realised * 1e3:8.1f} ms")
    print(f"  estimate / realised-metrics baseline: {estimate / realised:.2f}x; "
          f"estimate / predict_proba: {estimate / predict:.2f}x; "
          f"estimate + predict_proba: {(estimate + predict) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
