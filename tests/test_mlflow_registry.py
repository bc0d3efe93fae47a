"""The registry port on MLflow, against the embedded SQLite store and a real `mlflow server`.

The port tests run on both, so the bot's default (the embedded store) and a team's server are held
to the same behaviour. One server and one embedded store serve the whole session; each test has
model names of its own (``churn-<hex>``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from integrations.mlflow_registry import (
    MlflowRegistry,
    embedded_tracking_uri,
    metrics_table,
    move_tag,
    moves_from_tags,
    periods,
    rollback_target,
    run_fields,
)
from integrations.mlflow_webhooks import WebhookError, verify_webhook, webhook_event
from pipeline.registry_port import (
    AliasChange,
    AliasMove,
    ModelVersion,
    RegistryError,
    RegistryPort,
    RunRecord,
    Stage,
    alias_changes,
)
from tests.conftest import REPO, TINY_TOML, FakeClock, seed_embedded_mlflow, tiny_frame, write_project
from tests.mlflow_server import mlflow_server, webhook_receiver  # noqa: F401, F811  (session fixtures)

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
SECRET = "webhook-secret-for-tests"


# -- fixtures: the three registries ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_mlflow_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("mlflow-embedded")
    seed_embedded_mlflow(data_dir)
    return data_dir


def _clock() -> FakeClock:
    return FakeClock(START, step=timedelta(minutes=1))


def _make(kind: str, request, tmp_path: Path, embedded_dir: Path) -> RegistryPort:
    if kind == "embedded":
        return MlflowRegistry(embedded_tracking_uri(embedded_dir), data_dir=embedded_dir, clock=_clock())
    server = request.getfixturevalue("mlflow_server")
    return MlflowRegistry(server.url, data_dir=tmp_path / "bot-data", clock=_clock())


@pytest.fixture(params=["embedded", "server"])
def registry(request, tmp_path, embedded_dir) -> RegistryPort:
    """The port on each kind of MLflow store: the port tests must pass on both."""
    made = _make(request.param, request, tmp_path, embedded_dir)
    yield made
    made.close()


@pytest.fixture(params=["embedded", "server"])
def mlflow_registry(request, tmp_path, embedded_dir) -> MlflowRegistry:
    return _make(request.param, request, tmp_path, embedded_dir)


@pytest.fixture
def model() -> str:
    return f"churn-{uuid.uuid4().hex[:8]}"


def _publish(registry: RegistryPort, model: str, run_id: str | None = None, *, finalize=None, candidate=True,
             **metadata) -> ModelVersion:
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    return registry.publish(model, staging, metadata, run_id=run_id or f"run-{uuid.uuid4().hex[:8]}",
                            finalize=finalize, candidate=candidate)


def _client(registry: MlflowRegistry):
    from mlflow import MlflowClient

    return MlflowClient(registry.tracking_uri, registry.registry_uri)


# -- the port, on the embedded store and the server -------------------------------------------------------


def test_publish_numbers_versions_per_model_and_writes_metadata(registry, model):
    assert [_publish(registry, model, auc=auc).version for auc in (0.80, 0.81, 0.82)] == [1, 2, 3]
    assert _publish(registry, f"{model}-b").version == 1

    third = registry.get(model, 3)
    assert third.stage is Stage.CANDIDATE
    assert (third.path / "model.bin").read_bytes() == b"weights"
    on_disk = json.loads((third.path / "metadata.json").read_text())
    assert on_disk == {"auc": 0.82, "model": model, "version": 3}
    assert third.metadata == on_disk
    assert third.created_at.tzinfo is not None
    assert [v.version for v in registry.versions(model)] == [1, 2, 3]
    assert [v.version for v in registry.versions(f"{model}-b")] == [1]
    assert {model, f"{model}-b"} <= set(registry.models())


def test_published_version_is_the_same_when_read_back(registry, model):
    published = _publish(registry, model, "run-7", auc=0.9)
    assert registry.get(model, 1) == published
    described = published.to_dict()
    assert {k: described[k] for k in ("model", "version", "stage", "run_id", "metadata")} == {
        "model": model, "version": 1, "stage": "candidate", "run_id": "run-7",
        "metadata": {"auc": 0.9, "model": model, "version": 1},
    }
    assert Path(described["path"]) == published.path


def test_find_by_run_id_finds_what_a_run_published(registry, model):
    _publish(registry, model, "run-one")
    _publish(registry, model, "run-two")
    assert registry.find_by_run_id(model, "run-two").version == 2
    assert registry.find_by_run_id(model, "run-never") is None
    assert registry.find_by_run_id(f"{model}-none", "run-one") is None


def test_finalize_writes_files_that_know_the_version(registry, model):
    def write_card(folder: Path, metadata: dict) -> None:
        (folder / "README.md").write_text(f"# {metadata['model']} v{metadata['version']}")
        metadata["changed"] = "by finalize"  # must not leak into the registry

    _publish(registry, model)
    published = _publish(registry, model, finalize=write_card, auc=0.9)
    assert (published.path / "README.md").read_text() == f"# {model} v2"
    assert registry.get(model, 2).metadata == {"auc": 0.9, "model": model, "version": 2}
    assert published.metadata == registry.get(model, 2).metadata


def test_publish_whose_finalize_fails_changes_nothing(registry, model):
    def fail(folder: Path, metadata: dict) -> None:
        raise OSError("disk full")

    staging = registry.staging_dir()
    with pytest.raises(OSError, match="disk full"):
        registry.publish(model, staging, {}, run_id="run-1", finalize=fail)
    assert registry.versions(model) == []
    assert list(staging.iterdir()) == []  # the metadata.json it wrote is taken back


@pytest.mark.parametrize("name", ["", "-churn", "churn/v1", "../escape", "a" * 65, "churn\n"])
def test_publish_refuses_bad_model_names(registry, name):
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.publish(name, registry.staging_dir(), {}, run_id="run-1")


def test_publish_refuses_a_name_differing_only_in_case(registry, model):
    _publish(registry, model)
    with pytest.raises(RegistryError, match=f"differs from existing model {model} only in case"):
        _publish(registry, model.upper())


def test_publish_of_a_missing_staging_folder_or_bad_metadata_changes_nothing(registry, model, tmp_path):
    _publish(registry, model)
    with pytest.raises(RegistryError, match="staging folder .* does not exist"):
        registry.publish(model, tmp_path / "gone", {}, run_id="run-2")
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    with pytest.raises(RegistryError, match=f"metadata for {model} is not JSON-serialisable"):
        registry.publish(model, staging, {"threshold": object()}, run_id="run-3")
    assert [v.version for v in registry.versions(model)] == [1]
    assert sorted(p.name for p in staging.iterdir()) == ["model.bin"]


def test_publish_as_not_a_candidate_is_archived(registry, model):
    assert _publish(registry, model, candidate=False).stage is Stage.ARCHIVED
    assert registry.get(model, 1).stage is Stage.ARCHIVED


def test_unknown_model_and_version_errors_say_what_exists(registry, model):
    missing = f"{model}-missing"
    with pytest.raises(RegistryError, match=f"no model named '{missing}'; models: "):
        registry.get(missing, 1)
    _publish(registry, model)
    _publish(registry, model)
    with pytest.raises(RegistryError, match=f"model {model} has no version 4; versions: 1, 2$"):
        registry.get(model, 4)
    with pytest.raises(RegistryError, match=f"no model named '{missing}'; models: .*{model}"):
        registry.promote(missing, 1, reason="typo")
    with pytest.raises(RegistryError, match=f"no model named '{missing}'"):
        registry.rollback(missing, reason="typo")
    with pytest.raises(RegistryError, match="no run with id 'nope'"):
        registry.get_run("nope")
    assert registry.production(missing) is None
    assert registry.history(missing) == []


def test_promote_archives_the_previous_production_and_records_why(registry, model):
    for _ in range(2):
        _publish(registry, model)
    assert registry.production(model) is None

    first = registry.promote(model, 1, reason="first model", run_id="run-1", trigger="pr-merged")
    assert first.stage is Stage.PRODUCTION
    second = registry.promote(model, 2, reason="better auc", run_id="run-2", trigger="scheduled")

    assert second.stage is Stage.PRODUCTION
    assert registry.production(model) == registry.get(model, 2)
    assert registry.get(model, 1).stage is Stage.ARCHIVED
    history = registry.history(model)
    assert [(h.version, h.reason, h.run_id, h.trigger, h.ended_reason) for h in history] == [
        (1, "first model", "run-1", "pr-merged", "better auc"),
        (2, "better auc", "run-2", "scheduled", None),
    ]
    assert history[0].ended_at == history[1].started_at
    assert history[1].ended_at is None
    assert history[0].started_at < history[1].started_at


def test_promoting_the_current_production_is_a_no_op(registry, model):
    _publish(registry, model)
    registry.promote(model, 1, reason="first")
    again = registry.promote(model, 1, reason="again")  # e.g. a promote delivered twice
    assert again.stage is Stage.PRODUCTION
    assert [h.reason for h in registry.history(model)] == ["first"]


def test_an_archived_version_can_be_promoted_again(registry, model):
    for _ in range(2):
        _publish(registry, model)
    registry.promote(model, 1, reason="first")
    registry.promote(model, 2, reason="second")
    registry.promote(model, 1, reason="manual deploy of v1", by="alice", command="cli")
    assert registry.production(model).version == 1
    assert registry.get(model, 2).stage is Stage.ARCHIVED
    assert [h.version for h in registry.history(model)] == [1, 2, 1]


def test_rollback_walks_back_through_production_history(registry, model):
    for _ in range(4):
        _publish(registry, model)
    # v4 is never promoted, so "version - 1" would be the wrong answer below.
    registry.promote(model, 3, reason="three")
    registry.promote(model, 1, reason="one")
    registry.promote(model, 2, reason="two")

    assert registry.rollback(model, reason="latency up").version == 1
    assert registry.get(model, 2).stage is Stage.ARCHIVED
    assert registry.rollback(model, reason="still bad", trigger="drift", by="bob", command="/rollback").version == 3
    assert registry.production(model).version == 3
    with pytest.raises(RegistryError, match=f"cannot roll back {model}: v3 is in production, no earlier"):
        registry.rollback(model, reason="again")

    history = registry.history(model)
    assert [(h.version, h.started_by, h.reason, h.trigger) for h in history] == [
        (3, "promote", "three", "manual"),
        (1, "promote", "one", "manual"),
        (2, "promote", "two", "manual"),
        (1, "rollback", "latency up", "manual"),
        (3, "rollback", "still bad", "drift"),
    ]
    assert [h.ended_reason for h in history] == ["one", "two", "latency up", "still bad", None]


def test_rollback_after_three_promotions(registry, model):
    for version in range(1, 4):
        _publish(registry, model)
        registry.promote(model, version, reason=f"v{version}")
    assert registry.rollback(model, reason="r").version == 2
    assert registry.rollback(model, reason="r").version == 1
    assert [v.stage for v in registry.versions(model)] == [Stage.PRODUCTION, Stage.ARCHIVED, Stage.ARCHIVED]


def test_rollback_with_nothing_in_production_is_refused(registry, model):
    _publish(registry, model)
    with pytest.raises(RegistryError, match=f"cannot roll back {model}: no version is in production"):
        registry.rollback(model, reason="r")


def test_describe_includes_only_that_versions_production_periods(registry, model):
    for _ in range(2):
        _publish(registry, model)
    registry.promote(model, 1, reason="first", run_id="run-1")
    registry.promote(model, 2, reason="second")
    described = registry.describe(model, 1)
    assert described["stage"] == "archived"
    [period] = described["history"]
    assert {k: period[k] for k in ("model", "version", "reason", "run_id", "trigger", "ended_reason",
                                   "started_by")} == {
        "model": model, "version": 1, "reason": "first", "run_id": "run-1", "trigger": "manual",
        "ended_reason": "second", "started_by": "promote"}
    assert datetime.fromisoformat(period["started_at"]) < datetime.fromisoformat(period["ended_at"])
    json.dumps(described)  # must be JSON-safe
    assert "history" not in registry.get(model, 1).to_dict()


def _run(run_id: str, minute: int, model: str, **changes) -> RunRecord:
    fields = dict(run_id=run_id, model=model, status="running", trigger="pr-merged", reason="PR #7",
                  started_at=START + timedelta(minutes=minute))
    return RunRecord(**(fields | changes))


def test_runs_are_upserted_and_listed_newest_first(registry, model):
    a, b, c = (f"{model}-{name}" for name in "abc")  # run ids are unique in a whole store
    registry.record_run(_run(a, 1, model))
    registry.record_run(_run(b, 3, f"{model}-b"))
    registry.record_run(_run(c, 2, model))
    finished = _run(a, 1, model, status="failed", finished_at=START + timedelta(minutes=5), failed_stage="validate",
                    error="auc below 0.7", details={"auc": 0.61},
                    stages=[{"name": "train", "status": "succeeded", "started_at": "t0", "finished_at": "t1",
                             "duration_s": 1.5}])
    registry.record_run(finished)

    assert [r.run_id for r in registry.runs(model)] == [c, a]
    assert [r.run_id for r in registry.runs(model, limit=1)] == [c]
    assert [r.run_id for r in registry.runs(f"{model}-b")] == [b]
    assert registry.runs(f"{model}-none") == []
    assert registry.get_run(a) == finished
    assert registry.get_run(a).to_dict()["finished_at"] == "2024-01-01T00:05:00.000000+00:00"


def test_record_run_refuses_an_unknown_status(registry, model):
    with pytest.raises(RegistryError, match="status 'done'; expected one of running, succeeded"):
        registry.record_run(_run(f"{model}-a", 1, model, status="done"))
    assert registry.runs(model) == []


# -- MLflow's own: runs, artifacts, aliases, webhooks, on the embedded store and the server ------------------


def _project(root: Path, model: str) -> Path:
    return write_project(root, TINY_TOML.replace('name = "tiny"', f'name = "{model}"'), tiny_frame(300))


def test_a_pipeline_run_is_an_mlflow_run_and_a_version_that_loads_without_pickle(mlflow_registry, model, tmp_path,
                                                                                 monkeypatch):
    import mlflow

    from pipeline.package import load_model
    from pipeline.run import run_pipeline

    origin = {"kind": "change", "repo": "org/repo", "commit": "0123abcd" * 5, "change": 12,
              "tickets": [["AB", 7]], "episode": "change:org/repo:12"}
    result = run_pipeline(_project(tmp_path / "project", model), mlflow_registry, trigger="merge",
                          reason="merge of org/repo#12", run_id=f"run-{model}", context={"origin": origin},
                          clock=_clock())
    assert (result.status, result.promoted, result.version) == ("succeeded", True, 1), result.to_dict()

    production = mlflow_registry.production(model)
    assert (production.version, production.stage, production.run_id) == (1, Stage.PRODUCTION, f"run-{model}")
    assert production.aliases == ("production",) and mlflow_registry.candidate(model) is None
    assert [(p.version, p.trigger, p.run_id) for p in mlflow_registry.history(model)] == [(1, "merge", f"run-{model}")]
    recorded = mlflow_registry.get_run(f"run-{model}")
    assert (recorded.status, recorded.version, recorded.details["promoted"]) == ("succeeded", 1, True)
    assert [s["status"] for s in recorded.stages] == ["succeeded"] * 4

    # The MLflow run: params, metrics and lineage tags from what the pipeline recorded.
    client = _client(mlflow_registry)
    mlflow_run = client.get_run(client.get_model_version(model, "1").run_id)
    params, metrics, tags = mlflow_run.data.params, mlflow_run.data.metrics, mlflow_run.data.tags
    assert params["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert params["seed"] == "42" and params["split.test_fraction"] == "0.2" and "model.C" in params
    assert set(metrics) == {"roc_auc", "accuracy"}
    assert metrics["roc_auc"] == production.metadata["metrics"]["roc_auc"]
    assert tags["mlops.commit"] == "0123abcd" * 5 and tags["mlops.change"] == "org/repo#12"
    assert json.loads(tags["mlops.tickets"]) == [["AB", 7]] and tags["mlops.trigger"] == "merge"
    assert tags["mlops.data_fingerprint"] == production.metadata["data"]["fingerprint"]
    assert tags["mlops_run_id"] == f"run-{model}" and tags["mlops_status"] == "succeeded"
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == f"run-{model}"

    # The bot's own loader, on the folder ModelVersion.path points at.
    frame = tiny_frame(50, seed=3)
    rows = frame[["x1", "x2", "colour"]]
    expected = load_model(production.path).predict(rows)
    assert sorted(p.name for p in production.path.iterdir()) >= ["MODEL_CARD.md", "metadata.json", "model.skops"]
    assert json.loads((production.path / "metadata.json").read_text())["version"] == 1

    # MLflow's own loader, by alias, with pickle forbidden; and nothing pickled in the model.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_registry.tracking_uri)  # restored after the test
    # set_registry_uri writes MLFLOW_REGISTRY_URI into the environment too, and set_registry_uri(None)
    # leaves it there: later tests' bots would read it as their setting and register on this server.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_registry.registry_uri)
    mlflow.set_tracking_uri(mlflow_registry.tracking_uri)
    mlflow.set_registry_uri(mlflow_registry.registry_uri)
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{model}@production",
                                                              dst_path=str(tmp_path / "download")))
        files = sorted(str(p.relative_to(downloaded)) for p in downloaded.rglob("*") if p.is_file())
        assert {"MLmodel", "code/mlops_bot_mlflow_flavor.py", "data/artifact/model.skops"} <= set(files)
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib", ".cloudpickle"))], files
        assert "loader_module: mlops_bot_mlflow_flavor" in (downloaded / "MLmodel").read_text()
        pyfunc = mlflow.pyfunc.load_model(f"models:/{model}@production")
        assert list(pyfunc.predict(rows)) == list(expected)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert mlflow_registry.version_for_uri(f"models:/{model}@production").version == 1
    assert mlflow_registry.version_for_uri(f"models:/{model}/1").version == 1


def test_the_loader_inside_the_model_refuses_untrusted_types(mlflow_registry, model, monkeypatch):
    """The bot's trust policy travels with the model: a function from outside sklearn/numpy/scipy is refused."""
    import operator

    import mlflow
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    frame = tiny_frame(60)
    estimator = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression())
    estimator.fit(frame[["x1"]], frame["label"])
    staging = mlflow_registry.staging_dir()
    skops.io.dump(estimator, staging / "model.skops")
    mlflow_registry.publish(model, staging, {"trusted_types": []}, run_id=f"run-{model}")

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_registry.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_registry.registry_uri)  # as above: restored after
    mlflow.set_tracking_uri(mlflow_registry.tracking_uri)
    mlflow.set_registry_uri(mlflow_registry.registry_uri)
    try:
        with pytest.raises(Exception, match="_operator.neg.*model.trusted_types"):
            mlflow.pyfunc.load_model(f"models:/{model}@candidate")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_the_loader_keeps_the_same_trust_policy_where_mlops_bot_is_not_installed(tmp_path, monkeypatch):
    import operator

    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    from integrations.mlflow_flavor import load_estimator

    frame = tiny_frame(60)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    skops.io.dump(LogisticRegression().fit(frame[["x1"]], frame["label"]), good / "model.skops")
    skops.io.dump(FunctionTransformer(operator.neg), bad / "model.skops")
    monkeypatch.setitem(sys.modules, "pipeline.package", None)  # `from pipeline.package import ...` fails

    assert list(load_estimator(good).classes_) == ["no", "yes"]
    with pytest.raises(ValueError, match="not trusted: _operator.neg; list them in the project's model.trusted_types"):
        load_estimator(bad)
    (bad / "metadata.json").write_text(json.dumps({"trusted_types": ["_operator.neg"]}))
    assert load_estimator(bad).func is operator.neg


