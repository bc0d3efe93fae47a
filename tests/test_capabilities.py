"""What each adapter can do besides its port (the capability Protocols of integrations/ports.py), the
bot's paths through each capability with an adapter that lacks it, and ``mlops-bot board`` and
``status`` on every tracker (GitHub issues and Azure Boards through their emulators)."""

from __future__ import annotations

import os
import sys
import tempfile

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import inspect
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bot.cli import cli
from bot.events import ChangeMerged, CommandGiven
from bot.settings import env_name
from integrations import ports
from integrations.ports import (
    Change,
    Chat,
    ChatAction,
    Comment,
    DescribesTickets,
    EditsTicketBody,
    LinksChanges,
    ListsTickets,
    NamesChangesForLinks,
    Permission,
    ReadsBoardItems,
    ReadsCommitStatuses,
    ReportsApiCalls,
    ReportsChangedPaths,
    ReportsChangeHeads,
    ReportsCheckRuns,
    ReportsCommitMessages,
    ResolvesPermissions,
    ShowsActions,
    SourceControl,
    TakesTypedComments,
    Target,
    TicketBoard,
    Tracker,
    UploadsFiles,
    Whispers,
)
from tests.conftest import PROJECT, git, settle, tiny_frame
from tests.emulators.fixtures import azure_devops_emulator, github_emulator, slack_emulator  # noqa: F401

REPO = "acme/model"
FILES = ["models/tiny/mlops.toml"]

# What a source control, a tracker or a chat may be asked for besides its port, and by whom.
CAPABILITIES = {
    SourceControl: (ReportsChangedPaths, ReportsCommitMessages, ReportsChangeHeads, ReadsCommitStatuses,
                    NamesChangesForLinks, TakesTypedComments, ReportsCheckRuns),
    Tracker: (LinksChanges, ListsTickets, DescribesTickets, EditsTicketBody),
    Chat: (ShowsActions, UploadsFiles, Whispers, ResolvesPermissions),
    TicketBoard: (ReadsBoardItems,),
}

# adapter: (its port, the capabilities it has, what it says through the port's attributes)
TABLE = {
    "LocalGitSource": (SourceControl, {ReadsCommitStatuses, TakesTypedComments},
                       {"has_issues": False, "commenters_can_read": False}),
    "GitHubSource": (SourceControl, {ReportsChangedPaths, ReportsCommitMessages, ReportsChangeHeads,
                                     ReadsCommitStatuses},
                     {"has_issues": True, "commenters_can_read": True}),
    # the same source over an App installation's credentials: runs are check runs (tests/test_github_checks.py)
    "GitHubAppSource": (SourceControl, {ReportsChangedPaths, ReportsCommitMessages, ReportsChangeHeads,
                                        ReadsCommitStatuses, ReportsCheckRuns},
                        {"has_issues": True, "commenters_can_read": True}),
    "AzureRepos": (SourceControl, {ReportsChangedPaths, NamesChangesForLinks},
                   {"has_issues": False, "commenters_can_read": False}),
    "LocalBoard": (Tracker, {ListsTickets, DescribesTickets, EditsTicketBody},
                   {"reference_prefix": "#", "tickets_in_repository": False}),
    "GitHubIssues": (Tracker, {ListsTickets, EditsTicketBody}, {"reference_prefix": "#", "tickets_in_repository": True}),
    "AzureBoards": (Tracker, {LinksChanges, ListsTickets, EditsTicketBody},
                    {"reference_prefix": "AB#", "tickets_in_repository": False}),
    "ConsoleChat": (Chat, set(), {}),
    "SlackChat": (Chat, {ShowsActions, UploadsFiles, Whispers, ResolvesPermissions}, {}),
    "GitHubProjectBoard": (TicketBoard, {ReadsBoardItems}, {"name": "github-project"}),
    "AzureBoardsStates": (TicketBoard, set(), {"name": "azure-boards"}),
}

