"""The Slack emulator, driven by the real slack-sdk ``WebClient``.

Every method the bot uses is called the way slack-sdk calls it; errors, rate limits, faults and
the upload of ``files_upload_v2`` are observed through the SDK's own exceptions and retry
handlers; and every answer is checked against Slack's OpenAPI description in ../shared/refdata
(the fixture checks what the emulator serves; those checks are off when the folder is absent).
"""

from __future__ import annotations

import http.client
import json
import re
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler

from tests.emulators.fixtures import (  # noqa: F401 - kept for running this file alone
    no_proxy_for_loopback,
    refdata_dir,
    slack_emulator,
)
from tests.emulators.framework import Clock
from tests.emulators.slack import METHODS, SlackEmulator, block_problems, slack_schemas, validate_answer

pytestmark = [
    pytest.mark.usefixtures("no_proxy_for_loopback"),
    pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
MARKER = {"event_type": "mlops_bot", "event_payload": {"marker": "episode:run:1"}}


def client(emulator: SlackEmulator, token: str | None = "default", **options: Any) -> WebClient:
    """slack-sdk's WebClient on the emulator, without retry handlers unless given."""
    options.setdefault("retry_handlers", [])
    return WebClient(token=emulator.token if token == "default" else token, base_url=emulator.base_url, **options)


def png(width: int = 4, height: int = 2) -> bytes:
    """A small valid PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\x00" + b"\xcc\x22\x22" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


@pytest.fixture
def world(slack_emulator: SlackEmulator) -> SimpleNamespace:  # noqa: F811 - the imported fixture
    """The bot's channels, one it is not in, a private one, an archived one, and two people."""
    s = slack_emulator.state
    return SimpleNamespace(
        emulator=slack_emulator,
        slack=client(slack_emulator),
        pipeline=s.add_channel("mlops-pipeline", members=["alice", "bob"], topic="Model runs"),
        alerts=s.add_channel("mlops-alerts", members=["alice"]),
        outside=s.add_channel("random", member=False, members=["bob"]),
        secret=s.add_channel("ml-private", private=True, member=False, members=["alice"]),
        old=s.add_channel("old-runs", archived=True),
        alice=s.user("alice"),
        bob=s.user("bob"),
    )


def error_of(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SlackApiError) as failed:
        call()
    return failed.value.response.status_code, failed.value.response.data


# ---------------------------------------------------------------------------
# The methods, through slack-sdk


def test_auth_test_names_the_bot_and_its_scopes(world: SimpleNamespace) -> None:
    answer = world.slack.auth_test()
    bot = world.emulator.bot
    assert (answer["user"], answer["user_id"], answer["bot_id"], answer["team_id"]) == (
        "mlops-bot", bot.id, bot.bot_id, world.emulator.team_id)
    assert answer["url"] == world.emulator.url + "/"
    assert "chat:write" in answer.headers["X-OAuth-Scopes"].split(",")


@pytest.mark.parametrize(("token", "error"), [("xoxb-wrong", "invalid_auth"), (None, "not_authed")])
def test_bad_tokens_are_refused(world: SimpleNamespace, token: str | None, error: str) -> None:
    assert error_of(lambda: client(world.emulator, token).auth_test()) == (200, {"ok": False, "error": error})


def test_a_revoked_token_is_refused(world: SimpleNamespace) -> None:
    world.emulator.add_token("xoxb-old", "mlops-bot")
    client(world.emulator, "xoxb-old").auth_test()
    world.emulator.revoke_token("xoxb-old")
    assert error_of(lambda: client(world.emulator, "xoxb-old").auth_test())[1]["error"] == "token_revoked"


def test_post_update_and_reply_are_kept_as_a_person_reads_them(world: SimpleNamespace) -> None:
    slack, channel = world.slack, world.pipeline.id
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*⏳ running*"}}]
    posted = slack.chat_postMessage(channel="#mlops-pipeline", text="running", blocks=blocks, metadata=MARKER)
    assert posted["channel"] == channel  # a name is taken and answered with the id
    ts = posted["ts"]
    assert re.fullmatch(r"\d{10}\.\d{6}", ts)
    assert posted["message"]["blocks"] == blocks and "metadata" not in posted["message"]
    reply = slack.chat_postMessage(channel=channel, thread_ts=ts, text="trained", metadata={
        "event_type": "mlops_bot", "event_payload": {"marker": "step:1"}})
    assert (reply["message"]["thread_ts"], reply["message"]["parent_user_id"]) == (ts, world.emulator.bot.id)
    updated = slack.chat_update(channel=channel, ts=ts, text="✅ succeeded")
    assert (updated["ts"], updated["text"]) == (ts, "✅ succeeded")
    world.emulator.state.post(channel, "nice", "alice", thread_ts=ts)

    (parent,) = world.emulator.state.messages(channel)
    assert (parent.text, parent.blocks, parent.marker, parent.updated) == ("✅ succeeded", blocks, "episode:run:1", 1)
    assert parent.edits[0].text == "running"
    assert [r.text for r in parent.replies] == ["trained", "nice"]
    assert [m.ts for m in world.emulator.state.thread(channel, ts)] == [ts, reply["ts"], parent.replies[1].ts]
    assert world.emulator.state.transcript(channel) == (
        "mlops-bot: ✅ succeeded (edited)\n    ↳ mlops-bot: trained\n    ↳ alice: nice")

    history = slack.conversations_history(channel=channel, include_all_metadata=True)["messages"]
    assert [(m["ts"], m["reply_count"], m["metadata"]["event_payload"]["marker"]) for m in history] == [
        (ts, 2, "episode:run:1")]
    assert history[0]["edited"]["user"] == world.emulator.bot.id
    assert "metadata" not in slack.conversations_history(channel=channel)["messages"][0]
    thread = slack.conversations_replies(channel=channel, ts=ts, include_all_metadata=True)["messages"]
    assert [m["text"] for m in thread] == ["✅ succeeded", "trained", "nice"]
    assert thread[1]["metadata"]["event_payload"] == {"marker": "step:1"}


def test_update_keeps_what_it_is_not_given_and_can_drop_metadata(world: SimpleNamespace) -> None:
    slack, channel = world.slack, world.pipeline.id
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "old"}}]
    ts = slack.chat_postMessage(channel=channel, text="old", blocks=blocks, metadata=MARKER)["ts"]
    slack.chat_update(channel=channel, ts=ts, text="new")
    message = world.emulator.state.message(channel, ts)
    assert (message.text, message.blocks, message.marker) == ("new", blocks, "episode:run:1")
    slack.chat_update(channel=channel, ts=ts, text="newer", blocks=[], metadata={})
    assert (message.text, message.blocks, message.metadata) == ("newer", None, None)


