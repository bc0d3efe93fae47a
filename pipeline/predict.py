"""Scoring new rows with a registered model version.

The version's training schema is the contract: a column the model was trained on as numbers must
hold numbers, and the error says which row does not. The project's id column and any columns the
caller asks to keep are passed through, so a scoring job can log predictions it can join later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.data import DataError, FeatureSchema, category_text, read_table
from pipeline.package import load_model
from pipeline.profile import feature_kind
from pipeline.registry_port import ModelVersion
from pipeline.validate import model_outputs

__all__ = ["predict_file", "predict_frame"]

_LISTED_COLUMNS = 20
_SHOWN_VALUE_CHARS = 40


def predict_file(
    version: ModelVersion, path: Path, *, project_root: Path | None = None, keep: Sequence[str] = ()
) -> pd.DataFrame:
    return predict_frame(version, read_table(path), project_root=project_root, keep=keep)


def predict_frame(
    version: ModelVersion, frame: pd.DataFrame, *, project_root: Path | None = None, keep: Sequence[str] = ()
) -> pd.DataFrame:
    """Predictions (and class probabilities, for classifiers) for every row of ``frame``.

    The output starts with the id column (the project's ``data.id_column``, when the input has
    it), then the ``keep`` columns as given, then ``prediction`` and ``probability_<class>``.
    """
    if frame.empty:
        raise DataError("the input has no rows to score")
    metadata = version.metadata
    schema = FeatureSchema.from_list(metadata["features"])
    passed_through = _passed_through(frame, id_column=(metadata.get("data") or {}).get("id_column"), keep=keep)
    features = _as_trained(schema.select(frame), schema)
    model = load_model(version.path, extra_trusted=tuple(metadata.get("trusted_types", [])), project_root=project_root)
    wants_probabilities = metadata.get("task") == "classification"
    predictions, probabilities = model_outputs(model, features, probabilities=wants_probabilities)
    outputs = {"prediction": predictions}
    if probabilities is not None:
        outputs |= {f"probability_{label}": probabilities[:, index] for index, label in enumerate(model.classes_)}
    clashing = [name for name in passed_through if name in outputs]
    if clashing:
        raise DataError(f"kept column(s) {', '.join(map(repr, clashing))} have the name of an output column; "
                        "rename them in the input or keep other columns")
    return pd.DataFrame({**{name: frame[name].to_numpy() for name in passed_through}, **outputs})


def _passed_through(frame: pd.DataFrame, *, id_column: str | None, keep: Sequence[str]) -> list[str]:
    """The input columns copied to the output: the id column first (when present), then ``keep``."""
    unknown = [name for name in keep if name not in frame.columns]
    if unknown:
        columns = [str(name) for name in frame.columns]
        listed = ", ".join(columns[:_LISTED_COLUMNS]) + (" ..." if len(columns) > _LISTED_COLUMNS else "")
        raise DataError(f"keep column(s) {', '.join(map(repr, unknown))} not in the input; its columns are: {listed}")
    first = [id_column] if id_column and id_column in frame.columns else []
    return list(dict.fromkeys([*first, *keep]))


def _as_trained(features: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The features as the model learnt them: numbers where it learnt numbers, text where it learnt text.

    A numeric column read as text because of one stray value would otherwise reach the model
    as a category, or fail deep inside it; numbers stored as text are converted.
    """
    converted = {}
    for name, dtype, kind in schema.columns:
        column = features[name]
        if kind == "categorical" and _is_text(dtype) and feature_kind(column.dtype) == "numeric":
            # Categories the reader typed as numbers (zip codes): text, written as training wrote them.
            converted[name] = column.map(category_text, na_action="ignore").astype(object)
            continue
        if kind != "numeric" or feature_kind(column.dtype) == "numeric":
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        unparsed = numbers.isna() & column.notna()
        # "nan" written as text is a missing number, as float() reads it; anything else is not a number.
        missing_as_text = {value for value in column[unparsed].unique() if _reads_as_nan(value)}
        not_numbers = unparsed & ~column.isin(missing_as_text)
        if not_numbers.any():
            position = int(not_numbers.to_numpy().nonzero()[0][0])
            value = str(column.iloc[position])
            shown = value if len(value) <= _SHOWN_VALUE_CHARS else value[:_SHOWN_VALUE_CHARS] + "…"
            others = int(not_numbers.sum()) - 1
            raise DataError(
                f"column {name!r} holds text where the model was trained on numbers ({dtype}): "
                f"row {position + 1} has {shown!r} (rows counted from 1 after the header)"
                + (f", and {others} more row(s) like it" if others else "")
                + "; write a number there, or leave the cell empty for a missing value"
            )
        converted[name] = numbers.astype("float64")
    return features.assign(**converted) if converted else features


def _reads_as_nan(value: object) -> bool:
    try:
        return math.isnan(float(str(value)))
    except ValueError:
        return False


def _is_text(dtype: str) -> bool:
    return dtype in {"object", "str", "string"} or dtype.startswith("string")
