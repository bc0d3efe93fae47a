"""One bot, one repository, three model projects (issue 17): every event reaches the projects it
concerns, on embedded defaults (a real git repository, the local board, console chat, the
in-process pipeline, the embedded MLflow store)."""

from __future__ import annotations

import io
import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from bot.app import build
from bot.settings import Settings
from integrations.ports import Target
from tests.conftest import (
    TINY_TOML,
    FakeClock,
    git,
    run_pipelines_in_process,
    seed_embedded_mlflow,
    settle,
    tiny_frame,
)
from tests.test_bot_crash import (
    SLOW_ADAPTERS,
    kill_at_random_then_finish,
    local_outcome,
)

PROJECTS = {"churn": "models/churn", "fraud": "models/fraud", "demand": "forecasting/demand"}


def _monorepo(root: Path) -> Path:
    for name, folder in PROJECTS.items():
        project = root / folder
        project.mkdir(parents=True)
        (project / "mlops.toml").write_text(textwrap.dedent(TINY_TOML).replace('name = "tiny"', f'name = "{name}"'))
        tiny_frame(seed=len(name)).to_csv(project / "data.csv", index=False)
    (root / "README.md").write_text("three models\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "three models")
    return root


def _commit(repo: Path, paths: list[str], message: str) -> str:
    for path in paths:
        (repo / path).write_text(f"{message}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    return _monorepo(tmp_path / "repo")


@pytest.fixture
def app(monorepo: Path, tmp_path: Path, monkeypatch):
    """The bot started in the repository with MLOPS_PROJECT_DIR unset: it serves all three."""
    monkeypatch.chdir(monorepo)
    data_dir = tmp_path / "state"
    seed_embedded_mlflow(data_dir)
    bot = build(Settings(data_dir=data_dir, drift_cooldown_s=0), clock=FakeClock(), out=io.StringIO())
    run_pipelines_in_process(bot)
    settle(bot)  # each project's first model
    yield bot
    bot.store.close()


def _runs(app, name: str) -> list:
    return app.registry.runs(name, limit=100)


def _replies(app, target: Target) -> list[str]:
    return [c.body for c in app.scm.comments_on(target) if c.by_bot]


def _change_target(app) -> Target:
    change = app.scm.merged_changes(None)[0][-1]
    return Target("change", app.scm.repo, change.number)


def test_every_model_project_of_the_repository_is_served_and_trained_once(app, tmp_path):
    assert list(app.router.lifecycles) == ["demand", "churn", "fraud"]  # found in path order
    for name, folder in PROJECTS.items():
        lifecycle = app.router.named(name)
        assert lifecycle.project.repo_paths == (folder,) and lifecycle.project.shared
        assert app.registry.production(name).version == 1
        assert len(_runs(app, name)) == 1  # the repository's first commit, seen as the first change, touches all
        # Production batches and labels by project: MLOPS_MONITOR_DIR/<project>/.
        assert lifecycle.settings.batches_dir == (tmp_path / "state" / "batches" / name).resolve()
        assert lifecycle.settings.label_files_dir == (tmp_path / "state" / "labels" / name).resolve()
    app.run_once()
    assert all(len(_runs(app, name)) == 1 for name in PROJECTS)  # nothing twice


def test_a_merge_runs_the_projects_it_touches_each_under_its_own_run_and_status(app, monorepo):
    sha = _commit(monorepo, ["models/churn/notes.md", "models/fraud/notes.md"], "Tune churn and fraud")
    settle(app)
    settle(app)  # nothing twice

    assert [run.trigger for run in _runs(app, "churn")][:1] == ["merge"] and len(_runs(app, "churn")) == 2
    assert [run.trigger for run in _runs(app, "fraud")][:1] == ["merge"] and len(_runs(app, "fraud")) == 2
    assert len(_runs(app, "demand")) == 1  # untouched
    assert _runs(app, "churn")[0].run_id != _runs(app, "fraud")[0].run_id
    for name in ("churn", "fraud"):  # one status per project on the commit
        state, description = app.scm.status_of(app.scm.repo, sha, f"mlops-bot/pipeline ({name})")
        assert state in {"success", "failure"} and description
    assert app.scm.status_of(app.scm.repo, sha, "mlops-bot/pipeline (demand)") is None
    replies = _replies(app, _change_target(app))
    assert len(replies) == 2 and any("churn" in r for r in replies) and any("fraud" in r for r in replies)
    # A chat thread per project and change, each ending with its project's result.
    top_level = [m["text"] for m in app.chat.messages("mlops-pipeline") if m["thread"] is None]
    assert len(top_level) == 5  # the first change's three, this change's two
    assert [text.split(" · ")[:2] for text in top_level[3:]] == [
        ["✅ succeeded: churn v2", "change:2"], ["✅ succeeded: fraud v2", "change:2"]]


def test_a_command_on_a_change_of_several_projects_names_one_or_the_bot_asks_which(app, monorepo):
    _commit(monorepo, ["models/churn/notes.md", "models/fraud/notes.md"], "Tune churn and fraud")
    settle(app)
    target = _change_target(app)
    before = {name: len(_runs(app, name)) for name in PROJECTS}

    app.scm.add_comment(target, "/retrain", author="you")
    settle(app)
    question = _replies(app, target)[-1]
    assert "several model projects" in question and "`churn`" in question and "`fraud`" in question
    assert "`demand`" not in question  # only those the change touches
    assert {name: len(_runs(app, name)) for name in PROJECTS} == before  # nothing run

    app.scm.add_comment(target, "/retrain fraud\n/retrain churn", author="you")
    settle(app)
    assert "names several model projects (`fraud`, `churn`); nothing was done" in _replies(app, target)[-1]
    assert {name: len(_runs(app, name)) for name in PROJECTS} == before  # nothing run

    app.scm.add_comment(target, "/retrain fraud because of the new rows", author="you")
    settle(app)
    assert len(_runs(app, "fraud")) == before["fraud"] + 1
    assert _runs(app, "fraud")[0].trigger == "command"
    assert len(_runs(app, "churn")) == before["churn"] and len(_runs(app, "demand")) == before["demand"]


def test_a_command_on_a_change_of_one_project_needs_no_name(app, monorepo):
    _commit(monorepo, ["forecasting/demand/notes.md"], "Tune demand")
    settle(app)
    target = _change_target(app)
    app.scm.add_comment(target, "/retrain", author="you")
    settle(app)
    assert [run.trigger for run in _runs(app, "demand")] == ["command", "merge", "merge"]
    assert len(_runs(app, "churn")) == 1 and len(_runs(app, "fraud")) == 1


def test_a_drift_batch_reaches_its_own_project_and_opens_that_projects_ticket(app, tmp_path, monkeypatch):
    batches = app.router.named("churn").settings.batches_dir
    batches.mkdir(parents=True, exist_ok=True)
    tiny_frame(300, seed=1, x1_shift=1.5).drop(columns=["label"]).to_csv(batches / "b1.csv", index=False)
    settle(app)

    tickets = app.tracker.tickets(state="open")
    assert [ticket.title.split(":")[0] for ticket in tickets] == ["Retrain churn"]
    assert "model:churn" in tickets[0].labels  # a board filters a project's tickets by it
    assert app.store.get_state("last_drift", "churn")["drifted"]
    assert app.store.get_state("last_drift", "fraud") is None and app.store.get_state("last_drift", "demand") is None

    # A command typed on that ticket goes to the project whose ticket it is, without a name.
    app.scm.add_comment(Target("ticket", app.scm.repo, tickets[0].id), "/status", author="you")
    settle(app)
    answer = [c["body"] for c in app.tracker.details(tickets[0].id)["comments"]][-1]
    assert "churn" in answer

    from click.testing import CliRunner

    from bot.cli import cli

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    listed = {name: [t["id"] for t in json.loads(CliRunner().invoke(cli, ["board", "list", "--project", name,
                                                                          "--json"]).stdout)]
              for name in ("churn", "fraud")}
    assert listed == {"churn": [tickets[0].id], "fraud": []}
    console = CliRunner().invoke(cli, ["console"], input="/status\n:quit\n")  # on churn's open ticket
    assert console.exit_code == 0 and f"Commenting on ticket:{tickets[0].id}." in console.output
    assert "Status of **churn**" in console.output and "several model projects" not in console.output


def test_the_cli_shows_every_project_and_takes_one_by_name(app, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bot.cli import cli

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    runner = CliRunner()
    every = runner.invoke(cli, ["status", "--json"])
    assert every.exit_code == 0, every.output
    summaries = json.loads(every.stdout)["projects"]
    assert [(s["model"], s["production"]["version"]) for s in summaries] == [("demand", 1), ("churn", 1), ("fraud", 1)]

    one = runner.invoke(cli, ["status", "--project", "fraud", "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["model"] == "fraud"
    text = runner.invoke(cli, ["status"]).stdout
    assert all(f"{name}: v1 in production" in text for name in PROJECTS)

    listed = runner.invoke(cli, ["models", "list", "--json"])
    assert sorted(v["model"] for v in json.loads(listed.stdout)) == ["churn", "demand", "fraud"]
    assert [v["model"] for v in json.loads(runner.invoke(cli, ["models", "list", "--project", "churn", "--json"])
                                           .stdout)] == ["churn"]

    which = runner.invoke(cli, ["trace", "v1"])
    assert which.exit_code == 2 and "of which model?" in which.output and "Traceback" not in which.output
    assert runner.invoke(cli, ["trace", "churn:v1", "--json"]).exit_code == 0

    shown = runner.invoke(cli, ["models", "show", "v1"])  # of which model?
    assert shown.exit_code == 2 and "several model projects (demand, churn, fraud); pass --project NAME" in shown.output
    assert runner.invoke(cli, ["models", "show", "v1", "--project", "demand", "--json"]).exit_code == 0

    several = runner.invoke(cli, ["pipeline", "run"])  # which one?
    assert several.exit_code == 2 and "several model projects (demand, churn, fraud); pass --project NAME" in \
        several.output
    ran = runner.invoke(cli, ["pipeline", "run", "--project", "churn", "--json"])
    assert ran.exit_code == 0, ran.output
    assert (json.loads(ran.stdout)["model"], json.loads(ran.stdout)["version"]) == ("churn", 2)

    doctor = runner.invoke(cli, ["doctor"]).output
    for name, folder in PROJECTS.items():  # each served project is checked, and marked served
        assert f"✓ training data of {name} (400 labelled rows)" in doctor and f"{name} ({folder}) served" in doctor

    unknown = runner.invoke(cli, ["status", "--project", "nosuch"])
    assert unknown.exit_code == 2 and "one of this repository's model projects: demand, churn, fraud" in unknown.output


def test_a_merge_that_adds_breaks_or_removes_a_project_is_followed(app, monorepo):
    # Added: served from its own merge on, which runs it.
    (monorepo / "models" / "risk").mkdir()
    (monorepo / "models" / "risk" / "mlops.toml").write_text(
        textwrap.dedent(TINY_TOML).replace('name = "tiny"', 'name = "risk"'))
    tiny_frame(seed=9).to_csv(monorepo / "models" / "risk" / "data.csv", index=False)
    _commit(monorepo, [], "Add the risk model")
    settle(app)
    assert list(app.router.lifecycles) == ["demand", "churn", "fraud", "risk"]
    assert [run.trigger for run in _runs(app, "risk")] == ["merge"] and app.registry.production("risk").version == 1
    batches = app.router.named("risk").settings.batches_dir  # its production data is watched too
    batches.mkdir(parents=True)
    tiny_frame(300, seed=1, x1_shift=1.5).drop(columns=["label"]).to_csv(batches / "b1.csv", index=False)
    settle(app)
    assert app.store.get_state("last_drift", "risk")["drifted"]
    from prometheus_client import generate_latest

    assert 'mlops_bot_drift_detected{model="risk"} 1.0' in generate_latest(app.observability.registry).decode()

    # Made invalid: left out, and the change is told why, once; the others keep running.
    toml = monorepo / "models" / "fraud" / "mlops.toml"
    toml.write_text(toml.read_text().replace("estimator =", "estimatr ="))
    _commit(monorepo, [], "Break fraud")
    settle(app)
    settle(app)
    assert "fraud" not in app.router.lifecycles and len(app.router.lifecycles) == 3
    told = [reply for reply in _replies(app, _change_target(app)) if "unserved" in reply]
    assert len(told) == 1 and "models/fraud/mlops.toml" in told[0] and "estimatr" in told[0]

    # Removed: no longer served; a command naming it is not routed to it.
    git(monorepo, "rm", "-q", "-r", "forecasting/demand")
    _commit(monorepo, [], "Retire demand")
    settle(app)
    assert list(app.router.lifecycles) == ["churn", "risk"]
    assert len(_runs(app, "churn")) == 1  # none of these merges touched churn

    # What a removed project still owed is dropped with its reason, not retried for ever.
    from bot.store import NewEffect

    app.store.ingest("left-over", "test", "test", {}, [NewEffect("left-over-run", "pipeline.run", {
        "project": "demand", "run_id": "run-left-over", "trigger": "command", "reason": "", "origin": {},
        "promote": False}, lane="pipeline:demand")])
    app.deliver()
    (dropped,) = app.store.effects(status="dead")
    assert dropped.key == "left-over-run" and "'demand' is no longer served" in dropped.last_error


GITHUB_REPO, WEBHOOK_SECRET = "acme/models", "webhook-secret"


def _github_bot(github_emulator, tmp_path: Path, monkeypatch, *, as_app: bool = False):
    """The bot over a monorepo on the GitHub emulator (the real PyGithub client), after its first
    look; returns the bot and a working clone of the repository's remote to push merges from.
    ``as_app``: the bot is the GitHub App ``acme-mlops`` (its runs are check runs), else a token's user."""
    repo = _monorepo(tmp_path / "repo")
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(work))
    state = github_emulator.state
    state.add_repo(GITHUB_REPO, clone_url=bare)
    for login, role in [("bob", "write"), ("maya", "maintain"), ("mlops-bot[bot]", "write"),
                        ("acme-mlops[bot]", "write")]:
        state.add_collaborator(GITHUB_REPO, login, role)
    if as_app:
        from tests.test_github_bot import _rsa_pem

        private, public = _rsa_pem()
        github_emulator.add_app(42, slug="acme-mlops", public_key=public)
        github_emulator.add_installation(4242, app_id=42)
        identity = {"bot_name": "acme-mlops", "github_app_id": "42", "github_app_installation_id": 4242,
                    "github_app_private_key": private.replace("\n", "\\n")}
    else:
        identity = {"github_token": github_emulator.token}
    monkeypatch.chdir(repo)
    seed_embedded_mlflow(tmp_path / "state")
    bot = build(Settings(data_dir=tmp_path / "state", github_repository=GITHUB_REPO, **identity,
                         github_api_url=github_emulator.base_url, github_timeout_s=10 if as_app else 1,
                         github_webhook_secret=WEBHOOK_SECRET), clock=FakeClock(), out=io.StringIO())
    run_pipelines_in_process(bot)
    settle(bot)  # the first look: each project's first model
    assert all(len(_runs(bot, project)) == 1 for project in PROJECTS)
    return bot, work


def _merge_on_github(github_emulator, work: Path, files: list[str], title: str) -> tuple[int, str, bytes]:
    """A pull request merged on the emulator, its merge commit pushed; and its webhook delivery's body
    (which, as GitHub's, carries no file list)."""
    state = github_emulator.state
    sha = _commit(work, files, title)
    git(work, "push", "-q", "origin", "HEAD:main")
    number = state.open_pull(GITHUB_REPO, title, "", "bob", files=files)
    state.clock.advance(seconds=2)
    state.merge_pull(GITHUB_REPO, number, merge_sha=sha)
    pull = {"number": number, "merged": True, "merged_at": "2026-01-01T00:00:00Z", "merge_commit_sha": sha,
            "title": title, "body": "", "user": {"login": "bob"},
            "base": {"ref": "main", "repo": {"full_name": GITHUB_REPO}},
            "head": {"ref": "x", "repo": {"full_name": GITHUB_REPO}}}
    body = json.dumps({"action": "closed", "pull_request": pull, "repository": {"full_name": GITHUB_REPO}}).encode()
    return number, sha, body


def _deliver_webhook(bot, body: bytes, delivery: str, event: str = "pull_request"):
    import hashlib
    import hmac

    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    return TestClient(create_app(bot)).post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()})


def _bot_comments(github_emulator, number: int) -> list[str]:
    return [c.body for c in github_emulator.state.comments(GITHUB_REPO, number) if c.user == "mlops-bot[bot]"]


def test_on_github_a_merged_pull_request_runs_each_project_it_touches_with_its_own_status(
        github_emulator, tmp_path, monkeypatch):
    """The webhook's pull request carries no file list, which is asked for once (not once per
    project); each project touched runs from the merge commit's code and reports its own commit status."""
    bot, work = _github_bot(github_emulator, tmp_path, monkeypatch)
    try:
        number, sha, body = _merge_on_github(github_emulator, work, ["models/churn/notes.md", "models/fraud/notes.md"],
                                             "Tune churn and fraud")
        assert _deliver_webhook(bot, body, "d1").json()["status"] == "accepted"
        settle(bot)
        settle(bot)  # nothing twice

        assert len(github_emulator.log.filter("GET", rf"/repos/{GITHUB_REPO}/pulls/{number}/files")) == 1
        assert [len(_runs(bot, project)) for project in PROJECTS] == [2, 2, 1]  # churn, fraud, demand
        final = {status.context: status.state for status in github_emulator.state.statuses(GITHUB_REPO, sha)}
        assert final["mlops-bot/pipeline (churn)"] in {"success", "failure"}
        assert final["mlops-bot/pipeline (fraud)"] in {"success", "failure"}
        assert "mlops-bot/pipeline (demand)" not in final
        reports = _bot_comments(github_emulator, number)
        assert sorted(report.split("**")[1] for report in reports) == ["churn", "fraud"]
    finally:
        bot.store.close()


def test_on_github_faults_on_every_write_lose_nothing_and_double_nothing_across_projects(
        github_emulator, tmp_path, monkeypatch):
    """500s, timeouts, lost answers and rate limits on three in ten writes, while a merge of all three
    projects arrives by webhook and by poll and commands name a project, or none: each project's
    status is set once per state, each answer posted once, and nothing is given up."""
    bot, work = _github_bot(github_emulator, tmp_path, monkeypatch)
    try:
        github_emulator.faults.random(0.3, ["500", "502", "timeout", "lost_response", "429", "rate_limit_secondary"],
                                      seed=5, target=r"(POST|PATCH) .*")
        number, sha, body = _merge_on_github(github_emulator, work, [f"{folder}/notes.md" for folder in
                                                                     PROJECTS.values()], "Tune all three")
        _deliver_webhook(bot, body, "d1")
        _deliver_webhook(bot, body, "d2")  # redelivered
        for text in ("/status fraud", "/retrain churn because", "/retrain"):
            github_emulator.state.add_comment(GITHUB_REPO, number, "bob", text)
        settle(bot, rounds=60)
        settle(bot, rounds=60)

        assert github_emulator.faults.fired, "no fault was injected"
        assert bot.store.effects(status="dead") == []
        assert [len(_runs(bot, project)) for project in PROJECTS] == [3, 2, 2]  # churn: merge and /retrain
        for project in PROJECTS:  # the merge's run: pending, then its result; /retrain churn's: its result
            states = [s.state for s in github_emulator.state.statuses(GITHUB_REPO, sha)
                      if s.context == f"mlops-bot/pipeline ({project})"]
            results = 2 if project == "churn" else 1
            assert states[0] == "pending" and len(states) == 1 + results, (project, states)
            assert set(states[1:]) <= {"success", "failure"}, (project, states)
        replies = _bot_comments(github_emulator, number)
        markers = Counter(reply.rsplit("<!-- mlops-bot:", 1)[-1] for reply in replies)
        assert all(count == 1 for count in markers.values()), markers
        assert len([r for r in replies if "several model projects" in r]) == 1  # the bare /retrain
        # A report per run on the change (the merge's three, /retrain churn's), an answer per named command.
        assert len([marker for marker in markers if marker.startswith("run:")]) == 4
        assert len([marker for marker in markers if marker.startswith("cmd:")]) == 2
    finally:
        bot.store.close()


def test_as_a_github_app_each_project_has_its_own_check_run_and_its_buttons_and_re_runs_act_on_it(
        github_emulator, tmp_path, monkeypatch):
    """A pull request of two projects, validated for each: two check runs, one per project, each
    with its own Deploy button. A click on churn's deploys churn, though fraud's run started later;
    Re-run all validates both again."""
    bot, work = _github_bot(github_emulator, tmp_path, monkeypatch, as_app=True)
    state = github_emulator.state
    try:
        git(work, "checkout", "-q", "-b", "bob-tune")
        head = _commit(work, ["models/churn/notes.md", "models/fraud/notes.md"], "Tune churn and fraud")
        git(work, "push", "-q", "origin", "bob-tune")
        number = state.open_pull(GITHUB_REPO, "Tune churn and fraud", "", "bob",
                                 files=["models/churn/notes.md", "models/fraud/notes.md"], head_sha=head,
                                 head_ref="bob-tune")
        state.add_comment(GITHUB_REPO, number, "bob", "/validate churn")
        settle(bot)
        state.add_comment(GITHUB_REPO, number, "bob", "/validate fraud")
        settle(bot)

        checks = {check.name: check for check in state.check_runs(GITHUB_REPO, head)}
        assert sorted(checks) == ["mlops-bot/pipeline (churn)", "mlops-bot/pipeline (fraud)"]
        churn = checks["mlops-bot/pipeline (churn)"]
        assert churn.conclusion == "success" and churn.actions[0]["identifier"] == "deploy:v2"

        event, payload = github_emulator.check_run_delivery(GITHUB_REPO, churn.id, sender="maya",
                                                            identifier="deploy:v2")
        assert _deliver_webhook(bot, json.dumps(payload).encode(), "click-1", event).json()["status"] == "accepted"
        settle(bot)
        assert bot.registry.production("churn").version == 2 and bot.registry.production("fraud").version == 1

        event, payload = github_emulator.check_suite_delivery(GITHUB_REPO, head, sender="bob")
        assert _deliver_webhook(bot, json.dumps(payload).encode(), "suite-1", event).json()["status"] == "accepted"
        settle(bot)
        assert [len(_runs(bot, project)) for project in PROJECTS] == [3, 3, 1]  # churn, fraud: /validate, re-run
        assert bot.store.effects(status="dead") == []
    finally:
        bot.store.close()


def test_in_slack_a_slash_command_names_its_project_or_the_bot_asks_which(slack_emulator, monorepo, tmp_path,
                                                                         monkeypatch):
    """The real slack-sdk against the Slack emulator: ``/mlops status churn`` answers for churn at
    once, ``/mlops retrain fraud`` runs fraud alone, and ``/mlops retrain`` asks which project."""
    from starlette.testclient import TestClient

    from bot.webhooks import create_app
    from tests.test_slack_bot import CHANNELS, SIGNING_SECRET, slash

    for channel in CHANNELS:
        slack_emulator.state.add_channel(channel)
    monkeypatch.chdir(monorepo)
    seed_embedded_mlflow(tmp_path / "state")
    bot = build(Settings(data_dir=tmp_path / "state", slack_bot_token=slack_emulator.token,
                         slack_api_url=slack_emulator.base_url, slack_signing_secret=SIGNING_SECRET,
                         slack_permissions={"U_BOB": "write"}), clock=FakeClock(), out=io.StringIO())
    run_pipelines_in_process(bot)
    try:
        settle(bot, rounds=40)
        web = TestClient(create_app(bot))
        web.bot = bot

        status = slash(web, "status churn").json()
        assert status["response_type"] == "ephemeral" and "churn" in status["text"] and "fraud" not in status["text"]

        assert slash(web, "retrain fraud").json()["text"].startswith("On it")
        settle(bot, rounds=40)
        assert [len(_runs(bot, project)) for project in PROJECTS] == [1, 2, 1]  # churn, fraud, demand

        assert slash(web, "retrain").json()["text"].startswith("On it")
        settle(bot, rounds=40)
        assert [len(_runs(bot, project)) for project in PROJECTS] == [1, 2, 1]  # nothing ran
        said = [text for message in slack_emulator.state.messages("mlops-pipeline")
                for text in [message.text, *(reply.text for reply in message.replies)]]
        asked = [text for text in said if "several model projects" in text]
        assert len(asked) == 1 and all(f"`{project}`" in asked[0] for project in PROJECTS)
    finally:
        bot.store.close()


def work_on_two_projects(app, monorepo: Path) -> Target:
    """Drifted batches for churn and fraud, a merge touching both (the repository's second commit) and
    four commands on it, naming a project or none; the change."""
    for name in ("churn", "fraud"):
        batches = app.router.named(name).settings.batches_dir
        batches.mkdir(parents=True)
        tiny_frame(300, seed=3, x1_shift=3.0).drop(columns=["label"]).to_csv(batches / "b1.csv", index=False)
    _commit(monorepo, ["models/churn/notes.md", "models/fraud/notes.md"], "Tune churn and fraud")
    change = Target("change", app.scm.repo, 2)
    for body in ("/status churn", "/retrain fraud because", "/retrain", "/help"):
        app.scm.add_comment(change, body, author="you")
    return change


MONOREPO_CHILD = SLOW_ADAPTERS + r"""
import os
repo, data = Path(sys.argv[1]), Path(sys.argv[2])
os.chdir(repo)  # MLOPS_PROJECT_DIR unset: every model project of the repository
settings = Settings(data_dir=data, drift_cooldown_s=0)
from bot.store import Store
store = Store(settings.state_database_url)
app = build(settings, store=store, chat=SlowChat(store.engine, out=None),
            scm=SlowSource(store.engine, repo, out=None), out=None)
run_to_the_end(app, 60)
"""


def test_killed_at_random_a_bot_of_three_projects_loses_nothing_and_repeats_nothing(app, monorepo):
    """SIGKILL at random moments while a merge of two projects, drift in two, and commands naming a
    project or none are worked through; then a last run to the end: every effect once, per project."""
    import sys

    work_on_two_projects(app, monorepo)
    data_dir = app.settings.data_dir
    app.store.close()
    assert kill_at_random_then_finish([sys.executable, "-c", MONOREPO_CHILD, str(monorepo), str(data_dir)],
                                      seed=11, finish_s=600) >= 3

    found = local_outcome(data_dir)
    assert found["pending"] == []
    bot_comments = found["bot_comments"]
    markers = Counter(body.rsplit("<!-- mlops-bot:", 1)[-1] for body in bot_comments + found["ticket_comments"])
    assert [marker for marker, n in markers.items() if n > 1] == []
    assert [row for row, n in Counter(found["chat"]).items() if n > 1] == []
    assert sorted(row.key for row in found["tickets"]) == ["retrain:churn", "retrain:fraud"]  # none for demand
    assert len([body for body in bot_comments if "several model projects" in body]) == 1  # the bare /retrain
    from tests.conftest import open_embedded_registry

    registry = open_embedded_registry(data_dir)
    assert all(n == 1 for n in Counter(v.run_id for v in registry.versions()).values())
    assert sorted({v.model for v in registry.versions()}) == ["churn", "demand", "fraud"]
