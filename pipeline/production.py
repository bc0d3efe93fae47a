"""Labelled production data: what production saw, with the true outcome once it is known.

Labels arrive two ways, as they do in production:

- **Labelled batches.** A batch file (CSV or Parquet) in the batches folder that has the project's
  target column. Its rows with a target value are labelled rows.
- **Late labels.** Label files (CSV or Parquet) in the labels folder, each with the project's id
  column (``[data] id_column``) and the target, joined by id to the rows of the batches (labelled or
  not). A label whose id matches no batch row yet is counted in ``unmatched_labels`` and reported;
  its file stays where it is, so it joins once a batch with that id arrives.

Rules, in the order they apply:

1. A row is observed when its batch file was written: every row of a batch gets the file's
   modification time as its observed time (a label file does not change when a row was observed).
2. A label from a label file overrides the label in the batch (it is the later confirmation).
3. An id labelled differently by two label files takes the label of the newest file (by
   modification time, then name): a later file is a correction. An id with two different labels
   inside one file is dropped, as it cannot be told which is right. Both are reported.
4. Labels that do not fit the target are dropped and reported with their file: text for a numeric
   target (``numeric_target``), or a class the model does not know (``classes``).
5. Rows are de-duplicated by id: the newest observed row of an id is kept.
6. The window: rows observed more than ``max_age_days`` ago are left out, then the newest
   ``max_rows`` rows are kept.

One bad file never stops the others: each problem is one line in ``problems`` naming the file,
what is wrong and what to do, and the rest of the data is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from pipeline.data import (
    Columns,
    DataError,
    category_text,
    column_types,
    fingerprint_of_hashes,
    first_line,
    positions_by_code,
    read_columns,
    read_table,
    row_hashes,
    sample_values,
    superseded_rows,
)

__all__ = [
    "BATCH_COLUMN",
    "LABEL_SOURCE_COLUMN",
    "OBSERVED_AT_COLUMN",
    "LabelCheck",
    "LabelledProduction",
    "ProductionSource",
    "check_labels",
    "read_labelled_production",
]

# Columns added to each labelled row; named so that they cannot clash with a project's own columns.
OBSERVED_AT_COLUMN = "__observed_at"  # when the row's batch was written (UTC)
BATCH_COLUMN = "__batch"  # the file name of the row's batch
LABEL_SOURCE_COLUMN = "__label_source"  # the file name of the label file that gave the label; "" for its batch

_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class ProductionSource:
    """One batch or label file that contributed labelled rows (after the window)."""

    kind: str  # "batch" or "labels"
    path: str  # the file's name in its folder
    rows: int  # labelled rows it contributed: for a label file, the rows whose label it gave
    fingerprint: str  # content hash of those rows
    columns: tuple[str, ...] = ()  # a batch file's columns, so training can tell which features it lacks

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "rows": self.rows, "fingerprint": self.fingerprint}


@dataclass(frozen=True, eq=False)
class LabelledProduction:
    """Labelled production rows, oldest first.

    ``columns`` holds the rows' own columns (the batches' columns, with the target as checked and
    joined), still in Arrow as read where nothing changed them, so that a training table can be put
    together from them with one copy; ``observed_at``, ``batch`` and ``label_source`` say, per row,
    when it was observed, its batch and the label file that gave its label ("" for its batch).
    ``frame`` is all of it as one pandas frame: the own columns, then the added
    ``OBSERVED_AT_COLUMN``, ``BATCH_COLUMN`` and ``LABEL_SOURCE_COLUMN``; made on first use.
    """

    columns: Columns
    observed_at: pd.Series
    batch: pd.Series  # categorical
    label_source: pd.Series  # categorical
    sources: tuple[ProductionSource, ...] = ()
    problems: tuple[str, ...] = ()  # one line each: the file named, what is wrong, how to fix it
    unmatched_labels: int = 0  # label ids that match no batch row yet
    batches_dir: Path | None = None
    labels_dir: Path | None = None
    # Per row, a hash over its own columns (``columns``), computed once when read so that building
    # the training table need not hash these rows again.
    row_hashes: np.ndarray | None = field(default=None, repr=False)
    hashed_columns: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def rows(self) -> int:
        return len(self.columns)

    @cached_property
    def frame(self) -> pd.DataFrame:
        frame = self.columns.frame()
        frame[OBSERVED_AT_COLUMN] = self.observed_at.array
        frame[BATCH_COLUMN] = self.batch.array
        frame[LABEL_SOURCE_COLUMN] = self.label_source.array
        return frame

    def by_batch(self) -> dict[str, pd.DataFrame]:
        """The labelled rows of each batch, by the batch's file name, oldest batch first."""
        if self.frame.empty:
            return {}
        return {str(name): rows for name, rows in self.frame.groupby(BATCH_COLUMN, sort=False, observed=True)}

    def where(self, kind: str, name: str) -> str:
        """The full path of a source file, for messages."""
        folder = self.batches_dir if kind == "batch" else self.labels_dir
        return str(folder / name) if folder is not None else name


