"""Performance monitoring: the production model's metrics on labelled production data, the rule that
calls a drop a finding, and an estimate of performance before the labels arrive.

* ``measured_performance`` scores the model on labelled production rows with the validator's own
  metric code (``pipeline.validate.score``), leaving out metrics these rows cannot define.
* ``performance_drop`` compares the primary metric with the model's validation score and returns a
  ``PerformanceFinding`` when it fell further than ``[monitor] max_drop`` allows.
* ``fit_calibration`` / ``estimate_performance`` / ``estimate_error`` are confidence-based
  performance estimation (CBPE, as NannyML does it): isotonic calibration of the classifier's
  probabilities on held-out rows at validation; on a production batch, the expected accuracy and
  ROC AUC were the calibrated probabilities the truth; once labels arrive, how far that was off.

The estimate assumes that P(label | model score) on production is what it was on the held-out rows:
it follows covariate shift that keeps that relation and is blind to concept shift (P(y | x)
changing). docs/performance.md shows both, with figures from benchmarks/performance_bench.py.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.spec import Direction

__all__ = [
    "CALIBRATION_FORMAT",
    "Calibration",
    "CalibrationError",
    "IsotonicCurve",
    "PerformanceError",
    "PerformanceFinding",
    "estimate_error",
    "estimate_performance",
    "fit_calibration",
    "limits_broken",
    "measured_performance",
    "performance_drop",
]

CALIBRATION_FORMAT = "mlops-bot/calibration"
_CALIBRATION_FORMAT_VERSION = 1


class PerformanceError(ValueError):
    """Labelled production data, or a metric to compare with, cannot be used; the message says why."""


class CalibrationError(ValueError):
    """A calibration cannot be fitted, read or applied; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------- measured performance

def measured_performance(
    estimator: Any, features: pd.DataFrame, target: pd.Series, *, task: str, metrics: list[str]
) -> dict[str, float]:
    """The model's ``metrics`` on labelled production rows, computed as validation computes them.

    Rows whose label is missing (not arrived yet) are left out. A metric these labels cannot
    define is left out of the result rather than reported as a misleading number or raised:

    * ``roc_auc`` needs both classes among the labels (every class, for a multiclass model);
    * ``average_precision`` and binary ``recall`` need a positive label;
    * binary ``precision`` needs a positive prediction;
    * ``r2`` needs two rows and labels that are not all equal.

    So a batch whose labels are all of one class yields accuracy but no ROC AUC (scikit-learn
    would raise, and a recall of 0 by convention would read as a collapse). Raises
    ``PerformanceError`` when no labelled row is left or a label is a class the model never predicts.
    """
    from pipeline.validate import model_outputs, score

    if len(features) != len(target):
        raise PerformanceError(f"{len(features)} feature rows but {len(target)} labels; pass one label per row")
    labelled = target.notna().to_numpy()
    if not labelled.any():
        column = f"'{target.name}'" if target.name is not None else "the target column"
        raise PerformanceError(
            f"no labelled rows to measure performance on: {column} is empty in all {len(target)} rows")
    if not labelled.all():
        features, target = features.iloc[labelled], target.iloc[labelled]

    left_out: set[str] = set()
    if task == "classification":
        classes = getattr(estimator, "classes_", None)
        classes = np.asarray(classes if classes is not None else np.sort(pd.unique(target.to_numpy())))
        _check_known_labels(target, classes)
        present = set(pd.unique(target.to_numpy()).tolist())
        binary = len(classes) == 2
        positive = classes[-1] if binary else None
        if not set(classes.tolist()) <= present:
            left_out.add("roc_auc")  # one-vs-rest AUC needs every class among the labels
        if binary and positive not in present:
            left_out |= {"average_precision", "recall"}
        if binary and "precision" in metrics and "precision" not in left_out:
            # The one metric that depends on what the model predicted, not on the labels alone.
            predicted, _ = model_outputs(estimator, features, probabilities=False)
            if not np.any(predicted == positive):
                left_out.add("precision")
    elif len(target) < 2 or target.nunique() < 2:
        left_out.add("r2")

    wanted = [name for name in metrics if name not in left_out]
    if not wanted:
        return {}
    with warnings.catch_warnings():
        # Balanced accuracy on a one-class batch is the recall of that class; the warning adds nothing.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        results = score(estimator, features, target, task=task, names=wanted)
    return {name: value for name, value in results.items() if math.isfinite(value)}


