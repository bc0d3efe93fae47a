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
from integrations.ports import PermanentError
from tests.conftest import PROJECT, git, settle, write_drifted_batch

REPO = "acme/model"
FILES = ["models/tiny/mlops.toml"]
SECRET = "webhook-secret"


class Remote:
    """The repository's code on the server: a bare repository, which the emulator's clone_url names."""

    def __init__(self, source, root):
        self.bare, self.work = root / "remote.git", root / "work"
        git(root, "clone", "-q", "--bare", str(source), str(self.bare))
        git(root, "clone", "-q", str(self.bare), str(self.work))

    def commit(self, message="a change", *, with_f1=False, ref="refs/heads/main", base="origin/main") -> str:
        """A commit on ``base`` pushed to ``ref``; ``with_f1`` adds f1 to the project's metrics, so a
        report shows whose code ran."""
        git(self.work, "fetch", "-q", "origin")
        git(self.work, "checkout", "-q", "--detach", base)
        toml = self.work / PROJECT / "mlops.toml"
        if with_f1:
            toml.write_text(toml.read_text().replace('others = ["accuracy"]', 'others = ["accuracy", "f1"]'))
        (self.work / "NOTES.md").write_text(message)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", f"+HEAD:{ref}")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture
def remote(repo, tmp_path):
    return Remote(repo, tmp_path)


@pytest.fixture
def world(github_emulator, remote):
    state = github_emulator.state
    state.add_repo(REPO, clone_url=remote.bare)
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


def merge(world, title="Tune the model", body="", files=FILES, remote=None, with_f1=False) -> tuple[int, str]:
    """A merged pull request; with ``remote``, its merge commit is a real commit there."""
    number = world.state.open_pull(REPO, title, body, "bob", files=files)
    world.state.clock.advance(seconds=2)
    sha = world.state.merge_pull(REPO, number, merge_sha=remote.commit(title, with_f1=with_f1) if remote else None)
    return number, sha


def test_a_merged_pull_request_runs_once_and_reports_on_it(world, bot, remote):
    issue = world.state.open_issue(REPO, "Better recall", "", "alice")
    number, sha = merge(world, body=f"Fixes #{issue}", remote=remote, with_f1=True)
    settle(bot)
    runs = bot.registry.runs("tiny")
    assert [r.trigger for r in runs] == ["merge", "bootstrap"]
    report = bot_comments(world, number)
    assert len(report) == 1 and "| roc_auc |" in report[0] and "production v1" in report[0]
    # The merge commit's code ran (its mlops.toml adds f1), from the bot's own workspace at that commit.
    assert "| f1 |" in report[0]
    workspace = bot.settings.data_dir / "workspaces" / sha
    assert (workspace / PROJECT / "mlops.toml").is_file()
    assert git(workspace, "rev-parse", "HEAD") == sha
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


def test_retrain_by_a_writer_runs_and_by_a_reader_is_refused(world, bot, remote):
    head = remote.commit("Experiment", ref="refs/heads/bob-experiment")
    number = world.state.open_pull(REPO, "Experiment", "", "bob", files=FILES, head_sha=head, head_ref="bob-experiment")
    writer = world.state.add_comment(REPO, number, "bob", "/retrain more data")
    reader = world.state.add_comment(REPO, number, "rita", "/retrain")
    settle(bot)
    assert [r.content for r in world.state.reactions(writer)] == ["eyes"]
    replies = bot_comments(world, number)
    assert any("Retraining **tiny**" in r for r in replies)
    # The pull request's code is not merged: trained and validated, kept as a candidate, not deployed.
    assert any("registered as a candidate" in r for r in replies)
    assert bot.registry.production("tiny").version == 1
    assert any("@rita" in r and "needs **write** permission" in r for r in replies)
    assert len(bot.registry.runs("tiny")) == 2  # the reader's command ran nothing
    assert [r.content for r in world.state.reactions(reader)] == ["eyes"]


def test_drift_opens_one_issue_updates_it_and_a_promoted_retrain_closes_it(world, bot):
    # The first batch is labelled: a retrain has something to learn.
    for name, seed, labelled in (("b1.csv", 1, True), ("b2.csv", 2, False)):
        write_drifted_batch(bot, name, seed, labelled=labelled)
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


def test_a_status_whose_answer_was_lost_is_not_set_twice(world, bot, remote):
    world.faults.add("repos/create-commit-status", "lost_response", times=2)  # the pending and the result
    number, sha = merge(world, remote=remote)
    settle(bot)
    assert world.faults.fired
    states = [s.state for s in world.state.statuses(REPO, sha) if s.context == "mlops-bot/pipeline"]
    assert states == ["pending", states[-1]] and states[-1] in {"success", "failure"}, states
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