def test_publish_is_exactly_once_per_run_id_even_when_the_answer_was_lost(mlflow_registry, model):
    first = _publish(mlflow_registry, model, "run-x")
    again = _publish(mlflow_registry, model, "run-x")
    assert again.version == first.version == 1
    assert [v.version for v in mlflow_registry.versions(model)] == [1]

    # A publish whose answer was lost after MLflow created the version (the process died before the
    # candidate alias moved): the retry finds it by the run-id tag and moves the alias.
    client = _client(mlflow_registry)
    lost = client.create_model_version(model, source=first.source, run_id=client.get_model_version(model, "1").run_id,
                                       tags={"mlops_run_id": "run-y", "mlops_metadata": "{}"})
    retried = _publish(mlflow_registry, model, "run-y")
    assert retried.version == int(lost.version) == 2 and retried.stage is Stage.CANDIDATE
    assert [v.version for v in mlflow_registry.versions(model)] == [1, 2]


def test_metadata_too_long_for_a_tag_is_read_from_the_version_itself(mlflow_registry, model):
    published = _publish(mlflow_registry, model, features=["x" * 120] * 1000)  # over MLflow's 100,000 characters
    assert _client(mlflow_registry).get_model_version(model, "1").tags["mlops_metadata"] == "@artifact"
    assert published.metadata["features"] == ["x" * 120] * 1000 and published.metadata["version"] == 1
    assert mlflow_registry.versions(model)[0].metadata == published.metadata


