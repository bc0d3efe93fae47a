"""The Azure DevOps adapters with the real azure-devops client against the emulator, and the
service-hook parser on every recorded delivery in ../shared/refdata/azure-devops/service-hooks/."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest

from integrations.azure_devops import AzureBoards, AzurePipelines, AzureRepos, connect, markdown_to_html
from integrations.azure_payloads import parse_service_hook
from integrations.ports import (Change, Comment, PermanentError, Permission, PipelineEngine, SourceControl, Target,
                                Tracker, TransientError, marker_comment)
from tests.emulators.azure_devops import AzureDevOpsEmulator
from tests.emulators.fixtures import azure_devops_emulator, no_proxy_for_loopback, refdata_dir  # noqa: F401

pytest.importorskip("azure.devops", reason="azure-devops==7.1.0b4 is not installed")

PATTERNS = (r"(?i)(?<![A-Za-z0-9])(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?)?\s*#(\d+)", r"AB#(\d+)")


@pytest.fixture
def ado(azure_devops_emulator: AzureDevOpsEmulator) -> AzureDevOpsEmulator:
    state = azure_devops_emulator.state
    state.add_project("proj")
    state.add_project("basic", process="Basic")
    state.add_repo("proj", "model")
    state.add_pipeline("proj", "train")
    return azure_devops_emulator


@pytest.fixture
def client(ado: AzureDevOpsEmulator):
    return connect(ado.base_url, ado.pat, timeout=2, retries=2, backoff=0)


@pytest.fixture
def boards(client) -> AzureBoards:
    return AzureBoards(client, project="proj", area_path="proj\\ML")


@pytest.fixture
def repos(client) -> AzureRepos:
    return AzureRepos(client, project="proj", repository="model", bot_user="mlops-bot@example.com",
                      permissions={"alice@example.com": "write", "ml-leads": "admin"},
                      groups={"ml-leads": ["carol@example.com"]})


def test_adapters_satisfy_the_ports(boards, repos, client) -> None:
    assert isinstance(boards, Tracker) and isinstance(repos, SourceControl)
    assert isinstance(AzurePipelines(client, project="proj", pipeline_id=1), PipelineEngine)


# --- Boards -----------------------------------------------------------------------------------


def test_open_puts_the_ticket_in_the_current_iteration_with_tags_priority_and_marker(
        ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    ticket = boards.open("retrain:iris", "Retrain iris", "## Drift\n- feature `x`\n- **high**",
                         ("retrain", "drift:high"), marker="retrain:iris")
    fields = ado.state.work_item(ticket.id).fields
    assert fields["System.WorkItemType"] == "Task"
    assert fields["System.IterationPath"] == "proj\\Sprint 1" and fields["System.AreaPath"] == "proj\\ML"
    assert fields["System.Tags"] == "drift:high; mlops-bot; retrain"
    assert fields["Microsoft.VSTS.Common.Priority"] == 1
    assert fields["System.Description"].startswith("<h2>Drift</h2>\n<ul>\n<li>feature <code>x</code></li>")
    assert "[mlops-bot:retrain:iris]" in fields["System.Description"]  # as text: Azure drops HTML comments
    assert (ticket.key, ticket.state, set(ticket.labels)) == ("retrain:iris", "open", {"retrain", "drift:high"})
    assert ticket.url.startswith(ado.url)


def test_find_open_by_tag_marker_and_state(ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    assert boards.find_open("retrain:iris") is None
    ado.state.add_work_item("proj", "unrelated", fields={"System.Tags": "mlops-bot",
                                                         "System.Description": marker_comment("retrain:other")})
    ticket = boards.open("retrain:iris", "Retrain iris", "body", ("retrain",), marker="retrain:iris")
    assert boards.find_open("retrain:iris").id == ticket.id
    boards.close(ticket.id)
    assert ado.state.work_item(ticket.id).fields["System.State"] == "Closed"
    assert boards.find_open("retrain:iris") is None
    assert boards.get(ticket.id).state == "closed"
    writes = len(ado.log.writes())
    boards.close(ticket.id)  # idempotent: nothing written
    assert len(ado.log.writes()) == writes


def test_close_follows_the_process(ado: AzureDevOpsEmulator, client) -> None:
    basic = AzureBoards(client, project="basic", process="Basic")
    ticket = basic.open("k", "t", "b", (), marker="k")
    basic.close(ticket.id)
    assert ado.state.work_item(ticket.id).fields["System.State"] == "Done"
    with pytest.raises(PermanentError, match="fix: the request was refused"):
        AzureBoards(client, project="basic", close_state="Closed").close(basic.open("j", "t", "b", (), marker="j").id)


def test_update_comment_find_comment_and_get(ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    ticket = boards.open("k", "Old", "b", ("drift:low",), marker="k")
    assert ado.state.work_item(ticket.id).fields["Microsoft.VSTS.Common.Priority"] == 3
    updated = boards.update(ticket, title="New", labels=("drift:medium",))
    assert updated.title == "New" and ado.state.work_item(ticket.id).fields["Microsoft.VSTS.Common.Priority"] == 2
    assert boards.find_comment(ticket.id, "note-1") is None
    comment_id = boards.comment(ticket.id, "Run **3** done", marker="note-1")
    assert boards.find_comment(ticket.id, "note-1") == comment_id
    assert boards.get(ticket.id).key == "k"
    assert boards.get(99999) is None


# --- Repos ------------------------------------------------------------------------------------


def test_merged_changes_since_a_cursor(ado: AzureDevOpsEmulator, repos: AzureRepos) -> None:
    old = ado.state.open_pull("model", "Old", "")
    ado.state.complete_pull("model", old)
    changes, cursor = repos.merged_changes(None)
    assert changes == [] and cursor
    ado.clock.advance(5)
    new = ado.state.open_pull("model", "Tune", "Closes AB#12", author="bob@example.com")
    merge = ado.state.complete_pull("model", new)
    changes, cursor2 = repos.merged_changes(cursor)
    assert [(c.number, c.commit, c.author, c.branch) for c in changes] == [(new, merge, "bob@example.com", "main")]
    assert repos.merged_changes(cursor2) == ([], cursor2)


def test_comments_since_a_cursor_and_a_reply_in_the_same_thread(ado: AzureDevOpsEmulator,
                                                              repos: AzureRepos) -> None:
    number = ado.state.open_pull("model", "Tune", "")
    ado.state.add_thread_comment("model", number, "old chatter")
    ado.state.add_thread_comment("model", number, "merge attempt", comment_type="system")
    assert repos.new_comments(None)[0] == []
    _, cursor = repos.new_comments(None)
    ado.clock.advance(2)
    thread, _ = ado.state.add_thread_comment("model", number, "/retrain", author="alice@example.com")
    comments, cursor = repos.new_comments(cursor)
    assert [(c.body, c.author, c.target, c.by_bot) for c in comments] == [
        ("/retrain", "alice@example.com", Target("change", "model", number), False)]
    reply_id = repos.reply(comments[0].target, "Started run r-1", marker="reply-1")
    assert reply_id.startswith(f"{number}:{thread}:")
    assert [c.content for c in ado.state.repo("model").pulls[number].threads[thread].comments][-1].endswith(
        marker_comment("reply-1"))
    assert repos.find_reply(comments[0].target, "reply-1") == reply_id
    repos.edit_reply(comments[0].target, reply_id, "Run r-1 finished", marker="reply-1")
    assert ado.state.repo("model").pulls[number].threads[thread].comments[-1].content.startswith("Run r-1 finished")
    mine, _ = repos.new_comments(cursor)
    assert [c.by_bot for c in mine] == [True]
    new_thread = repos.reply(Target("change", "model", number), "fresh", marker="m2", in_reply_to=None)
    assert new_thread.split(":")[1] == str(thread)  # still follows the newest command


def test_set_status_is_a_commit_status_with_the_bot_genre(ado: AzureDevOpsEmulator, repos: AzureRepos) -> None:
    sha = "a" * 40
    repos.set_status("model", sha, state="pending", description="training", context="mlops-bot/pipeline",
                     url="http://127.0.0.1/run")
    statuses = ado.state.repo("model").commit_statuses[sha]
    assert [(s["state"], s["context"]) for s in statuses] == [("pending", {"name": "pipeline", "genre": "mlops-bot"})]


def test_permission_from_settings(repos: AzureRepos) -> None:
    assert repos.permission("model", "Alice@example.com") == Permission.write
    assert repos.permission("model", "carol@example.com") == Permission.admin
    assert repos.permission("model", "mallory@example.com") == Permission.read


def test_linked_tickets_from_text_and_linked_work_items(ado: AzureDevOpsEmulator, repos: AzureRepos) -> None:
    number = ado.state.open_pull("model", "Tune", "Fixes AB#12", work_items=[34])
    item = ado.state.add_work_item("proj", "linked from the work item")
    project_id, repo_id = ado.state.project("proj").id, ado.state.repo("model").id
    ado.state.work_item(item).relations.append({
        "rel": "ArtifactLink", "url": f"vstfs:///Git/PullRequestId/{project_id}%2F{repo_id}%2F{number}",
        "attributes": {"name": "Pull Request"}})
    change = Change("model", number, "Tune", "Fixes AB#12", "a", "c" * 40, datetime.now(UTC))
    assert repos.linked_tickets(change, PATTERNS) == [("azure", 12), ("azure", 34), ("azure", item)]


# --- Pipelines --------------------------------------------------------------------------------


def test_pipeline_start_is_idempotent_by_run_name(ado: AzureDevOpsEmulator, client) -> None:
    engine = AzurePipelines(client, project="proj", pipeline_id=1)
    assert engine.status("r-1") is None
    handle = engine.start("iris", run_id="r-1", trigger="comment", reason="/retrain", context={"pr": 3})
    assert (handle.run_id, handle.status) == ("r-1", "running")
    assert engine.start("iris", run_id="r-1", trigger="comment", reason="/retrain", context={"pr": 3}) == handle
    runs = ado.state.pipelines[1].runs
    assert len(runs) == 1
    run = next(iter(runs.values()))
    assert run.template_parameters["context"] == '{"pr": 3}' and run.template_parameters["promote"] == "true"
    ado.state.finish_run(1, run.id, "failed")
    assert engine.status("r-1").status == "failed"


# --- failures ---------------------------------------------------------------------------------


def test_a_throttled_write_is_transient_with_retry_after(ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    boards.find_open("warm-up")  # discovery done
    ado.faults.add("Work Items_Create", "429", retry_after=7)
    with pytest.raises(TransientError) as caught:
        boards.open("k", "t", "b", (), marker="k")
    assert caught.value.retry_after == 7 and not caught.value.outcome_unknown
    assert ado.state.work_items == {}


def test_a_503_on_a_write_is_transient_and_unknown(ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    ticket = boards.open("k", "t", "b", (), marker="k")
    ado.faults.add("Comments_Add Comment", "503", retry_after=0)
    with pytest.raises(TransientError) as caught:
        boards.comment(ticket.id, "hello", marker="c1")
    assert caught.value.outcome_unknown
    assert ado.log.count("POST", path=r".*/comments") == 1  # not retried by the client


def test_a_lost_answer_on_a_write_is_unknown_and_the_marker_finds_it(ado: AzureDevOpsEmulator,
                                                                    repos: AzureRepos) -> None:
    number = ado.state.open_pull("model", "Tune", "")
    target = Target("change", "model", number)
    repos.find_reply(target, "warm-up")
    ado.faults.add("Pull Request Threads_Create", "lost_response")
    with pytest.raises(TransientError) as caught:
        repos.reply(target, "hello", marker="r1")
    assert caught.value.outcome_unknown
    assert repos.find_reply(target, "r1") is not None


def test_a_lost_pipeline_run_is_found_by_its_name(ado: AzureDevOpsEmulator, client) -> None:
    engine = AzurePipelines(client, project="proj", pipeline_id=1)
    engine.status("warm-up")
    ado.faults.add("Runs_Run Pipeline", "lost_response")
    with pytest.raises(TransientError) as caught:
        engine.start("iris", run_id="r-9", trigger="drift", reason="", context={})
    assert caught.value.outcome_unknown
    assert engine.status("r-9") is not None
    assert engine.start("iris", run_id="r-9", trigger="drift", reason="", context={}).run_id == "r-9"
    assert len(ado.state.pipelines[1].runs) == 1


def test_reads_retry_503_and_give_up_as_transient(ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    ticket = boards.open("k", "t", "b", (), marker="k")
    ado.faults.add("Work Items_Get Work Item", "503", retry_after=0, times=1)
    assert boards.get(ticket.id).id == ticket.id
    ado.faults.add("Work Items_Get Work Item", "503", retry_after=0, times=None)
    with pytest.raises(TransientError):
        boards.get(ticket.id)


def test_not_found_and_bad_credentials_are_permanent_with_a_fix(ado: AzureDevOpsEmulator, client) -> None:
    with pytest.raises(PermanentError, match="404.*fix: check the organization URL"):
        AzureRepos(client, project="proj", repository="nope").find_reply(Target("change", "nope", 1), "m")
    bad = connect(ado.base_url, "wrong-pat", timeout=2, retries=0)
    with pytest.raises(PermanentError, match="401.*renew AZURE_DEVOPS_EXT_PAT"):
        AzureBoards(bad, project="proj").get(1)


# --- service hooks and text -------------------------------------------------------------------


def _hooks() -> list[tuple[str, dict]]:
    folder = refdata_dir() / "azure-devops" / "service-hooks"
    return [(p.name, json.loads(p.read_text(encoding="utf-8-sig"))) for p in sorted(folder.glob("*.json"))]


def test_every_service_hook_example_parses() -> None:
    hooks = _hooks()
    assert len(hooks) >= 7
    kinds = {}
    for name, payload in hooks:
        event = parse_service_hook(payload)
        assert event is not None and event["kind"] in ("merged", "comment", "ticket_closed", "ignored"), name
        kinds[name] = event
    merged = kinds["git.pullrequest.updated.json"]
    assert merged["kind"] == "merged" and isinstance(merged["change"], Change)
    assert merged["change"].commit == "eef717f69257a6333f221566c1c987dc94cc0d72"
    assert merged["change"].number == 1 and merged["change"].repo == "Fabrikam"
    commented = kinds["workitem.commented.json"]
    assert commented["kind"] == "comment" and isinstance(commented["comment"], Comment)
    assert commented["comment"].target.kind == "ticket" and commented["comment"].body == "This is a great new idea"
    for name in ("git.pullrequest.created.json", "git.push.json", "build.complete.json", "workitem.created.json",
                 "workitem.updated.json"):
        assert kinds[name]["kind"] == "ignored", name


def test_a_work_item_moved_to_a_closed_state_is_ticket_closed() -> None:
    payload = dict(_hooks()[[n for n, _ in _hooks()].index("workitem.updated.json")][1])
    resource = json.loads(json.dumps(payload["resource"]))
    resource["fields"]["System.State"] = {"oldValue": "Active", "newValue": "Closed"}
    event = parse_service_hook({**payload, "resource": resource})
    assert event == {"kind": "ticket_closed", "ticket_id": resource["revision"]["id"], "state": "Closed"}
    assert parse_service_hook({"hello": "world"}) is None


def test_markdown_to_html_is_minimal_and_escapes() -> None:
    assert markdown_to_html("# T\n<b>x</b> [a](https://e.x)\n<!-- mlops-bot:k -->") == (
        '<h1>T</h1>\n<p>&lt;b&gt;x&lt;/b&gt; <a href="https://e.x">a</a></p>\n<!-- mlops-bot:k -->')


# --- AB# links: a relation and a comment, once --------------------------------------------------


GITHUB_PR = "https://github.com/acme/model/pull/7"


def _relations(ado: AzureDevOpsEmulator, number: int) -> list[tuple[str, str]]:
    return [(r["rel"], r["url"]) for r in ado.state.work_item(number).relations]


def _marked(ado: AzureDevOpsEmulator, number: int, marker: str) -> int:
    return sum(f"[mlops-bot:{marker}]" in c.text for c in ado.state.work_item(number).comments)


def test_link_adds_one_hyperlink_and_one_comment(ado: AzureDevOpsEmulator, boards: AzureBoards) -> None:
    item = ado.state.add_work_item("proj", "Improve recall")
    assert boards.link(item, GITHUB_PR, "Linked to acme/model!7", marker="ab-link:7:1", title="Tune") == "linked"
    assert _relations(ado, item) == [("Hyperlink", GITHUB_PR)]
    assert ado.state.work_item(item).relations[0]["attributes"]["comment"] == "Tune"
    assert _marked(ado, item, "ab-link:7:1") == 1
    writes = len(ado.log.writes())
    assert boards.link(item, GITHUB_PR, "Linked to acme/model!7", marker="ab-link:7:1") == "already"
    assert len(ado.log.writes()) == writes  # looked, wrote nothing
    assert boards.link(99999, GITHUB_PR, "x", marker="ab-link:7:99999") == "missing"
    assert len(ado.log.writes()) == writes


@pytest.mark.parametrize("fault", ["lost_response", "503", "429", "500"])
def test_link_is_made_exactly_once_under_write_faults(ado: AzureDevOpsEmulator, boards: AzureBoards,
                                                      fault: str) -> None:
    item = ado.state.add_work_item("proj", "Improve recall")
    boards.get(item)  # discovery done
    ado.faults.add("Work Items_Update", fault, retry_after=0, times=1)
    with pytest.raises(TransientError):
        boards.link(item, GITHUB_PR, "Linked", marker="ab-link:7:1")
    # the outbox repeats the effect: the link is looked for first, so it is never doubled
    assert boards.link(item, GITHUB_PR, "Linked", marker="ab-link:7:1") in {"linked", "already"}
    assert boards.link(item, GITHUB_PR, "Linked", marker="ab-link:7:1") == "already"
    assert _relations(ado, item) == [("Hyperlink", GITHUB_PR)]
    assert _marked(ado, item, "ab-link:7:1") == 1


def test_the_emulator_refuses_a_duplicate_relation_as_the_service_does(ado: AzureDevOpsEmulator, client) -> None:
    from azure.devops.exceptions import AzureDevOpsServiceError
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    item = ado.state.add_work_item("proj", "Improve recall")
    wit = client.client("wit")
    add = [JsonPatchOperation(op="add", path="/relations/-", value={"rel": "Hyperlink", "url": GITHUB_PR})]
    wit.update_work_item(add, item, project="proj")
    with pytest.raises(AzureDevOpsServiceError, match="already exists"):
        wit.update_work_item(add, item, project="proj")
    assert wit.get_work_item(item, project="proj").relations is None  # only with $expand
    assert len(wit.get_work_item(item, project="proj", expand="Relations").relations) == 1


def test_link_from_azure_repos_is_a_pull_request_artifact(ado: AzureDevOpsEmulator, boards: AzureBoards,
                                                          repos: AzureRepos) -> None:
    number = ado.state.open_pull("model", "Tune", "AB#0")
    item = ado.state.add_work_item("proj", "Improve recall")
    url = repos.link_url(Target("change", "model", number))
    project_id, repo_id = ado.state.project("proj").id, ado.state.repo("model").id
    assert url == f"vstfs:///Git/PullRequestId/{project_id}%2F{repo_id}%2F{number}"
    assert boards.link(item, url, "Linked", marker="ab-link:model:1") == "linked"
    relation = ado.state.work_item(item).relations[0]
    assert (relation["rel"], relation["attributes"]["name"]) == ("ArtifactLink", "Pull Request")
    change = Change("model", number, "Tune", "", "a", "c" * 40, datetime.now(UTC))
    assert ("azure", item) in repos.linked_tickets(change, PATTERNS)  # Azure Repos sees the link too
    assert repos.link_url(Target("change", "model", number + 1)).endswith(f"%2F{number + 1}")
    assert ado.log.count("GET", path=r".*/_apis/git/repositories/model") == 1  # the ids are read once


# --- markers in rich text ---------------------------------------------------------------------


def test_azure_sanitizes_html_and_the_bots_marker_survives(ado: AzureDevOpsEmulator, boards: AzureBoards,
                                                          client) -> None:
    from azure.devops.v7_1.work_item_tracking.models import CommentCreate

    item = ado.state.add_work_item("proj", "x")
    raw = client.client("wit").add_comment(
        CommentCreate(text='<p data-k="1" onclick="x()">hi</p><!-- mlops-bot:hidden --><script>x</script>'),
        "proj", item)
    assert raw.text == "<p>hi</p>"  # comments, scripts, data- and event attributes: gone
    ticket = boards.open("retrain:iris", "Retrain iris", "body with <b>html</b>", ("retrain",), marker="retrain:iris")
    stored = ado.state.work_item(ticket.id).fields["System.Description"]
    assert "<!--" not in stored and "[mlops-bot:retrain:iris]" in stored
    # what the API returns is enough to find both again, and to read the key back
    assert boards.find_open("retrain:iris").id == ticket.id and boards.get(ticket.id).key == "retrain:iris"
    assert boards.find_open("retrain:iri") is None  # a prefix is not a match
    boards.comment(ticket.id, "note & <more>", marker="note:a&b")
    assert boards.find_comment(ticket.id, "note:a&b") is not None
    assert boards.find_comment(ticket.id, "note:a") is None
    hook = {"eventType": "workitem.commented", "resource": {"id": ticket.id, "rev": 3, "fields": {
        "System.History": ado.state.work_item(ticket.id).comments[-1].text, "System.TeamProject": "proj"}}}
    assert parse_service_hook(hook)["comment"].by_bot


# --- Repos: likes and changed paths -----------------------------------------------------------


def test_react_likes_the_command_comment_once(ado: AzureDevOpsEmulator, repos: AzureRepos) -> None:
    number = ado.state.open_pull("model", "Tune", "")
    thread, comment_id = ado.state.add_thread_comment("model", number, "/retrain", author="alice@example.com")
    comment = Comment(f"{number}:{thread}:{comment_id}", Target("change", "model", number), "alice@example.com",
                      "/retrain", datetime.now(UTC))
    repos.react(comment, "eyes")
    repos.react(comment, "eyes")  # a repeat after an unknown outcome changes nothing
    repos.react(comment, "-1")  # no counterpart: nothing sent
    assert ado.state.repo("model").pulls[number].threads[thread].comments[0].likes == ["mlops-bot@example.com"]
    assert ado.log.count("POST", path=r".*/likes") == 2
    likes = repos.client.call("git", "get_likes", "model", number, thread, comment_id, project="proj")
    assert [who.unique_name for who in likes] == ["mlops-bot@example.com"]
    threads = repos.client.call("git", "get_threads", "model", number, project="proj")
    assert [u.unique_name for u in threads[0].comments[0].users_liked] == ["mlops-bot@example.com"]


def test_a_service_hook_comment_has_the_id_polling_gives_it() -> None:
    base = "https://dev.azure.com/fabrikam/_apis/git/repositories/4bc1/pullRequests/1/threads/5"
    payload = {"eventType": "ms.vss-code.git-pullrequest-comment-event", "resource": {
        "comment": {"id": 2, "content": "/retrain", "publishedDate": "2024-01-01T00:00:00Z",
                    "author": {"uniqueName": "alice@example.com"}, "commentType": "text",
                    "_links": {"self": {"href": base + "/comments/2"}, "threads": {"href": base}}},
        "pullRequest": {"pullRequestId": 1, "repository": {"name": "model"}}}}
    assert parse_service_hook(payload)["comment"].id == "1:5:2"


def test_change_paths_cover_every_iteration_renames_and_pages(ado: AzureDevOpsEmulator, repos: AzureRepos) -> None:
    number = ado.state.open_pull("model", "Tune", "", files={"models/tiny/train.py": "edit", "README.md": "add"})
    ado.state.push("model", number, {"models/tiny/mlops.toml": "rename"})
    assert repos.change_paths("model", number) == ["models/tiny/train.py", "README.md", "models/tiny/mlops.toml"]
    many = ado.state.open_pull("model", "Big", "", files=[f"data/part-{n:04}.csv" for n in range(2050)])
    paths = repos.change_paths("model", many)
    assert len(paths) == 2050 and paths[-1] == "data/part-2049.csv"
    assert ado.log.count("GET", path=rf".*/pullRequests/{many}/iterations/1/changes") == 2  # 2000 a page
    assert repos.change_paths("model", ado.state.open_pull("model", "Empty", "")) == []


# --- doctor -----------------------------------------------------------------------------------


def _problems(checks) -> dict[str, tuple[str, str]]:
    return {name: (problem, fix) for name, problem, fix in checks if problem}


def test_diagnose_passes_on_a_healthy_project(ado: AzureDevOpsEmulator, client) -> None:
    from integrations.azure_devops import diagnose

    ado.state.add_area("proj", "ML")
    checks = diagnose(AzureBoards(client, project="proj", area_path="proj\\ML"),
                      AzureRepos(client, project="proj", repository="model"),
                      AzurePipelines(client, project="proj", pipeline_id=1))
    assert _problems(checks) == {}
    names = [name for name, _p, _f in checks]
    assert names[0] == "Azure DevOps token (authenticates as mlops-bot)"
    assert "team proj Team, current iteration proj\\Sprint 1" in names and "pipeline train (1)" in names
    assert ado.state.work_items == {}  # the write check saved nothing


def test_diagnose_names_each_problem_and_its_fix(ado: AzureDevOpsEmulator, client) -> None:
    from integrations.azure_devops import diagnose

    problems = _problems(diagnose(AzureBoards(client, project="nope")))
    assert "TF200016" in problems["project nope, work item type Task"][0]
    assert "AZURE_DEVOPS_PROJECT" in problems["project nope, work item type Task"][1]
    problems = _problems(diagnose(AzureBoards(client, project="basic", work_item_type="User Story", process="Basic")))
    assert problems["project basic, work item type User Story"][1] == \
        "set MLOPS_AZURE_WORK_ITEM_TYPE to one of: Epic, Issue, Task"
    ado.state.add_area("proj", "ML")  # the project's areas are known: others are refused
    problems = _problems(diagnose(AzureBoards(client, project="proj", team="Nobody", area_path="proj\\Missing"),
                                  AzureRepos(client, project="proj", repository="gone"),
                                  AzurePipelines(client, project="proj", pipeline_id=42)))
    assert "MLOPS_AZURE_TEAM" in problems["team Nobody"][1]
    assert "MLOPS_AZURE_AREA_PATH" in problems["area path proj\\Missing"][1]
    assert "MLOPS_AZURE_AREA_PATH" in problems["creating work items (checked, not saved)"][1]
    assert "MLOPS_AZURE_REPOSITORY" in problems["repository gone"][1]
    assert "MLOPS_AZURE_PIPELINE_ID" in problems["pipeline 42"][1]
    ado.state.add_iteration("proj", "Sprint 2", team="Data")  # a team with no current iteration
    ado.state.project("proj").teams["Data"][0]["timeFrame"] = "future"
    assert "no current iteration" in _problems(diagnose(AzureBoards(client, project="proj", team="Data")))["team Data"][0]
    problems = _problems(diagnose(AzureBoards(client, project="proj", process="Basic")))
    assert "MLOPS_AZURE_PROCESS" in problems["project proj, work item type Task"][1]


def test_diagnose_names_the_missing_pat_scope(ado: AzureDevOpsEmulator) -> None:
    from integrations.azure_devops import diagnose

    ado.add_pat("read-work-only", "reader@example.com", scopes=["vso.work"])
    reader = connect(ado.base_url, "read-work-only", timeout=2, retries=0)
    problems = _problems(diagnose(AzureBoards(reader, project="proj"), AzureRepos(reader, project="proj",
                                  repository="model"), AzurePipelines(reader, project="proj", pipeline_id=1)))
    assert set(problems) == {"creating work items (checked, not saved)", "repository model", "pipeline 1"}
    assert "Work Items: Read & write" in problems["creating work items (checked, not saved)"][1]
    assert "Code: Read & status" in problems["repository model"][1]
    assert "Build: Read & execute" in problems["pipeline 1"][1]
    bad = connect(ado.base_url, "wrong", timeout=2, retries=0)
    checks = diagnose(AzureBoards(bad, project="proj"))
    assert len(checks) == 1 and checks[0][0] == "Azure DevOps token" and "AZURE_DEVOPS_EXT_PAT" in checks[0][2]
