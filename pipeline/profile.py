"""The reference profile: what the drift check needs to know about the training data.

A profile is written when a model is packaged and read back whenever a production
batch is checked. It is compact: it keeps

* full-data summaries of every feature (row, missing and infinite counts; for numeric
  features the mean, standard deviation, the 101 percentiles and the counts in ten
  quantile bins used for the population stability index; for categorical features
  the count of every category, up to ``MAX_CATEGORIES`` of them), and
* a fixed-size random sample of rows (``DEFAULT_SAMPLE_SIZE``), the same rows for
  every column, for the exact tests (Kolmogorov-Smirnov, Wasserstein) and the
  domain classifier, with the model's outputs and the labels for those rows,

and not the raw training data unless ``keep_raw=True``. docs/drift.md says which
statistic uses what, and the error this allows.

On disk a profile is a directory holding ``profile.json`` (metadata and summaries),
``profile-sample.parquet`` and, when asked, ``profile-raw.parquet``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_numeric_dtype

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "MAX_CATEGORIES",
    "OTHER_CATEGORY",
    "PROFILE_FORMAT_VERSION",
    "CategoricalSummary",
    "FeatureKind",
    "FeatureProfile",
    "NumericSummary",
    "ProfileError",
    "ReferenceProfile",
    "build_reference_profile",
    "category_counts",
    "feature_kind",
    "numeric_values",
    "read_reference_profile",
]

PROFILE_FORMAT_VERSION = 1
# Above SciPy's 10,000-value limit for exact KS p-values (which cost O(n*m)), and large
# enough that sampling error (about 1% of a standard deviation) stays far below the floors.
DEFAULT_SAMPLE_SIZE = 12_000
MAX_CATEGORIES = 1_000
OTHER_CATEGORY = "(other)"  # the label rare categories are pooled under, past MAX_CATEGORIES

FeatureKind = Literal["numeric", "categorical"]

_FORMAT_NAME = "mlops-bot/reference-profile"
_PROFILE_JSON = "profile.json"
_PROFILE_SAMPLE = "profile-sample.parquet"
_PROFILE_RAW = "profile-raw.parquet"
# Model outputs and labels ride in the sample file under names no feature may take.
_PREDICTION_COLUMN = "__mlops_prediction__"
_TARGET_COLUMN = "__mlops_target__"
_PERCENTILES = np.linspace(0.0, 1.0, 101)
_PSI_BIN_COUNT = 10


class ProfileError(ValueError):
    """A reference profile is missing, corrupt, of another format version, or cannot be built."""


def feature_kind(dtype: Any) -> FeatureKind:
    """The one rule for what a column is: numbers are numeric, everything else categorical.

    Booleans count as categorical: two values have no distance worth measuring.
    """
    if is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
        return "numeric"
    return "categorical"


def numeric_values(column: pd.Series | np.ndarray) -> np.ndarray:
    """A numeric column as a float NumPy array with NaN for missing, copying only when needed.

    float32 stays float32 so that wide float32 data keeps half the memory.
    """
    values = column.to_numpy() if isinstance(column, pd.Series) else np.asarray(column)
    if values.dtype.kind == "f":
        return values
    if values.dtype.kind in "iub":
        return values.astype(np.float64)
    if isinstance(column, pd.Series):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return values.astype(np.float64)


def category_counts(column: pd.Series) -> pd.Series:
    """Counts of each category of a column, labelled by ``str(value)``, missing values left out.

    Labels are strings so that a profile stored as JSON compares equal to a batch read from
    CSV or Parquet; values that print the same (``1`` and ``"1"``) are one category.
    """
    counts = column.value_counts(dropna=True, sort=False)
    counts = counts[counts.to_numpy() > 0]
    labels = [str(value) for value in counts.index]
    counts = pd.Series(counts.to_numpy(dtype=np.int64), index=pd.Index(labels, dtype=object))
    if not counts.index.is_unique:
        counts = counts.groupby(level=0, sort=False).sum()
    return counts


@dataclass(frozen=True)
class NumericSummary:
    """Full-data summary of a numeric feature's finite values."""

    mean: float | None
    std: float | None
    percentiles: tuple[float, ...]  # 0th..100th, empty when there is no finite value
    psi_edges: tuple[float, ...]  # inner edges of the quantile bins; bin i holds (edge[i-1], edge[i]]
    psi_counts: tuple[int, ...]  # len(psi_edges) + 1 counts

    @property
    def median(self) -> float | None:
        return self.percentiles[50] if self.percentiles else None


