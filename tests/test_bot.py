"""The bot whole, on embedded defaults: a real git repository, the local board, console chat,
the in-process pipeline and a real SQLite state database."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.ports import Target
from tests.conftest import PROJECT, git, tiny_frame


def commit(repo: Path, path: str, text: str, message: str) -> str:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def drifted_batch(app, name: str, *, shift: float, rows: int = 300, seed: int = 1, labels: bool = False) -> Path:
    """Production rows with x1 shifted; with ``labels``, the true labels too (a labelled batch)."""
    frame = tiny_frame(rows, seed=seed, x1_shift=shift)
    if not labels:
        frame = frame.drop(columns=["label"])
    folder = app.settings.batches_dir
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)
    return folder / name


def comment(app, target: Target, body: str, author: str = "you"):
    app.scm.add_comment(target, body, author=author)
    return app.run_once()


def bot_replies(app, target: Target) -> list[str]:
    return [c.body for c in app.scm.comments_on(target) if c.by_bot]


def test_first_cycle_trains_the_first_model_once(make_app):
    app = make_app()
    app.run_once()
    app.run_once()
    assert app.registry.production("tiny").version == 1
    assert len(app.registry.runs("tiny")) == 1
    messages = app.chat.messages("mlops-pipeline")
    assert len([m for m in messages if m["thread"] is None]) == 1  # one top-level message for the episode


def test_a_merge_touching_the_project_runs_once_and_reports_everywhere(make_app, repo):
    app = make_app()
    app.run_once()
    ticket = app.tracker.open("feature-request", "Use more data", "body", (), marker="t")
    sha = commit(repo, f"{PROJECT}/notes.md", "more trees\n", f"Tune the model\n\nFixes #{ticket.id}")
    app.run_once()
    app.run_once()  # nothing new: nothing twice

    runs = app.registry.runs("tiny")
    assert len(runs) == 2 and runs[0].trigger == "merge"
    change = next(c for c in app.scm.merged_changes(None)[0])
    target = Target("change", app.scm.repo, change.number)
    replies = bot_replies(app, target)
    assert len(replies) == 1  # started, then updated in place with the result
    assert "| roc_auc |" in replies[0] and "production v1" in replies[0]
    assert app.scm.status_of(app.scm.repo, sha, "mlops-bot/pipeline")[0] in {"success", "failure"}
    details = app.tracker.details(ticket.id)
    assert len(details["comments"]) == 1 and "Linked change" in details["comments"][0]["body"]
    top_level = [m for m in app.chat.messages("mlops-pipeline") if m["thread"] is None]
    assert len(top_level) == 2  # bootstrap episode and this change's episode
    assert any(link.relation == "built_from" for link in app.store.trace("run", runs[0].run_id))


def test_a_merge_elsewhere_runs_nothing(make_app, repo):
    app = make_app()
    app.run_once()
    commit(repo, "README.md", "changed\n", "docs only")
    app.run_once()
    assert len(app.registry.runs("tiny")) == 1


def test_a_failing_pipeline_is_reported_with_its_stage(make_app, repo):
    app = make_app()
    app.run_once()
    (repo / PROJECT / "data.csv").unlink()
    sha = commit(repo, f"{PROJECT}/notes.md", "oops\n", "Remove the data")
    app.run_once()
    state, description = app.scm.status_of(app.scm.repo, sha, "mlops-bot/pipeline")
    assert state == "error" and description == "failed in train"
    change = app.scm.merged_changes(None)[0][-1]
    reply = bot_replies(app, Target("change", app.scm.repo, change.number))[0]
    assert "Failed in **train**: no data file matches" in reply
    assert app.registry.production("tiny").version == 1


def test_drift_opens_one_ticket_updates_it_and_retrain_closes_it(make_app):
    app = make_app()
    app.run_once()
    drifted_batch(app, "b1.csv", shift=1.5, labels=True)  # labelled: a retrain has something to learn
    app.run_once()
    open_tickets = app.tracker.tickets(state="open")
    assert len(open_tickets) == 1
    ticket = open_tickets[0]
    assert ticket.title.startswith("Retrain tiny:") and "retrain" in ticket.labels
    assert "x1" in app.tracker.details(ticket.id)["body"]

    drifted_batch(app, "b2.csv", shift=1.5, seed=2)  # the same drift again: updated in place, no new ticket
    app.run_once()
    assert [t.id for t in app.tracker.tickets(state="open")] == [ticket.id]
    assert app.tracker.details(ticket.id)["comments"] == []

    drifted_batch(app, "b3.csv", shift=0.0, seed=3)  # no drift: nothing to say
    app.run_once()
    assert app.tracker.details(ticket.id)["comments"] == []

    comment(app, Target("ticket", app.scm.repo, ticket.id), "/retrain new data")
    assert app.tracker.get(ticket.id).state == "closed"
    assert app.registry.production("tiny").version == 2
    conversation = [c["body"] for c in app.tracker.details(ticket.id)["comments"]]
    assert any("Retraining **tiny**" in body for body in conversation)
    assert any("Closing this ticket" in body and "| roc_auc |" in body for body in conversation)
    trace = {(l.src_kind, l.relation, l.dst_kind) for l in app.store.trace("ticket", str(ticket.id))}
    assert ("ticket", "closed_by", "model") in trace and ("model", "produced_by", "run") in trace
    back = {(l.relation, l.dst_kind) for l in app.store.trace("model", "tiny:v2")}
    assert {("trained_on", "data"), ("built_from", "commit"), ("triggered_by", "command"),
            ("closed_by", "model"), ("chat_thread", "chat")} <= back
    alerts = [m for m in app.chat.messages("mlops-alerts") if m["thread"] is None]
    assert len(alerts) == 1  # one top-level message for the whole drift episode

    drifted_batch(app, "b4.csv", shift=3.0, seed=4)  # drift again later: a new episode, a new ticket
    app.run_once()
    assert len(app.tracker.tickets(state="open")) == 1 and app.tracker.tickets(state="open")[0].id != ticket.id


def test_a_batch_with_missing_columns_is_a_data_problem(make_app):
    app = make_app()
    app.run_once()
    path = drifted_batch(app, "bad.csv", shift=0.0)
    path.write_text("x1,colour\n1.0,red\n")
    app.run_once()
    alerts = [m["text"] for m in app.chat.messages("mlops-alerts")]
    assert len(alerts) == 1 and "could not be checked" in alerts[0] and "x2" in alerts[0]
    assert app.tracker.tickets(state="open") == []


@pytest.mark.parametrize(
    ("body", "author", "expected"),
    [
        ("/status", "you", "tiny"),
        ("/deploy 1", "stranger", "needs **maintain** permission"),
        ("/retrian", "you", "Did you mean `/retrain`?"),
        ("/help", "stranger", "/rollback"),
    ],
)
def test_commands_answer_and_check_permission(make_app, body, author, expected):
    app = make_app()
    app.run_once()
    target = Target("change", app.scm.repo, 1)
    comment(app, target, body, author=author)
    replies = bot_replies(app, target)
    assert any(expected in reply for reply in replies), replies
    assert len(app.registry.runs("tiny")) == 1  # nothing was run


def test_quoted_commands_and_the_bots_own_words_do_nothing(make_app):
    app = make_app()
    app.run_once()
    target = Target("change", app.scm.repo, 50)
    comment(app, target, "> /retrain\n```\n/retrain\n```")
    comment(app, target, "/retrain", author="mlops-bot")
    assert bot_replies(app, target) == []
    assert len(app.registry.runs("tiny")) == 1


def test_deploy_and_rollback_commands(make_app, repo):
    app = make_app()
    app.run_once()
    comment(app, Target("change", app.scm.repo, 1), "/validate")
    assert app.registry.production("tiny").version == 1 and len(app.registry.versions("tiny")) == 2
    comment(app, Target("change", app.scm.repo, 1), "/deploy 2")
    assert app.registry.production("tiny").version == 2
    comment(app, Target("change", app.scm.repo, 1), "/rollback v2 misbehaves")
    assert app.registry.production("tiny").version == 1
    replies = bot_replies(app, Target("change", app.scm.repo, 1))
    assert any("**tiny v2** is now in production" in r for r in replies)
    assert any("Rolled back **tiny** to v1" in r for r in replies)


def test_restart_continues_from_stored_state(make_app):
    first = make_app()
    first.run_once()
    drifted_batch(first, "b1.csv", shift=3.0)
    first.run_once()
    first.store.close()
    second = make_app()
    second.run_once()
    assert len(second.registry.runs("tiny")) == 1
    assert len(second.tracker.tickets()) == 1
    assert [e.status for e in second.store.effects(status="pending")] == []
