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


# --- [data] id_column and categorical, [retrain], [monitor] ---------------------------------------


def test_retrain_and_monitor_tables_have_defaults(tmp_path):
    spec = load_project(write_project(tmp_path, TINY_TOML))
    assert spec.data.id_column is None and spec.data.categorical == []
    assert spec.retrain.include_production is True and spec.retrain.keep_training_data is True
    assert spec.retrain.max_age_days is None and spec.retrain.max_rows is None
    assert spec.monitor.max_drop is None and spec.monitor.estimated_trigger is False


def test_new_keys_are_read(tmp_path):
    toml = TINY_TOML.replace('target = "label"', 'target = "label"\nid_column = "row_id"\ncategorical = ["colour"]')
    toml += "\n[retrain]\ninclude_production = false\nmax_age_days = 30.5\nmax_rows = 5000\nkeep_training_data = true\n"
    toml += "\n[monitor]\nmax_drop = 0.03\nestimated_trigger = true\n"
    spec = load_project(write_project(tmp_path, toml))
    assert spec.data.id_column == "row_id" and spec.data.categorical == ["colour"]
    assert (spec.retrain.include_production, spec.retrain.max_age_days, spec.retrain.max_rows) == (False, 30.5, 5000)
    assert spec.monitor.max_drop == 0.03 and spec.monitor.estimated_trigger is True


@pytest.mark.parametrize(
    ("monitor", "gates", "expected"),
    [
        ("\n[monitor]\nmax_drop = 0.07\n", "max_regression = 0.02", 0.07),  # the monitor's own setting first
        ("", "max_regression = 0.02", 0.02),  # else the gates' largest allowed regression
        ("", "must_beat_production = false", 0.05),  # else 0.05
        ("\n[monitor]\nmax_drop = 0\n", "max_regression = 0.02", 0.0),  # zero is a setting, not a gap
    ],
)
def test_performance_max_drop_falls_back_to_the_gates_then_a_default(tmp_path, monitor, gates, expected):
    toml = TINY_TOML.replace("max_regression = 0.02", gates) + monitor
    assert load_project(write_project(tmp_path, toml)).performance_max_drop == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t + "\n[retrain]\nmax_age_days = 0\n", "'retrain.max_age_days': Input should be greater than 0"),
        (lambda t: t + "\n[retrain]\nmax_rows = 0\n", "'retrain.max_rows': Input should be greater than or equal to 1"),
        (lambda t: t + "\n[retrain]\nmax_rowz = 10\n", "unknown key 'retrain.max_rowz'"),
        (lambda t: t + "\n[retrain]\ninclude_production = false\nkeep_training_data = false\n",
         "leaves nothing to train on"),
        (lambda t: t + "\n[monitor]\nmax_drop = -0.1\n", "'monitor.max_drop': Input should be greater than or equal to 0"),
        (lambda t: t + "\n[monitor]\nestimated_trigger = \"sometimes\"\n", "'monitor.estimated_trigger'"),
        (lambda t: t.replace('target = "label"', 'target = "label"\nid_column = "label"'),
         "data.id_column and data.target are both 'label'"),
        (lambda t: t.replace('target = "label"', 'target = "label"\nid_column = ""'), "'data.id_column': must name a column"),
        (lambda t: t.replace('target = "label"', 'target = "label"\nfeatures = ["x1", "row_id"]\nid_column = "row_id"'),
         "data.features lists the id column 'row_id'"),
        (lambda t: t.replace('target = "label"', 'target = "label"\ncategorical = ["label"]'),
         "data.categorical lists 'label', which is the data.target"),
        (lambda t: t.replace('target = "label"', 'target = "label"\ncategorical = ["colour", "colour"]'),
         "data.categorical lists 'colour' more than once"),
        (lambda t: t.replace('target = "label"', 'target = "label"\nfeatures = ["x1"]\ncategorical = ["colour"]'),
         "data.categorical lists 'colour', not in data.features"),
    ],
)
def test_bad_retrain_monitor_and_data_keys_name_file_and_key(tmp_path, change, expected):
    write_project(tmp_path, change(TINY_TOML))
    with pytest.raises(SpecError) as caught:
        load_project(tmp_path)
    assert expected in str(caught.value)
    assert str(tmp_path / "mlops.toml") in str(caught.value)
