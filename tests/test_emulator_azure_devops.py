"""The Azure DevOps emulator against the real azure-devops client (7.1.0b4) and the refdata specs.

The azure-devops package reads AZURE_DEVOPS_CACHE_DIR when it is imported, so this module points it
at a temporary folder first; the client is imported lazily, inside the tests.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

if "azure.devops" not in sys.modules:
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest

from tests.emulators.azure_devops import LOCATIONS, RESOURCE_AREAS, RESOURCE_AREAS_ID, AzureDevOpsEmulator
from tests.emulators.fixtures import azure_devops_emulator, no_proxy_for_loopback, refdata_dir  # noqa: F401

pytest.importorskip("azure.devops", reason="azure-devops==7.1.0b4 is not installed")


def _connection(emulator: AzureDevOpsEmulator, pat: str | None = None):
    from azure.devops.connection import Connection
    from msrest.authentication import BasicAuthentication

    return Connection(base_url=emulator.base_url, creds=BasicAuthentication("", pat or emulator.pat))


def _fast(client):
    client.config.retry_policy.retries = 0
    client.config.connection.timeout = 3
    return client



def test_every_location_the_client_uses_is_listed() -> None:
    recorded = json.loads((refdata_dir() / "azure-devops" / "client-locations.json").read_text(encoding="utf-8-sig"))
    used = ("add_work_item_comment", "get_comments", "query_by_wiql", "create_work_item", "get_work_item",
            "get_work_items", "update_work_item", "get_pull_request", "get_pull_requests", "create_comment",
            "create_thread", "get_threads", "get_pull_request_work_item_refs")
    wanted = {entry["location_id"] for name, entry in recorded["v7_1"].items()
              if name.split(".")[-1] in used}
    assert len(wanted) >= 7
    assert wanted <= set(LOCATIONS)
    assert RESOURCE_AREAS_ID in LOCATIONS


def test_first_use_discovery_matches_the_recorded_client(ado: AzureDevOpsEmulator) -> None:
    recorded = json.loads((refdata_dir() / "azure-devops" / "client-first-use-requests.json")
                          .read_text(encoding="utf-8-sig"))["requests"]
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    wit = _connection(ado).clients_v7_1.get_work_item_tracking_client()
    wit.create_work_item([JsonPatchOperation(op="add", path="/fields/System.Title", value="x")], "proj", "Task")
    seen = [(e.method, e.path) for e in ado.log][:3]
    assert seen[:2] == [(r["method"], r["path"]) for r in recorded[:2]]
    assert seen[2] == ("POST", "/fakeorg/proj/_apis/wit/workitems/$Task")
    assert ado.log.entries[1].status == 200


def test_options_and_resource_areas_bodies(ado: AzureDevOpsEmulator) -> None:
    import requests

    auth = ("", ado.pat)
    options = requests.options(ado.api("_apis"), auth=auth, timeout=5).json()
    assert options["count"] == len(options["value"]) == len(LOCATIONS)
    assert {"id", "area", "resourceName", "routeTemplate", "resourceVersion", "minVersion", "maxVersion",
            "releasedVersion"} <= set(options["value"][0])
    areas = requests.get(ado.api("_apis/ResourceAreas"), auth=auth, timeout=5).json()
    assert areas["count"] == len(areas["value"]) == len(RESOURCE_AREAS)
    assert {(a["id"], a["name"]) for a in areas["value"]} == set(RESOURCE_AREAS)
    assert {a["locationUrl"] for a in areas["value"]} == {ado.base_url + "/"}  # as the service writes it
    assert requests.get(ado.api("_apis/ResourceAreas"), auth=("", "wrong"), timeout=5).status_code == 401


def test_every_area_client_finds_its_area_on_the_emulator(ado: AzureDevOpsEmulator) -> None:
    """A populated list is what the client looks each area client's URL up in; an area missing from
    it would send the client to app.vssps.visualstudio.com. Every client the adapters build (and
    core) finds its area, answers from the emulator, and discovery is read at most once."""
    from azure.devops.v7_1.core.core_client import CoreClient
    from azure.devops.v7_1.git.git_client import GitClient
    from azure.devops.v7_1.work.work_client import WorkClient
    from azure.devops.v7_1.work_item_tracking.work_item_tracking_client import WorkItemTrackingClient

    listed = {area_id for area_id, _name in RESOURCE_AREAS}
    for kind in (CoreClient, GitClient, WorkClient, WorkItemTrackingClient):
        assert kind.resource_area_identifier in listed, kind.__name__
    factory = _connection(ado).clients_v7_1
    git = _fast(factory.get_git_client())
    assert git.get_pull_requests("model", None, project="proj") == []
    wit = _fast(factory.get_work_item_tracking_client())
    assert wit.get_work_items([ado.state.add_work_item("proj", "x")], project="proj")[0].fields["System.Title"] == "x"
    factory.get_work_client()
    factory.get_core_client()
    # Read at most once for all four clients. The SDK also keeps what it read in a file cache keyed by
    # the organisation's URL, which holds the port: an earlier emulator of this test session on the
    # same port (the system gives ports out again) has left an entry that answers instead (0 reads).
    assert ado.log.count("GET", path=r"/fakeorg/_apis/ResourceAreas") <= 1
    assert ado.log.count("OPTIONS") == 1


def test_work_items_create_update_get_batch_wiql_comments_and_relations(ado: AzureDevOpsEmulator) -> None:
    from azure.devops.v7_1.work_item_tracking.models import CommentCreate, JsonPatchOperation, Wiql
    from azure.devops.v7_1.work.models import TeamContext

    conn = _connection(ado)
    wit = _fast(conn.clients_v7_1.get_work_item_tracking_client())
    item = wit.create_work_item([
        JsonPatchOperation(op="add", path="/fields/System.Title", value="Retrain"),
        JsonPatchOperation(op="add", path="/fields/System.Tags", value="retrain; mlops-bot"),
    ], "proj", "Task")
    assert item.fields["System.State"] == "New" and item.fields["System.Tags"] == "mlops-bot; retrain"
    assert item.url.startswith(ado.url)
    project_id = ado.state.project("proj").id
    repo_id = ado.state.repo("model").id
    link = f"vstfs:///Git/PullRequestId/{project_id}%2F{repo_id}%2F1"
    updated = wit.update_work_item([
        JsonPatchOperation(op="replace", path="/fields/System.State", value="Active"),
        JsonPatchOperation(op="add", path="/relations/-",
                           value={"rel": "ArtifactLink", "url": link, "attributes": {"name": "Pull Request"}}),
    ], item.id, project="proj")
    assert updated.rev == 2 and updated.relations[0].url == link
    assert wit.get_work_item(item.id, project="proj").fields["System.State"] == "Active"
    other = ado.state.add_work_item("proj", "Other")
    assert [w.id for w in wit.get_work_items([item.id, other], project="proj")] == [item.id, other]
    result = wit.query_by_wiql(Wiql(query="SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "
                                          "AND [System.Tags] CONTAINS 'mlops-bot' AND [System.State] NOT IN "
                                          "('Closed', 'Resolved')"), team_context=TeamContext(project="proj"))
    assert [r.id for r in result.work_items] == [item.id]
    comment = wit.add_work_item_comment(CommentCreate(text="<p>hi</p>"), "proj", item.id, "html")
    assert [c.id for c in wit.get_comments("proj", item.id).comments] == [comment.id]
    with pytest.raises(Exception, match="is not in the list of supported values"):
        wit.update_work_item([JsonPatchOperation(op="replace", path="/fields/System.State", value="Done")],
                             item.id, project="proj")
    work = _fast(conn.clients_v7_1.get_work_client())
    current = work.get_team_iterations(TeamContext(project="proj", team="proj Team"), timeframe="current")
    assert [i.path for i in current] == ["proj\\Sprint 1"]


def test_pull_requests_threads_statuses_and_work_item_refs(ado: AzureDevOpsEmulator) -> None:
    from azure.devops.v7_1.git.models import (Comment, GitPullRequestCommentThread, GitPullRequestSearchCriteria,
                                              GitPullRequestStatus, GitStatus, GitStatusContext)

    state = ado.state
    first = state.open_pull("model", "Tune", "AB#5", work_items=[7])
    merge = state.complete_pull("model", first)
    state.open_pull("model", "Still open")
    git = _fast(_connection(ado).clients_v7_1.get_git_client())
    completed = git.get_pull_requests("model", GitPullRequestSearchCriteria(status="completed"), project="proj")
    assert [(p.pull_request_id, p.last_merge_commit.commit_id) for p in completed] == [(first, merge)]
    assert git.get_pull_request("model", first, project="proj").status == "completed"
    thread = git.create_thread(GitPullRequestCommentThread(comments=[Comment(content="/retrain")]), "model", first,
                               project="proj")
    reply = git.create_comment(Comment(content="on it", parent_comment_id=1), "model", first, thread.id,
                               project="proj")
    assert reply.id == 2
    assert [[c.content for c in t.comments] for t in git.get_threads("model", first, project="proj")] == [
        ["/retrain", "on it"]]
    status = git.create_pull_request_status(GitPullRequestStatus(state="pending", context=GitStatusContext(
        genre="mlops-bot", name="pipeline")), "model", first, project="proj")
    assert status.context.genre == "mlops-bot"
    git.create_commit_status(GitStatus(state="succeeded", context=GitStatusContext(genre="mlops-bot", name="pipeline")),
                             merge, "model", project="proj")
    assert [s.state for s in git.get_statuses(merge, "model", project="proj")] == ["succeeded"]
    assert [r.id for r in git.get_pull_request_work_item_refs("model", first, project="proj")] == ["7"]


def test_pipeline_run_with_parameters_and_get(ado: AzureDevOpsEmulator) -> None:
    pipelines = _fast(_connection(ado).clients_v7_1.get_pipelines_client())
    run = pipelines.run_pipeline({"templateParameters": {"run_id": "r-1", "reason": "drift"}}, "proj", 1)
    assert run.name == "r-1" and run.state == "inProgress"
    ado.state.finish_run(1, run.id)
    again = pipelines.get_run("proj", 1, run.id)
    assert (again.state, again.result, again.template_parameters["reason"]) == ("completed", "succeeded", "drift")
    assert [r.name for r in pipelines.list_runs("proj", 1)] == ["r-1"]


@pytest.mark.parametrize("kind", ["429", "503"])
def test_writes_refused_with_429_or_503_are_not_retried(ado: AzureDevOpsEmulator, kind: str) -> None:
    from azure.devops.exceptions import AzureDevOpsServiceError
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    wit = _connection(ado).clients_v7_1.get_work_item_tracking_client()
    ado.faults.add("Work Items_Create", kind, retry_after=0)
    with pytest.raises(AzureDevOpsServiceError):
        wit.create_work_item([JsonPatchOperation(op="add", path="/fields/System.Title", value="x")], "proj", "Task")
    assert ado.log.count("POST", path=r".*/workitems/\$Task") == 1
    assert ado.state.work_items == {}


def test_a_get_refused_with_503_is_retried(ado: AzureDevOpsEmulator) -> None:
    item = ado.state.add_work_item("proj", "x")
    wit = _connection(ado).clients_v7_1.get_work_item_tracking_client()
    wit.config.retry_policy.backoff_factor = 0
    ado.faults.add("Work Items_Get Work Item", "503", retry_after=0, times=2)
    assert wit.get_work_item(item, project="proj").id == item
    assert ado.log.count("GET", path=rf".*/workitems/{item}") == 3


def test_a_lost_response_applies_the_write(ado: AzureDevOpsEmulator) -> None:
    from msrest.exceptions import ClientRequestError
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    wit = _fast(_connection(ado).clients_v7_1.get_work_item_tracking_client())
    ado.faults.add("Work Items_Create", "lost_response")
    with pytest.raises(ClientRequestError):
        wit.create_work_item([JsonPatchOperation(op="add", path="/fields/System.Title", value="x")], "proj", "Task")
    assert len(ado.state.work_items) == 1


def test_bad_pat_raises_authentication_error(ado: AzureDevOpsEmulator) -> None:
    from azure.devops.exceptions import AzureDevOpsAuthenticationError

    with pytest.raises(AzureDevOpsAuthenticationError):
        _connection(ado, pat="nope").clients_v7_1.get_work_item_tracking_client().get_work_item(1, project="proj")


def test_examples_bodies_validate_against_the_specs() -> None:
    """The schema checker accepts the specs' own examples for the operations the emulator serves."""
    from tests.emulators.azure_devops import azure_devops_schemas

    root = refdata_dir() / "azure-devops"
    schemas = azure_devops_schemas(root.parent)
    example = json.loads((root / "examples/wit/7.1/httpExamples/workItems/POST__wit_workitems_create.json")
                         .read_text(encoding="utf-8-sig"))
    errors = schemas.validate_response("POST", "/{organization}/{project}/_apis/wit/workitems/${type}", 200,
                                       example["responses"]["200"]["body"])
    assert errors == []
