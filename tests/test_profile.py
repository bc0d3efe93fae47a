"""The reference profile: the kind rule, what it keeps, and how it is stored and read back."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.profile import (
    MAX_CATEGORIES,
    PROFILE_FORMAT_VERSION,
    ProfileError,
    ReferenceProfile,
    build_reference_profile,
    feature_kind,
    read_reference_profile,
)


def _reference(rows: int = 5_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 10, rows),
        "visits": rng.poisson(3, rows),
        "plan": rng.choice(["basic", "plus", "pro"], rows),
        "active": rng.random(rows) < 0.7,
        "score": rng.random(rows).astype(np.float32),
    })


@pytest.mark.parametrize(("dtype", "kind"), [
    (np.dtype("float64"), "numeric"),
    (np.dtype("float32"), "numeric"),
    (np.dtype("int64"), "numeric"),
    (pd.Int64Dtype(), "numeric"),
    (np.dtype("bool"), "categorical"),
    (pd.BooleanDtype(), "categorical"),
    (np.dtype("object"), "categorical"),
    (pd.StringDtype(), "categorical"),
    (pd.CategoricalDtype(["a", "b"]), "categorical"),
    (pd.CategoricalDtype([1, 2]), "categorical"),
])
def test_feature_kind_follows_the_shared_rule(dtype, kind):
    assert feature_kind(dtype) == kind


def test_profile_round_trips_through_its_files(tmp_path):
    reference = _reference()
    predictions = np.random.default_rng(1).random(len(reference))
    target = pd.Series(np.random.default_rng(2).integers(0, 2, len(reference)), name="churned")
    profile = build_reference_profile(reference, model="churn", predictions=predictions, target=target,
                                      primary_metric="roc_auc", metric_value=0.81)
    profile.write(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["profile-sample.parquet", "profile.json"]
    loaded = read_reference_profile(tmp_path)
    assert loaded.model == "churn"
    assert loaded.format_version == PROFILE_FORMAT_VERSION
    assert loaded.feature_names == ["age", "visits", "plan", "active", "score"]
    assert [f.kind for f in loaded.features] == ["numeric", "numeric", "categorical", "categorical", "numeric"]
    assert loaded.features == profile.features
    assert loaded.primary_metric == "roc_auc" and loaded.metric_value == 0.81
    assert loaded.target.name == "churned"
    np.testing.assert_array_equal(loaded.prediction_sample, profile.prediction_sample)
    np.testing.assert_array_equal(loaded.target_sample, profile.target_sample)
    pd.testing.assert_frame_equal(loaded.sample, profile.sample.astype(loaded.sample.dtypes.to_dict()),
                                  check_dtype=False)


def test_profile_keeps_summaries_and_a_fixed_sample_not_the_raw_data(tmp_path):
    reference = _reference(rows=50_000)
    profile = build_reference_profile(reference, model="m", sample_size=2_000)
    assert len(profile.sample) == 2_000
    assert profile.raw is None
    age = profile.feature("age").numeric
    assert age.percentiles[50] == pytest.approx(np.median(reference["age"]))
    assert sum(profile.feature("age").numeric.psi_counts) == 50_000  # bins count the full data
    assert profile.feature("plan").categorical.counts == reference["plan"].value_counts().to_dict()
    profile.write(tmp_path)
    stored = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert stored < reference.memory_usage(deep=True).sum() / 10


def test_keep_raw_stores_the_whole_reference(tmp_path):
    reference = _reference(rows=3_000)
    build_reference_profile(reference, model="m", keep_raw=True, sample_size=100).write(tmp_path)
    loaded = read_reference_profile(tmp_path)
    assert (tmp_path / "profile-raw.parquet").exists()
    assert len(loaded.raw) == 3_000 and len(loaded.sample) == 100


def test_missing_and_infinite_values_are_counted_apart_from_the_distribution():
    values = np.array([1.0, 2.0, np.nan, np.inf, -np.inf, 3.0])
    feature = build_reference_profile(pd.DataFrame({"x": values}), model="m").feature("x")
    assert (feature.rows, feature.missing, feature.infinite, feature.valid) == (6, 1, 2, 3)
    assert feature.numeric.percentiles[0] == 1.0 and feature.numeric.percentiles[100] == 3.0


def test_rare_categories_beyond_the_cap_are_pooled():
    labels = [f"c{i}" for i in range(MAX_CATEGORIES + 50)]
    feature = build_reference_profile(pd.DataFrame({"c": labels * 2}), model="m").feature("c")
    assert len(feature.categorical.counts) == MAX_CATEGORIES
    assert feature.categorical.other == 100


def test_an_all_missing_reference_column_is_profiled_without_error():
    frame = pd.DataFrame({"x": [np.nan] * 10, "c": [None] * 10, "ok": range(10)})
    profile = build_reference_profile(frame, model="m")
    assert profile.feature("x").missing == 10 and profile.feature("x").numeric.percentiles == ()
    assert profile.feature("c").missing == 10 and profile.feature("c").categorical.counts == {}


@pytest.mark.parametrize(("frame", "kwargs", "message"), [
    (pd.DataFrame({"x": []}), {}, "empty"),
    (pd.DataFrame({"x": [1.0, 2.0]}), {"predictions": np.zeros(3)}, "predictions has 3 values"),
    (pd.DataFrame({"x": [1.0, 2.0]}), {"target": pd.Series([1])}, "target has 1 values"),
    (pd.DataFrame([[1, 2]], columns=["a", "a"]), {}, "unique"),
])
def test_bad_references_raise_profile_error(frame, kwargs, message):
    with pytest.raises(ProfileError, match=message):
        build_reference_profile(frame, model="m", **kwargs)


def _written(tmp_path) -> ReferenceProfile:
    profile = build_reference_profile(_reference(rows=500), model="m")
    profile.write(tmp_path)
    return profile


def test_reading_a_directory_without_profile_says_so(tmp_path):
    with pytest.raises(ProfileError, match="profile.json is missing"):
        read_reference_profile(tmp_path)


@pytest.mark.parametrize(("version", "message"), [(0, "older"), (PROFILE_FORMAT_VERSION + 1, "newer")])
def test_other_format_versions_are_refused(tmp_path, version, message):
    _written(tmp_path)
    document = json.loads((tmp_path / "profile.json").read_text())
    document["format_version"] = version
    (tmp_path / "profile.json").write_text(json.dumps(document))
    with pytest.raises(ProfileError, match=message):
        read_reference_profile(tmp_path)


def test_corrupt_profile_json_is_refused(tmp_path):
    _written(tmp_path)
    text = (tmp_path / "profile.json").read_text()
    (tmp_path / "profile.json").write_text(text[: len(text) // 2])
    with pytest.raises(ProfileError, match="corrupt"):
        read_reference_profile(tmp_path)


def test_profile_with_a_missing_field_is_refused(tmp_path):
    _written(tmp_path)
    document = json.loads((tmp_path / "profile.json").read_text())
    del document["features"][0]["numeric"]
    (tmp_path / "profile.json").write_text(json.dumps(document))
    with pytest.raises(ProfileError, match="corrupt"):
        read_reference_profile(tmp_path)


def test_truncated_sample_file_is_refused(tmp_path):
    _written(tmp_path)
    sample = tmp_path / "profile-sample.parquet"
    sample.write_bytes(sample.read_bytes()[:100])
    with pytest.raises(ProfileError, match="truncated"):
        read_reference_profile(tmp_path)


def test_another_json_file_is_not_taken_for_a_profile(tmp_path):
    (tmp_path / "profile.json").write_text('{"hello": 1}')
    with pytest.raises(ProfileError, match="not an mlops-bot reference profile"):
        read_reference_profile(tmp_path)


def test_outputs_from_predict_are_computed_on_the_sampled_rows_only():
    import numpy as np
    import pandas as pd

    from pipeline.profile import build_reference_profile

    frame = pd.DataFrame({"x": np.arange(30_000, dtype=float)})
    seen = []

    def predict(rows):
        seen.append(len(rows))
        return rows["x"].to_numpy() / 30_000

    profile = build_reference_profile(frame, model="m", seed=1, predict=predict, sample_size=5_000)
    assert seen == [5_000]
    assert len(profile.prediction_sample) == 5_000
    np.testing.assert_allclose(np.sort(profile.prediction_sample), np.sort(profile.sample["x"].to_numpy() / 30_000))