@dataclass(frozen=True)
class CategoricalSummary:
    """Full-data category counts; categories past ``MAX_CATEGORIES`` are pooled in ``other``."""

    counts: dict[str, int]
    other: int = 0  # rows whose category was pooled because there were too many


@dataclass(frozen=True)
class FeatureProfile:
    """What the profile knows about one column."""

    name: str
    kind: FeatureKind
    dtype: str
    rows: int
    missing: int  # NaN / None / NA
    infinite: int = 0
    numeric: NumericSummary | None = None
    categorical: CategoricalSummary | None = None

    @property
    def valid(self) -> int:
        """Rows with a usable value: not missing and, for numbers, finite."""
        return self.rows - self.missing - self.infinite


@dataclass
class ReferenceProfile:
    """Everything the drift check needs about a model's reference (training) data."""

    model: str
    rows: int
    features: tuple[FeatureProfile, ...]
    sample: pd.DataFrame  # the same random rows for every feature
    seed: int = 0
    prediction: FeatureProfile | None = None  # the model's outputs on the reference
    prediction_sample: np.ndarray | None = None  # outputs for the sampled rows
    target: FeatureProfile | None = None  # its name is the label column's name
    target_sample: np.ndarray | None = None
    primary_metric: str | None = None
    metric_value: float | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format_version: int = PROFILE_FORMAT_VERSION
    raw: pd.DataFrame | None = None  # the whole reference, only when built with keep_raw=True

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def feature(self, name: str) -> FeatureProfile:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def write(self, directory: Path) -> None:
        """Write ``profile.json``, ``profile-sample.parquet`` (and ``profile-raw.parquet``) into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sample = _sample_for_storage(self.sample)
        if self.prediction_sample is not None:
            sample[_PREDICTION_COLUMN] = self.prediction_sample
        if self.target_sample is not None:
            sample[_TARGET_COLUMN] = self.target_sample
        _write_parquet(sample, directory / _PROFILE_SAMPLE)
        if self.raw is not None:
            _write_parquet(_sample_for_storage(self.raw), directory / _PROFILE_RAW)
        document = {
            "format": _FORMAT_NAME,
            "format_version": self.format_version,
            "model": self.model,
            "created_at": self.created_at,
            "rows": self.rows,
            "seed": self.seed,
            "sample_rows": len(self.sample),
            "has_raw": self.raw is not None,
            "features": [_feature_to_json(feature) for feature in self.features],
            "prediction": _feature_to_json(self.prediction) if self.prediction else None,
            "target": _feature_to_json(self.target) if self.target else None,
            "primary_metric": self.primary_metric,
            "metric_value": _json_float(self.metric_value),
        }
        _write_profile_document(directory / _PROFILE_JSON, document)


def record_metric_value(directory: Path, value: float) -> None:
    """Set the profile's ``metric_value`` (validation's primary metric, known after packaging) in
    ``profile.json`` alone: its samples stay as written."""
    json_path = Path(directory) / _PROFILE_JSON
    document = _profile_document(json_path)
    document["metric_value"] = _json_float(value)
    _write_profile_document(json_path, document)


def _write_profile_document(json_path: Path, document: dict[str, Any]) -> None:
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _profile_document(json_path: Path) -> dict[str, Any]:
    """``profile.json`` read and checked for its format; ProfileError says what is wrong."""
    if not json_path.is_file():
        raise ProfileError(f"no reference profile in {json_path.parent}: {_PROFILE_JSON} is missing; "
                           "package the model again to write one")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProfileError(f"reference profile {json_path} is unreadable or corrupt ({error}); "
                           "package the model again to rewrite it") from error
    if not isinstance(document, dict) or document.get("format") != _FORMAT_NAME:
        raise ProfileError(f"{json_path} is not an mlops-bot reference profile")
    version = document.get("format_version")
    if version != PROFILE_FORMAT_VERSION:
        age = "older" if isinstance(version, int) and version < PROFILE_FORMAT_VERSION else "newer or unknown"
        raise ProfileError(f"reference profile {json_path} has format version {version!r}, {age} than the "
                           f"version {PROFILE_FORMAT_VERSION} this mlops-bot reads; rebuild it by packaging "
                           "the model again (or upgrade mlops-bot if the profile is newer)")
    return document


def read_reference_profile(directory: Path) -> ReferenceProfile:
    """Read a profile written by ``ReferenceProfile.write``; ProfileError says what is wrong."""
    directory = Path(directory)
    json_path = directory / _PROFILE_JSON
    document = _profile_document(json_path)
    version = document["format_version"]
    try:
        features = tuple(_feature_from_json(item) for item in document["features"])
        prediction = _feature_from_json(document["prediction"]) if document.get("prediction") else None
        target = _feature_from_json(document["target"]) if document.get("target") else None
        model, rows, seed = str(document["model"]), int(document["rows"]), int(document["seed"])
    except (KeyError, TypeError, ValueError) as error:
        raise ProfileError(f"reference profile {json_path} is corrupt: bad or missing field {error}") from error
    sample = _read_parquet(directory / _PROFILE_SAMPLE)
    prediction_sample = sample.pop(_PREDICTION_COLUMN).to_numpy() if _PREDICTION_COLUMN in sample else None
    target_sample = sample.pop(_TARGET_COLUMN).to_numpy() if _TARGET_COLUMN in sample else None
    missing = [feature.name for feature in features if feature.name not in sample.columns]
    if missing:
        raise ProfileError(f"reference profile sample in {directory} lacks columns {missing[:5]}; it is corrupt")
    raw = _read_parquet(directory / _PROFILE_RAW) if document.get("has_raw") else None
    return ReferenceProfile(
        model=model, rows=rows, features=features, sample=sample[[f.name for f in features]], seed=seed,
        prediction=prediction, prediction_sample=prediction_sample,
        target=target, target_sample=target_sample,
        primary_metric=document.get("primary_metric"), metric_value=document.get("metric_value"),
        created_at=str(document.get("created_at", "")), format_version=version, raw=raw,
    )


def build_reference_profile(
    features: pd.DataFrame,
    *,
    model: str,
    seed: int = 0,
    predictions: np.ndarray | None = None,
    predict: Callable[[pd.DataFrame], np.ndarray] | None = None,
    target: pd.Series | None = None,
    primary_metric: str | None = None,
    metric_value: float | None = None,
    keep_raw: bool = False,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> ReferenceProfile:
    """Profile the reference features (and optionally the model's outputs and labels on them).

    The model's outputs come either as ``predictions`` (one per row) or from ``predict``, which is
    called on the sampled rows only: the outputs' reference is then built from the sample, which
    spares scoring the whole training set at packaging.
    """
    if not isinstance(features, pd.DataFrame):
        raise ProfileError(f"the reference must be a pandas DataFrame, not {type(features).__name__}")
    if predictions is not None and predict is not None:
        raise ProfileError("give predictions or predict, not both")
    original = features
    features = _with_string_columns(features)
    rows = len(features)
    if rows == 0 or features.shape[1] == 0:
        raise ProfileError(f"cannot profile an empty reference ({rows} rows, {features.shape[1]} columns)")
    for name, values in (("predictions", predictions), ("target", target)):
        if values is not None and len(values) != rows:
            raise ProfileError(f"{name} has {len(values)} values but the reference has {rows} rows")
    sample_rows = sample_row_positions(rows, sample_size, seed)
    summaries, sample = profile_columns(features, sample_rows)
    prediction_profile = prediction_sample = target_profile = target_sample = None
    if predict is not None:
        outputs = pd.Series(np.asarray(predict(original.iloc[sample_rows])), name="prediction")
        prediction_profile = _profile_column(outputs, prediction_kind(outputs.dtype))
        prediction_sample = _output_values(outputs)
    if predictions is not None:
        predictions = np.asarray(predictions)
        if predictions.ndim != 1:
            raise ProfileError("predictions must be one value per row (for classifiers, the positive-class "
                               f"probability or the label), got shape {predictions.shape}")
        column = pd.Series(predictions, name="prediction")
        prediction_profile = _profile_column(column, prediction_kind(column.dtype))
        prediction_sample = _output_values(column.iloc[sample_rows])
    if target is not None:
        column = pd.Series(np.asarray(target), name=str(getattr(target, "name", None) or "target"))
        target_profile = _profile_column(column, prediction_kind(column.dtype))
        target_sample = _output_values(column.iloc[sample_rows])
    return ReferenceProfile(
        model=model, rows=rows, features=tuple(summaries), sample=sample, seed=seed,
        prediction=prediction_profile, prediction_sample=prediction_sample,
        target=target_profile, target_sample=target_sample,
        primary_metric=primary_metric, metric_value=None if metric_value is None else float(metric_value),
        raw=features.copy() if keep_raw else None,
    )


def prediction_kind(dtype: Any) -> FeatureKind:
    """Model outputs are numeric when they are floats (scores, probabilities); labels are categorical."""
    return "numeric" if is_float_dtype(dtype) else "categorical"


def sample_row_positions(rows: int, sample_size: int, seed: int) -> np.ndarray:
    """Sorted positions of a uniform random sample of rows (all rows when there are few)."""
    if rows <= sample_size:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=sample_size, replace=False))


def profile_columns(frame: pd.DataFrame, sample_rows: np.ndarray) -> tuple[list[FeatureProfile], pd.DataFrame]:
    """Summaries of every column of frame, and those columns at the sampled rows."""
    summaries = [_profile_column(frame[name], feature_kind(frame[name].dtype)) for name in frame.columns]
    sample = pd.DataFrame({summary.name: _sample_values(frame[summary.name].iloc[sample_rows], summary.kind)
                           for summary in summaries})
    return summaries, sample


def merge_profiles(
    parts: Iterable[tuple[list[FeatureProfile], pd.DataFrame]],
) -> tuple[tuple[FeatureProfile, ...], pd.DataFrame]:
    """Join the summaries and samples of column groups profiled separately (same sampled rows)."""
    summaries: list[FeatureProfile] = []
    samples: list[pd.DataFrame] = []
    for group_summaries, group_sample in parts:
        summaries.extend(group_summaries)
        samples.append(group_sample.reset_index(drop=True))
    return tuple(summaries), pd.concat(samples, axis=1) if samples else pd.DataFrame()


def _profile_column(column: pd.Series, kind: FeatureKind) -> FeatureProfile:
    name, rows = str(column.name), len(column)
    if kind == "categorical":
        counts = category_counts(column)
        missing = rows - int(counts.sum())
        kept = counts.sort_values(ascending=False, kind="stable")
        other = int(kept.iloc[MAX_CATEGORIES:].sum())
        kept = kept.iloc[:MAX_CATEGORIES]
        summary = CategoricalSummary(counts={label: int(count) for label, count in kept.items()}, other=other)
        return FeatureProfile(name, kind, str(column.dtype), rows, missing, 0, categorical=summary)
    values = np.sort(numeric_values(column))  # NaN sorts last, infinities next to it
    missing = rows - int(np.searchsorted(values, np.nan, side="left"))
    first_finite = int(np.searchsorted(values, -np.inf, side="right"))
    end_finite = int(np.searchsorted(values, np.inf, side="left"))
    finite = values[first_finite:end_finite]
    infinite = rows - missing - finite.size
    return FeatureProfile(name, kind, str(column.dtype), rows, missing, infinite, numeric=_numeric_summary(finite))


def _numeric_summary(sorted_finite: np.ndarray) -> NumericSummary:
    if sorted_finite.size == 0:
        return NumericSummary(None, None, (), (), (0,))
    as_float = sorted_finite.astype(np.float64, copy=False)
    percentiles = np.quantile(as_float, _PERCENTILES)
    edges = np.unique(percentiles[10:100:10])  # deciles; ties (many equal values) merge bins
    cumulative = np.searchsorted(as_float, edges, side="right")
    counts = np.diff(np.concatenate(([0], cumulative, [as_float.size])))
    return NumericSummary(
        mean=float(np.mean(as_float)), std=float(np.std(as_float)),
        percentiles=tuple(float(p) for p in percentiles),
        psi_edges=tuple(float(e) for e in edges), psi_counts=tuple(int(c) for c in counts),
    )


def _sample_values(column: pd.Series, kind: FeatureKind) -> np.ndarray:
    """Sampled values as stored: floats (NaN for missing) or category labels (None for missing)."""
    if kind == "numeric":
        return numeric_values(column).copy()
    labels = column.astype(object).map(str, na_action="ignore")
    return labels.where(column.notna().to_numpy(), None).to_numpy(dtype=object)


def _output_values(column: pd.Series) -> np.ndarray:
    """Model outputs or labels as stored: as they are, unless Parquet cannot hold them (mixed objects)."""
    values = column.to_numpy()
    if values.dtype == object:
        return _sample_values(column, "categorical")
    return values.copy()


def _with_string_columns(frame: pd.DataFrame) -> pd.DataFrame:
    names = [str(name) for name in frame.columns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ProfileError(f"column names must be unique; repeated: {duplicates[:5]}")
    reserved = {_PREDICTION_COLUMN, _TARGET_COLUMN} & set(names)
    if reserved:
        raise ProfileError(f"column names {sorted(reserved)} are reserved by the profile; rename them")
    if names != list(frame.columns):
        frame = frame.set_axis(names, axis=1)
    return frame


def _sample_for_storage(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as strings so that Parquet stores mixed-type object columns."""
    stored = {}
    for name in frame.columns:
        column = frame[name]
        kind = feature_kind(column.dtype)
        floats = kind == "numeric" and column.dtype.kind == "f"
        stored[name] = column.to_numpy() if floats else _sample_values(column, kind)
    return pd.DataFrame(stored)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    # Dictionary pages only for labels: on sampled floats they are wasted bytes (40% more here).
    labels = [name for name in frame.columns if frame[name].dtype.kind not in "fiub"]
    frame.to_parquet(path, index=False, use_dictionary=labels)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError as error:
        raise ProfileError(f"reference profile file {path} is missing; package the model again") from error
    except Exception as error:  # pyarrow raises several types for damaged files
        raise ProfileError(f"reference profile file {path} is unreadable or truncated ({error}); "
                           "package the model again") from error


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _feature_to_json(feature: FeatureProfile) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": feature.name, "kind": feature.kind, "dtype": feature.dtype,
        "rows": feature.rows, "missing": feature.missing, "infinite": feature.infinite,
    }
    if feature.numeric is not None:
        summary = feature.numeric
        document["numeric"] = {
            "mean": _json_float(summary.mean), "std": _json_float(summary.std),
            "percentiles": list(summary.percentiles), "psi_edges": list(summary.psi_edges),
            "psi_counts": list(summary.psi_counts),
        }
    if feature.categorical is not None:
        document["categorical"] = {"counts": feature.categorical.counts, "other": feature.categorical.other}
    return document


def _feature_from_json(document: dict[str, Any]) -> FeatureProfile:
    kind = document["kind"]
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"kind {kind!r}")
    numeric = categorical = None
    if kind == "numeric":
        part = document["numeric"]
        numeric = NumericSummary(
            mean=part["mean"], std=part["std"], percentiles=tuple(part["percentiles"]),
            psi_edges=tuple(part["psi_edges"]), psi_counts=tuple(int(c) for c in part["psi_counts"]),
        )
    else:
        part = document["categorical"]
        categorical = CategoricalSummary(counts={str(k): int(v) for k, v in part["counts"].items()},
                                         other=int(part.get("other", 0)))
    return FeatureProfile(
        name=str(document["name"]), kind=kind, dtype=str(document["dtype"]), rows=int(document["rows"]),
        missing=int(document["missing"]), infinite=int(document.get("infinite", 0)),
        numeric=numeric, categorical=categorical,
    )