# Capabilities of adapters of any port: the services' adapters count their requests for /metrics.
REPORTS_API_CALLS = {"GitHubSource", "GitHubAppSource", "GitHubIssues", "AzureRepos", "AzureBoards", "SlackChat"}


def _local(request, kind: str):
    from integrations.local import ConsoleChat, LocalBoard, LocalGitSource, create_local_tables

    engine = sa.create_engine(f"sqlite:///{request.getfixturevalue('tmp_path') / 'state.db'}")
    request.addfinalizer(engine.dispose)
    create_local_tables(engine)
    if kind == "source":
        return LocalGitSource(engine, request.getfixturevalue("repo"), out=None)
    return LocalBoard(engine) if kind == "board" else ConsoleChat(engine, out=None)


def _github(request, kind: str, *, as_app: bool = False):
    from integrations.github import GitHubAuth, GitHubClient, GitHubIssues, GitHubSource, connect

    emulator = request.getfixturevalue("github_emulator")
    emulator.state.add_repo(REPO)
    # The emulator's App (id 1, installation 1) takes any well-formed JWT: any RSA key signs one.
    auth = GitHubAuth(app_id="1", private_key=_rsa_key(), installation_id=1) if as_app else \
        GitHubAuth(token=emulator.token)
    client = GitHubClient(connect(auth, base_url=emulator.base_url, timeout=10, retry=None), REPO,
                          bot_login="mlops-bot")
    if kind == "board":
        from integrations.github_project_refs import ProjectRef
        from integrations.github_projects import GitHubProjectBoard

        return GitHubProjectBoard(client, ProjectRef("acme", 3))
    return GitHubSource(client) if kind == "source" else GitHubIssues(client)


def _rsa_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _azure(request, kind: str):
    from integrations.azure_devops import AzureBoards, AzureRepos, connect

    emulator = request.getfixturevalue("azure_devops_emulator")
    emulator.state.add_project("proj")
    emulator.state.add_repo("proj", "model")
    client = connect(emulator.base_url, emulator.pat, timeout=2, retries=0, backoff=0)
    if kind == "board":
        from integrations.azure_boards_states import AzureBoardsStates

        return AzureBoardsStates(client, project="proj")
    return AzureRepos(client, project="proj", repository="model") if kind == "source" else \
        AzureBoards(client, project="proj")


def _slack(request, kind: str):
    from integrations.slack import SlackChat, connect

    emulator = request.getfixturevalue("slack_emulator")
    return SlackChat(connect(emulator.token, base_url=emulator.base_url, timeout=2))


BUILD = {
    "LocalGitSource": lambda r: _local(r, "source"), "LocalBoard": lambda r: _local(r, "board"),
    "ConsoleChat": lambda r: _local(r, "chat"), "GitHubSource": lambda r: _github(r, "source"),
    "GitHubAppSource": lambda r: _github(r, "source", as_app=True),
    "GitHubIssues": lambda r: _github(r, "tracker"), "AzureRepos": lambda r: _azure(r, "source"),
    "AzureBoards": lambda r: _azure(r, "tracker"), "SlackChat": lambda r: _slack(r, "chat"),
    "GitHubProjectBoard": lambda r: _github(r, "board"), "AzureBoardsStates": lambda r: _azure(r, "board"),
}


# --- which adapter can do what ----------------------------------------------------------------


def test_every_capability_of_the_ports_module_is_in_the_table():
    the_ports = {*CAPABILITIES, ports.PipelineEngine}  # ports themselves, not capabilities
    declared = {value for name in ports.__all__ if inspect.isclass(value := getattr(ports, name))
                and getattr(value, "_is_runtime_protocol", False)} - the_ports
    assert declared == {c for group in CAPABILITIES.values() for c in group} | {ReportsApiCalls}
    assert all(c.__doc__ and c.__doc__.strip() for c in declared)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_adapter_has_and_declares_the_capabilities_of_its_row(name, request):
    port, expected, facts = TABLE[name]
    adapter = BUILD[name](request)  # an adapter that lost a method it declares cannot be made (see below)
    assert type(adapter).__name__ == name and isinstance(adapter, port)
    assert {c for c in CAPABILITIES[port] if isinstance(adapter, c)} == expected
    assert {c for c in CAPABILITIES[port] if c in type(adapter).__mro__} == expected  # by inheritance: seen
    assert {fact: getattr(adapter, fact) for fact in facts} == facts
    assert isinstance(adapter, ReportsApiCalls) == (name in REPORTS_API_CALLS)


