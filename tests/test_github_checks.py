"""Check runs with buttons, when the bot runs as a GitHub App: the real PyGithub client against the
emulator, clicks delivered to the bot's webhook as GitHub sends them (``check_run`` requested_action
and rerequested, ``check_suite`` rerequested), and GitHub's own example deliveries parsed."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from github import Auth, Github, GithubException
from starlette.testclient import TestClient

from bot.planner import CHECK_NAME, _annotations_for
from bot.webhooks import create_app
from integrations.github_payloads import CheckClick, parse_delivery
from tests.conftest import settle
from tests.emulators.fixtures import refdata_dir
from tests.test_github_bot import FILES, REPO, SECRET, _rsa_pem, remote, world  # noqa: F401 - fixtures

BOT = "acme-mlops"


@pytest.fixture
def app_bot(world, make_app):  # noqa: F811 - the fixture imported above
    """The bot as the App ``acme-mlops`` (id 42, installation 4242), first model trained."""
    private, public = _rsa_pem()
    world.add_app(42, slug=BOT, public_key=public)
    world.add_installation(4242, app_id=42)
    world.state.add_collaborator(REPO, f"{BOT}[bot]", "write")
    app = make_app(github_repository=REPO, github_api_url=world.base_url, github_timeout_s=10, bot_name=BOT,
                   project_paths=["models/tiny"], github_app_id="42", github_webhook_secret=SECRET,
                   github_app_private_key=private.replace("\n", "\\n"), github_app_installation_id=4242)
    app.run_once()
    return app


def deliver(app, event: str, payload: dict, delivery: str) -> dict:
    """POST a delivery to the bot's webhook, signed with the webhook's secret, as GitHub does."""
    body = json.dumps(payload).encode()
    response = TestClient(create_app(app)).post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()})
    assert response.status_code in {200, 202}, response.text
    return response.json()


def mine(world, number: int) -> list[str]:  # noqa: F811
    return [c.body for c in world.state.comments(REPO, number) if c.user == f"{BOT}[bot]"]


def test_a_pull_requests_run_is_a_check_run_whose_buttons_act_as_commands(world, app_bot, remote):  # noqa: F811
    head = remote.commit("Experiment", ref="refs/heads/bob-experiment")
    number = world.state.open_pull(REPO, "Experiment", "", "bob", files=FILES, head_sha=head,
                                   head_ref="bob-experiment")
    world.faults.add("checks/create", "lost_response", times=1)  # the check run made, its answer lost
    world.state.add_comment(REPO, number, "bob", "/validate")
    settle(app_bot)

    # One check run for the run, in progress first, then completed with the metrics and a button.
    assert world.faults.fired
    (check,) = world.state.check_runs(REPO, head)
    run_id = app_bot.registry.runs("tiny")[0].run_id
    assert (check.name, check.external_id, check.status, check.conclusion) == (CHECK_NAME, run_id, "completed",
                                                                               "success")
    assert "| roc_auc |" in check.output["summary"] and check.output["title"].startswith("tiny: v2 validated")
    assert check.actions == [{"label": "Deploy v2", "identifier": "deploy:v2",
                              "description": "Deploy this candidate to production"}]
    written = [e.body for e in world.log.filter(path=f"/repos/{REPO}/check-runs") if e.method == "POST"]
    assert [body["status"] for body in written] == ["in_progress"]  # sent once: found again, then updated
    assert world.state.statuses(REPO, head) == []  # as an App: a check run, no commit status
    assert app_bot.registry.production("tiny").version == 1

    # A reader's click is refused with who may; nothing deploys.
    event, payload = world.check_run_delivery(REPO, check.id, sender="rita", identifier="deploy:v2")
    assert deliver(app_bot, event, payload, "click-1")["status"] == "accepted"
    settle(app_bot)
    refusals = [body for body in mine(world, number) if "@rita" in body]
    assert len(refusals) == 1 and "needs **maintain** permission or higher" in refusals[0]
    assert "maintain or admin access" in refusals[0]
    assert app_bot.registry.production("tiny").version == 1

    # A maintainer's click deploys v2, once: the same delivery again, and another click, do nothing more.
    event, payload = world.check_run_delivery(REPO, check.id, sender="maya", identifier="deploy:v2")
    assert deliver(app_bot, event, payload, "click-2")["status"] == "accepted"
    assert deliver(app_bot, event, payload, "click-2")["status"] == "duplicate"
    event, again = world.check_run_delivery(REPO, check.id, sender="alice", identifier="deploy:v2")
    assert deliver(app_bot, event, again, "click-3")["status"] == "seen before"
    settle(app_bot)
    assert app_bot.registry.production("tiny").version == 2
    assert [p.version for p in app_bot.registry.history("tiny")].count(2) == 1
    assert sum("Deploying v2 of **tiny**" in body for body in mine(world, number)) == 1

    # Re-run: the change's code is validated again, as /validate from the one who clicked.
    event, payload = world.check_run_delivery(REPO, check.id, sender="bob")
    assert payload["action"] == "rerequested"
    assert deliver(app_bot, event, payload, "rerun-1")["status"] == "accepted"
    settle(app_bot)
    runs = world.state.check_runs(REPO, head)
    assert len(runs) == 2 and len(app_bot.registry.runs("tiny")) == 3
    assert runs[-1].external_id == app_bot.registry.runs("tiny")[0].run_id and runs[-1].conclusion == "success"

    # The first run is no longer the change's latest: its button deploys nothing, and says why.
    event, payload = world.check_run_delivery(REPO, check.id, sender="maya", identifier="deploy:v2")
    assert deliver(app_bot, event, payload, "click-4")["click"] == "refused: not the latest run"
    settle(app_bot)
    stale = [body for body in mine(world, number) if "no longer the latest run" in body]
    assert len(stale) == 1 and f"`{runs[-1].external_id}` is" in stale[0]
    assert app_bot.registry.production("tiny").version == 2

    # Re-run all checks of the commit's suite: permission-checked too (a reader may not validate).
    event, payload = world.check_suite_delivery(REPO, head, sender="rita")
    assert deliver(app_bot, event, payload, "suite-1")["status"] == "accepted"
    settle(app_bot)
    assert any("@rita" in body and "`/validate` needs **write** permission" in body for body in mine(world, number))
    assert len(app_bot.registry.runs("tiny")) == 3  # nothing ran
    assert app_bot.store.effects(status="dead") == []


def test_with_a_personal_token_runs_stay_commit_statuses(world, make_app):  # noqa: F811
    from integrations.github import GitHubAppSource, GitHubSource

    app = make_app(github_repository=REPO, github_token=world.token, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=10)
    assert type(app.lifecycle.scm) is GitHubSource and not isinstance(app.lifecycle.scm, GitHubAppSource)
    assert app.lifecycle.reports_check_runs is False


# --- the emulator's check-run routes, against GitHub's description -------------------------------------


@pytest.fixture
def app_client(world):  # noqa: F811
    """PyGithub as the emulator's default App (id 1, installation 1; any well-formed JWT is accepted)."""
    private, _public = _rsa_pem()
    return Github(base_url=world.base_url, auth=Auth.AppAuth(1, private).get_installation_auth(1), retry=None,
                  seconds_between_requests=None, seconds_between_writes=None)