@pytest.mark.parametrize(("arguments", "error"), [
    ({"channel": "nowhere", "text": "x"}, "channel_not_found"),
    ({"channel": "ml-private", "text": "x"}, "channel_not_found"),  # private, and the bot is not in it
    ({"channel": "random", "text": "x"}, "not_in_channel"),
    ({"channel": "old-runs", "text": "x"}, "is_archived"),
    ({"channel": "mlops-alerts", "text": "x" * 40_001}, "msg_too_long"),
    ({"channel": "mlops-alerts"}, "no_text"),
    ({"channel": "mlops-alerts", "text": "x", "thread_ts": "1000000000.000001"}, "thread_not_found"),
    ({"channel": "mlops-alerts", "text": "x", "metadata": {"event_payload": {}}}, "invalid_metadata_format"),
    ({"channel": "mlops-alerts", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
     "invalid_blocks"),
])
def test_post_errors_are_slacks(world: SimpleNamespace, arguments: dict[str, Any], error: str) -> None:
    status, body = error_of(lambda: world.slack.chat_postMessage(**arguments))
    assert (status, body["ok"], body["error"]) == (200, False, error)
    assert world.emulator.state.messages("mlops-alerts") == []


def test_invalid_blocks_say_what_is_wrong(world: SimpleNamespace) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}, {"type": "nonsense"}]
    _, body = error_of(lambda: world.slack.chat_postMessage(channel=world.alerts.id, blocks=blocks))
    assert body["errors"] == ["must be more than 0 characters [json-pointer:/blocks/0/text/text]",
                              "unsupported type: nonsense [json-pointer:/blocks/1/type]"]
    assert body["response_metadata"]["messages"][0].startswith("[ERROR] ")
    assert block_problems([{"type": "divider"}] * 51) == ["no more than 50 items allowed [json-pointer:/blocks]"]


def test_missing_scopes_are_named(world: SimpleNamespace) -> None:
    world.emulator.add_token("xoxb-reader", "reader-bot", scopes=("channels:read",), bot=True)
    reader = client(world.emulator, "xoxb-reader")
    _, body = error_of(lambda: reader.chat_postMessage(channel=world.alerts.id, text="x"))
    assert body == {"ok": False, "error": "missing_scope", "needed": "chat:write", "provided": "channels:read"}
    assert error_of(lambda: reader.conversations_history(channel=world.alerts.id))[1]["needed"] == "channels:history"


