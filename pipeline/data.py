"""Reading a model project's data, describing its features and splitting off held-out rows.

The training schema is the contract: a column the data holds as numbers must hold only numbers (a
few text values in it are an error naming the column, not a silent switch to a categorical feature),
unless ``[data] categorical`` declares it a category. A retrain's training table is the project's
data plus the labelled production rows of the ``[retrain]`` window (see ``pipeline.production``),
aligned to the same feature columns and de-duplicated by ``[data] id_column``.

Files are read into Arrow (``Columns``) and put together there; the training table is copied into
pandas once, when it is complete, and fingerprints hash the rows where they lie.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from pipeline.profile import feature_kind
from pipeline.spec import DataSpec

if TYPE_CHECKING:
    from pipeline.production import LabelledProduction
    from pipeline.spec import ProjectSpec

__all__ = [
    "Columns",
    "DataError",
    "Dataset",
    "FeatureSchema",
    "Split",
    "assemble_training_data",
    "category_text",
    "column_types",
    "fingerprint",
    "fingerprint_of_hashes",
    "first_line",
    "load_dataset",
    "positions_by_code",
    "read_columns",
    "read_table",
    "row_hashes",
    "sample_values",
    "split_dataset",
    "split_for_validation",
    "superseded_rows",
]

_READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Parquet text is read as its dictionary when the dictionary takes at most a byte per this many rows.
_ROWS_PER_DICTIONARY_BYTE = 16


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
    """The training table: the project's rows first, then labelled production rows, oldest first.

    ``fingerprint`` is a content hash of the whole table (features, target and id column, row by
    row), so new labelled rows change it and re-reading the same data does not. ``sources`` says
    where the rows came from: ``{"kind": "training" | "batch" | "labels", "path", "rows",
    "fingerprint"}``, a "labels" source counting the rows whose label came from that label file.
    ``observed_at`` is, per row, when a production row was observed (NaT for the project's rows);
    None when the table holds no production row. ``problems`` are one line each on production rows
    that were left out (the file named, and the fix).
    """

    features: pd.DataFrame
    target: pd.Series
    files: tuple[Path, ...]
    fingerprint: str
    sources: tuple[dict[str, Any], ...] = ()
    observed_at: pd.Series | None = None
    problems: tuple[str, ...] = ()

    @property
    def schema(self) -> FeatureSchema:
        return FeatureSchema.of(self.features)

    @property
    def production_rows(self) -> np.ndarray:
        """A boolean mask over the rows: True for labelled production rows."""
        if self.observed_at is None:
            return np.zeros(len(self.features), dtype=bool)
        return self.observed_at.notna().to_numpy()


@dataclass(frozen=True)
class Split:
    """Training and held-out rows; ``recent`` marks the held-out rows that are production rows."""

    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    recent: np.ndarray = field(repr=False)


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
        raise DataError(f"{path}: cannot be read as {kind.upper()}: {first_line(exc)}") from exc


def read_columns(path: str | Path) -> Columns:
    """One CSV or Parquet file as ``Columns``: Parquet in Arrow as stored, CSV as ``read_table``
    reads it. Parquet text with few distinct values (categories) stays dictionary-encoded as Parquet
    keeps it, which is cheaper to read and to hash; pandas still gets text. An index that pandas
    wrote into a Parquet file is not data and is left out."""
    path = Path(path)
    if _READERS.get(path.suffix.lower()) != "parquet":
        return Columns.of_frame(read_table(path))
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
        text = _categories_in(metadata, schema)
        table = pq.ParquetFile(path, metadata=metadata, read_dictionary=text).read()  # one file: no dataset layer
    except Exception as exc:  # as in read_table: the file cannot be read, whatever the reader says
        raise DataError(f"{path}: cannot be read as PARQUET: {first_line(exc)}") from exc
    index = [name for name in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(name, str)]
    if index:
        table = table.drop_columns(index)
    return Columns.of(table.replace_schema_metadata(None), text=frozenset(text) - set(index))


def _categories_in(metadata: pq.FileMetaData, schema: pa.Schema) -> list[str]:
    """The text columns that Parquet stores as a dictionary much smaller than their rows (a few
    distinct values, as categories have). Text of mostly distinct values (ids, free text) is read as
    it is: a dictionary of a million distinct values costs more to build than it saves."""
    position = {metadata.schema.column(number).path: number for number in range(metadata.num_columns)}
    found = []
    for item in schema:
        if not _is_arrow_text(item.type) or pa.types.is_dictionary(item.type) or item.name not in position:
            continue
        chunks = [metadata.row_group(group).column(position[item.name]) for group in range(metadata.num_row_groups)]
        if all(chunk.has_dictionary_page and chunk.dictionary_page_offset is not None
               and (chunk.data_page_offset - chunk.dictionary_page_offset) * _ROWS_PER_DICTIONARY_BYTE
               <= chunk.num_values
               for chunk in chunks):
            found.append(item.name)
    return found


@dataclass(frozen=True, eq=False)
class Columns:
    """Rows as named columns: most in Arrow as read from the files, not yet copied into pandas, the
    rest as pandas Series (columns whose types differ between files, columns converted to the
    training schema). Selecting, filtering and putting files together stay in Arrow, where they copy
    little or nothing; ``frame`` makes the one pandas copy at the end, and ``row_hashes`` hashes the
    Arrow columns where they lie. ``text`` names the Arrow columns that are dictionary-encoded text,
    which pandas gets as text.
    """

    table: pa.Table  # the Arrow columns
    series: Mapping[str, pd.Series]  # the pandas columns, each indexed 0..rows-1
    names: tuple[str, ...]  # every column, in order
    rows: int
    text: frozenset[str] = frozenset()

    @classmethod
    def of(cls, table: pa.Table, *, text: frozenset[str] = frozenset()) -> Columns:
        return cls(table, {}, tuple(table.column_names), table.num_rows, text & set(table.column_names))

    @classmethod
    def of_frame(cls, frame: pd.DataFrame) -> Columns:
        frame = frame.reset_index(drop=True)
        series = {str(name): frame[name].rename(str(name)) for name in frame.columns}
        return cls(pa.table({}), series, tuple(series), len(frame))

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        """The parts one after the other. A column stays in Arrow when the parts agree on its type (or
        Arrow widens it, as pandas would: whole numbers among decimals become decimals); a column
        whose types do not agree (numbers in one file, text in another) is put together by pandas. A
        column that a part lacks is missing in that part's rows."""
        if len(parts) == 1:
            return parts[0]
        names = tuple(dict.fromkeys(name for part in parts for name in part.names))
        arrow: dict[str, pa.ChunkedArray] = {}
        series: dict[str, pd.Series] = {}
        text = set()
        for name in names:
            stacked = None
            if not any(name in part.series for part in parts):
                stacked, is_text = _stacked_arrow(parts, name)
            if stacked is not None:
                arrow[name] = stacked
                if is_text:
                    text.add(name)
            else:  # as pandas puts frames together: a part without the column adds missing values
                series[name] = pd.concat([part.series_of(name).to_frame(name) if name in part else
                                          pd.DataFrame(index=pd.RangeIndex(part.rows)) for part in parts],
                                         ignore_index=True)[name]
        table = pa.Table.from_arrays(list(arrow.values()), names=list(arrow)) if arrow else pa.table({})
        return cls(table, series, names, sum(part.rows for part in parts), frozenset(text))

    def __len__(self) -> int:
        return self.rows

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def dtype(self, name: str) -> Any:
        """The column's pandas dtype, without converting the column."""
        if name in self.series:
            return self.series[name].dtype
        column = self.table.column(name)
        return _pandas_dtype(column.type, column.null_count > 0, name in self.text)

    def series_of(self, name: str) -> pd.Series:
        """One column in pandas (an Arrow column is converted on its own)."""
        if name in self.series:
            return self.series[name]
        return _decoded(self.table.column(name), name in self.text).to_pandas().rename(name)

    def hashable(self, names: Iterable[str] | None = None) -> dict[str, pd.Series | pa.ChunkedArray]:
        """The columns (all, or those named) as ``row_hashes`` takes them: Arrow columns as they are."""
        return {name: self.series[name] if name in self.series else self.table.column(name)
                for name in (self.names if names is None else names)}

    def select(self, names: Iterable[str]) -> Columns:
        names = tuple(names)
        in_arrow = [name for name in names if name not in self.series]
        series = {name: self.series[name] for name in names if name in self.series}
        return Columns(self.table.select(in_arrow), series, names, self.rows, self.text & set(in_arrow))

    def take(self, rows: np.ndarray) -> Columns:
        """The rows that a boolean mask or positions pick."""
        positions = np.flatnonzero(rows) if rows.dtype == bool else rows
        table = self.table
        if table.num_columns:
            table = table.filter(pa.array(rows)) if rows.dtype == bool else table.take(pa.array(positions))
        series = {name: column.iloc[positions].reset_index(drop=True) for name, column in self.series.items()}
        return Columns(table, series, self.names, len(positions), self.text)

    def with_series(self, columns: Mapping[str, pd.Series]) -> Columns:
        """These columns (pandas, indexed like the rows) in place of those of the same name, or added."""
        replaced = [name for name in columns if name in self.table.column_names]
        table = self.table.drop_columns(replaced) if replaced else self.table
        names = self.names + tuple(name for name in columns if name not in self.names)
        return Columns(table, {**self.series, **{name: column.rename(name) for name, column in columns.items()}},
                       names, self.rows, self.text - set(replaced))

    def frame(self) -> pd.DataFrame:
        """All columns as one pandas frame: the one copy of the Arrow data, made on Arrow's threads."""
        table = self.table
        for name in self.text:
            table = table.set_column(table.column_names.index(name), name, _decoded(table.column(name), True))
        frame = table.to_pandas() if table.num_columns else pd.DataFrame(index=pd.RangeIndex(self.rows))
        for position, name in enumerate(self.names):
            if name in self.series:
                frame.insert(position, name, self.series[name])
        return frame


def _stacked_arrow(parts: list[Columns], name: str) -> tuple[pa.ChunkedArray | None, bool]:
    """One Arrow column of the parts' columns of that name (missing where a part lacks it), and whether
    it is dictionary-encoded text; None when their types do not agree."""
    pieces = [part.table.column(name) if name in part else None for part in parts]
    present = [piece for piece in pieces if piece is not None]
    is_text = all(name in part.text for part, piece in zip(parts, pieces, strict=True) if piece is not None)
    types = {piece.type for piece in present}
    if len(types) > 1 and all(_is_arrow_text(kind) for kind in types):  # text read from different formats
        pieces = [piece.cast(pa.large_string()) if piece is not None else None for piece in pieces]
        types, is_text = {pa.large_string()}, False
    if len(types) == 1:
        common = types.pop()
    else:
        try:
            common = pa.unify_schemas([pa.schema([pa.field(name, kind)]) for kind in types],
                                      promote_options="permissive").field(name).type
            pieces = [piece.cast(common) if piece is not None and piece.type != common else piece for piece in pieces]
        except (pa.ArrowException, TypeError, ValueError):
            return None, False
    chunks = [chunk for part, piece in zip(parts, pieces, strict=True)
              for chunk in (piece.chunks if piece is not None else [pa.nulls(part.rows, common)])]
    return pa.chunked_array(chunks, type=common), is_text


def _is_arrow_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


@functools.lru_cache(maxsize=256)
def _pandas_dtype(kind: pa.DataType, missing: bool, text: bool) -> Any:
    """The dtype pandas gives an Arrow column: it depends on the type and on whether values are missing
    (whole numbers with missing values become decimals), so a sample of one missing value tells."""
    sample = pa.nulls(1, kind) if missing else pa.array([], type=kind)
    return _decoded(sample, text).to_pandas().dtype


def _decoded(column: pa.ChunkedArray | pa.Array, text: bool) -> pa.ChunkedArray | pa.Array:
    """Dictionary-encoded text as plain text (what pandas makes text of); any other column as it is."""
    return column.cast(pa.large_string()) if text and pa.types.is_dictionary(column.type) else column


def load_dataset(spec: DataSpec, root: Path) -> Dataset:
    """The project's own data (``data.path``), held to the training schema contract."""
    return _dataset(_read_project_data(spec, root), spec)


def assemble_training_data(spec: ProjectSpec, production: LabelledProduction | None) -> Dataset:
    """What a run trains on: the project's data (unless ``[retrain] keep_training_data = false``)
    then the labelled production rows given (when ``[retrain] include_production``), aligned to the
    project's feature columns and de-duplicated by ``[data] id_column``: of the rows with one id the
    last stays, so a production row replaces the project's row and a newer production row an older one.

    Production rows that cannot join the table (their batch lacks a feature column, their label does
    not fit the target, a numeric feature holds text) are left out, each with a line in ``problems``.
    The project's own data is held to the schema contract and raises ``DataError``.
    """
    data = spec.data
    project = _read_project_data(data, spec.root)
    problems = list(production.problems) if production is not None else []
    aligned = None
    if production is not None and spec.retrain.include_production and production.rows:
        aligned = _align_production(production, project, data, problems)
    if aligned is None:
        if production is not None and not spec.retrain.keep_training_data:
            problems.append(
                f"[retrain] keep_training_data = false, but there are no labelled production rows to train on, so "
                f"the model was trained on {data.path}; add labelled batches or label files"
            )
        return _dataset(project, data, problems=problems)
    if not spec.retrain.keep_training_data:
        project = project.without_rows()
    return _dataset(project, data, production=aligned, problems=problems)


@dataclass(frozen=True)
class _ProjectRows:
    """The project's labelled rows, held to the schema contract."""

    columns: Columns  # every column of the data files (the target too), labelled rows only
    target: pd.Series
    files: tuple[Path, ...]
    names: tuple[str, ...]  # each file as recorded in ``sources``: relative to the project folder
    file_rows: tuple[int, ...]  # labelled rows of each file, in order
    feature_names: tuple[str, ...]

    def without_rows(self) -> _ProjectRows:
        none = np.zeros(0, dtype=np.intp)
        return _ProjectRows(self.columns.take(none), self.target.iloc[:0], (), (), (), self.feature_names)


@dataclass(frozen=True)
class _ProductionRows:
    """Labelled production rows in the project's columns and types, and where each came from."""

    columns: Columns  # the feature columns and the id column (if the batches have it)
    target: pd.Series
    observed_at: pd.Series
    batch: pd.Series  # categorical: the file name of each row's batch
    label_source: pd.Series  # categorical: the label file that gave each row its label; "" when its batch did
    row_hashes: np.ndarray | None  # from reading, when they cover exactly these columns and types


def _read_project_data(spec: DataSpec, root: Path) -> _ProjectRows:
    pattern = spec.path if Path(spec.path).is_absolute() else str(root / spec.path)
    files = tuple(sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()))
    if not files:
        raise DataError(f"no data file matches data.path = {spec.path!r} (looked in {root}); check the path in mlops.toml")
    parts = [read_columns(path) for path in files]
    columns = Columns.concat(parts)
    where = ", ".join(map(str, files))
    if not len(columns):
        raise DataError(f"{where}: the dataset has no rows")
    if spec.target not in columns:
        raise DataError(
            f"target column {spec.target!r} not found in the data; columns are: {', '.join(columns.names[:20])}"
        )
    if spec.split.time_column and spec.split.time_column not in columns:
        raise DataError(f"{where}: split.time_column {spec.split.time_column!r} is not a column of the data; "
                        f"name the column that holds each row's time in mlops.toml")
    not_features = {spec.target, spec.split.time_column, spec.id_column}
    feature_names = spec.features or [c for c in columns.names if c not in not_features]
    missing = [name for name in dict.fromkeys([*feature_names, *spec.categorical]) if name not in columns]
    if missing:
        raise DataError(f"data.features or data.categorical name columns not in the data: {', '.join(missing)}")
    if not feature_names:
        raise DataError("the data has no feature columns besides the target")
    target = columns.series_of(spec.target)
    if target.isna().all():
        raise DataError(f"target column {spec.target!r} has no values")
    labelled = target.notna().to_numpy()
    if not labelled.all():  # copy only when some rows have no label
        columns, target = columns.take(labelled), target[labelled].reset_index(drop=True)
    columns = _hold_to_schema_contract(columns, feature_names, spec.categorical, where)
    names = tuple(_relative_name(path, root) for path in files)
    bounds, running = np.cumsum([0, *(part.rows for part in parts)]), np.concatenate([[0], np.cumsum(labelled)])
    file_rows = tuple(int(count) for count in running[bounds[1:]] - running[bounds[:-1]])
    return _ProjectRows(columns, target, files, names, file_rows, tuple(map(str, feature_names)))


