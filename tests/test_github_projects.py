"""Retrain tickets on a GitHub Project: the adapter and the whole bot against the emulator's GraphQL.

Every GraphQL document the bot sends is validated by the emulator against GitHub's published schema
(an invalid one is a violation, which fails the test at teardown), and the adapter's documents are
validated here one by one too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.board_stages import should_move
from integrations.github import GitHubAuth, GitHubClient, connect
from integrations.github_project_refs import ProjectRef, parse_project_ref
from integrations.github_projects import DOCUMENTS, BoardSetupError, GitHubProjectBoard
from integrations.ports import PermanentError, PermissionRefused, TransientError
from tests.emulators.fixtures import refdata_dir
from tests.emulators.github import GitHubEmulator, github_graphql_schema, github_schemas

REPO = "acme/model"
STATUS = "Status"
WEBHOOK_SECRET = "card-hook-secret"


@pytest.fixture
def graphql_schema():
    return github_graphql_schema(refdata_dir())


@pytest.fixture
def gh(no_proxy_for_loopback, graphql_schema) -> Iterator[GitHubEmulator]:
    emulator = GitHubEmulator(schemas=github_schemas(refdata_dir()), graphql_schema=graphql_schema,
                              scopes=("repo", "project"))
    emulator.state.add_repo(REPO)
    emulator.state.add_collaborator(REPO, "bob", "write")
    with emulator:
        yield emulator
    assert not emulator.errors, emulator.errors
    assert not emulator.violations, emulator.violations


def board(gh: GitHubEmulator, ref: str = "acme/3", **options) -> GitHubProjectBoard:
    client = GitHubClient(connect(GitHubAuth(token=gh.token), base_url=gh.base_url, timeout=10, retry=None), REPO,
                          bot_login="mlops-bot")
    return GitHubProjectBoard(client, parse_project_ref(ref), **options)


def issue(gh: GitHubEmulator) -> int:
    return gh.state.open_issue(REPO, "Retrain tiny", "drift", "mlops-bot[bot]", labels=["mlops-bot"])


def status_changes(gh: GitHubEmulator, number: int) -> list[tuple[str, str]]:
    card = gh.graphql.card("acme", 3, REPO, number)
    return [(value, who) for name, value, who in card.history if name == STATUS]


# --- the documents and the settings' forms -----------------------------------------------------------

def test_every_document_validates_against_githubs_schema(graphql_schema):
    from graphql import parse, validate

    for document in DOCUMENTS:
        assert validate(graphql_schema, parse(document)) == [], document


def test_an_invalid_document_is_a_violation_and_answered_as_github_does(no_proxy_for_loopback, graphql_schema):
    with GitHubEmulator(graphql_schema=graphql_schema, scopes=("repo", "project")) as emulator:
        client = connect(GitHubAuth(token=emulator.token), base_url=emulator.base_url, retry=None)
        from github import GithubException

        with pytest.raises(GithubException) as caught:
            client.requester.graphql_query("query { organization(login: \"acme\") { projectV3 { id } } }", {})
        assert "projectV3" in caught.value.data["errors"][0]["message"]
        assert len(emulator.violations) == 1 and "does not validate" in emulator.violations[0]


@pytest.mark.parametrize("text, expected", [
    ("https://github.com/orgs/acme/projects/3", ProjectRef("acme", 3, "organization")),
    ("https://github.com/users/maya/projects/1/views/2", ProjectRef("maya", 1, "user")),
    ("https://ghe.example.com/orgs/acme/projects/12/", ProjectRef("acme", 12, "organization")),
    ("acme/3", ProjectRef("acme", 3)),
])
def test_a_project_is_named_by_its_url_or_owner_and_number(text, expected):
    assert parse_project_ref(text) == expected


@pytest.mark.parametrize("text", ["acme", "acme/0", "https://github.com/acme/model/issues/3", "acme/three"])
def test_a_malformed_project_says_what_is_expected(text):
    with pytest.raises(ValueError, match="expected a project's URL"):
        parse_project_ref(text)


@pytest.mark.parametrize("target, current, last_set, moves", [
    ("In progress", None, None, True),  # a new card
    ("In progress", "todo", "Todo", True),  # the bot's own transition
    ("In progress", "In Progress", "Todo", False),  # there already (a person put it there, or a lost answer)
    ("In review", "Todo", "In progress", True),  # a person moved it back: the bot's next transition moves it
    ("In progress", "Done", "Todo", False),  # a person finished it: it stays done
    ("In progress", "Done", "Done", True),  # the bot finished it itself: its own next transition moves it
    ("Done", "In review", "In review", True),
])
def test_should_move(target, current, last_set, moves):
    assert should_move(target, current, last_set=last_set, done="Done") is moves


# --- the adapter against the emulator --------------------------------------------------------------

def test_a_ticket_is_added_once_and_its_status_follows_the_stages(gh):
    gh.graphql.add_project("acme", 3, fields={"Model": None, "Severity": ["low", "medium", "high"], "Version": None})
    number = issue(gh)
    cards = board(gh)
    first = cards.follow(number, "opened", fields={"Model": "tiny", "Severity": "High", "Reason": "drift"})
    assert first.added and first.moved and first.status == "Todo"
    for stage, expected in (("retraining", "In progress"), ("review", "In review"), ("resolved", "Done")):
        assert cards.follow(number, stage, last_set=None, fields={"Version": "2"}).status == expected
    project = gh.graphql.project("acme", 3)
    assert len(project.items) == 1
    card = gh.graphql.card("acme", 3, REPO, number)
    assert [project.shown(card, name) for name in ("Model", "Severity", "Version")] == ["tiny", "high", "2"]
    assert [value for value, _who in status_changes(gh, number)] == ["Todo", "In progress", "In review", "Done"]
    # the Version was written once, though asked for three times
    assert [name for name, _value, _who in card.history].count("Version") == 1


def test_adding_again_and_setting_again_change_nothing(gh):
    gh.graphql.add_project("acme", 3)
    number = issue(gh)
    cards = board(gh)
    cards.follow(number, "opened")
    again = cards.follow(number, "opened", last_set="Todo")
    assert not again.added and not again.moved and again.why == ""
    assert status_changes(gh, number) == [("Todo", "mlops-bot[bot]")]
    writes = [e for e in gh.log.filter("POST", "/graphql") if "fields=add" in f"fields={e.query.get('fields')}"]
    assert len(writes) == 1


def test_a_person_who_moved_the_card_to_done_is_not_overruled(gh):
    gh.graphql.add_project("acme", 3)
    number = issue(gh)
    cards = board(gh)
    cards.follow(number, "opened")
    gh.graphql.set_field("acme", 3, REPO, number, STATUS, "Done", by="alice")
    kept = cards.follow(number, "retraining", last_set="Todo")
    assert not kept.moved and kept.status == "Done" and "person" in kept.why
    assert status_changes(gh, number)[-1] == ("Done", "alice")


def test_a_status_field_without_an_option_is_one_line_listing_its_options(gh):
    gh.graphql.add_project("acme", 3, status=["Backlog", "Doing", "Done"])
    with pytest.raises(BoardSetupError) as caught:
        board(gh).follow(issue(gh), "opened")
    message = str(caught.value)
    assert "\n" not in message
    assert "'Todo' (opened)" in message and "'In progress' (retraining)" in message
    assert "'Backlog', 'Doing', 'Done'" in message and "MLOPS_GITHUB_PROJECT_STATUSES" in message


def test_option_names_are_settings_matched_in_any_case(gh):
    gh.graphql.add_project("acme", 3, status=["Backlog", "Doing", "Review", "Shipped"])
    statuses = {"opened": "backlog", "retraining": "DOING", "review": "review", "resolved": "shipped"}
    number = issue(gh)
    assert board(gh, statuses=statuses).follow(number, "retraining").status == "Doing"


def test_a_project_without_a_status_field_says_so(gh):
    gh.graphql.add_project("acme", 3, status=None)
    with pytest.raises(BoardSetupError, match="no single-select field 'Status'"):
        board(gh).layout()


@pytest.mark.parametrize("ref", ["https://github.com/orgs/acme/projects/9", "acme/9",
                                 "https://github.com/users/acme/projects/3"])
def test_a_project_that_is_not_there_is_a_permanent_error_naming_the_setting(gh, ref):
    gh.graphql.add_project("acme", 3)
    with pytest.raises(PermanentError) as caught:
        board(gh, ref).layout()
    assert not isinstance(caught.value, PermissionRefused)
    assert "MLOPS_GITHUB_PROJECT" in str(caught.value) or "Could not resolve" in str(caught.value)


def test_a_users_project_is_found_by_url_and_by_owner_and_number(gh):
    gh.graphql.add_project("maya", 1, kind="user")
    for ref in ("https://github.com/users/maya/projects/1", "maya/1"):
        assert board(gh, ref).layout().status.name == STATUS


def test_a_classic_token_without_the_project_scope_is_refused_naming_it(gh):
    gh.graphql.add_project("acme", 3)
    gh.set_scopes(gh.token, ["repo"])
    with pytest.raises(PermissionRefused) as caught:
        board(gh).layout()
    assert caught.value.permission == "project" and "'project' scope" in str(caught.value)
    gh.set_scopes(gh.token, ["repo", "read:project"])  # reads now, but writes need 'project'
    number = issue(gh)
    with pytest.raises(PermissionRefused):
        board(gh).follow(number, "opened")


def test_an_app_installation_without_the_projects_permission_is_refused(gh):
    gh.graphql.add_project("acme", 3)
    gh.add_token("fine-token", "maya", permissions={"issues": "write"})
    client = GitHubClient(connect(GitHubAuth(token="fine-token"), base_url=gh.base_url, retry=None), REPO)
    with pytest.raises(PermissionRefused) as caught:
        GitHubProjectBoard(client, parse_project_ref("acme/3")).layout()
    assert caught.value.permission == "organization_projects=write"


@pytest.mark.parametrize("fault", ["500", "502", "lost_response"])
def test_a_failed_or_lost_write_is_transient_and_the_retry_finds_it_done(gh, fault):
    gh.graphql.add_project("acme", 3)
    number = issue(gh)
    cards = board(gh)
    for mutation in ("addProjectV2ItemById", "updateProjectV2ItemFieldValue"):
        gh.faults.add(rf"POST /graphql\?fields={mutation}", fault)
        with pytest.raises(TransientError) as caught:
            cards.follow(number, "opened")
        assert caught.value.outcome_unknown  # a write that may have happened
    assert cards.follow(number, "opened").status == "Todo"
    assert len(gh.graphql.project("acme", 3).items) == 1
    assert [value for value, _who in status_changes(gh, number)] == ["Todo"]


# --- the whole bot: a drift episode walks the card across the board -----------------------------------

PROJECT_URL = "https://github.com/orgs/acme/projects/3"


@pytest.fixture
def episode(gh, make_app, repo):
    """The bot on GitHub with the project set, its first model trained, and a drift episode's ticket open."""
    from tests.conftest import PROJECT, write_drifted_batch, keep_candidates, settle

    gh.graphql.add_project("acme", 3, fields={"Model": None, "Severity": ["low", "medium", "high"], "Version": None,
                                              "Reason": None})
    gh.state.add_collaborator(REPO, "mlops-bot[bot]", "write")
    app = make_app(github_repository=REPO, github_token=gh.token, github_api_url=gh.base_url,
                   project_paths=[PROJECT], github_timeout_s=10, github_project=PROJECT_URL,
                   github_webhook_secret=WEBHOOK_SECRET)
    app.run_once()

    def batch(name: str, seed: int, *, labelled: bool) -> None:
        write_drifted_batch(app, name, seed, labelled=labelled)
        settle(app, rounds=60)

    def retrain(*, candidate: bool) -> None:
        keep_candidates(repo, candidate)
        gh.state.add_comment(REPO, ticket(), "bob", "/retrain")
        settle(app, rounds=60)

    def ticket() -> int:
        return next(i.number for i in gh.state.issues(REPO) if "mlops-bot" in i.labels)

    batch("b1.csv", 1, labelled=True)
    batch("b2.csv", 2, labelled=False)
    app.batch, app.retrain, app.ticket = batch, retrain, ticket
    return app