def _head(world) -> str:  # noqa: F811
    return world.state.add_commit(REPO, sha=None, branch="main")


@pytest.mark.parametrize("change, field", [
    ({"actions": [{"identifier": f"a{n}", "label": "L", "description": "D"} for n in range(4)]}, "actions"),
    ({"actions": [{"identifier": "deploy", "label": "Deploy this candidate", "description": "D"}]}, "actions.label"),
    ({"actions": [{"identifier": "d", "label": "L", "description": "x" * 41}]}, "actions.description"),
    ({"actions": [{"identifier": "i" * 21, "label": "L", "description": "D"}]}, "actions.identifier"),
    ({"output": {"title": "t", "summary": "s", "annotations": [
        {"path": "a.py", "start_line": 1, "end_line": 1, "annotation_level": "failure", "message": "m"}] * 51}},
     "output.annotations"),
])
def test_the_emulator_refuses_what_github_refuses_on_a_check_run(world, app_client, change, field):  # noqa: F811
    head = _head(world)
    with pytest.raises(GithubException) as refused:
        app_client.requester.requestJsonAndCheck("POST", f"/repos/{REPO}/check-runs",
                                                 input={"name": "mlops", "head_sha": head, **change})
    assert refused.value.status == 422 and refused.value.data["errors"][0]["field"] == field
    assert world.state.check_runs(REPO, head) == []
    run = app_client.get_repo(REPO).create_check_run("mlops", head)
    with pytest.raises(GithubException):
        app_client.requester.requestJsonAndCheck("PATCH", f"/repos/{REPO}/check-runs/{run.id}", input=change)
    assert world.state.check_runs(REPO, head)[0].actions == []  # a refused update changes nothing
    if world.schemas is not None:  # a request outside the description, refused as GitHub does: not a violation
        assert world.refused and not world.violations


