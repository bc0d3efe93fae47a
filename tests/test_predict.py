"""Scoring with a registered version: the training schema is the contract, ids and kept columns pass through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bot.cli import cli
from pipeline.data import DataError
from pipeline.package import package, write_descriptor
from pipeline.predict import predict_file, predict_frame
from pipeline.registry_port import RegistryPort
from pipeline.spec import ModelSpec
from pipeline.train import train
from tests.conftest import open_embedded_registry, tiny_frame

_FEATURES = ["x1", "x2", "colour"]


def _publish(registry: RegistryPort, project_root, *, id_column: str | None = "customer_id",
             features: list[str] = _FEATURES, frame: pd.DataFrame | None = None):
    """A real model of the tiny table, packaged and promoted as a pipeline run would leave it."""
    frame = tiny_frame(300) if frame is None else frame
    trained = train(ModelSpec(estimator="sklearn.linear_model.LogisticRegression"), frame[features],
                    frame["label"], seed=0, project_root=project_root)
    staging = registry.staging_dir()
    metadata = package(trained, staging, model_name="tiny", training_features=frame[features],
                       training_target=frame["label"])
    metadata |= {"trusted_types": [], "data": {"id_column": id_column, "target": "label"}}
    version = registry.publish("tiny", staging, metadata, run_id="run-test", finalize=write_descriptor)
    registry.promote("tiny", version.version, reason="test")
    return registry.get("tiny", version.version)


@pytest.fixture
def version(embedded_registry, tmp_path):
    return _publish(embedded_registry, tmp_path)


def _rows(count: int = 8, seed: int = 4) -> pd.DataFrame:
    rows = tiny_frame(count, seed=seed).drop(columns=["label"])
    return rows.assign(customer_id=[f"c-{n:03d}" for n in range(count)], region=["north", "south"] * (count // 2))


# --- text where the model learnt numbers ------------------------------------------------------


def test_text_in_a_numeric_column_names_the_column_the_first_bad_row_and_its_value(version, tmp_path):
    rows = _rows().astype({"x1": object})
    rows.loc[3, "x1"] = "12,5"
    rows.loc[6, "x1"] = "unknown"
    path = tmp_path / "batch.csv"
    rows.to_csv(path, index=False)

    with pytest.raises(DataError) as caught:
        predict_file(version, path)

    assert str(caught.value) == (
        "column 'x1' holds text where the model was trained on numbers (float64): row 4 has '12,5' "
        "(rows counted from 1 after the header), and 1 more row(s) like it; write a number there, or leave "
        "the cell empty for a missing value")
    # Row 4 counted after the header is the file's fifth line.
    assert path.read_text().splitlines()[4].startswith('"12,5"')


def test_empty_cells_in_a_numeric_column_are_missing_values_not_text(version, tmp_path):
    rows = _rows()
    rows.loc[2, "x2"] = None
    rows.to_csv(tmp_path / "batch.csv", index=False)

    scored = predict_file(version, tmp_path / "batch.csv")

    assert len(scored) == len(rows) and scored["prediction"].isin(["no", "yes"]).all()


def test_numbers_stored_as_text_are_read_as_numbers(version, tmp_path):
    rows = _rows()
    rows.loc[2, "x2"] = float("nan")  # written as the text "nan": a missing number, not text
    as_text = rows.assign(x1=rows["x1"].map(repr), x2=rows["x2"].map(repr))  # e.g. a Parquet export of strings
    assert as_text.loc[2, "x2"] == "nan"
    as_text.to_parquet(tmp_path / "batch.parquet", index=False)
    assert pd.read_parquet(tmp_path / "batch.parquet")["x1"].dtype != "float64"

    pd.testing.assert_frame_equal(predict_file(version, tmp_path / "batch.parquet"), predict_frame(version, rows))


def test_numbers_in_a_column_learnt_as_categories_are_read_as_those_categories(embedded_registry, tmp_path):
    frame = tiny_frame(300)
    # Zip codes held as text in training (as [data] categorical reads them); the label leans on them.
    frame["zip"] = np.where(frame["label"] == "yes", "1001", np.where(frame["x1"] > 0, "2040", "1002"))
    version = _publish(embedded_registry, tmp_path, features=[*_FEATURES, "zip"], frame=frame)
    rows = frame.drop(columns=["label"]).head(40)
    as_numbers = rows.assign(zip=rows["zip"].astype(float))  # how a reader types them once a value is missing
    as_numbers.loc[0, "zip"] = np.nan
    rows.loc[0, "zip"] = np.nan

    assert as_numbers["zip"].dtype == "float64"
    pd.testing.assert_frame_equal(predict_frame(version, as_numbers), predict_frame(version, rows))


# --- what passes through ------------------------------------------------------------------------


def test_the_id_column_comes_first_then_the_kept_columns(version):
    rows = _rows()

    scored = predict_frame(version, rows.iloc[::-1].reset_index(drop=True), keep=["region", "x1"])

    assert list(scored.columns) == ["customer_id", "region", "x1", "prediction", "probability_no", "probability_yes"]
    assert scored["customer_id"].tolist() == [f"c-{n:03d}" for n in range(7, -1, -1)]
    assert scored["region"].tolist() == rows["region"].tolist()[::-1]
    by_id = predict_frame(version, rows).set_index("customer_id")
    pd.testing.assert_series_equal(scored.set_index("customer_id")["probability_yes"],
                                   by_id.loc[scored["customer_id"], "probability_yes"])


def test_the_id_column_is_not_repeated_when_kept_and_skipped_when_absent(version):
    rows = _rows()
    kept = predict_frame(version, rows, keep=["customer_id"])
    assert list(kept.columns) == ["customer_id", "prediction", "probability_no", "probability_yes"]

    without_ids = predict_frame(version, rows.drop(columns=["customer_id"]))
    assert list(without_ids.columns) == ["prediction", "probability_no", "probability_yes"]


def test_a_version_without_an_id_column_passes_only_what_is_kept(embedded_registry, tmp_path):
    version = _publish(embedded_registry, tmp_path, id_column=None)
    assert list(predict_frame(version, _rows(), keep=["region"]).columns) == [
        "region", "prediction", "probability_no", "probability_yes"]


@pytest.mark.parametrize(("keep", "message"), [
    (["regoin", "segment"], "keep column(s) 'regoin', 'segment' not in the input; its columns are: "
                            "x1, x2, colour, customer_id, region"),
    (["prediction"], None),
])
def test_keep_columns_that_cannot_be_passed_through_are_named(version, keep, message):
    rows = _rows()
    if keep == ["prediction"]:
        rows = rows.assign(prediction="earlier")
        message = ("kept column(s) 'prediction' have the name of an output column; rename them in the input "
                   "or keep other columns")

    with pytest.raises(DataError) as caught:
        predict_frame(version, rows, keep=keep)

    assert str(caught.value) == message


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def cli_run(tmp_path, monkeypatch, tiny_project):
    """`mlops-bot` with the tiny project configured and its model in production."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(tiny_project))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    _publish(open_embedded_registry(tmp_path / "state"), tiny_project)  # where the bot's default registry is
    return lambda *args: CliRunner().invoke(cli, list(args))