def test_update_errors(world: SimpleNamespace) -> None:
    slack = world.slack
    theirs = world.emulator.state.post(world.pipeline.id, "mine", "alice")
    assert error_of(lambda: slack.chat_update(channel=world.pipeline.id, ts=theirs.ts, text="x"))[1]["error"] == \
        "cant_update_message"
    assert error_of(lambda: slack.chat_update(channel=world.pipeline.id, ts="1000000000.000001", text="x"))[1][
        "error"] == "message_not_found"
    ts = slack.chat_postMessage(channel=world.pipeline.id, text="x")["ts"]
    # chat.update takes a channel id only, unlike chat.postMessage
    assert error_of(lambda: slack.chat_update(channel="mlops-pipeline", ts=ts, text="y"))[1]["error"] == \
        "channel_not_found"


BUTTONS = {"type": "actions", "block_id": "mlops", "elements": [
    {"type": "button", "action_id": "mlops:retrain", "text": {"type": "plain_text", "text": "Retrain"},
     "value": '{"command": "retrain"}', "style": "primary",
     "confirm": {"title": {"type": "plain_text", "text": "Retrain?"}, "text": {"type": "mrkdwn", "text": "*Sure?*"},
                 "confirm": {"type": "plain_text", "text": "Retrain"}, "deny": {"type": "plain_text", "text": "No"}}}]}


@pytest.mark.parametrize(("change", "problem"), [
    (lambda b: b["elements"][0].update(style="loud"), "/blocks/0/elements/0/style"),
    (lambda b: b["elements"][0]["text"].update(text="x" * 76), "/blocks/0/elements/0/text/text"),
    (lambda b: b["elements"][0]["confirm"].pop("deny"), "/blocks/0/elements/0/confirm/deny"),
    (lambda b: b["elements"][0]["confirm"]["title"].update(type="mrkdwn"), "/blocks/0/elements/0/confirm/title"),
    (lambda b: b["elements"][0].update(value="v" * 2001), "/blocks/0/elements/0/value"),
    (lambda b: b["elements"].append(dict(b["elements"][0])), "action_id must be unique"),
    (lambda b: b.update(elements=[]), "/blocks/0/elements"),
])
def test_buttons_and_their_dialogs_are_checked_as_slack_checks_them(change, problem) -> None:
    block = json.loads(json.dumps(BUTTONS))
    assert block_problems([block]) == []
    change(block)
    assert any(problem in found for found in block_problems([block]))


