"""Retrain tickets' work items following the episode through their type's states on Azure Boards:
the stage-to-state mapping, the adapter with the real azure-devops client against the emulator, and
the whole bot walking a drift episode across the board in each of the four system processes."""

from __future__ import annotations

import os
import sys
import tempfile

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest

from integrations.azure_boards_states import (
    AzureBoardsStates,
    WorkItemState,
    stage_states,
)
from integrations.azure_devops import AzureBoards, connect, merge_tags
from integrations.board_stages import STAGES
from integrations.github_projects import BoardSetupError
from integrations.ports import Target, TicketBoard, TransientError
from tests.emulators.azure_devops import AzureDevOpsEmulator

pytest.importorskip("azure.devops", reason="azure-devops==7.1.0b4 is not installed")

PERSON = "maya@example.com"


def states(*pairs: str) -> list[WorkItemState]:
    return [WorkItemState(*pair.split(":")) for pair in pairs]


# --- the mapping: each stage takes the first state of its category ------------------------------------

@pytest.mark.parametrize("listed, expected", [
    # Agile's Bug, Task (no Resolved state) and Issue (no Proposed state)
    (("New:Proposed", "Active:InProgress", "Resolved:Resolved", "Closed:Completed"),
     ("New", "Active", "Resolved", "Closed")),
    (("New:Proposed", "Active:InProgress", "Closed:Completed", "Removed:Removed"), ("New", "Active", "Active", "Closed")),
    (("Active:InProgress", "Closed:Completed"), ("Active", "Active", "Active", "Closed")),
    # Scrum's Product Backlog Item (two Proposed states: the first) and Task
    (("New:Proposed", "Approved:Proposed", "Committed:InProgress", "Done:Completed", "Removed:Removed"),
     ("New", "Committed", "Committed", "Done")),
    (("To Do:Proposed", "In Progress:InProgress", "Done:Completed", "Removed:Removed"),
     ("To Do", "In Progress", "In Progress", "Done")),
    # Basic
    (("To Do:Proposed", "Doing:InProgress", "Done:Completed"), ("To Do", "Doing", "Doing", "Done")),
    # CMMI's Bug (Resolved in its own category) and Task (Resolved counted as In Progress)
    (("Proposed:Proposed", "Active:InProgress", "Resolved:Resolved", "Closed:Completed"),
     ("Proposed", "Active", "Resolved", "Closed")),
    (("Proposed:Proposed", "Active:InProgress", "Resolved:InProgress", "Closed:Completed", "Removed:Removed"),
     ("Proposed", "Active", "Active", "Closed")),
    # a process an administrator changed: its own states, in its own order
    (("Triage:Proposed", "New:Proposed", "Training:InProgress", "Active:InProgress", "Awaiting deploy:Resolved",
      "Shipped:Completed", "Closed:Completed"), ("Triage", "Training", "Awaiting deploy", "Shipped")),
])
def test_each_stage_takes_the_first_state_of_its_category(listed, expected):
    assert stage_states(states(*listed), where="the type") == dict(zip(STAGES, expected))


@pytest.mark.parametrize("listed, said", [
    ((), "'Bug' of the Azure DevOps project proj has no states (the states API lists none)"),
    (("New:Proposed", "Closed:Completed"),
     "has no state in the InProgress category (its states: New (Proposed), Closed (Completed))"),
    (("New:Proposed", "Active:InProgress"), "has no state in the Completed category"),
])
def test_a_type_without_the_states_a_stage_needs_is_one_line(listed, said):
    with pytest.raises(BoardSetupError) as refused:
        stage_states(states(*listed), where="the work item type 'Bug' of the Azure DevOps project proj")
    assert said in str(refused.value) and "\n" not in str(refused.value)
    assert "MLOPS_AZURE_WORK_ITEM_TYPE" in str(refused.value)


@pytest.mark.parametrize("current, wanted, merged", [
    ("", ["model:tiny", "severity:high"], {"model:tiny", "severity:high"}),
    ("team-ml; mlops-bot; drift:low", ["mlops-bot", "drift:high"], {"team-ml", "mlops-bot", "drift:high"}),
    ("Model:old; Team-ML", ["model:tiny"], {"Team-ML", "model:tiny"}),  # tags compare in any case
    ("MLOPS-BOT", ["mlops-bot", "a;b"], {"mlops-bot", "a,b"}),  # ";" separates tags: never inside one
])
def test_tags_are_merged_keeping_a_persons(current, wanted, merged):
    assert set(merge_tags(current, wanted).split("; ")) == merged