# --- pull requests from forks ----------------------------------------------------------------


def test_a_fork_pull_request_runs_nothing_until_a_maintainer_allows_its_head(world, bot, remote):
    fork_head = remote.commit("Fork: add f1", with_f1=True, ref="refs/heads/eve-patch")
    number = world.state.open_pull(REPO, "Add f1", "", "eve", files=FILES, from_fork=True, head_sha=fork_head,
                                   head_ref="eve-patch")
    workspace = bot.settings.data_dir / "workspaces" / fork_head

    def say(author, body):
        world.state.add_comment(REPO, number, author, body)
        settle(bot)
        return bot_comments(world, number)[-1]

    refused = say("bob", "/validate")
    assert "comes from a fork (`eve/model`)" in refused and "write, maintain or admin access" in refused
    assert f"`{fork_head[:7]}`" in refused and "Nothing was run" in refused
    assert "needs **write** permission" in say("rita", "/ok-to-test")  # a reader may not allow it
    assert "needs **write** permission" in say("eve", "/validate")  # nor may the fork's author run it
    assert len(bot.registry.runs("tiny")) == 1 and not workspace.exists()

    assert f"may now run its code at `{fork_head[:7]}`" in say("maya", "/ok-to-test")
    say("bob", "/validate")
    runs = bot.registry.runs("tiny")
    assert [r.trigger for r in runs] == ["command", "bootstrap"] and (workspace / PROJECT / "mlops.toml").is_file()
    report = bot_comments(world, number)[-1]
    assert "registered as a candidate" in report and "| f1 |" in report  # the fork's code ran, not deployed
    assert bot.registry.production("tiny").version == 1
    assert world.state.statuses(REPO, fork_head)[-1].state == "success"  # reported on the head commit

    # A new push needs a new /ok-to-test.
    world.state.push_to_pull(REPO, number, remote.commit("Fork: more", ref="refs/heads/eve-patch"))
    again = say("bob", "/retrain")
    assert "earlier commit" in again and f"`{fork_head[:7]}`" in again
    assert len(bot.registry.runs("tiny")) == 2


def test_ok_to_test_on_a_pull_request_from_the_repository_itself_is_not_needed(world, bot, remote):
    head = remote.commit("Own branch", ref="refs/heads/bob-own")
    number = world.state.open_pull(REPO, "Own", "", "bob", files=FILES, head_sha=head, head_ref="bob-own")
    world.state.add_comment(REPO, number, "maya", "/ok-to-test")
    world.state.add_comment(REPO, number, "maya", "> /ok-to-test\nquoted, not a command")
    settle(bot)
    replies = bot_comments(world, number)
    assert len(replies) == 1 and "not from a fork" in replies[0]
    assert bot.store.get_state("ok_to_test", f"{REPO}#{number}") is None


# --- the per-cycle request budget ------------------------------------------------------------


def test_a_cycle_spends_at_most_its_budget_and_the_rest_waits_for_the_next(world, make_app):
    budget = 4
    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1, github_cycle_budget=budget)
    app.run_once()
    authors = ["alice", "maya", "bob", "rita"]  # four reactions and four replies: cycles' worth of writes
    numbers = [world.state.open_pull(REPO, f"PR {n}", "", "bob", files=FILES) for n in range(4)]
    comments = [world.state.add_comment(REPO, number, author, "/status") for number, author in zip(numbers, authors)]
    cycles = []
    for _ in range(20):
        world.log.clear()
        app.run_once()
        cycles.append(world.log.count())
        app.clock.now += timedelta(minutes=2)  # past the poll interval
        if all(bot_comments(world, number) for number in numbers) and not app.store.effects(status="pending"):
            break
    assert max(cycles) <= budget and len(cycles) >= 4, cycles
    for number, comment in zip(numbers, comments):
        assert len(bot_comments(world, number)) == 1  # every command answered once: nothing lost or doubled
        assert [r.content for r in world.state.reactions(comment)] == ["eyes"]
    assert app.store.effects(status="dead") == []
    app.poll()  # the bot's own replies, read once
    # The next poll asks from the newest reply's second: a new URL, so a 200 unless every reply was
    # written within the second of the cursor before; only the poll after it repeats a request.
    app.poll()
    world.log.clear()
    app.poll()
    assert world.log.count() == 2 and world.log.charged() == 0  # and idle again: two free 304s


