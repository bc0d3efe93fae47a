"""The bot's chat on Slack: the real slack-sdk against the emulator, over a whole lifecycle."""

from __future__ import annotations

import re
from functools import partial

import pytest

from integrations.ports import Target
from tests.conftest import PROJECT, tiny_frame
from tests.conftest import settle as _settle
from tests.test_bot import commit

CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")
settle = partial(_settle, rounds=40)  # a whole lifecycle has more rounds of work


@pytest.fixture
def slack(slack_emulator):
    for name in CHANNELS:
        slack_emulator.state.add_channel(name)
    return slack_emulator


@pytest.fixture
def bot(slack, make_app):
    return make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url)



def drift(app, name: str, seed: int) -> None:
    frame = tiny_frame(300, seed=seed, x1_shift=1.5)
    if name != "b1.csv":  # the first batch is labelled: a retrain has something to learn
        frame = frame.drop(columns=["label"])
    app.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(app.settings.batches_dir / name, index=False)


def test_a_lifecycle_reads_as_one_message_per_episode_with_its_thread(slack, bot, repo):
    settle(bot)  # the first model
    commit(repo, f"{PROJECT}/notes.md", "tuned\n", "Tune the model")
    settle(bot)  # a merge and its run
    drift(bot, "b1.csv", 1)
    settle(bot)
    drift(bot, "b2.csv", 2)
    settle(bot)
    ticket = bot.tracker.tickets(state="open")[0]
    bot.scm.add_comment(Target("ticket", bot.scm.repo, ticket.id), "/retrain")
    settle(bot)

    pipeline = slack.state.messages("mlops-pipeline")
    assert len(pipeline) == 2  # the first model, and the merge: one top-level message each
    assert all(message.replies for message in pipeline)
    merge_message = pipeline[1]
    assert merge_message.updated >= 1 and "succeeded" in merge_message.text  # updated in place as it moved

    alerts = slack.state.messages("mlops-alerts")
    assert len(alerts) == 1  # one drift episode, one message, however many batches and steps
    episode = alerts[0]
    assert "restored with v3" in episode.text and "ticket:1 closed" in episode.text
    assert any(file.name == "report.png" for reply in episode.replies for file in reply.files) or any(
        file.name == "report.png" for file in episode.files)
    assert any("closed" in reply.text for reply in episode.replies)
    assert all(message.metadata is None or "mlops-bot:" not in message.text for message in alerts)


def test_a_rate_limited_slack_delays_but_loses_nothing(slack, bot):
    slack.faults.add("chat.postMessage", "429", times=3, retry_after=60)
    settle(bot)
    pipeline = slack.state.messages("mlops-pipeline")
    assert len(pipeline) == 1 and len(pipeline[0].replies) == 1
    assert bot.store.effects(status="dead") == []


# --- /mlops slash commands ----------------------------------------------------------------------

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def web(slack, make_app):
    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    app = make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url, slack_signing_secret=SIGNING_SECRET,
                   slack_permissions={"U_MAYA": "maintain", "U_BOB": "write"})
    settle(app)
    client = TestClient(create_app(app))
    client.bot = app
    return client


def slash(client, text: str, user: str = "U_BOB", *, secret: str = SIGNING_SECRET, age: float = 0):
    import hashlib
    import hmac
    import urllib.parse

    channel = client.bot.chat._channel_id("mlops-pipeline")
    body = urllib.parse.urlencode({"command": "/mlops", "text": text, "user_id": user, "user_name": user.lower(),
                                   "channel_id": channel, "trigger_id": f"{user}.{text}.{age}",
                                   "response_url": "https://hooks.slack.invalid/x"}).encode()
    timestamp = str(int(client.bot.clock().timestamp() - age))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/slack/commands", content=body, headers={
        "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded"})


def test_slash_retrain_is_acknowledged_at_once_and_answered_in_a_thread(slack, web):
    labelled = tiny_frame(200, seed=5)  # labelled production rows: the retrain has something new to learn
    web.bot.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    labelled.to_csv(web.bot.settings.batches_dir / "labelled.csv", index=False)
    answer = slash(web, "retrain fresh data")
    assert answer.status_code == 200
    said = "On it: `/mlops retrain fresh data`. I'll answer in a thread in this channel."
    assert answer.json() == {"response_type": "ephemeral", "text": said,
                             "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": said}}]}
    settle(web.bot)
    assert web.bot.registry.production("tiny").version == 2
    messages = slack.state.messages("mlops-pipeline")
    assert len(messages) == 2  # the first model's episode, and this command's: one top-level message each
    command = messages[1]
    assert "Retraining" in command.edits[0].text  # the acknowledgement, then updated in place with the outcome
    assert "succeeded: tiny v2" in command.text
    assert any("Model *tiny v2* is now in production" in reply.text for reply in command.replies)