def test_a_click_is_the_payload_slack_sends_and_its_response_url_answers(world: SimpleNamespace) -> None:
    posted = world.slack.chat_postMessage(channel=world.alerts.id, text="drift", blocks=[BUTTONS])
    payload = world.emulator.state.click(world.alerts.id, posted["ts"], "mlops:retrain", "bob")
    assert payload["type"] == "block_actions" and payload["user"]["id"] == world.bob.id
    assert payload["container"] == {"type": "message", "message_ts": posted["ts"], "channel_id": world.alerts.id,
                                    "is_ephemeral": False}
    assert payload["actions"][0]["value"] == '{"command": "retrain"}' and payload["trigger_id"]
    with pytest.raises(KeyError):
        world.emulator.state.click(world.alerts.id, posted["ts"], "mlops:deploy")  # no such button to click
    request = urllib.request.Request(payload["response_url"], data=b'{"text": "no", "response_type": "ephemeral"}',
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
    assert [r.body["text"] for r in world.emulator.state.responses] == ["no"]


def test_user_groups_and_their_members(world: SimpleNamespace) -> None:
    state = world.emulator.state
    leads = state.add_usergroup("@ml-leads", members=["alice"])
    state.add_usergroup("old-team", members=["bob"], disabled=True)
    assert world.slack.usergroups_users_list(usergroup=leads.id)["users"] == [world.alice.id]
    assert [g["handle"] for g in world.slack.usergroups_list()["usergroups"]] == ["ml-leads"]
    assert [g["handle"] for g in world.slack.usergroups_list(include_disabled=True)["usergroups"]] == [
        "ml-leads", "old-team"]
    disabled = state.add_usergroup("old-team", members=["bob"], disabled=True)
    assert error_of(lambda: world.slack.usergroups_users_list(usergroup=disabled.id))[1]["error"] == "no_such_subteam"
    assert world.slack.usergroups_users_list(usergroup=disabled.id, include_disabled=True)["users"] == [world.bob.id]
    narrow = client(world.emulator, _token(world, ("chat:write",)))
    assert error_of(lambda: narrow.usergroups_users_list(usergroup=leads.id))[1]["needed"] == "usergroups:read"


def test_history_pages_newest_first_with_cursors(world: SimpleNamespace) -> None:
    channel = world.pipeline.id
    posted = [world.emulator.state.post(channel, f"message {k}", "alice").ts for k in range(250)]
    seen, cursor, pages = [], None, 0
    while True:
        answer = world.slack.conversations_history(channel=channel, limit=100, cursor=cursor)
        seen += [m["ts"] for m in answer["messages"]]
        pages += 1
        cursor = answer["response_metadata"]["next_cursor"]
        assert answer["has_more"] == bool(cursor)
        if not cursor:
            break
    assert (pages, seen) == (3, posted[::-1])
    # the SDK's own iteration follows the same cursors
    assert sum(len(page["messages"]) for page in world.slack.conversations_history(channel=channel, limit=100)) == 250
    window = world.slack.conversations_history(channel=channel, oldest=posted[10], latest=posted[20])["messages"]
    assert [m["ts"] for m in window] == posted[19:10:-1]
    inclusive = world.slack.conversations_history(channel=channel, oldest=posted[10], latest=posted[20], inclusive=True)
    assert len(inclusive["messages"]) == 11
    assert error_of(lambda: world.slack.conversations_history(channel=channel, cursor="bogus"))[1]["error"] == \
        "invalid_cursor"


def test_replies_page_oldest_first_with_the_parent_first(world: SimpleNamespace) -> None:
    state, channel = world.emulator.state, world.pipeline.id
    parent = state.post(channel, "parent", "alice")
    replies = [state.post(channel, f"reply {k}", "bob", thread_ts=parent.ts).ts for k in range(5)]
    first = world.slack.conversations_replies(channel=channel, ts=parent.ts, limit=3)
    assert [m["ts"] for m in first["messages"]] == [parent.ts, *replies[:2]] and first["has_more"]
    second = world.slack.conversations_replies(channel=channel, ts=parent.ts, limit=3,
                                               cursor=first["response_metadata"]["next_cursor"])
    assert [m["ts"] for m in second["messages"]] == replies[2:] and not second["has_more"]
    assert error_of(lambda: world.slack.conversations_replies(channel=channel, ts="1000000000.000001"))[1][
        "error"] == "thread_not_found"


def test_reading_a_channel_needs_the_bot_in_it(world: SimpleNamespace) -> None:
    assert error_of(lambda: world.slack.conversations_history(channel=world.outside.id))[1]["error"] == \
        "not_in_channel"
    assert error_of(lambda: world.slack.conversations_history(channel=world.secret.id))[1]["error"] == \
        "channel_not_found"
    world.emulator.state.set_member("random")
    assert world.slack.conversations_history(channel=world.outside.id)["messages"] == []


def test_conversations_info_and_list(world: SimpleNamespace) -> None:
    info = world.slack.conversations_info(channel=world.outside.id, include_num_members=True)["channel"]
    assert (info["name"], info["is_member"], info["is_private"], info["num_members"]) == ("random", False, False, 1)
    assert world.slack.conversations_info(channel=world.pipeline.id)["channel"]["topic"]["value"] == "Model runs"
    assert error_of(lambda: world.slack.conversations_info(channel=world.secret.id))[1]["error"] == \
        "channel_not_found"
    assert error_of(lambda: world.slack.conversations_info(channel="mlops-alerts"))[1]["error"] == \
        "channel_not_found"  # ids only
    names = [c["name"] for page in world.slack.conversations_list(types="public_channel,private_channel", limit=2)
             for c in page["channels"]]
    assert names == ["mlops-pipeline", "mlops-alerts", "random", "old-runs"]  # not the private one it is not in
    assert "old-runs" not in [c["name"] for c in world.slack.conversations_list(exclude_archived=True)["channels"]]


def test_permalink_reactions_ephemeral_messages_and_users(world: SimpleNamespace) -> None:
    slack, channel = world.slack, world.alerts.id
    ts = slack.chat_postMessage(channel=channel, text="drift")["ts"]
    reply = slack.chat_postMessage(channel=channel, text="details", thread_ts=ts)["ts"]
    link = slack.chat_getPermalink(channel=channel, message_ts=ts)["permalink"]
    assert link == f"{world.emulator.url}/archives/{channel}/p{ts.replace('.', '')}"
    assert f"thread_ts={ts}" in slack.chat_getPermalink(channel=channel, message_ts=reply)["permalink"]
    slack.reactions_add(channel=channel, timestamp=ts, name="eyes")
    assert error_of(lambda: slack.reactions_add(channel=channel, timestamp=ts, name="eyes"))[1]["error"] == \
        "already_reacted"
    assert error_of(lambda: slack.reactions_add(channel=channel, timestamp=ts, name="no way"))[1]["error"] == \
        "invalid_name"
    assert world.emulator.state.message(channel, ts).reactions == {"eyes": [world.emulator.bot.id]}
    whisper = slack.chat_postEphemeral(channel=channel, user=world.alice.id, text="only you")["message_ts"]
    assert [(e.user, e.text, e.ts) for e in world.emulator.state.ephemeral(channel)] == [
        (world.alice.id, "only you", whisper)]
    assert error_of(lambda: slack.chat_postEphemeral(channel=channel, user=world.bob.id, text="x"))[1]["error"] == \
        "user_not_in_channel"
    assert len(world.emulator.state.messages(channel)) == 1  # ephemeral messages are not in the channel
    assert slack.users_info(user=world.alice.id)["user"]["name"] == "alice"
    assert error_of(lambda: slack.users_info(user="U999999999"))[1]["error"] == "user_not_found"


def test_files_upload_v2_into_a_thread(world: SimpleNamespace, tmp_path: Path) -> None:
    slack, channel, emulator = world.slack, world.alerts.id, world.emulator
    ts = slack.chat_postMessage(channel=channel, text="📉 drift")["ts"]
    chart = tmp_path / "drift.png"
    chart.write_bytes(png(16, 8))
    emulator.log.clear()
    answer = slack.files_upload_v2(channel=channel, thread_ts=ts, file=str(chart), title="Drift report",
                                   initial_comment="the chart")
    assert [e.route for e in emulator.log] == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    assert emulator.calls("files.getUploadURLExternal")[0] == {"filename": "drift.png", "length": str(len(png(16, 8)))}
    upload = emulator.log.filter(route="upload")[0]
    assert upload.path.startswith("/upload/v1/") and upload.identity is None  # the URL is the credential
    assert answer["file"]["title"] == "Drift report"
    (shared,) = emulator.state.messages(channel)[0].replies
    (f,) = shared.files
    assert (shared.text, f.name, f.title, f.mimetype, f.content, f.image_size) == (
        "the chart", "drift.png", "Drift report", "image/png", png(16, 8), (16, 8))
    thread = slack.conversations_replies(channel=channel, ts=ts)["messages"]
    described = thread[1]["files"][0]
    assert (described["name"], described["original_w"], described["channels"]) == ("drift.png", 16, [channel])
    download = urllib.request.Request(described["url_private"], headers={"Authorization": f"Bearer {emulator.token}"})
    with urllib.request.urlopen(download, timeout=5) as got:
        assert (got.read(), got.headers["Content-Type"]) == (png(16, 8), "image/png")
    assert emulator.state.transcript(channel) == (
        'mlops-bot: 📉 drift\n    ↳ mlops-bot: the chart [file drift.png "Drift report"]')


def test_upload_errors(world: SimpleNamespace, tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    chart.write_bytes(png())
    _, body = error_of(lambda: world.slack.files_upload_v2(channel=world.outside.id, file=str(chart), title="x"))
    assert body["error"] == "not_in_channel"
    pending = world.slack.files_getUploadURLExternal(filename="chart.png", length=10)
    _, body = error_of(lambda: world.slack.files_completeUploadExternal(files=[{"id": pending["file_id"]}]))
    assert body["error"] == "file_upload_not_found"  # the bytes never came
    assert error_of(lambda: world.slack.files_getUploadURLExternal(filename="x.png", length=0))[1]["error"] == \
        "invalid_arguments"


def test_arguments_come_as_query_form_or_json(world: SimpleNamespace) -> None:
    base, token = world.emulator.base_url, world.emulator.token

    def call(request: urllib.request.Request) -> dict[str, Any]:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)

    assert call(urllib.request.Request(f"{base}auth.test?token={token}"))["ok"] is True
    form = urllib.request.Request(f"{base}chat.postMessage", data=f"token={token}&channel=mlops-alerts&text=hi".encode())
    assert call(form)["ok"] is True
    # with JSON, Slack takes the token from the Authorization header only
    body = json.dumps({"token": token, "channel": "mlops-alerts", "text": "x"}).encode()
    as_json = urllib.request.Request(f"{base}chat.postMessage", data=body, headers={"Content-Type": "application/json"})
    assert call(as_json) == {"ok": False, "error": "not_authed"}
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(f"{base}chat.nonsense", timeout=5)
    assert (unknown.value.code, json.load(unknown.value)["error"]) == (404, "unknown_method")


# ---------------------------------------------------------------------------
# Rate limits and faults


def test_429_with_retry_after(world: SimpleNamespace) -> None:
    world.emulator.faults.add("chat.postMessage", "429", retry_after=7)
    status, body = error_of(lambda: world.slack.chat_postMessage(channel=world.alerts.id, text="x"))
    assert (status, body) == (429, {"ok": False, "error": "ratelimited"})
    world.emulator.faults.add("chat.postMessage", "rate_limit_secondary", retry_after=3)  # Slack has one kind
    with pytest.raises(SlackApiError) as limited:
        world.slack.chat_postMessage(channel=world.alerts.id, text="x")
    assert limited.value.response.headers["Retry-After"] == "3"
    assert world.emulator.state.messages(world.alerts.id) == []


def test_a_method_limit_answers_429_until_the_minute_is_over() -> None:
    with SlackEmulator(clock=Clock(datetime(2026, 1, 1, 12, 0, 50, tzinfo=UTC))) as emulator:
        channel = emulator.state.add_channel("mlops-alerts").id
        slack = client(emulator)
        emulator.rate_limit("conversations.history", per_minute=2)
        for _ in range(2):
            slack.conversations_history(channel=channel)
        with pytest.raises(SlackApiError) as limited:
            slack.conversations_history(channel=channel)
        assert (limited.value.response.status_code, limited.value.response.headers["Retry-After"]) == (429, "10")
        assert limited.value.response.data == {"ok": False, "error": "ratelimited"}
        emulator.clock.advance(10)
        slack.conversations_history(channel=channel)
        assert emulator.log.count(route="conversations.history", status=429) == 1


def test_the_sdks_rate_limit_handler_waits_and_retries(world: SimpleNamespace) -> None:
    world.emulator.faults.add("chat.postMessage", "429", retry_after=0)
    patient = client(world.emulator, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    assert patient.chat_postMessage(channel=world.alerts.id, text="hello")["ok"] is True
    assert [e.status for e in world.emulator.log.filter(route="chat.postMessage")] == [429, 200]


@pytest.mark.parametrize("code", [500, 502, 503])
def test_server_errors(world: SimpleNamespace, code: int) -> None:
    world.emulator.faults.add("conversations.info", code)
    assert error_of(lambda: world.slack.conversations_info(channel=world.alerts.id))[0] == code
    assert world.slack.conversations_info(channel=world.alerts.id)["ok"] is True  # once only


def test_timeout(world: SimpleNamespace) -> None:
    world.emulator.faults.add("auth.test", "timeout", hold=2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client(world.emulator, timeout=0.3).auth_test()
    assert time.monotonic() - started < 1.5
    assert world.emulator.log.filter(fault="timeout")[0].status is None


def test_lost_response_applies_the_write(world: SimpleNamespace) -> None:
    world.emulator.faults.add("chat.postMessage", "lost_response")
    with pytest.raises(http.client.RemoteDisconnected):
        world.slack.chat_postMessage(channel=world.alerts.id, text="Model v3 trained", metadata=MARKER)
    (message,) = world.emulator.state.messages(world.alerts.id)
    assert (message.text, message.marker) == ("Model v3 trained", "episode:run:1")
    (lost,) = world.emulator.log.filter(fault="lost_response")
    assert (lost.status, lost.body["text"]) == (None, "Model v3 trained")


def test_the_sdks_default_connection_retry_posts_a_lost_write_twice(world: SimpleNamespace) -> None:
    """Why the bot's adapter narrows the SDK's ConnectionErrorRetryHandler: by default, a post
    whose answer was lost is sent again, and Slack shows it twice."""
    world.emulator.faults.add("chat.postMessage", "lost_response")
    default = WebClient(token=world.emulator.token, base_url=world.emulator.base_url)
    default.chat_postMessage(channel=world.alerts.id, text="Model v3 trained")
    assert [m.text for m in world.emulator.state.messages(world.alerts.id)] == ["Model v3 trained"] * 2


def test_random_faults_are_reproducible(world: SimpleNamespace) -> None:
    def outcomes(seed: int) -> list[int]:
        world.emulator.faults.random(0.3, kinds=[500, 503], seed=seed, target="auth.test")
        found = []
        for _ in range(20):
            try:
                found.append(world.slack.auth_test().status_code)
            except SlackApiError as error:
                found.append(error.response.status_code)
        return found

    first = outcomes(seed=3)
    assert first == outcomes(seed=3) and {200, 500, 503} == set(first)
    world.emulator.faults.clear()


def test_request_log_and_calls(world: SimpleNamespace) -> None:
    log = world.emulator.log
    log.clear()
    world.slack.chat_postMessage(channel=world.alerts.id, text="one")
    world.slack.conversations_history(channel=world.alerts.id, limit=5)
    assert [e.route for e in log] == ["chat.postMessage", "conversations.history"]
    assert {e.identity for e in log} == {"mlops-bot"} and log.charged() == 2
    assert world.emulator.calls("chat.postMessage") == [{"channel": world.alerts.id, "text": "one"}]
    assert world.emulator.calls("conversations.history") == [{"channel": world.alerts.id, "limit": "5"}]


def test_runs_by_hand() -> None:
    command = [sys.executable, "-m", "tests.emulators.slack", "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        base_url = re.search(r"at (http://127\.0\.0\.1:\d+/api/)", line).group(1)
        slack = WebClient(token="xoxb-test-token", base_url=base_url)
        names = [c["name"] for c in slack.conversations_list()["channels"]]
        assert names == ["mlops-pipeline", "mlops-alerts", "mlops-digest"]
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()


def test_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SlackEmulator(host="0.0.0.0")


# ---------------------------------------------------------------------------
# Every method against Slack's description


@dataclass(frozen=True)
class Case:
    method: str
    call: Callable[[SimpleNamespace], Any]  # makes the call through slack-sdk
    ok: bool = True


def _thread(w: SimpleNamespace) -> str:
    ts = w.slack.chat_postMessage(channel=w.alerts.id, text="parent", metadata=MARKER)["ts"]
    w.slack.chat_postMessage(channel=w.alerts.id, text="reply", thread_ts=ts)
    w.slack.reactions_add(channel=w.alerts.id, timestamp=ts, name="eyes")
    w.slack.chat_update(channel=w.alerts.id, ts=ts, text="parent, updated")
    return ts


def _upload(w: SimpleNamespace, ts: str) -> None:
    path = w.tmp / "chart.png"
    path.write_bytes(png())
    w.slack.files_upload_v2(channel=w.alerts.id, thread_ts=ts, file=str(path), title="Chart")


def _complete(w: SimpleNamespace) -> Any:
    """files_upload_v2's three steps, one by one."""
    pending = w.slack.files_getUploadURLExternal(filename="chart.png", length=len(png()))
    with urllib.request.urlopen(urllib.request.Request(pending["upload_url"], data=png()), timeout=5) as answer:
        assert answer.read() == f"OK - {len(png())}".encode()
    return w.slack.files_completeUploadExternal(files=[{"id": pending["file_id"], "title": "Chart"}],
                                                channel_id=w.alerts.id, thread_ts=_thread(w))


CASES = [
    Case("auth.test", lambda w: w.slack.auth_test()),
    Case("auth.test", lambda w: client(w.emulator, "xoxb-wrong").auth_test(), ok=False),
    Case("chat.postMessage", lambda w: w.slack.chat_postMessage(channel=w.alerts.id, text="x", blocks=[
        {"type": "section", "text": {"type": "mrkdwn", "text": "*x*"}}], metadata=MARKER)),
    Case("chat.postMessage", lambda w: w.slack.chat_postMessage(channel=w.alerts.id, thread_ts=_thread(w), text="x")),
    Case("chat.postMessage", lambda w: w.slack.chat_postMessage(channel=w.outside.id, text="x"), ok=False),
    Case("chat.postMessage", lambda w: w.slack.chat_postMessage(channel=w.alerts.id, blocks=[{"type": "x"}]), ok=False),
    Case("chat.update", lambda w: w.slack.chat_update(channel=w.alerts.id, ts=_thread(w), text="y")),
    Case("chat.update", lambda w: w.slack.chat_update(channel=w.alerts.id, ts="1000000000.000001", text="y"),
         ok=False),
    Case("chat.postEphemeral", lambda w: w.slack.chat_postEphemeral(channel=w.alerts.id, user=w.alice.id, text="x")),
    Case("chat.postEphemeral", lambda w: w.slack.chat_postEphemeral(channel=w.alerts.id, user=w.bob.id, text="x"),
         ok=False),
    Case("chat.getPermalink", lambda w: w.slack.chat_getPermalink(channel=w.alerts.id, message_ts=_thread(w))),
    Case("chat.getPermalink", lambda w: w.slack.chat_getPermalink(channel="C999999999", message_ts="1.1"), ok=False),
    Case("conversations.info", lambda w: w.slack.conversations_info(channel=w.pipeline.id, include_num_members=True)),
    Case("conversations.info", lambda w: w.slack.conversations_info(channel=w.secret.id), ok=False),
    Case("conversations.list", lambda w: w.slack.conversations_list(types="public_channel,private_channel", limit=2)),
    Case("conversations.list", lambda w: w.slack.conversations_list(cursor="bogus"), ok=False),
    Case("conversations.history", lambda w: (_upload(w, _thread(w)), w.slack.conversations_history(
        channel=w.alerts.id, include_all_metadata=True))[1]),
    Case("conversations.history", lambda w: w.slack.conversations_history(channel=w.outside.id), ok=False),
    Case("conversations.replies", lambda w: (lambda ts: (_upload(w, ts), w.slack.conversations_replies(
        channel=w.alerts.id, ts=ts, include_all_metadata=True))[1])(_thread(w))),
    Case("conversations.replies", lambda w: w.slack.conversations_replies(channel=w.alerts.id, ts="1.000001"), ok=False),
    Case("users.info", lambda w: w.slack.users_info(user=w.emulator.bot.id)),
    Case("users.info", lambda w: w.slack.users_info(user="U999999999"), ok=False),
    Case("reactions.add", lambda w: w.slack.reactions_add(channel=w.alerts.id, timestamp=_thread(w), name="tada")),
    Case("reactions.add", lambda w: w.slack.reactions_add(channel=w.alerts.id, timestamp="1.000001", name="x"),
         ok=False),
    Case("files.getUploadURLExternal", lambda w: w.slack.files_getUploadURLExternal(filename="a.png", length=3)),
    Case("files.getUploadURLExternal", lambda w: w.slack.files_getUploadURLExternal(filename="a.png", length=0),
         ok=False),
    Case("files.completeUploadExternal", _complete),
    Case("files.completeUploadExternal", lambda w: w.slack.files_completeUploadExternal(files=[{"id": "F999999999"}]),
         ok=False),
    Case("usergroups.list", lambda w: (w.emulator.state.add_usergroup("ml-leads", members=["alice"]),
                                       w.slack.usergroups_list(include_users=True, include_count=True))[1]),
    Case("usergroups.list", lambda w: client(w.emulator, _token(w, ("chat:write",))).usergroups_list(), ok=False),
    Case("usergroups.users.list", lambda w: w.slack.usergroups_users_list(
        usergroup=w.emulator.state.add_usergroup("ml-leads", members=["alice", "bob"]).id)),
    Case("usergroups.users.list", lambda w: w.slack.usergroups_users_list(usergroup="S999999999"), ok=False),
]


def _token(w: SimpleNamespace, scopes: tuple[str, ...]) -> str:
    w.emulator.add_token("xoxb-narrow", "narrow-bot", scopes=scopes, bot=True)
    return "xoxb-narrow"


@pytest.fixture
def schema_world(world: SimpleNamespace, tmp_path: Path) -> SimpleNamespace:
    refdata_dir()  # skips without ../shared/refdata
    world.schemas = world.emulator.schemas  # the fixture's, loaded once
    world.tmp = tmp_path
    return world


def _answer(w: SimpleNamespace, case: Case) -> dict[str, Any]:
    try:
        result = case.call(w)
    except SlackApiError as error:
        assert not case.ok, error.response.data
        return error.response.data
    assert case.ok, result
    return result.data


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method}-{'ok' if c.ok else 'error'}" for c in CASES])
def test_every_method_answers_within_slacks_schema(schema_world: SimpleNamespace, case: Case) -> None:
    body = _answer(schema_world, case)
    assert body["ok"] is case.ok
    assert validate_answer(schema_world.schemas, case.method, body) == []
    assert schema_world.emulator.violations == []


def test_schema_cases_cover_every_method() -> None:
    assert {c.method for c in CASES if c.ok} == set(METHODS) == {c.method for c in CASES if not c.ok}


def test_the_description_covers_the_methods_it_lists() -> None:
    schemas = slack_schemas(refdata_dir())
    for method in METHODS:
        assert any(schemas.operation(verb, f"/{method}") for verb in ("get", "post")), method
        assert validate_answer(schemas, method, {"ok": False}) != [], method  # an error without its code


def test_schema_check_fails_when_a_required_field_is_dropped(
    schema_world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = schema_world.emulator
    original = SlackEmulator._conversation_json

    def without_name(self: SlackEmulator, *args: Any, **kwargs: Any) -> dict[str, Any]:
        body = original(self, *args, **kwargs)
        del body["name"]
        return body

    monkeypatch.setattr(SlackEmulator, "_conversation_json", without_name)
    body = schema_world.slack.conversations_info(channel=schema_world.alerts.id).data
    assert validate_answer(schema_world.schemas, "conversations.info", body) != []
    (violation,) = emulator.violations  # the fixture would fail the test at teardown
    assert violation.startswith(f"POST /api/conversations.info -> 200: channel: ")
    emulator.violations.clear()
    assert validate_answer(schema_world.schemas, "chat.postMessage", {"ok": False, "error": "made_up"}) != []