def _hold_to_schema_contract(columns: Columns, names: Iterable[str], categorical: list[str], where: str) -> Columns:
    """Declared categories become text; text among numbers is an error naming the column and the values."""
    changed = {}
    for name in names:
        dtype = columns.dtype(name)
        if name in categorical:
            if not _is_text(dtype):  # text stays as it is
                changed[name] = _as_categories(columns.series_of(name))
            continue
        if _holds_no_text(dtype):
            continue
        bad = _text_among_numbers(columns.series_of(name))
        if bad:
            raise DataError(
                f"{where}: column {name!r} holds numbers but also text: {sample_values(bad)}; fix these values, "
                f"or declare the column in [data] categorical = [\"{name}\"] if its values are categories"
            )
    return columns.with_series(changed) if changed else columns


def _is_text(dtype: Any) -> bool:
    """A column of text (not of Python objects): as categories it stays as it is."""
    return pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype)


def _holds_no_text(dtype: Any) -> bool:
    return is_numeric_dtype(dtype) or is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)


def _text_among_numbers(column: pd.Series) -> list[Any]:
    """The values that are not numbers, in a text column whose distinct values are mostly numbers."""
    if _holds_no_text(column.dtype):
        return []
    distinct = pd.Series(pd.unique(column.dropna()), dtype=object)
    if distinct.empty:
        return []
    parsed = pd.to_numeric(distinct, errors="coerce")
    numbers = int(parsed.notna().sum())
    if numbers * 2 <= len(distinct) or numbers == len(distinct):
        return []
    return distinct[parsed.isna().to_numpy()].tolist()


