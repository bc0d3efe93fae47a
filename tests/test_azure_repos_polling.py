"""Azure Repos pull-request polling as the service orders it: the emulator's lists checked against
Microsoft's 7.1 spec and examples (newest created first, 101 unless ``$top`` says, ``$skip``
paging, descriptions cut to 400 symbols, the closed-date time range), and the merged-changes poll
of ``AzureRepos`` (the real azure-devops client) and of the whole bot reading every merge exactly
once: more completed pull requests than a page, completed out of creation order, two in the same
second, one dated before a merge already read, ``AB#`` past the 400th symbol."""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from collections import Counter
from datetime import timedelta

if "azure.devops" not in sys.modules:  # read by azure-devops at import: keep its cache out of ~
    os.environ["AZURE_DEVOPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="ado-cache-")

import pytest

from integrations.azure_devops import AzureRepos, connect
from tests.conftest import settle
from tests.emulators.azure_devops import DEFAULT_PULLS_TOP, LISTED_DESCRIPTION_LIMIT, AzureDevOpsEmulator
from tests.emulators.fixtures import azure_devops_emulator, no_proxy_for_loopback, refdata_dir  # noqa: F401

pytest.importorskip("azure.devops", reason="azure-devops==7.1.0b4 is not installed")

LIST = "Pull Requests_Get Pull Requests"
GET = "Pull Requests_Get Pull Request"
PATTERNS = (r"AB#(\d+)",)


@pytest.fixture
def ado(azure_devops_emulator: AzureDevOpsEmulator) -> AzureDevOpsEmulator:  # noqa: F811
    azure_devops_emulator.state.add_project("proj")
    azure_devops_emulator.state.add_repo("proj", "model")
    return azure_devops_emulator


@pytest.fixture
def repos(ado: AzureDevOpsEmulator) -> AzureRepos:
    return AzureRepos(connect(ado.base_url, ado.pat, timeout=2, retries=0, backoff=0), project="proj",
                      repository="model")


def _list(ado: AzureDevOpsEmulator, **params) -> tuple[int, dict]:
    import requests

    answer = requests.get(ado.api("proj/_apis/git/repositories/model/pullrequests"), auth=("", ado.pat),
                          params={"api-version": "7.1", **params}, timeout=5)
    return answer.status_code, answer.json()


def _ids(body: dict) -> list[int]:
    return [p["pullRequestId"] for p in body["value"]]


# --- the emulator against the spec ------------------------------------------------------------


def test_the_spec_and_examples_say_what_the_emulator_does() -> None:
    root = refdata_dir() / "azure-devops"
    spec = json.loads((root / "specs" / "git.json").read_text(encoding="utf-8-sig"))
    operation = spec["paths"]["/{organization}/{project}/_apis/git/repositories/{repositoryId}/pullrequests"]["get"]
    assert f"truncated up to {LISTED_DESCRIPTION_LIMIT} symbols in the result" in operation["description"]
    parameters = {p.get("name") for p in operation["parameters"]}
    assert {"$skip", "$top", "searchCriteria.status", "searchCriteria.targetRefName", "searchCriteria.minTime",
            "searchCriteria.maxTime", "searchCriteria.queryTimeRangeType"} <= parameters
    examples = root / "examples" / "git" / "7.1" / "httpExamples" / "pullRequests"
    listed = json.loads((examples / "GET__git_repositories__repositoryId__pullRequests.json")
                        .read_text(encoding="utf-8-sig"))["responses"]["200"]["body"]["value"]
    ids, created = [p["pullRequestId"] for p in listed], [p["creationDate"] for p in listed]
    assert len(ids) > 2 and ids == sorted(ids, reverse=True) and created == sorted(created, reverse=True)


def test_lists_are_newest_created_first_101_by_default_paged_and_cut_to_400_symbols(ado) -> None:
    from azure.devops.v7_1.git.models import GitPullRequestSearchCriteria

    state, start = ado.state, ado.clock.now()
    numbers = [state.open_pull("model", f"PR {n}", f"Change {n}. " + "x" * 500 + f" AB#{n}") for n in range(110)]
    for k, number in enumerate(reversed(numbers)):  # the newest created closes first
        state.complete_pull("model", number, closed_at=start + timedelta(seconds=k))
    git = connect(ado.base_url, ado.pat, retries=0).client("git")
    completed = GitPullRequestSearchCriteria(status="completed")
    first = git.get_pull_requests("model", completed, project="proj")
    assert len(first) == DEFAULT_PULLS_TOP == 101
    assert [p.pull_request_id for p in first] == sorted(numbers, reverse=True)[:101]
    pages = [git.get_pull_requests("model", completed, project="proj", skip=skip, top=40) for skip in (0, 40, 80, 120)]
    assert [len(page) for page in pages] == [40, 40, 30, 0]
    assert [p.pull_request_id for page in pages for p in page] == sorted(numbers, reverse=True)
    assert {len(p.description) for page in pages for p in page} == {400}
    whole = git.get_pull_request("model", numbers[0], project="proj").description
    assert len(whole) > 400 and whole.endswith(" AB#0")
    assert git.get_pull_requests("model", GitPullRequestSearchCriteria(), project="proj") == []  # active by default


def test_descriptions_are_cut_in_utf16_symbols_never_inside_a_pair(ado) -> None:
    state = ado.state
    accents = state.open_pull("model", "accents", "é" * 450)
    split = state.open_pull("model", "emoji on the cut", "a" * 399 + "😀" + "tail")
    whole = state.open_pull("model", "emoji before the cut", "😀" * 200 + "b")
    status, body = _list(ado)
    descriptions = {p["pullRequestId"]: p["description"] for p in body["value"]}
    assert status == 200
    assert descriptions[accents] == "é" * 400
    assert descriptions[split] == "a" * 399  # 400 units would end inside the pair: it is left out whole
    assert descriptions[whole] == "😀" * 200  # 400 units, 200 characters


def test_a_time_range_on_closed_dates_is_strict_and_keeps_the_order(ado) -> None:
    state, t0 = ado.state, ado.clock.now()
    old = state.open_pull("model", "old")
    ado.clock.advance(10)
    new = state.open_pull("model", "new")
    state.open_pull("model", "active")
    state.complete_pull("model", new, closed_at=t0 + timedelta(seconds=20))
    state.complete_pull("model", old, closed_at=t0 + timedelta(seconds=30))

    def closed_after(seconds: float, **extra) -> list[int]:
        status, body = _list(ado, **{"searchCriteria.status": "completed", "searchCriteria.queryTimeRangeType": "closed",
                                     "searchCriteria.minTime": (t0 + timedelta(seconds=seconds)).isoformat(), **extra})
        assert status == 200, body
        return _ids(body)

    assert closed_after(19) == [new, old]  # newest created first, though the old one closed last
    assert closed_after(20) == [old]  # strictly after
    assert closed_after(30) == []
    assert closed_after(0, **{"searchCriteria.maxTime": (t0 + timedelta(seconds=30)).isoformat()}) == [new]
    created = _list(ado, **{"searchCriteria.status": "all", "searchCriteria.minTime": (t0 + timedelta(seconds=5))
                            .strftime("%Y-%m-%dT%H:%M:%S.0000000Z")})[1]  # created, unless it says closed
    assert _ids(created) == [new + 1, new]
    assert _list(ado, **{"searchCriteria.queryTimeRangeType": "merged"})[0] == 400
    assert _list(ado, **{"searchCriteria.minTime": "yesterday"})[0] == 400
    assert _list(ado, **{"$top": "-1"})[0] == 400


# --- the adapter's poll -----------------------------------------------------------------------


def _complete(ado, numbers, start, per_second: int = 3) -> None:
    """Completes ``numbers`` in the order given, ``per_second`` to a second from ``start``."""
    for k, number in enumerate(numbers):
        ado.state.complete_pull("model", number, closed_at=start + timedelta(seconds=k // per_second))


def test_more_merges_than_a_page_out_of_order_are_each_read_once(ado, repos) -> None:
    state = ado.state
    history = state.open_pull("model", "before the bot")
    state.complete_pull("model", history)
    _, cursor = repos.merged_changes(None)
    opened = [state.open_pull("model", f"PR {n}", files=["docs/x.md"]) for n in range(150)]
    shuffled = opened[:]
    random.Random(15).shuffle(shuffled)
    first, rest = shuffled[:120], shuffled[120:]
    start = ado.clock.advance(60)
    _complete(ado, first, start)  # three to a second, in no order of creation
    ado.log.clear()
    changes, cursor = repos.merged_changes(cursor)
    assert ado.log.count(route=LIST) == 2  # more than a page (100) closed since the cursor
    assert sorted(c.number for c in changes) == sorted(first)
    assert [c.number for c in changes] == [c.number for c in sorted(changes, key=lambda c: (c.merged_at, c.number))]
    seen = [c.number for c in changes]

    # the rest: two in the second of the newest merge already read, one dated a minute before it
    # (visible only now), the others later; all of them older than most merges already read
    newest = max(c.merged_at for c in changes)
    state.complete_pull("model", rest[0], closed_at=newest)
    state.complete_pull("model", rest[1], closed_at=newest)
    state.complete_pull("model", rest[2], closed_at=newest - timedelta(minutes=1))
    _complete(ado, rest[3:], newest + timedelta(seconds=1), per_second=2)
    changes, cursor = repos.merged_changes(cursor)
    assert sorted(c.number for c in changes) == sorted(rest)
    assert changes[0].number == rest[2]  # the oldest merge first
    seen += [c.number for c in changes]

    # idle polls read nothing again; the cursor stays put
    assert repos.merged_changes(cursor) == ([], cursor)
    assert repos.merged_changes(cursor) == ([], cursor)
    assert Counter(seen) == Counter(opened) and history not in seen


def test_the_first_look_starts_from_the_newest_merge_of_all(ado, repos) -> None:
    """An old pull request merged last sits beyond the first page: the first look still starts
    after it, so it is never news."""
    state = ado.state
    opened = [state.open_pull("model", f"PR {n}") for n in range(120)]
    start = ado.clock.now()
    _complete(ado, opened[1:] + opened[:1], start)  # the oldest created is merged last
    changes, cursor = repos.merged_changes(None)
    assert changes == []
    assert repos.merged_changes(cursor) == ([], cursor)
    late = state.open_pull("model", "after the first look")
    state.complete_pull("model", late, closed_at=start + timedelta(minutes=2))
    assert [c.number for c in repos.merged_changes(cursor)[0]] == [late]


def test_ab_past_the_400th_symbol_is_read_from_the_whole_description(ado, repos) -> None:
    state = ado.state
    _, cursor = repos.merged_changes(None)
    notes = "Tuning notes. " + "More detail about the change. " * 20 + "Fixes AB#123"
    long = state.open_pull("model", "Tune", notes)
    short = state.open_pull("model", "Docs", "See AB#7")
    state.complete_pull("model", long)
    state.complete_pull("model", short)
    ado.log.clear()
    changes, _ = repos.merged_changes(cursor)
    assert {c.number: c.body for c in changes} == {long: notes, short: "See AB#7"}
    assert ado.log.count(route=GET) == 1  # only the cut description is read whole
    assert ("azure", 123) in repos.linked_tickets(next(c for c in changes if c.number == long), PATTERNS)


def test_a_merge_listed_before_its_merge_commit_is_read_once_it_has_one(ado, repos) -> None:
    _, cursor = repos.merged_changes(None)
    number = ado.state.open_pull("model", "Tune")
    merge = ado.state.complete_pull("model", number)
    pull = ado.state.repo("model").pulls[number]
    with ado.lock:
        pull.merge_commit = None
    changes, cursor = repos.merged_changes(cursor)
    assert changes == []
    with ado.lock:
        pull.merge_commit = merge
    changes, cursor = repos.merged_changes(cursor)
    assert [(c.number, c.commit) for c in changes] == [(number, merge)]
    assert repos.merged_changes(cursor) == ([], cursor)


def test_an_idle_poll_is_one_request(ado, repos) -> None:
    _, cursor = repos.merged_changes(None)  # nothing merged yet, and discovery done
    ado.log.clear()
    assert repos.merged_changes(cursor) == ([], cursor)
    assert [e.route for e in ado.log] == [LIST]
    number = ado.state.open_pull("model", "Tune")
    ado.state.complete_pull("model", number)
    changes, cursor = repos.merged_changes(cursor)
    assert [c.number for c in changes] == [number]
    ado.log.clear()
    assert repos.merged_changes(cursor) == ([], cursor)
    (request,) = ado.log.entries
    assert request.route == LIST
    assert request.query["searchCriteria.queryTimeRangeType"] == "closed"
    assert request.query["searchCriteria.status"] == "completed"
    assert request.query["searchCriteria.targetRefName"] == "refs/heads/main"
    assert "searchCriteria.minTime" in request.query and request.query["$top"] == "100"


# --- the bot ----------------------------------------------------------------------------------


def test_the_bot_reads_every_merge_once_and_links_ab_past_400_symbols(ado, make_app) -> None:
    state = ado.state
    app = make_app(azure_devops_org_url=ado.base_url, azure_devops_pat=ado.pat, azure_devops_project="proj",
                   azure_repository="model", project_paths=["models/tiny"])
    app.run_once()  # the first look: merges from now on are news
    item, far = state.add_work_item("proj", "Improve recall"), state.add_work_item("proj", "Calibrate")
    bodies = {n: "" for n in range(104)}
    bodies.update({3: f"See AB#{item}", 50: f"Part of AB#{item}", 99: f"AB#{item}",
                   70: "Why: " + "the calibration drifts in spring. " * 15 + f"See AB#{far}"})
    opened = {state.open_pull("model", f"Docs {n}", body, files=["docs/index.md"]): n for n, body in bodies.items()}
    order = list(opened)
    random.Random(3).shuffle(order)
    _complete(ado, order, ado.clock.advance(60))
    settle(app)

    def links(number: int) -> list[str]:
        return sorted(r["url"].rsplit("%2F", 1)[-1] for r in state.work_item(number).relations
                      if r["rel"] == "ArtifactLink")

    by_body = {n: pr for pr, n in opened.items()}
    assert links(item) == sorted(str(by_body[n]) for n in (3, 50, 99))
    assert links(far) == [str(by_body[70])]
    merges = [f"azure:merged:model:{pull.merge_commit}" for pull in state.repo("model").pulls.values()]
    assert len(merges) == 104 and app.store.seen_among(merges) == set(merges)

    # two more in the second of the newest merge, after the bot read it; read once, linked once
    newest = max(pull.closed for pull in state.repo("model").pulls.values())
    again = [state.open_pull("model", f"Late {n}", f"AB#{far}", files=["docs/index.md"]) for n in range(2)]
    for number in again:
        state.complete_pull("model", number, closed_at=newest)
    settle(app)
    settle(app)
    assert links(far) == sorted(str(n) for n in [by_body[70], *again])
    assert links(item) == sorted(str(by_body[n]) for n in (3, 50, 99))


def test_comments_on_active_pull_requests_beyond_the_first_page_are_read(ado, repos) -> None:
    """A busy repository has more active pull requests than a page: a command typed on the oldest
    one (the last of the newest-first list) is still read, once."""
    state = ado.state
    opened = [state.open_pull("model", f"PR {n}") for n in range(130)]
    _, cursor = repos.new_comments(None)
    ado.clock.advance(60)
    state.add_thread_comment("model", opened[0], "/status")
    state.add_thread_comment("model", opened[-1], "/drift")
    comments, cursor = repos.new_comments(cursor)
    assert sorted((c.target.number, c.body) for c in comments) == sorted(
        [(opened[0], "/status"), (opened[-1], "/drift")])
    assert repos.new_comments(cursor) == ([], cursor)
