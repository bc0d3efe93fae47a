"""Bad input: a clear one-line message or a finding in the report, never a crash."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.drift import DriftConfig, DriftInputError, check_drift
from pipeline.profile import build_reference_profile

_CONFIG = DriftConfig(multivariate=False)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = 3_000
    return pd.DataFrame({
        "age": rng.normal(40, 10, rows),
        "income": rng.lognormal(10, 1, rows),
        "plan": rng.choice(["basic", "plus", "pro"], rows),
    })


@pytest.fixture(scope="module")
def profile(reference):
    return build_reference_profile(reference, model="churn")


def _batch(rows: int = 1_000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 10, rows),
        "income": rng.lognormal(10, 1, rows),
        "plan": rng.choice(["basic", "plus", "pro"], rows),
    })


def _error(call) -> str:
    with pytest.raises(DriftInputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_empty_batch(profile):
    message = _error(lambda: check_drift(profile, _batch().iloc[:0], config=_CONFIG))
    assert "empty (0 rows)" in message


def test_empty_and_header_only_csv_files(profile, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in _error(lambda: check_drift(profile, tmp_path / "empty.csv", config=_CONFIG))
    (tmp_path / "header.csv").write_text("age,income,plan\n")
    assert "empty (0 rows)" in _error(lambda: check_drift(profile, tmp_path / "header.csv", config=_CONFIG))


def test_a_column_of_only_missing_values_is_a_finding(profile):
    batch = _batch()
    batch["age"] = np.nan
    batch["plan"] = None
    report = check_drift(profile, batch, config=_CONFIG)
    age, _, plan = report.features
    assert age.drifted and age.severity == "high" and age.test is None
    assert any("no finite value" in finding for finding in age.findings)
    assert any("missing values went from 0.0% to 100.0%" in finding for finding in age.findings)
    assert plan.drifted and plan.statistics["missing_rate"]["current"] == 1.0
    json.dumps(report.to_dict(), allow_nan=False)


def test_infinities_count_as_missing_and_are_reported(profile):
    batch = _batch()
    batch.loc[:99, "income"] = np.inf
    batch.loc[100:109, "income"] = -np.inf
    report = check_drift(profile, batch, config=_CONFIG)
    income = report.features[1]
    assert any("110 infinite values" in finding for finding in income.findings)
    assert income.current["missing_rate"] == pytest.approx(0.11)
    assert np.isfinite(income.statistic) and np.isfinite(income.statistics["wasserstein"]["value"])
    assert income.drifted  # 11% of values became unusable


def test_constant_columns_on_either_side(reference):
    constant_reference = reference.assign(age=5.0)
    profile = build_reference_profile(constant_reference, model="churn")
    same = check_drift(profile, _batch().assign(age=5.0), config=_CONFIG).features[0]
    assert not same.drifted and same.statistic == 0.0 and same.statistics["psi"]["value"] == 0.0
    varying = check_drift(profile, _batch(), config=_CONFIG).features[0]
    assert varying.drifted and varying.severity == "high"
    assert any("reference is constant" in finding for finding in varying.findings)
    assert varying.statistics["wasserstein"]["scale_basis"].startswith("reference is constant")
    batch_constant = check_drift(build_reference_profile(reference, model="churn"), _batch().assign(age=40.0),
                                 config=_CONFIG).features[0]
    assert batch_constant.drifted and batch_constant.current["std"] == 0.0


def test_a_column_whose_type_changed_is_high_drift_of_that_feature(profile):
    batch = _batch().assign(age=lambda frame: frame["age"].round().astype(int).astype(str) + " years")
    # One feature of three is below this share: the type change alone must make the verdict.
    report = check_drift(profile, batch, config=DriftConfig(multivariate=False, dataset_share=0.9))
    age = report.features[0]
    assert age.drifted and age.severity == "high"
    assert age.causes == ("type_changed",)
    assert age.findings == ("type changed: float64 → text",)
    assert [f.name for f in report.drifted_features] == ["age"]
    assert report.drifted and report.severity == "high"
    assert report.reasons == ("type changed: age (float64 → text)",)
    assert report.schema_changes["type_changes"][0]["name"] == "age"
    assert report.schema_changes["missing_columns"] == []
    assert not report.features[1].drifted and not report.features[2].drifted
    assert "- type changed: age (float64 → text)" in report.to_markdown()


def test_numbers_in_a_categorical_column_are_compared_as_categories():
    # Zip codes: text in training (as [data] categorical reads them), numbers as a CSV reader types them,
    # floats once a value is missing.
    rng = np.random.default_rng(3)
    zips = rng.choice([1001, 1002, 2040], 3_000)
    reference = pd.DataFrame({"zip": zips.astype(str), "age": rng.normal(40, 10, 3_000)})
    profile = build_reference_profile(reference, model="churn")
    same = pd.DataFrame({"zip": rng.choice([1001, 1002, 2040], 1_000).astype(float), "age": rng.normal(40, 10, 1_000)})
    same.loc[:9, "zip"] = np.nan

    report = check_drift(profile, same, config=_CONFIG)

    assert report.schema_changes["type_changes"] == [] and not report.drifted
    assert report.features[0].test == "chi2" and report.features[0].current["missing_rate"] == 0.01
    other_codes = check_drift(profile, same.assign(zip=3), config=_CONFIG)  # a real change still shows
    assert other_codes.features[0].causes == ("distribution",) and other_codes.features[0].severity == "high"


def test_an_ignored_feature_whose_type_changed_does_not_make_the_verdict(reference):
    config = DriftConfig(multivariate=False, per_feature={"age": {"ignore": True}})
    batch = _batch().assign(age="forty")
    report = check_drift(build_reference_profile(reference, model="churn"), batch, config=config)
    assert report.features[0].causes == ("type_changed",) and report.features[0].ignored
    assert not report.drifted and not any("type changed" in reason for reason in report.reasons)


def _fitted_model(reference: pd.DataFrame):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = make_column_transformer((StandardScaler(), ["age", "income"]), (OneHotEncoder(), ["plan"]))
    return make_pipeline(columns, LogisticRegression()).fit(reference, reference["age"] > 40)


def test_with_a_model_a_type_change_is_not_reported_as_missing_features(reference, profile):
    batch = _batch().assign(age="forty")
    report = check_drift(profile, batch, config=_CONFIG, model=_fitted_model(reference))
    assert report.drifted and report.features[0].causes == ("type_changed",)
    assert not any("lacks features" in note for note in report.notes)
    assert ("prediction and performance drift skipped: the model cannot score columns whose type changed: 'age'"
            in report.notes)


def test_missing_and_extra_columns_are_schema_findings(reference, profile):
    batch = _batch().drop(columns=["income"]).assign(coupon=1)
    report = check_drift(profile, batch, config=_CONFIG, model=_fitted_model(reference))
    assert report.schema_changes["missing_columns"] == ["income"]
    assert report.schema_changes["extra_columns"] == ["coupon"]
    assert report.schema_changes["type_changes"] == []
    income = report.features[1]
    assert income.drifted and income.findings == ("the column is missing from the batch",)
    assert income.causes == ("schema",)
    assert "prediction drift skipped: the batch lacks features the model needs: 'income'" in report.notes
    assert "`coupon`" in report.to_markdown()


def test_a_batch_of_one_row(profile):
    report = check_drift(profile, _batch(rows=1), config=DriftConfig())
    assert len(report.features) == 3
    assert all(0 <= f.p_value <= 1 for f in report.features)
    assert report.multivariate is None and any("domain classifier skipped" in note for note in report.notes)


def test_integer_and_nullable_columns_compare_with_floats(profile):
    batch = _batch()
    batch["age"] = batch["age"].round().astype("Int64")
    batch.loc[0, "age"] = pd.NA
    report = check_drift(profile, batch, config=_CONFIG)
    assert report.features[0].test == "ks" and not report.features[0].drifted


@pytest.mark.parametrize(("name", "content", "message"), [
    ("batch.parquet", b"PAR1 this is not really parquet", "not a complete Parquet file"),
    ("batch.csv", b"\xff\xfe\x00garbage\x00\x00", "could not read"),
    ("batch.txt", b"age\n1\n", "neither CSV nor Parquet"),
])
def test_unreadable_files(profile, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert message in _error(lambda: check_drift(profile, path, config=_CONFIG))


def test_truncated_files(profile, tmp_path):
    batch = _batch()
    parquet = tmp_path / "batch.parquet"
    batch.to_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:-200])
    assert "not a complete Parquet file" in _error(lambda: check_drift(profile, parquet, config=_CONFIG))
    csv = tmp_path / "batch.csv"
    text = batch.to_csv(index=False)
    csv.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 12])  # the last line cut mid-row
    assert "truncated" in _error(lambda: check_drift(profile, csv, config=_CONFIG))


def test_paths_that_lead_nowhere(profile, tmp_path):
    assert "does not exist" in _error(lambda: check_drift(profile, tmp_path / "nope.csv", config=_CONFIG))
    assert "holds no .csv or .parquet" in _error(lambda: check_drift(profile, tmp_path, config=_CONFIG))
    assert "no file matches" in _error(lambda: check_drift(profile, str(tmp_path / "*.parquet"), config=_CONFIG))


def test_a_profile_from_another_model(profile, tmp_path):
    message = _error(lambda: check_drift(profile, _batch(), model_name="fraud", config=_CONFIG))
    assert "belongs to model 'churn', not 'fraud'" in message
    unrelated = pd.DataFrame({"amount": [1.0, 2.0], "merchant": ["a", "b"]})
    assert "another model" in _error(lambda: check_drift(profile, unrelated, config=_CONFIG))


def test_a_profile_of_an_older_format(profile, tmp_path):
    profile.write(tmp_path)
    document = json.loads((tmp_path / "profile.json").read_text())
    document["format_version"] = 0
    (tmp_path / "profile.json").write_text(json.dumps(document))
    message = _error(lambda: check_drift(tmp_path, _batch(), config=_CONFIG))
    assert "format version 0" in message and "older" in message


def test_a_missing_target_column(profile):
    assert "target column 'churned'" in _error(lambda: check_drift(profile, _batch(), target="churned"))


def test_reference_may_be_data_instead_of_a_profile(reference, tmp_path):
    path = tmp_path / "reference.parquet"
    reference.to_parquet(path)
    from_frame = check_drift(reference, _batch(), config=_CONFIG)
    from_file = check_drift(path, _batch(), config=_CONFIG)
    from_groups = check_drift(path, _batch(), config=DriftConfig(multivariate=False, memory_budget_bytes=10_000))
    assert [f.statistic for f in from_frame.features] == [f.statistic for f in from_file.features]
    assert [f.statistic for f in from_frame.features] == [f.statistic for f in from_groups.features]
    assert "empty" in _error(lambda: check_drift(reference.iloc[:0], _batch(), config=_CONFIG))
