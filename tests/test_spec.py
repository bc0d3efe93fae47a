from __future__ import annotations

import pytest

from pipeline.spec import Direction, SpecError, load_project
from tests.conftest import EXAMPLE, TINY_TOML, write_project


def test_bundled_example_is_valid():
    spec = load_project(EXAMPLE)
    assert spec.name == "breast-cancer"
    assert spec.metrics.primary == "roc_auc"
    assert spec.metrics.primary_direction is Direction.maximize
    assert spec.gates.limits["roc_auc"].min == 0.95


def test_direction_comes_from_the_metric_unless_given(tmp_path):
    spec = load_project(write_project(tmp_path, TINY_TOML.replace('primary = "roc_auc"', 'primary = "log_loss"')))
    assert spec.metrics.primary_direction is Direction.minimize


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace("[gates]", "[gates]\ntets_fraction = 0.3"), "unknown key 'gates.tets_fraction'"),
        (lambda t: t + "\n[colour]\nx = 1\n", "unknown key 'colour'"),
        (lambda t: t.replace('target = "label"', ""), "missing key 'data.target'"),
        (lambda t: t.replace('primary = "roc_auc"', 'primary = "auc"'), "unknown metric 'auc'"),
        (lambda t: t.replace("max_regression = 0.02", "max_regression = -1"), "gates.max_regression"),
        (lambda t: t + '\n[gates.limits]\nr2 = { min = 0.5 }\n', "gates.limits names metric 'r2'"),
        (lambda t: t.replace('"sklearn.linear_model.LogisticRegression"', '"LogisticRegression"'), "not an import path"),
        (lambda t: t.replace('name = "tiny"', 'name = "no spaces allowed"'), "project.name"),
        (lambda t: t + '\n[data.split]\nmethod = "time"\n', "needs split.time_column"),
        (lambda t: t.replace("[project]", "[project"), "not valid TOML"),
    ],
)
def test_bad_spec_names_file_and_key(tmp_path, change, expected):
    write_project(tmp_path, change(TINY_TOML))
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)
    message = str(caught.value)
    assert expected in message
    assert str(tmp_path / "mlops.toml") in message


def test_missing_spec_file_and_folder(tmp_path):
    with pytest.raises(SpecError, match="mlops.toml not found"):
        load_project(tmp_path)
    with pytest.raises(SpecError, match="does not exist"):
        load_project(tmp_path / "nowhere")


def test_drift_settings_are_checked_when_the_project_is_read(tmp_path):
    write_project(tmp_path, TINY_TOML + "\n[drift]\nfdr_levle = 0.1\n")
    with pytest.raises(SpecError, match="'drift': .*fdr_levle"):
        load_project(tmp_path)