@dataclass(frozen=True)
class LabelCheck:
    """Labels checked against what the target holds: ``values`` converted where needed (text that
    reads as a number, a class written another way), ``bad`` marking labels that do not fit."""

    values: pd.Series
    bad: np.ndarray
    reason: str = ""


def check_labels(values: pd.Series, *, numeric_target: bool | None = None, classes: list | None = None) -> LabelCheck:
    """Whether labels fit the target: numbers for a numeric target, known classes for a classifier.

    Missing labels are never bad (the row is simply not labelled). Classes are compared as text,
    so a label file's ``1`` matches the class ``1.0`` or ``"1"``; good labels are converted to the
    class values given, so the labels of every file have one type.
    """
    present = values.notna().to_numpy()
    if numeric_target:
        if is_numeric_dtype(values.dtype) and not is_bool_dtype(values.dtype):
            return LabelCheck(values, np.zeros(len(values), dtype=bool))
        parsed = pd.to_numeric(values.astype(object), errors="coerce")
        bad = present & parsed.isna().to_numpy()
        samples = sample_values(pd.unique(values[bad]).tolist())
        return LabelCheck(parsed.rename(values.name), bad, f"are not numbers ({samples}) but the target is numeric")
    if classes is None:
        return LabelCheck(values, np.zeros(len(values), dtype=bool))
    known = {category_text(value): value for value in classes}
    distinct = pd.unique(values[present])
    unknown = [value for value in distinct if category_text(value) not in known]
    as_class = {value: known.get(category_text(value), value) for value in distinct}
    bad = values.isin(unknown).to_numpy() & present if unknown else np.zeros(len(values), dtype=bool)
    converted = values
    if any(_kind(value) != _kind(written) for value, written in as_class.items()):
        converted = values.map(as_class)  # e.g. the label "1" in a text column, for the class 1
    names = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
    return LabelCheck(converted, bad, f"are not classes the model knows ({sample_values(unknown)}; known: {names})")


