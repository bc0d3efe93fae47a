"""Labelled production data: labelled batches, late label files joined by id, the window, bad input."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.production import (
    BATCH_COLUMN,
    LABEL_SOURCE_COLUMN,
    OBSERVED_AT_COLUMN,
    check_labels,
    read_labelled_production,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    batches, labels = tmp_path / "batches", tmp_path / "labels"
    batches.mkdir()
    labels.mkdir()
    return batches, labels


def rows(prefix: str, count: int, *, labels: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "row_id": [f"{prefix}-{i}" for i in range(count)],
        "x1": rng.normal(size=count),
        "colour": rng.choice(["red", "blue"], size=count),
    })
    if labels:
        frame["label"] = np.where(frame["x1"] > 0, "yes", "no")
    return frame


def write(frame: pd.DataFrame, path: Path, *, days_ago: float) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    moment = (NOW - timedelta(days=days_ago)).timestamp()
    os.utime(path, (moment, moment))
    return path


def read(batches: Path, labels: Path, **options) -> object:
    return read_labelled_production(batches, labels, target="label", id_column=options.pop("id_column", "row_id"),
                                    now=NOW, **options)


def problem_about(result, name: str) -> str:
    found = [line for line in result.problems if name in line]
    assert len(found) == 1, result.problems
    return found[0]


def test_a_labelled_batch_gives_its_rows_observed_when_the_file_was_written(folders):
    batches, labels = folders
    write(rows("a", 5), batches / "batch-001.csv", days_ago=3)
    write(rows("b", 4, seed=1), batches / "batch-002.parquet", days_ago=1)
    write(rows("c", 6, labels=False), batches / "batch-003.csv", days_ago=0.5)  # unlabelled: not training data

    result = read(batches, labels)

    assert result.problems == () and result.unmatched_labels == 0
    assert len(result.frame) == 9
    assert list(result.frame[BATCH_COLUMN]) == ["batch-001.csv"] * 5 + ["batch-002.parquet"] * 4
    assert result.frame[OBSERVED_AT_COLUMN].iloc[0] == pd.Timestamp(NOW - timedelta(days=3))
    assert result.frame[OBSERVED_AT_COLUMN].is_monotonic_increasing
    assert set(result.frame[LABEL_SOURCE_COLUMN]) == {""}  # every label came with its batch
    assert [(s.kind, s.path, s.rows) for s in result.sources] == [("batch", "batch-001.csv", 5),
                                                                    ("batch", "batch-002.parquet", 4)]
    assert all(s.fingerprint.startswith("sha256:") for s in result.sources)
    assert result.sources[0].columns == ("row_id", "x1", "colour", "label")
    assert {name: len(part) for name, part in result.by_batch().items()} == {"batch-001.csv": 5, "batch-002.parquet": 4}


def test_late_labels_are_joined_to_earlier_batches_by_id(folders):
    batches, labels = folders
    batch = rows("a", 10)
    write(batch.drop(columns=["label"]), batches / "batch-001.csv", days_ago=5)
    write(batch[["row_id", "label"]].iloc[:6], labels / "confirmed.csv", days_ago=1)

    result = read(batches, labels)

    assert result.problems == () and result.unmatched_labels == 0
    assert list(result.frame["row_id"]) == list(batch["row_id"].iloc[:6])
    assert list(result.frame["label"]) == list(batch["label"].iloc[:6])
    assert set(result.frame[LABEL_SOURCE_COLUMN]) == {"confirmed.csv"}
    # The rows were observed when the batch was written, not when their labels came.
    assert (result.frame[OBSERVED_AT_COLUMN] == pd.Timestamp(NOW - timedelta(days=5))).all()
    assert [(s.kind, s.path, s.rows) for s in result.sources] == [("batch", "batch-001.csv", 6),
                                                                    ("labels", "confirmed.csv", 6)]


def test_a_label_file_overrides_the_label_in_the_batch_and_says_so(folders):
    batches, labels = folders
    batch = rows("a", 4)
    write(batch, batches / "batch-001.csv", days_ago=2)
    flipped = batch[["row_id", "label"]].iloc[:1].assign(label=lambda f: np.where(f["label"] == "yes", "no", "yes"))
    write(flipped, labels / "corrections.csv", days_ago=1)

    result = read(batches, labels)

    assert result.frame.loc[0, "label"] == flipped["label"].iloc[0]
    assert result.frame.loc[0, LABEL_SOURCE_COLUMN] == "corrections.csv"
    assert "label different from the one in their batch; the label file wins" in problem_about(result, "corrections.csv")


def test_labels_matching_no_batch_are_counted_reported_and_joined_once_the_batch_arrives(folders):
    batches, labels = folders
    write(rows("a", 3).drop(columns=["label"]), batches / "batch-001.csv", days_ago=3)
    write(pd.DataFrame({"row_id": ["a-0", "later-1", "later-2"], "label": ["yes", "no", "yes"]}),
          labels / "labels.csv", days_ago=1)

    first = read(batches, labels)
    assert first.unmatched_labels == 2 and len(first.frame) == 1
    line = problem_about(first, "labels.csv")
    assert str(labels / "labels.csv") in line and "2 label(s) match no batch row yet" in line and "later-1" in line

    write(rows("later", 3).drop(columns=["label"]), batches / "batch-002.csv", days_ago=0.5)
    second = read(batches, labels)
    assert second.unmatched_labels == 0 and second.problems == ()
    assert sorted(second.frame["row_id"]) == ["a-0", "later-1", "later-2"]


def test_an_id_labelled_differently_by_two_files_takes_the_newest_files_label(folders):
    batches, labels = folders
    write(rows("a", 2).drop(columns=["label"]), batches / "batch-001.csv", days_ago=5)
    write(pd.DataFrame({"row_id": ["a-0", "a-1"], "label": ["yes", "no"]}), labels / "first.csv", days_ago=3)
    write(pd.DataFrame({"row_id": ["a-0"], "label": ["no"]}), labels / "second.csv", days_ago=1)

    result = read(batches, labels)

    assert dict(zip(result.frame["row_id"], result.frame["label"], strict=True)) == {"a-0": "no", "a-1": "no"}
    line = problem_about(result, "second.csv")
    assert "relabels 1 id(s) that 'first.csv' labelled differently" in line and "the newest file wins" in line


def test_an_id_with_two_labels_in_one_file_is_dropped_and_reported(folders):
    batches, labels = folders
    write(rows("a", 3).drop(columns=["label"]), batches / "batch-001.csv", days_ago=5)
    write(pd.DataFrame({"row_id": ["a-0", "a-0", "a-1", "a-1", "a-2"], "label": ["yes", "no", "no", "no", "yes"]}),
          labels / "labels.csv", days_ago=1)

    result = read(batches, labels)

    assert sorted(result.frame["row_id"]) == ["a-1", "a-2"]  # a repeated identical label is no conflict
    assert "1 id(s) have two different labels in this file (e.g. 'a-0')" in problem_about(result, "labels.csv")


def test_a_label_file_without_the_id_column_is_reported_and_the_others_still_used(folders):
    batches, labels = folders
    write(rows("a", 3).drop(columns=["label"]), batches / "batch-001.csv", days_ago=5)
    write(pd.DataFrame({"id": ["a-0"], "label": ["yes"]}), labels / "wrong.csv", days_ago=2)
    write(pd.DataFrame({"row_id": ["a-1"], "label": ["no"]}), labels / "right.csv", days_ago=1)

    result = read(batches, labels)

    assert list(result.frame["row_id"]) == ["a-1"]
    line = problem_about(result, "wrong.csv")
    assert str(labels / "wrong.csv") in line and "no 'row_id' column (it has: id, label)" in line
    assert "needs a header row with the columns row_id and label" in line


def test_label_files_without_an_id_column_in_the_project_say_to_set_one(folders):
    batches, labels = folders
    write(rows("a", 3), batches / "batch-001.csv", days_ago=5)
    write(pd.DataFrame({"row_id": ["a-0"], "label": ["no"]}), labels / "labels.csv", days_ago=1)

    result = read(batches, labels, id_column=None)

    assert len(result.frame) == 3  # the labelled batch is still used
    assert len(result.problems) == 1
    assert "the project has no id column; set [data] id_column" in result.problems[0]
    assert "labels.csv" in result.problems[0]


@pytest.mark.parametrize("content", ["", "row_id,label\n"])
def test_an_empty_label_file_is_reported(folders, content):
    batches, labels = folders
    write(rows("a", 2), batches / "batch-001.csv", days_ago=5)
    (labels / "empty.csv").write_text(content)

    result = read(batches, labels)

    assert len(result.frame) == 2
    line = problem_about(result, "empty.csv")
    assert "empty" in line or "has no rows" in line
    assert "needs a header row with the columns row_id and label" in line


def test_text_labels_for_a_numeric_target_are_reported_and_the_numbers_kept(folders):
    batches, labels = folders
    write(rows("a", 3, labels=False), batches / "batch-001.csv", days_ago=5)
    write(pd.DataFrame({"row_id": ["a-0", "a-1", "a-2"], "label": ["1.5", "lots", "2"]}), labels / "scores.csv",
          days_ago=1)

    result = read(batches, labels, numeric_target=True)

    assert dict(zip(result.frame["row_id"], result.frame["label"], strict=True)) == {"a-0": 1.5, "a-2": 2.0}
    line = problem_about(result, "scores.csv")
    assert "1 label(s) are not numbers ('lots') but the target is numeric" in line


def test_unknown_classes_are_reported_when_the_classes_are_known(folders):
    batches, labels = folders
    write(rows("a", 3, labels=False), batches / "batch-001.csv", days_ago=5)
    write(pd.DataFrame({"row_id": ["a-0", "a-1", "a-2"], "label": ["yes", "maybe", "no"]}), labels / "l.csv", days_ago=1)

    result = read(batches, labels, classes=["no", "yes"])

    assert sorted(result.frame["row_id"]) == ["a-0", "a-2"]
    assert "are not classes the model knows ('maybe'; known: no, yes)" in problem_about(result, "l.csv")


def test_a_labelled_batch_whose_target_has_the_wrong_type_is_reported_and_its_good_rows_kept(folders):
    batches, labels = folders
    frame = rows("a", 4, labels=False).assign(label=["1", "2", "n/a?", "3"])
    write(frame, batches / "batch-001.csv", days_ago=2)
    write(rows("b", 2, labels=False).assign(label=[0.5, 1.5]), batches / "batch-002.csv", days_ago=1)

    result = read(batches, labels, numeric_target=True)

    assert list(result.frame["row_id"]) == ["a-0", "a-1", "a-3", "b-0", "b-1"]
    assert result.frame["label"].tolist() == [1.0, 2.0, 3.0, 0.5, 1.5]
    line = problem_about(result, "batch-001.csv")
    assert "1 value(s) of the target column 'label' are not numbers ('n/a?')" in line


def test_class_labels_written_as_numbers_in_one_file_and_text_in_another_become_the_classes():
    checked = check_labels(pd.Series(["1", "0", "2"]), classes=[0, 1])
    assert checked.bad.tolist() == [False, False, True]
    assert checked.values.tolist()[:2] == [1, 0]
    assert check_labels(pd.Series([1.0, np.nan]), classes=[0, 1]).bad.tolist() == [False, False]


def test_a_batch_that_cannot_be_read_is_reported_and_the_others_still_used(folders):
    batches, labels = folders
    (batches / "batch-001.parquet").write_bytes(b"not parquet at all")
    write(rows("b", 3), batches / "batch-002.csv", days_ago=1)

    result = read(batches, labels)

    assert len(result.frame) == 3
    assert "batch-001.parquet: cannot be read" in problem_about(result, "batch-001.parquet")


def test_the_window_leaves_out_rows_older_than_max_age_days(folders):
    batches, labels = folders
    write(rows("old", 3), batches / "batch-001.csv", days_ago=40)
    write(rows("new", 2), batches / "batch-002.csv", days_ago=10)

    result = read(batches, labels, max_age_days=30)

    assert list(result.frame["row_id"]) == ["new-0", "new-1"]
    assert [s.path for s in result.sources] == ["batch-002.csv"]
    assert result.problems == ()


def test_a_window_that_selects_no_row_says_which_setting_to_widen(folders):
    batches, labels = folders
    write(rows("old", 3), batches / "batch-001.csv", days_ago=40)

    result = read(batches, labels, max_age_days=7)

    assert result.frame.empty and result.sources == ()
    line = problem_about(result, "max_age_days")
    assert "no labelled production row is inside the window" in line and "'batch-001.csv'" in line
    assert "widen max_age_days" in line


def test_labels_for_an_expired_batch_are_not_counted_as_unmatched(folders):
    batches, labels = folders
    write(rows("old", 2).drop(columns=["label"]), batches / "batch-001.csv", days_ago=40)
    write(pd.DataFrame({"row_id": ["old-0"], "label": ["yes"]}), labels / "labels.csv", days_ago=1)

    result = read(batches, labels, max_age_days=7)

    assert result.unmatched_labels == 0 and result.frame.empty
    assert "widen max_age_days" in problem_about(result, "max_age_days")


def test_the_window_keeps_the_newest_max_rows(folders):
    batches, labels = folders
    write(rows("a", 4), batches / "batch-001.csv", days_ago=3)
    write(rows("b", 3, seed=1), batches / "batch-002.csv", days_ago=2)

    result = read(batches, labels, max_rows=5)

    assert list(result.frame["row_id"]) == ["a-2", "a-3", "b-0", "b-1", "b-2"]
    assert [(s.path, s.rows) for s in result.sources] == [("batch-001.csv", 2), ("batch-002.csv", 3)]


def test_rows_are_de_duplicated_by_id_keeping_the_newest(folders):
    batches, labels = folders
    write(rows("a", 3), batches / "batch-001.csv", days_ago=3)
    rescored = rows("a", 1, seed=7).assign(label="yes")
    write(rescored, batches / "batch-002.csv", days_ago=1)

    result = read(batches, labels)

    assert list(result.frame["row_id"]) == ["a-1", "a-2", "a-0"]
    assert result.frame.iloc[-1]["x1"] == pytest.approx(rescored["x1"].iloc[0])
    assert result.frame.iloc[-1][BATCH_COLUMN] == "batch-002.csv"


def test_fingerprints_follow_the_content_not_the_file(folders):
    batches, labels = folders
    write(rows("a", 5), batches / "batch-001.csv", days_ago=3)
    first = read(batches, labels)
    write(rows("a", 5), batches / "batch-001.parquet", days_ago=3)
    (batches / "batch-001.csv").unlink()
    again = read(batches, labels)
    write(rows("a", 5).assign(label="yes"), batches / "batch-001.parquet", days_ago=3)
    changed = read(batches, labels)

    assert first.sources[0].fingerprint == again.sources[0].fingerprint  # CSV or Parquet, the same rows
    assert changed.sources[0].fingerprint != first.sources[0].fingerprint


def test_missing_folders_and_hidden_files_give_no_rows_and_no_problems(tmp_path):
    assert read(tmp_path / "nowhere", tmp_path / "neither").frame.empty
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / ".batch-001.csv").write_text("half a fi")  # still being written
    result = read(tmp_path / "batches", tmp_path / "labels")
    assert result.frame.empty and result.problems == () and result.sources == ()