def test_annotations_add_up_and_the_list_finds_runs_by_name(world, app_client):  # noqa: F811
    head = _head(world)
    note = {"path": "m/mlops.toml", "start_line": 3, "end_line": 3, "annotation_level": "failure", "message": "m"}
    run = app_client.get_repo(REPO).create_check_run("mlops", head, external_id="run-1",
                                                     output={"title": "t", "summary": "s", "annotations": [note] * 50})
    run.edit(output={"title": "t", "summary": "s", "annotations": [note] * 2}, conclusion="failure")
    app_client.get_repo(REPO).create_check_run("other", head)
    _h, listed = app_client.requester.requestJsonAndCheck(
        "GET", f"/repos/{REPO}/commits/{head}/check-runs", parameters={"check_name": "mlops", "filter": "all"})
    assert [(r["external_id"], r["output"]["annotations_count"], r["conclusion"]) for r in listed["check_runs"]] == [
        ("run-1", 52, "failure")]
    assert listed["total_count"] == 1


# --- GitHub's example deliveries ------------------------------------------------------------------------


def _example(name: str) -> dict:
    path = refdata_dir() / "github" / "webhooks" / "examples" / "api.github.com" / name
    return json.loads(path.read_text())


@pytest.mark.parametrize("name, event, expected", [
    ("check_run/requested_action.payload.json", "check_run", CheckClick(
        action="requested_action", repo="electron/electron", sender="codebytere",
        head_sha="5bd5f196a46b8222fb7484f05faba41a73cf34bd", check_run_id="1494503112", name="API Review",
        identifier="lgtm|26764", pulls=(26764,))),
    ("check_run/rerequested.payload.json", "check_run", CheckClick(
        action="rerequested", repo="github/hello-world", sender="octocat",
        head_sha="d6fde92930d4715a2b49857d24b940956b26d2d3", check_run_id="4", name="randscape")),
    ("check_run/rerequested.2.payload.json", "check_run", CheckClick(
        action="rerequested", repo="github/hello-world", sender="octocat",
        head_sha="d6fde92930d4715a2b49857d24b940956b26d2d3", check_run_id="4", name="randscape")),
    ("check_suite/rerequested.payload.json", "check_suite", CheckClick(
        action="suite_rerequested", repo="Codertocat/Hello-World", sender="octocoders-linter[bot]",
        head_sha="ec26c3e57ca3a959ca5aad62de7213c562f8c821", pulls=(2,))),
    ("check_suite/rerequested.2.payload.json", "check_suite", CheckClick(
        action="suite_rerequested", repo="Codertocat/Hello-World", sender="octocoders-linter[bot]",
        head_sha="ec26c3e57ca3a959ca5aad62de7213c562f8c821", pulls=(2,))),
])
def test_githubs_example_clicks_are_read(name, event, expected):
    fact = parse_delivery(event, _example(name))
    assert (fact.kind, fact.click) == ("check_click", expected)