def read_labelled_production(
    batches_dir: str | Path,
    labels_dir: str | Path,
    *,
    target: str,
    id_column: str | None,
    now: datetime,
    max_age_days: float | None = None,
    max_rows: int | None = None,
    classes: list | None = None,
    numeric_target: bool | None = None,
) -> LabelledProduction:
    """The labelled production rows in the window, oldest first; never raises for a bad file.

    ``classes`` (the classes the model knows) and ``numeric_target`` (the target is a number) let
    labels that cannot be right be reported and left out; without them every label is taken.
    """
    batches_dir, labels_dir = Path(batches_dir), Path(labels_dir)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    oldest = now - timedelta(days=max_age_days) if max_age_days is not None else None
    problems: list[str] = []
    labels = _read_label_files(labels_dir, target=target, id_column=id_column, classes=classes,
                               numeric_target=numeric_target, problems=problems)
    batches = _Batches()
    ids_seen: list[pd.Series] = []  # every id of every batch, to count the labels that match none
    expired: list[str] = []  # batches with labelled rows, all older than the window
    for path, observed in _table_files(batches_dir):
        try:
            names = _column_names(path)
        except DataError as exc:
            problems.append(f"{exc}; its labels (if any) are not used until the file is written again")
            continue
        has_target = target in names
        joins = labels is not None and id_column in names
        if not (has_target or joins):
            continue  # an unlabelled batch with nothing to join: it only matters to the drift check
        if oldest is not None and observed < oldest:
            if _has_labels_in(path, target=target if has_target else None,
                              id_column=id_column if joins else None, labels=labels, ids_seen=ids_seen):
                expired.append(path.name)
            continue
        try:
            part = read_columns(path)
        except DataError as exc:
            problems.append(f"{exc}; its labels (if any) are not used until the file is written again")
            continue
        keep = _with_value(part, target) if has_target else None
        if joins:  # an unlabelled row stays only where a label file labels it
            ids = part.series_of(id_column)
            ids_seen.append(ids)
            joined = ids.isin(labels.ids).to_numpy()
            keep = joined if not has_target else joined | (keep if keep is not None else True)
        if keep is not None and not keep.all():
            part = part.take(keep)
        if part.rows:
            batches.add(path.name, part, observed, names)
    # The rows' own columns stay as read; what the rules below look at (the target, the id, where
    # each row came from) is a small pandas frame beside them, whose index says which rows remain.
    columns, rows = batches.rows(target)
    rows[target] = columns.series_of(target)
    if id_column is not None and id_column in columns:
        rows[id_column] = columns.series_of(id_column)
    rows = _checked_batch_labels(rows, target, classes, numeric_target, batches_dir, problems)
    rows, unmatched = _join_labels(rows, labels, target=target, id_column=id_column, ids_seen=ids_seen,
                                   problems=problems)
    rows = _labelled_window(rows, target=target, id_column=id_column, max_rows=max_rows)
    if len(rows) < len(columns):
        columns = columns.take(rows.index.to_numpy())
    rows = rows.reset_index(drop=True)
    columns = columns.with_series({target: rows[target]})
    if rows.empty and expired:
        problems.append(
            f"no labelled production row is inside the window: the labelled batches ({sample_values(expired)}) in "
            f"{batches_dir} were written more than [retrain] max_age_days = {max_age_days:g} days ago; widen "
            "max_age_days in mlops.toml, or add newer labelled batches or label files"
        )
    return _described(columns, rows, batches.columns, problems, unmatched, batches_dir, labels_dir)


# --------------------------------------------------------------------------- label files


@dataclass(frozen=True)
class _Labels:
    ids: pd.Index  # unique
    values: pd.Series  # the label of each id
    files: np.ndarray  # the label file that gave each id its label
    paths: Mapping[str, Path]


def _read_label_files(folder: Path, *, target: str, id_column: str | None, classes, numeric_target,
                      problems: list[str]) -> _Labels | None:
    files = _table_files(folder)
    if not files:
        return None
    if id_column is None:
        problems.append(
            f"{len(files)} label file(s) in {folder} ({sample_values([path.name for path, _ in files])}) cannot "
            f"be joined to batches: the project has no id column; set [data] id_column = \"...\" in mlops.toml to "
            "the column that identifies a row in both the batches and the label files"
        )
        return None
    collected = []
    for path, _ in files:
        frame = _read_label_file(path, target=target, id_column=id_column, classes=classes,
                                 numeric_target=numeric_target, problems=problems)
        if frame is not None:
            collected.append(frame.assign(__file=path.name))
    if not collected:
        return None
    labels = pd.concat(collected, ignore_index=True) if len(collected) > 1 else collected[0]
    _report_relabelled(labels, id_column, target, folder, problems)
    labels = labels.drop_duplicates(subset=[id_column], keep="last")  # files are in time order: the newest wins
    return _Labels(pd.Index(labels[id_column]), labels[target].reset_index(drop=True), labels["__file"].to_numpy(),
                   {path.name: path for path, _ in files})