def _check_known_labels(target: pd.Series, classes: np.ndarray) -> None:
    values = pd.unique(target.to_numpy())
    unknown = values[pd.Index(classes).get_indexer(values) < 0]
    if len(unknown):
        shown = ", ".join(repr(_plain(value)) for value in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        known = ", ".join(repr(_plain(value)) for value in classes.tolist()[:10])
        column = f"'{target.name}'" if target.name is not None else "the target column"
        raise PerformanceError(
            f"{column} holds {len(unknown)} value(s) the model never predicts: {shown} (its classes: {known}); "
            "check the labels' values and type"
        )


# --------------------------------------------------------------------------- the drop rule

@dataclass(frozen=True)
class PerformanceFinding:
    """The primary metric on production data fell further below its validation score than allowed."""

    metric: str
    value: float  # on production data (measured, or estimated when ``estimated``)
    validated: float  # what the model scored at validation
    drop: float  # how much worse, in the metric's units; positive
    max_drop: float
    direction: Direction
    data: str = "recent labelled data"
    estimated: bool = False

    @property
    def description(self) -> str:
        """``accuracy on recent labelled data 0.71, validated 0.93: a drop of 0.22, more than the 0.05 allowed``"""
        decimals = 2
        while decimals < 6 and round(self.drop, decimals) <= self.max_drop:
            decimals += 1  # enough digits that the drop visibly exceeds the allowance
        change = "drop" if self.direction is Direction.maximize else "rise"
        prefix = "estimated " if self.estimated else ""
        return (f"{prefix}{self.metric} on {self.data} {self.value:.{decimals}f}, "
                f"validated {self.validated:.{decimals}f}: "
                f"a {change} of {self.drop:.{decimals}f}, more than the {self.max_drop:g} allowed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "value": self.value, "validated": self.validated, "drop": self.drop,
            "max_drop": self.max_drop, "direction": str(self.direction), "data": self.data,
            "estimated": self.estimated, "description": self.description,
        }


def performance_drop(
    measured: dict[str, float],
    reference: dict[str, float],
    *,
    primary: str,
    direction: Direction | str,
    max_drop: float,
    data: str = "recent labelled data",
    estimated: bool = False,
) -> PerformanceFinding | None:
    """A finding when ``primary`` in ``measured`` is worse than in ``reference`` (the model's
    validation metrics) by more than ``max_drop``; None when it is not, or when ``measured`` lacks
    the metric (undefined on these rows, e.g. ROC AUC on a one-class batch: nothing to judge).

    ``data`` names the rows in the description ("batch-003"); ``estimated`` marks a CBPE estimate.
    """
    try:
        direction = Direction(direction)
    except ValueError:
        raise PerformanceError(f"direction must be 'maximize' or 'minimize', not {direction!r}") from None
    if not (isinstance(max_drop, int | float) and math.isfinite(max_drop) and max_drop >= 0):
        raise PerformanceError(f"max_drop must be a number at or above 0, not {max_drop!r}; set [monitor] max_drop")
    if primary not in measured:
        return None
    if primary not in reference:
        known = ", ".join(sorted(reference)) or "none"
        raise PerformanceError(
            f"the model's validation metrics hold no {primary!r} to compare with (they hold: {known}); "
            "validate the model again so that its metadata records it"
        )
    value, validated = float(measured[primary]), float(reference[primary])
    drop = validated - value if direction is Direction.maximize else value - validated
    if not drop > max_drop + 1e-12:  # the gates' tolerance: a drop of exactly max_drop is allowed
        return None
    return PerformanceFinding(metric=primary, value=value, validated=validated, drop=drop, max_drop=float(max_drop),
                              direction=direction, data=data, estimated=estimated)


def limits_broken(metrics: dict[str, float], limits: dict[str, Any], *, data: str,
                  before: dict[str, float] | None = None) -> list[str]:
    """The project's gate limits (``[gates.limits]``: ``{name: {"min", "max"}}`` or MetricLimit) that
    ``metrics`` on production ``data`` break, one line each; with ``before`` (the old model's scores
    on the same rows) the line shows the change: ``accuracy on recent data 0.4100 → 0.5200, below the
    0.85 limit``. Metrics not measured on these rows are not judged."""
    problems = []
    for name, limit in limits.items():
        value = metrics.get(name)
        if value is None:
            continue
        low, high = (limit.get("min"), limit.get("max")) if isinstance(limit, dict) else (limit.min, limit.max)
        was = f"{before[name]:.4f} → " if before and before.get(name) is not None else ""
        if low is not None and value < low:
            problems.append(f"{name} on {data} {was}{value:.4f}, below the {low:g} limit")
        elif high is not None and value > high:
            problems.append(f"{name} on {data} {was}{value:.4f}, above the {high:g} limit")
    return problems


# --------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class IsotonicCurve:
    """A non-decreasing map from a model score to a probability, as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")`` predicts: linear between the knots, flat beyond them."""

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.interp(values, np.asarray(self.scores), np.asarray(self.probabilities))

    def to_dict(self) -> dict[str, list[float]]:
        return {"scores": list(self.scores), "probabilities": list(self.probabilities)}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> IsotonicCurve:
        if not isinstance(raw, dict) or set(raw) != {"scores", "probabilities"}:
            raise CalibrationError(f"calibration {where} must be an object with 'scores' and 'probabilities'")
        scores, probabilities = raw["scores"], raw["probabilities"]
        if not (_numbers(scores) and _numbers(probabilities) and len(scores) == len(probabilities) >= 1):
            raise CalibrationError(f"calibration {where}: 'scores' and 'probabilities' must be lists of numbers "
                                   "of the same, non-zero length")
        if np.any(np.diff(scores) <= 0) or np.any(np.diff(probabilities) < 0):
            raise CalibrationError(f"calibration {where}: 'scores' must increase and 'probabilities' never decrease")
        if min(probabilities) < 0 or max(probabilities) > 1:
            raise CalibrationError(f"calibration {where}: 'probabilities' must lie between 0 and 1")
        return cls(tuple(float(value) for value in scores), tuple(float(value) for value in probabilities))


@dataclass(frozen=True)
class Calibration:
    """Isotonic calibration of a classifier's probabilities, fitted on held-out rows.

    Binary: one curve, for the positive class (``classes[-1]``, the validator's positive class).
    Multiclass: one curve per class, one-vs-rest (renormalised per row when applied; used for the
    one-vs-rest ROC AUC), and ``confidence``: the top probability mapped to the chance that the
    prediction is right (used for accuracy, which one-vs-rest curves renormalised overestimate by
    about half a point on our test data, while this curve is unbiased on held-out-like data).

    Stored in the model's metadata.json as plain JSON (``to_dict``/``from_dict``), never pickled.
    """

    classes: tuple[Any, ...]
    curves: tuple[IsotonicCurve, ...]
    confidence: IsotonicCurve | None
    rows: int

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "format_version": _CALIBRATION_FORMAT_VERSION,
            "method": "isotonic",
            "classes": list(self.classes),
            "rows": self.rows,
            "curves": [curve.to_dict() for curve in self.curves],
            "confidence": self.confidence.to_dict() if self.confidence is not None else None,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Calibration:
        """Read what ``to_dict`` wrote; ``CalibrationError`` naming the key when it is not that."""
        if not isinstance(raw, dict) or raw.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"not a calibration (expected 'format': {CALIBRATION_FORMAT!r}); "
                                   "validate the model again to rewrite it")
        if raw.get("format_version") != _CALIBRATION_FORMAT_VERSION:
            raise CalibrationError(f"calibration format_version {raw.get('format_version')!r} is not "
                                   f"{_CALIBRATION_FORMAT_VERSION}; validate the model again to rewrite it")
        missing = {"classes", "rows", "curves", "confidence"} - set(raw)
        if missing:
            raise CalibrationError(f"calibration lacks {', '.join(sorted(missing))}; validate the model again")
        classes, curves = raw["classes"], raw["curves"]
        if not isinstance(classes, list) or len(classes) < 2 or not all(
                isinstance(value, str | int | float) for value in classes):
            raise CalibrationError("calibration 'classes' must list at least two class labels")
        expected = 1 if len(classes) == 2 else len(classes)
        if not isinstance(curves, list) or len(curves) != expected:
            raise CalibrationError(f"calibration 'curves' must hold {expected} curve(s) for {len(classes)} classes")
        if (raw["confidence"] is None) != (len(classes) == 2):
            raise CalibrationError("calibration 'confidence' must be null for two classes and a curve for more")
        if not isinstance(raw["rows"], int) or raw["rows"] < 1:
            raise CalibrationError("calibration 'rows' must be a positive whole number")
        return cls(
            classes=tuple(classes),
            curves=tuple(IsotonicCurve.from_dict(curve, f"curves[{index}]") for index, curve in enumerate(curves)),
            confidence=None if raw["confidence"] is None else IsotonicCurve.from_dict(raw["confidence"], "confidence"),
            rows=raw["rows"],
        )