# --- the adapter against the emulator ------------------------------------------------------------------

PROCESS_TYPE = {"Agile": "Bug", "Scrum": "Product Backlog Item", "Basic": "Issue", "CMMI": "Bug"}
#: the state each stage puts the work item in, read from the emulator's types (the service's)
WALK = {"Agile": ("New", "Active", "Resolved", "Closed"), "Scrum": ("New", "Committed", "Committed", "Done"),
        "Basic": ("To Do", "Doing", "Doing", "Done"), "CMMI": ("Proposed", "Active", "Resolved", "Closed")}


@pytest.fixture
def ado(azure_devops_emulator: AzureDevOpsEmulator) -> AzureDevOpsEmulator:
    for process in PROCESS_TYPE:
        azure_devops_emulator.state.add_project(process.lower(), process=process)
    return azure_devops_emulator


@pytest.fixture
def client(ado: AzureDevOpsEmulator):
    return connect(ado.base_url, ado.pat, timeout=2, retries=0, backoff=0)


def board_for(client, process: str, work_item_type: str | None = None) -> AzureBoardsStates:
    return AzureBoardsStates(client, project=process.lower(), work_item_type=work_item_type or PROCESS_TYPE[process])


def work_item(ado: AzureDevOpsEmulator, process: str, work_item_type: str | None = None) -> int:
    return ado.state.add_work_item(process.lower(), "Retrain tiny", type=work_item_type or PROCESS_TYPE[process],
                                   fields={"System.Tags": "mlops-bot; retrain"}, author="mlops-bot@example.com")


def state_of(ado: AzureDevOpsEmulator, number: int) -> str:
    return ado.state.work_item(number).fields["System.State"]


def test_the_board_is_a_ticket_board(client):
    assert isinstance(board_for(client, "Agile"), TicketBoard)


@pytest.mark.parametrize("process", sorted(PROCESS_TYPE))
def test_a_work_item_walks_its_types_states_read_from_the_states_api(ado, client, process):
    board, number = board_for(client, process), work_item(ado, process)
    for stage, state in zip(STAGES, WALK[process]):
        move = board.follow(number, stage, last_set=state_of(ado, number))
        assert (state_of(ado, number), move.status, move.why) == (state, state, "")
    history = ado.state.work_item(number).state_history
    assert history == [(state, ado.user) for state in dict.fromkeys(WALK[process])]
    # one read of the type's states for the whole walk
    assert ado.log.count("GET", path=r".*/_apis/wit/workitemtypes/[^/]+/states") == 1


def test_a_move_writes_the_version_in_the_discussion_over_the_revision_read(ado, client):
    board, number = board_for(client, "Agile"), work_item(ado, "Agile")
    board.follow(number, "retraining")
    board.follow(number, "review", last_set="Active", fields={"Version": "3"})
    item = ado.state.work_item(number)
    assert "from Active to Resolved: a validated candidate (version 3) waits for a person to deploy it" in \
        item.comments[-1].text
    assert f"[mlops-bot:board:{number}:review]" in item.comments[-1].text  # the bot's line, told from a person's
    assert item.rev == 3


def test_tags_carry_model_and_severity_and_keep_a_persons(ado, client):
    board, number = board_for(client, "Agile"), work_item(ado, "Agile")
    ado.state.edit_work_item(number, {"System.Tags": "mlops-bot; retrain; team-ml"}, author=PERSON)
    board.follow(number, "opened", fields={"Model": "tiny", "Severity": "high", "Reason": "drift"})
    tags = set(ado.state.work_item(number).fields["System.Tags"].split("; "))
    assert tags == {"mlops-bot", "retrain", "team-ml", "model:tiny", "severity:high"}
    rev = ado.state.work_item(number).rev
    board.follow(number, "opened", fields={"Model": "tiny", "Severity": "high"})  # nothing new: nothing written
    assert ado.state.work_item(number).rev == rev and state_of(ado, number) == "New"


