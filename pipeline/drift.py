"""Drift detection: does a production batch still look like the model's reference data?

Per feature it runs a test (Kolmogorov-Smirnov for numbers, chi-square for categories)
and measures an effect size (population stability index, and the Wasserstein distance
over the reference's spread or the Jensen-Shannon distance). A feature drifts only when
its test stays significant after Benjamini-Hochberg control of the false discovery rate
across features *and* its effect passes a floor: on a large batch every p-value is tiny,
so significance alone would measure the batch size, not the change.

Around that sit the checks that per-feature tests miss or cannot make: a domain
classifier for joint shifts, the model's outputs (prediction drift), its metric when the
batch carries labels (performance drift), and the schema (missing, extra, retyped columns).

The numeric statistics cost one sort of each batch column plus work proportional to
the reference sample: the batch's ECDF is read at the reference sample's distinct values
(which is all the two-sample KS statistic needs) and the Wasserstein integral comes from
segment sums of the sorted column.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

from pipeline.monitor import Batch, DriftInputError, open_batch
from pipeline.profile import (
    DEFAULT_SAMPLE_SIZE,
    OTHER_CATEGORY,
    FeatureProfile,
    ProfileError,
    ReferenceProfile,
    build_reference_profile,
    category_counts,
    feature_kind,
    merge_profiles,
    numeric_values,
    profile_columns,
    read_reference_profile,
    sample_row_positions,
)

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "SEVERITIES",
    "DriftConfig",
    "DriftInputError",
    "DriftReport",
    "FeatureDrift",
    "FeatureOverride",
    "MultivariateDrift",
    "PerformanceDrift",
    "check_drift",
]

REPORT_SCHEMA_VERSION = 1
SEVERITIES = ("none", "low", "medium", "high")

# SciPy's ks_2samp computes exact p-values while both samples have at most this many values.
_SCIPY_EXACT_KS_MAX = 10_000
# Proportions are floored here for PSI, so that an empty bin gives a large but finite term.
_PSI_EPSILON = 1e-4
_PLOT_BINS = 30
_CURRENT_SAMPLE_ROWS = 20_000
_MIN_CLASSIFIER_ROWS = 50
_CLASSIFIER_TREES = 30
_HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "r2"}
_LOWER_IS_BETTER = {"log_loss", "rmse", "mae", "mse"}


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class FeatureOverride:
    """Thresholds that differ for one feature; None keeps the model-wide value."""

    psi_floor: float | None = None
    psi_medium: float | None = None
    psi_high: float | None = None
    distance_floor: float | None = None
    distance_medium: float | None = None
    distance_high: float | None = None
    missing_rate_floor: float | None = None
    missing_rate_medium: float | None = None
    missing_rate_high: float | None = None
    ignore: bool = False  # leave the feature out of the verdict (still reported)

    @classmethod
    def from_dict(cls, feature: str, document: Mapping[str, Any]) -> FeatureOverride:
        if not isinstance(document, Mapping):
            raise ValueError(f"drift setting per_feature.{feature} must be a table of thresholds")
        known = {f.name for f in fields(cls)}
        for key in document:
            if key not in known:
                raise ValueError(f"unknown drift setting per_feature.{feature}.{key}; "
                                 f"known: {', '.join(sorted(known))}")
        return cls(**document)


@dataclass(frozen=True)
class DriftConfig:
    """Every threshold of the drift check; a model's mlops.toml ``[drift]`` table sets them.

    Effect sizes come in three cut-offs: ``*_floor`` (the least effect that counts as
    drift, and where severity "low" starts), ``*_medium`` and ``*_high``. The FDR level is
    a property of the whole family of tests, so it is set per model, not per feature.
    """

    fdr_level: float = 0.05
    psi_floor: float = 0.1
    psi_medium: float = 0.25
    psi_high: float = 0.5
    distance_floor: float = 0.1  # Wasserstein / reference std for numbers, Jensen-Shannon for categories
    distance_medium: float = 0.25
    distance_high: float = 0.5
    missing_rate_floor: float = 0.05  # absolute change in the share of missing (or infinite) values
    missing_rate_medium: float = 0.2
    missing_rate_high: float = 0.5
    dataset_share: float = 0.3  # the dataset drifts when at least this share of features drifts
    key_features: tuple[str, ...] = ()  # ... or when any of these drifts
    per_feature: Mapping[str, FeatureOverride] = field(default_factory=dict)
    multivariate: bool = True
    classifier_rows: int = 2_000  # rows from each side for the domain classifier
    classifier_folds: int = 3
    auc_floor: float = 0.6  # the classifier's lower AUC bound must pass this to count
    auc_medium: float = 0.7
    auc_high: float = 0.8
    prediction_rows: int = 50_000  # batch rows scored by the model for prediction and performance drift
    performance_tolerance: float = 0.05  # relative loss of the metric tolerated before it counts
    bootstrap_rounds: int = 200
    confidence: float = 0.95
    seed: int = 0
    workers: int | None = None  # threads; None uses every core
    memory_budget_bytes: int = 256 * 2**20  # batch bytes read at once from Parquet

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_features", tuple(str(name) for name in self.key_features))
        overrides = {str(name): value if isinstance(value, FeatureOverride) else FeatureOverride.from_dict(name, value)
                     for name, value in dict(self.per_feature).items()}
        object.__setattr__(self, "per_feature", MappingProxyType(overrides))
        for name in ("fdr_level", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"drift setting {name} must be between 0 and 1, got {getattr(self, name)!r}")
        if not 0 < self.dataset_share <= 1:
            raise ValueError(f"drift setting dataset_share must be in (0, 1], got {self.dataset_share!r}")
        for prefix in ("psi", "distance", "missing_rate", "auc"):
            self._check_ladder(prefix, getattr(self, f"{prefix}_floor"), getattr(self, f"{prefix}_medium"),
                               getattr(self, f"{prefix}_high"))
        for name in ("classifier_rows", "classifier_folds", "prediction_rows", "bootstrap_rounds",
                     "memory_budget_bytes"):
            if getattr(self, name) < (2 if name == "classifier_folds" else 1):
                raise ValueError(f"drift setting {name} is too small: {getattr(self, name)!r}")
        for feature in self.per_feature:
            thresholds = self.thresholds(feature)
            for prefix in ("psi", "distance", "missing_rate"):
                self._check_ladder(f"per_feature.{feature}.{prefix}", *(thresholds[f"{prefix}_{level}"]
                                   for level in ("floor", "medium", "high")))

    @staticmethod
    def _check_ladder(name: str, floor: float, medium: float, high: float) -> None:
        if not 0 <= floor <= medium <= high:
            raise ValueError(f"drift settings {name}_floor <= {name}_medium <= {name}_high must hold "
                             f"and be non-negative, got {floor}, {medium}, {high}")

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> DriftConfig:
        """Build from a ``[drift]`` table; an unknown key raises ValueError naming it."""
        known = {f.name for f in fields(cls)}
        for key in document:
            if key not in known:
                raise ValueError(f"unknown drift setting {key!r}; known settings: {', '.join(sorted(known))}")
        return cls(**dict(document))

    def to_dict(self) -> dict[str, Any]:
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_feature"}
        document["key_features"] = list(self.key_features)
        document["per_feature"] = {name: {key: value for key, value in asdict(override).items()
                                          if value is not None and value is not False}
                                   for name, override in self.per_feature.items()}
        return document

    def thresholds(self, feature: str) -> dict[str, Any]:
        """The thresholds that apply to one feature, overrides resolved."""
        override = self.per_feature.get(feature, FeatureOverride())
        resolved: dict[str, Any] = {}
        for prefix in ("psi", "distance", "missing_rate"):
            for level in ("floor", "medium", "high"):
                key = f"{prefix}_{level}"
                value = getattr(override, key)
                resolved[key] = getattr(self, key) if value is None else value
        resolved["ignore"] = override.ignore
        return resolved


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class FeatureDrift:
    """The drift check's result for one feature (or for the model's outputs)."""

    name: str
    kind: str  # "numeric" or "categorical"
    drifted: bool
    severity: str
    test: str | None  # "ks" or "chi2"; None when no test could run
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None  # Benjamini-Hochberg across the batch's tests
    effect_size: float | None  # the larger of PSI and the distance
    statistics: Mapping[str, Mapping[str, Any]]  # every statistic by name, each with at least "value"
    reference: Mapping[str, Any]  # summary of the reference
    current: Mapping[str, Any]  # summary of the batch
    findings: tuple[str, ...] = ()  # things a person should know, in words
    histogram: Mapping[str, Any] | None = None  # reference against current, for charts
    ignored: bool = False
    # Why it drifted: "distribution", "missing_rate", "type_changed" (the model learnt numbers, the batch has text)
    # or "schema" (the column is missing or cannot be read as numbers).
    causes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MultivariateDrift:
    """A classifier trained to tell reference rows from batch rows; AUC near 0.5 means it cannot."""

    auc: float
    auc_lower: float  # one-sided lower confidence bound (Hanley & McNeil standard error)
    confidence: float
    drifted: bool
    severity: str
    rows_per_side: int
    folds: int
    top_features: tuple[tuple[str, float], ...]  # the features it leans on, by importance


@dataclass(frozen=True)
class PerformanceDrift:
    """The model's primary metric on the labelled batch against its reference value."""

    metric: str
    reference: float | None
    current: float
    ci_low: float
    ci_high: float
    confidence: float
    rows: int
    degraded: bool
    severity: str
    higher_is_better: bool


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one drift check; ``to_dict`` is the stable JSON document."""

    drifted: bool
    severity: str
    reasons: tuple[str, ...]
    model: str
    features: tuple[FeatureDrift, ...]
    reference: Mapping[str, Any]
    current: Mapping[str, Any]
    schema_changes: Mapping[str, Any]
    config: DriftConfig
    multivariate: MultivariateDrift | None = None
    prediction: FeatureDrift | None = None
    performance: PerformanceDrift | None = None
    notes: tuple[str, ...] = ()  # checks that were skipped, and why
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        """Drifted features, the largest effect first."""
        return sorted((f for f in self.features if f.drifted), key=_drift_order)

    def to_dict(self) -> dict[str, Any]:
        from pipeline.drift_report import report_to_dict
        return report_to_dict(self)

    def to_json(self) -> str:
        from pipeline.drift_report import report_to_json
        return report_to_json(self)

    def to_markdown(self, link: str | None = None) -> str:
        from pipeline.drift_report import report_to_markdown
        return report_to_markdown(self, link=link)

    def write_png(self, path: str | Path, *, top: int = 6) -> None:
        from pipeline.drift_report import write_report_png
        write_report_png(self, Path(path), top=top)

    def write(self, directory: str | Path, *, link: str | None = None) -> None:
        """Write report.json, report.md and report.png into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.json").write_text(self.to_json() + "\n", encoding="utf-8")
        (directory / "report.md").write_text(self.to_markdown(link=link), encoding="utf-8")
        self.write_png(directory / "report.png")