def fit_calibration(probabilities: np.ndarray, labels: np.ndarray, classes: list[Any]) -> Calibration:
    """Fit isotonic calibration on held-out rows: ``probabilities`` is ``predict_proba``'s output
    (one column per class, in ``classes`` order, the estimator's ``classes_``), ``labels`` the true
    classes. Raises ``CalibrationError`` when the rows cannot calibrate anything (one class only,
    labels the model does not know, shapes that disagree). A class absent from the rows is
    calibrated as never happening, which is what these rows say about it.
    """
    from sklearn.isotonic import IsotonicRegression

    classes = [_plain(value) for value in classes]
    probabilities = _probability_matrix(probabilities, classes)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(probabilities):
        raise CalibrationError(f"{len(probabilities)} rows of probabilities but {labels.shape} labels; "
                               "pass one label per row")
    index = _class_index(labels, classes)
    if len(np.unique(index)) < 2:
        raise CalibrationError(f"the {len(labels)} held-out rows hold one class only ({classes[index[0]]!r}); "
                               "calibration needs rows of at least two classes: hold out more rows")

    def isotonic(scores: np.ndarray, outcome: np.ndarray) -> IsotonicCurve:
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        fitted.fit(scores, outcome.astype(np.float64))
        return IsotonicCurve(tuple(fitted.X_thresholds_.tolist()), tuple(fitted.y_thresholds_.tolist()))

    if len(classes) == 2:
        curves = (isotonic(probabilities[:, 1], index == 1),)
        confidence = None
    else:
        curves = tuple(isotonic(probabilities[:, k], index == k) for k in range(len(classes)))
        predicted = probabilities.argmax(axis=1)
        confidence = isotonic(probabilities[np.arange(len(index)), predicted], predicted == index)
    return Calibration(classes=tuple(classes), curves=curves, confidence=confidence, rows=len(labels))


