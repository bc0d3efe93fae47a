"""Slack's rate limits: the emulator enforces each method's tier and chat.postMessage's per-channel
limit as Slack documents them, and the adapter paces its calls to stay under them.

Time is the emulator's clock, frozen: the adapter's pacer sleeps on that same clock, so a minute
of pacing costs no wall time and nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from integrations.ports import MessageRef, TransientError
from integrations.slack import POST_SPACING_S, SlackChat, SlackPacer, connect
from tests.emulators.fixtures import no_proxy_for_loopback, slack_emulator  # noqa: F401 - the fixtures
from tests.emulators.slack import METHOD_TIERS, POST_BURST, TIER_PER_MINUTE

pytestmark = pytest.mark.usefixtures("no_proxy_for_loopback")


@pytest.fixture
def slack(slack_emulator):  # noqa: F811 - the imported fixture
    """The emulator with Slack's limits on and its clock standing still."""
    slack_emulator.tier_limits = True
    slack_emulator.clock.freeze()
    return slack_emulator


def raw_client(emulator) -> WebClient:
    return WebClient(token=emulator.token, base_url=emulator.base_url, retry_handlers=[])


def chat(emulator, pacer: SlackPacer) -> SlackChat:
    # no SDK retries on 429: a rate limit the pacer did not avoid must show
    return SlackChat(connect(emulator.token, base_url=emulator.base_url, timeout=2, rate_limit_retries=0),
                     pacer=pacer)


def paced_on(clock, **options) -> SlackPacer:
    return SlackPacer(monotonic=clock.seconds, sleep=clock.sleep, **options)


# --- the emulator ---------------------------------------------------------------------------------


def test_past_its_tier_a_method_answers_429_ratelimited_with_retry_after(slack):
    client = raw_client(slack)
    assert METHOD_TIERS["conversations.list"] == 2
    for _ in range(TIER_PER_MINUTE[2]):
        client.conversations_list()
    with pytest.raises(SlackApiError) as limited:
        client.conversations_list()
    response = limited.value.response
    assert response.status_code == 429 and response.data == {"ok": False, "error": "ratelimited"}
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert slack.rate_limited == {"conversations.list": 1}
    client.auth_test()  # each method has its own budget
    slack.clock.advance(int(response.headers["Retry-After"]))
    client.conversations_list()  # waiting as asked is enough


def test_chat_post_message_allows_a_short_burst_then_one_a_second_per_channel(slack):
    general, random = slack.state.add_channel("general"), slack.state.add_channel("random")
    client = raw_client(slack)
    for n in range(POST_BURST):
        client.chat_postMessage(channel=general.id, text=f"burst {n}")
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel=general.id, text="one too many")
    assert limited.value.response.status_code == 429
    assert "one too many" not in slack.state.transcript(general.id)  # refused: not posted
    client.chat_postMessage(channel=random.id, text="another channel has its own limit")
    slack.clock.advance(1)
    client.chat_postMessage(channel=general.id, text="a second later")
    assert slack.rate_limited == {"chat.postMessage": 1}


# --- the adapter ----------------------------------------------------------------------------------


def test_a_busy_episode_is_paced_under_slacks_limits_and_each_message_lands_once(slack):
    channel = slack.state.add_channel("mlops-pipeline")
    adapter = chat(slack, paced_on(slack.clock))
    started = slack.clock.seconds()
    top = adapter.post("mlops-pipeline", "Run 1 started", marker="episode")
    replies = [adapter.reply(top, f"step {n}", marker=f"step-{n}") for n in range(40)]
    for n in range(60):  # the episode's message moves through its states: chat.update is Tier 3, 50 a minute
        adapter.update(top, f"Run 1: {n} of 60 steps")
    assert slack.rate_limited == {}
    assert adapter.find_message("mlops-pipeline", "step-39", thread=top.id) == replies[-1]
    thread = slack.state.thread(channel.id, top.id)
    assert [m.marker for m in thread] == ["episode", *[f"step-{n}" for n in range(40)]]  # once each, in order
    assert slack.clock.seconds() - started >= 40 * POST_SPACING_S  # a message a second in the channel


def test_unpaced_the_same_episode_meets_slacks_limit(slack):
    """The test above can fail: a pacer that does not wait lets Slack answer 429."""
    slack.state.add_channel("mlops-pipeline")
    adapter = chat(slack, SlackPacer(monotonic=slack.clock.seconds, sleep=lambda seconds: None))
    top = adapter.post("mlops-pipeline", "Run 1 started", marker="episode")
    with pytest.raises(TransientError) as limited:
        for n in range(40):
            adapter.reply(top, f"step {n}", marker=f"step-{n}")
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    assert slack.rate_limited == {"chat.postMessage": 1}


def test_a_method_bursts_a_quarter_of_its_tier_then_is_spaced_and_a_long_wait_goes_to_the_outbox(slack):
    slept: list[float] = []
    pacer = SlackPacer(monotonic=slack.clock.seconds, sleep=slept.append, max_wait_s=10)  # callers at once
    for _ in range(5):
        pacer.wait("conversations.list")  # Tier 2: 20 a minute, 5 of them at once
    assert slept == []
    pacer.wait("conversations.list")
    pacer.wait("conversations.list")
    assert slept == [pytest.approx(4), pytest.approx(8)]  # then the other 15 spread over the minute
    with pytest.raises(TransientError) as paced:
        pacer.wait("conversations.list")  # its slot is 12 s away: longer than the pacer waits
    assert paced.value.retry_after == pytest.approx(12)
    slack.clock.advance(12)
    pacer.wait("conversations.list")  # it took no slot: 12 s later the slot is free, no wait
    assert len(slept) == 2


def test_the_adapter_answers_a_429_it_still_meets_with_slacks_retry_after(slack):
    slack.state.add_channel("mlops-pipeline")
    slack.faults.add("chat.postMessage", "429", retry_after=7)
    adapter = chat(slack, paced_on(slack.clock))
    with pytest.raises(TransientError) as limited:
        adapter.post("mlops-pipeline", "hello", marker="m1")
    assert limited.value.retry_after == 7
    assert adapter.post("mlops-pipeline", "hello", marker="m1") == MessageRef(
        slack.state.find_channel("mlops-pipeline").id, slack.state.messages(slack.state.find_channel(
            "mlops-pipeline").id)[-1].ts)


def test_the_bot_paces_itself_against_slack_and_not_against_other_servers():
    from integrations.slack import SlackPacer

    assert SlackPacer.for_api("https://slack.com/api/").paced
    assert SlackPacer.for_api("https://acme.enterprise.slack.com/api/").paced
    assert not SlackPacer.for_api("http://127.0.0.1:8123/api/").paced  # an emulator keeps limits of its own
    slept: list[float] = []
    unpaced = SlackPacer(paced=False, monotonic=lambda: 0.0, sleep=slept.append)
    for _ in range(10):
        unpaced.wait("chat.postMessage", "C1")
    assert slept == []
