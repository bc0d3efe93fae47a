"""Validation's metrics (pipeline/validate.py ``score``) against scikit-learn's own, on the labels as given.

``score`` computes classification metrics from the labels' positions among the model's classes
(quicker than from strings); the values must be exactly those scikit-learn gives on the labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m
from sklearn.linear_model import LogisticRegression

from pipeline.validate import score

_BINARY = ["accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "average_precision", "log_loss",
           "brier"]
_MULTICLASS = ["accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"]


def _fitted(labels: list, rows: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    which = np.clip(((features["a"] + rng.normal(scale=0.8, size=rows)) * len(labels) / 3 + len(labels) / 2)
                    .astype(int), 0, len(labels) - 1)
    target = pd.Series(np.asarray(labels)[which])
    return LogisticRegression(max_iter=1000).fit(features, target), features, target


def _by_scikit_learn(model, features, target, name: str) -> float:
    """The metric computed on the labels themselves, as scikit-learn documents it."""
    predicted, probabilities, classes = model.predict(features), model.predict_proba(features), model.classes_
    binary = len(classes) == 2
    average, positive = ("binary", classes[-1]) if binary else ("macro", 1)
    if name == "accuracy":
        return m.accuracy_score(target, predicted)
    if name == "balanced_accuracy":
        return m.balanced_accuracy_score(target, predicted)
    if name in {"f1", "precision", "recall"}:
        scorer = {"f1": m.f1_score, "precision": m.precision_score, "recall": m.recall_score}[name]
        return scorer(target, predicted, average=average, pos_label=positive, zero_division=0)
    if name == "roc_auc":
        return (m.roc_auc_score(target, probabilities[:, 1]) if binary
                else m.roc_auc_score(target, probabilities, multi_class="ovr", labels=classes))
    if name == "average_precision":
        return m.average_precision_score(target, probabilities[:, 1], pos_label=positive)
    if name == "log_loss":
        return m.log_loss(target, probabilities, labels=classes)
    return m.brier_score_loss(target, probabilities[:, 1], pos_label=positive)


@pytest.mark.parametrize(("labels", "names"), [
    (["no", "yes"], _BINARY),
    (["benign", "malignant"], _BINARY),
    ([0, 1], _BINARY),
    ([False, True], _BINARY),
    (["cat", "dog", "fish"], _MULTICLASS),
    ([3, 7, 11, 20], _MULTICLASS),
], ids=["yes-no", "words", "zero-one", "booleans", "three-words", "four-numbers"])
def test_every_classification_metric_is_the_one_scikit_learn_gives_on_the_labels(labels, names):
    model, features, target = _fitted(labels)

    found = score(model, features, target, task="classification", names=names)

    assert found == {name: float(_by_scikit_learn(model, features, target, name)) for name in names}


def test_a_held_out_label_the_model_never_saw_is_scored_on_the_labels_and_named_in_the_error():
    model, features, target = _fitted(["no", "yes"])
    target = target.copy()
    target.iloc[0] = "maybe"

    assert score(model, features, target, task="classification", names=["accuracy"]) == {
        "accuracy": float(m.accuracy_score(target, model.predict(features)))}
    with pytest.raises(ValueError, match="maybe"):
        score(model, features, target, task="classification", names=["log_loss"])