def test_a_registered_model_made_outside_the_bot_is_adopted(mlflow_registry, model, caplog):
    donor = _publish(mlflow_registry, f"{model}-donor")
    client = _client(mlflow_registry)
    client.create_registered_model(model)  # a team's model, with a version the bot never published
    client.create_model_version(model, source=donor.source, run_id=client.get_model_version(donor.model, "1").run_id)
    assert model not in mlflow_registry.models()

    with caplog.at_level("WARNING", logger="integrations.mlflow_registry"):
        assert _publish(mlflow_registry, model).version == 2
    assert f"{model} was not made by mlops-bot; adopting it (its versions so far: 1)" in caplog.text
    assert model in mlflow_registry.models()
    assert [(v.version, v.run_id != "") for v in mlflow_registry.versions(model)] == [(1, False), (2, True)]


def test_only_the_newest_validated_unpromoted_version_is_the_candidate(registry, model):
    """One candidate per model (the candidate alias), which a version published as not validated does
    not take, and a promoted candidate gives up."""
    for _ in range(3):
        _publish(registry, model)
    assert [v.stage for v in registry.versions(model)] == [Stage.ARCHIVED, Stage.ARCHIVED, Stage.CANDIDATE]
    assert _publish(registry, model, candidate=False).stage is Stage.ARCHIVED
    assert registry.candidate(model).version == 3
    assert registry.aliases(model) == {"candidate": 3}
    registry.promote(model, 3, reason="ship")
    assert registry.candidate(model) is None  # a promoted candidate is no longer one
    assert [v.stage for v in registry.versions(model)] == [Stage.ARCHIVED] * 2 + [Stage.PRODUCTION, Stage.ARCHIVED]
    assert registry.aliases(model) == {"production": 3}


