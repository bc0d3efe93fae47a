"""Validate: score the candidate on held-out rows, check the gates, and compare it with production."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.spec import Direction, GatesSpec, MetricsSpec

__all__ = ["GateResult", "Validation", "model_outputs", "score", "validate"]


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    limit: float | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Validation:
    metrics: dict[str, float]
    production_version: int | None
    production_metrics: dict[str, float] | None
    production_note: str | None  # why production could not be compared, when it could not
    gates: tuple[GateResult, ...]
    held_out_rows: int

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def reasons(self) -> list[str]:
        return [gate.detail for gate in self.gates if not gate.passed]

    def difference(self) -> dict[str, float]:
        if not self.production_metrics:
            return {}
        return {
            name: value - self.production_metrics[name]
            for name, value in self.metrics.items()
            if name in self.production_metrics
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "held_out_rows": self.held_out_rows,
            "production": {
                "version": self.production_version,
                "metrics": self.production_metrics,
                "difference": self.difference(),
                "note": self.production_note,
            },
            "gates": [gate.to_dict() for gate in self.gates],
            "passed": self.passed,
            "reasons": self.reasons,
        }


def validate(
    estimator: Any,
    features: pd.DataFrame,
    target: pd.Series,
    *,
    task: str,
    metrics: MetricsSpec,
    gates: GatesSpec,
    production: tuple[int, Any] | None = None,
    known_production_metrics: dict[str, float] | None = None,
    candidate_outputs: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> Validation:
    """Score the candidate and, when given ``(version, fitted_model)``, production on the same rows.

    ``known_production_metrics`` are production's scores on these very rows (same data, same split),
    as recorded when it was validated; they spare scoring it again. ``candidate_outputs`` are the
    candidate's ``model_outputs`` on ``features`` when the caller has them already.
    """
    candidate = score(estimator, features, target, task=task, names=metrics.all, outputs=candidate_outputs)
    production_metrics = production_note = None
    if production is not None and known_production_metrics is not None:
        production_metrics = {name: known_production_metrics[name] for name in metrics.all}
    elif production is not None:
        try:
            production_metrics = score(production[1], features, target, task=task, names=metrics.all)
        except Exception as exc:  # a production model that cannot read these rows is a finding, not a crash
            production_note = f"production v{production[0]} could not score the held-out data: {exc}"
    results = [*_limit_gates(candidate, gates)]
    results += _comparison_gates(candidate, production_metrics, production, production_note, metrics, gates)
    return Validation(
        metrics=candidate,
        production_version=production[0] if production else None,
        production_metrics=production_metrics,
        production_note=production_note,
        gates=tuple(results),
        held_out_rows=len(features),
    )


def model_outputs(estimator: Any, features: pd.DataFrame, *, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted labels (or values) and, when asked and available, class probabilities.

    For a Pipeline the preprocessing runs once for both, which halves the cost of scoring.
    """
    steps = getattr(estimator, "steps", None)
    final, inputs = estimator, features
    if steps and len(steps) > 1:
        final, inputs = steps[-1][1], estimator[:-1].transform(features)
    wanted = probabilities and hasattr(final, "predict_proba")
    return final.predict(inputs), final.predict_proba(inputs) if wanted else None


def _class_codes(classes: Any, *labels: Any) -> list[np.ndarray] | None:
    """Each of ``labels`` as positions in ``classes`` (the model's, in order), or None if one holds a
    label that is not among them (then the metrics read the labels themselves and their errors name
    it). Every metric here gives the same value on the positions as on the labels: the mapping is
    one to one and keeps the order of ``classes``, which the positive class of a binary metric is
    read from."""
    index = pd.Index(np.asarray(classes))
    if not index.is_unique:
        return None
    coded = [index.get_indexer(np.asarray(values)) for values in labels]
    return None if any((positions < 0).any() for positions in coded) else coded