def test_the_trackers_updates_keep_the_boards_and_a_persons_tags(ado, client):
    tracker = AzureBoards(client, project="agile", work_item_type="Bug")
    ticket = tracker.open("retrain:tiny", "Retrain tiny", "drift", ("retrain", "drift:low"), marker="retrain:tiny")
    board_for(client, "Agile").follow(ticket.id, "opened", fields={"Model": "tiny", "Severity": "low"})
    ado.state.edit_work_item(ticket.id, {"System.Tags": ado.state.work_item(ticket.id).fields["System.Tags"]
                                         + "; team-ml"}, author=PERSON)
    tracker.update(ticket, labels=("retrain", "drift:high"))
    tags = set(ado.state.work_item(ticket.id).fields["System.Tags"].split("; "))
    assert tags == {"mlops-bot", "retrain", "drift:high", "model:tiny", "severity:low", "team-ml"}


@pytest.mark.parametrize("moved_to, stage, stays", [
    ("Closed", "review", True),  # a person finished it: never moved back
    ("Removed", "retraining", True),  # a person removed it (User Story has Removed)
    ("New", "review", False),  # a person moved it back: the bot's next transition moves it on
])
def test_a_persons_move_is_respected(ado, client, moved_to, stage, stays):
    board = board_for(client, "Agile", "User Story")
    number = work_item(ado, "Agile", "User Story")
    board.follow(number, "retraining", last_set="New")
    ado.state.edit_work_item(number, {"System.State": moved_to}, author=PERSON)
    move = board.follow(number, stage, last_set="Active")
    if stays:
        assert (state_of(ado, number), move.moved, move.why) == (moved_to, False, f"a person moved it to {moved_to}")
    else:
        assert move.moved and state_of(ado, number) == board.layout().stage_options[stage][1]


def test_closing_the_ticket_after_the_board_resolved_it_writes_nothing(ado, client):
    tracker = AzureBoards(client, project="scrum", work_item_type="Product Backlog Item", process="Scrum")
    ticket = tracker.open("retrain:tiny", "Retrain tiny", "drift", ("retrain",), marker="retrain:tiny")
    board = board_for(client, "Scrum")
    board.follow(ticket.id, "resolved")
    rev = ado.state.work_item(ticket.id).rev
    tracker.close(ticket.id)  # the tracker's closed state is the type's first Completed state: already there
    assert ado.state.work_item(ticket.id).rev == rev and tracker.get(ticket.id).state == "closed"
    assert board.layout().stage_options["resolved"][1] == tracker.close_state == "Done"


def test_a_completed_state_the_bot_set_itself_is_left_on_its_next_transition(ado, client):
    board, number = board_for(client, "Agile"), work_item(ado, "Agile")
    board.follow(number, "resolved")
    assert board.follow(number, "retraining", last_set="Closed").moved  # the bot's own Done is the bot's to leave
    assert state_of(ado, number) == "Active"


class _PersonEditsFirst:
    """The real client, with a person's edit landing between the bot's read and its write, once."""

    def __init__(self, client, edit) -> None:
        self.client, self.edit, self.edited = client, edit, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def call(self, kind, method, *args, **kwargs):
        if method == "update_work_item" and not self.edited:
            self.edited = True
            self.edit()
        return self.client.call(kind, method, *args, **kwargs)


@pytest.mark.parametrize("persons_state, ends_in", [("Closed", "Closed"), ("New", "Resolved")])
def test_a_stale_revision_is_read_again_and_decided_again_once(ado, client, persons_state, ends_in):
    number = work_item(ado, "Agile")
    board_for(client, "Agile").follow(number, "retraining")
    racing = _PersonEditsFirst(client, lambda: ado.state.edit_work_item(number, {"System.State": persons_state},
                                                                        author=PERSON))
    move = AzureBoardsStates(racing, project="agile", work_item_type="Bug").follow(number, "review", last_set="Active")
    assert state_of(ado, number) == ends_in and move.moved == (ends_in == "Resolved")
    patches = [entry.status for entry in ado.log if entry.method == "PATCH"]
    assert patches == [200, 412] + ([200] if ends_in == "Resolved" else [])
    assert [state for state, _who in ado.state.work_item(number).state_history] == \
        ["New", "Active", persons_state] + (["Resolved"] if ends_in == "Resolved" else [])