def test_promoting_a_candidate_leaves_the_alias_to_a_newer_candidate_published_meanwhile(registry, model):
    """Another run publishes v3 as the candidate while v2 is being promoted: v3 keeps the alias."""
    _publish(registry, model)
    _publish(registry, model)

    class PublishedDuringThePromote(type(registry)):
        def _move(self, *args, **kwargs):
            super()._move(*args, **kwargs)
            _publish(registry, model)  # the other run, through its own client

    racing = PublishedDuringThePromote(registry.tracking_uri, data_dir=registry.data_dir, clock=_clock())
    try:
        racing.promote(model, 2, reason="ship")
    finally:
        racing.close()
    assert registry.aliases(model) == {"production": 2, "candidate": 3}


def test_a_models_uri_names_a_version_in_either_registry(registry, model):
    for _ in range(2):
        _publish(registry, model)
    registry.promote(model, 1, reason="ship")
    assert registry.version_for_uri(f"models:/{model}/2").version == 2
    assert registry.version_for_uri(f"models:/{model}@production").version == 1
    assert registry.version_for_uri(f"models:/{model}@candidate").version == 2
    for bad in (f"models:/{model}", f"models:/{model}/v2", f"models:/{model}/0", f"runs:/{model}/1",
                f"models:/{model}@", "models:/../x/1"):
        with pytest.raises(RegistryError, match=r"^.* is not a model URI; write models:/<name>@<alias> or "
                                                 r"models:/<name>/<version> \(e\.g\."):
            registry.version_for_uri(bad)
    with pytest.raises(RegistryError, match="has no version 7; versions: 1, 2"):
        registry.version_for_uri(f"models:/{model}/7")
    with pytest.raises(RegistryError, match="no model named"):
        registry.version_for_uri(f"models:/{model}-none@production")
    with pytest.raises(RegistryError, match="alias"):
        registry.version_for_uri(f"models:/{model}@champion")