def _drift_order(feature: FeatureDrift) -> tuple[int, float]:
    return (-SEVERITIES.index(feature.severity), -(feature.effect_size or 0.0))


# --------------------------------------------------------------------------- entry point

def check_drift(
    reference: ReferenceProfile | pd.DataFrame | str | Path,
    current: pd.DataFrame | str | Path,
    *,
    config: DriftConfig | None = None,
    model: Any = None,
    target: str | None = None,
    model_name: str | None = None,
) -> DriftReport:
    """Compare a batch with a reference and say whether, where and how much it drifted.

    reference: a profile, a directory holding one (a packaged model version), or data
        (DataFrame, CSV/Parquet file, folder or glob) profiled on the spot.
    current: the batch, as a DataFrame, CSV/Parquet file, folder or glob.
    model: a fitted scikit-learn estimator; enables prediction drift, and performance drift
        when ``target`` names a label column of the batch.
    model_name: when given, a profile of another model is refused.
    Raises DriftInputError (a ValueError) for bad input, with a message saying what to do.
    """
    config = config or DriftConfig()
    profile = _reference_profile(reference, target=target, model=model, model_name=model_name, config=config)
    if model_name is not None and profile.model != model_name:
        raise DriftInputError(f"the reference profile belongs to model {profile.model!r}, not {model_name!r}; "
                              "pass the profile packaged with this model")
    batch = open_batch(current, role="current batch")
    if batch.rows == 0:
        raise DriftInputError(f"the {batch.label} is empty (0 rows); there is nothing to compare, "
                              "check the export that produced it")
    if target is not None and target not in batch.dtypes:
        raise DriftInputError(f"the target column {target!r} is not in the {batch.label}; "
                              f"its columns are {_preview(batch.columns)}")
    with warnings.catch_warnings():
        # SciPy notes when its exact KS p-value falls back to the asymptotic one; so would we.
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful", category=RuntimeWarning)
        return _Check(profile, batch, config, model, target).run()


def _reference_profile(reference, *, target, model, model_name, config) -> ReferenceProfile:
    if isinstance(reference, ReferenceProfile):
        return reference
    name = model_name or "(reference data)"
    if isinstance(reference, (str, Path)) and Path(reference).is_dir() and (Path(reference) / "profile.json").exists():
        try:
            return read_reference_profile(Path(reference))
        except ProfileError as error:
            raise DriftInputError(str(error)) from error
    batch = open_batch(reference, role="reference")
    if batch.rows == 0:
        raise DriftInputError(f"the {batch.label} is empty (0 rows); a reference needs data")
    try:
        if batch.in_memory:
            frame = batch.frame
            features = frame.drop(columns=[target]) if target in frame.columns else frame
            predictions = _model_outputs(model, features, kind=None) if model is not None else None
            labels = frame[target] if target in frame.columns else None
            return build_reference_profile(features, model=name, seed=config.seed,
                                           predictions=None if predictions is None else predictions[0],
                                           target=labels)
        return _profile_parquet_reference(batch, name=name, target=target, config=config)
    except ProfileError as error:
        raise DriftInputError(f"cannot profile the {batch.label}: {error}") from error


def _profile_parquet_reference(batch: Batch, *, name: str, target: str | None, config: DriftConfig) -> ReferenceProfile:
    """Profile a reference too large for memory, column group by column group."""
    names = [column for column in batch.columns if column != target]
    rows = sample_row_positions(batch.rows, DEFAULT_SAMPLE_SIZE, config.seed)
    parts = []
    for group in batch.column_groups(names, config.memory_budget_bytes):
        frame = pd.DataFrame({column: group[column] for column in names if column in group})
        parts.append(profile_columns(frame, rows))
    summaries, sample = merge_profiles(parts)
    return ReferenceProfile(model=name, rows=batch.rows, features=summaries, sample=sample, seed=config.seed)