def _read_label_file(path: Path, *, target: str, id_column: str, classes, numeric_target,
                     problems: list[str]) -> pd.DataFrame | None:
    needs = f"a label file needs a header row with the columns {id_column} and {target}, then one row per label"
    try:
        if path.stat().st_size == 0:
            problems.append(f"{path}: the label file is empty; {needs}")
            return None
        frame = read_table(path)
    except DataError as exc:
        problems.append(f"{exc}; {needs}")
        return None
    except OSError as exc:  # removed or made unreadable while we looked
        problems.append(f"{path}: cannot be read ({exc.strerror or exc}); {needs}")
        return None
    missing = [name for name in (id_column, target) if name not in frame.columns]
    if missing:
        problems.append(f"{path}: no {' or '.join(map(repr, missing))} column (it has: "
                        f"{', '.join(map(str, frame.columns[:10]))}); {needs}")
        return None
    if frame.empty:
        problems.append(f"{path}: the label file has no rows; {needs}")
        return None
    frame = frame[[id_column, target]]
    no_id = frame[id_column].isna().to_numpy()
    if no_id.any():
        problems.append(f"{path}: {int(no_id.sum())} row(s) have no {id_column}, so they cannot be joined and are "
                        f"ignored; fill in the {id_column}")
    frame = frame[~no_id & frame[target].notna().to_numpy()]  # a row without a label is not a label yet
    if frame.empty:
        return None
    checked = check_labels(frame[target], numeric_target=numeric_target, classes=classes)
    if checked.bad.any():
        problems.append(f"{path}: {int(checked.bad.sum())} label(s) {checked.reason}; they are ignored; "
                        "correct them in the file")
    frame = frame.assign(**{target: checked.values.to_numpy()})[~checked.bad]
    texts = _as_text(frame[target])
    per_id = texts.groupby(frame[id_column].to_numpy()).nunique()
    conflicting = per_id.index[per_id.to_numpy() > 1]
    if len(conflicting):
        problems.append(
            f"{path}: {len(conflicting)} id(s) have two different labels in this file (e.g. "
            f"{sample_values(conflicting.tolist(), 3)}); they are ignored until the file gives each id one label"
        )
        frame = frame[~frame[id_column].isin(conflicting).to_numpy()]
    return frame.drop_duplicates(subset=[id_column], keep="last")


def _report_relabelled(labels: pd.DataFrame, id_column: str, target: str, folder: Path, problems: list[str]) -> None:
    """Ids that two label files label differently: the newest file wins, and says so."""
    repeated = labels[labels.duplicated(subset=[id_column], keep=False).to_numpy()]
    if repeated.empty:
        return
    texts = _as_text(repeated[target])
    differing = texts.groupby(repeated[id_column].to_numpy()).nunique()
    differing = differing.index[differing.to_numpy() > 1]
    if not len(differing):
        return
    latest = repeated[repeated[id_column].isin(differing).to_numpy()].drop_duplicates(subset=[id_column], keep="last")
    for name, ids in latest.groupby("__file", sort=False)[id_column]:
        earlier = sorted(set(repeated.loc[repeated[id_column].isin(ids).to_numpy(), "__file"]) - {name})
        problems.append(
            f"{folder / name}: relabels {len(ids)} id(s) that {sample_values(earlier, 3)} labelled differently (e.g. "
            f"{sample_values(ids.tolist(), 3)}); the newest file wins; if it is wrong, correct or remove it"
        )


# --------------------------------------------------------------------------- batches


class _Batches:
    """The batches read, kept as read (in Arrow) and put together at the end without a pandas copy."""

    def __init__(self) -> None:
        self.parts: list[Columns] = []
        self.names: list[str] = []
        self.observed: list[datetime] = []
        self.columns: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, part: Columns, observed: datetime, columns: list[str]) -> None:
        self.parts.append(part)
        self.names.append(name)
        self.observed.append(observed)
        self.columns[name] = tuple(map(str, columns))

    def rows(self, target: str) -> tuple[Columns, pd.DataFrame]:
        """All rows, oldest batch first, with the target (missing where a batch has none); and beside
        them, per row, when it was observed and the name of its batch (cheap, from the batches' lengths)."""
        if not self.parts:
            return Columns.of_frame(pd.DataFrame({target: pd.Series(dtype=float)})), pd.DataFrame({
                OBSERVED_AT_COLUMN: pd.Series(dtype="datetime64[ns, UTC]"), BATCH_COLUMN: pd.Categorical([])})
        lengths = [part.rows for part in self.parts]
        columns, self.parts = Columns.concat(self.parts), []
        if target not in columns:
            columns = columns.with_series({target: pd.Series(np.nan, index=pd.RangeIndex(len(columns)))})
        codes = np.repeat(np.arange(len(lengths)), lengths)
        times = np.array([np.datetime64(moment.replace(tzinfo=None), "ns") for moment in self.observed])
        return columns, pd.DataFrame({OBSERVED_AT_COLUMN: pd.Series(times[codes]).dt.tz_localize(UTC),
                                      BATCH_COLUMN: pd.Categorical.from_codes(codes, categories=self.names)})


