"""The pipeline end to end on real data, real scikit-learn and the real (embedded MLflow) registry."""

from __future__ import annotations

import fractions
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from pipeline.package import MODEL_CARD_FILE, METADATA_FILE, MODEL_FILE, load_model
from pipeline.predict import predict_frame
from pipeline.registry_port import Stage
from pipeline.run import run_pipeline
from tests.conftest import TINY_TOML, open_embedded_registry, tiny_frame, write_project


@pytest.fixture
def registry(embedded_registry):
    return embedded_registry


def test_example_trains_packages_validates_and_deploys(example_project, registry, clock):
    result = run_pipeline(example_project, registry, trigger="test", reason="first model", clock=clock)

    assert result.status == "succeeded", result.error
    assert result.promoted and result.version == 1
    assert [stage.status for stage in result.stages] == ["succeeded"] * 4
    assert all(stage.duration_s is not None and stage.duration_s >= 0 for stage in result.stages)
    production = registry.production("breast-cancer")
    assert production.version == 1 and production.stage is Stage.PRODUCTION
    for name in (MODEL_FILE, METADATA_FILE, MODEL_CARD_FILE):
        assert (production.path / name).is_file()
    assert any(path.name.startswith("profile") for path in production.path.iterdir())
    metadata = json.loads((production.path / METADATA_FILE).read_text())
    assert metadata["version"] == 1
    assert metadata["metrics"]["roc_auc"] > 0.95
    assert metadata["data"]["fingerprint"].startswith("sha256:")
    assert metadata["environment"]["scikit-learn"]
    assert {"name": "clinic", "dtype": metadata["features"][-1]["dtype"], "kind": "categorical"} in metadata["features"]
    assert metadata["run"] == {"run_id": result.run_id, "trigger": "test", "reason": "first model"}
    card = (production.path / MODEL_CARD_FILE).read_text()
    assert "# Model card: breast-cancer v1" in card and "| roc_auc |" in card
    recorded = registry.get_run(result.run_id)
    assert recorded.status == "succeeded" and recorded.version == 1


def test_training_is_deterministic_for_a_seed(tiny_project, registry, clock):
    first = run_pipeline(tiny_project, registry, clock=clock)
    second = run_pipeline(tiny_project, registry, clock=clock)
    frame = tiny_frame(50, seed=3)
    a = predict_frame(registry.get("tiny", first.version), frame)
    b = predict_frame(registry.get("tiny", second.version), frame)
    pd.testing.assert_frame_equal(a, b)
    assert first.validation["metrics"] == second.validation["metrics"]
    assert registry.get("tiny", 1).metadata["data"]["fingerprint"] == registry.get("tiny", 2).metadata["data"]["fingerprint"]


