"""The bot's chat on Slack: the real slack-sdk against the emulator, over a whole lifecycle."""

from __future__ import annotations

from datetime import timedelta

import pytest

from integrations.ports import Target
from tests.conftest import PROJECT, tiny_frame
from tests.test_bot import commit

CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")


@pytest.fixture
def slack(slack_emulator):
    for name in CHANNELS:
        slack_emulator.state.add_channel(name)
    return slack_emulator


@pytest.fixture
def bot(slack, make_app):
    return make_app(slack_bot_token=slack.token, slack_api_url=slack.base_url)


def settle(app, rounds: int = 40) -> None:
    for _ in range(rounds):
        app.run_once()
        if not app.store.effects(status="pending"):
            return
        app.clock.now += timedelta(minutes=30)
    raise AssertionError(f"effects still pending: {[e.key for e in app.store.effects(status='pending')]}")


def drift(app, name: str, seed: int) -> None:
    frame = tiny_frame(300, seed=seed).drop(columns=["label"])
    frame["x1"] += 3.0
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
    assert "drift resolved by v3" in episode.text
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