def test_each_alias_move_is_a_version_tag_saying_who_why_and_how(mlflow_registry, model):
    for _ in range(2):
        _publish(mlflow_registry, model)
    mlflow_registry.promote(model, 1, reason="first", trigger="cli", by="alice", command="cli")
    mlflow_registry.promote(model, 2, reason="/deploy v2", trigger="command", by="bob",
                            command="github:org/repo#12:comment-99")
    mlflow_registry.rollback(model, reason="v2 is bad", trigger="command", by="carol", command="/rollback")

    history = mlflow_registry.history(model)
    assert [(p.version, p.started_by, p.by, p.command) for p in history] == [
        (1, "promote", "alice", "cli"), (2, "promote", "bob", "github:org/repo#12:comment-99"),
        (1, "rollback", "carol", "/rollback")]
    assert mlflow_registry.describe(model, 2)["history"][0]["command"] == "github:org/repo#12:comment-99"
    tags = _client(mlflow_registry).get_model_version(model, "1").tags
    moves = sorted(k for k in tags if k.startswith("mlops_alias_move.production."))
    assert len(moves) == 2
    assert json.loads(tags[moves[1]])["previous"] == 2 and json.loads(tags[moves[1]])["action"] == "rollback"


def test_an_alias_moved_outside_the_bot_is_adopted_once(mlflow_registry, model):
    for _ in range(3):
        _publish(mlflow_registry, model)
    mlflow_registry.promote(model, 1, reason="first")
    known = mlflow_registry.aliases(model)
    assert known == {"production": 1, "candidate": 3}

    _client(mlflow_registry).set_registered_model_alias(model, "production", "2")  # someone in the MLflow UI

    changes = alias_changes(known, mlflow_registry.aliases(model), ["production", "candidate"])
    assert changes == [AliasChange("production", 1, 2)]
    adopted = mlflow_registry.adopt_external_moves(model, changes)
    assert [(m.version, m.previous, m.action, m.by) for m in adopted] == [(2, 1, "external", "outside mlops-bot")]
    assert mlflow_registry.adopt_external_moves(model, changes) == []  # once
    assert [(p.version, p.started_by) for p in mlflow_registry.history(model)] == [(1, "promote"), (2, "external")]
    assert mlflow_registry.production(model).version == 2

    # A move nobody adopted yet is still the top of the stack a rollback pops.
    _client(mlflow_registry).set_registered_model_alias(model, "production", "3")
    assert mlflow_registry.rollback(model, reason="not ours").version == 2
    assert [p.started_by for p in mlflow_registry.history(model)] == ["promote", "external", "external", "rollback"]


def test_runs_are_mlflow_runs_ended_with_their_status(mlflow_registry, model):
    started = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    r1, r2 = f"{model}-r1", f"{model}-r2"
    mlflow_registry.record_run(RunRecord(run_id=r1, model=model, status="running", trigger="merge", reason="pr #12",
                                         started_at=started))
    assert mlflow_registry.get_run(r1).status == "running"
    big = {"validation": {"rows": ["x" * 50] * 300}, "promoted": True}  # over MLflow's 8,000-character tags
    done = RunRecord(run_id=r1, model=model, status="succeeded", trigger="merge", reason="pr #12", started_at=started,
                     finished_at=started + timedelta(minutes=5), version=1,
                     stages=[{"name": "train", "status": "succeeded"}], details=big)
    mlflow_registry.record_run(done)
    mlflow_registry.record_run(RunRecord(run_id=r2, model=model, status="failed", trigger="cli", reason="",
                                         started_at=started + timedelta(hours=1),
                                         finished_at=started + timedelta(hours=1, minutes=1),
                                         failed_stage="train", error="DataError: no rows"))
    assert mlflow_registry.get_run(r1) == done
    assert [r.run_id for r in mlflow_registry.runs(model)] == [r2, r1]

    client = _client(mlflow_registry)
    experiment = client.get_experiment_by_name(f"mlops-bot/{model}")
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert statuses == {r1: "FINISHED", r2: "FAILED"}
    if mlflow_registry.tracking_uri.startswith("sqlite:"):  # the embedded store keeps artifacts in the data dir
        assert experiment.artifact_location == (mlflow_registry.data_dir / "mlflow" / "artifacts" / model).as_uri()


