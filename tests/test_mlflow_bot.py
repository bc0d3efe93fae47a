"""The bot on an MLflow registry (MLFLOW_TRACKING_URI), end to end on MLflow's embedded SQLite store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from bot.cli import cli
from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri
from tests.conftest import EXAMPLE, git, settle


def _example_repository(root: Path) -> Path:
    """The bundled example in a git repository of its own; returns its project folder."""
    project = root / "models" / "breast_cancer"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    git(root.parent, "init", "-q", "-b", "main", str(root))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "the example model")
    return project


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_bot_registers_and_promotes_in_mlflow_under_the_teams_alias(make_app, tmp_path, monkeypatch):
    uri = embedded_tracking_uri(tmp_path / "state")
    app = make_app(mlflow_tracking_uri=uri, production_alias="champion")
    assert isinstance(app.registry, MlflowRegistry)
    settle(app)  # the first run: trains, validates and promotes v1
    client = _client(uri)
    registered = client.get_registered_model("tiny")
    assert registered.aliases == {"champion": 1}
    version = client.get_model_version("tiny", "1")
    run = client.get_run(version.run_id)
    assert run.data.tags["mlops_run_id"] == version.tags["mlops_run_id"]
    assert {"roc_auc", "accuracy"} <= set(run.data.metrics)
    assert run.data.tags["mlops.data_fingerprint"].startswith("sha256:")

    # The command line reads the same registry through the same setting.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_PRODUCTION_ALIAS", "champion")
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(app.lifecycle.project.path))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    listed = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [only] = json.loads(listed.stdout)
    assert (only["model"], only["version"], only["stage"]) == ("tiny", 1, "production")
    shown = CliRunner().invoke(cli, ["models", "show", "production", "--json"])
    assert json.loads(shown.stdout)["version"] == 1


def test_an_mlflow_token_from_env_file_reaches_mlflow_and_no_log(make_app, tmp_path, monkeypatch, caplog):
    import os

    token = "mlflow-token-" + "z" * 24
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    app = make_app(mlflow_tracking_uri=embedded_tracking_uri(tmp_path / "state"), mlflow_tracking_token=token)
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == token  # MLflow reads credentials from the environment only
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    settle(app)
    assert token not in caplog.text and token not in app.out.getvalue()


def test_production_moved_in_mlflow_by_a_person_is_recorded_and_said_once(make_app, tmp_path):
    from pipeline.run import run_pipeline

    uri = embedded_tracking_uri(tmp_path / "state")
    app = make_app(mlflow_tracking_uri=uri)
    settle(app)  # v1 in production; the first look at the aliases only records them
    run_pipeline(app.lifecycle.project.path, app.registry, promote=False)  # v2, validated, not deployed
    _client(uri).set_registered_model_alias("tiny", "production", "2")  # someone, in MLflow's UI
    settle(app)
    settle(app)  # looked at again: nothing new
    said = [line for line in app.out.getvalue().splitlines() if "is now in production (was" in line]
    assert said == ["   │ 🚀 **tiny v2** is now in production (was v1)."]
    [external] = [p for p in app.registry.history("tiny") if p.started_by == "external"]
    assert (external.version, external.by) == (2, "outside mlops-bot")
    restored = app.registry.rollback("tiny", reason="v2 was put there by hand", trigger="cli")
    assert restored.version == 1  # the rollback goes back across the move nobody made through the bot


def _signed(secret: str, body: bytes, *, delivery: str = "d-1", at: int | None = None) -> dict[str, str]:
    import base64
    import hashlib
    import hmac
    import time

    stamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": "v1," + base64.b64encode(digest).decode(), "Content-Type": "application/json"}


def test_the_mlflow_webhook_wakes_the_bot_only_when_signed_with_its_secret(make_app, tmp_path):
    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    secret = "mlflow-hook-" + "s" * 20
    app = make_app(mlflow_tracking_uri=embedded_tracking_uri(tmp_path / "state"), mlflow_webhook_secret=secret)
    woken = []
    client = TestClient(create_app(app, wake=lambda: woken.append(1)))
    body = json.dumps({"entity": "model_version_alias", "action": "created", "timestamp": "2026-12-03T10:00:00Z",
                       "data": {"name": "tiny", "alias": "production", "version": "2"}}).encode()
    accepted = client.post("/webhooks/mlflow", content=body, headers=_signed(secret, body))
    assert (accepted.status_code, accepted.json()) == (202, {"status": "accepted",
                                                             "event": "model_version_alias.created"})
    tampered = client.post("/webhooks/mlflow", content=body.replace(b'"2"', b'"3"'), headers=_signed(secret, body))
    assert tampered.status_code == 401 and "signature does not match" in tampered.json()["error"]
    stale = client.post("/webhooks/mlflow", content=body, headers=_signed(secret, body, at=1))
    assert stale.status_code == 401 and "replay" in stale.json()["error"]
    other = json.dumps({"entity": "model_version", "action": "created", "data": {"name": "churn", "version": "1"}})
    ignored = client.post("/webhooks/mlflow", content=other, headers=_signed(secret, other.encode()))
    assert ignored.json()["status"] == "ignored"
    assert woken == [1]
    off = TestClient(create_app(make_app(mlflow_tracking_uri=embedded_tracking_uri(tmp_path / "state"))))
    refused = off.post("/webhooks/mlflow", content=body, headers=_signed(secret, body))
    assert refused.status_code == 403 and "MLFLOW_WEBHOOK_SECRET" in refused.json()["error"]


def test_a_retrain_for_a_drift_ticket_logs_the_episodes_drift_reports_with_its_mlflow_run(make_app, tmp_path):
    from tests.test_retrain_learns import retrain_ticket, say, write_batch

    uri = embedded_tracking_uri(tmp_path / "state")
    app = make_app(project_dir=_example_repository(tmp_path / "repo"), mlflow_tracking_uri=uri)
    app.run_once()  # v1 in production
    write_batch(app, "batch-001.csv", shift=1.5, seed=1, labels="in")
    app.run_once()  # drift: the episode's ticket, and its report under data_dir/reports/<model>/
    ticket = retrain_ticket(app)
    say(app, ticket.id, "/retrain labelled scans arrived")
    settle(app)

    v2 = _client(uri).get_model_version("breast-cancer", "2")
    logged = [item.path for item in _client(uri).list_artifacts(v2.run_id, "drift_reports")]
    assert len(logged) == 1 and logged[0].startswith("drift_reports/batch-001.csv")
    files = {Path(item.path).name for item in _client(uri).list_artifacts(v2.run_id, logged[0])}
    assert {"report.json", "report.md"} <= files
    # Only a retrain tied to the episode's ticket carries them: the first model's run has none.
    v1 = _client(uri).get_model_version("breast-cancer", "1")
    assert _client(uri).list_artifacts(v1.run_id, "drift_reports") == []


def test_production_removed_in_mlflow_is_said_once_even_when_the_bot_stops_before_saying_it(make_app, tmp_path,
                                                                                              monkeypatch):
    from bot.lifecycle import Lifecycle

    uri = embedded_tracking_uri(tmp_path / "state")
    app = make_app(mlflow_tracking_uri=uri)
    settle(app)  # v1 in production
    app.watch_registry()  # the bot sees v1 where it put it: nothing to say
    _client(uri).delete_registered_model_alias("tiny", "production")  # someone, in MLflow's UI

    # The next look records the removal on v1's tags, then the bot dies before the event is stored.
    handle = Lifecycle.handle

    def dies(self, event, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Lifecycle, "handle", dies)
    try:
        app.watch_registry()
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Lifecycle, "handle", handle)
    assert [m.action for m in app.registry.alias_history("tiny", "production")][-1] == "removed"

    settle(app)  # restarted: the recorded removal is found again and said
    settle(app)  # looked at again: nothing new
    said = [line for line in app.out.getvalue().splitlines() if "alias was removed outside mlops-bot" in line]
    assert said == [("   │ ⚠️ tiny: the production alias was removed outside mlops-bot (it was on v1); nothing is in "
                     "production until a version is promoted: `/deploy N` puts version N back.")]
    assert app.registry.production("tiny") is None

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(app.lifecycle.project.path))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    traced = CliRunner().invoke(cli, ["trace", "v1"])
    assert traced.exit_code == 0, traced.output
    assert "removed_from_production_by → registry:outside mlops-bot:production@" in traced.output