def _as_categories(column: pd.Series) -> pd.Series:
    """The column as text categories, numbers written alike whichever type read them (1 and 1.0 are "1")."""
    if _is_text(column.dtype):
        return column
    codes, uniques = pd.factorize(column)
    names = np.array([*(category_text(value) for value in uniques), np.nan], dtype=object)
    return pd.Series(names[codes], index=column.index, name=column.name)  # code -1 (missing) picks the NaN


def category_text(value: Any) -> str:
    """A value as a category's text: the same for 1, 1.0 and "1", so that files typed differently agree."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value)


def _align_production(production: LabelledProduction, project: _ProjectRows, spec: DataSpec,
                      problems: list[str]) -> _ProductionRows | None:
    """The production rows in the project's columns and types; rows that cannot be are left out, with a reason."""
    from pipeline.production import check_labels

    columns = production.columns
    keep = np.ones(len(columns), dtype=bool)
    batch, label_source = production.batch, production.label_source
    for source in production.sources:
        lacking = [name for name in project.feature_names if name not in source.columns]
        if source.kind == "batch" and lacking:
            keep &= (batch != source.path).to_numpy()
            problems.append(
                f"{production.where('batch', source.path)}: lacks the training data's feature column(s) "
                f"{sample_values(lacking)}, so its {source.rows} labelled rows are left out of training; "
                "add the columns"
            )
    reference = project.target
    numeric_target = is_numeric_dtype(reference.dtype) and not is_bool_dtype(reference.dtype)
    classes = None if numeric_target else pd.unique(reference.dropna()).tolist()
    labels = columns.series_of(spec.target)
    checked = check_labels(labels, numeric_target=numeric_target, classes=classes)
    if checked.bad.any():
        keep &= ~checked.bad
        givers = [("batch", name) if source == "" else ("labels", source) for name, source in
                  zip(batch[checked.bad], label_source[checked.bad], strict=True)]
        for (kind, name), count in pd.Series(givers, dtype=object).value_counts(sort=False).items():
            problems.append(f"{production.where(kind, name)}: {count} label(s) {checked.reason}; those rows are left "
                            "out of training; correct the labels")
    converted: dict[str, pd.Series] = {}
    for name in project.feature_names:
        if name not in columns:  # no batch has it: every batch's rows are left out above
            continue
        wanted, dtype = project.columns.dtype(name), columns.dtype(name)
        if name in spec.categorical or (feature_kind(wanted) == "categorical" and feature_kind(dtype) == "numeric"):
            if not _is_text(dtype):
                converted[name] = _as_categories(columns.series_of(name))
        elif feature_kind(wanted) == "numeric" and not is_numeric_dtype(dtype):
            converted[name] = _numbers_of(columns.series_of(name), name, batch, keep, production, problems)
    if not keep.any():
        return None
    names = [*project.feature_names]
    if spec.id_column is not None and spec.id_column in columns:
        names.append(spec.id_column)
    aligned = columns.select(names).with_series(converted) if converted else columns.select(names)
    target = checked.values.rename(spec.target)
    # The hashes from reading hold when they cover these very columns, none of them converted here.
    hashed = tuple(sorted(column_types(aligned) + ((spec.target, str(target.dtype)),)))
    unchanged = not converted and checked.values is labels
    hashes = production.row_hashes if unchanged and production.hashed_columns == hashed else None
    observed_at = production.observed_at
    if not keep.all():
        aligned, target, observed_at = aligned.take(keep), target[keep], observed_at[keep]
        batch, label_source = batch[keep], label_source[keep]
        hashes = hashes[keep] if hashes is not None else None
    return _ProductionRows(aligned, target.reset_index(drop=True), observed_at.reset_index(drop=True),
                           batch.reset_index(drop=True), label_source.reset_index(drop=True), hashes)