def test_the_trackers_tag_update_racing_a_persons_tag_keeps_both(ado, client):
    ticket = AzureBoards(client, project="agile", work_item_type="Bug").open(
        "retrain:tiny", "Retrain tiny", "drift", ("retrain", "drift:low"), marker="retrain:tiny")
    racing = _PersonEditsFirst(client, lambda: ado.state.edit_work_item(
        ticket.id, {"System.Tags": "mlops-bot; retrain; drift:low; team-ml"}, author=PERSON))
    AzureBoards(racing, project="agile", work_item_type="Bug").update(ticket, labels=("retrain", "drift:high"))
    assert set(ado.state.work_item(ticket.id).fields["System.Tags"].split("; ")) == \
        {"mlops-bot", "retrain", "drift:high", "team-ml"}
    assert [entry.status for entry in ado.log if entry.method == "PATCH"] == [412, 200]


def test_a_work_item_that_changes_at_every_try_waits_for_a_later_one(ado, client):
    number = work_item(ado, "Agile")

    class _Busy(_PersonEditsFirst):
        def call(self, kind, method, *args, **kwargs):
            if method == "update_work_item":
                self.edit()
            return self.client.call(kind, method, *args, **kwargs)

    busy = _Busy(client, lambda: ado.state.edit_work_item(number, {"System.Title": "edited again"}, author=PERSON))
    with pytest.raises(TransientError, match=f"work item {number} changed each time"):
        AzureBoardsStates(busy, project="agile", work_item_type="Bug").follow(number, "retraining")
    assert state_of(ado, number) == "New"


def test_a_state_the_process_no_longer_has_is_read_again_from_the_states_api(ado, client):
    board, number = board_for(client, "Agile"), work_item(ado, "Agile")
    board.follow(number, "retraining")
    # an administrator renames Resolved after the bot read the type's states
    ado.state.customize_states("agile", "Bug", [("New", "Proposed"), ("Active", "InProgress"),
                                                ("Awaiting deploy", "Resolved"), ("Closed", "Completed")])
    move = board.follow(number, "review", last_set="Active")
    assert (move.status, state_of(ado, number)) == ("Awaiting deploy", "Awaiting deploy")
    assert [entry.status for entry in ado.log if entry.method == "PATCH"] == [200, 400, 200]


def test_an_unknown_type_or_a_type_without_states_is_one_line(ado, client):
    with pytest.raises(BoardSetupError) as unknown:
        AzureBoardsStates(client, project="agile", work_item_type="Story").layout()
    assert str(unknown.value).startswith("the Azure DevOps project agile has no work item type 'Story'")
    assert "MLOPS_AZURE_WORK_ITEM_TYPE" in str(unknown.value) and "\n" not in str(unknown.value)
    ado.state.customize_states("basic", "Issue", [])
    with pytest.raises(BoardSetupError) as empty:
        board_for(client, "Basic").layout()
    assert "the work item type 'Issue' of the Azure DevOps project basic has no states" in str(empty.value)
    assert "\n" not in str(empty.value)


@pytest.mark.parametrize("process", sorted(PROCESS_TYPE))
def test_doctor_shows_the_walk_each_process_gives_or_the_one_line_why_not(ado, client, process):
    ((what, problem, _fix),) = board_for(client, process).diagnose()
    assert problem is None and what.endswith(": " + " → ".join(dict.fromkeys(WALK[process])))
    ado.state.customize_states(process.lower(), PROCESS_TYPE[process], [])
    ((what, problem, fix),) = AzureBoardsStates(client, project=process.lower(),
                                                work_item_type=PROCESS_TYPE[process]).diagnose()
    assert "has no states" in problem and "\n" not in problem and "MLOPS_AZURE_WORK_ITEM_TYPE" in fix


def test_the_emulator_refuses_states_as_the_service_does(ado, client):
    number = work_item(ado, "Agile", "User Story")
    with pytest.raises(ValueError, match="'Done' is not in the list of supported values for User Story"):
        ado.state.edit_work_item(number, {"System.State": "Done"})
    ado.state.edit_work_item(number, {"System.State": "Removed"})
    with pytest.raises(ValueError, match="from 'Removed': Removed, New"):  # out of Removed only back to New
        ado.state.edit_work_item(number, {"System.State": "Active"})
    board = board_for(client, "Agile", "User Story")
    assert not board.follow(number, "retraining").moved and state_of(ado, number) == "Removed"