def test_models_predict_keeps_the_id_and_the_asked_columns(cli_run, tmp_path):
    _rows().to_csv(tmp_path / "in.csv", index=False)

    result = cli_run("models", "predict", "--input", "in.csv", "--keep", "region", "--output", "out.csv")

    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["customer_id", "region", "prediction", "probability_no", "probability_yes"]
    assert out["customer_id"].tolist() == _rows()["customer_id"].tolist()


@pytest.mark.parametrize(("change", "args", "message"), [
    ("text", [], "error: column 'x2' holds text where the model was trained on numbers (float64): row 2 has "
                 "'n/a?' (rows counted from 1 after the header); write a number there, or leave the cell empty "
                 "for a missing value"),
    (None, ["--keep", "segment"], "error: keep column(s) 'segment' not in the input; its columns are: "
                                  "x1, x2, colour, customer_id, region"),
])
def test_models_predict_bad_input_is_one_line_and_exit_1(cli_run, tmp_path, change, args, message):
    rows = _rows()
    if change == "text":
        rows = rows.astype({"x2": object})
        rows.loc[1, "x2"] = "n/a?"
    rows.to_csv(tmp_path / "in.csv", index=False)

    result = cli_run("models", "predict", "--input", "in.csv", *args)

    # Exit 1 as for every other bad input file (missing column, unreadable file); 2 is for settings.
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message]