def _numbers_of(column: pd.Series, name: str, batch: pd.Series, keep: np.ndarray, production: LabelledProduction,
                problems: list[str]) -> pd.Series:
    """A production column that the training data holds as numbers, as numbers; rows with text are left out."""
    parsed = pd.to_numeric(column.astype(object), errors="coerce")
    bad = column.notna().to_numpy() & parsed.isna().to_numpy() & keep
    for name_of_batch in dict.fromkeys(batch[bad]):
        rows = bad & (batch == name_of_batch).to_numpy()
        problems.append(
            f"{production.where('batch', name_of_batch)}: column {name!r} holds text "
            f"({sample_values(pd.unique(column[rows]).tolist())}) where the training data has numbers; those "
            f"{int(rows.sum())} rows are left out of training; fix the values in the batch"
        )
    keep &= ~bad
    return parsed


def _dataset(project: _ProjectRows, spec: DataSpec, *, production: _ProductionRows | None = None,
             problems: list[str] | None = None) -> Dataset:
    """One table of the project's rows then the production rows, with its fingerprint and sources.

    The rows stay in Arrow (as read) until the one conversion to pandas of the whole table; the
    hashes of the project's rows are taken from Arrow meanwhile, and the production rows' come from
    reading them, when both parts hold each hashed column in the same type (a row's hash depends on
    that row alone).
    """
    own = project.columns
    features = list(project.feature_names)
    shown = [*features, *([spec.split.time_column] if spec.split.time_column in own else [])]
    id_column = spec.id_column if spec.id_column is not None and (
        spec.id_column in own or (production is not None and spec.id_column in production.columns)) else None
    own_ids = _column_or_missing(own, id_column) if id_column else None
    observed_at = None
    if production is None:
        table, target, ids = own.select(shown), project.target, own_ids
        own_hashed = None
    else:
        theirs = production.columns
        table = Columns.concat([own.select(shown), theirs.select(features)])
        target = pd.concat([project.target, production.target], ignore_index=True)
        their_ids = _column_or_missing(theirs, id_column) if id_column else None
        ids = pd.concat([own_ids, their_ids], ignore_index=True) if id_column else None
        observed_at = pd.concat([pd.Series(pd.NaT, index=project.target.index, dtype=production.observed_at.dtype),
                                 production.observed_at], ignore_index=True)
        reusable = production.row_hashes is not None and all(
            str(own.dtype(name)) == str(theirs.dtype(name)) for name in features) and (
            str(project.target.dtype) == str(production.target.dtype)) and (
            id_column is None or str(own_ids.dtype) == str(their_ids.dtype))
        own_hashed = (_hashed(own.hashable(features), spec.target, project.target, id_column, own_ids)
                      if reusable else None)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the id check runs while Arrow converts the table
        checked = pool.submit(superseded_rows, ids) if ids is not None else None
        if own_hashed is not None:
            hashes = np.concatenate([row_hashes(own_hashed), production.row_hashes])
        else:
            hashes = row_hashes(_hashed(table.hashable(features), spec.target, target, id_column, ids))
        frame = table.frame()
        repeated = checked.result() if checked is not None else None
    types = column_types(_hashed({name: frame[name] for name in features}, spec.target, target, id_column, ids))
    kept = None
    if repeated is not None:  # the last row of an id stays: production over the project's, newer over older
        kept = ~repeated
        frame, target = frame[kept], target[kept]
        observed_at = observed_at[kept] if observed_at is not None else None
        hashes = hashes[kept]
    sources = [_source(kind, name, hashes[positions], types)
               for kind, name, positions in _source_rows(project, production, kept)]
    return Dataset(
        features=frame.reset_index(drop=True),
        target=target.reset_index(drop=True),
        files=project.files,
        fingerprint=fingerprint_of_hashes(types, hashes),
        sources=tuple(sources),
        observed_at=observed_at.reset_index(drop=True) if observed_at is not None else None,
        problems=tuple(problems or ()),
    )


