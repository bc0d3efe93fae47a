"""`models:/` URIs on the command line, on the embedded MLflow store (the default registry); what the
command line says when an alias removed in MLflow leaves no version in production."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bot.cli import cli
from integrations.mlflow_registry import embedded_tracking_uri
from tests.conftest import seed_embedded_mlflow, settle, tiny_frame

_SHAPES = "models:/<name>@<alias> or models:/<name>/<version>"


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_project):
    """The CLI in a clean folder, with the tiny project configured and the default (embedded) registry."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLOPS_DATA_DIR", "MLOPS_LOG_LEVEL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(tiny_project))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    seed_embedded_mlflow(tmp_path / "state")
    return lambda *args: CliRunner().invoke(cli, list(args))


def test_models_uris_name_versions_for_show_promote_and_predict_on_the_embedded_store(run, tmp_path):
    assert run("pipeline", "run").exit_code == 0  # v1, promoted
    assert run("pipeline", "run", "--reason", "second").exit_code == 0  # v2, promoted
    assert json.loads(run("models", "show", "models:/tiny/1", "--json").output)["version"] == 1
    assert json.loads(run("models", "show", "models:/tiny@production", "--json").output)["version"] == 2
    promoted = run("models", "promote", "models:/tiny/1")
    assert promoted.exit_code == 0 and promoted.output.strip() == "tiny v1 is in production"
    tiny_frame(5, seed=3).drop(columns=["label"]).to_csv(tmp_path / "in.csv", index=False)
    scored = run("models", "predict", "models:/tiny@production", "--input", "in.csv", "--output", "out.csv")
    assert scored.exit_code == 0 and "5 predictions from tiny v1" in scored.output
    unknown = run("models", "show", "models:/tiny@champion")
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == ["error: tiny has no alias 'champion'; aliases: production"]


@pytest.mark.parametrize("command", [["models", "show"], ["models", "promote"],
                                     ["models", "predict", "--input", "in.csv"]])
@pytest.mark.parametrize("uri", ["models:/tiny", "models:/tiny/v1", "models:tiny@production"])
def test_a_malformed_models_uri_is_one_line_naming_the_shapes_and_exit_2(run, command, uri):
    result = run(*command[:2], uri, *command[2:])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {uri!r} is not a model URI; write {_SHAPES} (e.g. models:/churn@production or models:/churn/3)"]


def test_with_the_production_alias_removed_in_mlflow_show_and_status_say_so(make_app, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = embedded_tracking_uri(tmp_path / "state")  # the default registry of a bot with nothing set
    app = make_app()
    settle(app)  # v1 trained and in production
    app.watch_registry()  # the next cycle's look at the aliases sees v1 there
    MlflowClient(tracking_uri=uri, registry_uri=uri).delete_registered_model_alias("tiny", "production")
    app.watch_registry()  # the bot's look at the aliases records the removal in v1's history
    for name, value in (("MLOPS_PROJECT_DIR", str(app.lifecycle.project.path)),
                        ("MLOPS_DATA_DIR", str(tmp_path / "state"))):
        monkeypatch.setenv(name, value)
    shown = CliRunner().invoke(cli, ["models", "show", "models:/tiny/1"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "stage: archived" in lines and lines[-1] == "no version of tiny is in production now"
    assert lines[-2].endswith("(production alias removed outside mlops-bot): merge of change:1 by dev")
    status = CliRunner().invoke(cli, ["status"])
    assert status.exit_code == 0, status.output
    assert status.output.splitlines()[0].startswith("tiny: no version is in production: v1 left it at ")
    assert "(production alias removed outside mlops-bot); put one back with `mlops-bot models promote VERSION`" \
        in status.output
    gone = CliRunner().invoke(cli, ["models", "show", "models:/tiny@production"])
    assert (gone.exit_code, gone.output.strip()) == (1, "error: tiny has no alias 'production'; aliases: none")


def test_the_fresh_process_load_check_takes_a_models_uri(embedded_registry, tiny_project):
    from pipeline.load_check import check_reference_in_fresh_process
    from pipeline.package import load_model
    from pipeline.registry_port import RegistryError
    from pipeline.run import run_pipeline

    registry = embedded_registry
    assert run_pipeline(tiny_project, registry, isolated=False).promoted
    rows = tiny_frame(30, seed=5)[["x1", "x2", "colour"]]
    production = registry.production("tiny")
    checked = check_reference_in_fresh_process(registry, "models:/tiny@production", rows,
                                               estimator=load_model(production.path), project_root=tiny_project)
    assert checked.version == production.version
    with pytest.raises(RegistryError, match=r"is not a model URI; write models:/<name>@<alias> or"):
        check_reference_in_fresh_process(registry, "models:/tiny", rows, estimator=load_model(production.path),
                                         project_root=tiny_project)