def _with_value(part: Columns, name: str) -> np.ndarray | None:
    """Which rows have a value in the column; None when all have one."""
    if name not in part.series and not part.table.column(name).null_count:
        return None
    present = part.series_of(name).notna().to_numpy()
    return None if present.all() else present


def _checked_batch_labels(rows: pd.DataFrame, target: str, classes, numeric_target, folder: Path,
                          problems: list[str]) -> pd.DataFrame:
    """The batches' own labels checked; a label that does not fit leaves its row unlabelled."""
    checked = check_labels(rows[target], numeric_target=numeric_target, classes=classes)
    if checked.bad.any():
        batch = rows[BATCH_COLUMN].to_numpy()
        for name, count in pd.Series(batch[checked.bad]).value_counts(sort=False).items():
            problems.append(f"{folder / str(name)}: {count} value(s) of the target column {target!r} "
                            f"{checked.reason}; those rows are used as unlabelled; correct the values in the batch")
        return rows.assign(**{target: checked.values.where(~checked.bad)})
    if checked.values is not rows[target]:
        return rows.assign(**{target: checked.values})
    return rows


def _has_labels_in(path: Path, *, target: str | None, id_column: str | None, labels: _Labels | None,
                   ids_seen: list[pd.Series]) -> bool:
    """For a batch older than the window: whether it holds labelled rows (read one or two columns)."""
    try:
        frame = _read_columns(path, [name for name in (target, id_column) if name is not None])
    except DataError:
        return False
    labelled = frame[target].notna().any() if target is not None else False
    if id_column is not None:
        ids_seen.append(frame[id_column])
        labelled = labelled or bool(frame[id_column].isin(labels.ids).any())
    return bool(labelled)


def _join_labels(rows: pd.DataFrame, labels: _Labels | None, *, target: str, id_column: str | None,
                 ids_seen: list[pd.Series], problems: list[str]) -> tuple[pd.DataFrame, int]:
    """Each row's label from the label files (which override the batch's), and the labels matching no row."""
    files = ["", *(labels.paths if labels is not None else ())]  # "" for a label from the row's batch
    codes = np.zeros(len(rows), dtype=np.int32)
    if labels is None:
        return rows.assign(**{LABEL_SOURCE_COLUMN: pd.Categorical.from_codes(codes, categories=files)}), 0
    if not rows.empty and id_column in rows.columns:
        position = labels.ids.get_indexer(rows[id_column])
        matched = position >= 0
        if matched.any():
            new = labels.values.to_numpy()[position[matched]]
            current = rows[target]
            before = current.to_numpy()[matched]
            changed = pd.notna(before) & (_as_text(pd.Series(before)).to_numpy() != _as_text(pd.Series(new)).to_numpy())
            for name, count in zip(*np.unique(labels.files[position[matched]][changed].astype(str), return_counts=True),
                                   strict=True):
                problems.append(f"{labels.paths[name]}: gives {count} row(s) a label different from the one in their "
                                "batch; the label file wins; if it is wrong, correct it")
            values = current.astype(object).to_numpy(copy=True)
            values[matched] = new
            codes[matched] = pd.Index(files).get_indexer(labels.files[position[matched]])
            rows = rows.assign(**{target: pd.Series(values, index=rows.index).infer_objects()})
    seen = pd.concat(ids_seen, ignore_index=True).unique() if ids_seen else []
    unmatched = ~labels.ids.isin(seen)
    for name, count in zip(*np.unique(labels.files[unmatched].astype(str), return_counts=True), strict=True):
        examples = labels.ids[unmatched & (labels.files == name)].tolist()
        problems.append(f"{labels.paths[name]}: {count} label(s) match no batch row yet (ids e.g. "
                        f"{sample_values(examples, 3)}); they are kept, and joined when a batch with those "
                        f"{id_column} values arrives")
    return rows.assign(**{LABEL_SOURCE_COLUMN: pd.Categorical.from_codes(codes, categories=files)}), int(unmatched.sum())