class _Check:
    """One drift check: compares every column, then decides."""

    def __init__(self, profile: ReferenceProfile, batch: Batch, config: DriftConfig, model: Any, target: str | None):
        self.profile, self.batch, self.config, self.model, self.target = profile, batch, config, model, target
        self.notes: list[str] = []
        self.scratch = threading.local()  # per-thread sort buffers, freed with the check
        reference_rows = profile.raw if profile.raw is not None else profile.sample
        self.reference_rows = reference_rows
        # Rows for the classifier and the model; columns streamed in row chunks also take
        # their quantiles and chart from these rows, so Parquet batches keep more.
        want = config.classifier_rows if batch.in_memory else max(_CURRENT_SAMPLE_ROWS, config.classifier_rows)
        if model is not None:
            want = max(want, config.prediction_rows)
        self.sample_positions = sample_row_positions(batch.rows, want, config.seed + 1)

    def run(self) -> DriftReport:
        profile, batch, config = self.profile, self.batch, self.config
        batch_kinds = {name: feature_kind(dtype) for name, dtype in batch.dtypes.items() if name != self.target}
        missing = [f.name for f in profile.features if f.name not in batch_kinds]
        extra = [name for name in batch_kinds if name not in {f.name for f in profile.features}]
        retyped = [f for f in profile.features if f.name in batch_kinds and not _readable(f.kind, batch_kinds[f.name])]
        comparable = [f for f in profile.features if f.name in batch_kinds and _readable(f.kind, batch_kinds[f.name])]
        if not comparable and not retyped:
            raise DriftInputError(f"none of the reference's {len(profile.features)} features "
                                  f"({_preview(profile.feature_names)}) is in the {batch.label} "
                                  f"(columns {_preview(batch.columns)}); is the profile from another model?")
        computed, current_sample = self._compare_columns(comparable)
        results = {f.name: result for f, result in zip(comparable, computed)}
        for feature in profile.features:
            if feature.name in missing:
                results[feature.name] = _schema_result(feature, "the column is missing from the batch")
        for feature in retyped:
            results[feature.name] = _type_changed_result(feature, batch.dtypes[feature.name])
        ordered = [results[f.name] for f in profile.features]
        features = _decide(ordered, config)
        multivariate = self._multivariate(comparable, current_sample) if config.multivariate else None
        prediction, performance = self._model_checks(current_sample)
        drifted, severity, reasons = _verdict(features, multivariate, prediction, performance, config)
        schema_changes = {
            "missing_columns": missing,
            "extra_columns": extra,
            "type_changes": [{"name": f.name, "reference": f"{f.kind} ({f.dtype})",
                              "current": f"{batch_kinds[f.name]} ({batch.dtypes[f.name]})"} for f in retyped],
        }
        return DriftReport(
            drifted=drifted, severity=severity, reasons=tuple(reasons), model=profile.model,
            features=tuple(features), config=config, multivariate=multivariate, prediction=prediction,
            performance=performance, notes=tuple(self.notes), schema_changes=schema_changes,
            reference={"model": profile.model, "rows": profile.rows, "sample_rows": len(self.reference_rows),
                       "profile_created_at": profile.created_at, "profile_format_version": profile.format_version},
            current={"source": batch.label, "rows": batch.rows, "columns": len(batch.columns)},
        )

    # -- per-column statistics -----------------------------------------------------------

    def _compare_columns(self, features: Sequence[FeatureProfile]) -> tuple[list[dict], pd.DataFrame]:
        names = [f.name for f in features]
        by_name = {f.name: f for f in features}
        budget = self.config.memory_budget_bytes
        oversized = [n for n in names if not self.batch.in_memory and self.batch.column_bytes(n) > budget]
        grouped = [n for n in names if n not in oversized]
        results: dict[str, dict] = {}
        sample_columns: dict[str, pd.Series] = {}
        workers = self.config.workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for group in self.batch.column_groups(grouped, budget) if grouped else ():
                present = [n for n in grouped if n in group and n not in results]
                # Categories first: hashing them then overlaps with the numeric sorts, not after them.
                present.sort(key=lambda n: by_name[n].kind != "categorical")
                columns = {n: group[n] for n in present}
                futures = {n: pool.submit(self._compare_column, by_name[n], columns[n]) for n in present}
                for n, future in futures.items():
                    results[n], sample_columns[n] = future.result()
                del columns, group
        for n in oversized:  # too large on its own: stream it in row chunks
            results[n], sample_columns[n] = self._compare_streamed(by_name[n])
        sample = pd.DataFrame({n: sample_columns[n] for n in names})
        return [results[n] for n in names], sample

    def _compare_column(self, feature: FeatureProfile, column: pd.Series) -> tuple[dict, pd.Series]:
        """Statistics of one column and its sampled rows; runs in a worker thread."""
        column = _as_reference_kind(feature, column)
        sample = column.iloc[self.sample_positions].reset_index(drop=True)
        if feature.kind == "numeric":
            try:
                values = numeric_values(column)
            except (TypeError, ValueError) as error:  # complex numbers, odd extension types
                finding = f"the values cannot be compared as numbers ({_first_line(error)})"
                return _schema_result(feature, finding), sample
            reference = _NumericReference.build(feature, self.reference_rows[feature.name])
            return _compare_numeric(reference, _sorted_current(reference, values, self.scratch)), sample
        counts = category_counts(column)
        return _compare_categorical(feature, counts, len(column) - int(counts.sum())), sample

    def _compare_streamed(self, feature: FeatureProfile) -> tuple[dict, pd.Series]:
        reference_values = self.reference_rows[feature.name]
        positions = self.sample_positions
        sampled, offset = [], 0
        numeric = _NumericReference.build(feature, reference_values) if feature.kind == "numeric" else None
        accumulator = _StreamingNumeric(numeric) if numeric is not None else None
        counts, rows = pd.Series(dtype=np.int64), 0
        for chunk in self.batch.rows_of(feature.name, self.config.memory_budget_bytes):
            chunk = _as_reference_kind(feature, chunk)
            inside = positions[(positions >= offset) & (positions < offset + len(chunk))] - offset
            sampled.append(chunk.iloc[inside].reset_index(drop=True))
            offset += len(chunk)
            if accumulator is not None:
                accumulator.add(numeric_values(chunk))
            else:
                counts = counts.add(category_counts(chunk), fill_value=0).astype(np.int64)
                rows += len(chunk)
        sample = pd.concat(sampled, ignore_index=True)
        if accumulator is not None:
            return _compare_numeric(numeric, accumulator.result(numeric_values(sample))), sample
        return _compare_categorical(feature, counts, rows - int(counts.sum())), sample

    # -- multivariate and model checks -----------------------------------------------------

    def _multivariate(self, features: Sequence[FeatureProfile],
                      current_sample: pd.DataFrame) -> MultivariateDrift | None:
        config = self.config
        n = min(config.classifier_rows, len(self.reference_rows), len(current_sample))
        if n < _MIN_CLASSIFIER_ROWS or not features:
            self.notes.append(f"domain classifier skipped: it needs at least {_MIN_CLASSIFIER_ROWS} rows on each "
                              f"side and a shared feature; it had {n} rows")
            return None
        return _domain_classifier(self.reference_rows, current_sample, features, n, config)

    def _model_checks(self, current_sample: pd.DataFrame) -> tuple[FeatureDrift | None, PerformanceDrift | None]:
        profile, config = self.profile, self.config
        if self.model is None:
            if profile.prediction is not None or self.target is not None:
                self.notes.append("prediction and performance drift skipped: no model was given to score the batch")
            return None, None
        lacking = [name for name in profile.feature_names if name not in self.batch.dtypes]
        if lacking:
            self.notes.append("prediction drift skipped: the batch lacks features the model needs: "
                              + _preview(lacking))
            return None, None
        retyped = [name for name in profile.feature_names if name not in current_sample.columns]
        if retyped:
            # Their type change is already reported as drift of those features.
            self.notes.append("prediction and performance drift skipped: the model cannot score columns whose "
                              "type changed: " + _preview(retyped))
            return None, None
        scored = current_sample.iloc[:config.prediction_rows]
        try:
            outputs, positive = _model_outputs(self.model, scored[profile.feature_names], kind=_kind_of(profile))
        except Exception as error:  # a model can fail in many ways on odd data; report, do not crash
            self.notes.append(f"prediction drift skipped: the model could not score the batch "
                              f"({type(error).__name__}: {_first_line(error)})")
            return None, None
        prediction = None
        if profile.prediction is None or profile.prediction_sample is None:
            self.notes.append("prediction drift skipped: the profile holds no model outputs on the reference")
        else:
            prediction = _compare_outputs(profile.prediction, profile.prediction_sample, outputs, config)
        performance = None
        if self.target is not None:
            labels = self._target_sample(len(scored))
            performance = _performance(profile, labels, outputs, positive, config, self.notes)
        return prediction, performance

    def _target_sample(self, count: int) -> np.ndarray:
        positions = self.sample_positions[:count]
        for group in self.batch.column_groups([self.target], self.config.memory_budget_bytes):
            return group[self.target].iloc[positions].to_numpy()
        return np.array([])


# --------------------------------------------------------------------------- numeric features

@dataclass(frozen=True)
class _NumericReference:
    """The reference side of a numeric comparison, prepared from the profile."""

    feature: FeatureProfile
    sample: np.ndarray  # finite sample values, sorted
    grid: np.ndarray  # distinct sample values
    at_or_below: np.ndarray  # number of sample values <= each grid value
    centre: float
    spread: float
    spread_basis: str

    @classmethod
    def build(cls, feature: FeatureProfile, values: pd.Series | np.ndarray) -> _NumericReference:
        sample = np.sort(numeric_values(values))
        sample = sample[np.isfinite(sample)]
        starts = np.flatnonzero(np.concatenate(([True], sample[1:] != sample[:-1])))  # np.unique, already sorted
        grid, counts = sample[starts], np.diff(np.append(starts, sample.size))
        summary = feature.numeric
        if summary and summary.median is not None:
            centre = summary.median
        else:
            centre = float(np.median(sample)) if sample.size else 0.0
        std = summary.std if summary and summary.std else 0.0
        if std > 0:
            spread, basis = std, "reference standard deviation"
        else:  # a constant reference has no spread; scale by its magnitude instead
            spread, basis = (abs(centre) or 1.0), "reference is constant: |reference value| (or 1)"
        return cls(feature, sample, grid, np.cumsum(counts), float(centre), float(spread), basis)


@dataclass
class _NumericCurrent:
    """What the comparison needs from a batch column, from a sort or from row chunks."""

    rows: int
    missing: int
    infinite: int
    finite: int
    at_or_below: np.ndarray  # batch values <= each reference grid value
    below: np.ndarray  # batch values < each reference grid value
    psi_counts: np.ndarray
    wasserstein: float | None
    summary: dict[str, Any]
    plot_values: np.ndarray  # sorted finite values (all, or a sample) for the histogram
    exact_values: np.ndarray | None = None  # all finite values, kept only when SciPy's exact p-value applies
    wasserstein_error: float = 0.0  # bound on the Wasserstein error when streamed