def _hashed(columns: Mapping[str, Any], target_name: str, target: pd.Series, id_column: str | None,
            ids: pd.Series | None) -> dict[str, Any]:
    """The columns a fingerprint covers: the features, the target and the id column (if any)."""
    return {**columns, target_name: target, **({id_column: ids} if id_column else {})}


def superseded_rows(ids: pd.Series) -> np.ndarray | None:
    """A mask of the rows whose id appears again in a later row, or None when no id repeats.

    Missing ids never repeat. Most tables have unique ids, so that is checked first the cheap way:
    integer ids by marking each in a table of the range (when they span a range not much wider than
    their number) or sorting (a vectorised sort is several times faster than a hash table over a
    million shuffled ids), other ids by counting distinct values.
    """
    present = ids.notna().to_numpy()
    values = ids.to_numpy() if isinstance(ids.dtype, np.dtype) and ids.dtype.kind in "iu" else None
    if values is not None and len(values) == 0:
        return None
    if values is not None:
        low, high = int(values.min()), int(values.max())
        if high - low <= 4 * len(values) + 1024:
            seen = np.zeros(high - low + 1, dtype=bool)
            seen[values - low if low else values] = True
            unique = int(np.count_nonzero(seen)) == len(values)
        else:
            ordered = np.sort(values)
            unique = not bool(np.any(ordered[1:] == ordered[:-1]))
    else:
        codes, distinct = pd.factorize(ids)
        unique = len(distinct) == int(present.sum())
    if unique:
        return None
    return ids.duplicated(keep="last").to_numpy() & present


def _column_or_missing(columns: Columns, name: str) -> pd.Series:
    if name in columns:
        return columns.series_of(name)
    return pd.Series(np.nan, index=pd.RangeIndex(len(columns)), name=name)


