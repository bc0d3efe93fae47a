"""The Slack adapter, through the real slack-sdk WebClient and the Slack emulator."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from integrations.ports import Chat, ChatAction, MessageRef, PermanentError, Permission, TransientError, marker_comment
from integrations.slack import SlackChat, connect, routes
from integrations.slack_blocks import BLOCK_LIMIT, FALLBACK_LIMIT, SECTION_LIMIT, holders, render
from tests.emulators.fixtures import no_proxy_for_loopback, slack_emulator  # noqa: F401 - the fixtures
from tests.emulators.slack import SlackEmulator, block_problems

pytestmark = pytest.mark.usefixtures("no_proxy_for_loopback")

ROOT = Path(__file__).resolve().parents[1]
RUN_REPORT = """✅ succeeded: **tiny** pipeline run `run-7`

Model **tiny v3** is now in production.

| metric | this run | production v2 | difference |
|---|---:|---:|---:|
| roc_auc | 0.9912 | 0.9800 | +0.0112 |
| accuracy | 0.9500 | **0.9600** | -0.0100 |"""


def adapter(emulator: SlackEmulator, token: str | None = None, *, timeout: float = 2, rate_limit_retries: int = 2,
            **options) -> SlackChat:
    """The adapter as the bot builds it, on the emulator, with short back-offs."""
    client = connect(token or emulator.token, base_url=emulator.base_url, timeout=timeout,
                     rate_limit_retries=rate_limit_retries, backoff=0.01)
    return SlackChat(client, **options)


@pytest.fixture
def slack(slack_emulator: SlackEmulator) -> SimpleNamespace:  # noqa: F811 - the imported fixture
    s = slack_emulator.state
    return SimpleNamespace(
        emulator=slack_emulator,
        state=s,
        chat=adapter(slack_emulator),
        pipeline=s.add_channel("mlops-pipeline", members=["alice"]),
        alerts=s.add_channel("mlops-alerts", members=["alice"]),
        digest=s.add_channel("ml-digest"),
    )


def png(width: int = 8, height: int = 4) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\x00" + b"\x22\x66\xcc" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------
# One thread per episode


def test_an_episode_reads_as_one_message_updated_in_place_with_its_thread(slack: SimpleNamespace) -> None:
    chat = slack.chat
    assert isinstance(chat, Chat) and chat.name == "slack"
    parent = chat.post("mlops-pipeline", "⏳ running: tiny · acme/model!7", marker="episode:run:7")
    assert parent == MessageRef(slack.pipeline.id, parent.id)
    first = chat.reply(parent, "Run `run-7`: trained in 2.1 s", marker="run-chat:7:train")
    chat.update(parent, "⏳ validating: tiny v3 · acme/model!7")
    second = chat.reply(parent, "Run `run-7`: validated", marker="run-chat:7:validate")
    chat.update(parent, "✅ succeeded: tiny v3 · acme/model!7 · roc_auc 0.9912 (+0.0112 vs production)")
    assert (first.thread, second.thread) == (parent.id, parent.id)

    assert slack.state.transcript("mlops-pipeline") == (
        "mlops-bot: *✅ succeeded: tiny v3* acme/model!7 · roc_auc 0.9912 (+0.0112 vs production) (edited)\n"
        "    ↳ mlops-bot: Run `run-7`: trained in 2.1 s\n"
        "    ↳ mlops-bot: Run `run-7`: validated")
    (message,) = slack.state.messages("mlops-pipeline")
    assert (message.updated, message.marker, [r.marker for r in message.replies]) == (
        2, "episode:run:7", ["run-chat:7:train", "run-chat:7:validate"])
    assert message.blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": (
        "*✅ succeeded: tiny v3*\nacme/model!7 · roc_auc 0.9912 (+0.0112 vs production)")}}]
    shown = repr([m.text for m in slack.state.thread("mlops-pipeline", parent.id)] + [message.blocks])
    assert "episode:run:7" not in shown and "run-chat" not in shown  # markers are never shown

    assert chat.find_message("mlops-pipeline", "episode:run:7") == parent
    assert chat.find_message(slack.pipeline.id, "run-chat:7:validate", thread=parent.id) == second
    assert chat.find_message("mlops-pipeline", "run-chat:7:validate") is None  # replies are not at the top
    assert chat.find_message("mlops-pipeline", "episode:run:8") is None


def test_find_message_reads_back_through_pages_and_ignores_other_messages(slack: SimpleNamespace) -> None:
    old = slack.chat.post("mlops-alerts", "📉 old alert", marker="episode:ticket:1")
    for k in range(450):  # people talk; other apps use metadata too
        slack.state.post("mlops-alerts", f"chatter {k}", "alice",
                         metadata={"event_type": "other_app", "event_payload": {"marker": "episode:ticket:1"}})
    slack.emulator.log.clear()
    assert slack.chat.find_message("mlops-alerts", "episode:ticket:1") == old
    assert slack.emulator.log.count(route="conversations.history") == 3  # 200 a page
    assert slack.emulator.calls("conversations.history")[0]["include_all_metadata"] == "1"


def test_a_thread_that_is_gone_has_no_messages(slack: SimpleNamespace) -> None:
    assert slack.chat.find_message("mlops-alerts", "x", thread="1000000000.000001") is None


# ---------------------------------------------------------------------------
# Exactly once


def test_a_post_whose_answer_was_lost_is_found_not_posted_twice(slack: SimpleNamespace) -> None:
    chat = slack.chat
    slack.emulator.faults.add("chat.postMessage", "lost_response")
    with pytest.raises(TransientError) as lost:
        chat.post("mlops-alerts", "📉 tiny: severe drift · ticket #3", marker="episode:ticket:3")
    assert lost.value.outcome_unknown is True
    assert slack.emulator.log.count(route="chat.postMessage") == 1  # the SDK did not send it again
    found = chat.find_message("mlops-alerts", "episode:ticket:3")  # what the outbox asks before repeating
    assert found is not None and found.thread is None
    assert len(slack.state.messages("mlops-alerts")) == 1

    slack.emulator.faults.add("chat.postMessage", "lost_response")
    with pytest.raises(TransientError) as lost_reply:
        chat.reply(found, "Batch `b9`: severe drift", marker="drift-chat:b9")
    assert lost_reply.value.outcome_unknown is True
    assert chat.find_message(found.channel, "drift-chat:b9", thread=found.id) == MessageRef(
        found.channel, slack.state.messages("mlops-alerts")[0].replies[0].ts, thread=found.id)
    assert len(slack.state.thread("mlops-alerts", found.id)) == 2


def test_a_read_whose_answer_was_lost_is_asked_again(slack: SimpleNamespace) -> None:
    ref = slack.chat.post("mlops-alerts", "x", marker="m")
    slack.emulator.faults.add("conversations.history", "lost_response")
    assert slack.chat.find_message("mlops-alerts", "m") == ref
    assert [e.status for e in slack.emulator.log.filter(route="conversations.history")] == [None, 200]


def test_a_post_that_times_out_is_flagged_outcome_unknown(slack: SimpleNamespace) -> None:
    chat = adapter(slack.emulator, timeout=0.3)
    slack.emulator.faults.add("chat.postMessage", "timeout", hold=1)
    with pytest.raises(TransientError) as slow:
        chat.post("mlops-alerts", "x", marker="m")
    assert slow.value.outcome_unknown is True


def test_an_unreachable_slack_is_transient_and_nothing_was_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    chat = SlackChat(connect("xoxb-x", base_url=f"http://127.0.0.1:{port}/api/", timeout=1, connection_retries=1,
                             backoff=0.01))
    with pytest.raises(TransientError) as down:
        chat.post("C0123456789", "x", marker="m")
    assert down.value.outcome_unknown is False  # refused before anything was sent
    assert chat.diagnose(["mlops-alerts"])[0][1].startswith("Slack could not be reached for auth.test")


# ---------------------------------------------------------------------------
# Rate limits and server errors


def test_the_sdk_waits_out_a_rate_limit_and_the_post_succeeds(slack: SimpleNamespace) -> None:
    slack.emulator.faults.add("chat.postMessage", "429", retry_after=1)
    started = time.monotonic()
    ref = slack.chat.post("mlops-alerts", "hello", marker="m")
    assert time.monotonic() - started >= 1
    assert [e.status for e in slack.emulator.log.filter(route="chat.postMessage")] == [429, 200]
    assert slack.state.message("mlops-alerts", ref.id).text == "hello"


def test_a_rate_limit_that_lasts_is_transient_with_slacks_wait(slack: SimpleNamespace) -> None:
    slack.emulator.faults.add("chat.postMessage", "429", times=None, retry_after=0)
    with pytest.raises(TransientError) as limited:
        adapter(slack.emulator, rate_limit_retries=2).post("mlops-alerts", "x", marker="m")
    assert (limited.value.retry_after, limited.value.outcome_unknown) == (0, False)
    assert slack.emulator.log.count(route="chat.postMessage", status=429) == 3  # tried, then retried twice


def test_a_long_rate_limit_is_left_to_the_caller(slack: SimpleNamespace) -> None:
    slack.emulator.faults.add("chat.update", "429", retry_after=120)
    ref = slack.chat.post("mlops-alerts", "x", marker="m")
    started = time.monotonic()
    with pytest.raises(TransientError) as limited:
        slack.chat.update(ref, "y")
    assert limited.value.retry_after == 120 and time.monotonic() - started < 1
    assert slack.emulator.log.count(route="chat.update") == 1


@pytest.mark.parametrize(("method", "write"), [("chat.postMessage", True), ("conversations.history", False)])
def test_server_errors_are_transient(slack: SimpleNamespace, method: str, write: bool) -> None:
    slack.emulator.faults.add(method, 503)
    with pytest.raises(TransientError) as failed:
        if write:
            slack.chat.post("mlops-alerts", "x", marker="m")
        else:
            slack.chat.find_message("mlops-alerts", "m")
    assert failed.value.outcome_unknown is write and "503" in str(failed.value)


# ---------------------------------------------------------------------------
# Slack's refusals, each with its fix


def _refusal(slack: SimpleNamespace, case: str) -> PermanentError:
    """The error of a post (an update for message_not_found) that Slack refuses with ``case``."""
    emulator, state, chat, channel = slack.emulator, slack.state, slack.chat, "mlops-alerts"
    if case == "invalid_auth":
        chat = adapter(emulator, token="xoxb-not-a-token")
    elif case == "token_revoked":
        emulator.revoke_token(emulator.token)
    elif case == "missing_scope":
        emulator.add_token("xoxb-read-only", "reader", scopes=("channels:read",), bot=True)
        chat = adapter(emulator, token="xoxb-read-only")
    elif case == "channel_not_found":
        channel = "C0GONE0000"
    elif case == "not_in_channel":
        channel = state.add_channel("random", member=False).name
    elif case == "is_archived":
        channel = state.add_channel("old-runs", archived=True).id
    with pytest.raises(PermanentError) as refused:
        if case == "message_not_found":
            chat.update(MessageRef(slack.alerts.id, "1000000000.000001"), "x")
        else:
            chat.post(channel, "x", marker="m")
    return refused.value


@pytest.mark.parametrize(("case", "says"), [
    ("invalid_auth", ["Slack refused the bot token (invalid_auth)", "Bot User OAuth Token (xoxb-…)"]),
    ("token_revoked", ["(token_revoked)", "OAuth & Permissions"]),
    ("channel_not_found", ["Slack channel C0GONE0000 not found", "/invite @mlops-bot"]),
    ("not_in_channel", ["the bot is not in #random", "invite the bot with /invite @mlops-bot in #random"]),
    ("is_archived", ["is archived", "unarchive it"]),
    ("missing_scope", ["lacks the scope chat:write", "Bot Token Scopes", "reinstall the app"]),
    ("message_not_found", ["no longer exists", "deleted"]),
])
def test_each_slack_refusal_is_permanent_and_says_how_to_fix_it(slack: SimpleNamespace, case: str,
                                                                 says: list[str]) -> None:
    message = str(_refusal(slack, case))
    for words in says:
        assert words in message
    assert slack.emulator.token not in message


def test_an_unknown_channel_name_says_how_to_map_it(slack: SimpleNamespace) -> None:
    chat = adapter(slack.emulator, channels={"mlops-digest": "#nowhere"})
    with pytest.raises(PermanentError, match=r"Slack channel #nowhere not found \(mlops-digest is mapped to it\)"):
        chat.find_message("mlops-digest", "m")


# ---------------------------------------------------------------------------
# Block Kit


def test_a_run_report_renders_as_block_kit_with_bold_and_a_monospace_table(slack: SimpleNamespace) -> None:
    fallback, blocks = render(RUN_REPORT)
    assert blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": (
        "✅ succeeded: *tiny* pipeline run `run-7`\n"
        "\n"
        "Model *tiny v3* is now in production.\n"
        "```\n"
        "metric    this run  production v2  difference\n"
        "--------  --------  -------------  ----------\n"
        "roc_auc     0.9912         0.9800     +0.0112\n"
        "accuracy    0.9500         0.9600     -0.0100\n"
        "```")}}]
    assert fallback == blocks[0]["text"]["text"] and "**" not in fallback
    ref = slack.chat.post("mlops-pipeline", RUN_REPORT, marker="m")
    message = slack.state.message("mlops-pipeline", ref.id)
    assert (message.text, message.blocks) == (fallback, blocks)


@pytest.mark.parametrize(("markdown", "mrkdwn"), [
    ("**bold** and *italic* and ~~gone~~", "*bold* and _italic_ and ~gone~"),
    ("see [the run](https://ci.example/run/7) now", "see <https://ci.example/run/7|the run> now"),
    ("## Drift report", "*Drift report*"),
    ("- roc_auc fell\n* accuracy held", "• roc_auc fell\n• accuracy held"),
    ("a < b & c > d, `x < 1` kept", "a &lt; b &amp; c &gt; d, `x &lt; 1` kept"),
    ("body" + marker_comment("episode:run:7"), "body"),
    ("<details><summary>Gates</summary>\n\n- ok\n</details>", "*Gates*\n\n• ok"),
    ("<!here> tiny is down · <@U0123ABCD> please look",
     "*<!here> tiny is down*\n<@U0123ABCD> please look"),
    ("```\nraw **text** | here\n```", "```\nraw **text** | here\n```"),
])
def test_markdown_becomes_slacks_mrkdwn(markdown: str, mrkdwn: str) -> None:
    (block,) = render(markdown)[1]
    assert block["text"]["text"] == mrkdwn


def test_given_blocks_are_sent_as_they_are_with_the_text_as_fallback(slack: SimpleNamespace) -> None:
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "tiny v3"}}, {"type": "divider"}]
    ref = slack.chat.post("mlops-pipeline", "**tiny v3** is in production", marker="m", blocks=blocks)
    message = slack.state.message("mlops-pipeline", ref.id)
    assert (message.text, message.blocks) == ("*tiny v3* is in production", blocks)


def test_a_long_text_never_gives_msg_too_long(slack: SimpleNamespace) -> None:
    rows = "\n".join(f"| feature_{k} | {k / 7:.4f} | {'**drift**' if k % 3 else 'ok'} |" for k in range(6000))
    text = "**Drift report**\n\n" + "The data moved. " * 2000 + "\n\n| feature | psi | verdict |\n|---|---:|---|\n" + rows
    text += "\n" + "x" * 12_000  # one line with no place to break
    assert len(text) > 150_000
    ref = slack.chat.post("mlops-alerts", text, marker="m")
    reply = slack.chat.reply(ref, text, marker="r")
    slack.chat.update(ref, text + " (updated)")
    for message in (slack.state.message("mlops-alerts", ref.id), slack.state.message("mlops-alerts", reply.id)):
        assert len(message.blocks) <= BLOCK_LIMIT and block_problems(message.blocks) == []
        assert len(message.text) <= FALLBACK_LIMIT
        assert message.blocks[-1]["type"] == "context" and "more characters not shown" in str(message.blocks[-1])
        for block in message.blocks[:-1]:
            section = block["text"]["text"]
            assert len(section) <= SECTION_LIMIT and section.count("```") % 2 == 0  # code blocks closed
    assert slack.emulator.log.count(status=200) == slack.emulator.log.count()  # every call answered ok


def test_a_table_split_over_sections_stays_a_table_in_each() -> None:
    rows = "\n".join(f"| f{k} | {k} |" for k in range(400))
    _, blocks = render("| feature | n |\n|---|---:|\n" + rows)
    assert 1 < len(blocks) <= BLOCK_LIMIT
    for block in blocks:
        text = block["text"]["text"]
        assert text.startswith("```\n") and text.endswith("\n```") and len(text) <= SECTION_LIMIT


def test_alerts_mention_the_group_and_keep_it_when_updated(slack: SimpleNamespace) -> None:
    chat = adapter(slack.emulator, mention_group="S0ONCALL01")
    alert = chat.post("mlops-alerts", "📉 tiny: severe drift · ticket #3", marker="episode:ticket:3")
    chat.update(alert, "✅ tiny: drift resolved by v4 · ticket #3 closed")
    run = chat.post("mlops-pipeline", "✅ succeeded: tiny v4", marker="episode:run:8")
    reply = chat.reply(alert, "Batch `b9`: severe drift", marker="r")
    text = lambda ref: slack.state.message(ref.channel, ref.id).text  # noqa: E731
    assert text(alert).startswith("<!subteam^S0ONCALL01>\n*✅ tiny: drift resolved by v4*")
    assert not text(run).startswith("<!") and not text(reply).startswith("<!")
    handle = adapter(slack.emulator, mention_group="@ml-oncall")
    handle.post("mlops-alerts", "x", marker="y")
    assert slack.emulator.calls("chat.postMessage")[-1]["link_names"] is True


# ---------------------------------------------------------------------------
# Channels, files, doctor


def test_logical_channels_map_to_names_or_ids_and_names_are_looked_up_once(slack: SimpleNamespace) -> None:
    chat = adapter(slack.emulator, channels={"mlops-digest": "#ml-digest", "mlops-alerts": slack.alerts.id})
    digest = chat.post("mlops-digest", "📋 Daily digest", marker="digest:1")
    assert digest.channel == slack.digest.id
    assert chat.find_message("mlops-digest", "digest:1") == digest
    chat.find_message("mlops-alerts", "nothing")
    chat.find_message("mlops-digest", "nothing")
    assert slack.emulator.log.count(route="conversations.list") == 0  # the post answered with the id
    other = adapter(slack.emulator, channels={"mlops-digest": "ml-digest"})
    for _ in range(3):
        assert other.find_message("mlops-digest", "digest:1") == digest
    assert slack.emulator.log.count(route="conversations.list") == 1


def test_a_png_is_uploaded_into_the_thread_once(slack: SimpleNamespace, tmp_path: Path) -> None:
    alert = slack.chat.post("mlops-alerts", "📉 tiny: severe drift", marker="episode:ticket:3")
    step = slack.chat.reply(alert, "Batch `b9`: severe drift", marker="r")
    chart = tmp_path / "drift_b9.png"
    chart.write_bytes(png())
    slack.chat.upload(step, chart, "Drift of tiny on b9")  # a reply's thread is its parent's
    slack.chat.upload(alert, chart, "Drift of tiny on b9")  # asked again (after a lost answer): not twice
    thread = slack.state.thread("mlops-alerts", alert.id)
    assert [len(m.files) for m in thread] == [0, 0, 1]
    (f,) = thread[2].files
    assert (f.name, f.title, f.content, f.image_size) == ("drift_b9.png", "Drift of tiny on b9", png(), (8, 4))
    assert slack.state.transcript("mlops-alerts").endswith('↳ mlops-bot: [file drift_b9.png "Drift of tiny on b9"]')
    with pytest.raises(PermanentError, match="no file to upload"):
        slack.chat.upload(alert, tmp_path / "missing.png", "x")


def test_a_lost_upload_answer_is_transient_and_safe_to_repeat(slack: SimpleNamespace, tmp_path: Path) -> None:
    alert = slack.chat.post("mlops-alerts", "📉 drift", marker="a")
    chart = tmp_path / "chart.png"
    chart.write_bytes(png())
    slack.emulator.faults.add("files.completeUploadExternal", "lost_response")
    with pytest.raises(TransientError) as lost:
        slack.chat.upload(alert, chart, "Chart")
    assert lost.value.outcome_unknown is True
    slack.chat.upload(alert, chart, "Chart")
    assert sum(len(m.files) for m in slack.state.thread("mlops-alerts", alert.id)) == 1


def test_permalink_and_reactions(slack: SimpleNamespace) -> None:
    ref = slack.chat.post("mlops-alerts", "x", marker="m")
    assert slack.chat.permalink(ref).endswith(f"/archives/{ref.channel}/p{ref.id.replace('.', '')}")
    slack.chat.react(ref, ":eyes:")
    slack.chat.react(ref, "eyes")  # idempotent
    assert slack.state.message("mlops-alerts", ref.id).reactions == {"eyes": [slack.emulator.bot.id]}


def test_diagnose_finds_a_missing_channel_and_one_the_bot_is_not_in(slack: SimpleNamespace) -> None:
    slack.state.add_channel("random", member=False)
    slack.state.add_channel("old-runs", archived=True)
    chat = adapter(slack.emulator, channels={"mlops-digest": "#ml-digets"})
    checks = chat.diagnose(["mlops-pipeline", "mlops-alerts", "mlops-digest", "random", "old-runs"])
    assert checks[0] == ("Slack workspace Emulated Workspace as @mlops-bot", None, "")
    assert checks[1][0].startswith("Slack token scopes (") and checks[1][1:] == (None, "")
    assert checks[2:4] == [("Slack channel #mlops-pipeline", None, ""), ("Slack channel #mlops-alerts", None, "")]
    name, problem, fix = checks[4]
    assert (name, problem) == ("Slack channel #ml-digets (for mlops-digest)",
                               "Slack channel #ml-digets not found (mlops-digest is mapped to it), or it is private "
                               "and the bot is not in it")
    assert "/invite @mlops-bot" in fix and "map mlops-digest to an existing channel's id" in fix
    assert checks[5] == ("Slack channel #random", "@mlops-bot is not in #random",
                         "invite the bot with /invite @mlops-bot in #random")
    assert checks[6] == ("Slack channel #old-runs", "#old-runs is archived",
                         "unarchive it, or map old-runs to another channel")


def test_diagnose_names_missing_scopes_and_a_bad_token(slack: SimpleNamespace) -> None:
    slack.emulator.add_token("xoxb-poor", "poor-bot", scopes=("chat:write", "channels:read"), bot=True)
    slack.state.set_member("mlops-alerts", "poor-bot")
    checks = adapter(slack.emulator, token="xoxb-poor").diagnose(["mlops-alerts"])
    # said, not judged: doctor's permission checks name each missing scope once
    assert checks[1] == ("Slack token scopes (channels:read, chat:write)", None, "")
    assert checks[2] == ("Slack channel #mlops-alerts", None, "")
    blind = adapter(slack.emulator, token="xoxb-blind")
    slack.emulator.add_token("xoxb-blind", "blind-bot", scopes=("chat:write",), bot=True)
    # without channels:read no channel can be looked up: not one failure per channel for the same scope
    assert [name for name, _, _ in blind.diagnose(["mlops-alerts", "mlops-digest"])] == [
        "Slack workspace Emulated Workspace as @blind-bot", "Slack token scopes (chat:write)"]
    (bad,) = adapter(slack.emulator, token="xoxb-wrong").diagnose(["mlops-alerts"])
    assert bad[:2] == ("Slack bot token", "Slack refused the bot token (invalid_auth)") and "xoxb-…" in bad[2]


def test_diagnose_checks_the_user_groups_that_permissions_name(slack: SimpleNamespace) -> None:
    leads = slack.state.add_usergroup("ml-leads", members=[slack.emulator.bot.id])
    permissions = {"@ml-leads": "maintain", "@ml-interns": "read", "U024BE7LH": "write", "*": "read"}
    checks = adapter(slack.emulator).diagnose(["mlops-alerts"], permissions)
    assert checks[-2] == ("Slack user group @ml-leads (in MLOPS_SLACK_PERMISSIONS): 1 member(s)", None, "")
    name, problem, fix = checks[-1]
    assert name.startswith("Slack user group @ml-interns") and problem == "no Slack user group @ml-interns"
    assert "use its id" in fix

    slack.emulator.add_token("xoxb-nogroups", "plain-bot", scopes=("chat:write", "channels:read", "channels:history",
                                                                   "files:write"), bot=True)
    checks = adapter(slack.emulator, token="xoxb-nogroups").diagnose([], {leads.id: "maintain"})
    assert [name for name, _, _ in checks][1:] == [
        "Slack token scopes (channels:history, channels:read, chat:write, files:write)"]  # no group lookup


def test_the_token_is_never_logged(slack: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    slack.emulator.faults.add("chat.postMessage", "lost_response")
    errors = []
    for action in (lambda: slack.chat.post("mlops-alerts", "x", marker="m"),
                   lambda: slack.chat.find_message("mlops-alerts", "m"),
                   lambda: adapter(slack.emulator, token="xoxb-secret-wrong").post("mlops-alerts", "x", marker="m")):
        try:
            action()
        except (TransientError, PermanentError) as exc:
            errors.append(str(exc))
    assert len(errors) == 2 and caplog.text
    for token in (slack.emulator.token, "xoxb-secret-wrong"):
        assert token not in caplog.text and not any(token in e for e in errors)


def test_the_adapter_does_not_import_the_bot() -> None:
    code = "import sys, integrations.slack; sys.exit(any(m == 'bot' or m.startswith('bot.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- buttons, permissions from users and groups, routing per project ---------------------------


def test_buttons_are_an_actions_block_behind_confirmation_dialogs_and_updates_keep_or_drop_them(slack):
    actions = (ChatAction("deploy", "tiny", 3), ChatAction("rollback", "tiny", 2))
    ref = slack.chat.post("mlops-pipeline", "✅ succeeded: tiny v3 · run", marker="m1", actions=actions)
    message = slack.state.message(slack.pipeline.id, ref.id)
    block = message.blocks[-1]
    assert block["type"] == "actions" and block_problems(message.blocks) == []
    deploy, rollback = block["elements"]
    assert (deploy["action_id"], deploy["text"]["text"], deploy["style"]) == ("mlops:deploy", "Deploy v3", "primary")
    assert deploy["confirm"]["title"]["text"] == "Deploy tiny v3?" and "*tiny v3*" in deploy["confirm"]["text"]["text"]
    assert (rollback["action_id"], rollback["style"], rollback["confirm"]["style"]) == ("mlops:rollback", "danger",
                                                                                        "danger")
    assert slack.state.click(slack.pipeline.id, ref.id, "mlops:rollback")["actions"][0]["value"] == \
        '{"command": "rollback", "model": "tiny", "version": 2}'
    slack.chat.update(ref, "↩️ rolled back", actions=actions[1:])
    assert [e["action_id"] for e in message.blocks[-1]["elements"]] == ["mlops:rollback"]
    slack.chat.update(ref, "✅ resolved")
    assert all(b["type"] != "actions" for b in message.blocks)


def test_buttons_fit_under_the_longest_message(slack):
    ref = slack.chat.post("mlops-pipeline", "\n\n".join("x" * 2900 for _ in range(80)), marker="long",
                          actions=(ChatAction("retrain", "a-model-with-a-rather-long-name" * 4),))
    message = slack.state.message(slack.pipeline.id, ref.id)
    assert len(message.blocks) == BLOCK_LIMIT and message.blocks[-1]["type"] == "actions"
    assert block_problems(message.blocks) == []


@pytest.fixture
def people(slack):
    state = slack.state
    ids = SimpleNamespace(**{name: state.add_user(name).id for name in ("maya", "bob", "carol", "dan", "rita")})
    ids.leads = state.add_usergroup("ml-leads", members=["carol"]).id
    ids.oncall = state.add_usergroup("ml-oncall", members=["carol", "dan"]).id
    return ids


@pytest.mark.parametrize(("who", "expected"), [
    ("maya", Permission.maintain),  # named by id
    ("bob", Permission.write),  # named by name
    ("carol", Permission.admin),  # in two groups: the highest wins
    ("dan", Permission.triage),  # in a group named by its id; above "*"
    ("rita", Permission.none),  # nobody names her: "*"
])
def test_permission_from_users_names_groups_and_everyone(slack, people, who, expected):
    levels = {people.maya: "maintain", "bob": "write", "@ml-leads": "admin", people.oncall: "triage", "*": "none"}
    user = "bob" if who == "bob" else getattr(people, who)
    assert slack.chat.permission(user, levels) == expected


def test_group_members_are_remembered_for_a_few_minutes_and_a_silent_slack_grants_nothing(slack, people, caplog):
    now = [1000.0]
    chat = adapter(slack.emulator, monotonic=lambda: now[0])
    levels = {"@ml-leads": "admin"}
    assert chat.permission(people.carol, levels) == Permission.admin
    assert chat.permission(people.carol, levels) == Permission.admin
    assert len(slack.emulator.calls("usergroups.users.list")) == 1  # remembered
    assert len(slack.emulator.calls("usergroups.list")) == 1  # the handle, looked up once
    slack.state.add_usergroup("ml-leads", members=["dan"])  # carol leaves the group
    now[0] += 299
    assert chat.permission(people.carol, levels) == Permission.admin
    now[0] += 2
    assert chat.permission(people.carol, levels) == Permission.read  # asked again: she is out
    assert chat.permission(people.dan, levels) == Permission.admin
    now[0] += 301
    slack.emulator.faults.add("usergroups.users.list", "503", times=1)
    with caplog.at_level(logging.WARNING, logger="mlops_bot.slack"):
        assert chat.permission(people.dan, levels) == Permission.admin  # the last known members
    assert "members unknown" in caplog.text and slack.emulator.token not in caplog.text
    calls = len(slack.emulator.calls("usergroups.users.list"))
    assert chat.permission(people.dan, levels) == Permission.admin
    assert len(slack.emulator.calls("usergroups.users.list")) == calls  # not asked again at once
    now[0] += 31
    assert chat.permission(people.dan, levels) == Permission.admin
    assert len(slack.emulator.calls("usergroups.users.list")) == calls + 1  # asked again after a while
    fresh = adapter(slack.emulator)
    slack.emulator.faults.add("usergroups.users.list", "503", times=1)
    assert fresh.permission(people.dan, {**levels, "*": "read"}) == Permission.read  # nothing known: nothing granted


def test_group_lookups_fail_closed_without_the_scope(slack, people):
    slack.emulator.add_token("xoxb-narrow", "narrow-bot", scopes=("chat:write",), bot=True)
    chat = adapter(slack.emulator, "xoxb-narrow")
    assert chat.permission(people.carol, {people.leads: "admin", "*": "read"}) == Permission.read


def test_holders_say_who_may_in_slacks_syntax(people):
    levels = {people.maya: "maintain", "bob": "write", "@ml-leads": "admin", people.oncall: "triage", "*": "read"}
    assert holders(levels, Permission.write) == [f"<@{people.maya}>", "@bob", "@ml-leads"]
    assert holders(levels, Permission.triage)[-1] == f"<!subteam^{people.oncall}>"
    assert holders({"*": "admin"}, Permission.admin) == ["everyone"]


def test_whisper_is_ephemeral(slack):
    alice = slack.state.user("alice")
    slack.chat.whisper("mlops-pipeline", alice.id, "**no**, ask <@U1>")
    (ephemeral,) = slack.state.ephemeral(slack.pipeline.id)
    assert ephemeral.user == alice.id and ephemeral.text == "*no*, ask <@U1>"
    assert slack.state.messages(slack.pipeline.id) == []
    with pytest.raises(PermanentError):
        slack.chat.whisper("mlops-pipeline", slack.state.add_user("stranger").id, "x")  # not in the channel


def test_routes_put_a_projects_own_channels_over_the_workspaces():
    channels = {"mlops-alerts": "#ml-alerts", "mlops-pipeline": "#ml-ci"}
    projects = {"churn": {"mlops-alerts": "#churn-alerts"}}
    assert routes(channels, projects, "churn") == {"mlops-alerts": "#churn-alerts", "mlops-pipeline": "#ml-ci"}
    assert routes(channels, projects, "fraud") == channels
    assert routes(channels, projects, None) == channels


@pytest.mark.parametrize(("value", "problem"), [
    ({"churn": {"alerts": "#x"}}, "'alerts' is not a kind of message"),
    ({"churn model": {"mlops-alerts": "#x"}}, "is not a project name"),
    ({"churn": {"mlops-alerts": "#"}}, "needs a channel"),
])
def test_project_channels_are_checked_at_start_up(value, problem, monkeypatch):
    import json

    from bot.settings import Settings, SettingsError, load_settings

    with pytest.raises(ValueError, match=problem):
        Settings(slack_project_channels=value)
    monkeypatch.setenv("MLOPS_SLACK_PROJECT_CHANNELS", json.dumps(value))
    with pytest.raises(SettingsError) as failed:
        load_settings(None)
    assert "MLOPS_SLACK_PROJECT_CHANNELS" in str(failed.value) and problem in str(failed.value)
