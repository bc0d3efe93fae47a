"""Performance monitoring: measured metrics on labelled production rows, the drop rule, and the
confidence-based estimate (calibration, expected accuracy and ROC AUC) against realised metrics.

Statistical tolerances. An estimate made from a calibration fitted on ``n_cal`` held-out rows and
compared with the realised metric of ``n`` new rows is off by two independent sampling errors: the
batch's own (its labels are a draw) and the calibration's (its held-out labels were a draw too).
Each is about one standard error at its sample size: sqrt(a(1 - a)/n) for an accuracy, the
Hanley-McNeil formula for a ROC AUC. The tests allow 5 combined standard errors: with fixed seeds
they are deterministic, a reseeded run would fail by chance about once in a million per check, and each
test also shows that a wrong method (the model's raw probabilities, the validation metric carried
forward) misses by more than five such tolerances, so the check can fail.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from pipeline.performance import (
    Calibration,
    CalibrationError,
    IsotonicCurve,
    PerformanceError,
    PerformanceFinding,
    estimate_error,
    estimate_performance,
    fit_calibration,
    measured_performance,
    performance_drop,
)
from pipeline.spec import Direction
from pipeline.validate import score

# --------------------------------------------------------------------------- statistical helpers


def _accuracy_tolerance(accuracy: float, rows: int, calibration_rows: int) -> float:
    variance = accuracy * (1 - accuracy)
    return 5 * math.sqrt(variance / rows + variance / calibration_rows)


def _auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982), Radiology 143:29-36, equation 2."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return math.sqrt((auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2))
                     / (positives * negatives))


def _auc_tolerance(auc: float, labels: np.ndarray, positive, calibration_labels: np.ndarray) -> float:
    batch = _auc_standard_error(auc, int(np.sum(labels == positive)), int(np.sum(labels != positive)))
    held_out = _auc_standard_error(auc, int(np.sum(calibration_labels == positive)),
                                   int(np.sum(calibration_labels != positive)))
    return 5 * math.sqrt(batch**2 + held_out**2)


# --------------------------------------------------------------------------- synthetic worlds

def _overconfident_binary(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """True P(y=1) = sigmoid(z); the model says sigmoid(3z): right order, far too sure of itself."""
    z = rng.normal(0, 1.5, rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(int)
    raw = 1 / (1 + np.exp(-3 * z))
    return np.column_stack([1 - raw, raw]), labels


_THREE_CLASS_WEIGHTS = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])


def _overconfident_three_classes(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """True P(y=k | x) = softmax(Wx); the model says softmax(2Wx)."""
    logits = rng.normal(0, 1, (rows, 2)) @ _THREE_CLASS_WEIGHTS.T
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(rows)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    raw = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)
    return raw, labels


_WEIGHTS, _BIAS = np.array([1.5, -1.0]), 0.3


def _logistic_world(rng: np.random.Generator, rows: int, spread: float) -> tuple[pd.DataFrame, pd.Series]:
    """A fixed P(y | x) = sigmoid(w.x + b); ``spread`` < 1 crowds x near the boundary (covariate shift)."""
    x = rng.normal(0, 1, (rows, 2)) * spread
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(x @ _WEIGHTS + _BIAS)))).astype(int)
    return pd.DataFrame(x, columns=["dose", "age"]), pd.Series(labels, name="responded")


# --------------------------------------------------------------------------- the estimate

def test_estimate_recovers_accuracy_and_auc_of_an_overconfident_model():
    rng = np.random.default_rng(20260101)
    held_out, held_out_labels = _overconfident_binary(rng, 40_000)
    calibration = fit_calibration(held_out, held_out_labels, [0, 1])
    batch, labels = _overconfident_binary(rng, 100_000)

    estimated = estimate_performance(calibration, batch, [0, 1])
    accuracy = accuracy_score(labels, batch.argmax(axis=1))
    auc = roc_auc_score(labels, batch[:, 1])

    accuracy_tolerance = _accuracy_tolerance(accuracy, len(labels), len(held_out_labels))
    assert abs(estimated["accuracy"] - accuracy) < accuracy_tolerance
    assert abs(estimated["roc_auc"] - auc) < _auc_tolerance(auc, labels, 1, held_out_labels)
    # The uncalibrated confidence fails the same check five times over: calibration is doing the work.
    assert abs(batch.max(axis=1).mean() - accuracy) > 5 * accuracy_tolerance


def test_estimate_tracks_a_covariate_shift_that_the_validation_metric_misses():
    rng = np.random.default_rng(12)
    features, labels = _logistic_world(rng, 50_000, spread=1.0)
    model = LogisticRegression().fit(features, labels)
    held_out, held_out_labels = _logistic_world(rng, 40_000, spread=1.0)
    calibration = fit_calibration(model.predict_proba(held_out), held_out_labels.to_numpy(), list(model.classes_))
    validated = score(model, held_out, held_out_labels, task="classification", names=["accuracy", "roc_auc"])

    batch, batch_labels = _logistic_world(rng, 100_000, spread=0.35)  # same P(y|x), x crowded at the boundary
    realised = measured_performance(model, batch, batch_labels, task="classification", metrics=["accuracy", "roc_auc"])
    estimated = estimate_performance(calibration, model.predict_proba(batch), list(model.classes_))
    errors = estimate_error(estimated, realised)

    accuracy_tolerance = _accuracy_tolerance(realised["accuracy"], len(batch), len(held_out))
    auc_tolerance = _auc_tolerance(realised["roc_auc"], batch_labels.to_numpy(), 1, held_out_labels.to_numpy())
    assert errors["accuracy"] < accuracy_tolerance
    assert errors["roc_auc"] < auc_tolerance
    # The shift is real: carrying the validation metric forward fails the same check five times over.
    assert validated["accuracy"] - realised["accuracy"] > 5 * accuracy_tolerance
    assert validated["roc_auc"] - realised["roc_auc"] > 5 * auc_tolerance
    # And the estimate alone, before any label, is a finding when allowed to be.
    finding = performance_drop(estimated, validated, primary="accuracy", direction="maximize", max_drop=0.05,
                               data="batch-004", estimated=True)
    assert finding is not None and finding.description.startswith("estimated accuracy on batch-004 0.6")


def test_multiclass_estimate_recovers_accuracy_and_one_vs_rest_auc():
    rng = np.random.default_rng(3)
    held_out, held_out_labels = _overconfident_three_classes(rng, 40_000)
    calibration = fit_calibration(held_out, held_out_labels, [0, 1, 2])
    batch, labels = _overconfident_three_classes(rng, 100_000)

    estimated = estimate_performance(calibration, batch, [0, 1, 2])
    accuracy = accuracy_score(labels, batch.argmax(axis=1))
    auc = roc_auc_score(labels, batch, multi_class="ovr")

    accuracy_tolerance = _accuracy_tolerance(accuracy, len(labels), len(held_out_labels))
    assert abs(estimated["accuracy"] - accuracy) < accuracy_tolerance
    assert abs(batch.max(axis=1).mean() - accuracy) > 5 * accuracy_tolerance
    # The macro average's error is at most the worst class's: use the widest one-vs-rest tolerance.
    auc_tolerance = max(_auc_tolerance(auc, labels, k, held_out_labels) for k in range(3))
    assert abs(estimated["roc_auc"] - auc) < auc_tolerance


def test_expected_auc_is_the_pairwise_definition_with_ties_counted_half():
    rng = np.random.default_rng(5)
    scores = np.round(rng.random(400), 1)  # many ties
    curve = IsotonicCurve(scores=(0.0, 0.5, 1.0), probabilities=(0.1, 0.3, 0.9))
    calibration = Calibration(classes=(0, 1), curves=(curve,), confidence=None, rows=400)

    estimated = estimate_performance(calibration, np.column_stack([1 - scores, scores]), [0, 1])

    p = np.interp(scores, curve.scores, curve.probabilities)
    above = (scores[:, None] > scores[None, :]) + 0.5 * (scores[:, None] == scores[None, :])
    pairwise = (p[:, None] * (1 - p[None, :]) * above).sum() / (p.sum() * (1 - p).sum())
    assert estimated["roc_auc"] == pytest.approx(pairwise, abs=1e-12)
    predicted_right = np.where(scores > 1 - scores, p, 1 - p)
    assert estimated["accuracy"] == pytest.approx(predicted_right.mean(), abs=1e-12)


def test_multiclass_expected_auc_takes_rows_tied_on_the_score_as_one_step():
    # Renormalising the one-vs-rest curves makes a class's calibrated probability vary among rows
    # tied on that class's score: only grouping the ties gives the pairwise definition.
    rng = np.random.default_rng(6)
    probabilities = np.round(rng.dirichlet([1, 1, 1], 300), 1)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    slopes = (1.0, 0.5, 0.2)
    calibration = Calibration(
        classes=(0, 1, 2), curves=tuple(IsotonicCurve((0.0, 1.0), (0.0, slope)) for slope in slopes),
        confidence=IsotonicCurve((0.0, 1.0), (0.0, 1.0)), rows=300)

    estimated = estimate_performance(calibration, probabilities, [0, 1, 2])

    weighted = probabilities * np.array(slopes)
    calibrated = weighted / weighted.sum(axis=1, keepdims=True)
    areas = []
    for k in range(3):
        s, p = probabilities[:, k], calibrated[:, k]
        above = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
        areas.append((p[:, None] * (1 - p[None, :]) * above).sum() / (p.sum() * (1 - p).sum()))
    assert estimated["roc_auc"] == pytest.approx(np.mean(areas), abs=1e-12)
    assert estimated["accuracy"] == pytest.approx(probabilities.max(axis=1).mean(), abs=1e-12)


def test_calibration_applies_as_scikit_learn_isotonic_regression_predicts():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(8)
    scores = rng.random(5_000)
    labels = (rng.random(5_000) < scores**2).astype(int)
    calibration = fit_calibration(np.column_stack([1 - scores, scores]), labels, [0, 1])
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores, labels)

    outside_and_inside = np.linspace(-0.5, 1.5, 2_001)
    np.testing.assert_allclose(calibration.curves[0](outside_and_inside), reference.predict(outside_and_inside),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("classes", [[0, 1], ["benign", "malignant"], [0, 1, 2]])
def test_calibration_round_trips_through_json_exactly(classes):
    rng = np.random.default_rng(9)
    if len(classes) == 2:
        probabilities, index = _overconfident_binary(rng, 3_000)
    else:
        probabilities, index = _overconfident_three_classes(rng, 3_000)
    numpy_classes = np.array(classes)  # as an estimator's classes_ holds them: numpy scalars
    calibration = fit_calibration(probabilities, numpy_classes[index], list(numpy_classes))

    text = json.dumps({"calibration": calibration.to_dict()})  # must not need a custom encoder
    loaded = Calibration.from_dict(json.loads(text)["calibration"])

    assert loaded == calibration
    assert loaded.to_dict() == calibration.to_dict()
    batch, _ = (_overconfident_binary if len(classes) == 2 else _overconfident_three_classes)(rng, 2_000)
    assert estimate_performance(loaded, batch, list(numpy_classes)) == estimate_performance(
        calibration, batch, list(numpy_classes))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(format="pickle"), "not a calibration"),
    (lambda d: d.update(format_version=9), "format_version 9"),
    (lambda d: d.pop("curves"), "lacks curves"),
    (lambda d: d.update(classes=[1]), "at least two class labels"),
    (lambda d: d.update(curves=d["curves"] * 2), "must hold 1 curve(s) for 2 classes"),
    (lambda d: d["curves"][0].update(scores=d["curves"][0]["scores"][::-1]), "'scores' must increase"),
    (lambda d: d["curves"][0].update(probabilities=[2.0] * len(d["curves"][0]["scores"])), "between 0 and 1"),
    (lambda d: d["curves"][0].update(scores=["a"]), "lists of numbers"),
    (lambda d: d.update(confidence=d["curves"][0]), "'confidence' must be null"),
])
def test_a_damaged_calibration_is_refused_naming_the_key(change, message):
    probabilities, labels = _overconfident_binary(np.random.default_rng(1), 2_000)
    stored = fit_calibration(probabilities, labels, [0, 1]).to_dict()
    change(stored)
    with pytest.raises(CalibrationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Calibration.from_dict(stored)


def test_calibration_and_estimate_refuse_inputs_they_cannot_use():
    probabilities, labels = _overconfident_binary(np.random.default_rng(2), 1_000)
    with pytest.raises(CalibrationError, match="one class only"):
        fit_calibration(probabilities, np.zeros(1_000, dtype=int), [0, 1])
    with pytest.raises(CalibrationError, match=r"held-out labels 'yes' are not among the model's classes \[0, 1\]"):
        fit_calibration(probabilities, np.array(["yes" if label else 0 for label in labels], dtype=object), [0, 1])
    with pytest.raises(CalibrationError, match="one column per class"):
        fit_calibration(probabilities[:, :1], labels, [0, 1])
    calibration = fit_calibration(probabilities, labels, [0, 1])
    with pytest.raises(CalibrationError, match=r"for classes \[0, 1\] but the model gives \['no', 'yes'\]"):
        estimate_performance(calibration, probabilities, ["no", "yes"])
    with pytest.raises(CalibrationError, match="NaN"):
        estimate_performance(calibration, np.full((3, 2), np.nan), [0, 1])


def test_a_class_missing_from_the_held_out_rows_is_calibrated_as_never_seen():
    rng = np.random.default_rng(4)
    probabilities, labels = _overconfident_three_classes(rng, 5_000)
    keep = labels != 2
    calibration = fit_calibration(probabilities[keep], labels[keep], [0, 1, 2])
    assert set(calibration.curves[2].probabilities) == {0.0}
    assert "accuracy" in estimate_performance(calibration, probabilities, [0, 1, 2])


def test_estimate_error_is_absolute_and_only_for_metrics_both_sides_hold():
    assert estimate_error({"accuracy": 0.80, "roc_auc": 0.90}, {"accuracy": 0.85, "f1": 0.7}) == {
        "accuracy": pytest.approx(0.05)}
    assert estimate_error({"accuracy": 0.9}, {"accuracy": 0.85}) == {"accuracy": pytest.approx(0.05)}


# --------------------------------------------------------------------------- measured performance

@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, pd.DataFrame, pd.Series]:
    features, labels = _logistic_world(np.random.default_rng(30), 4_000, spread=1.0)
    return LogisticRegression().fit(features, labels), features, labels


def test_measured_performance_is_the_validators_score(fitted):
    model, features, labels = fitted
    names = ["accuracy", "roc_auc", "f1", "log_loss"]
    assert measured_performance(model, features, labels, task="classification", metrics=names) == score(
        model, features, labels, task="classification", names=names)


@pytest.mark.filterwarnings("error")  # left out before scikit-learn is asked, not NaN after a warning
def test_one_class_labels_leave_out_what_they_cannot_define(fitted):
    model, features, labels = fitted
    negatives = labels == 0
    names = ["accuracy", "roc_auc", "average_precision", "recall", "precision", "f1", "balanced_accuracy"]

    measured = measured_performance(model, features[negatives], labels[negatives], task="classification", metrics=names)

    assert set(measured) == {"accuracy", "precision", "f1", "balanced_accuracy"}
    assert measured["accuracy"] == accuracy_score(labels[negatives], model.predict(features[negatives]))
    assert performance_drop(measured, {"roc_auc": 0.9}, primary="roc_auc", direction="maximize", max_drop=0.05) is None


@pytest.mark.filterwarnings("error")
def test_a_multiclass_batch_missing_a_class_has_no_one_vs_rest_auc():
    rng = np.random.default_rng(31)
    features = pd.DataFrame(rng.normal(0, 1, (3_000, 2)), columns=["a", "b"])
    labels = pd.Series(np.digitize(features["a"] + 0.3 * rng.normal(0, 1, 3_000), [-0.5, 0.5]), name="grade")
    model = LogisticRegression().fit(features, labels)
    no_top_grade = labels != 2

    measured = measured_performance(model, features[no_top_grade], labels[no_top_grade], task="classification",
                                    metrics=["accuracy", "roc_auc", "log_loss"])

    assert set(measured) == {"accuracy", "log_loss"}


def test_precision_is_left_out_when_nothing_was_predicted_positive(fitted):
    model, features, labels = fitted
    surely_negative = model.predict_proba(features)[:, 1] < 0.2
    measured = measured_performance(model, features[surely_negative], labels[surely_negative],
                                    task="classification", metrics=["accuracy", "precision", "recall"])
    assert "precision" not in measured and {"accuracy", "recall"} <= set(measured)


def test_rows_without_a_label_yet_are_left_out(fitted):
    model, features, labels = fitted
    partly = labels.astype("float64").where(np.arange(len(labels)) % 3 != 0)  # a third not labelled yet
    measured = measured_performance(model, features, partly, task="classification", metrics=["accuracy"])
    known = partly.notna().to_numpy()
    assert measured == {"accuracy": accuracy_score(labels[known], model.predict(features[known]))}


def test_measured_performance_bad_labels_say_what_is_wrong(fitted):
    model, features, labels = fitted
    with pytest.raises(PerformanceError, match=r"'responded' holds 1 value\(s\) the model never predicts: 'yes'"):
        measured_performance(model, features, labels.astype(object).where(labels == 0, "yes"),
                             task="classification", metrics=["accuracy"])
    with pytest.raises(PerformanceError, match="no labelled rows.*'responded' is empty in all 4000 rows"):
        measured_performance(model, features, pd.Series(np.nan, index=labels.index, name="responded"),
                             task="classification", metrics=["accuracy"])
    with pytest.raises(PerformanceError, match="4000 feature rows but 10 labels"):
        measured_performance(model, features, labels[:10], task="classification", metrics=["accuracy"])


def test_regression_r2_is_left_out_on_a_constant_target():
    from sklearn.linear_model import LinearRegression

    features = pd.DataFrame({"x": np.arange(50.0)})
    model = LinearRegression().fit(features, 2 * features["x"])
    constant = pd.Series(np.full(50, 3.0))
    assert set(measured_performance(model, features, constant, task="regression", metrics=["r2", "mae"])) == {"mae"}


# --------------------------------------------------------------------------- the drop rule

@pytest.mark.parametrize(("measured", "validated", "metric", "direction", "max_drop", "description"), [
    (0.71, 0.93, "accuracy", "maximize", 0.05,
     "accuracy on recent labelled data 0.71, validated 0.93: a drop of 0.22, more than the 0.05 allowed"),
    (0.52, 0.21, "log_loss", "minimize", 0.05,
     "log_loss on recent labelled data 0.52, validated 0.21: a rise of 0.31, more than the 0.05 allowed"),
    # A drop just past the allowance gets the digits that show it is past.
    (0.879, 0.93, "roc_auc", Direction.maximize, 0.05,
     "roc_auc on recent labelled data 0.879, validated 0.930: a drop of 0.051, more than the 0.05 allowed"),
])
def test_a_drop_beyond_the_allowance_is_a_finding_with_one_line(measured, validated, metric, direction, max_drop,
                                                                  description):
    finding = performance_drop({metric: measured}, {metric: validated}, primary=metric, direction=direction,
                               max_drop=max_drop)
    assert isinstance(finding, PerformanceFinding)
    assert finding.description == description
    assert finding.drop == pytest.approx(abs(measured - validated))
    assert (finding.value, finding.validated) == (measured, validated)
    assert json.loads(json.dumps(finding.to_dict()))["description"] == description


@pytest.mark.parametrize(("measured", "direction"), [
    (0.88, "maximize"),  # a drop of exactly max_drop is allowed, as the gates allow it
    (0.95, "maximize"),  # better than validated
    (0.90, "minimize"),  # a lower loss is better
])
def test_no_finding_within_the_allowance_or_when_better(measured, direction):
    assert performance_drop({"m": measured}, {"m": 0.93}, primary="m", direction=direction, max_drop=0.05) is None


def test_drop_rule_refuses_what_it_cannot_compare():
    with pytest.raises(PerformanceError, match=r"validation metrics hold no 'roc_auc'.*\(they hold: accuracy\)"):
        performance_drop({"roc_auc": 0.7}, {"accuracy": 0.9}, primary="roc_auc", direction="maximize", max_drop=0.05)
    with pytest.raises(PerformanceError, match="direction must be 'maximize' or 'minimize', not 'up'"):
        performance_drop({"m": 0.7}, {"m": 0.9}, primary="m", direction="up", max_drop=0.05)
    with pytest.raises(PerformanceError, match="max_drop must be a number at or above 0"):
        performance_drop({"m": 0.7}, {"m": 0.9}, primary="m", direction="maximize", max_drop=-1)
