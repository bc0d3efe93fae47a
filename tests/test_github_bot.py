"""The whole bot on GitHub: the real PyGithub client against the emulator, polling and webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from bot.webhooks import create_app
from tests.conftest import settle, tiny_frame

REPO = "acme/model"
FILES = ["models/tiny/mlops.toml"]
SECRET = "webhook-secret"


@pytest.fixture
def world(github_emulator):
    state = github_emulator.state
    state.add_repo(REPO)
    for login, role in [("alice", "admin"), ("maya", "maintain"), ("bob", "write"), ("rita", "read"),
                        ("mlops-bot[bot]", "write")]:
        state.add_collaborator(REPO, login, role)
    return github_emulator


@pytest.fixture
def bot(world, make_app):
    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1, github_webhook_secret=SECRET)
    app.run_once()  # first look: cursors start now; the first model is trained
    return app



def bot_comments(world, number: int) -> list[str]:
    return [c.body for c in world.state.comments(REPO, number) if c.user == "mlops-bot[bot]"]


def merge(world, title="Tune the model", body="", files=FILES) -> tuple[int, str]:
    number = world.state.open_pull(REPO, title, body, "bob", files=files)
    world.state.clock.advance(seconds=2)
    sha = world.state.merge_pull(REPO, number)
    return number, sha


def test_a_merged_pull_request_runs_once_and_reports_on_it(world, bot):
    issue = world.state.open_issue(REPO, "Better recall", "", "alice")
    number, sha = merge(world, body=f"Fixes #{issue}")
    settle(bot)
    runs = bot.registry.runs("tiny")
    assert [r.trigger for r in runs] == ["merge", "bootstrap"]
    report = bot_comments(world, number)
    assert len(report) == 1 and "| roc_auc |" in report[0] and "production v1" in report[0]
    assert world.state.statuses(REPO, sha)[-1].state in {"success", "failure"}
    assert any("Linked change" in body for body in bot_comments(world, issue))

    # The same merge delivered by webhook afterwards: seen before, nothing twice.
    pull = {"number": number, "merged": True, "merged_at": "2026-01-01T00:00:00Z", "merge_commit_sha": sha,
            "title": "Tune the model", "body": "", "user": {"login": "bob"},
            "base": {"ref": "main", "repo": {"full_name": REPO}}, "head": {"ref": "x", "repo": {"full_name": REPO}}}
    body = json.dumps({"action": "closed", "pull_request": pull, "repository": {"full_name": REPO}}).encode()
    response = TestClient(create_app(bot)).post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d1",
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()})
    assert response.json()["status"] == "seen before"
    settle(bot)
    assert len(bot.registry.runs("tiny")) == 2


def test_a_merge_elsewhere_runs_nothing(world, bot):
    merge(world, files=["README.md"])
    settle(bot)
    assert len(bot.registry.runs("tiny")) == 1


def test_retrain_by_a_writer_runs_and_by_a_reader_is_refused(world, bot):
    number = world.state.open_pull(REPO, "Experiment", "", "bob", files=FILES)
    writer = world.state.add_comment(REPO, number, "bob", "/retrain more data")
    reader = world.state.add_comment(REPO, number, "rita", "/retrain")
    settle(bot)
    assert [r.content for r in world.state.reactions(writer)] == ["eyes"]
    replies = bot_comments(world, number)
    assert any("Retraining **tiny**" in r for r in replies)
    assert any("Model **tiny v2** is now in production" in r for r in replies)
    assert any("@rita" in r and "needs **write** permission" in r for r in replies)
    assert len(bot.registry.runs("tiny")) == 2  # the reader's command ran nothing
    assert [r.content for r in world.state.reactions(reader)] == ["eyes"]


def test_drift_opens_one_issue_updates_it_and_a_promoted_retrain_closes_it(world, bot):
    batches = bot.settings.batches_dir
    batches.mkdir(parents=True, exist_ok=True)
    for name, seed in (("b1.csv", 1), ("b2.csv", 2)):
        frame = tiny_frame(300, seed=seed).drop(columns=["label"])
        frame["x1"] += 3.0
        frame.to_csv(batches / name, index=False)
        settle(bot)
    opened = [i for i in world.state.issues(REPO) if "mlops-bot" in i.labels]
    assert len(opened) == 1 and opened[0].state == "open" and opened[0].title.startswith("Retrain tiny")
    ticket = opened[0].number
    world.state.add_comment(REPO, ticket, "bob", "/retrain")
    settle(bot)
    assert world.state.issue(REPO, ticket).state == "closed"
    assert any("Closing this ticket" in body for body in bot_comments(world, ticket))
    links = {(l.src_kind, l.relation, l.dst_kind) for l in bot.store.trace("ticket", str(ticket))}
    assert ("ticket", "closed_by", "model") in links


def test_faults_on_every_write_lose_nothing_and_double_nothing(world, bot):
    world.faults.random(0.3, ["500", "502", "timeout", "lost_response", "429", "rate_limit_secondary"], seed=3,
                        target=r"(POST|PATCH) .*")
    numbers = [world.state.open_pull(REPO, f"PR {n}", "", "bob", files=FILES) for n in range(4)]
    for number in numbers:
        world.state.add_comment(REPO, number, "bob", "/status")
        world.state.add_comment(REPO, number, "rita", "/deploy 1")
    settle(bot, rounds=60)
    assert world.faults.fired, "no fault was injected"
    for number in numbers:
        replies = bot_comments(world, number)
        markers = Counter(r.rsplit("<!-- mlops-bot:", 1)[-1] for r in replies)
        assert len(replies) == 2 and all(n == 1 for n in markers.values()), replies
    assert bot.store.effects(status="dead") == []


def test_doctor_checks_the_repository_and_the_token(world, repo, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bot.cli import cli
    from tests.conftest import PROJECT

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(repo / PROJECT))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_TOKEN", world.token)
    monkeypatch.setenv("GITHUB_API_URL", world.base_url)
    healthy = CliRunner().invoke(cli, ["doctor"])
    assert healthy.exit_code == 0, healthy.output
    assert f"✓ GitHub repository {REPO}" in healthy.output and "✓ token scopes (repo, workflow)" in healthy.output
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/missing")
    missing = CliRunner().invoke(cli, ["doctor"])
    assert missing.exit_code == 1 and "✗ GitHub repository acme/missing: GitHub answered 404" in missing.output


def test_a_merge_trains_on_github_actions_once_and_reports_the_outcome(world, make_app):
    workflow = world.state.add_workflow(REPO, "train.yml", run_name_input="run_id")
    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1, github_workflow="train.yml")
    app.run_once()  # the first look: merges from now on are news
    number, sha = merge(world)
    for _ in range(15):  # long runs: asked about again and again, never dispatched twice, never given up
        app.run_once()
        app.clock.now += timedelta(minutes=30)
    runs = world.state.workflow_runs(REPO, workflow)
    assert [r.inputs["trigger"] for r in runs] == ["bootstrap"]  # the merge's run waits in the same lane
    world.state.complete_run(REPO, runs[0].id, "success")
    app.run_once()
    runs = world.state.workflow_runs(REPO, workflow)
    assert [r.inputs["trigger"] for r in runs] == ["bootstrap", "merge"]
    assert runs[1].inputs["project"] == "tiny" and runs[1].inputs["promote"] == "true"
    world.state.complete_run(REPO, runs[1].id, "failure")
    settle(app)
    report = bot_comments(world, number)
    assert len(report) == 1 and "Failed in **github-actions**: the workflow run concluded failure" in report[0]
    assert world.state.statuses(REPO, sha)[-1].state == "error"
    assert len(world.state.workflow_runs(REPO, workflow)) == 2
    assert app.store.effects(status="dead") == []