@pytest.mark.parametrize("capability", [c for group in CAPABILITIES.values() for c in group],
                         ids=lambda c: c.__name__)
def test_an_adapter_that_declares_a_capability_without_its_methods_cannot_be_made(capability):
    methods = {name for name, value in vars(capability).items() if inspect.isfunction(value) and name[0] != "_"}
    assert methods and capability.__abstractmethods__ == methods
    lacking = type(f"Lacking{capability.__name__}", (capability,), {})
    with pytest.raises(TypeError, match="abstract"):
        lacking()


# --- each capability's path with an adapter that lacks it -------------------------------------


def commit(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def effects_of(app, kind: str) -> list:
    return [e for e in app.store.effects(limit=1000) if e.kind == kind]


def test_on_embedded_defaults_each_path_through_a_capability_they_lack_completes(make_app, repo):
    app = make_app(slack_permissions={"maya": "maintain"})
    scm, tracker, chat = app.scm, app.tracker, app.chat
    assert not isinstance(scm, ReportsChangedPaths | ReportsCommitMessages | NamesChangesForLinks)
    assert not isinstance(tracker, LinksChanges)
    assert not isinstance(chat, ShowsActions | UploadsFiles | Whispers | ResolvesPermissions)
    settle(app)  # the first model

    # Buttons: the deployment's report offers Roll back; the console shows the text without it.
    offered = [e for e in effects_of(app, "chat.episode") if e.payload.get("actions")]
    assert offered and all(e.status == "done" for e in offered)
    assert any("promoted to production" in m["text"] for m in chat.messages("mlops-pipeline"))

    # Changed paths: a merge that came without its files (as a webhook's) runs nothing here.
    bare = Change(repo=scm.repo, number=90, title="From a webhook", body="", author="bob", commit="f" * 40,
                  merged_at=app.clock(), paths=())
    assert app.lifecycle.handle(ChangeMerged("local", bare))
    (event,) = [e for e in app.store.events(kind="change_merged") if e.key.endswith("f" * 40)]
    assert event.effects == ()

    # Links: AB#3 in a change, and a tracker that links nothing: the change runs, nothing is linked.
    commit(repo, f"{PROJECT}/notes.md", "tuned\n", "Tune the model\n\nFor AB#3 and #1")
    settle(app)
    assert [r.trigger for r in app.registry.runs("tiny")][0] == "merge"
    assert effects_of(app, "tracker.link") == []

    # Permissions in chat from the settings alone; a read-level command answered in the thread.
    assert app.lifecycle.permission(Target("chat", "mlops-pipeline", 1), "maya") == Permission.maintain
    assert app.lifecycle.permission(Target("chat", "mlops-pipeline", 1), "rita") == Permission.read
    typed = Comment("chat-1", Target("chat", "mlops-pipeline", 1), "rita", "/status", app.clock())
    assert app.lifecycle.handle(CommandGiven("console", typed))
    settle(app)
    assert any(m["text"].startswith("Status of **tiny**") for m in chat.messages("mlops-pipeline"))

    # Uploads: the drift chart exists, and the console, which cannot show it, skips it.
    app.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    tiny_frame(300, seed=1, x1_shift=1.5).to_csv(app.settings.batches_dir / "b1.csv", index=False)
    settle(app)
    (chart,) = effects_of(app, "chat.upload")
    assert Path(chart.payload["path"]).is_file()
    assert chart.status == "done" and chart.result == {"uploaded": False}
    assert app.store.effects(status="dead") == []


def test_azure_repos_cannot_read_a_status_back_so_a_status_whose_answer_was_lost_is_set_again(
        azure_devops_emulator, make_app):  # noqa: F811
    ado = azure_devops_emulator
    ado.state.add_project("proj")
    ado.state.add_repo("proj", "model")
    app = make_app(azure_devops_org_url=ado.base_url, azure_devops_pat=ado.pat, azure_devops_project="proj",
                   azure_repository="model", project_paths=["models/tiny"])
    assert not isinstance(app.scm, ReadsCommitStatuses)
    app.run_once()  # the first look
    ado.clock.advance(5)
    merge = ado.state.complete_pull("model", ado.state.open_pull("model", "Tune", "", files=FILES))
    ado.faults.add(r"POST .*/commits/[0-9a-fA-F]+/statuses.*", "lost_response")
    settle(app)
    assert ado.faults.fired, "no answer was lost"
    states = [s["state"] for s in ado.state.repo("model").commit_statuses[merge.lower()]]
    assert states[:2] == ["pending", "pending"] and states[-1] in {"succeeded", "failed"}
    assert all(e.status == "done" for e in effects_of(app, "scm.status"))


def test_a_local_source_with_azure_boards_links_a_work_item_by_a_comment_alone(azure_devops_emulator, make_app,
                                                                               repo):  # noqa: F811
    """The source reads no commit messages and names its changes by no link address: AB# in the
    commit is linked by a comment on the work item, and no relation."""
    ado = azure_devops_emulator
    ado.state.add_project("proj")
    app = make_app(azure_devops_org_url=ado.base_url, azure_devops_pat=ado.pat, azure_devops_project="proj")
    assert isinstance(app.tracker, LinksChanges)
    assert not isinstance(app.scm, ReportsCommitMessages | NamesChangesForLinks)
    settle(app)
    item = ado.state.add_work_item("proj", "Improve recall")
    commit(repo, f"{PROJECT}/notes.md", "tuned\n", f"Tune the model\n\nFor AB#{item}")
    settle(app)
    (link,) = effects_of(app, "tracker.link")
    assert link.status == "done" and link.result == {"outcome": "linked", "url": ""}
    assert ado.state.work_item(item).relations == []
    assert [c.text for c in ado.state.work_item(item).comments if f"mentioned as AB#{item}" in c.text]


def test_a_click_refused_on_a_chat_that_cannot_whisper_is_answered_through_response_url(
        slack_emulator, repo, tmp_path):  # noqa: F811
    from starlette.testclient import TestClient

    from bot.app import build
    from bot.settings import Settings
    from bot.store import Store
    from bot.webhooks import create_app
    from integrations.local import ConsoleChat, create_local_tables
    from integrations.slack import SlackChat, connect
    from tests.conftest import FakeClock
    from tests.test_slack_interactions import SECRET, press

    slack = slack_emulator
    slack.state.add_channel("mlops-pipeline", members=["maya", "rita"])
    clock = FakeClock()
    settings = Settings(project_dir=repo / PROJECT, data_dir=tmp_path / "state", slack_signing_secret=SECRET,
                        slack_permissions={"maya": "maintain"})
    store = Store(settings.state_database_url, clock=clock)
    create_local_tables(store.engine)
    app = build(settings, store=store, chat=ConsoleChat(store.engine, out=None, clock=clock), clock=clock, out=None)
    try:
        assert not isinstance(app.chat, Whispers)
        # A message with a Roll back button, as a Slack bot posted it; the click reaches this bot.
        shown = SlackChat(connect(slack.token, base_url=slack.base_url, timeout=2)).post(
            "mlops-pipeline", "✅ tiny v1 deployed", marker="m1", actions=(ChatAction("rollback", "tiny", 1),))
        click = slack.state.click("mlops-pipeline", shown.id, "mlops:rollback", "rita")
        web = TestClient(create_app(app))
        web.bot = app
        assert press(web, click).status_code == 200
        assert slack.state.ephemeral() == []
        (answer,) = slack.state.responses
        assert answer.body["response_type"] == "ephemeral"
        assert answer.body["text"].startswith("*Roll back* (`/rollback`) needs *maintain* permission")
    finally:
        store.close()


# --- mlops-bot board and status on every tracker ----------------------------------------------


def run_cli(monkeypatch, app, **settings):
    """``mlops-bot`` with the settings ``app`` was made with, from the environment."""
    values = {"project_dir": app.settings.project_dir, "data_dir": app.settings.data_dir, **settings}
    for field, value in values.items():
        monkeypatch.setenv(env_name(field), json.dumps(value) if isinstance(value, list | dict) else str(value))

    def invoke(*args: str):
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


def open_tickets(app) -> tuple[int, int]:
    """The model's retrain ticket, opened by the bot as drift would, and another one closed since."""
    body = "Drift in batch `b1.csv`."
    kept = app.tracker.open("retrain:tiny", "Retrain tiny: high drift", body, ("retrain", "drift:high"),
                            marker="retrain:tiny")
    done = app.tracker.open("retrain:other", "Retrain other: low drift", body, ("retrain",), marker="retrain:other")
    app.tracker.close(done.id)
    return kept.id, done.id


def check_board_and_status(invoke, kept: int, done: int) -> None:
    listed = json.loads(invoke("board", "list", "--json"))
    assert [(t["id"], t["title"], t["state"]) for t in listed] == [(kept, "Retrain tiny: high drift", "open")]
    everything = json.loads(invoke("board", "list", "--all", "--json"))
    assert [(t["id"], t["state"]) for t in everything] == [(kept, "open"), (done, "closed")]
    assert f"ticket:{kept}" in invoke("board", "list") and "Retrain tiny: high drift" in invoke("board", "list")
    status = json.loads(invoke("status", "--json"))
    assert [(t["id"], t["title"]) for t in status["open_tickets"]] == [(kept, "Retrain tiny: high drift")]
    assert f"open tickets: ticket:{kept} Retrain tiny: high drift" in invoke("status")
    shown = json.loads(invoke("board", "show", str(kept), "--json"))
    assert (shown["id"], shown["state"], shown["key"]) == (kept, "open", "retrain:tiny")


def test_board_and_status_list_the_open_issues_on_github(github_emulator, make_app, monkeypatch):  # noqa: F811
    github_emulator.state.add_repo(REPO)
    github = {"github_repository": REPO, "github_token": github_emulator.token,
              "github_api_url": github_emulator.base_url}
    app = make_app(**github)
    kept, done = open_tickets(app)
    github_emulator.state.open_issue(REPO, "Not the bot's", "a person's issue", "bob")
    invoke = run_cli(monkeypatch, app, **github)
    check_board_and_status(invoke, kept, done)
    assert "Retrain tiny" in invoke("board", "show", str(kept))


def test_board_and_status_list_the_open_work_items_on_azure_boards(azure_devops_emulator, make_app,
                                                                   monkeypatch):  # noqa: F811
    azure_devops_emulator.state.add_project("proj")
    azure = {"azure_devops_org_url": azure_devops_emulator.base_url, "azure_devops_pat": azure_devops_emulator.pat,
             "azure_devops_project": "proj"}
    app = make_app(**azure)
    kept, done = open_tickets(app)
    azure_devops_emulator.state.add_work_item("proj", "Not the bot's")
    invoke = run_cli(monkeypatch, app, **azure)
    check_board_and_status(invoke, kept, done)
    assert "Retrain tiny" in invoke("board", "show", str(kept))


def test_a_project_card_delivery_to_a_bot_whose_board_cannot_read_cards_is_ignored_and_stores_nothing(make_app):
    from integrations.github_payloads import CardEdit

    app = make_app()  # embedded defaults: tickets on the local board, no project
    edit = CardEdit(item_id="PVTI_1", project_id="PVT_1", content_id="I_1", content_type="Issue", field_id="PVTF_1",
                    sender="alice", by_bot=False)
    assert app.lifecycle.card_edited(edit, delivery="d-1") == (
        False, "ignored: the tickets are not on a GitHub project (MLOPS_GITHUB_PROJECT)")
    assert app.store.events(kind="card_moved") == []