def score(estimator: Any, features: pd.DataFrame, target: pd.Series, *, task: str, names: list[str],
          outputs: tuple[np.ndarray, np.ndarray | None] | None = None) -> dict[str, float]:
    """The metrics ``names`` of ``estimator`` on ``features``; ``outputs``: its ``model_outputs`` on
    them, when already computed (predicting is most of the cost on large data)."""
    from sklearn import metrics as m

    needs_scores = bool({"roc_auc", "average_precision", "log_loss", "brier"} & set(names))
    predicted, probabilities = outputs if outputs is not None else model_outputs(
        estimator, features, probabilities=task == "classification" and needs_scores)
    results: dict[str, float] = {}
    if task == "classification":
        classes = getattr(estimator, "classes_", np.unique(target))
        binary = len(classes) == 2
        average = "binary" if binary else "macro"
        coded = _class_codes(classes, target, predicted)
        if coded is not None:  # the same values, from integers: several times quicker than from strings
            target, predicted = coded
            classes = np.arange(len(classes))
        pos_label = classes[-1] if binary else 1
        for name in names:
            if name == "accuracy":
                value = m.accuracy_score(target, predicted)
            elif name == "balanced_accuracy":
                value = m.balanced_accuracy_score(target, predicted)
            elif name in {"f1", "precision", "recall"}:
                scorer = {"f1": m.f1_score, "precision": m.precision_score, "recall": m.recall_score}[name]
                value = scorer(target, predicted, average=average, pos_label=pos_label, zero_division=0)
            elif probabilities is None:
                raise ValueError(f"metric {name} needs predicted probabilities, which this estimator does not give")
            elif name == "roc_auc":
                value = (
                    m.roc_auc_score(target, probabilities[:, 1])
                    if binary
                    else m.roc_auc_score(target, probabilities, multi_class="ovr", labels=classes)
                )
            elif name == "average_precision":
                if not binary:
                    raise ValueError("average_precision is for binary classification; use roc_auc or f1")
                value = m.average_precision_score(target, probabilities[:, 1], pos_label=pos_label)
            elif name == "log_loss":
                value = m.log_loss(target, probabilities, labels=classes)
            elif name == "brier":
                if not binary:
                    raise ValueError("brier is for binary classification; use log_loss")
                value = m.brier_score_loss(target, probabilities[:, 1], pos_label=pos_label)
            else:
                raise ValueError(f"metric {name} is for regression, but this model is a classifier")
            results[name] = float(value)
    else:
        for name in names:
            if name == "r2":
                value = m.r2_score(target, predicted)
            elif name == "mae":
                value = m.mean_absolute_error(target, predicted)
            elif name == "rmse":
                value = math.sqrt(m.mean_squared_error(target, predicted))
            elif name == "mape":
                value = m.mean_absolute_percentage_error(target, predicted)
            else:
                raise ValueError(f"metric {name} is for classification, but this model is a regressor")
            results[name] = float(value)
    return results


def _limit_gates(candidate: dict[str, float], gates: GatesSpec) -> list[GateResult]:
    results = []
    for name, limit in gates.limits.items():
        value = candidate[name]
        if limit.min is not None:
            passed = value >= limit.min
            results.append(
                GateResult(f"{name} >= {limit.min:g}", value, limit.min, passed,
                           f"{name} is {value:.4f}, {'at or above' if passed else 'below'} the minimum {limit.min:g}")
            )
        if limit.max is not None:
            passed = value <= limit.max
            results.append(
                GateResult(f"{name} <= {limit.max:g}", value, limit.max, passed,
                           f"{name} is {value:.4f}, {'at or below' if passed else 'above'} the maximum {limit.max:g}")
            )
    return results


def _comparison_gates(
    candidate: dict[str, float],
    production_metrics: dict[str, float] | None,
    production: tuple[int, Any] | None,
    production_note: str | None,
    metrics: MetricsSpec,
    gates: GatesSpec,
) -> list[GateResult]:
    if gates.max_regression is None and not gates.must_beat_production:
        return []
    primary = metrics.primary
    if production is None or production_metrics is None:
        # Nothing to compare with: the first model, or a production model with another feature set.
        detail = production_note or "no production model yet; nothing to compare with"
        names = ["max regression"] if gates.max_regression is not None else []
        names += ["beats production"] if gates.must_beat_production else []
        return [GateResult(f"{primary} {name}", None, None, True, detail) for name in names]
    sign = 1.0 if metrics.primary_direction is Direction.maximize else -1.0
    improvement = sign * (candidate[primary] - production_metrics[primary])
    version = production[0]
    results = []
    if gates.max_regression is not None:
        passed = -improvement <= gates.max_regression + 1e-12
        results.append(
            GateResult(
                f"{primary} max regression", -improvement, gates.max_regression, passed,
                f"{primary} is {candidate[primary]:.4f} against production v{version}'s {production_metrics[primary]:.4f} "
                f"({'within' if passed else 'worse than'} the allowed regression of {gates.max_regression:g})",
            )
        )
    if gates.must_beat_production:
        passed = improvement > 0
        results.append(
            GateResult(
                f"{primary} beats production", improvement, 0.0, passed,
                f"{primary} {candidate[primary]:.4f} {'beats' if passed else 'does not beat'} "
                f"production v{version}'s {production_metrics[primary]:.4f}",
            )
        )
    return results