def _sorted_current(reference: _NumericReference, values: np.ndarray,
                    scratch: threading.local | None = None) -> _NumericCurrent:
    """Summarise a batch column by sorting it once; everything after is O(reference sample).

    With ``scratch``, the sort reuses that thread's buffer: a fresh 8 MB array costs as
    much in page faults as sorting it. The arrays in the result then stay valid only
    until the thread's next column.
    """
    if values.dtype != reference.sample.dtype:  # compare in one precision, as SciPy would after concatenating
        common = np.result_type(values.dtype, reference.sample.dtype)
        values = values.astype(common, copy=False)
        reference = _with_dtype(reference, common)
    ordered = _buffer(scratch, values.size, values.dtype)
    ordered[:] = values
    ordered.sort()  # NaN last, +inf just before it, -inf first
    rows = ordered.size
    valid_end = int(np.searchsorted(ordered, np.nan, side="left"))
    first = int(np.searchsorted(ordered, -np.inf, side="right"))
    end = int(np.searchsorted(ordered, np.inf, side="left"))
    finite = ordered[first:end]
    grid = reference.grid
    at_or_below = np.searchsorted(finite, grid, side="right")
    below = at_or_below.copy()  # differs only where batch values equal a grid value
    tied = (at_or_below > 0) & (finite[np.maximum(at_or_below - 1, 0)] == grid) if finite.size else below < 0
    if tied.any():
        below[tied] = np.searchsorted(finite, grid[tied], side="left")
    psi_counts = _bin_counts(finite, reference.feature)
    wasserstein, mean, std = _wasserstein_sorted(finite, reference, at_or_below)
    summary = _sorted_summary(finite, mean, std)
    exact = finite if max(finite.size, reference.sample.size) <= _SCIPY_EXACT_KS_MAX else None
    return _NumericCurrent(rows, rows - valid_end, valid_end - finite.size, finite.size, at_or_below, below,
                           psi_counts, wasserstein, summary, finite, exact)


def _buffer(scratch: threading.local | None, size: int, dtype: np.dtype) -> np.ndarray:
    if scratch is None:
        return np.empty(size, dtype)
    key = np.dtype(dtype)
    buffers = scratch.__dict__.setdefault("buffers", {})
    if key not in buffers or buffers[key].size < size:
        buffers[key] = np.empty(size, dtype)
    return buffers[key][:size]


def _with_dtype(reference: _NumericReference, dtype: np.dtype) -> _NumericReference:
    return _NumericReference(reference.feature, reference.sample.astype(dtype), reference.grid.astype(dtype),
                             reference.at_or_below, reference.centre, reference.spread, reference.spread_basis)


def _bin_counts(sorted_values: np.ndarray, feature: FeatureProfile) -> np.ndarray:
    """Counts in the reference's quantile bins; bin i holds (edge[i-1], edge[i]]."""
    edges = np.asarray(feature.numeric.psi_edges if feature.numeric else (), dtype=np.float64)
    cumulative = np.searchsorted(sorted_values, _round_down(edges, sorted_values.dtype), side="right")
    return np.diff(np.concatenate(([0], cumulative, [sorted_values.size])))


def _round_down(edges: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Edges in the data's precision, rounded down, so that "x <= edge" keeps its meaning for float32 x."""
    cast = edges.astype(dtype)
    too_high = cast.astype(np.float64) > edges
    cast[too_high] = np.nextafter(cast[too_high], dtype.type(-np.inf))
    return cast


def _wasserstein_sorted(finite: np.ndarray, reference: _NumericReference,
                        at_or_below: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Exact W1 between the reference sample and the sorted batch, and the batch's mean and std.

    W1 is the integral of |F_ref - F_cur|. F_ref is constant between grid values, and on
    each such interval F_cur crosses F_ref at most once, at a known order statistic, so
    the integral is a sum of pieces of H(y) = sum over batch values v <= y of (y - v).
    H needs the sums of the i smallest batch values only at the grid and crossing counts;
    one reduceat pass gives them, centred on the reference median so they keep precision.
    """
    n_cur, grid = finite.size, reference.grid
    if n_cur == 0:
        return None, None, None
    centre, n_ref = reference.centre, reference.sample.size
    # Smallest count c with c / n_cur >= F_ref: F_cur reaches F_ref at the c-th batch value.
    crossing = np.clip(-(-reference.at_or_below[:-1] * n_cur // max(n_ref, 1)), 1, n_cur)
    cuts, prefix = _centred_prefix_sums(finite, np.concatenate((at_or_below, crossing)), centre)
    total_offset = prefix[-1]
    mean = centre + total_offset / n_cur
    std = _std(finite, mean)
    if n_ref == 0:
        return None, mean, std

    def prefix_at(counts: np.ndarray) -> np.ndarray:  # sum of the `counts` smallest centred values
        return prefix[np.searchsorted(cuts, counts)]

    shifted = grid.astype(np.float64) - centre
    h_grid = shifted * at_or_below - prefix_at(at_or_below)
    below_first = h_grid[0] / n_cur
    last = at_or_below[-1]
    above_last = ((total_offset - prefix_at(last)) - shifted[-1] * (n_cur - last)) / n_cur
    total = below_first + above_last
    if grid.size > 1:
        cdf_ref = reference.at_or_below[:-1] / n_ref
        start, stop = shifted[:-1], shifted[1:]
        at_crossing = finite[crossing - 1].astype(np.float64) - centre
        x = np.clip(at_crossing, start, stop)
        h_x = np.where(at_crossing <= start, h_grid[:-1],
                       np.where(at_crossing >= stop, h_grid[1:], at_crossing * crossing - prefix_at(crossing)))
        below_part = cdf_ref * (x - start) - (h_x - h_grid[:-1]) / n_cur
        above_part = (h_grid[1:] - h_x) / n_cur - cdf_ref * (stop - x)
        total += float(np.sum(below_part + above_part))
    return max(float(total), 0.0), mean, std


def _centred_prefix_sums(finite: np.ndarray, counts: np.ndarray, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """Sums of (value - centre) over the i smallest values, for every i in counts (and 0 and all).

    Returns the sorted distinct counts and the sums at them. Summing segment by segment
    reads the batch once without writing a prefix array as long as the batch.
    """
    cuts = np.concatenate(([0], counts, [finite.size]))
    cuts.sort(kind="stable")  # already two sorted runs: a merge (np.union1d would hash)
    cuts = cuts[np.concatenate(([True], cuts[1:] != cuts[:-1]))]
    lengths = np.diff(cuts)
    segments = np.add.reduceat(finite, cuts[:-1], dtype=np.float64) if finite.size else np.zeros(0)
    segments -= centre * lengths
    return cuts, np.concatenate(([0.0], np.cumsum(segments)))


def _std(finite: np.ndarray, mean: float) -> float:
    if finite[0] == finite[-1]:
        return 0.0  # exactly, where the one-pass formula leaves rounding noise
    # einsum rather than np.dot: concurrent BLAS calls from worker threads contend for a lock.
    mean_square = float(np.einsum("i,i->", finite, finite, dtype=np.float64)) / finite.size
    variance = mean_square - mean * mean
    if variance <= 1e-8 * mean_square:  # the one-pass formula cancelled: far from zero, little spread
        variance = float(np.var(finite, dtype=np.float64))
    return math.sqrt(max(variance, 0.0))


def _quantile_sorted(sorted_values: np.ndarray, q: float) -> float:
    """np.quantile's default (linear) on already sorted values, without sorting again."""
    position = q * (sorted_values.size - 1)
    low = int(math.floor(position))
    high = min(low + 1, sorted_values.size - 1)
    fraction = position - low
    return float(sorted_values[low]) + fraction * (float(sorted_values[high]) - float(sorted_values[low]))


def _sorted_summary(finite: np.ndarray, mean: float | None, std: float | None) -> dict[str, Any]:
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "p05": None, "median": None, "p95": None, "max": None}
    return {"mean": mean, "std": std, "min": float(finite[0]), "p05": _quantile_sorted(finite, 0.05),
            "median": _quantile_sorted(finite, 0.5), "p95": _quantile_sorted(finite, 0.95), "max": float(finite[-1])}


class _StreamingNumeric:
    """Accumulates a numeric batch column chunk by chunk, for columns too large to sort in memory.

    Counts at the reference grid are exact, so the KS statistic, PSI and missing rates
    are exact; W1 is exact except on grid intervals where the two ECDFs cross, where
    the bound in ``wasserstein_error`` applies; quantiles come from the row sample.
    """

    def __init__(self, reference: _NumericReference):
        self.reference = reference
        size = reference.grid.size
        self.between = np.zeros(size + 1, dtype=np.int64)  # values strictly between grid points (and beyond)
        self.equal = np.zeros(size, dtype=np.int64)
        self.sums = np.zeros(size + 1)  # sum of (value - centre) per between-interval
        self.edges = np.asarray(reference.feature.numeric.psi_edges, dtype=np.float64)
        self.psi_counts = np.zeros(self.edges.size + 1, dtype=np.int64)
        self.rows = self.missing = self.infinite = self.count = 0
        self.mean = self.m2 = 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, values: np.ndarray) -> None:
        self.rows += values.size
        nan = np.isnan(values)
        finite_mask = np.isfinite(values)
        self.missing += int(nan.sum())
        self.infinite += int((~nan & ~finite_mask).sum())
        finite = values[finite_mask].astype(np.float64)
        if finite.size == 0:
            return
        grid = self.reference.grid.astype(np.float64)
        index = np.searchsorted(grid, finite, side="left")
        is_equal = (index < grid.size) & (grid[np.minimum(index, grid.size - 1)] == finite)
        self.equal += np.bincount(index[is_equal], minlength=grid.size)
        strict = index[~is_equal]
        self.between += np.bincount(strict, minlength=grid.size + 1)
        self.sums += np.bincount(strict, weights=finite[~is_equal] - self.reference.centre, minlength=grid.size + 1)
        bins = np.searchsorted(self.edges, finite, side="left")
        self.psi_counts += np.bincount(bins, minlength=self.edges.size + 1)
        # Chan et al.'s pairwise update keeps the variance accurate across chunks.
        chunk_mean = float(finite.mean())
        chunk_m2 = float(np.sum((finite - chunk_mean) ** 2))
        total = self.count + finite.size
        delta = chunk_mean - self.mean
        self.mean += delta * finite.size / total
        self.m2 += chunk_m2 + delta * delta * self.count * finite.size / total
        self.count = total
        self.low, self.high = min(self.low, float(finite.min())), max(self.high, float(finite.max()))

    def result(self, sample_values: np.ndarray) -> _NumericCurrent:
        n_cur = self.count
        below = np.cumsum(self.between[:-1]) + np.concatenate(([0], np.cumsum(self.equal)[:-1]))
        at_or_below = below + self.equal
        wasserstein, error = (None, 0.0) if n_cur == 0 else self._wasserstein(below, at_or_below)
        plot = np.sort(sample_values[np.isfinite(sample_values)])
        summary = {"mean": self.mean if n_cur else None, "std": math.sqrt(self.m2 / n_cur) if n_cur else None,
                   "min": self.low if n_cur else None,
                   "p05": _quantile_sorted(plot, 0.05) if plot.size else None,
                   "median": _quantile_sorted(plot, 0.5) if plot.size else None,
                   "p95": _quantile_sorted(plot, 0.95) if plot.size else None,
                   "max": self.high if n_cur else None}
        return _NumericCurrent(self.rows, self.missing, self.infinite, n_cur, at_or_below, below,
                               self.psi_counts, wasserstein, summary, plot, None, error)

    def _wasserstein(self, below: np.ndarray, at_or_below: np.ndarray) -> tuple[float, float]:
        reference, n_cur = self.reference, self.count
        n_ref = reference.sample.size
        shifted = reference.grid.astype(np.float64) - reference.centre
        counts, sums = self.between, self.sums
        total = (counts[0] * shifted[0] - sums[0]) / n_cur + (sums[-1] - counts[-1] * shifted[-1]) / n_cur
        error = 0.0
        if shifted.size > 1:
            cdf_ref = reference.at_or_below[:-1] / n_ref
            start, stop = shifted[:-1], shifted[1:]
            width = stop - start
            inner_counts, inner_sums = counts[1:-1], sums[1:-1]
            signed = (at_or_below[:-1] * width + inner_counts * stop - inner_sums) / n_cur - cdf_ref * width
            crosses = (at_or_below[:-1] / n_cur < cdf_ref) & (below[1:] / n_cur > cdf_ref)
            total += float(np.sum(np.abs(signed)))
            error = float(np.sum(np.where(crosses, 2 * width * inner_counts / n_cur, 0.0)))
        return max(total, 0.0), error