def test_a_bot_fed_only_by_webhooks_gets_a_new_budget_each_poll_interval(world, make_app):
    budget = 2
    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1, github_cycle_budget=budget)
    app.run_once()
    number = world.state.open_pull(REPO, "PR", "", "bob", files=FILES)
    comments = [world.state.add_comment(REPO, number, "alice", f"/status {k}") for k in range(3)]
    app.poll()  # one poll brings the three commands; from here on nothing polls
    world.log.clear()
    app.deliver()
    assert world.log.count() <= budget  # the interval's budget is spent: the rest waits
    for _ in range(10):
        app.clock.now += timedelta(seconds=app.settings.poll_interval_s)  # an interval, and no poll
        app.deliver()
        if not app.store.effects(status="pending"):
            break
    assert all([r.content for r in world.state.reactions(c)] == ["eyes"] for c in comments)
    assert len(bot_comments(world, number)) == 3 and app.store.effects(status="dead") == []


# --- acting as a GitHub App ------------------------------------------------------------------


def _rsa_pem() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_the_bot_acts_as_a_github_app_installation(world, make_app, remote):
    private, public = _rsa_pem()
    world.add_app(42, slug="acme-mlops", public_key=public)
    world.add_installation(4242, app_id=42)
    world.state.add_collaborator(REPO, "acme-mlops[bot]", "write")
    app = make_app(github_repository=REPO, github_api_url=world.base_url, github_timeout_s=1,
                   project_paths=["models/tiny"], bot_name="acme-mlops", github_app_id="42",
                   github_app_private_key=private.replace("\n", "\\n"), github_app_installation_id=4242)
    app.run_once()
    number, sha = merge(world, remote=remote)
    comment = world.state.add_comment(REPO, number, "bob", "/status")
    settle(app)
    tokens = world.log.filter(method="POST", path="/app/installations/4242/access_tokens")
    assert len(tokens) == 1 and tokens[0].status == 201  # one token, reused until it expires
    mine = [c.body for c in world.state.comments(REPO, number) if c.user == "acme-mlops[bot]"]
    assert len(mine) == 2 and any("| roc_auc |" in body for body in mine)  # the run's report and /status
    assert bot_comments(world, number) == []  # nothing as the token's user
    assert [(r.user, r.content) for r in world.state.reactions(comment)] == [("acme-mlops[bot]", "eyes")]
    # As an App, the run is the commit's check run (tests/test_github_checks.py), not a commit status.
    assert [(c.app_id, c.status) for c in world.state.check_runs(REPO, sha)] == [(42, "completed")]
    assert world.state.statuses(REPO, sha) == []
    assert app.store.effects(status="dead") == []


def test_an_app_key_that_does_not_match_is_refused(world, make_app):
    _private, public = _rsa_pem()
    wrong, _ = _rsa_pem()
    world.add_app(43, slug="other", public_key=public)
    world.add_installation(4343, app_id=43)
    app = make_app(github_repository=REPO, github_api_url=world.base_url, github_timeout_s=1,
                   project_paths=["models/tiny"], github_app_id="43",
                   github_app_private_key=wrong, github_app_installation_id=4343)
    with pytest.raises(PermanentError, match="refused the credentials"):
        app.poll()
    assert [e.status for e in world.log.filter(path="/app/installations/4343/access_tokens")] == [401]
    assert not [e for e in world.log if e.path.startswith("/repos/") and e.status == 200]


# --- metrics a GitHub Actions workflow publishes ------------------------------------------------