# --- the whole bot: a drift episode walks the work item across the board ----------------------------

@pytest.fixture
def episode(ado, make_app, repo, request):
    """The bot with its tickets on Azure Boards (``request.param``: the process), its first model
    trained, and a drift episode's work item open."""
    from tests.conftest import write_drifted_batch, keep_candidates, settle

    process = request.param
    app = make_app(azure_devops_org_url=ado.base_url, azure_devops_pat=ado.pat, azure_devops_project=process.lower(),
                   azure_process=process, azure_work_item_type=PROCESS_TYPE[process])
    app.run_once()

    def batch(name: str, seed: int, *, labelled: bool) -> None:
        write_drifted_batch(app, name, seed, labelled=labelled)
        settle(app, rounds=60)

    def retrain(*, candidate: bool) -> None:
        keep_candidates(repo, candidate)
        app.scm.add_comment(Target("ticket", app.scm.repo, ticket()), "/retrain")
        settle(app, rounds=60)

    def ticket() -> int:
        found = app.tracker.tickets()
        assert len(found) == 1, [t.id for t in found]  # one work item for the whole episode
        return found[0].id

    batch("b1.csv", 1, labelled=True)
    batch("b2.csv", 2, labelled=False)
    app.batch, app.retrain, app.ticket, app.process = batch, retrain, ticket, process
    return app


@pytest.mark.parametrize("episode", sorted(PROCESS_TYPE), indirect=True)
def test_a_drift_episode_walks_the_work_item_through_its_process_states(ado, episode):
    from tests.conftest import settle

    number, walk = episode.ticket(), WALK[episode.process]
    fields = ado.state.work_item(number).fields
    assert fields["System.State"] == walk[0]
    tags = set(fields["System.Tags"].split("; "))
    assert {"mlops-bot", "retrain", "model:tiny"} <= tags and any(t.startswith("severity:") for t in tags)
    ado.state.edit_work_item(number, {"System.Tags": fields["System.Tags"] + "; team-ml"}, author=PERSON)

    episode.retrain(candidate=True)  # validated, kept as a candidate: a person decides with /deploy
    assert state_of(ado, number) == walk[2]
    episode.batch("b3.csv", 3, labelled=True)  # drift again: the same ticket, updated
    assert episode.ticket() == number and state_of(ado, number) == walk[2]
    candidate = max(v.version for v in episode.registry.versions("tiny") if str(v.stage) == "candidate")
    episode.scm.add_comment(Target("ticket", episode.scm.repo, number), f"/deploy {candidate}")
    settle(episode, rounds=60)  # the candidate in production, measured, and the ticket closed

    # each move once, by the bot, and the close is one write
    assert episode.registry.production("tiny").version == candidate
    expected = [walk[0], walk[1], *([walk[2]] if walk[2] != walk[1] else []), walk[3]]
    assert ado.state.work_item(number).state_history == [(state, ado.user) for state in expected]
    assert episode.tracker.get(number).state == "closed"
    assert "team-ml" in ado.state.work_item(number).fields["System.Tags"]  # the person's tag survived the updates
    moves = [e for e in episode.store.effects() if e.kind == "board.follow"]
    assert {e.payload["stage"] for e in moves} == set(STAGES) and all(e.status == "done" for e in moves)
    assert [(e.key, e.last_error) for e in episode.store.effects(status="dead")] == []


@pytest.mark.parametrize("episode", ["Agile"], indirect=True)
def test_a_work_item_a_person_closed_stays_closed_through_the_episode(ado, episode):
    number = episode.ticket()
    ado.state.edit_work_item(number, {"System.State": "Closed"}, author=PERSON)
    episode.retrain(candidate=True)
    assert [(state, who) for state, who in ado.state.work_item(number).state_history][-1] == ("Closed", PERSON)
    moves = [e for e in episode.store.effects() if e.kind == "board.follow"]
    assert {e.payload["stage"] for e in moves} == {"opened", "retraining", "review"}
    assert all(e.status == "done" for e in moves)
