"""Reading a model project's data, describing its features and splitting off held-out rows."""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.profile import feature_kind
from pipeline.spec import DataSpec

__all__ = ["DataError", "Dataset", "FeatureSchema", "load_dataset", "read_table", "split_dataset"]

_READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DataError(ValueError):
    """The data cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class FeatureSchema:
    """The columns a model was trained on, in order, with their dtypes and kinds."""

    columns: tuple[tuple[str, str, str], ...]  # (name, dtype, kind)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> FeatureSchema:
        return cls(tuple((str(name), str(dtype), feature_kind(dtype)) for name, dtype in frame.dtypes.items()))

    @classmethod
    def from_list(cls, items: list[dict]) -> FeatureSchema:
        return cls(tuple((item["name"], item["dtype"], item["kind"]) for item in items))

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.columns]

    def to_list(self) -> list[dict]:
        return [{"name": name, "dtype": dtype, "kind": kind} for name, dtype, kind in self.columns]

    def select(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The schema's columns of ``frame`` in training order; extra columns are ignored."""
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise DataError(
                f"input is missing {len(missing)} column(s) the model needs: {', '.join(missing[:10])}"
                + (" ..." if len(missing) > 10 else "")
            )
        return frame[self.names]


@dataclass(frozen=True)
class Dataset:
    features: pd.DataFrame
    target: pd.Series
    files: tuple[Path, ...]
    fingerprint: str

    @property
    def schema(self) -> FeatureSchema:
        return FeatureSchema.of(self.features)


def read_table(path: str | Path) -> pd.DataFrame:
    """One CSV or Parquet file, with a clear DataError for anything unreadable."""
    path = Path(path)
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, engine="pyarrow")
    except Exception as exc:  # every reader failure is the same to the user: the file cannot be read
        raise DataError(f"{path}: cannot be read as {kind.upper()}: {_first_line(exc)}") from exc


def load_dataset(spec: DataSpec, root: Path) -> Dataset:
    """Read every file the spec's path or glob names, and check the target and features exist."""
    pattern = spec.path if Path(spec.path).is_absolute() else str(root / spec.path)
    files = tuple(sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()))
    if not files:
        raise DataError(f"no data file matches data.path = {spec.path!r} (looked in {root}); check the path in mlops.toml")
    frames = [read_table(path) for path in files]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise DataError(f"{', '.join(map(str, files))}: the dataset has no rows")
    if spec.target not in frame.columns:
        raise DataError(
            f"target column {spec.target!r} not found in the data; columns are: {', '.join(map(str, frame.columns[:20]))}"
        )
    feature_names = spec.features or [c for c in frame.columns if c not in {spec.target, spec.split.time_column}]
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise DataError(f"data.features names columns not in the data: {', '.join(missing)}")
    if not feature_names:
        raise DataError("the data has no feature columns besides the target")
    target = frame[spec.target]
    if target.isna().all():
        raise DataError(f"target column {spec.target!r} has no values")
    labelled = target.notna()
    features = frame.loc[labelled, feature_names]
    if spec.split.time_column:
        # Kept alongside the features (not as one) so a time split can order rows.
        features = features.assign(**{spec.split.time_column: frame.loc[labelled, spec.split.time_column]})
    return Dataset(
        features=features.reset_index(drop=True),
        target=target[labelled].reset_index(drop=True),
        files=files,
        fingerprint=fingerprint(frame.loc[labelled, [*feature_names, spec.target]]),
    )


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the rows and columns, independent of file format and column order."""
    ordered = frame[sorted(map(str, frame.columns))]
    digest = hashlib.sha256()
    digest.update("\x1f".join(ordered.columns).encode())
    digest.update("\x1f".join(str(t) for t in ordered.dtypes).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def split_dataset(dataset: Dataset, spec: DataSpec, *, stratify_labels: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Training and held-out rows: at random by seed, or the latest rows by the time column."""
    split = spec.split
    n_rows = len(dataset.features)
    n_test = int(round(n_rows * split.test_fraction))
    if n_test < 1 or n_rows - n_test < 2:
        raise DataError(
            f"the dataset has {n_rows} rows, too few to hold out {split.test_fraction:.0%} for validation; add data"
        )
    if split.method == "time":
        order = np.argsort(pd.to_datetime(dataset.features[split.time_column]).to_numpy(), kind="stable")
        train_index, test_index = order[: n_rows - n_test], order[n_rows - n_test :]
        features = dataset.features.drop(columns=[split.time_column])
    else:
        from sklearn.model_selection import train_test_split

        features = dataset.features
        labels = dataset.target if stratify_labels and split.stratify and _can_stratify(dataset.target, n_test) else None
        train_index, test_index = train_test_split(
            np.arange(n_rows), test_size=n_test, random_state=split.seed, stratify=labels
        )
    return (
        features.iloc[train_index].reset_index(drop=True),
        features.iloc[test_index].reset_index(drop=True),
        dataset.target.iloc[train_index].reset_index(drop=True),
        dataset.target.iloc[test_index].reset_index(drop=True),
    )


def _can_stratify(target: pd.Series, n_test: int) -> bool:
    counts = target.value_counts()
    return counts.min() >= 2 and n_test >= len(counts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