def test_a_pipeline_run_logs_its_card_profile_metrics_and_episode_drift_reports(mlflow_registry, model, tmp_path):
    from pipeline.run import run_pipeline

    report = tmp_path / "reports" / model / "batch-001.csv_2048_1700000000"
    report.mkdir(parents=True)
    (report / "report.json").write_text('{"drifted": true}')
    (report / "report.md").write_text("# Drift: x1 moved\n")
    context = {"origin": {"kind": "command", "ticket": 4, "episode": "ticket:4"},
               "drift_reports": [str(report), str(tmp_path / "reports" / model / "cleaned-up-since")]}
    run_id = f"run-{model}"
    result = run_pipeline(_project(tmp_path / "project", model), mlflow_registry, trigger="command",
                          reason="/retrain", run_id=run_id, context=context, clock=_clock())
    assert result.version == 1, result.to_dict()
    client = _client(mlflow_registry)
    mlflow_run = client.get_model_version(model, "1").run_id

    def artifacts() -> list[str]:
        found, folders = [], [None]
        while folders:
            for item in client.list_artifacts(mlflow_run, folders.pop()):
                (folders if item.is_dir else found).append(item.path)
        return sorted(path for path in found if not path.startswith("model/"))

    logged = artifacts()
    assert logged == ["drift_reports/batch-001.csv_2048_1700000000/report.json",
                      "drift_reports/batch-001.csv_2048_1700000000/report.md",
                      "metrics/metrics.json", "metrics/metrics.md", "model_card/MODEL_CARD.md",
                      "reference_profile/profile-sample.parquet", "reference_profile/profile.json"]
    version = mlflow_registry.get(model, 1)
    scratch = tmp_path / "fetched"
    card = Path(client.download_artifacts(mlflow_run, "model_card/MODEL_CARD.md", str(scratch)))
    assert card.read_text() == (version.path / "MODEL_CARD.md").read_text()
    table = json.loads(Path(client.download_artifacts(mlflow_run, "metrics/metrics.json", str(scratch))).read_text())
    assert (table["model"], table["version"], table["primary_metric"]) == (model, 1, "roc_auc")
    assert {row["metric"]: row["candidate"] for row in table["rows"]} == version.metadata["metrics"]
    assert [row["production"] for row in table["rows"]] == [None, None]  # nothing in production to compare with
    markdown = Path(client.download_artifacts(mlflow_run, "metrics/metrics.md", str(scratch))).read_text()
    assert f"| roc_auc | {version.metadata['metrics']['roc_auc']:.4f} | — | — |" in markdown

    # The same run again (a restart): found by its run id, nothing published or logged twice.
    again = run_pipeline(_project(tmp_path / "project", model), mlflow_registry, trigger="command", reason="/retrain",
                         run_id=run_id, context=context, clock=_clock())
    assert again.version == 1 and artifacts() == logged
    assert [v.version for v in mlflow_registry.versions(model)] == [1]


def test_a_run_that_fails_validation_is_published_but_is_no_candidate(registry, model, tmp_path):
    from pipeline.run import run_pipeline

    project = _project(tmp_path / "project", model)
    (project / "mlops.toml").write_text((project / "mlops.toml").read_text()
                                        + "\n[gates.limits]\naccuracy = { min = 1.01 }\n")
    result = run_pipeline(project, registry, trigger="merge", reason="a model no gate lets through", clock=_clock())
    assert (result.status, result.version) == ("not_promoted", 1), result.to_dict()
    assert registry.get(model, 1).stage is Stage.ARCHIVED and registry.candidate(model) is None
    assert registry.aliases(model) == {}


def test_an_alias_removed_outside_the_bot_ends_production_in_the_history_once(mlflow_registry, model):
    for _ in range(2):
        _publish(mlflow_registry, model)
    mlflow_registry.promote(model, 1, reason="first")
    mlflow_registry.promote(model, 2, reason="second")
    known = mlflow_registry.aliases(model)
    _client(mlflow_registry).delete_registered_model_alias(model, "production")  # someone, in MLflow's UI

    changes = alias_changes(known, mlflow_registry.aliases(model), ["production", "candidate"])
    assert changes == [AliasChange("production", 2, None)]
    adopted = mlflow_registry.adopt_external_moves(model, changes)
    assert [(m.version, m.previous, m.action, m.by, m.reason) for m in adopted] == [
        (None, 2, "removed", "outside mlops-bot", "production alias removed outside mlops-bot")]
    assert mlflow_registry.adopt_external_moves(model, changes) == []  # once
    assert mlflow_registry.production(model) is None
    history = mlflow_registry.history(model)
    assert [(p.version, p.ended_reason) for p in history] == [
        (1, "second"), (2, "production alias removed outside mlops-bot")]
    assert history[-1].ended_at is not None
    own = mlflow_registry.describe(model, 2)["history"]
    assert own[0]["ended_reason"] == "production alias removed outside mlops-bot"
    with pytest.raises(RegistryError, match="no version is in production"):
        mlflow_registry.rollback(model, reason="nothing to roll back from")

    # Put back outside the bot on the same version: a new period, not taken for the removed one.
    _client(mlflow_registry).set_registered_model_alias(model, "production", "2")
    back = alias_changes({"production": None}, mlflow_registry.aliases(model), ["production"])
    assert [(m.version, m.action) for m in mlflow_registry.adopt_external_moves(model, back)] == [(2, "external")]
    assert [(p.version, p.ended_at is None) for p in mlflow_registry.history(model)] == [
        (1, False), (2, False), (2, True)]


# -- the server only: downloads, request counts, webhooks, errors -----------------------------------------


def test_a_remote_version_is_downloaded_once_into_the_data_dir(mlflow_server, model, tmp_path):
    data_dir = tmp_path / "bot-data"
    publisher = MlflowRegistry(mlflow_server.url, data_dir=tmp_path / "publisher")
    _publish(publisher, model, auc=0.9)
    publisher.promote(model, 1, reason="ship")

    reader = MlflowRegistry(mlflow_server.url, data_dir=data_dir)
    mark = mlflow_server.mark()
    assert reader.aliases(model) == {"production": 1}
    assert len(mlflow_server.requests_since(mark)) == 1  # the idle cycle's check is one request
    listed = reader.versions(model)
    mark = mlflow_server.mark()
    folder = listed[0].path
    assert mlflow_server.requests_since(mark)  # read, so downloaded
    assert folder.is_relative_to(data_dir / "mlflow" / "cache" / model)
    assert (folder / "model.bin").read_bytes() == b"weights"

    again = MlflowRegistry(mlflow_server.url, data_dir=data_dir).production(model)
    mark = mlflow_server.mark()
    assert again.path == folder
    assert mlflow_server.requests_since(mark) == []  # kept: no second download