@pytest.mark.parametrize("name, event", [
    ("check_run/created.payload.json", "check_run"), ("check_run/completed.payload.json", "check_run"),
    ("check_suite/requested.payload.json", "check_suite"), ("check_suite/completed.payload.json", "check_suite"),
])
def test_githubs_other_check_deliveries_are_ignored(name, event):
    fact = parse_delivery(event, _example(name))
    assert fact.kind == "ignored" and event in fact.ignored


def test_a_click_on_another_apps_check_run_is_not_acted_on(world, app_bot):  # noqa: F811
    """GitHub's own example (a button of another App's "API Review" run) reaches the bot: it is read,
    and left alone."""
    payload = _example("check_run/requested_action.payload.json")
    answer = deliver(app_bot, "check_run", payload, "foreign-1")
    assert answer == {"status": "ignored", "click": "ignored: not a check run of this bot"}
    assert app_bot.store.effects(status="pending") == []


def test_the_emulators_clicks_are_shaped_like_githubs_examples(world, app_client):  # noqa: F811
    head = _head(world)
    run = app_client.get_repo(REPO).create_check_run(
        "mlops", head, conclusion="success",
        actions=[{"identifier": "deploy:v2", "label": "Deploy v2", "description": "Deploy this candidate"}])
    for (event, payload), example in [
        (world.check_run_delivery(REPO, run.id, sender="maya", identifier="deploy:v2"),
         _example("check_run/requested_action.payload.json")),
        (world.check_run_delivery(REPO, run.id, sender="maya"), _example("check_run/rerequested.payload.json")),
        (world.check_suite_delivery(REPO, head, sender="maya"), _example("check_suite/rerequested.payload.json")),
    ]:
        assert set(example) - {"organization"} <= set(payload)
        body = payload[event]
        assert set(example[event]) <= set(body), set(example[event]) - set(body)
        if event == "check_run":
            assert set(example[event]["check_suite"]) <= set(body["check_suite"])
        assert parse_delivery(event, payload).click.sender == "maya"
    with pytest.raises(ValueError, match="no button"):
        world.check_run_delivery(REPO, run.id, sender="maya", identifier="fix")


# --- the lifecycle over any source that shows check runs (a recording fake) ------------------------------


class RecordingCheckRuns:
    """Check runs kept as plain data: ``writes`` records each create and update as
    ``(kind, status, conclusion, annotations)``; ``lose_next_create`` loses the answer of one create."""

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}
        self.writes: list[tuple] = []
        self.lose_next_create = False

    def find_check_run(self, repo, head_sha, name, external_id):
        from integrations.ports import CheckRunRef

        for run_id, run in self.runs.items():
            if (run["sha"], run["name"], run["external_id"]) == (head_sha, name, external_id):
                return CheckRunRef(run_id, run["report"].status, run["report"].conclusion, len(run["annotations"]))
        return None

    def create_check_run(self, repo, head_sha, name, *, external_id, report):
        from integrations.ports import CheckRunRef, TransientError

        run_id = str(len(self.runs) + 1)
        self.runs[run_id] = {"sha": head_sha, "name": name, "external_id": external_id, "report": report,
                             "annotations": list(report.annotations)}
        self.writes.append(("create", report.status, report.conclusion, len(report.annotations)))
        if self.lose_next_create:
            self.lose_next_create = False
            raise TransientError("the answer was lost", outcome_unknown=True)
        return CheckRunRef(run_id, report.status, report.conclusion, len(report.annotations))

    def update_check_run(self, repo, check_run_id, report):
        run = self.runs[check_run_id]
        run["report"] = report
        run["annotations"] += report.annotations
        self.writes.append(("update", report.status, report.conclusion, len(report.annotations)))