def test_a_drift_episode_walks_the_card_once_through_each_column_through_faults(gh, episode):
    from tests.conftest import settle

    number = episode.ticket()
    card = gh.graphql.card("acme", 3, REPO, number)
    project = gh.graphql.project("acme", 3)
    assert [value for value, _who in status_changes(gh, number)] == ["Todo"]
    assert project.shown(card, "Model") == "tiny" and "drift" in project.shown(card, "Reason")
    gh.faults.random(0.2, ["500", "502", "lost_response"], seed=5, target=r"POST /graphql(\?.*)?")
    episode.retrain(candidate=True)  # validated, kept as a candidate: a person decides with /deploy
    assert [value for value, _who in status_changes(gh, number)] == ["Todo", "In progress", "In review"]
    candidate = project.shown(card, "Version")
    assert candidate is not None
    gh.state.add_collaborator(REPO, "carol", "maintain")  # /deploy needs maintain
    gh.state.add_comment(REPO, number, "carol", f"/deploy {candidate}")  # in production, measured, closed
    settle(episode, rounds=60)
    assert episode.registry.production("tiny").version == int(candidate)
    assert gh.state.issue(REPO, number).state == "closed"
    assert status_changes(gh, number) == [(column, "mlops-bot[bot]") for column in
                                          ("Todo", "In progress", "In review", "Done")]
    assert len([e for e in episode.store.effects() if e.kind == "episode.resolve"]) == 1
    assert any(fault.path == "/graphql" for fault in gh.faults.fired), "no fault was injected"
    assert len(project.items) == 1
    assert [(e.key, e.last_error) for e in episode.store.effects(status="dead")] == []