def test_a_webhook_delivery_from_mlflow_is_verified(mlflow_server, webhook_receiver, model, tmp_path):
    registry = MlflowRegistry(mlflow_server.url, data_dir=tmp_path)
    hook = registry.ensure_webhook(f"mlops-bot-{model}", webhook_receiver.url, SECRET)
    assert registry.ensure_webhook(f"mlops-bot-{model}", webhook_receiver.url, SECRET) == hook  # by name, once
    time.sleep(1.5)  # the server caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL=1 s
    try:
        _publish(registry, model, "run-w", candidate=False)
        registry.promote(model, 1, reason="ship it")

        def ours(event):
            return lambda d: (json.loads(d["body"])["data"].get("name") == model
                              and "{entity}.{action}".format(**json.loads(d["body"])) == event)

        created = webhook_receiver.wait_for(ours("model_version.created"))
        moved = webhook_receiver.wait_for(ours("model_version_alias.created"))
    finally:
        _client(registry).delete_webhook(hook)
    assert created and moved, [json.loads(d["body"]) for d in webhook_receiver.deliveries]

    fact = webhook_event(verify_webhook(SECRET, created[0]["headers"], created[0]["body"]))
    assert (fact["event"], fact["model"], fact["version"]) == ("model_version.created", model, 1)
    assert fact["tags"]["mlops_run_id"] == "run-w"
    headers, body = moved[0]["headers"], moved[0]["body"]
    fact = webhook_event(verify_webhook(SECRET, headers, body))
    assert (fact["event"], fact["model"], fact["version"], fact["alias"]) == (
        "model_version_alias.created", model, 1, "production")

    with pytest.raises(WebhookError, match="signature does not match"):
        verify_webhook(SECRET, headers, body.replace(b'"1"', b'"2"'))  # tampered body
    with pytest.raises(WebhookError, match="signature does not match"):
        verify_webhook("another secret", headers, body)
    with pytest.raises(WebhookError, match="replay"):
        verify_webhook(SECRET, headers, body, now=int(headers["X-MLflow-Timestamp"]) + 3600)
    with pytest.raises(WebhookError, match="missing X-MLflow-Signature"):
        verify_webhook(SECRET, {k: v for k, v in headers.items() if k != "X-MLflow-Signature"}, body)
    with pytest.raises(WebhookError, match="missing X-MLflow-Delivery-Id, X-MLflow-Timestamp, X-MLflow-Signature"):
        verify_webhook(SECRET, {}, body)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's own value is kept
    uri = f"http://127.0.0.1:{_free_port()}"
    registry = MlflowRegistry(uri, data_dir=tmp_path)
    with pytest.raises(RegistryError) as caught:
        registry.production("churn")
    message = str(caught.value)
    assert message.startswith(f"MLflow at {uri} cannot be reached (Connection refused)")
    assert "MLFLOW_TRACKING_URI" in message and "\n" not in message
    with pytest.raises(RegistryError, match="cannot be reached"):
        _publish(registry, "churn")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