@pytest.fixture
def local_checks_app(repo, tmp_path, monkeypatch, clock):
    """The bot on embedded defaults, its local git source also showing check runs (recorded)."""
    import io

    from bot.app import build
    from bot.settings import Settings
    from bot.store import Store
    from integrations.local import LocalGitSource
    from integrations.ports import ReportsCheckRuns
    from tests.conftest import PROJECT, run_pipelines_in_process

    class LocalSourceWithChecks(LocalGitSource, RecordingCheckRuns, ReportsCheckRuns):
        def __init__(self, *args, **kwargs):
            LocalGitSource.__init__(self, *args, **kwargs)
            RecordingCheckRuns.__init__(self)

    monkeypatch.chdir(tmp_path)
    settings = Settings(project_dir=repo / PROJECT, data_dir=tmp_path / "state", drift_cooldown_s=0)
    store = Store(settings.state_database_url, clock=clock)
    from integrations.local import create_local_tables

    with store.schema_transaction() as conn:
        create_local_tables(conn)
    scm = LocalSourceWithChecks(store.engine, repo, clock=clock, out=None)
    app = run_pipelines_in_process(build(settings, scm=scm, store=store, clock=clock, out=io.StringIO()))
    yield app
    app.store.close()


def test_a_failed_runs_check_run_is_annotated_once_where_mlops_toml_is_wrong(local_checks_app, repo):
    from tests.conftest import PROJECT, git

    app = local_checks_app
    settle(app)  # the first model (the repository's first commit, a change of its own)
    assert app.lifecycle.reports_check_runs
    app.scm.runs.clear()
    app.scm.writes.clear()
    spec = repo / PROJECT / "mlops.toml"
    text = spec.read_text().replace("max_regression = 0.02", "max_regression = 0.02\nsurprise = 1")
    spec.write_text(text)
    git(repo, "commit", "-qam", "A key the spec does not know")
    sha = git(repo, "rev-parse", "HEAD")
    app.scm.lose_next_create = True
    settle(app)

    # Made once (its lost answer found again), in progress, then completed as a failure with one
    # annotation on the line of the unknown key; and no commit status beside it.
    assert app.scm.writes == [("create", "in_progress", None, 0), ("update", "in_progress", None, 0),
                              ("update", "completed", "failure", 1)]
    (run,) = app.scm.runs.values()
    assert run["sha"] == sha and run["external_id"].startswith("run-")
    (note,) = run["annotations"]
    line = text.splitlines().index("surprise = 1") + 1
    assert (note.path, note.start_line, note.level) == (f"{PROJECT}/mlops.toml", line, "failure")
    assert "surprise" in note.message and run["report"].buttons == ()
    assert app.scm.status_of(app.scm.repo, sha, "mlops-bot/pipeline") is None
    assert app.store.effects(status="dead") == []


# --- where a failed run's cause is ---------------------------------------------------------------------

SPEC = """\
[project]
name = "tiny"

[data]
path = "data.csv"
target = "y"

[split]
test_fraction = 2.0
"""


@pytest.mark.parametrize("error, expected", [
    # a key the spec's check names: its line; a missing key: its table's line
    ("{spec}: 'split.test_fraction': Input should be less than 1", [("models/tiny/mlops.toml", 9)]),
    ("{spec}: missing key 'data.features'", [("models/tiny/mlops.toml", 4)]),
    # tomllib's syntax error says where
    ("{spec}: not valid TOML: Expected '=' after a key (at line 6, column 8)", [("models/tiny/mlops.toml", 6)]),
    # a data file that cannot be read: the line naming it
    ("/work/state/workspaces/abc/models/tiny/data.csv: file not found", [("models/tiny/mlops.toml", 5)]),
    # the project's own code
    ("features.py:12 (Clip.transform): NotFittedError: call fit first", [("models/tiny/features.py", 12)]),
    # nothing in the repository named
    ("MemoryError: the child process was killed", []),
])
def test_a_failed_runs_annotations_point_at_the_lines_it_names(tmp_path: Path, error, expected):
    spec = tmp_path / "mlops.toml"
    spec.write_text(SPEC)
    annotations = _annotations_for(error.format(spec=spec), "models/tiny", spec)
    assert [(a.path, a.start_line) for a in annotations] == expected
    assert all(a.level == "failure" and a.end_line == a.start_line and str(tmp_path) not in a.path
               for a in annotations)