def test_a_slash_commands_answer_in_the_channel_hints_commands_as_typed_in_slack(slack, web):
    answer = slash(web, "deploy", "U_MAYA")  # work, not a read: answered in a thread, not ephemerally
    assert answer.status_code == 200 and answer.json()["text"].startswith("On it")
    settle(web.bot)
    # The command's first answer starts its thread in the channel (later ones are replies in it).
    said = "\n".join(m.text for m in slack.state.messages("mlops-pipeline") if "has no candidate" in m.text)
    assert "`/mlops retrain`" in said and "`/mlops deploy &lt;version&gt;`" in said
    assert not re.search(r"`/(?!mlops)", said)


@pytest.mark.parametrize(
    ("text", "user", "expected"),
    [("deploy 1", "U_BOB", "needs *maintain* permission"), ("retrain", "U_RITA", "needs *write* permission"),
     ("retrian", "U_BOB", "/mlops retrain"), ("status", "U_RITA", "tiny"), ("", "U_RITA", "/mlops rollback [reason]")],
)
def test_slash_refusals_hints_and_read_only_answers_are_ephemeral_and_store_nothing(web, text, user, expected):
    before = len(web.bot.store.events())
    answer = slash(web, text, user)
    assert answer.status_code == 200 and answer.json()["response_type"] == "ephemeral"
    # Written as Slack shows it: mrkdwn (*bold*, not **bold**), hints typed as in Slack (/mlops retrain).
    shown = "\n".join(block["text"]["text"] for block in answer.json()["blocks"] if block["type"] == "section")
    assert expected in shown and "**" not in shown
    assert not re.search(r"`/(?!mlops)", shown)
    assert len(web.bot.store.events()) == before


@pytest.mark.parametrize(("kwargs", "status"), [({"secret": "wrong"}, 401), ({"age": 600}, 401)])
def test_slash_commands_with_a_bad_signature_or_an_old_timestamp_get_401(web, kwargs, status):
    answer = slash(web, "retrain", **kwargs)
    assert answer.status_code == status
    assert web.bot.store.events(kind="command") == []


def test_a_projects_own_channels_take_its_messages(slack, make_app):
    slack.state.add_channel("tiny-ci")
    app = make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url,
                   slack_channels={"mlops-pipeline": "#mlops-alerts"},
                   slack_project_channels={"tiny": {"mlops-pipeline": "#tiny-ci"}, "churn": {"mlops-pipeline": "#x"}})
    settle(app)
    assert len(slack.state.messages("tiny-ci")) == 1  # the first model's run, in the project's channel
    assert slack.state.messages("mlops-pipeline") == [] and slack.state.messages("mlops-alerts") == []


def test_doctor_checks_the_projects_own_channels(slack, make_app):
    from bot.app import _slack

    app = make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url,
                   slack_project_channels={"tiny": {"mlops-alerts": "#tiny-alerts"}})
    checks = _slack(app.settings).diagnose(["mlops-alerts"])  # as `mlops-bot doctor` builds it
    assert any("#tiny-alerts" in what and problem and "not found" in problem for what, problem, _fix in checks)


def _signed_slash(client, body: bytes):
    import hashlib
    import hmac

    timestamp = str(int(client.bot.clock().timestamp()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/slack/commands", content=body, headers={
        "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize(("text", "user", "expected"), [
    ("Hi", "W111", "`/mlops Hi` is not a command I know"),  # the recording's text: a hint, as typed in Slack
    ("status", "W111", "tiny"),  # a read anyone may do, answered from the recording's own fields
    ("deploy+1", "W111", "needs *maintain* permission"),  # an Enterprise Grid user (W…) not given it
])
def test_slacks_recorded_slash_command_body_is_read_field_for_field(web, text, user, expected):
    """Slack's own recorded body (refdata: slash-command.body.txt: enterprise fields, a W… user, a
    response_url) signed over its exact bytes, with only its text, channel and command name changed
    (the app's slash command is /mlops, README)."""
    from tests.emulators.fixtures import refdata_dir

    recorded = (refdata_dir() / "slack" / "payloads" / "slash-command.body.txt").read_text().strip()
    assert "&text=Hi&" in recorded and "channel_id=C111&" in recorded and f"user_id={user}&" in recorded
    channel = web.bot.chat._channel_id("mlops-pipeline")
    body = recorded.replace("&text=Hi&", f"&text={text}&").replace("channel_id=C111&", f"channel_id={channel}&")
    body = body.replace("command=%2Fhello-world&", "command=%2Fmlops&")
    before = len(web.bot.store.events())
    answer = _signed_slash(web, body.encode())
    assert answer.status_code == 200, answer.text
    assert answer.json()["response_type"] == "ephemeral"
    shown = "\n".join(block["text"]["text"] for block in answer.json()["blocks"] if block["type"] == "section")
    assert expected in shown
    assert len(web.bot.store.events()) == before  # a hint, a read and a refusal store nothing