def _compare_numeric(reference: _NumericReference, current: _NumericCurrent) -> dict:
    """Statistics of one numeric feature; the verdict is made later, across features."""
    feature = reference.feature
    n_ref, n_cur = reference.sample.size, current.finite
    findings = []
    if current.infinite:
        findings.append(f"{current.infinite:,} infinite values in the batch ({current.infinite / current.rows:.1%}); "
                        "they count as missing")
    if n_cur == 0:
        findings.append("the batch has no finite value in this column")
    if n_ref == 0:
        findings.append("the reference has no finite value in this column")
    statistics: dict[str, dict[str, Any]] = {}
    test = statistic = p_value = psi = distance = None
    if n_cur and n_ref:
        statistic, p_value = _ks(reference, current)
        test = "ks"
        psi = _psi(np.asarray(feature.numeric.psi_counts), current.psi_counts)
        distance = current.wasserstein / reference.spread
        statistics["ks"] = {"value": statistic, "p_value": p_value}
        statistics["psi"] = {"value": psi, "bins": len(feature.numeric.psi_counts)}
        statistics["wasserstein"] = {"value": current.wasserstein, "normalised": distance,
                                     "scale": reference.spread, "scale_basis": reference.spread_basis}
        if current.wasserstein_error:
            statistics["wasserstein"]["error_bound"] = current.wasserstein_error
        if feature.numeric.std == 0 and current.summary["std"]:
            findings.append("the reference is constant but the batch varies")
    summary_ref = {"rows": feature.rows, "missing_rate": _rate(feature.missing + feature.infinite, feature.rows),
                   "mean": feature.numeric.mean if feature.numeric else None,
                   "std": feature.numeric.std if feature.numeric else None,
                   **_percentile_summary(feature)}
    summary_cur = {"rows": current.rows, "missing_rate": _rate(current.missing + current.infinite, current.rows),
                   **current.summary}
    return {
        "feature": feature, "test": test, "statistic": statistic, "p_value": p_value, "psi": psi,
        "distance": distance, "statistics": statistics, "findings": findings,
        "missing": (feature.missing + feature.infinite, feature.rows, current.missing + current.infinite, current.rows),
        "reference": summary_ref, "current": summary_cur,
        "histogram": _numeric_histogram(reference.sample, current.plot_values),
    }


def _ks(reference: _NumericReference, current: _NumericCurrent) -> tuple[float, float]:
    """Two-sample KS between the reference sample and the batch, as scipy.stats.ks_2samp computes it.

    Between consecutive reference values the reference ECDF is flat and the batch's rises,
    so the largest gap sits at a reference value (batch ECDF "<=") or just before one
    ("<"): the batch's counts at the reference grid are enough.
    """
    n_ref, n_cur = reference.sample.size, current.finite
    if current.exact_values is not None:  # small samples: SciPy's exact p-value, on the very same values
        result = stats.ks_2samp(reference.sample, current.exact_values)
        return float(result.statistic), float(result.pvalue)
    cdf_ref = reference.at_or_below / n_ref
    cdf_ref_before = np.concatenate(([0], reference.at_or_below[:-1])) / n_ref
    gap_at = np.abs(cdf_ref - current.at_or_below / n_cur)
    gap_before = np.abs(cdf_ref_before - current.below / n_cur)
    statistic = float(max(gap_at.max(), gap_before.max()))
    larger, smaller = sorted([float(n_ref), float(n_cur)], reverse=True)
    effective = np.round(larger * smaller / (larger + smaller))
    if effective < 1:  # one value against one: SciPy's formula is undefined, nothing can be told apart
        return statistic, 1.0
    return statistic, _kolmogorov_sf(statistic, int(effective))


