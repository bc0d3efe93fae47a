"""The retrain that learns, end to end on embedded defaults with the bundled example.

Production batches arrive shifted, with their labels in the batch or later in label files; a
/retrain on the drift ticket trains on the project's data plus the labelled production rows, and
the ticket is closed only when the problem is measured gone.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

from integrations.ports import Target
from tests.conftest import EXAMPLE, git

PROJECT = "models/breast_cancer"


def _make_batch_module():
    spec = importlib.util.spec_from_file_location("example_make_batch", EXAMPLE / "make_batch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_batch = _make_batch_module()


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root / PROJECT, ignore=shutil.ignore_patterns("__pycache__"))
    git(root.parent, "init", "-q", "-b", "main", str(root))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "the example model")
    return root


@pytest.fixture
def bot(example_repo: Path, make_app):
    """The bot on embedded defaults (conftest's make_app) over the bundled example in its own repository."""
    return lambda **overrides: make_app(project_dir=example_repo / PROJECT, **overrides)


def write_batch(app, name: str, *, shift: float, seed: int, labels: str = "none", rows: int = 400) -> Path:
    """A production batch of the example: labels "in" the batch, in a "late" label file, or "none"."""
    frame = make_batch.make_batch(rows, shift, seed, labels=True, id_prefix=Path(name).stem)
    batch = app.settings.batches_dir / name
    batch.parent.mkdir(parents=True, exist_ok=True)
    (frame if labels == "in" else frame.drop(columns=["diagnosis"])).to_csv(batch, index=False)
    if labels == "late":
        late = app.settings.label_files_dir / f"{Path(name).stem}-labels.csv"
        late.parent.mkdir(parents=True, exist_ok=True)
        frame[["scan_id", "diagnosis"]].to_csv(late, index=False)
    return batch


def retrain_ticket(app):
    tickets = app.tracker.tickets(state="open")
    assert len(tickets) == 1, [t.title for t in tickets]
    return tickets[0]


def ticket_comments(app, ticket_id: int) -> list[str]:
    return [c["body"] for c in app.tracker.details(ticket_id)["comments"]]


def say(app, ticket_id: int, text: str) -> None:
    app.scm.add_comment(Target("ticket", app.scm.repo, ticket_id), text, author="you")
    app.run_once()


def accuracy(app, version: int, frame: pd.DataFrame) -> float:
    from pipeline.predict import predict_frame

    predicted = predict_frame(app.registry.get("breast-cancer", version), frame.drop(columns=["diagnosis"]))
    return float((predicted["prediction"].to_numpy() == frame["diagnosis"].to_numpy()).mean())


def test_a_retrain_on_labelled_production_data_learns_and_closes_the_ticket_when_measured(bot):
    app = bot()
    app.run_once()
    v1 = app.registry.production("breast-cancer")
    write_batch(app, "batch-001.csv", shift=1.5, seed=1, labels="in")
    write_batch(app, "batch-002.csv", shift=1.5, seed=2, labels="in")
    app.run_once()

    ticket = retrain_ticket(app)
    body = app.tracker.details(ticket.id)["body"]
    assert "drift" in ticket.title.lower() and "performance" in ticket.title.lower()
    assert "accuracy" in body  # the measured drop is on the ticket

    say(app, ticket.id, "/retrain labelled scans arrived")
    v2 = app.registry.production("breast-cancer")
    assert v2.version == 2
    data = v2.metadata["data"]
    assert data["rows"] > v1.metadata["data"]["rows"]
    assert data["fingerprint"] != v1.metadata["data"]["fingerprint"]
    assert {s["path"] for s in data["sources"] if s["kind"] == "batch"} == {"batch-001.csv", "batch-002.csv"}
    assert v2.metadata["recent"]["rows"] > 0  # validated on held-out recent production rows too

    fresh = make_batch.make_batch(1000, 1.5, 99, labels=True, id_prefix="fresh")
    assert accuracy(app, 2, fresh) > accuracy(app, 1, fresh)

    assert app.tracker.get(ticket.id).state == "closed"
    learned = {(l.relation, l.dst_kind, l.dst_id) for l in app.store.trace("model", "breast-cancer:v2")}
    assert {("learned_from", "batch", "batch-001.csv"), ("learned_from", "batch", "batch-002.csv")} <= learned
    assert any("performance on recent data restored with v2" in m["text"] for m in app.chat.messages())
    closing = ticket_comments(app, ticket.id)[-1]
    assert "Closing this ticket" in closing
    assert "production v1" in closing and "this run" in closing  # before and after on recent data


def test_a_retrain_without_new_data_says_so_and_leaves_the_ticket_open(bot):
    app = bot()
    app.run_once()
    write_batch(app, "batch-001.csv", shift=1.5, seed=1)
    app.run_once()
    ticket = retrain_ticket(app)

    say(app, ticket.id, "/retrain new data from the north clinic")
    assert app.registry.production("breast-cancer").version == 1
    assert len(app.registry.versions("breast-cancer")) == 1  # nothing trained
    assert app.tracker.get(ticket.id).state == "open"
    assert any("nothing new to learn from" in body for body in ticket_comments(app, ticket.id))
    assert any("nothing new to learn from" in m["text"] for m in app.chat.messages())


def test_late_labels_are_joined_by_id_measured_and_learned_from(bot):
    app = bot()
    app.run_once()
    write_batch(app, "batch-001.csv", shift=1.5, seed=1, labels="late")
    app.run_once()
    performance = app.store.get_state("performance", "breast-cancer")
    entry = performance["batches"]["batch-001.csv"]
    assert entry["measured"]["rows"] == 400 and "accuracy" in entry["measured"]["metrics"]
    assert entry["estimated"] and set(entry["estimate_error"]) <= set(entry["estimated"])
    assert performance["window"]["rows"] == 400

    ticket = retrain_ticket(app)
    say(app, ticket.id, "/retrain")
    v2 = app.registry.production("breast-cancer")
    assert v2.version == 2
    assert [s for s in v2.metadata["data"]["sources"] if s["kind"] == "labels"]


def test_drift_that_persists_after_the_promotion_keeps_the_ticket_open_and_says_where(bot, example_repo):
    app = bot()
    app.run_once()
    write_batch(app, "batch-001.csv", shift=2.0, seed=1)
    app.run_once()
    ticket = retrain_ticket(app)

    # New training data (not yet committed, so no merge runs), but it looks like the old: the drift stays.
    data = example_repo / PROJECT / "data" / "train.csv"
    frame = pd.read_csv(data)
    pd.concat([frame, frame.sample(50, random_state=1)]).to_csv(data, index=False)

    say(app, ticket.id, "/retrain more scans")
    assert app.registry.production("breast-cancer").version == 2
    assert app.tracker.get(ticket.id).state == "open"
    update = ticket_comments(app, ticket.id)[-1]
    assert "v2 promoted; drift persists in" in update and "worst_area" in update