def test_a_card_a_person_moved_to_done_stays_there(gh, episode):
    number = episode.ticket()
    gh.graphql.set_field("acme", 3, REPO, number, STATUS, "Done", by="alice")
    episode.retrain(candidate=True)
    assert status_changes(gh, number) == [("Todo", "mlops-bot[bot]"), ("Done", "alice")]
    moves = [e for e in episode.store.effects() if e.kind == "board.follow"]
    assert {e.payload["stage"] for e in moves} == {"opened", "retraining", "review"}
    assert all(e.status == "done" for e in moves)


def card_examples() -> Path:
    """GitHub's example ``projects_v2_item`` deliveries."""
    return refdata_dir() / "github" / "webhooks" / "examples" / "api.github.com" / "projects_v2_item"


def deliver(app, event: str, payload: dict, delivery: str) -> dict:
    """POST a delivery to the bot's webhook, signed with the webhook's secret, as GitHub does."""
    import hashlib
    import hmac
    import json

    from starlette.testclient import TestClient

    from bot.webhooks import create_app

    body = json.dumps(payload).encode()
    response = TestClient(create_app(app)).post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()})
    assert response.status_code in {200, 202}, response.text
    return response.json()


def test_a_persons_move_delivered_by_webhook_is_kept_with_who_made_it_and_not_fought(gh, episode):
    from click.testing import CliRunner

    from bot.cli import cli

    number = episode.ticket()
    gh.graphql.set_field("acme", 3, REPO, number, STATUS, "Done", by="alice")
    event, payload = gh.graphql.card_delivery("acme", 3, REPO, number, STATUS, sender="alice")
    answer = deliver(episode, event, payload, "card-1")
    assert answer == {"status": "accepted", "card": f"alice moved ticket #{number}'s card to Done"}
    assert deliver(episode, event, payload, "card-1")["status"] == "duplicate"
    card = episode.store.get_state("board_cards", str(number))
    assert (card["status"], card["moved_by_person"]["by"], card["moved_by_person"]["status"]) == ("Todo", "alice",
                                                                                                 "Done")
    # Not a person's Status move on one of the bot's cards: nothing recorded.
    _, own = gh.graphql.card_delivery("acme", 3, REPO, number, STATUS, sender="mlops-bot[bot]")
    assert deliver(episode, event, own, "card-2")["card"] == "ignored: the bot's own move"
    _, model = gh.graphql.card_delivery("acme", 3, REPO, number, "Model", sender="alice")
    assert deliver(episode, event, model, "card-3")["card"] == "ignored: a field other than Status"
    other = gh.graphql.add_project("acme", 4)
    _, foreign = gh.graphql.card_delivery("acme", 3, REPO, number, STATUS, sender="alice")
    foreign["projects_v2_item"]["project_node_id"] = other.id
    assert deliver(episode, event, foreign, "card-4")["card"] == "ignored: a card of another project"

    # The bot's next transitions leave the card where alice put it, and say whose move they respected.
    episode.retrain(candidate=True)
    assert status_changes(gh, number) == [("Todo", "mlops-bot[bot]"), ("Done", "alice")]
    kept = [e.result for e in episode.store.effects() if e.kind == "board.follow" and e.payload["stage"] != "opened"]
    assert kept and all(result == {"status": "Done", "moved": False, "why": "alice moved it to Done"}
                        for result in kept)
    shown = CliRunner().invoke(cli, ["board", "show", str(number)], env=episode_env(episode))
    assert "card: Todo, where the bot last put it; alice moved it to Done at" in shown.output, shown.output

    # A token that lost the project scope: the delivery is answered, with why, and nothing is stored.
    gh.set_scopes(gh.token, ["repo"])
    refused = deliver(episode, event, payload, "card-5")
    assert refused["status"] == "ignored" and refused["card"].startswith("ignored: the card cannot be read")
    assert "'project' scope" in refused["card"]
    assert len(episode.store.events(kind="card_moved")) == 1


