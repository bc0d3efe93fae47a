"""The training table: the schema contract, the project's data plus labelled production rows, the split."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from pipeline.data import (
    Columns,
    DataError,
    assemble_training_data,
    column_types,
    fingerprint,
    load_dataset,
    read_columns,
    row_hashes,
    split_dataset,
    split_for_validation,
)
from pipeline.production import read_labelled_production
from pipeline.spec import load_project
from tests.conftest import TINY_TOML, tiny_frame, write_project

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WITH_IDS = TINY_TOML.replace('target = "label"', 'target = "label"\nid_column = "row_id"')


def with_ids(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return frame.assign(row_id=[f"{prefix}-{i}" for i in range(len(frame))])


def project(tmp_path: Path, toml: str = WITH_IDS, frame: pd.DataFrame | None = None):
    frame = with_ids(tiny_frame(200), "t") if frame is None else frame
    return load_project(write_project(tmp_path / "project", toml, frame))


def write_batch(folder: Path, name: str, frame: pd.DataFrame, *, days_ago: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    moment = (NOW - timedelta(days=days_ago)).timestamp()
    os.utime(path, (moment, moment))
    return path


def production(tmp_path: Path, **options):
    return read_labelled_production(tmp_path / "batches", tmp_path / "labels", target="label",
                                    id_column=options.pop("id_column", "row_id"), now=NOW, **options)


# --- the schema contract -------------------------------------------------------------------------


def test_text_in_a_numeric_column_is_an_error_naming_the_column_and_the_values(tmp_path):
    frame = tiny_frame(100).astype({"x2": object})
    frame.loc[[3, 17], "x2"] = ["n/a?", "twelve"]
    spec = project(tmp_path, TINY_TOML, frame)

    with pytest.raises(DataError) as caught:
        load_dataset(spec.data, spec.root)

    message = str(caught.value)
    assert "column 'x2' holds numbers but also text" in message
    assert "'n/a?'" in message and "'twelve'" in message
    assert 'fix these values, or declare the column in [data] categorical = ["x2"]' in message
    assert str(spec.root / "data.csv") in message


def test_a_column_declared_categorical_is_accepted_and_read_as_text(tmp_path):
    frame = tiny_frame(100).assign(grade=lambda f: np.where(f["x1"] > 0, "3", "K"))
    frame.loc[frame["x1"] > 1, "grade"] = "4"
    toml = TINY_TOML.replace('target = "label"', 'target = "label"\ncategorical = ["grade"]')
    dataset = load_dataset(project(tmp_path, toml, frame).data, tmp_path / "project")
    assert set(dataset.features["grade"]) == {"3", "4", "K"}
    last = dataset.schema.to_list()[-1]
    assert (last["name"], last["kind"]) == ("grade", "categorical")


def test_numbers_in_a_categorical_column_become_text_written_alike(tmp_path):
    frame = tiny_frame(100).assign(store=lambda f: np.where(f["x1"] > 0, 7, 12))
    toml = TINY_TOML.replace('target = "label"', 'target = "label"\ncategorical = ["store"]')
    dataset = load_dataset(project(tmp_path, toml, frame).data, tmp_path / "project")
    assert set(dataset.features["store"]) == {"7", "12"}
    assert dataset.schema.to_list()[-1]["kind"] == "categorical"


def test_a_text_column_of_categories_is_no_error(tmp_path):
    dataset = load_dataset(project(tmp_path, TINY_TOML, tiny_frame(100)).data, tmp_path / "project")
    assert list(dataset.features.columns) == ["x1", "x2", "colour"]


def test_the_id_column_is_never_a_feature(tmp_path):
    dataset = assemble_training_data(project(tmp_path), None)
    assert "row_id" not in dataset.features.columns
    assert list(dataset.features.columns) == ["x1", "x2", "colour"]


# --- the project's data plus labelled production rows --------------------------------------------


def test_without_production_the_table_is_the_projects_data(tmp_path):
    spec = project(tmp_path)
    alone = assemble_training_data(spec, None)
    loaded = load_dataset(spec.data, spec.root)
    assert alone.fingerprint == loaded.fingerprint and len(alone.features) == 200
    assert alone.observed_at is None and not alone.production_rows.any()
    assert alone.sources == ({"kind": "training", "path": "data.csv", "rows": 200,
                              "fingerprint": alone.sources[0]["fingerprint"]},)
    assert alone.fingerprint == assemble_training_data(spec, production(tmp_path)).fingerprint  # no batches yet


def test_labelled_production_rows_join_the_table_and_are_listed_as_sources(tmp_path):
    spec = project(tmp_path)
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(30, seed=1), "b1"), days_ago=3)
    late = with_ids(tiny_frame(20, seed=2), "b2")
    write_batch(tmp_path / "batches", "batch-002.csv", late.drop(columns=["label"]), days_ago=2)
    write_batch(tmp_path / "labels", "late.csv", late[["row_id", "label"]], days_ago=1)

    dataset = assemble_training_data(spec, production(tmp_path))

    assert len(dataset.features) == 250 and dataset.problems == ()
    assert int(dataset.production_rows.sum()) == 50
    assert dataset.observed_at.iloc[:200].isna().all()
    assert dataset.observed_at.iloc[200] == pd.Timestamp(NOW - timedelta(days=3))
    assert [(s["kind"], s["path"], s["rows"]) for s in dataset.sources] == [
        ("training", "data.csv", 200), ("batch", "batch-001.csv", 30), ("batch", "batch-002.csv", 20),
        ("labels", "late.csv", 20)]
    assert dataset.target.iloc[230:].tolist() == late["label"].tolist()


def test_the_fingerprint_changes_with_new_labelled_rows_and_stays_when_nothing_is_new(tmp_path):
    spec = project(tmp_path)
    before = assemble_training_data(spec, production(tmp_path)).fingerprint
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(30, seed=1), "b1"), days_ago=3)
    with_rows = assemble_training_data(spec, production(tmp_path)).fingerprint
    write_batch(tmp_path / "batches", "batch-002.csv", with_ids(tiny_frame(5, seed=2), "b2").drop(columns=["label"]),
                days_ago=1)  # unlabelled: nothing new to learn from
    again = assemble_training_data(spec, production(tmp_path)).fingerprint

    assert before != with_rows
    assert again == with_rows
    # The table's fingerprint is that of its rows: the same as hashing the assembled table whole.
    dataset = assemble_training_data(spec, production(tmp_path))
    table = dataset.features.assign(label=dataset.target, row_id=pd.concat(
        [with_ids(tiny_frame(200), "t")["row_id"], with_ids(tiny_frame(30, seed=1), "b1")["row_id"]],
        ignore_index=True))
    assert fingerprint(table) == dataset.fingerprint


def test_a_production_row_replaces_the_projects_row_with_the_same_id(tmp_path):
    spec = project(tmp_path)
    relabelled = with_ids(tiny_frame(200), "t").iloc[[5]].assign(label="yes", x1=9.5)
    write_batch(tmp_path / "batches", "batch-001.csv", relabelled, days_ago=1)

    dataset = assemble_training_data(spec, production(tmp_path))

    assert len(dataset.features) == 200
    assert dataset.features["x1"].iloc[-1] == 9.5 and dataset.production_rows[-1]
    assert not (dataset.features["x1"].iloc[:-1] == 9.5).any()
    assert [(s["kind"], s["rows"]) for s in dataset.sources] == [("training", 199), ("batch", 1)]


def test_keep_training_data_false_trains_on_production_rows_only(tmp_path):
    spec = project(tmp_path, WITH_IDS + "\n[retrain]\nkeep_training_data = false\n")
    without = assemble_training_data(spec, production(tmp_path))
    assert len(without.features) == 200  # no production rows yet: the project's data, and it says so
    assert "keep_training_data = false, but there are no labelled production rows" in without.problems[-1]

    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(30, seed=1), "b1"), days_ago=1)
    dataset = assemble_training_data(spec, production(tmp_path))
    assert len(dataset.features) == 30 and dataset.production_rows.all()
    assert dataset.files == () and [s["kind"] for s in dataset.sources] == ["batch"]


def test_include_production_false_leaves_production_out(tmp_path):
    spec = project(tmp_path, WITH_IDS + "\n[retrain]\ninclude_production = false\n")
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(30, seed=1), "b1"), days_ago=1)
    assert len(assemble_training_data(spec, production(tmp_path)).features) == 200


def test_a_batch_without_a_feature_column_is_left_out_with_a_reason(tmp_path):
    spec = project(tmp_path)
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(30, seed=1), "b1").drop(columns=["x2"]),
                days_ago=2)
    write_batch(tmp_path / "batches", "batch-002.csv", with_ids(tiny_frame(10, seed=2), "b2"), days_ago=1)

    dataset = assemble_training_data(spec, production(tmp_path))

    assert len(dataset.features) == 210
    line = next(line for line in dataset.problems if "batch-001.csv" in line)
    assert "lacks the training data's feature column(s) 'x2'" in line and "30 labelled rows are left out" in line


def test_production_labels_that_do_not_fit_the_training_target_are_left_out(tmp_path):
    spec = project(tmp_path)
    write_batch(tmp_path / "batches", "batch-001.csv",
                with_ids(tiny_frame(4, seed=1), "b1").assign(label=["yes", "no", "perhaps", "yes"]), days_ago=1)

    dataset = assemble_training_data(spec, production(tmp_path))

    assert len(dataset.features) == 203
    line = next(line for line in dataset.problems if "batch-001.csv" in line)
    assert "1 label(s) are not classes the model knows ('perhaps'; known: no, yes)" in line


def test_text_in_a_numeric_feature_of_a_batch_leaves_those_rows_out(tmp_path):
    spec = project(tmp_path)
    batch = with_ids(tiny_frame(5, seed=1), "b1").astype({"x1": object})
    batch.loc[2, "x1"] = "oops"
    write_batch(tmp_path / "batches", "batch-001.csv", batch, days_ago=1)

    dataset = assemble_training_data(spec, production(tmp_path))

    assert len(dataset.features) == 204 and dataset.features["x1"].dtype == np.float64
    line = next(line for line in dataset.problems if "batch-001.csv" in line)
    assert "column 'x1' holds text ('oops') where the training data has numbers; those 1 rows are left out" in line


def test_the_table_is_the_same_whether_the_files_are_parquet_or_csv(tmp_path):
    def assembled(suffix: str):
        folder = tmp_path / suffix
        frame = with_ids(tiny_frame(1000), "t")  # enough rows for Parquet to keep its text as a dictionary
        spec = load_project(write_project(folder / "project", WITH_IDS.replace("data.csv", f"data{suffix}"), frame,
                                          data_name=f"data{suffix}"))
        first = with_ids(tiny_frame(600, seed=1), "b1")
        # A newer row for the project's t-5 and one for b1-3, each of which replaces the older row.
        newer = pd.concat([frame.iloc[[5]].assign(label="yes", x1=9.5), first.iloc[[3]].assign(x1=7.25)])
        write_batch(folder / "batches", f"batch-001{suffix}", first, days_ago=3)
        write_batch(folder / "batches", f"batch-002{suffix}", newer, days_ago=2)
        late = with_ids(tiny_frame(20, seed=2), "b2")
        write_batch(folder / "batches", f"batch-003{suffix}", late.drop(columns=["label"]), days_ago=2)
        write_batch(folder / "labels", f"late{suffix}", late[["row_id", "label"]], days_ago=1)
        labelled = read_labelled_production(folder / "batches", folder / "labels", target="label",
                                            id_column="row_id", now=NOW, max_rows=610)
        return assemble_training_data(spec, labelled)

    parquet, csv = assembled(".parquet"), assembled(".csv")

    # 600 + 2 + 20 production rows, b1-3 once: the newest 610 of them; the project's t-5 replaced.
    assert parquet.problems == () and len(parquet.features) == 1000 - 1 + 610
    assert (parquet.features["x1"] == 7.25).sum() == 1 and (parquet.features["x1"] == 9.5).sum() == 1
    pd.testing.assert_frame_equal(parquet.features, csv.features)
    pd.testing.assert_series_equal(parquet.target, csv.target)
    pd.testing.assert_series_equal(parquet.observed_at, csv.observed_at)
    assert parquet.fingerprint == csv.fingerprint
    assert [(s["kind"], s["rows"], s["fingerprint"]) for s in parquet.sources] == [
        (s["kind"], s["rows"], s["fingerprint"]) for s in csv.sources]
    assert parquet.features["x1"].iloc[-21] == 7.25 and parquet.features["x1"].iloc[-22] == 9.5


def test_columns_read_from_parquet_hash_and_convert_as_pandas_reads_them(tmp_path):
    rng = np.random.default_rng(1)
    rows = 3000
    frame = pd.DataFrame({
        "f": rng.normal(size=rows), "f_missing": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(size=rows)),
        "i": rng.integers(0, 100, rows), "i32": rng.integers(0, 100, rows).astype(np.int32),
        "flag": rng.random(rows) < 0.5,
        "flag_missing": pd.Series(np.where(rng.random(rows) < 0.1, None, rng.random(rows) < 0.5), dtype=object),
        "text": pd.Series(np.where(rng.random(rows) < 0.1, None, rng.choice(["a", "b", "c"], rows)), dtype="str"),
        "category": pd.Categorical(rng.choice(["x", "y"], rows)),
        "moment": pd.date_range("2020-01-01", periods=rows, freq="s", tz="UTC"),
        "key": [f"id-{i}" for i in range(rows)],
    })
    frame.iloc[::7].to_parquet(tmp_path / "one.parquet", row_group_size=5)  # pandas writes its index too
    frame.to_parquet(tmp_path / "two.parquet", index=False, row_group_size=1000)
    one, two = read_columns(tmp_path / "one.parquet"), read_columns(tmp_path / "two.parquet")
    assert two.text == {"text"} and one.text == set()  # few distinct values in large enough row groups
    both = Columns.concat([one, two])
    as_pandas = pd.concat([pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")],
                          ignore_index=True)

    pd.testing.assert_frame_equal(both.frame(), as_pandas)  # the same values and dtypes, the index left out
    np.testing.assert_array_equal(row_hashes(both), row_hashes(as_pandas))
    assert column_types(both) == column_types(as_pandas)
    some = np.flatnonzero(rng.random(len(both)) < 0.3)
    np.testing.assert_array_equal(row_hashes(both.take(some)), row_hashes(as_pandas.iloc[some]))
    changed = frame.copy()
    changed.loc[1234, "text"] = "d"
    changed.to_parquet(tmp_path / "two.parquet", index=False, row_group_size=1000)
    assert (row_hashes(read_columns(tmp_path / "two.parquet")) != row_hashes(two)).sum() == 1


def test_rows_hashed_on_several_threads_across_files_are_those_hashed_whole(tmp_path):
    rng = np.random.default_rng(2)
    for number, rows in enumerate((150_000, 170_001)):
        frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.integers(0, 9, rows), "c": rng.random(rows) < 0.5})
        frame.to_parquet(tmp_path / f"{number}.parquet", index=False, row_group_size=40_000)
    both = Columns.concat([read_columns(tmp_path / "0.parquet"), read_columns(tmp_path / "1.parquet")])
    np.testing.assert_array_equal(row_hashes(both), row_hashes(both.frame()))


def test_files_whose_column_types_disagree_are_put_together_as_pandas_puts_them(tmp_path):
    pd.DataFrame({"n": [1, 2], "mixed": [1.5, 2.5], "text": ["a", "b"]}).to_parquet(tmp_path / "a.parquet", index=False)
    pd.DataFrame({"n": [0.5], "mixed": ["three"], "only": [True]}).to_parquet(tmp_path / "b.parquet", index=False)
    pd.DataFrame({"n": [7], "mixed": [4.0], "text": ["c"], "only": [False]}).to_csv(tmp_path / "c.csv", index=False)
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.csv"]

    both = Columns.concat([read_columns(path) for path in paths])

    expected = pd.concat([pd.read_parquet(paths[0]), pd.read_parquet(paths[1]), pd.read_csv(paths[2])],
                         ignore_index=True)
    pd.testing.assert_frame_equal(both.frame(), expected)
    assert both.frame()["mixed"].tolist() == [1.5, 2.5, "three", 4.0]
    np.testing.assert_array_equal(row_hashes(both), row_hashes(both.frame()))


# --- the split -----------------------------------------------------------------------------------


def test_without_production_rows_the_split_is_the_usual_one(tmp_path):
    spec = project(tmp_path, TINY_TOML, tiny_frame(200))
    dataset = load_dataset(spec.data, spec.root)

    split = split_for_validation(dataset, spec.data, stratify_labels=True)

    train_rows, test_rows = train_test_split(np.arange(200), test_size=40, random_state=42, stratify=dataset.target)
    pd.testing.assert_frame_equal(split.x_test, dataset.features.iloc[test_rows].reset_index(drop=True))
    pd.testing.assert_series_equal(split.y_train, dataset.target.iloc[train_rows].reset_index(drop=True))
    assert not split.recent.any() and len(split.recent) == 40
    old = split_dataset(dataset, spec.data, stratify_labels=True)
    pd.testing.assert_frame_equal(old[1], split.x_test)


def test_the_held_out_rows_include_the_newest_production_rows(tmp_path):
    spec = project(tmp_path)
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(30, seed=1), "old"), days_ago=5)
    write_batch(tmp_path / "batches", "batch-002.csv", with_ids(tiny_frame(20, seed=2), "new"), days_ago=1)
    dataset = assemble_training_data(spec, production(tmp_path))

    split = split_for_validation(dataset, spec.data, stratify_labels=True)
    again = split_for_validation(dataset, spec.data, stratify_labels=True)

    assert int(split.recent.sum()) == 10  # 20% of the 50 production rows, the newest
    newest = tiny_frame(20, seed=2).iloc[10:]
    np.testing.assert_allclose(np.sort(split.x_test["x1"][split.recent]), np.sort(newest["x1"]))
    assert not split.x_train["x1"].isin(newest["x1"]).any()  # never trained on a held-out row
    assert len(split.x_test) == 40 + 10 and len(split.x_train) == 160 + 40
    project_only = split_for_validation(assemble_training_data(spec, None), spec.data, stratify_labels=True)
    pd.testing.assert_frame_equal(split.x_test[~split.recent].reset_index(drop=True), project_only.x_test)
    pd.testing.assert_frame_equal(split.x_test, again.x_test)
    assert (split.recent == again.recent).all()


def test_one_production_row_is_still_held_out(tmp_path):
    spec = project(tmp_path)
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(2, seed=1), "b1"), days_ago=1)
    split = split_for_validation(assemble_training_data(spec, production(tmp_path)), spec.data, stratify_labels=True)
    assert int(split.recent.sum()) == 1


def test_a_time_split_orders_production_rows_by_when_they_were_observed(tmp_path):
    frame = with_ids(tiny_frame(100), "t").assign(day=pd.date_range("2025-01-01", periods=100, freq="D").astype(str))
    toml = WITH_IDS + '\n[data.split]\nmethod = "time"\ntime_column = "day"\ntest_fraction = 0.25\n'
    spec = project(tmp_path, toml, frame)
    write_batch(tmp_path / "batches", "batch-001.csv", with_ids(tiny_frame(20, seed=1), "b1"), days_ago=1)
    dataset = assemble_training_data(spec, production(tmp_path))

    split = split_for_validation(dataset, spec.data, stratify_labels=True)

    assert "day" not in split.x_test.columns
    assert len(split.x_test) == 30 and int(split.recent.sum()) == 20  # production is the newest
    np.testing.assert_allclose(split.x_test["x1"][~split.recent], frame["x1"].iloc[90:])


# --- fingerprints ----------------------------------------------------------------------------------


def test_row_hashes_of_parts_are_those_of_the_whole_and_any_change_shows():
    frame = tiny_frame(300).assign(n=np.arange(300), flag=lambda f: f["x1"] > 0)
    whole = row_hashes(frame)
    np.testing.assert_array_equal(np.concatenate([row_hashes(frame.iloc[:120]), row_hashes(frame.iloc[120:])]), whole)
    assert fingerprint(frame) == fingerprint(frame[list(reversed(frame.columns))])  # column order does not matter
    for column, value in (("x1", 0.125), ("colour", "purple"), ("n", -1), ("label", None)):
        changed = frame.copy()
        changed.loc[77, column] = value
        assert (row_hashes(changed) != whole).sum() == 1, column
        assert fingerprint(changed) != fingerprint(frame)
    swapped = frame.copy()
    swapped.loc[[3, 4]] = frame.loc[[4, 3]].to_numpy()
    assert fingerprint(swapped) != fingerprint(frame)  # row order is part of the content