def _source_rows(project: _ProjectRows, production: _ProductionRows | None, kept: np.ndarray | None
                 ) -> Iterable[tuple[str, str, slice | np.ndarray]]:
    """Each source's kind, name and row positions in the table: the project's files, the batches,
    then the label files (whose rows are also their batches' rows).

    The table is the project's files one after the other, then the production rows batch by
    batch; unless rows were dropped for a repeated id (``kept``), positions are ranges found from
    the counts alone.
    """
    if kept is not None:
        origin = np.repeat(np.arange(len(project.names), dtype=np.int32), project.file_rows)
        labelled_by = np.full(len(origin), -1, dtype=np.int32)
        if production is not None:
            origin = np.concatenate([origin, production.batch.cat.codes.to_numpy().astype(np.int32) + len(project.names)])
            labelled_by = np.concatenate([labelled_by, production.label_source.cat.codes.to_numpy().astype(np.int32)])
        origin, labelled_by = origin[kept], labelled_by[kept]
        names = [("training", name) for name in project.names]
        if production is not None:
            names += [("batch", str(name)) for name in production.batch.cat.categories]
        for code, positions in positions_by_code(origin, len(names)):
            yield (*names[code], positions)
        if production is not None:
            label_files = production.label_source.cat.categories
            for code, positions in positions_by_code(labelled_by, len(label_files)):
                if label_files[code]:
                    yield "labels", str(label_files[code]), positions
        return
    bounds = np.cumsum([0, *project.file_rows])
    for number, name in enumerate(project.names):
        if bounds[number + 1] > bounds[number]:
            yield "training", name, slice(int(bounds[number]), int(bounds[number + 1]))
    if production is None:
        return
    offset = int(bounds[-1])
    for column, kind in ((production.batch, "batch"), (production.label_source, "labels")):
        for code, positions in positions_by_code(column.cat.codes.to_numpy(), len(column.cat.categories)):
            name = str(column.cat.categories[code])
            if name:
                yield kind, name, (slice(positions.start + offset, positions.stop + offset)
                                   if isinstance(positions, slice) else positions + offset)


def positions_by_code(codes: np.ndarray, count: int) -> Iterable[tuple[int, np.ndarray | slice]]:
    """For each code in 0..count-1 that occurs, its row positions in ascending order: a slice when
    the codes come in runs (files one after the other, the usual case), else an index array.
    Negative codes (none) are left out."""
    if count >= np.iinfo(codes.dtype).max:  # the bounds below must fit the codes' type (no copy of the codes)
        codes = codes.astype(np.int64)
    if len(codes) < 2 or bool(np.all(codes[1:] >= codes[:-1])):
        bounds = np.searchsorted(codes, np.arange(count + 1, dtype=codes.dtype))
        for code in range(count):
            if bounds[code + 1] > bounds[code]:
                yield code, slice(int(bounds[code]), int(bounds[code + 1]))
        return
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(count + 1, dtype=codes.dtype))
    for code in range(count):
        if bounds[code + 1] > bounds[code]:
            yield code, order[bounds[code]:bounds[code + 1]]


def _source(kind: str, name: str, hashes: np.ndarray, types: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {"kind": kind, "path": name, "rows": len(hashes), "fingerprint": fingerprint_of_hashes(types, hashes)}


def _relative_name(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- fingerprints
#
# A table's fingerprint is a SHA-256 over its column names and types, its row count and its rows.
# A row's 64-bit hash folds the row's values in column-name order: each value's 64 bits (numbers as
# stored; text and other objects by pandas' value hash) are XORed in and the result multiplied by an
# odd constant of that column's position. Both steps are one-to-one, so changing any single value
# changes the row's hash; and a row's hash depends on that row alone, so rows hashed apart and put
# together give the hashes of the table hashed whole. The row hashes then go to SHA-256 a block of
# 4096 rows at a time, each block as one 64-bit sum of its row hashes times powers of an odd number:
# again one-to-one in any single row, and it keeps SHA-256 (slow without CPU support) to a few
# kilobytes for a million rows. All of it is built for speed (two machine operations per value, over
# blocks of rows that stay in the CPU cache, on a few threads) because every run hashes every row.

_HASH_BLOCK_ROWS = 1 << 15
_HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
_SEED = np.uint64(0x345678)
_MISSING_WORD = np.uint64(0x9AE16A3B2F90404F)  # a missing value that is not a number
_FOLD_ROWS = 4096
_FOLD_POWERS = np.cumprod(np.full(_FOLD_ROWS, 0xFF51AFD7ED558CCD, dtype=np.uint64), dtype=np.uint64)  # wraps mod 2**64
_MULTIPLIERS = tuple(np.uint64((0x9E3779B97F4A7C15 + 2 * i * 0xD1B54A32D192ED03) % 2**64 | 1) for i in range(64))


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the rows and columns, independent of file format and column order."""
    return fingerprint_of_hashes(column_types(frame), row_hashes(frame))


def fingerprint_of_hashes(types: tuple[tuple[str, str], ...], hashes: np.ndarray) -> str:
    """The fingerprint of a table from its ``column_types`` and its ``row_hashes`` (of any subset of rows)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    rows = len(hashes)
    whole = rows - rows % _FOLD_ROWS
    blocks = (hashes[:whole].reshape(-1, _FOLD_ROWS) * _FOLD_POWERS).sum(axis=1, dtype=np.uint64)
    tail = (hashes[whole:] * _FOLD_POWERS[: rows - whole]).sum(dtype=np.uint64)
    digest = hashlib.sha256()
    digest.update("\x1f".join(name for name, _ in types).encode())
    digest.update("\x1f".join(dtype for _, dtype in types).encode())
    digest.update(np.uint64(rows).tobytes())
    digest.update(np.ascontiguousarray(blocks).data)
    digest.update(tail.tobytes())
    return "sha256:" + digest.hexdigest()


def column_types(columns: pd.DataFrame | Columns | Mapping[str, pd.Series]) -> tuple[tuple[str, str], ...]:
    """The (name, dtype) of each column, by name: the header a fingerprint covers (pandas dtypes,
    also for ``Columns`` still in Arrow)."""
    if isinstance(columns, Columns):
        return tuple(sorted((str(name), str(columns.dtype(name))) for name in columns.names))
    items = columns.items() if isinstance(columns, Mapping) else columns.dtypes.items()
    return tuple(sorted((str(name), str(value.dtype if isinstance(columns, Mapping) else value))
                        for name, value in items))


def row_hashes(columns: pd.DataFrame | Columns | Mapping[str, pd.Series | pa.ChunkedArray]) -> np.ndarray:
    """One 64-bit hash per row over the columns (taken in name order), as a uint64 array.

    A column may be in pandas or still in Arrow (``Columns``); either way it hashes as the pandas
    column it is or becomes, so the hashes do not depend on where the rows are held. Arrow numbers
    are hashed where they lie, file by file (no copy), and Arrow text once per distinct value.
    """
    if isinstance(columns, Columns):
        items: Mapping[str, Any] = columns.hashable()
        rows = len(columns)
    elif isinstance(columns, Mapping):
        items = columns
        rows = len(next(iter(items.values()))) if items else 0
    else:
        items = {name: columns[name] for name in columns.columns}
        rows = len(columns)
    names = sorted(items, key=str)
    in_place = [_numbers_in_place(items[name]) for name in names]  # Arrow numbers: hashed chunk by chunk
    words = [None if numbers is not None else _value_words(items[name]) for name, numbers in zip(names, in_place,
                                                                                                  strict=True)]
    hashes = np.empty(rows, dtype=np.uint64)
    # Pieces of rows that no chunk boundary crosses (within one, each Arrow column is one chunk, whose
    # values are a NumPy view of Arrow's buffer), none longer than a few blocks: the threads take the
    # next piece as they finish one, so a thread that the machine holds back delays little.
    bounds = {0, rows}
    for numbers in in_place:
        if numbers is not None:
            bounds.update(np.cumsum([len(chunk) for chunk in numbers.chunks]).tolist())
    edges = sorted(bounds)
    step = 4 * _HASH_BLOCK_ROWS
    pieces = [(begin, min(stop, begin + step)) for start, stop in zip(edges[:-1], edges[1:], strict=True)
              for begin in range(start, stop, step)]

    def fold(start: int, stop: int) -> None:
        values = [word[start:stop] if word is not None else _number_words(numbers.slice(start, stop - start))
                  for word, numbers in zip(words, in_place, strict=True)]
        for begin in range(0, stop - start, _HASH_BLOCK_ROWS):
            end = min(stop - start, begin + _HASH_BLOCK_ROWS)
            block = np.full(end - begin, _SEED, dtype=np.uint64)
            for position, value in enumerate(values):
                np.bitwise_xor(block, value[begin:end], out=block)
                np.multiply(block, _MULTIPLIERS[position % len(_MULTIPLIERS)], out=block)
            hashes[start + begin:start + end] = block

    threads = min(_HASH_THREADS, len(pieces))
    if threads <= 1 or rows < 2 * step:
        for start, stop in pieces:
            fold(start, stop)
    else:  # NumPy releases the GIL inside each operation, so pieces of rows fold in parallel
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fold, *zip(*pieces, strict=True)))
    return hashes


