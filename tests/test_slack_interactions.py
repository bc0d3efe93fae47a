"""Buttons on the bot's Slack messages, end to end: the real slack-sdk against the Slack emulator,
clicks (the payloads the emulator builds from the posted blocks) signed and sent to the web app."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from functools import partial

import pytest

from tests.conftest import settle as _settle
from tests.test_slack_bot import drift, slash

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")
PEOPLE = ("maya", "bob", "carol", "rita")
settle = partial(_settle, rounds=40)


@pytest.fixture
def slack(slack_emulator):
    for name in CHANNELS:
        slack_emulator.state.add_channel(name, members=PEOPLE)
    slack_emulator.state.add_usergroup("ml-leads", members=["carol"])
    return slack_emulator


@pytest.fixture
def web(slack, make_app):
    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    people = {name: slack.state.user(name).id for name in PEOPLE}
    # maya by id, bob by name, carol through her group; rita is nobody (read).
    app = make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url, slack_signing_secret=SECRET,
                   slack_permissions={people["maya"]: "maintain", "bob": "write", "@ml-leads": "admin"})
    settle(app)  # the first model, deployed
    client = TestClient(create_app(app))
    client.bot, client.people = app, people
    return client


def press(web, payload: dict, *, secret: str = SECRET, age: float = 0, body: bytes | None = None):
    """Slack posting a click to the interactivity URL, signed with ``secret`` ``age`` seconds ago."""
    raw = body if body is not None else urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(web.bot.clock().timestamp() - age))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return web.post("/webhooks/slack/interactions", content=raw, headers={
        "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded"})


def slack_commands(app) -> list[str]:
    return [e.key for e in app.store.events(kind="command") if e.key.startswith("slack:")]


def buttons(message) -> list[str]:
    return [e["action_id"] for b in message.blocks or () if b["type"] == "actions" for e in b["elements"]]


def with_button(slack, channel: str, action_id: str):
    found = [m for m in slack.state.messages(channel) if action_id in buttons(m)]
    assert found, f"no message in {channel} shows {action_id}:\n{slack.state.transcript(channel)}"
    return found[-1]


def test_the_first_deployment_offers_to_roll_back(slack, web):
    (first,) = slack.state.messages("mlops-pipeline")
    assert buttons(first) == ["mlops:rollback"] and "promoted to production" in first.text


def test_retrain_on_a_drift_alert_is_done_once_and_answered_in_the_alerts_thread(slack, web):
    app = web.bot
    drift(app, "b1.csv", 1)
    settle(app)
    (alert,) = slack.state.messages("mlops-alerts")
    assert buttons(alert) == ["mlops:retrain"]
    pipeline = len(slack.state.messages("mlops-pipeline"))

    payload = slack.state.click("mlops-alerts", alert.ts, "mlops:retrain", "bob")
    answer = press(web, payload)
    # Slack wants the answer within 3 s, so it must not wait for the work: the retrain is only
    # stored when the click is answered (how fast is benchmarks/slack_bench.py's to measure).
    assert answer.status_code == 200 and app.registry.production("tiny").version == 1
    assert [e.kind for e in app.store.effects(status="pending") if e.kind == "pipeline.run"] == ["pipeline.run"]
    assert press(web, payload).status_code == 200  # Slack sends the same click again
    assert press(web, slack.state.click("mlops-alerts", alert.ts, "mlops:retrain", "maya")).status_code == 200
    assert slack_commands(app) == [f"slack:comment:{alert.channel}:click:{payload['trigger_id']}"]
    (already,) = slack.state.ephemeral("mlops-alerts")
    assert already.user == web.people["maya"] and "Already on it" in already.text

    settle(app)
    assert app.registry.production("tiny").version == 2
    (alert,) = slack.state.messages("mlops-alerts")  # still the one message, updated in place
    assert "with v2" in alert.text and "closed" in alert.text and buttons(alert) == []  # nothing left to retrain
    replies = [reply.text for reply in alert.replies]
    assert any(text.startswith("Retraining *tiny*") for text in replies)
    assert any("Run `run-" in text and "succeeded: tiny v2" in text for text in replies)
    assert len(slack.state.messages("mlops-pipeline")) == pipeline  # the click's run has no message of its own
    assert len(slack_commands(app)) == 1


def test_deploy_a_validated_candidate_then_roll_it_back(slack, web):
    app, people = web.bot, web.people
    assert slash(web, "validate", people["maya"]).status_code == 200
    settle(app)
    candidate = with_button(slack, "mlops-pipeline", "mlops:deploy")
    assert "succeeded: tiny v2" in candidate.text and app.registry.production("tiny").version == 1

    events = len(app.store.events())
    assert press(web, slack.state.click("mlops-pipeline", candidate.ts, "mlops:deploy", "rita")).status_code == 200
    refused = slack.state.ephemeral("mlops-pipeline")[-1]
    assert refused.user == people["rita"]
    assert "*Deploy* (`/deploy`) needs *maintain* permission" in refused.text
    assert f"<@{people['maya']}>" in refused.text and "@ml-leads" in refused.text and "@bob" not in refused.text
    assert len(app.store.events()) == events  # nothing stored

    assert press(web, slack.state.click("mlops-pipeline", candidate.ts, "mlops:deploy", "carol")).status_code == 200
    settle(app)
    assert app.registry.production("tiny").version == 2  # carol is admin through @ml-leads
    thread = [reply.text for reply in slack.state.message("mlops-pipeline", candidate.ts).replies]
    assert any(text.startswith("Deploying v2 of *tiny*") for text in thread)
    assert any("*tiny v2* is now in production" in text for text in thread)

    deployment = with_button(slack, "mlops-pipeline", "mlops:rollback")
    assert "tiny v2" in deployment.text and deployment.ts != candidate.ts
    press(web, slack.state.click("mlops-pipeline", deployment.ts, "mlops:rollback", "maya"))
    settle(app)
    assert app.registry.production("tiny").version == 1
    thread = [reply.text for reply in slack.state.message("mlops-pipeline", deployment.ts).replies]
    assert any(text.startswith("Rolling *tiny* back from v2 to v1") for text in thread)
    assert any("Rolled back *tiny* to v1" in text for text in thread)

    events = len(app.store.events())
    press(web, slack.state.click("mlops-pipeline", deployment.ts, "mlops:rollback", "maya"))  # a stale button
    assert "*tiny v2* is no longer in production (v1 is)" in slack.state.ephemeral("mlops-pipeline")[-1].text
    assert len(app.store.events()) == events


def test_slash_commands_read_user_groups_too(slack, web):
    answer = slash(web, "rollback", web.people["carol"])
    assert answer.json()["text"].startswith("On it")


@pytest.mark.parametrize("kwargs", [{"secret": "not the signing secret"}, {"age": 301}, {"age": -400}])
def test_a_bad_signature_or_an_old_timestamp_is_401_and_nothing_is_done(slack, web, kwargs):
    (first,) = slack.state.messages("mlops-pipeline")
    events = len(web.bot.store.events())
    answer = press(web, slack.state.click("mlops-pipeline", first.ts, "mlops:rollback", "maya"), **kwargs)
    assert answer.status_code == 401
    assert len(web.bot.store.events()) == events and slack.state.ephemeral() == []
    settle(web.bot)
    assert web.bot.registry.production("tiny").version == 1


def test_without_a_signing_secret_buttons_are_off(slack, make_app):
    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    client = TestClient(create_app(make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url)))
    answer = client.post("/webhooks/slack/interactions", content=b"payload=%7B%7D")
    assert answer.status_code == 403 and "SLACK_SIGNING_SECRET" in answer.json()["error"]


def test_other_interactions_are_ignored_and_malformed_ones_refused(slack, web):
    (first,) = slack.state.messages("mlops-pipeline")
    click = slack.state.click("mlops-pipeline", first.ts, "mlops:rollback", "maya")
    foreign = {**click, "actions": [{**click["actions"][0], "action_id": "other-app:go"}]}
    forged = {**click, "actions": [{**click["actions"][0], "value": '{"command": "rm -rf"}'}]}
    assert press(web, {"type": "view_submission"}).json()["status"] == "ignored"
    assert press(web, foreign).json()["status"] == "ignored"
    assert press(web, forged).json()["status"] == "ignored"
    assert press(web, {}, body=b"text=hello").status_code == 400
    assert press(web, {}, body=b"payload=not+json").status_code == 400
    assert slack_commands(web.bot) == []


def test_a_button_of_another_model_is_refused(slack, web):
    (first,) = slack.state.messages("mlops-pipeline")
    click = slack.state.click("mlops-pipeline", first.ts, "mlops:rollback", "maya")
    click["actions"][0]["value"] = json.dumps({"command": "rollback", "model": "churn", "version": 1})
    assert press(web, click).status_code == 200
    assert "This button is for *churn*" in slack.state.ephemeral("mlops-pipeline")[-1].text
    assert slack_commands(web.bot) == []


def test_a_refusal_goes_through_response_url_when_chat_cannot_whisper(slack, web):
    (first,) = slack.state.messages("mlops-pipeline")
    click = slack.state.click("mlops-pipeline", first.ts, "mlops:rollback", "stranger")  # not in the channel
    assert press(web, click).status_code == 200
    assert slack.state.ephemeral() == []  # chat.postEphemeral refused: the user is not in the channel
    (answer,) = slack.state.responses
    assert answer.body["response_type"] == "ephemeral" and answer.body["replace_original"] is False
    assert answer.body["text"].startswith("*Roll back* (`/rollback`) needs *maintain* permission")


def test_the_readme_manifest_points_slack_at_the_routes_the_app_serves(web):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    manifest = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    urls = re.findall(r"(?:url|request_url): https://YOUR-HOST(\S+)", manifest)
    assert urls == ["/webhooks/slack/commands", "/webhooks/slack/interactions"]
    assert all(web.post(path, content=b"").status_code == 401 for path in urls)  # served, and signed
    assert re.search(r"interactivity:\s+is_enabled: true", manifest) and "usergroups:read" in manifest
