"""Drift episodes on embedded defaults: the cooldown holds chat back but never the ticket, a closed
episode does not silence the next one, and a ticket is closed once however many runs were for it."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner

from bot.cli import cli
from integrations.ports import Target
from tests.conftest import PROJECT, tiny_frame

HOURS = 3600


def batch(app, name: str, *, x1: float = 0.0, x2: float = 0.0, seed: int = 1) -> None:
    """A production batch (no labels) with x1 and x2 shifted by so many standard deviations."""
    frame = tiny_frame(300, seed=seed).drop(columns=["label"])
    frame["x1"] += x1
    frame["x2"] += x2
    folder = app.settings.batches_dir
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)


def ticket_target(app, ticket_id: int) -> Target:
    return Target("ticket", app.scm.repo, ticket_id)


def alerts(app) -> tuple[list[dict], list[dict]]:
    """The alerts channel: top-level messages (one per episode) and replies in their threads."""
    messages = app.chat.messages("mlops-alerts")
    return [m for m in messages if m["thread"] is None], [m for m in messages if m["thread"] is not None]


def drift_comments(app, ticket_id: int) -> list[str]:
    return [c["body"] for c in app.tracker.details(ticket_id)["comments"] if c["body"].startswith("Drift changed")]


def status_reply(app, ticket_id: int) -> str:
    target = ticket_target(app, ticket_id)
    app.scm.add_comment(target, "/status", author="you")
    app.run_once()
    return [c.body for c in app.scm.comments_on(target) if c.by_bot][-1]


def cli_status(app, monkeypatch, *args: str) -> str:
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(app.settings.project_dir))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(app.settings.data_dir))
    monkeypatch.setenv("MLOPS_DRIFT_COOLDOWN_S", str(int(app.settings.drift_cooldown_s)))
    shown = CliRunner().invoke(cli, ["status", *args])
    assert shown.exit_code == 0, shown.output
    return shown.output


def test_a_finding_inside_the_cooldown_is_held_from_chat_but_shown_on_the_ticket_and_in_status(make_app, monkeypatch):
    app = make_app(drift_cooldown_s=6 * HOURS)
    app.run_once()
    batch(app, "b1.csv", x1=3.0)
    app.run_once()
    (ticket,) = app.tracker.tickets(state="open")
    top, replies = alerts(app)
    assert len(top) == 1 and len(replies) == 1

    batch(app, "b2.csv", x1=3.0, x2=3.0, seed=2)  # a material change (x2 too), inside the cooldown
    app.run_once()
    details = app.tracker.details(ticket.id)
    assert [t.id for t in app.tracker.tickets(state="open")] == [ticket.id]
    assert details["comments"] == []  # no "Drift changed" while the alerts are held
    assert alerts(app) == (top, replies)  # and nothing new in chat
    held_line = next(line for line in details["body"].splitlines() if "seen again" in line)
    assert held_line.startswith("⏸️ High drift seen again at 2026-01-01 00:") and "`b2.csv`" in held_line
    assert "; alerts held until 2026-01-01 06:" in held_line, held_line

    status = status_reply(app, ticket.id)
    assert f"Retrain ticket: ticket:{ticket.id} " in status
    assert "on `b2.csv`:" in status and "b2.csv@" not in status  # batches by their file name
    held = next(line for line in status.splitlines() if line.startswith("- Alerts held:"))
    assert "b2.csv" in held and "alerts held until 2026-01-01 06:" in held, status
    shown = cli_status(app, monkeypatch)
    assert f"alerts held on ticket:{ticket.id}: high drift seen again at" in shown and "`b2.csv`" in shown, shown
    assert "last drift check: high on b2.csv\n" in shown, shown
    summary = json.loads(cli_status(app, monkeypatch, "--json"))
    assert summary["held_alert"]["ticket_id"] == ticket.id and summary["held_alert"]["batch"].startswith("b2.csv")

    app.clock.now += timedelta(hours=7)  # the cooldown is over: the change held back is said now
    batch(app, "b3.csv", x1=3.0, x2=3.0, seed=3)
    app.run_once()
    details = app.tracker.details(ticket.id)
    (changed,) = drift_comments(app, ticket.id)
    assert changed.startswith("Drift changed: now **high** in x1, x2") and "b3.csv" in changed
    assert "seen again" not in details["body"]
    top_after, replies_after = alerts(app)
    assert len(top_after) == 1 and len(replies_after) == 2  # the same episode's thread, one more reply
    assert not any(line.startswith("- Alerts held:") for line in status_reply(app, ticket.id).splitlines())
    assert "alerts held" not in cli_status(app, monkeypatch)


def test_the_same_drift_again_is_noted_on_the_ticket_without_an_alert(make_app):
    app = make_app(drift_cooldown_s=0)
    app.run_once()
    batch(app, "b1.csv", x1=3.0)
    app.run_once()
    batch(app, "b2.csv", x1=3.0, seed=2)  # nothing changed: no alert, and no cooldown to hold one
    app.run_once()
    (ticket,) = app.tracker.tickets(state="open")
    details = app.tracker.details(ticket.id)
    assert details["comments"] == []
    seen = next(line for line in details["body"].splitlines() if "seen again" in line)
    assert seen.startswith("🔁 High drift seen again at") and "`b2.csv" in seen and "held" not in seen, seen
    assert len(alerts(app)[1]) == 1
    assert not any(line.startswith("- Alerts held:") for line in status_reply(app, ticket.id).splitlines())


def test_drift_after_a_closed_ticket_is_a_new_episode_at_once_whatever_the_cooldown(make_app, monkeypatch):
    app = make_app(drift_cooldown_s=6 * HOURS)
    app.run_once()
    batch(app, "b1.csv", x1=3.0)
    app.run_once()
    (first,) = app.tracker.tickets(state="open")
    app.tracker.close(first.id)  # resolved by hand, minutes after it opened

    batch(app, "b2.csv", x1=3.0, seed=2)  # the same drift back, well inside the cooldown
    app.run_once()
    (second,) = app.tracker.tickets(state="open")
    assert second.id != first.id
    top, replies = alerts(app)
    assert len(top) == 2  # the new episode has its own alert and thread
    second_thread = next(m for m in top if f"ticket:{second.id}" in m["text"])
    (in_thread,) = [m["text"] for m in replies if m["thread"] == str(second_thread["id"])]
    assert in_thread.startswith("Batch `b2.csv")
    assert app.store.effects(status="dead") == []
    assert f"ticket:{second.id}" in status_reply(app, second.id)
    assert "alerts held" not in cli_status(app, monkeypatch)


def test_two_retrains_for_one_ticket_close_it_once(make_app, repo):
    """/retrain on the ticket and /retrain on a change while the ticket is open: both runs are for
    the ticket and both promote a model, but the ticket gets one closing comment and one close."""
    from tests.test_bot import commit

    app = make_app()
    app.run_once()
    batch(app, "b1.csv", x1=3.0)
    app.run_once()
    (ticket,) = app.tracker.tickets(state="open")
    commit(repo, "README.md", "notes\n", "A change outside the model project")
    app.run_once()
    change = app.scm.merged_changes(None)[0][-1]
    # Fresh data in the project folder, shifted as production is (not committed: the runs use the
    # folder as it is), so both runs have something to learn from and the drift is gone after them.
    shifted = tiny_frame()
    shifted["x1"] += 3.0
    shifted.to_csv(repo / PROJECT / "data.csv", index=False)

    change_target = Target("change", app.scm.repo, change.number)
    app.scm.add_comment(ticket_target(app, ticket.id), "/retrain on data like production's", author="you")
    app.scm.add_comment(change_target, "/retrain this one too", author="you")
    for _ in range(3):
        app.run_once()

    assert [v.version for v in app.registry.versions("tiny")][-2:] == [2, 3]
    assert app.registry.production("tiny").version == 3
    assert app.tracker.get(ticket.id).state == "closed"
    conversation = [c["body"] for c in app.tracker.details(ticket.id)["comments"]]
    assert len([body for body in conversation if "Closing this ticket" in body]) == 1, conversation
    closes = [e for e in app.store.effects(limit=1000) if e.kind == "tracker.close"]
    assert len(closes) == 1 and closes[0].status == "done"
    top, replies = alerts(app)
    assert len([m for m in replies if "closed" in m["text"]]) == 1
    # The run asked for on the change reports there, in its own words and thread.
    change_replies = [c.body for c in app.scm.comments_on(change_target) if c.by_bot]
    assert any("is now in production" in body for body in change_replies), change_replies
    pipeline_threads = {m["thread"] for m in app.chat.messages("mlops-pipeline") if m["thread"]}
    assert len(pipeline_threads) >= 2
    assert app.store.effects(status="dead") == []