def episode_env(app) -> dict[str, str]:
    """The environment under which ``mlops-bot`` commands see ``app``'s state and services."""
    settings = app.settings
    return {"MLOPS_DATA_DIR": str(settings.data_dir), "MLOPS_PROJECT_DIR": str(settings.project_dir),
            "GITHUB_REPOSITORY": settings.github_repository, "GITHUB_API_URL": settings.github_api_url,
            "GITHUB_TOKEN": settings.github_token.get_secret_value(), "MLOPS_GITHUB_PROJECT": PROJECT_URL}


def test_githubs_example_card_deliveries_are_read():
    import json

    from integrations.github_payloads import CardEdit, parse_delivery

    edited = json.loads((card_examples() / "edited.payload.json").read_text())
    fact = parse_delivery("projects_v2_item", edited, bot_login="mlops-bot")
    assert fact.kind == "card_edited" and fact.card == CardEdit(
        item_id="PVTI_lADOAWcTxs07G84AVqWu", project_id="PVT_kwDOAWcTxs07Gw", content_id="DI_lADOAWcTxs07G84AIjOy",
        content_type="DraftIssue", field_id="PVTF_lADOAWcTxs07G84AAali", sender=edited["sender"]["login"],
        by_bot=False)
    for example in sorted(card_examples().glob("*.json")):
        if example.name != "edited.payload.json":
            fact = parse_delivery("projects_v2_item", json.loads(example.read_text()))
            assert fact.kind == "ignored" and "only a card's edited fields" in fact.ignored, example.name