def _kolmogorov_sf(statistic: float, n: int) -> float:
    """``scipy.stats.kstwo.sf(statistic, n)``, the p-value ks_2samp reports for large samples.

    Where SciPy evaluates the tail as twice the one-sided Smirnov probability (n > 140 and
    2.2 <= n·D² < 370: a clearly drifted feature), its ``special.smirnov`` sums n terms in
    double-double arithmetic, some 6 ms per feature at n = 12,000. The same Birnbaum–Tingey
    sum in log space with NumPy agrees to about 1e-9 relative (tests/test_drift_scipy.py)
    at a twentieth of the cost; every other case goes to SciPy itself.
    """
    t = n * statistic
    nxsquared = t * statistic
    if not (n > 140 and statistic < 0.5 and 1.0 < t < n - 1 and 2.2 <= nxsquared < 370.0):
        return float(np.clip(stats.kstwo.sf(statistic, n), 0, 1))
    j = np.arange(int(math.floor(n * (1 - statistic))) + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):  # the last term may be 0^k: its log is -inf, its value 0
        log_terms = (special.gammaln(n + 1) - special.gammaln(j + 1) - special.gammaln(n - j + 1)
                     + (j - 1) * np.log(statistic + j / n) + (n - j) * np.log1p(-statistic - j / n))
    largest = float(log_terms.max())
    one_sided = statistic * math.exp(largest) * float(np.sum(np.exp(log_terms - largest)))
    return float(np.clip(2 * one_sided, 0, 1))


def _psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    reference = np.maximum(reference_counts / max(reference_counts.sum(), 1), _PSI_EPSILON)
    current = np.maximum(current_counts / max(current_counts.sum(), 1), _PSI_EPSILON)
    return float(np.sum((current - reference) * np.log(current / reference)))


def _percentile_summary(feature: FeatureProfile) -> dict[str, Any]:
    percentiles = feature.numeric.percentiles if feature.numeric else ()
    if not percentiles:
        return {"min": None, "p05": None, "median": None, "p95": None, "max": None}
    return {"min": percentiles[0], "p05": percentiles[5], "median": percentiles[50], "p95": percentiles[95],
            "max": percentiles[100]}


def _numeric_histogram(reference: np.ndarray, current: np.ndarray) -> dict[str, Any] | None:
    """Shares of the reference sample and the batch in common bins spanning both (0.5% tails cut)."""
    if reference.size == 0 and current.size == 0:
        return None
    ends = [values[int(q * (values.size - 1))] for values in (reference, current) if values.size
            for q in (0.005, 0.995)]
    low, high = float(min(ends)), float(max(ends))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, _PLOT_BINS + 1)
    if high - low <= 2 * _PLOT_BINS and all(_looks_integer(values) for values in (reference, current)):
        edges = np.arange(math.floor(low) - 0.5, math.ceil(high) + 1.0)  # one bar per whole number
        low, high = float(edges[0]), float(edges[-1])

    def shares(values: np.ndarray) -> list[float]:
        if values.size == 0:
            return [0.0] * (edges.size - 1)
        positions = np.searchsorted(values, edges.astype(values.dtype), side="left")
        positions[-1] = np.searchsorted(values, values.dtype.type(high), side="right")
        return [float(x) for x in np.diff(positions) / values.size]

    return {"edges": [float(e) for e in edges], "reference": shares(reference), "current": shares(current)}


