"""Scoring new rows with a registered model version."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.data import DataError, FeatureSchema, read_table
from pipeline.package import load_model
from pipeline.registry import ModelVersion

__all__ = ["predict_file", "predict_frame"]


def predict_file(version: ModelVersion, path: Path, *, project_root: Path | None = None) -> pd.DataFrame:
    return predict_frame(version, read_table(path), project_root=project_root)


def predict_frame(version: ModelVersion, frame: pd.DataFrame, *, project_root: Path | None = None) -> pd.DataFrame:
    """Predictions (and class probabilities, for classifiers) for every row of ``frame``."""
    if frame.empty:
        raise DataError("the input has no rows to score")
    metadata = version.metadata
    features = FeatureSchema.from_list(metadata["features"]).select(frame)
    model = load_model(version.path, extra_trusted=tuple(metadata.get("trusted_types", [])), project_root=project_root)
    result = pd.DataFrame({"prediction": model.predict(features)})
    if metadata.get("task") == "classification" and hasattr(model, "predict_proba"):
        probabilities = model.predict_proba(features)
        for index, label in enumerate(model.classes_):
            result[f"probability_{label}"] = probabilities[:, index]
    return result