def test_the_emulators_card_delivery_is_shaped_like_githubs_example(gh):
    import json

    gh.graphql.add_project("acme", 3)
    board(gh).follow(issue(gh), "opened")
    _event, payload = gh.graphql.card_delivery("acme", 3, REPO, 1, STATUS, sender="alice")
    example = json.loads((card_examples() / "edited.payload.json").read_text())
    assert set(payload) == set(example)
    assert set(payload["projects_v2_item"]) == set(example["projects_v2_item"])
    assert payload["changes"] == {"field_value": {"field_node_id": payload["changes"]["field_value"]["field_node_id"],
                                                  "field_type": "single_select"}}


def test_a_card_is_read_back_by_its_own_id_only_when_it_is_one_of_the_repositorys_issues(gh):
    gh.graphql.add_project("acme", 3)
    number = issue(gh)
    moved = board(gh).follow(number, "review")
    item = board(gh).item(moved.item_id)
    assert (item.ticket_id, item.status) == (number, "In review")
    gh.state.add_repo("acme/other")
    elsewhere = gh.state.open_issue("acme/other", "Elsewhere", "", "alice")
    client = GitHubClient(connect(GitHubAuth(token=gh.token), base_url=gh.base_url, timeout=10, retry=None),
                          "acme/other", bot_login="mlops-bot")
    other_board = GitHubProjectBoard(client, ProjectRef("acme", 3))
    foreign = other_board.follow(elsewhere, "opened")
    assert board(gh).item(foreign.item_id) is None  # the project's, but another repository's issue
    assert board(gh).item("PVTI_gone") is None  # deleted, or never there: GitHub answers NOT_FOUND


