"""Operators' view: /readyz, /metrics after a small scenario, and JSON logs with their ids and no secret."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bot.logs import configure_logging, log_context, redact
from bot.settings import Settings
from bot.webhooks import create_app
from tests.conftest import settle, tiny_frame

REPO = "acme/model"
SECRET = "webhook-secret-0123456789"
SIGNING = "slack-signing-secret-0123456789"
CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")


@pytest.fixture
def services(github_emulator, slack_emulator, azure_devops_emulator):
    github_emulator.state.add_repo(REPO)
    for login, role in [("alice", "admin"), ("bob", "write"), ("mlops-bot[bot]", "write")]:
        github_emulator.state.add_collaborator(REPO, login, role)
    for name in CHANNELS:
        slack_emulator.state.add_channel(name)
    azure_devops_emulator.state.add_project("proj")
    return github_emulator, slack_emulator, azure_devops_emulator


@pytest.fixture
def bot(services, make_app):
    github, slack, azure = services
    return make_app(github_repository=REPO, github_token=github.token, github_api_url=github.base_url,
                    github_timeout_s=2, github_webhook_secret=SECRET, project_paths=["models/tiny"],
                    slack_bot_token=slack.token, slack_api_url=slack.base_url, slack_signing_secret=SIGNING,
                    azure_devops_org_url=azure.base_url, azure_devops_pat=azure.pat, azure_devops_project="proj")


def deliver_comment(client: TestClient, github, number: int, body: str, delivery: str) -> int:
    comment_id = github.state.add_comment(REPO, number, "bob", body)
    comment = github.state.comment(comment_id)
    payload = {"action": "created", "repository": {"full_name": REPO}, "issue": {"number": number, "title": "Q"},
               "comment": {"id": comment_id, "body": body, "user": {"login": "bob", "type": "User"},
                           "created_at": comment.created_at.isoformat(), "updated_at": comment.created_at.isoformat(),
                           "html_url": f"https://github.com/{REPO}/issues/{number}#issuecomment-{comment_id}"}}
    raw = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    answer = client.post("/webhooks/github", content=raw, headers={
        "X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature,
        "Content-Type": "application/json"})
    assert answer.status_code == 202, answer.text
    return comment_id


def drifted_batch(app, name: str = "b1.csv") -> None:
    frame = tiny_frame(300, seed=1).drop(columns=["label"])
    frame["x1"] += 3.0
    app.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(app.settings.batches_dir / name, index=False)


# --- /readyz --------------------------------------------------------------------------------------


def test_readyz_is_ready_when_the_store_and_every_service_answer_and_names_the_one_that_does_not(services, bot):
    _github, slack, _azure = services
    client = TestClient(create_app(bot))
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ready",
                             "checks": {"state": "ok", "github": "ok", "slack": "ok", "azure": "ok"}}

    slack.stop()
    assert client.get("/readyz").status_code == 200  # kept a few seconds: a probe storm costs the services nothing
    bot.observability.readiness.ttl_s = 0
    answer = client.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "not ready" and body["not_ready"] == ["slack"], body
    assert body["checks"]["github"] == body["checks"]["state"] == body["checks"]["azure"] == "ok"
    assert client.get("/healthz").json() == {"status": "ok"}  # alive all the same
    assert slack.token not in answer.text


def test_readyz_on_embedded_defaults_checks_the_state_store_only(make_app, monkeypatch):
    from bot.store import StoreError

    app = make_app()
    client = TestClient(create_app(app))
    answer = client.get("/readyz")
    assert answer.status_code == 200 and answer.json()["checks"] == {"state": "ok"}

    def gone(_key):
        raise StoreError("state database db.example:5432 cannot be opened: connection refused")

    monkeypatch.setattr(app.store, "seen", gone)
    app.observability.readiness.ttl_s = 0
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json()["not_ready"] == ["state"]
    assert "connection refused" in answer.json()["checks"]["state"]


# --- /metrics -------------------------------------------------------------------------------------


NAMED_SERIES = [
    ("mlops_bot_events_seen_total", {"source": "github", "kind": "command"}),
    ("mlops_bot_events_handled_total", {"source": "github", "kind": "command"}),
    ("mlops_bot_events_handled_total", {"source": "monitor", "kind": "drift_found"}),
    ("mlops_bot_effects_delivered_total", {"kind": "scm.reply"}),
    ("mlops_bot_effects_delivered_total", {"kind": "tracker.drift"}),
    ("mlops_bot_effects_failed_total", {"kind": "scm.reply", "error": "transient"}),
    ("mlops_bot_effect_delivery_seconds_count", {"kind": "pipeline.run"}),
    ("mlops_bot_outbox_pending_effects", {}),
    ("mlops_bot_outbox_dead_effects", {}),
    ("mlops_bot_outbox_oldest_pending_age_seconds", {}),
    ("mlops_bot_api_requests_total", {"service": "github", "status": "200"}),
    ("mlops_bot_api_requests_total", {"service": "github", "status": "502"}),
    ("mlops_bot_api_requests_total", {"service": "slack", "status": "200"}),
    ("mlops_bot_api_requests_total", {"service": "azure", "status": "200"}),
    ("mlops_bot_github_rate_limit_remaining", {"resource": "core"}),
    ("mlops_bot_pipeline_runs_total", {"model": "tiny", "outcome": "succeeded"}),
    ("mlops_bot_pipeline_run_duration_seconds_count", {"model": "tiny", "outcome": "succeeded"}),
    ("mlops_bot_drift_checks_total", {"model": "tiny", "outcome": "drift"}),
    ("mlops_bot_drift_severity", {"model": "tiny"}),
    ("mlops_bot_drift_detected", {"model": "tiny"}),
    ("mlops_bot_drift_drifted_features", {"model": "tiny"}),
    ("mlops_bot_drift_feature_drifted", {"model": "tiny", "feature": "x1"}),
    ("mlops_bot_drift_last_check_timestamp_seconds", {"model": "tiny"}),
    ("mlops_bot_state_store_up", {}),
]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_each_named_series_after_a_small_scenario(services, bot):
    github, _slack, _azure = services
    client = TestClient(create_app(bot))
    settle(bot)  # the first model: a pipeline run
    number = github.state.open_issue(REPO, "Question", "", "bob")
    github.faults.add(r"POST /repos/acme/model/issues/\d+/comments", 502)  # the first reply fails once
    deliver_comment(client, github, number, "/status", "d-1")
    settle(bot)
    drifted_batch(bot)
    settle(bot)  # drift: a work item on Azure Boards, an alert in Slack

    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    missing = [(name, labels) for name, labels in NAMED_SERIES if (name, frozenset(labels.items())) not in found]
    assert not missing, f"missing series: {missing}"
    value = lambda name, **labels: found[(name, frozenset(labels.items()))]  # noqa: E731
    assert value("mlops_bot_events_handled_total", source="github", kind="command") >= 1  # and the bot's own replies
    assert value("mlops_bot_pipeline_runs_total", model="tiny", outcome="succeeded") == 1
    assert value("mlops_bot_effects_failed_total", kind="scm.reply", error="transient") == 1
    assert value("mlops_bot_outbox_pending_effects") == 0
    assert value("mlops_bot_drift_detected", model="tiny") == 1 and value("mlops_bot_drift_severity", model="tiny") >= 1
    assert value("mlops_bot_state_store_up") == 1
    assert 0 < value("mlops_bot_github_rate_limit_remaining", resource="core") <= 5000


def test_each_bot_counts_in_its_own_registry(make_app, tmp_path):
    first, second = make_app(), make_app(data_dir=tmp_path / "other")
    first.run_once()
    first_text = TestClient(create_app(first)).get("/metrics").text
    second_text = TestClient(create_app(second)).get("/metrics").text
    assert 'mlops_bot_events_handled_total{kind="run_finished",source="bot"} 1.0' in first_text
    assert "mlops_bot_events_handled_total{" not in second_text


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def json_logs():
    stream = io.StringIO()
    handlers = []

    def start(settings: Settings) -> io.StringIO:
        handlers.append(configure_logging(settings, stream=stream))
        return stream

    root, level = logging.getLogger(), logging.getLogger().level
    yield start
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


def test_json_logs_parse_carry_the_event_effect_and_run_and_never_a_secret(services, bot, json_logs):
    github, slack, azure = services
    stream = json_logs(bot.settings.model_copy(update={"log_format": "json"}))
    client = TestClient(create_app(bot))
    settle(bot)  # the first run: its delivery is logged with its run id
    number = github.state.open_issue(REPO, "Question", "", "bob")
    github.faults.add(r"POST /repos/acme/model/issues/\d+/comments", 502)
    deliver_comment(client, github, number, "/status", "d-1")
    settle(bot)
    # Secrets that reach a log call anyway are masked, whatever the format.
    logging.getLogger("mlops_bot.test").warning("calling with %s and %s", github.token, f"Bearer {slack.token}")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    retried = [line for line in lines if "failed (TransientError)" in line["message"]]
    assert retried and retried[0]["level"] == "WARNING"
    assert retried[0]["effect"].startswith("cmd:github:acme/model:")
    assert retried[0]["event"].startswith("github:comment:acme/model:")
    runs = [line for line in lines if line.get("run") == "run-bootstrap-tiny"]
    assert runs and all(line["effect"] for line in runs)
    text = stream.getvalue()
    for secret in (github.token, slack.token, SECRET, SIGNING, azure.pat):
        assert secret not in text
    assert "***" in lines[-1]["message"] and "event" not in lines[-1]


def test_text_logs_are_readable_lines_with_the_ids_in_brackets():
    settings = Settings(_env_file=None, github_webhook_secret="s3cret-value-here")
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    try:
        with log_context(event="github:comment:acme/model:7", effect="reply:7"):
            logging.getLogger("mlops_bot.outbox").warning("posting with s3cret-value-here")
        logging.getLogger("mlops_bot.outbox").warning("no context")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert first.endswith("mlops_bot.outbox: posting with *** [event=github:comment:acme/model:7 effect=reply:7]")
    assert second.endswith("mlops_bot.outbox: no context")


@pytest.mark.parametrize("text, hidden", [
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
    ("xoxb-1234-5678-abcdefgh failed", "xoxb-1234-5678-abcdefgh"),
    ("postgresql+psycopg://bot:hunter2@db/state", "hunter2"),
    ('{"Authorization": "Bearer abc.def.ghi"}', "abc.def.ghi"),
])
def test_token_shaped_strings_are_masked_even_when_not_configured(text, hidden):
    assert hidden not in redact(text)
