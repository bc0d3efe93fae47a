"""Production batches as the drift check reads them: a DataFrame, CSV or Parquet files,
a folder or a glob of them.

Parquet is read a few columns at a time (and a column too large for the memory budget
a few rows at a time), so a batch larger than memory is never loaded whole. CSV has no
columns to seek to, so CSV batches are loaded into memory.
"""

from __future__ import annotations

import csv
import glob
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data import first_line

__all__ = ["Batch", "DriftInputError", "open_batch"]

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")


class DriftInputError(ValueError):
    """Bad input to the drift check; the message says what was wrong and what to do."""


@dataclass
class Batch:
    """A batch of rows, read column group by column group.

    ``column_groups`` yields mappings from column name to a pandas Series holding all rows
    of that column; in memory there is one group, the whole frame. ``rows_of`` yields one
    column in row chunks, for a column that does not fit the budget on its own.
    """

    label: str  # what the batch is, for messages and reports
    columns: list[str]
    dtypes: dict[str, Any]  # pandas dtype of each column as it will be read
    rows: int
    _frame: pd.DataFrame | None = None
    _files: list[Path] = field(default_factory=list)  # Parquet files with the same columns
    _column_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        return self._frame is not None

    @property
    def frame(self) -> pd.DataFrame:
        """The whole batch, for a batch held in memory."""
        if self._frame is None:
            raise ValueError(f"{self.label} is read from Parquet in column groups, not held in memory")
        return self._frame

    def column_bytes(self, name: str) -> int:
        """Estimated bytes of one column once read (exact for an in-memory frame)."""
        return self._column_bytes[name]

    def column_groups(self, names: Sequence[str], budget_bytes: int) -> Iterator[Mapping[str, pd.Series]]:
        """Yield the named columns in groups of at most ``budget_bytes`` (at least one column each)."""
        if self._frame is not None:
            yield self._frame
            return
        for group in _pack(names, self._column_bytes, budget_bytes):
            tables = [self._read(path, lambda file: file.read(columns=group)) for path in self._files]
            columns = {}
            for name in group:  # release each Arrow column once converted: the group is never held twice
                pieces = [piece for table in tables for piece in table.column(name).chunks]
                column = pa.chunked_array(pieces, type=tables[0].schema.field(name).type)
                columns[name] = _arrow_to_series(column, name)
                tables = [table.drop_columns([name]) for table in tables]
            del tables
            yield columns
            del columns

    def rows_of(self, name: str, budget_bytes: int) -> Iterator[pd.Series]:
        """Yield one column in consecutive row chunks of about ``budget_bytes``."""
        if self._frame is not None:
            yield self._frame[name]
            return
        bytes_per_row = max(1, self._column_bytes[name] // max(1, self.rows))
        chunk_rows = max(1, budget_bytes // bytes_per_row)
        for path in self._files:
            batches = self._read(path, lambda file: file.iter_batches(batch_size=chunk_rows, columns=[name]))
            for record_batch in batches:
                yield _arrow_to_series(record_batch.column(0), name)

    def _read(self, path: Path, read):
        try:
            # Without pre-buffering, pyarrow decodes page by page instead of first copying
            # every column chunk of the group into memory.
            return read(pq.ParquetFile(path, pre_buffer=False))
        except (OSError, pa.ArrowException, KeyError) as error:
            raise DriftInputError(f"could not read {path} of the {self.label}: {error}; check that it is a "
                                  "complete Parquet file with the same columns as the others") from error


def open_batch(source: pd.DataFrame | str | Path, *, role: str = "current batch") -> Batch:
    """Open a DataFrame, a CSV or Parquet file, a folder of them or a glob, as a Batch."""
    if isinstance(source, pd.DataFrame):
        return _frame_batch(source, f"{role} (DataFrame)")
    if not isinstance(source, (str, Path)):
        raise DriftInputError(f"the {role} must be a DataFrame or a path, not {type(source).__name__}")
    files = _files_of(str(source), role)
    label = f"{role} {source}"
    if all(_is_parquet(path) for path in files):
        return _parquet_batch(files, label)
    frames = [_read_parquet_whole(path, role) if _is_parquet(path) else _read_csv(path, role) for path in files]
    try:
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    except (TypeError, ValueError) as error:
        raise DriftInputError(f"the files of the {role} do not fit together: {error}") from error
    return _frame_batch(frame, label)


def _frame_batch(frame: pd.DataFrame, label: str) -> Batch:
    names = [str(name) for name in frame.columns]
    if len(set(names)) != len(names):
        raise DriftInputError(f"the {label} has repeated column names; make them unique")
    if names != list(frame.columns):
        frame = frame.set_axis(names, axis=1)
    sizes = {name: int(frame[name].memory_usage(index=False, deep=False)) for name in names}
    return Batch(label, names, dict(frame.dtypes.items()), len(frame), _frame=frame, _column_bytes=sizes)


def _parquet_batch(files: list[Path], label: str) -> Batch:
    uncompressed: dict[str, int] = {}
    rows, schema = 0, None
    for path in files:  # reading each footer catches truncated and non-Parquet files early
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as error:
            raise DriftInputError(f"could not read {path} ({error}); it is not a complete Parquet file. "
                                  "Write it again or leave it out of the batch") from error
        if schema is None:
            schema = parquet.schema_arrow
        elif set(parquet.schema_arrow.names) != set(schema.names):
            raise DriftInputError(f"{path} does not have the columns of {files[0]}; the files of one batch "
                                  "must share their columns")
        metadata = parquet.metadata
        rows += metadata.num_rows
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for index in range(row_group.num_columns):
                chunk = row_group.column(index)
                name = chunk.path_in_schema
                uncompressed[name] = uncompressed.get(name, 0) + chunk.total_uncompressed_size
    dtypes = {str(name): dtype for name, dtype in schema.empty_table().to_pandas().dtypes.items()}
    sizes = {}
    for name, dtype in dtypes.items():
        itemsize = 8 if getattr(dtype, "kind", "O") in "iub" else getattr(dtype, "itemsize", 8)
        sizes[name] = max(rows * itemsize, int(uncompressed.get(name, 0) * 1.2))
    return Batch(label, list(dtypes), dtypes, rows, _files=list(files), _column_bytes=sizes)


def _arrow_to_series(column: pa.ChunkedArray | pa.Array, name: str) -> pd.Series:
    """A pandas Series of the column; float columns without nulls share Arrow's memory."""
    if isinstance(column, pa.ChunkedArray) and pa.types.is_floating(column.type):
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if array.null_count == 0:
            return pd.Series(array.to_numpy(zero_copy_only=True), name=name, copy=False)
        column = array
    return column.to_pandas(types_mapper=_TEXT_AS_ARROW).rename(name)


def _pack(names: Sequence[str], sizes: Mapping[str, int], budget: int) -> Iterator[list[str]]:
    group: list[str] = []
    used = 0
    for name in names:
        if group and used + sizes[name] > budget:
            yield group
            group, used = [], 0
        group.append(name)
        used += sizes[name]
    if group:
        yield group


def _files_of(source: str, role: str) -> list[Path]:
    if any(char in source for char in "*?["):
        files = sorted(Path(match) for match in glob.glob(source, recursive=True) if Path(match).is_file())
        if not files:
            raise DriftInputError(f"no file matches the {role} pattern {source!r}")
        return files
    path = Path(source)
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if child.is_file() and _is_data_file(child))
        if not files:
            raise DriftInputError(f"the {role} folder {path} holds no .csv or .parquet file")
        return files
    if not path.exists():
        raise DriftInputError(f"the {role} {path} does not exist")
    if not _is_data_file(path):
        raise DriftInputError(f"the {role} {path} is neither CSV nor Parquet (judging by its name); "
                              "give a .csv or .parquet file")
    return [path]


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(_PARQUET_SUFFIXES)


def _is_data_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(_PARQUET_SUFFIXES) or name.endswith(_CSV_SUFFIXES)


def _arrow_strings(arrow_type: pa.DataType) -> Any:
    """Keep text columns in Arrow memory (pandas 3 does by default; pandas 2 would make Python objects).

    Counting categories of Arrow strings releases the GIL and runs about three times as fast
    as hashing a million Python ``str`` objects.
    """
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


_TEXT_AS_ARROW = _arrow_strings if int(pd.__version__.split(".")[0]) < 3 else None


def _read_parquet_whole(path: Path, role: str) -> pd.DataFrame:
    try:
        if _TEXT_AS_ARROW is None:
            return pd.read_parquet(path)
        return pq.read_table(path).to_pandas(types_mapper=_TEXT_AS_ARROW)
    except (OSError, pa.ArrowException) as error:
        raise DriftInputError(f"could not read the {role} file {path} ({error}); it is not a complete "
                              "Parquet file") from error


def _read_csv(path: Path, role: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as error:
        raise DriftInputError(f"the {role} file {path} is empty; it needs a header row and data rows") from error
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as error:
        raise DriftInputError(f"could not read the {role} file {path} as CSV ({first_line(error)}); "
                              "check that it is a complete, comma-separated file") from error
    if path.name.lower().endswith(".csv") and _looks_truncated(path, frame.shape[1]):
        raise DriftInputError(f"the {role} file {path} looks truncated: its last line is cut short and "
                              "does not end with a newline; copy the file again")
    return frame


def _looks_truncated(path: Path, header_fields: int) -> bool:
    """A last line without newline and with fewer fields than the header was cut off mid-write."""
    with path.open("rb") as handle:
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65_536))
        tail = handle.read()
    if not tail or tail.endswith(b"\n"):
        return False
    last_line = tail.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace")
    fields = next(csv.reader([last_line]), [])
    return len(fields) < header_fields