def _numbers_in_place(column: pd.Series | pa.ChunkedArray) -> pa.ChunkedArray | None:
    """An Arrow column of numbers or booleans without missing values (pandas holds them with the same
    bits), to hash in place; None for any other column."""
    if not isinstance(column, pa.ChunkedArray) or column.null_count:
        return None
    kind = column.type
    return column if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) else None


def _number_words(piece: pa.ChunkedArray) -> np.ndarray:
    """The words of a piece of an Arrow column of numbers within one chunk: a view of Arrow's buffer."""
    chunks = [chunk for chunk in piece.chunks if len(chunk)]
    values = chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks, type=piece.type).combine_chunks()
    return _bits(values.to_numpy(zero_copy_only=False))  # no copy for numbers without missing values


def _bits(values: np.ndarray) -> np.ndarray:
    if values.dtype.itemsize == 8:
        return values.view(np.uint64)
    return values.view(f"u{values.dtype.itemsize}").astype(np.uint64)


def _value_words(column: pd.Series | pa.ChunkedArray) -> np.ndarray:
    """64 bits per value: a number's own bits (no copy for 8-byte types), else pandas' hash of the value.

    Text is hashed once per distinct value and spread by code: a text column has far fewer distinct
    values than rows, and Arrow-backed text is never turned into a million Python strings. An Arrow
    column of text is hashed from its dictionary (as Parquet stores text); another Arrow column
    (with missing values, dates, ...) is converted to the pandas column it becomes.
    """
    if isinstance(column, pa.ChunkedArray):
        if _is_arrow_text(column.type):
            return _text_words(column)
        column = column.to_pandas()
    values = column.to_numpy() if isinstance(column.dtype, np.dtype) else None
    if values is not None and values.dtype.kind in "iufbmM":
        return _bits(values)
    codes, distinct = pd.factorize(column)
    return _words_by_code(pd.Series(distinct, dtype=object), codes)


def _text_words(column: pa.ChunkedArray) -> np.ndarray:
    """The words of Arrow text (plain or dictionary-encoded, as Parquet stores it): each chunk's
    dictionary is hashed (all of them in one go), and its codes pick the words."""
    encoded = [chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk) for chunk in column.chunks]
    if not encoded:
        return np.empty(0, dtype=np.uint64)
    dictionaries = pa.concat_arrays([chunk.dictionary.cast(pa.large_string()) for chunk in encoded])
    words = pd.util.hash_pandas_object(pd.Series(dictionaries.to_pylist(), dtype=object), index=False).to_numpy()
    words = np.append(words, _MISSING_WORD)
    words[:-1][dictionaries.is_null().to_numpy(zero_copy_only=False)] = _MISSING_WORD  # a missing value is missing
    result = np.empty(len(column), dtype=np.uint64)
    start = offset = 0
    for chunk in encoded:
        # A missing code takes the last word: filled so that with the chunk's offset it points there.
        indices = chunk.indices if chunk.indices.type in (pa.int32(), pa.int64()) else chunk.indices.cast(pa.int64())
        codes = pc.fill_null(indices, len(words) - 1 - offset).to_numpy(zero_copy_only=False)
        np.take(words[offset:], codes, out=result[start:start + len(chunk)])
        start, offset = start + len(chunk), offset + len(chunk.dictionary)
    return result