def test_doctor_checks_the_project_and_names_the_missing_scope_or_option(gh, repo, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bot.cli import cli
    from tests.conftest import PROJECT

    gh.graphql.add_project("acme", 3)
    gh.graphql.add_project("acme", 4, status=["Backlog", "Done"])
    monkeypatch.chdir(tmp_path)
    for name, value in {"MLOPS_PROJECT_DIR": str(repo / PROJECT), "MLOPS_DATA_DIR": str(tmp_path / "state"),
                        "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": gh.token, "GITHUB_API_URL": gh.base_url,
                        "MLOPS_GITHUB_PROJECT": PROJECT_URL}.items():
        monkeypatch.setenv(name, value)
    healthy = CliRunner().invoke(cli, ["doctor"])
    assert "✓ GitHub project acme/3 (MLOPS_GITHUB_PROJECT)" in healthy.output, healthy.output
    assert "Todo, In progress, In review, Done" in healthy.output
    gh.set_scopes(gh.token, ["repo"])
    refused = CliRunner().invoke(cli, ["doctor"])
    line = next(line for line in refused.output.splitlines() if "GitHub project acme/3" in line)
    assert refused.exit_code == 1 and line.startswith("✗") and "'project' scope" in line
    gh.set_scopes(gh.token, ["repo", "project"])
    monkeypatch.setenv("MLOPS_GITHUB_PROJECT", "acme/4")
    lacking = CliRunner().invoke(cli, ["doctor"])
    line = next(line for line in lacking.output.splitlines() if "GitHub project acme/4" in line)
    assert lacking.exit_code == 1 and "'Backlog', 'Done'" in line and "MLOPS_GITHUB_PROJECT_STATUSES" in line


def test_graphql_requests_count_in_the_cycles_budget_and_show_their_own_rate_limit(gh):
    from integrations.github import CycleBudgetSpent

    gh.graphql.add_project("acme", 3)
    number = issue(gh)
    cards = board(gh)
    cards.client.cycle_budget = 1000

    class Seen:  # what /metrics is told (bot/observability.py)
        limits: list[str] = []

        def api_response(self, service, status):
            pass

        def api_rate_limit(self, service, headers):
            self.limits.append(headers.get("x-ratelimit-resource", "core"))

    cards.client.report_api_calls(Seen())
    before = len(gh.log.filter("POST", "/graphql"))
    cards.client.begin_cycle()
    cards.follow(number, "opened")
    sent = len(gh.log.filter("POST", "/graphql")) - before
    assert sent >= 1 and cards.client.cycle_used == sent  # each GraphQL request is one of the cycle's
    assert Seen.limits.count("graphql") == sent
    cards.client.cycle_budget = cards.client.cycle_used  # spent: the next transition waits for the next cycle
    with pytest.raises(CycleBudgetSpent):
        cards.follow(number, "retraining", last_set="Todo")
    assert len(gh.log.filter("POST", "/graphql")) - before == sent