# --------------------------------------------------------------------------- the estimate

def estimate_performance(calibration: Calibration, probabilities: np.ndarray, classes: list[Any]) -> dict[str, float]:
    """Expected ``accuracy`` and ``roc_auc`` on rows whose labels are not known yet, were the
    calibrated probabilities the truth (NannyML's CBPE).

    The prediction is the most probable class (as scikit-learn's classifiers predict). Accuracy is
    the mean calibrated probability that the prediction is right. ROC AUC is the area under the
    expected ROC curve: rows sorted by the model's score, expected true and false positives as
    cumulative sums of the calibrated p and 1 - p, ties in the score taken as one step, the
    trapezoidal area; for multiclass the mean of one-vs-rest areas, as the validator's ``roc_auc``.
    A metric left out is undefined here (e.g. every calibrated probability 0).
    """
    expected = [_plain(value) for value in classes]
    if list(calibration.classes) != expected:
        raise CalibrationError(f"the calibration is for classes {list(calibration.classes)} but the model gives "
                               f"{expected}; validate the model again to refit it")
    probabilities = _probability_matrix(probabilities, expected)
    if len(probabilities) == 0:
        raise CalibrationError("no rows to estimate performance on")
    # Sums and the ROC curve do not depend on row order, and a curve is a function of the score, so
    # the work is done on sorted scores: np.sort and np.interp on sorted input are several times
    # faster than argsort, gathers and interpolation in row order.
    results: dict[str, float] = {}
    if calibration.binary:
        curve, score = calibration.curves[0], probabilities[:, 1]
        ordered = np.sort(score)
        positive = curve(ordered)
        # Accuracy = mean of (1 - p) over all rows, plus (2p - 1) over the rows predicted positive.
        predicted_positive = curve(np.sort(score[score > probabilities[:, 0]]))
        results["accuracy"] = float((positive.size - positive.sum() + (2.0 * predicted_positive - 1.0).sum())
                                    / positive.size)
        results["roc_auc"] = _expected_roc_auc(ordered[::-1], positive[::-1])
    else:
        # Accuracy from the top probability's own curve (see Calibration), the ROC AUC from the
        # one-vs-rest curves renormalised per row, which needs each class's order kept.
        results["accuracy"] = float(np.mean(calibration.confidence(np.sort(probabilities.max(axis=1)))))
        orders = [np.argsort(probabilities[:, k]) for k in range(len(expected))]
        calibrated = np.empty_like(probabilities)
        for k, (order, curve) in enumerate(zip(orders, calibration.curves, strict=True)):
            calibrated[order, k] = curve(probabilities[order, k])
        totals = calibrated.sum(axis=1, keepdims=True)
        # A row every curve calls impossible carries no information: spread it evenly.
        calibrated = np.divide(calibrated, totals, out=np.full_like(calibrated, 1.0 / len(expected)), where=totals > 0)
        results["roc_auc"] = float(np.mean([
            _expected_roc_auc(probabilities[order, k][::-1], calibrated[order, k][::-1])
            for k, order in enumerate(orders)]))
    return {name: value for name, value in results.items() if math.isfinite(value)}