@pytest.mark.parametrize(("status", "expected"), [
    (401, r"refused the bot's credentials \(401 unauthenticated\); set MLFLOW_TRACKING_TOKEN"),
    (403, r"refused the request \(403 permission denied\)"),
])
def test_a_server_refusing_the_credentials_is_one_clear_error(tmp_path, monkeypatch, status, expected):
    """An MLflow behind an authenticating proxy (or with basic auth) that says no."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()
            self.wfile.write(b"You are not authenticated.")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        uri = f"http://user:hunter2@127.0.0.1:{proxy.server_address[1]}"
        with pytest.raises(RegistryError, match=expected) as caught:
            MlflowRegistry(uri, data_dir=tmp_path).versions("churn")
        assert "hunter2" not in str(caught.value) and "user:***@127.0.0.1" in str(caught.value)
    finally:
        proxy.shutdown()
        proxy.server_close()


# -- pure functions and construction -------------------------------------------------------------------------


def _move(version: int, action: str, minute: int, alias: str = "production") -> AliasMove:
    return AliasMove(alias=alias, version=version, previous=None, action=action, reason=f"r{minute}", trigger="t",
                     by="x", at=datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc))


def test_rollback_target_reads_the_moves_as_a_stack():
    assert rollback_target([]) is None
    assert rollback_target([_move(1, "promote", 1)]) is None
    assert rollback_target([_move(1, "promote", 1), _move(2, "promote", 2), _move(3, "promote", 3)]) == 2
    assert rollback_target([_move(1, "promote", 1), _move(2, "promote", 2), _move(3, "promote", 3),
                            _move(2, "rollback", 4)]) == 1
    assert rollback_target([_move(1, "promote", 1), _move(2, "external", 2)]) == 1
    removed = AliasMove(alias="production", version=None, previous=3, action="removed", reason="gone", trigger="t",
                        by="x", at=datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc))
    # A removal takes the version out as a rollback would: v4 put there next rolls back to v2, not v3.
    assert rollback_target([_move(1, "promote", 1), _move(2, "promote", 2), _move(3, "promote", 3), removed,
                            _move(4, "external", 6)]) == 2


def test_a_removal_round_trips_through_its_tag_and_ends_the_period():
    removed = AliasMove(alias="production", version=None, previous=1, action="removed", reason="removed by hand",
                        trigger="external", by="outside mlops-bot", at=datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc))
    tags = [dict([move_tag(_move(1, "promote", 1))]), dict([move_tag(removed)])]
    read = moves_from_tags(tags, "production")
    assert read[-1] == removed
    [period] = periods("m", read)
    assert (period.version, period.ended_at, period.ended_reason) == (1, removed.at, "removed by hand")


def test_metrics_table_sets_the_candidate_beside_production_on_the_same_rows():
    table, markdown = metrics_table({
        "model": "churn", "version": 3, "primary_metric": {"name": "f1"}, "metrics": {"f1": 0.8, "accuracy": 0.9},
        "validation": {"held_out_rows": 80, "passed": True, "production": {
            "version": 2, "metrics": {"f1": 0.75}, "difference": {"f1": 0.05}, "note": "scored on the same rows"}}})
    assert table["rows"] == [{"metric": "f1", "candidate": 0.8, "production": 0.75, "difference": 0.05},
                             {"metric": "accuracy", "candidate": 0.9, "production": None, "difference": None}]
    assert (table["production_version"], table["held_out_rows"], table["passed"]) == (2, 80, True)
    assert markdown.splitlines() == [
        "# Metrics: churn v3 against production v2", "", "| metric | churn v3 | production v2 | difference |",
        "|---|---:|---:|---:|", "| f1 | 0.8000 | 0.7500 | +0.0500 |", "| accuracy | 0.9000 | — | — |", "",
        "_scored on the same rows_"]


def test_moves_round_trip_through_tags_in_time_order():
    moves = [_move(2, "promote", 2), _move(1, "promote", 1), _move(5, "candidate", 3, alias="candidate")]
    tags = [dict([move_tag(m)]) for m in moves]
    assert [m.version for m in moves_from_tags(tags, "production")] == [1, 2]
    assert moves_from_tags(tags, "candidate") == [moves[2]]
    assert [p.ended_reason for p in periods("m", moves_from_tags(tags, "production"))] == ["r2", None]


def test_run_fields_from_the_metadata_a_pipeline_run_writes():
    params, metrics, tags = run_fields({
        "estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 50, "max_depth": None},
        "seed": 3, "metrics": {"f1": 0.8}, "validation": {"production": {"version": 2, "metrics": {"f1": 0.7}}},
        "data": {"split": {"method": "random", "test_fraction": 0.25, "time_column": None},
                 "fingerprint": "sha256:1", "sources": [{"path": "a.csv"}]},
        "code_version": {"commit": "abc", "dirty": False},
        "context": {"origin": {"repo": "org/repo", "change": 12, "commit": "def", "tickets": [["AB", 1]],
                               "ticket": 9, "episode": "change:org/repo:12"}, "trigger": "merge"},
        "run": {"trigger": "merge", "run_id": "run-1"}})
    assert params == {"estimator": "sklearn.ensemble.RandomForestClassifier", "model.n_estimators": "50",
                      "model.max_depth": "null", "split.method": "random", "split.test_fraction": "0.25", "seed": "3"}
    assert metrics == {"f1": 0.8, "production.f1": 0.7}
    assert tags["mlops.commit"] == "abc" and tags["mlops.change"] == "org/repo#12"
    assert json.loads(tags["mlops.tickets"]) == [["AB", 1], 9] and tags["mlops.trigger"] == "merge"
    assert json.loads(tags["mlops.data_sources"]) == [{"path": "a.csv"}]
    assert run_fields({}) == ({}, {}, {})


# A delivery captured from `mlflow server` 3.17.2 (model_version_alias.created), with its secret.
_RECORDED = {
    "secret": "s3cret-for-tests",
    "headers": {"X-MLflow-Delivery-Id": "18f7b879-4743-4d7c-b942-71e6c422e6ba", "X-MLflow-Timestamp": "1796291265",
                "X-MLflow-Signature": "v1,Z4m0mUzRHQo3xxEpm7gDLp+eNzZqVJKfE04P2bkVfj8="},
    "body": b'{"entity": "model_version_alias", "action": "created", "timestamp": "2026-12-03T09:47:45.951131+00:00",'
            b' "data": {"name": "churn", "alias": "production", "version": "1"}}',
}


def test_verify_webhook_on_a_recorded_delivery():
    headers, body = _RECORDED["headers"], _RECORDED["body"]
    payload = verify_webhook(_RECORDED["secret"], headers, body, now=int(headers["X-MLflow-Timestamp"]) + 10)
    assert webhook_event(payload) == {"event": "model_version_alias.created", "model": "churn", "version": 1,
                                      "alias": "production", "tags": {},
                                      "at": "2026-12-03T09:47:45.951131+00:00"}
    lower = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    assert verify_webhook(_RECORDED["secret"], lower, body, now=int(headers["X-MLflow-Timestamp"])) == payload
    with pytest.raises(WebhookError, match="no webhook secret is set"):
        verify_webhook("", headers, body, now=int(headers["X-MLflow-Timestamp"]))
    with pytest.raises(WebhookError, match="is not Unix seconds"):
        verify_webhook(_RECORDED["secret"], headers | {"X-MLflow-Timestamp": "yesterday"}, body)
    signed = f"id-1.{int(time.time())}.".encode() + b"[1]"
    signature = "v1," + base64.b64encode(hmac.new(b"k", signed, hashlib.sha256).digest()).decode()
    with pytest.raises(WebhookError, match="not an object"):
        verify_webhook("k", {"X-MLflow-Delivery-Id": "id-1", "X-MLflow-Timestamp": signed.split(b".")[1].decode(),
                             "X-MLflow-Signature": signature}, b"[1]")


def test_the_registry_satisfies_the_port_and_its_alias_capabilities(tmp_path):
    from pipeline.registry_port import RecallsAliasMoves, ReportsAliasMoves

    registry = MlflowRegistry(embedded_tracking_uri(tmp_path), data_dir=tmp_path)
    assert isinstance(registry, RegistryPort)
    assert isinstance(registry, ReportsAliasMoves) and isinstance(registry, RecallsAliasMoves)


@pytest.mark.parametrize(("production", "candidate", "expected"), [
    ("latest", "candidate", "invalid production alias 'latest'"),
    ("champion", "v2", "invalid candidate alias 'v2'"),
    ("prod uction", "candidate", "invalid production alias"),
    ("champion", "champion", "both 'champion'"),
])
def test_bad_aliases_are_refused_when_the_registry_is_made(tmp_path, production, candidate, expected):
    with pytest.raises(RegistryError, match=expected):
        MlflowRegistry("sqlite:///x.db", data_dir=tmp_path, production_alias=production, candidate_alias=candidate)


def test_importing_and_constructing_the_registry_does_not_import_mlflow(tmp_path):
    code = ("import sys\n"
            "from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri\n"
            "registry = MlflowRegistry(embedded_tracking_uri(sys.argv[1]), data_dir=sys.argv[1])\n"
            "registry.staging_dir()\n"
            "print('mlflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          check=True)
    assert done.stdout.strip() == "False"