def test_code_version_is_recorded_in_a_git_repository(tiny_project, registry, clock):
    git = lambda *args: subprocess.run(["git", "-C", str(tiny_project), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start")
    git("add", ".")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "project")
    head = subprocess.run(["git", "-C", str(tiny_project), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    clean = run_pipeline(tiny_project, registry, clock=clock)
    (tiny_project / "mlops.toml").write_text((tiny_project / "mlops.toml").read_text() + "\n# edited\n")
    dirty = run_pipeline(tiny_project, registry, clock=clock)

    assert registry.get("tiny", clean.version).metadata["code_version"]["commit"] == head
    assert registry.get("tiny", clean.version).metadata["code_version"]["dirty"] is False
    assert registry.get("tiny", dirty.version).metadata["code_version"]["dirty"] is True


def test_a_worse_model_is_not_promoted_and_says_why(tiny_project, registry, clock):
    good = run_pipeline(tiny_project, registry, clock=clock)
    toml = (tiny_project / "mlops.toml").read_text()
    (tiny_project / "mlops.toml").write_text(
        toml.replace('"sklearn.linear_model.LogisticRegression"', '"sklearn.dummy.DummyClassifier"')
    )
    worse = run_pipeline(tiny_project, registry, clock=clock)

    assert good.promoted
    assert worse.status == "not_promoted" and not worse.promoted
    assert worse.version == 2
    assert any("roc_auc" in reason and "worse than the allowed regression of 0.02" in reason for reason in worse.reasons)
    assert worse.stage("deploy").status == "skipped"
    assert registry.production("tiny").version == 1
    assert registry.get("tiny", 2).stage is Stage.ARCHIVED  # published, but only a validated version is a candidate
    comparison = worse.validation["production"]
    assert comparison["version"] == 1 and comparison["difference"]["roc_auc"] < -0.02


def test_absolute_gate_blocks_promotion(tiny_project, registry, clock):
    toml = (tiny_project / "mlops.toml").read_text() + "\n[gates.limits]\naccuracy = { min = 0.999 }\n"
    (tiny_project / "mlops.toml").write_text(toml)
    result = run_pipeline(tiny_project, registry, clock=clock)
    assert result.status == "not_promoted"
    assert result.reasons == [f"accuracy is {result.validation['metrics']['accuracy']:.4f}, below the minimum 0.999"]
    assert registry.production("tiny") is None


def test_must_beat_production(tiny_project, registry, clock):
    (tiny_project / "mlops.toml").write_text((tiny_project / "mlops.toml").read_text() + "must_beat_production = true\n")
    first = run_pipeline(tiny_project, registry, clock=clock)
    same = run_pipeline(tiny_project, registry, clock=clock)  # identical model: does not beat it
    assert first.promoted
    assert same.status == "not_promoted"
    assert any("does not beat production v1" in reason for reason in same.reasons)


def test_rollback_restores_the_previous_production(tiny_project, registry, clock):
    run_pipeline(tiny_project, registry, clock=clock)
    run_pipeline(tiny_project, registry, clock=clock)
    assert registry.production("tiny").version == 2
    restored = registry.rollback("tiny", reason="v2 misbehaves")
    assert restored.version == 1 and registry.production("tiny").version == 1
    assert registry.get("tiny", 2).stage is Stage.ARCHIVED
    assert [period.version for period in registry.history("tiny")] == [1, 2, 1]


def test_time_split_holds_out_the_latest_rows(tmp_path, registry, clock):
    frame = tiny_frame(300)
    frame["day"] = pd.date_range("2025-01-01", periods=300, freq="D").astype(str)
    toml = TINY_TOML.replace(
        'target = "label"', 'target = "label"\n[data.split]\nmethod = "time"\ntime_column = "day"\ntest_fraction = 0.2'
    )
    project = write_project(tmp_path / "p", toml, frame)
    result = run_pipeline(project, registry, clock=clock)
    assert result.status == "succeeded", result.error
    assert result.validation["held_out_rows"] == 60
    assert "day" not in [f["name"] for f in registry.get("tiny", 1).metadata["features"]]


def test_user_entry_point_and_parquet_glob(tmp_path, registry, clock):
    frame = tiny_frame(400)
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    frame.iloc[:200].to_parquet(project / "data" / "a.parquet", index=False)
    frame.iloc[200:].to_parquet(project / "data" / "b.parquet", index=False)
    (project / "model.py").write_text(textwrap.dedent("""
        from sklearn.compose import make_column_transformer
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder

        def make_model(trees=20):
            columns = make_column_transformer(
                (SimpleImputer(), ["x1", "x2"]), (OneHotEncoder(handle_unknown="ignore"), ["colour"]))
            return make_pipeline(columns, RandomForestClassifier(n_estimators=trees))
    """))
    toml = TINY_TOML.replace('path = "data.csv"', 'path = "data/*.parquet"').replace(
        '"sklearn.linear_model.LogisticRegression"', '"model:make_model"\nparams = { trees = 15 }')
    write_project(project, toml)
    result = run_pipeline(project, registry, clock=clock)
    assert result.status == "succeeded", result.error
    version = registry.get("tiny", 1)
    assert version.metadata["data"]["files"] == ["data/a.parquet", "data/b.parquet"]
    assert version.metadata["params"]["n_estimators"] == 15
    assert version.metadata["params"]["random_state"] == 42  # seeded from data.split.seed


def test_deploy_command_gets_the_model_path(tiny_project, registry, clock, tmp_path):
    out = tmp_path / "deployed.txt"
    toml = (tiny_project / "mlops.toml").read_text() + f'\n[deploy]\ncommand = "echo $MLOPS_MODEL_VERSION $MLOPS_MODEL_PATH > {out}"\n'
    (tiny_project / "mlops.toml").write_text(toml)
    result = run_pipeline(tiny_project, registry, clock=clock)
    assert result.promoted
    version, path = out.read_text().split()
    assert version == "1" and path == str(registry.get("tiny", 1).path / "model.skops")


def test_failing_deploy_command_leaves_production_as_it_was(tiny_project, registry, clock):
    first = run_pipeline(tiny_project, registry, clock=clock)
    (tiny_project / "mlops.toml").write_text(
        (tiny_project / "mlops.toml").read_text() + '\n[deploy]\ncommand = "echo cluster unreachable >&2; exit 3"\n')
    failed = run_pipeline(tiny_project, registry, clock=clock)
    assert failed.status == "failed" and failed.failed_stage == "deploy"
    assert "exited with status 3" in failed.error and "cluster unreachable" in failed.error
    assert registry.production("tiny").version == first.version


# --- bad input: a clear reason, the stage named, the registry as it was -------------------------


def _edit(project, old, new):
    path = project / "mlops.toml"
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize(
    ("breakage", "stage", "message"),
    [
        (lambda p: (p / "data.csv").unlink(), "train", "no data file matches data.path = 'data.csv'"),
        (lambda p: _edit(p, 'target = "label"', 'target = "outcome"'), "train", "target column 'outcome' not found"),
        (lambda p: (p / "data.csv").write_text("x1,x2,colour,label\n"), "train", "no rows"),
        (lambda p: (p / "data.csv").write_bytes(b"\x00\x01garbage\xff"), "train", "data.csv"),
        (lambda p: _edit(p, "sklearn.linear_model.LogisticRegression", "sklearn.linear_modl.LogisticRegression"),
         "train", "module 'sklearn.linear_modl' cannot be imported"),
        (lambda p: _edit(p, "sklearn.linear_model.LogisticRegression", "sklearn.linear_model.Nope"),
         "train", "has no 'Nope'"),
        (lambda p: _edit(p, "[metrics]", "[model.params]\nC = -1.0\n\n[metrics]"),
         "train", "failed while fitting"),
        (lambda p: _edit(p, "[metrics]", "[model.params]\nno_such_param = 1\n\n[metrics]"),
         "train", "model.params do not suit"),
        (lambda p: (p / "mlops.toml").write_text("[project]\nname = 'tiny'\nbogus = 1\n"), "train", "unknown key 'project.bogus'"),
    ],
)
def test_bad_input_fails_cleanly_and_leaves_the_registry(tiny_project, registry, clock, breakage, stage, message):
    probe = registry.staging_dir()  # where staged versions are made
    staging_root = probe.parent
    probe.rmdir()
    first = run_pipeline(tiny_project, registry, clock=clock)
    before = [(v.version, v.stage) for v in registry.versions()]
    breakage(tiny_project)
    result = run_pipeline(tiny_project, registry, clock=clock)
    assert result.status == "failed"
    assert result.failed_stage == stage
    assert message in result.error
    assert [(v.version, v.stage) for v in registry.versions()] == before
    assert registry.production("tiny").version == first.version
    assert not any(staging_root.iterdir())


def test_predicting_with_missing_columns_says_which(tiny_project, registry, clock):
    run_pipeline(tiny_project, registry, clock=clock)
    from pipeline.data import DataError

    with pytest.raises(DataError, match="missing 1 column\\(s\\) the model needs: colour"):
        predict_frame(registry.production("tiny"), tiny_frame(10).drop(columns=["colour"]))


def test_loading_refuses_types_outside_the_trusted_libraries(tiny_project, registry, clock):
    import skops.io

    from pipeline.package import ArtifactError

    run_pipeline(tiny_project, registry, clock=clock)
    path = registry.production("tiny").path
    skops.io.dump({"payload": fractions.Fraction(1, 3)}, path / MODEL_FILE)
    with pytest.raises(ArtifactError, match="not trusted: fractions.Fraction"):
        load_model(path)


_SLOW_FIT = """
import os, time
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

class SlowToScore(LogisticRegression):
    def predict_proba(self, X):
        open(os.environ["READY_FILE"], "w").close()
        time.sleep(60)
        return super().predict_proba(X)

def make_model():
    columns = make_column_transformer((SimpleImputer(), ["x1", "x2"]), (OneHotEncoder(), ["colour"]))
    return make_pipeline(columns, SlowToScore())
"""


def test_a_run_killed_part_way_leaves_no_half_version(tiny_project, registry, tmp_path):
    run_pipeline(tiny_project, registry)
    (tiny_project / "slow.py").write_text(_SLOW_FIT)
    _edit(tiny_project, '"sklearn.linear_model.LogisticRegression"', '"slow:make_model"')
    ready = tmp_path / "ready"
    script = (
        "from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri;"
        "from pipeline.run import run_pipeline;"
        f"data_dir = {str(registry.data_dir)!r};"
        f"run_pipeline({str(tiny_project)!r}, MlflowRegistry(embedded_tracking_uri(data_dir), data_dir=data_dir))"
    )
    child = subprocess.Popen([sys.executable, "-c", script], env={**__import__("os").environ, "READY_FILE": str(ready)})
    try:
        for _ in range(600):
            if ready.exists() or child.poll() is not None:
                break
            __import__("time").sleep(0.05)
        assert ready.exists(), "the child never reached the packaging stage"
        child.kill()
    finally:
        child.wait(timeout=30)
    reopened = open_embedded_registry(registry.data_dir)
    assert [v.version for v in reopened.versions()] == [1]
    assert reopened.production("tiny").version == 1


def test_raw_training_data_is_kept_only_when_asked(tiny_project, registry, clock):
    from pipeline.profile import read_reference_profile

    run_pipeline(tiny_project, registry, clock=clock)
    assert read_reference_profile(registry.get("tiny", 1).path).raw is None
    (tiny_project / "mlops.toml").write_text((tiny_project / "mlops.toml").read_text() + "\n[package]\nkeep_raw_data = true\n")
    run_pipeline(tiny_project, registry, clock=clock)
    raw = read_reference_profile(registry.get("tiny", 2).path).raw
    assert raw is not None and len(raw) == registry.get("tiny", 2).metadata["training_rows"]


def test_a_run_interrupted_after_publishing_is_finished_not_published_twice(tiny_project, registry, clock):
    validated = run_pipeline(tiny_project, registry, run_id="run-same", promote=False, clock=clock)
    assert validated.version == 1 and not validated.promoted
    resumed = run_pipeline(tiny_project, registry, run_id="run-same", clock=clock)
    assert resumed.status == "succeeded" and resumed.promoted and resumed.version == 1
    assert resumed.stage("train").detail == "done before a restart (v1)"
    assert [v.version for v in registry.versions("tiny")] == [1]
    assert registry.production("tiny").version == 1


def test_the_profile_carries_the_held_out_metric_for_performance_drift(tiny_project, registry, clock):
    from pipeline.profile import read_reference_profile

    result = run_pipeline(tiny_project, registry, clock=clock)
    profile = read_reference_profile(registry.get("tiny", result.version).path)
    assert profile.primary_metric == "roc_auc"
    assert profile.metric_value == pytest.approx(result.validation["metrics"]["roc_auc"])


def test_production_is_scored_again_only_when_the_held_out_rows_changed(tiny_project, registry, clock):
    first = run_pipeline(tiny_project, registry, clock=clock)
    same_data = run_pipeline(tiny_project, registry, clock=clock)
    assert same_data.validation["production"]["metrics"] == first.validation["metrics"]
    frame = tiny_frame(400, seed=9)  # new data: production must be scored on the new held-out rows
    frame.to_csv(tiny_project / "data.csv", index=False)
    new_data = run_pipeline(tiny_project, registry, clock=clock)
    assert new_data.validation["production"]["version"] == 2
    assert new_data.validation["production"]["metrics"] != registry.get("tiny", 2).metadata["metrics"]