def _labelled_window(rows: pd.DataFrame, *, target: str, id_column: str | None, max_rows: int | None) -> pd.DataFrame:
    """Labelled rows only, one per id (the newest), the newest ``max_rows`` of them; their index is
    their position among all rows."""
    if rows.empty or target not in rows.columns:
        return rows.iloc[:0]
    labelled = rows[target].notna().to_numpy()
    if not labelled.all():
        rows = rows[labelled]
    repeated = superseded_rows(rows[id_column]) if id_column is not None and id_column in rows.columns else None
    if repeated is not None:  # rows are oldest first: the last of an id is its newest
        rows = rows[~repeated]
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.iloc[len(rows) - max_rows:]
    return rows


def _described(columns: Columns, rows: pd.DataFrame, columns_of: dict[str, tuple[str, ...]], problems: list[str],
               unmatched: int, batches_dir: Path, labels_dir: Path) -> LabelledProduction:
    """The result, with each contributing file's rows and fingerprint (over the rows' own columns)."""
    for name in (BATCH_COLUMN, LABEL_SOURCE_COLUMN):  # only files that gave rows, so grouping sees no empty group
        used = np.bincount(rows[name].cat.codes.to_numpy(), minlength=len(rows[name].cat.categories)) > 0
        if not used.all():
            rows[name] = rows[name].cat.remove_unused_categories()
    added = (rows[OBSERVED_AT_COLUMN], rows[BATCH_COLUMN], rows[LABEL_SOURCE_COLUMN])
    if rows.empty:
        return LabelledProduction(columns, *added, (), tuple(problems), unmatched, batches_dir, labels_dir)
    hashes = row_hashes(columns)
    types = column_types(columns)
    sources = []
    for kind, names in (("batch", rows[BATCH_COLUMN]), ("labels", rows[LABEL_SOURCE_COLUMN])):
        for name, positions in _groups(names).items():
            if name == "":
                continue
            rows_of = hashes[positions]
            fingerprint = fingerprint_of_hashes(types, rows_of)
            sources.append(ProductionSource(kind, name, len(rows_of), fingerprint, columns_of.get(name, ())))
    return LabelledProduction(columns, *added, tuple(sources), tuple(problems), unmatched, batches_dir, labels_dir,
                              row_hashes=hashes, hashed_columns=types)


def _groups(names: pd.Series) -> dict[str, np.ndarray | slice]:
    """Row positions (ascending) of each name of a categorical column, by its codes (no text compared)."""
    categories = names.cat.categories
    return {str(categories[code]): positions
            for code, positions in positions_by_code(names.cat.codes.to_numpy(), len(categories))}


# --------------------------------------------------------------------------- files


def _table_files(folder: Path) -> list[tuple[Path, datetime]]:
    """CSV and Parquet files in a folder with their modification times, oldest first (then by name).

    Hidden files (a name starting with '.') are skipped: they are files still being written.
    """
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.name.lower().endswith(_TABLE_SUFFIXES):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue  # removed while we looked
        if path.is_file():
            found.append((datetime.fromtimestamp(stat.st_mtime, UTC), path.name, path))
    return [(path, observed) for observed, _, path in sorted(found)]


def _column_names(path: Path) -> list[str]:
    """A file's columns, read from its header or footer only."""
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            return list(pq.read_schema(path).names)
        return [str(name) for name in pd.read_csv(path, nrows=0).columns]
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (OSError, ValueError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read: {first_line(exc)}") from exc


def _read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(path, columns=columns)
        return pd.read_csv(path, usecols=columns, engine="pyarrow")
    except (OSError, ValueError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read: {first_line(exc)}") from exc


# --------------------------------------------------------------------------- small helpers


def _as_text(values: pd.Series) -> pd.Series:
    """Labels as text, the same for 1, 1.0 and "1", for comparing labels across files."""
    distinct = pd.unique(values.dropna())
    return values.map({value: category_text(value) for value in distinct})


def _kind(value: Any) -> str:
    """What sort of value a label is, so that 1 (int) and 1.0 (float) or "1" (text) can be told apart."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    return "text" if isinstance(value, str) else type(value).__name__


