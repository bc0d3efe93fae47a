"""DriftConfig: the [drift] table of mlops.toml, per-feature overrides, and the dataset verdict."""

import numpy as np
import pandas as pd
import pytest

from pipeline.drift import DriftConfig, FeatureOverride, check_drift
from pipeline.profile import build_reference_profile


def test_from_dict_reads_a_drift_table():
    config = DriftConfig.from_dict({
        "fdr_level": 0.01,
        "psi_floor": 0.2,
        "key_features": ["age"],
        "per_feature": {"income": {"distance_floor": 0.3, "distance_medium": 0.4, "distance_high": 0.9},
                        "id": {"ignore": True}},
    })
    assert config.fdr_level == 0.01 and config.key_features == ("age",)
    assert config.thresholds("income")["distance_floor"] == 0.3
    assert config.thresholds("income")["psi_floor"] == 0.2  # falls back to the model-wide value
    assert config.thresholds("id")["ignore"] is True
    assert DriftConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("document", "message"), [
    ({"fdr": 0.1}, "unknown drift setting 'fdr'"),
    ({"per_feature": {"age": {"psi": 0.1}}}, "per_feature.age.psi"),
    ({"fdr_level": 1.5}, "fdr_level must be between 0 and 1"),
    ({"psi_floor": 0.3, "psi_medium": 0.2}, "psi_floor <= psi_medium"),
    ({"per_feature": {"age": {"psi_floor": 0.9}}}, "per_feature.age.psi"),
    ({"dataset_share": 0}, "dataset_share"),
    ({"classifier_folds": 1}, "classifier_folds"),
])
def test_from_dict_rejects_what_it_does_not_understand(document, message):
    with pytest.raises(ValueError, match=message):
        DriftConfig.from_dict(document)


def _data(rows: int, seed: int, shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(0, 1, rows) for name in ("a", "b", "c", "d", "e")})
    for name in shifted:
        frame[name] += 0.5
    return frame


@pytest.fixture(scope="module")
def profile():
    return build_reference_profile(_data(20_000, 0), model="m")


def test_one_drifted_feature_of_five_is_below_the_default_share(profile):
    report = check_drift(profile, _data(5_000, 1, shifted=("a",)), config=DriftConfig(multivariate=False))
    assert [f.name for f in report.drifted_features] == ["a"]
    assert not report.drifted and report.severity == "none"
    assert "below the 30% threshold" in report.reasons[0]


def test_a_key_feature_or_a_lower_share_makes_the_dataset_drift(profile):
    batch = _data(5_000, 1, shifted=("a",))
    by_key = check_drift(profile, batch, config=DriftConfig(multivariate=False, key_features=("a",)))
    assert by_key.drifted and by_key.severity == "medium" and "key features drifted: a" in by_key.reasons
    by_share = check_drift(profile, batch, config=DriftConfig(multivariate=False, dataset_share=0.2))
    assert by_share.drifted


def test_per_feature_floors_and_ignore(profile):
    batch = _data(5_000, 1, shifted=("a", "b"))
    config = DriftConfig(multivariate=False, dataset_share=0.4, per_feature={
        "a": FeatureOverride(distance_floor=2.0, distance_medium=2.0, distance_high=2.0,
                             psi_floor=2.0, psi_medium=2.0, psi_high=2.0),
        "b": {"ignore": True},
    })
    report = check_drift(profile, batch, config=config)
    a, b = report.features[:2]
    assert not a.drifted  # its floor is out of reach
    assert b.ignored and b.p_value_adjusted is None
    assert not report.drifted and report.to_dict()["summary"]["features"] == 4


def test_severity_follows_the_effect_cut_offs(profile):
    rng = np.random.default_rng(5)
    batch = pd.DataFrame({"a": rng.normal(0.15, 1, 20_000), "b": rng.normal(0.35, 1, 20_000),
                          "c": rng.normal(1.5, 1, 20_000), "d": rng.normal(0, 1, 20_000),
                          "e": rng.normal(0, 1, 20_000)})
    report = check_drift(profile, batch, config=DriftConfig(multivariate=False))
    assert [f.severity for f in report.features] == ["low", "medium", "high", "none", "none"]
    assert report.drifted and report.severity == "high"
    assert [f.name for f in report.drifted_features] == ["c", "b", "a"]