def estimate_error(estimated: dict[str, float], realised: dict[str, float]) -> dict[str, float]:
    """How far the estimate was off, once the labels arrived: |estimated - realised| per metric both hold."""
    return {name: abs(float(value) - float(realised[name])) for name, value in estimated.items()
            if name in realised and math.isfinite(value) and math.isfinite(realised[name])}


def _expected_roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve expected when row i is positive with probability ``positive[i]``;
    ``score`` sorted from high to low, ``positive`` in the same order."""
    true_positives = np.cumsum(positive)
    # Rows tied on the score are one threshold: keep the last point of each run, as roc_curve does.
    ends = np.append(np.flatnonzero(np.diff(score)), score.size - 1)
    true_positives = true_positives[ends]
    false_positives = (ends + 1.0) - true_positives  # the cumulative sum of 1 - p, without a second pass
    total_positive, total_negative = true_positives[-1], false_positives[-1]
    if total_positive <= 0 or total_negative <= 0:
        return math.nan
    tpr = np.concatenate(([0.0], true_positives / total_positive))
    fpr = np.concatenate(([0.0], false_positives / total_negative))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


# --------------------------------------------------------------------------- helpers

def _probability_matrix(probabilities: Any, classes: list[Any]) -> np.ndarray:
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise CalibrationError(f"probabilities of shape {matrix.shape} do not give one column per class "
                               f"for {len(classes)} classes; pass predict_proba's output")
    if len(classes) < 2:
        raise CalibrationError("a calibration needs a classifier of at least two classes")
    if not np.isfinite(matrix).all():
        raise CalibrationError("the probabilities hold NaN or infinite values; check the model's predict_proba")
    return matrix


def _class_index(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    """Each label's position in ``classes``; ``CalibrationError`` naming labels that are not classes."""
    found = pd.Index(classes).get_indexer(labels)
    if np.any(found < 0):
        shown = ", ".join(repr(_plain(value)) for value in pd.unique(labels[found < 0])[:5])
        raise CalibrationError(f"held-out labels {shown} are not among the model's classes {classes}")
    return found


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) for value in values)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value