def test_a_workflows_published_metrics_are_reported_like_a_local_run(world, make_app):
    workflow = world.state.add_workflow(REPO, "train.yml", run_name_input="run_id")
    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1, github_workflow="train.yml")
    app.run_once()
    bootstrap = world.state.workflow_runs(REPO, workflow)[0]
    world.state.complete_run(REPO, bootstrap.id, "success")
    settle(app)
    succeeded, _ = merge(world, title="Good change")

    def dispatched(index):
        for _ in range(3):
            app.run_once()
        return world.state.workflow_runs(REPO, workflow)[index]

    run = dispatched(1)
    world.state.add_artifact(REPO, run.id, "mlops-metrics", {"metrics.json": json.dumps({
        "run_id": run.inputs["run_id"], "status": "succeeded", "version": 7, "promoted": True,
        "validation": {"metrics": {"roc_auc": 0.9731, "accuracy": 0.91},
                       "production": {"version": 6, "metrics": {"roc_auc": 0.9612, "accuracy": 0.9},
                                      "difference": {"roc_auc": 0.0119, "accuracy": 0.01}},
                       "gates": [{"name": "max_regression", "passed": True, "detail": "+0.0119"}]},
    })})
    world.state.add_artifact(REPO, run.id, "logs", {"train.log": "..."})
    world.state.complete_run(REPO, run.id, "success")
    settle(app)
    report = bot_comments(world, succeeded)[-1]
    assert "✅ succeeded" in report and "| roc_auc | 0.9731 | 0.9612 | +0.0119 |" in report
    assert "| max_regression | pass |" in report and "v7" not in report  # the workflow's numbering is its own

    failed, sha = merge(world, title="Bad change")
    run = dispatched(2)
    world.state.add_artifact(REPO, run.id, "mlops-metrics", {"metrics.json": json.dumps(
        {"metrics": {"roc_auc": 0.71, "accuracy": "n/a"}})})
    world.state.complete_run(REPO, run.id, "failure")
    settle(app)
    report = bot_comments(world, failed)[-1]
    assert "Failed in **github-actions**: the workflow run concluded failure" in report
    assert "| roc_auc | 0.7100 |" in report and "| accuracy |" not in report
    assert world.state.statuses(REPO, sha)[-1].state == "error"
    downloads = world.log.filter(path=r"/_blobs/.*")
    assert downloads and {entry.identity for entry in downloads} == {"anonymous"}  # the storage URL got no token
    assert app.store.effects(status="dead") == []


# --- a retrain on GitHub Actions and the production rows it must learn from ----------------------


def _retrain_on_actions(world, make_app, *, labelled: bool):
    """v1 in production, a drift ticket from one shifted batch (``labelled`` or not), then ``/retrain``
    on the ticket dispatched to the workflow; returns the app, the ticket and the dispatched run."""
    from pipeline.run import run_pipeline

    workflow = world.state.add_workflow(REPO, "train.yml", run_name_input="run_id")
    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1, github_workflow="train.yml")
    assert run_pipeline(app.lifecycle.project.path, app.registry, trigger="cli").promoted  # a shared registry's v1
    write_drifted_batch(app, "b1.csv", 1, labelled=labelled)
    settle(app)
    [ticket] = [i.number for i in world.state.issues(REPO) if "mlops-bot" in i.labels]
    world.state.add_comment(REPO, ticket, "bob", "/retrain")
    for _ in range(3):
        app.run_once()
    [run] = world.state.workflow_runs(REPO, workflow)
    assert run.inputs["trigger"] == "command" and run.inputs["promote"] == "true"
    return app, ticket, run


def _publish_nothing_new(world, run, *, sources):
    """What ``mlops-bot pipeline run --require-new-data --json`` prints on a runner with nothing new."""
    world.state.add_artifact(REPO, run.id, "mlops-metrics", {"metrics.json": json.dumps({
        "run_id": run.inputs["run_id"], "status": "not_promoted", "version": None, "promoted": False,
        "nothing_new": "nothing new to learn from: no labelled production data since v1 and the same code",
        "data": {"rows": 400, "fingerprint": "sha256:abc", "sources": sources},
    })})
    world.state.complete_run(REPO, run.id, "success")


def test_a_workflow_that_trained_without_the_labelled_production_rows_is_told_so(world, make_app):
    app, ticket, run = _retrain_on_actions(world, make_app, labelled=True)
    window = app.store.get_state("performance", "tiny")["window"]
    assert window["rows"] == 300  # the bot measured production on the labelled batch
    _publish_nothing_new(world, run, sources=[{"kind": "training", "path": "data.csv", "rows": 400}])
    settle(app)
    said = bot_comments(world, ticket)
    missed = [body for body in said if "without any labelled production row" in body]
    assert len(missed) == 1 and "300 labelled production rows" in missed[0] and "MLOPS_LABELS_DIR" in missed[0]
    # The run's own report says what the runner found; the bot's word on the ticket is the real cause.
    assert not any(body.startswith("⚠️ Not retrained") for body in said)
    assert world.state.issue(REPO, ticket).state == "open"
    assert app.store.effects(status="dead") == []


def test_a_workflow_with_nothing_new_to_learn_leaves_the_ticket_open(world, make_app):
    app, ticket, run = _retrain_on_actions(world, make_app, labelled=False)
    _publish_nothing_new(world, run, sources=[{"kind": "training", "path": "data.csv", "rows": 400}])
    settle(app)
    said = bot_comments(world, ticket)
    assert [body for body in said if body.startswith("⚠️ Not retrained: nothing new to learn from")]
    assert not any("without any labelled production row" in body for body in said)
    assert world.state.issue(REPO, ticket).state == "open"
    report = [body for body in said if "nothing new to learn from" in body]
    assert report and app.store.effects(status="dead") == []