def _looks_integer(values: np.ndarray) -> bool:
    probe = values[:: max(1, values.size // 2_000)]  # a strided look is enough to choose bins
    return bool(np.all(probe == np.round(probe)))


# --------------------------------------------------------------------------- categorical features

def _compare_categorical(feature: FeatureProfile, counts: pd.Series, missing: int) -> dict:
    summary = feature.categorical
    reference_counts = dict(summary.counts)
    rows = int(counts.sum()) + missing
    findings = []
    unseen = [label for label in counts.index if label not in reference_counts]
    current_counts = {label: int(count) for label, count in counts.items() if label in reference_counts}
    labels = list(reference_counts)
    if summary.other:  # categories the reference pooled cannot be told from new ones
        labels.append(OTHER_CATEGORY)
        reference_counts[OTHER_CATEGORY] = summary.other
        current_counts[OTHER_CATEGORY] = int(counts[unseen].sum()) if unseen else 0
        if unseen:
            findings.append(f"{len(unseen)} categories outside the reference's {len(summary.counts)} most common "
                            "are compared as one pooled group")
    elif unseen:
        new_share = counts[unseen].sort_values(ascending=False)
        total = max(int(counts.sum()), 1)
        shown = ", ".join(f"{label!r} ({_share(count / total)})" for label, count in new_share.iloc[:5].items())
        more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
        noun = "category" if len(unseen) == 1 else "categories"
        findings.append(f"{len(unseen)} {noun} never seen in the reference: {shown}{more}")
        labels.extend(unseen)
        current_counts.update({label: int(counts[label]) for label in unseen})
    reference_vector = np.array([reference_counts.get(label, 0) for label in labels], dtype=np.int64)
    current_vector = np.array([current_counts.get(label, 0) for label in labels], dtype=np.int64)
    statistics: dict[str, dict[str, Any]] = {}
    test = statistic = p_value = psi = distance = None
    if current_vector.sum() == 0:
        findings.append("the batch has no value in this column")
    elif reference_vector.sum() == 0:
        findings.append("the reference has no value in this column")
    else:
        table = np.vstack([reference_vector, current_vector])
        table = table[:, table.sum(axis=0) > 0]
        result = stats.chi2_contingency(table)
        test, statistic, p_value = "chi2", float(result.statistic), float(result.pvalue)
        distance = float(jensenshannon(reference_vector, current_vector, base=2))
        psi = _psi(reference_vector, current_vector)
        statistics["chi2"] = {"value": statistic, "p_value": p_value, "dof": int(result.dof)}
        statistics["jensen_shannon"] = {"value": distance}
        statistics["psi"] = {"value": psi, "bins": int(table.shape[1])}
        if unseen and not summary.other:
            statistics["new_categories"] = {"value": len(unseen),
                                            "share": float(counts[unseen].sum() / max(int(counts.sum()), 1))}
    return {
        "feature": feature, "test": test, "statistic": statistic, "p_value": p_value, "psi": psi,
        "distance": distance, "statistics": statistics, "findings": findings,
        "missing": (feature.missing, feature.rows, missing, rows),
        "reference": _categorical_summary(reference_counts, feature.missing, feature.rows),
        "current": _categorical_summary(dict(counts.items()), missing, rows),
        "histogram": _categorical_histogram(labels, reference_vector, current_vector),
    }



def _categorical_summary(counts: Mapping[str, int], missing: int, rows: int) -> dict[str, Any]:
    total = sum(counts.values())
    top = max(counts.items(), key=lambda item: item[1]) if counts else None
    return {"rows": rows, "missing_rate": _rate(missing, rows), "categories": len(counts),
            "top": top[0] if top else None, "top_share": top[1] / total if top and total else None}


def _categorical_histogram(labels: list[str], reference: np.ndarray, current: np.ndarray,
                           top: int = 12) -> dict[str, Any]:
    reference_share = reference / max(reference.sum(), 1)
    current_share = current / max(current.sum(), 1)
    order = np.argsort(-np.maximum(reference_share, current_share), kind="stable")
    shown = order[:top]
    names = [labels[i] for i in shown]
    ref_values = [float(reference_share[i]) for i in shown]
    cur_values = [float(current_share[i]) for i in shown]
    if len(order) > top:
        names.append("(rest)")
        ref_values.append(float(reference_share[order[top:]].sum()))
        cur_values.append(float(current_share[order[top:]].sum()))
    return {"categories": names, "reference": ref_values, "current": cur_values}


# --------------------------------------------------------------------------- the verdict

def _schema_result(feature: FeatureProfile, finding: str) -> dict:
    return {"feature": feature, "schema": finding, "test": None, "statistic": None, "p_value": None, "psi": None,
            "distance": None, "statistics": {}, "findings": [finding], "missing": None,
            "reference": {"rows": feature.rows, "missing_rate": _rate(feature.missing, feature.rows)},
            "current": {}, "histogram": None}


def _type_changed_result(feature: FeatureProfile, batch_dtype: Any) -> dict:
    """A column whose values changed type (numbers in the reference, text or flags in the batch).

    It is drift of that feature, at the highest severity: the model cannot read such values as
    it learnt them, and no distribution test compares numbers with text. A missing column, by
    contrast, stays a schema problem of the batch.
    """
    before, after = _type_name(feature.dtype), _type_name(batch_dtype)
    result = _schema_result(feature, f"type changed: {before} → {after}")
    result["type_changed"] = True
    result["reference"]["type"], result["current"]["type"] = before, after
    return result


def _readable(reference_kind: str, batch_kind: str) -> bool:
    """Whether a batch column can be compared with the reference's feature as it is.

    Numbers in a column the model learnt as categories are categories (a CSV reader types a
    column of zip codes as numbers; ``[data] categorical`` reads it as text in training), so they
    are compared as such. Text in a column it learnt as numbers is a change of type.
    """
    return reference_kind == batch_kind or (reference_kind == "categorical" and batch_kind == "numeric")


def _as_reference_kind(feature: FeatureProfile, column: pd.Series) -> pd.Series:
    """Numbers in a categorical feature as category text, written as training writes them (1.0 is "1")."""
    if feature.kind != "categorical" or feature_kind(column.dtype) != "numeric":
        return column
    from pipeline.data import category_text

    codes, distinct = pd.factorize(column)  # one conversion per distinct value, not per row
    text = np.array([*(category_text(value) for value in distinct), None], dtype=object)
    return pd.Series(text[codes], index=column.index, name=column.name)  # code -1 (missing) picks None


def _type_name(dtype: Any) -> str:
    """A dtype as a person reads it: any string or object dtype is "text"."""
    name = str(dtype)
    return "text" if name in {"object", "str", "string"} or name.startswith("string") else name


def _type_changes(features: Iterable[FeatureDrift]) -> list[str]:
    """``name (float64 → text)`` for every counted feature whose type changed."""
    return [f"{f.name} ({f.reference['type']} → {f.current['type']})" for f in features
            if "type_changed" in f.causes and not f.ignored]


def _missing_test(missing: tuple[int, int, int, int] | None) -> tuple[float | None, float | None]:
    """Change in the missing share and its chi-square p-value; (None, None) when nothing is ever missing."""
    if missing is None:
        return None, None
    ref_missing, ref_rows, cur_missing, cur_rows = missing
    if ref_rows == 0 or cur_rows == 0:
        return None, None
    change = cur_missing / cur_rows - ref_missing / ref_rows
    if ref_missing + cur_missing == 0:
        return change, None
    table = np.array([[ref_missing, ref_rows - ref_missing], [cur_missing, cur_rows - cur_missing]])
    if (table.sum(axis=0) == 0).any():  # everything missing on both sides: no change to test
        return change, 1.0
    return change, float(stats.chi2_contingency(table).pvalue)


def _level(value: float | None, floor: float, medium: float, high: float) -> int:
    if value is None or not value >= floor:
        return 0
    return 3 if value >= high else 2 if value >= medium else 1


def _decide(results: list[dict], config: DriftConfig) -> list[FeatureDrift]:
    """Benjamini-Hochberg over every test of the batch, then the effect floors, per feature."""
    family: list[tuple[int, str, float]] = []
    missing_tests = []
    for index, result in enumerate(results):
        if result["p_value"] is not None and not config.thresholds(result["feature"].name)["ignore"]:
            family.append((index, "distribution", result["p_value"]))
        change, p_missing = _missing_test(result["missing"])
        missing_tests.append((change, p_missing))
        if p_missing is not None and not config.thresholds(result["feature"].name)["ignore"]:
            family.append((index, "missing", p_missing))
    adjusted: dict[tuple[int, str], float] = {}
    if family:
        values = stats.false_discovery_control([p for _, _, p in family], method="bh")
        adjusted = {(index, what): float(value) for (index, what, _), value in zip(family, values)}
    decided = []
    for index, result in enumerate(results):
        feature: FeatureProfile = result["feature"]
        limits = config.thresholds(feature.name)
        significant = adjusted.get((index, "distribution"), 1.0) <= config.fdr_level
        psi_level = _level(result["psi"], limits["psi_floor"], limits["psi_medium"], limits["psi_high"])
        distance_level = _level(result["distance"], limits["distance_floor"], limits["distance_medium"],
                                limits["distance_high"])
        distribution_level = max(psi_level, distance_level) if significant else 0
        change, p_missing = missing_tests[index]
        statistics = {name: dict(value) for name, value in result["statistics"].items()}
        findings = list(result["findings"])
        if "ks" in statistics or "chi2" in statistics:
            test_name = "ks" if "ks" in statistics else "chi2"
            statistics[test_name]["p_value_adjusted"] = adjusted.get((index, "distribution"))
        missing_level = 0
        if change is not None:
            ref_rate = result["reference"].get("missing_rate")
            statistics["missing_rate"] = {"value": change, "reference": ref_rate,
                                          "current": result["current"].get("missing_rate"),
                                          "p_value": p_missing, "p_value_adjusted": adjusted.get((index, "missing"))}
            if adjusted.get((index, "missing"), 1.0) <= config.fdr_level:
                missing_level = _level(abs(change), limits["missing_rate_floor"], limits["missing_rate_medium"],
                                       limits["missing_rate_high"])
            if missing_level:
                findings.append(f"missing values went from {_share(ref_rate)} to "
                                f"{_share(result['current']['missing_rate'])}")
        if significant and not distribution_level and result["p_value"] is not None:
            findings.append("the test is significant but the effect is below the floor: not counted as drift")
        level = 3 if result.get("schema") else max(distribution_level, missing_level)
        if result.get("schema"):
            causes = ("type_changed",) if result.get("type_changed") else ("schema",)
        else:
            causes = tuple(cause for cause, cause_level in (("distribution", distribution_level),
                                                            ("missing_rate", missing_level)) if cause_level)
        effects = [value for value in (result["psi"], result["distance"]) if value is not None]
        effect = max(effects) if effects else (abs(change) if missing_level else None)
        decided.append(FeatureDrift(
            name=feature.name, kind=feature.kind, drifted=level > 0, severity=SEVERITIES[level],
            test=result["test"], statistic=result["statistic"], p_value=result["p_value"],
            p_value_adjusted=adjusted.get((index, "distribution")), effect_size=effect,
            statistics=statistics, reference=result["reference"], current=result["current"],
            findings=tuple(findings), histogram=result["histogram"], ignored=limits["ignore"], causes=causes,
        ))
    return decided


def _verdict(features: list[FeatureDrift], multivariate: MultivariateDrift | None, prediction: FeatureDrift | None,
             performance: PerformanceDrift | None, config: DriftConfig) -> tuple[bool, str, list[str]]:
    counted = [f for f in features if not f.ignored]
    drifted = [f for f in counted if f.drifted]
    share = len(drifted) / len(counted) if counted else 0.0
    reasons, levels = [], []
    if drifted and share >= config.dataset_share:
        reasons.append(f"{len(drifted)} of {len(counted)} features drifted ({share:.0%}; "
                       f"the threshold is {config.dataset_share:.0%})")
        levels.extend(SEVERITIES.index(f.severity) for f in drifted)
    key_drifted = [f for f in drifted if f.name in config.key_features]
    if key_drifted:
        reasons.append("key features drifted: " + ", ".join(f.name for f in key_drifted))
        levels.extend(SEVERITIES.index(f.severity) for f in key_drifted)
    retyped = _type_changes(drifted)
    if retyped:
        # Counted whatever the share: the model cannot read these columns as it learnt them.
        reasons.append("type changed: " + ", ".join(retyped))
        levels.append(SEVERITIES.index("high"))
    if multivariate is not None and multivariate.drifted:
        reasons.append(f"a classifier tells batch rows from reference rows: AUC {multivariate.auc:.3f} "
                       f"(lower bound {multivariate.auc_lower:.3f} >= {config.auc_floor})")
        levels.append(SEVERITIES.index(multivariate.severity))
    if prediction is not None and prediction.drifted:
        reasons.append("the model's outputs drifted")
        levels.append(SEVERITIES.index(prediction.severity))
    if performance is not None and performance.degraded:
        reasons.append(f"{performance.metric} fell from {performance.reference:.4g} to {performance.current:.4g} "
                       f"({performance.confidence:.0%} interval {performance.ci_low:.4g} to {performance.ci_high:.4g})")
        levels.append(SEVERITIES.index(performance.severity))
    if not reasons and drifted:
        reasons.append(f"no drift: {len(drifted)} of {len(counted)} features drifted ({share:.0%}), below the "
                       f"{config.dataset_share:.0%} threshold, and none is a key feature")
        return False, "none", reasons
    if not reasons:
        return False, "none", ["no feature drifted"]
    return True, SEVERITIES[max(levels)], reasons


# --------------------------------------------------------------------------- multivariate

def _domain_classifier(reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[FeatureProfile],
                       rows: int, config: DriftConfig) -> MultivariateDrift:
    """Cross-validated AUC of extra trees telling reference rows (0) from batch rows (1)."""
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(config.seed)
    left = reference.iloc[np.sort(rng.choice(len(reference), rows, replace=False))]
    right = current.iloc[np.sort(rng.choice(len(current), rows, replace=False))]
    matrix = np.column_stack([_encode(left[f.name], right[f.name], f.kind) for f in features])
    labels = np.repeat([0, 1], rows)
    scores = np.zeros(labels.size)
    importances = np.zeros(len(features))
    folds = StratifiedKFold(n_splits=config.classifier_folds, shuffle=True, random_state=config.seed)
    for train, test in folds.split(matrix, labels):
        # Small trees, one thread: on a few thousand rows sklearn's per-tree overhead dominates.
        model = ExtraTreesClassifier(n_estimators=_CLASSIFIER_TREES, min_samples_leaf=20, max_features="sqrt",
                                     n_jobs=1, random_state=config.seed)
        model.fit(matrix[train], labels[train])
        scores[test] = model.predict_proba(matrix[test])[:, 1]
        importances += model.feature_importances_ / config.classifier_folds
    auc = float(roc_auc_score(labels, scores))
    lower = auc - stats.norm.ppf(config.confidence) * _auc_standard_error(auc, rows, rows)
    order = np.argsort(-importances, kind="stable")[:5]
    level = _level(lower, config.auc_floor, config.auc_medium, config.auc_high)
    return MultivariateDrift(auc=auc, auc_lower=float(lower), confidence=config.confidence, drifted=level > 0,
                             severity=SEVERITIES[level], rows_per_side=rows, folds=config.classifier_folds,
                             top_features=tuple((features[i].name, float(importances[i])) for i in order))


def _encode(left: pd.Series, right: pd.Series, kind: str) -> np.ndarray:
    """One column for the trees: numbers as floats (infinities as missing), categories as codes."""
    if kind == "numeric":
        values = np.concatenate([numeric_values(left), numeric_values(right)]).astype(np.float64)
        values[~np.isfinite(values)] = np.nan
        return values
    both = pd.concat([left, right], ignore_index=True).astype(object)
    labels = both.map(str, na_action="ignore")
    codes, _ = pd.factorize(labels, use_na_sentinel=True)
    codes = codes.astype(np.float64)
    codes[codes < 0] = np.nan
    return codes


def _auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return math.sqrt(max(variance, 0.0) / (positives * negatives))


# --------------------------------------------------------------------------- model outputs

def _kind_of(profile: ReferenceProfile) -> str | None:
    return profile.prediction.kind if profile.prediction is not None else None


def _model_outputs(model: Any, features: pd.DataFrame, kind: str | None) -> tuple[np.ndarray, Any]:
    """The model's outputs in the form the profile keeps, and the positive class when they are probabilities.

    A binary classifier gives the positive-class probability unless the reference kept labels.
    """
    classes = getattr(model, "classes_", None)
    if hasattr(model, "predict_proba") and classes is not None and len(classes) == 2 and kind != "categorical":
        return np.asarray(model.predict_proba(features))[:, 1], classes[1]
    return np.asarray(model.predict(features)), None


def _compare_outputs(profile: FeatureProfile, reference_sample: np.ndarray, outputs: np.ndarray,
                     config: DriftConfig) -> FeatureDrift:
    """Prediction drift: the model's outputs compared like a feature, on their own (not in the feature FDR family)."""
    if profile.kind == "numeric":
        reference = _NumericReference.build(profile, reference_sample)
        result = _compare_numeric(reference, _sorted_current(reference, numeric_values(outputs).copy()))
    else:
        current = pd.Series(outputs)
        counts = category_counts(current)
        result = _compare_categorical(profile, counts, len(current) - int(counts.sum()))
    result["missing"] = None
    return _decide([result], config)[0]


def _performance(profile: ReferenceProfile, labels: np.ndarray, outputs: np.ndarray, positive: Any,
                 config: DriftConfig, notes: list[str]) -> PerformanceDrift | None:
    """The metric on the labelled batch with a bootstrap interval, against the reference value."""
    known = ~pd.isna(labels)
    labels, outputs = labels[known], outputs[known]
    if labels.size < 2:
        notes.append(f"performance drift skipped: the batch has {labels.size} labelled rows, it needs 2 or more")
        return None
    metric = profile.primary_metric or _default_metric(labels, outputs, positive)
    if metric not in _HIGHER_IS_BETTER | _LOWER_IS_BETTER:
        notes.append(f"performance drift skipped: metric {metric!r} is not one of "
                     f"{', '.join(sorted(_HIGHER_IS_BETTER | _LOWER_IS_BETTER))}")
        return None
    reference_value = profile.metric_value
    if reference_value is None and profile.target_sample is not None and profile.prediction_sample is not None:
        ref_labels, ref_outputs = profile.target_sample, profile.prediction_sample
        ref_known = ~pd.isna(ref_labels)
        ref_positive = positive
        if ref_positive is None and _kind_of(profile) == "numeric" and metric not in _REGRESSION:
            ref_positive = np.sort(pd.unique(ref_labels[ref_known]))[-1]
        reference_value = _safe_metric(metric, ref_labels[ref_known], ref_outputs[ref_known], ref_positive)
    value = _safe_metric(metric, labels, outputs, positive)
    if value is None:
        notes.append(f"performance drift skipped: {metric} cannot be computed on this batch "
                     "(for example a single class for roc_auc)")
        return None
    rng = np.random.default_rng(config.seed)
    rounds = []
    for _ in range(config.bootstrap_rounds):
        pick = rng.integers(0, labels.size, labels.size)
        score = _safe_metric(metric, labels[pick], outputs[pick], positive)
        if score is not None:
            rounds.append(score)
    tail = (1 - config.confidence) / 2
    low, high = np.quantile(rounds, [tail, 1 - tail]) if rounds else (value, value)
    higher = metric in _HIGHER_IS_BETTER
    degraded, level = False, 0
    if reference_value is not None:
        allowed = config.performance_tolerance * abs(reference_value)
        loss = (reference_value - value) if higher else (value - reference_value)
        # Degraded only when even the favourable end of the interval is worse than allowed.
        least_loss = (reference_value - high) if higher else (low - reference_value)
        degraded = least_loss > allowed
        level = 0 if not degraded else 3 if loss > 2 * allowed else 2
    return PerformanceDrift(metric=metric, reference=reference_value, current=value, ci_low=float(low),
                            ci_high=float(high), confidence=config.confidence, rows=int(labels.size),
                            degraded=degraded, severity=SEVERITIES[level], higher_is_better=higher)


_REGRESSION = {"rmse", "mse", "mae", "r2"}


def _default_metric(labels: np.ndarray, outputs: np.ndarray, positive: Any) -> str:
    if positive is not None:
        return "roc_auc"
    if outputs.dtype.kind == "f" and np.unique(labels).size > 20:
        return "rmse"
    return "accuracy"


def _safe_metric(metric: str, labels: np.ndarray, outputs: np.ndarray, positive: Any) -> float | None:
    """The metric, or None when it is undefined on these rows. ``positive`` set: outputs are its probabilities."""
    from sklearn import metrics

    try:
        if metric in _REGRESSION:
            truth, guess = labels.astype(np.float64), outputs.astype(np.float64)
            if metric == "rmse":
                return float(math.sqrt(metrics.mean_squared_error(truth, guess)))
            scorer = {"mse": metrics.mean_squared_error, "mae": metrics.mean_absolute_error, "r2": metrics.r2_score}
            return float(scorer[metric](truth, guess))
        average = "macro"
        if positive is not None:
            truth = labels == positive
            if metric == "roc_auc":
                return float(metrics.roc_auc_score(truth, outputs)) if 0 < truth.sum() < truth.size else None
            if metric == "log_loss":
                return float(metrics.log_loss(truth, outputs.astype(np.float64), labels=[False, True]))
            guess, average = outputs >= 0.5, "binary"
        elif labels.dtype.kind in "iufb" and outputs.dtype.kind in "iufb":
            truth, guess = labels.astype(np.float64), outputs.astype(np.float64)
        else:
            truth, guess = labels.astype(str), outputs.astype(str)
        scorer = {"accuracy": metrics.accuracy_score, "balanced_accuracy": metrics.balanced_accuracy_score,
                  "f1": lambda t, g: metrics.f1_score(t, g, average=average, zero_division=0),
                  "precision": lambda t, g: metrics.precision_score(t, g, average=average, zero_division=0),
                  "recall": lambda t, g: metrics.recall_score(t, g, average=average, zero_division=0)}
        return float(scorer[metric](truth, guess)) if metric in scorer else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- small helpers

def _share(value: float) -> str:
    """A percentage that does not round a small but real share to 0.0%."""
    if value == 0 or value >= 0.001:
        return f"{value:.1%}"
    return f"{value:.2%}" if value >= 0.0001 else "<0.01%"


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _preview(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