def _words_by_code(distinct: pd.Series, codes: np.ndarray) -> np.ndarray:
    words = pd.util.hash_pandas_object(distinct, index=False).to_numpy()
    return np.append(words, _MISSING_WORD)[codes]  # code -1 (missing) takes the last word


def split_dataset(dataset: Dataset, spec: DataSpec, *, stratify_labels: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Training and held-out rows: at random by seed, or the latest rows by the time column."""
    split = split_for_validation(dataset, spec, stratify_labels=stratify_labels)
    return split.x_train, split.x_test, split.y_train, split.y_test


def split_for_validation(dataset: Dataset, spec: DataSpec, *, stratify_labels: bool) -> Split:
    """Training and held-out rows, the held-out ones including the newest production rows.

    Without production rows: at random by seed and fraction (stratified by label where it can be),
    or the latest rows by ``split.time_column``. With production rows, so that validation judges the
    model on the data it will meet: by time, the whole table is ordered by time (production rows by
    when they were observed) and the latest rows are held out; at random, the project's rows are
    split as they would be alone, and of the production rows the newest ``test_fraction`` (at least
    one) are held out. The same data and seed always give the same split.
    """
    split = spec.split
    features = dataset.features.drop(columns=[split.time_column]) if (
        split.method == "time" and split.time_column in dataset.features.columns) else dataset.features
    production = dataset.production_rows
    n_rows = len(features)
    if not production.any():
        train_index, test_index = _split_rows(dataset, np.arange(n_rows), spec, stratify_labels)
    elif split.method == "time":
        n_test = _held_out_count(n_rows, split.test_fraction)
        order = np.argsort(_row_times(dataset, split.time_column), kind="stable")
        train_index, test_index = order[: n_rows - n_test], order[n_rows - n_test:]
    else:
        own, theirs = np.flatnonzero(~production), np.flatnonzero(production)
        n_own_test = int(round(len(own) * split.test_fraction))
        own_train, own_test = (_split_rows(dataset, own, spec, stratify_labels) if n_own_test >= 1 and
                               len(own) - n_own_test >= 2 else (own, own[:0]))  # too few to split: all train
        by_time = theirs[np.argsort(dataset.observed_at.to_numpy()[theirs], kind="stable")]  # oldest first
        n_recent = max(1, int(round(len(theirs) * split.test_fraction)))
        train_index = np.concatenate([own_train, by_time[: len(theirs) - n_recent]])
        test_index = np.concatenate([own_test, by_time[len(theirs) - n_recent:]])
        if len(train_index) < 2:
            raise DataError(f"the training data has {n_rows} rows, too few to hold out {split.test_fraction:.0%} "
                            "for validation and train on the rest; add data")
    return Split(
        x_train=features.iloc[train_index].reset_index(drop=True),
        x_test=features.iloc[test_index].reset_index(drop=True),
        y_train=dataset.target.iloc[train_index].reset_index(drop=True),
        y_test=dataset.target.iloc[test_index].reset_index(drop=True),
        recent=production[test_index],
    )


def _split_rows(dataset: Dataset, rows: np.ndarray, spec: DataSpec, stratify_labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Today's split of the given rows (the project's own): at random by seed, or the latest by time."""
    split = spec.split
    n_test = _held_out_count(len(rows), split.test_fraction)
    if split.method == "time":
        order = np.argsort(pd.to_datetime(dataset.features[split.time_column].iloc[rows]).to_numpy(), kind="stable")
        return rows[order[: len(rows) - n_test]], rows[order[len(rows) - n_test:]]
    from sklearn.model_selection import train_test_split

    target = dataset.target.iloc[rows]
    labels = target if stratify_labels and split.stratify and _can_stratify(target, n_test) else None
    return tuple(train_test_split(rows, test_size=n_test, random_state=split.seed, stratify=labels))


def _held_out_count(n_rows: int, fraction: float) -> int:
    n_test = int(round(n_rows * fraction))
    if n_test < 1 or n_rows - n_test < 2:
        raise DataError(f"the dataset has {n_rows} rows, too few to hold out {fraction:.0%} for validation; add data")
    return n_test


def _row_times(dataset: Dataset, time_column: str) -> np.ndarray:
    """Each row's time as UTC nanoseconds: the time column for the project's rows, when it was
    observed for a production row (whose batch need not have the time column)."""
    own = pd.to_datetime(dataset.features[time_column], utc=True, errors="coerce")
    times = own.where(dataset.observed_at.isna(), pd.to_datetime(dataset.observed_at, utc=True))
    return times.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT"))


def _can_stratify(target: pd.Series, n_test: int) -> bool:
    counts = target.value_counts()
    return counts.min() >= 2 and n_test >= len(counts)


def sample_values(values: list[Any], limit: int = 5) -> str:
    """A few values for a message (text quoted), and how many more there are: one wording everywhere."""
    shown = ", ".join(repr(value) if isinstance(value, str) else str(value) for value in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def first_line(exc: BaseException) -> str:
    """An error's first line (or its type's name), for a one-line message that names the file."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
