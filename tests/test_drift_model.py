"""Checks beyond single features: joint shifts, the model's outputs, and its metric on labelled batches."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline.drift import check_drift
from pipeline.profile import build_reference_profile


def _correlated(rows: int, correlation: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    y = correlation * x + np.sqrt(1 - correlation**2) * rng.normal(size=rows)
    return pd.DataFrame({"x": x, "y": y, "noise": rng.normal(size=rows), "group": rng.choice(list("abc"), rows)})


def test_domain_classifier_catches_a_joint_shift_that_single_features_miss():
    profile = build_reference_profile(_correlated(20_000, 0.9, seed=0), model="m")
    flipped = check_drift(profile, _correlated(20_000, -0.9, seed=1))
    assert not any(f.drifted for f in flipped.features)  # the marginals did not move
    assert flipped.multivariate.drifted and flipped.multivariate.auc > 0.8
    assert flipped.drifted and any("classifier" in reason for reason in flipped.reasons)
    assert {name for name, _ in flipped.multivariate.top_features[:2]} == {"x", "y"}
    same = check_drift(profile, _correlated(20_000, 0.9, seed=2))
    assert not same.multivariate.drifted and same.multivariate.auc < 0.6 and not same.drifted


def _churn(rows: int, seed: int, shift: float = 0.0, flip: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"tenure": rng.normal(shift, 1, rows), "spend": rng.normal(0, 1, rows),
                          "plan": rng.choice(["basic", "pro"], rows)})
    logit = 2 * frame["tenure"] - frame["spend"]
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    label ^= rng.random(rows) < flip  # concept drift: the same features, other outcomes
    return frame.assign(churned=label.astype(int))


@pytest.fixture(scope="module")
def classifier():
    reference = _churn(20_000, seed=0)
    features = reference[["tenure", "spend"]]
    model = LogisticRegression().fit(features, reference["churned"])
    scores = model.predict_proba(features)[:, 1]
    profile = build_reference_profile(
        reference[["tenure", "spend", "plan"]], model="churn", predictions=scores, target=reference["churned"],
        primary_metric="roc_auc", metric_value=roc_auc_score(reference["churned"], scores))
    return _FeatureSubset(model, ["tenure", "spend"]), profile


class _FeatureSubset:
    """A model trained on some of the profiled columns, as pipelines with column selection are."""

    def __init__(self, model, columns):
        self.model, self.columns, self.classes_ = model, columns, model.classes_

    def predict_proba(self, frame):
        return self.model.predict_proba(frame[self.columns])

    def predict(self, frame):
        return self.model.predict(frame[self.columns])


def test_a_stable_labelled_batch_shows_no_prediction_or_performance_drift(classifier):
    model, profile = classifier
    report = check_drift(profile, _churn(5_000, seed=1), model=model, target="churned")
    assert report.prediction is not None and not report.prediction.drifted
    performance = report.performance
    assert performance.metric == "roc_auc" and not performance.degraded
    assert performance.ci_low <= performance.reference <= performance.ci_high + 0.02
    assert not report.drifted


def test_shifted_inputs_move_the_model_outputs(classifier):
    model, profile = classifier
    report = check_drift(profile, _churn(5_000, seed=2, shift=0.8), model=model, target="churned")
    assert report.prediction.drifted and report.prediction.test == "ks"
    assert "the model's outputs drifted" in report.reasons


def test_concept_drift_shows_as_a_performance_loss(classifier):
    model, profile = classifier
    report = check_drift(profile, _churn(5_000, seed=3, flip=0.3), model=model, target="churned")
    assert not report.prediction.drifted  # the inputs and outputs look the same...
    performance = report.performance
    assert performance.degraded and performance.severity == "high"  # ...but the answers got worse
    assert performance.ci_high < performance.reference
    assert report.drifted and any("roc_auc fell" in reason for reason in report.reasons)
    assert "**Performance:** roc_auc" in report.to_markdown()


def test_regression_models_use_rmse_and_labels_are_optional():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=5_000)})
    target = pd.Series(3 * reference["x"] + rng.normal(size=5_000), name="y")
    model = LinearRegression().fit(reference, target)
    profile = build_reference_profile(reference, model="price", predictions=model.predict(reference), target=target)
    batch = pd.DataFrame({"x": rng.normal(size=2_000)})
    batch["y"] = 3 * batch["x"] + rng.normal(0, 3, size=2_000)  # noisier than before
    report = check_drift(profile, batch, model=model, target="y")
    assert report.performance.metric == "rmse" and not report.performance.higher_is_better
    assert report.performance.degraded and report.performance.reference == pytest.approx(1.0, abs=0.1)
    unlabelled = check_drift(profile, batch.drop(columns="y"), model=model)
    assert unlabelled.performance is None and unlabelled.prediction is not None


def test_without_a_model_the_model_checks_are_skipped_with_a_note(classifier):
    _, profile = classifier
    report = check_drift(profile, _churn(1_000, seed=4), target="churned")
    assert report.prediction is None and report.performance is None
    assert any("no model was given" in note for note in report.notes)


def test_a_model_that_fails_on_the_batch_is_a_note_not_a_crash(classifier):
    model, profile = classifier

    class Broken:
        classes_ = model.classes_

        def predict_proba(self, frame):
            raise ValueError("Input contains NaN")

    report = check_drift(profile, _churn(1_000, seed=5), model=Broken())
    assert report.prediction is None
    assert any("could not score the batch (ValueError: Input contains NaN)" in note for note in report.notes)
