"""The GitHub emulator, driven by the real PyGithub client.

Every route the bot uses is called the way the bot will call it; faults, rate limits,
conditional requests and pagination are observed through PyGithub's own exceptions and
objects; and every route's answer is checked against GitHub's REST description in
../shared/refdata (those checks skip when that folder is absent).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from github import Auth, BadCredentialsException, Github, GithubException, RateLimitExceededException
from github import UnknownObjectException

from tests.emulators import GitHubEmulator
from tests.emulators.fixtures import (  # noqa: F401 - also in conftest; kept for running this file alone
    github_emulator,
    no_proxy_for_loopback,
    refdata_dir,
)

pytestmark = pytest.mark.usefixtures("no_proxy_for_loopback")

REPO = "acme/model"
ROOT = Path(__file__).resolve().parents[1]


def client(emulator: GitHubEmulator, token: str | None = None, **options: Any) -> Github:
    """PyGithub as the bot builds it, minus the sleeps between requests."""
    auth = options.pop("auth", None) or Auth.Token(token or emulator.token)
    return Github(
        base_url=emulator.base_url,
        auth=auth,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
        **options,
    )


@pytest.fixture
def world(github_emulator: GitHubEmulator) -> SimpleNamespace:  # noqa: F811 - the imported fixture
    """acme/model with collaborators, an issue with a comment, an open and a merged pull request."""
    s = github_emulator.state
    s.add_repo(REPO, description="A model")
    for login, role in [("alice", "admin"), ("maya", "maintain"), ("bob", "write"), ("tim", "triage"),
                        ("rita", "read")]:
        s.add_collaborator(REPO, login, role)
    s.add_collaborator(REPO, github_emulator.login, "write")
    s.add_label(REPO, "drift", color="d93f0b", description="Data drift")
    issue = s.open_issue(REPO, "Drift on mean_radius", "PSI 0.31", "alice", labels=["drift"])
    comment = s.add_comment(REPO, issue, "bob", "/retrain")
    pull = s.open_pull(REPO, "Add a feature", "Adds mean_area", "bob", files=["features.py", "mlops.toml"])
    merged = s.open_pull(REPO, "Tune the forest", "", "alice", files=[{"filename": "train.py", "additions": 5}])
    merge_sha = s.merge_pull(REPO, merged, by="alice")
    workflow = s.add_workflow(REPO, "train.yml", name="Train")
    return SimpleNamespace(
        emulator=github_emulator, gh=client(github_emulator), issue=issue, comment=comment, pull=pull,
        merged=merged, merge_sha=merge_sha, workflow=workflow,
    )


@pytest.fixture(scope="module")
def app_key() -> SimpleNamespace:
    """An RSA key pair for the GitHub App's JWTs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return SimpleNamespace(private=private, public=public)


def app_client(emulator: GitHubEmulator, app_key: SimpleNamespace) -> Github:
    emulator.add_app(1, slug="mlops-bot", public_key=app_key.public)
    return client(emulator, auth=Auth.AppAuth(1, app_key.private).get_installation_auth(1))


# ---------------------------------------------------------------------------
# The routes the bot uses, through PyGithub


def test_repository_user_and_scopes(world: SimpleNamespace) -> None:
    repo = world.gh.get_repo(REPO)
    assert (repo.full_name, repo.default_branch, repo.permissions.push) == (REPO, "main", True)
    assert repo.url == f"{world.emulator.base_url}/repos/{REPO}"
    assert world.gh.get_user().login == "mlops-bot[bot]"
    assert world.gh.oauth_scopes == ["repo", "workflow"]


def test_unknown_token_is_refused_and_bearer_is_accepted(world: SimpleNamespace) -> None:
    with pytest.raises(BadCredentialsException) as refused:
        client(world.emulator, "nope").get_repo(REPO)
    assert refused.value.status == 401
    assert refused.value.data["message"] == "Bad credentials"
    with requests.Session() as session:
        answer = session.get(f"{world.emulator.base_url}/repos/{REPO}",
                             headers={"Authorization": f"Bearer {world.emulator.token}"})
        assert answer.status_code == 200
        anonymous = session.post(f"{world.emulator.base_url}/repos/{REPO}/issues", json={"title": "x"})
        assert anonymous.status_code == 401


def test_issues_include_pull_requests_and_filter_by_state_labels_and_since(world: SimpleNamespace) -> None:
    repo, s, clock = world.gh.get_repo(REPO), world.emulator.state, world.emulator.clock
    open_numbers = [i.number for i in repo.get_issues()]
    assert open_numbers == [world.pull, world.issue]  # open only, newest first; a PR is an issue too
    assert repo.get_issue(world.pull).pull_request is not None
    assert repo.get_issue(world.issue).pull_request is None
    assert [i.number for i in repo.get_issues(state="all", labels=["drift"])] == [world.issue]

    since = clock.advance(60)
    s.add_comment(REPO, world.issue, "alice", "any news?")  # a comment updates its issue
    late = s.open_issue(REPO, "Latency", "", "rita")
    found = repo.get_issues(state="all", since=since, sort="updated", direction="asc")
    assert [i.number for i in found] == [world.issue, late]


def test_repository_comments_since(world: SimpleNamespace) -> None:
    repo, s, clock = world.gh.get_repo(REPO), world.emulator.state, world.emulator.clock
    since = clock.advance(60)
    on_pull = s.add_comment(REPO, world.pull, "alice", "/validate")
    clock.advance(1)
    on_issue = s.add_comment(REPO, world.issue, "bob", "/help")
    assert [c.id for c in repo.get_issues_comments(since=since)] == [on_pull, on_issue]
    assert [c.id for c in repo.get_issues_comments(sort="updated", direction="desc", since=since)] == [
        on_issue, on_pull]
    assert [c.id for c in repo.get_issue(world.issue).get_comments(since=since)] == [on_issue]
    assert len(list(repo.get_issues_comments())) == 3

    since = clock.advance(60)
    s.edit_comment(world.comment, "/retrain --model v3")  # ``since`` is about updates, not creation
    assert [c.body for c in repo.get_issues_comments(since=since)] == ["/retrain --model v3"]


def test_comment_edit_and_reactions(world: SimpleNamespace) -> None:
    issue = world.gh.get_repo(REPO).get_issue(world.issue)
    comment = issue.create_comment("Model v3 trained")
    assert comment.user.login == "mlops-bot[bot]"
    assert comment.html_url.startswith(world.emulator.url + f"/{REPO}/issues/{world.issue}#issuecomment-")
    comment.edit("Model v3 trained: accuracy 0.97")
    assert world.emulator.state.comment(comment.id).body == "Model v3 trained: accuracy 0.97"

    first = comment.create_reaction("rocket")
    again = comment.create_reaction("rocket")  # 200: it existed already
    assert first.id == again.id
    assert [(r.user, r.content) for r in world.emulator.state.reactions(comment.id)] == [
        ("mlops-bot[bot]", "rocket")]
    assert world.emulator.log.filter("POST", r".*/reactions")[-2].status == 201
    assert world.emulator.log.filter("POST", r".*/reactions")[-1].status == 200
    theirs = world.gh.get_repo(REPO).get_issue(world.issue).get_comment(world.comment)
    theirs.create_reaction("eyes")
    assert [r.content for r in theirs.get_reactions()] == ["eyes"]


def test_closed_pulls_by_update_with_merge_and_files(world: SimpleNamespace) -> None:
    s, clock = world.emulator.state, world.emulator.clock
    clock.advance(60)
    rejected = s.open_pull(REPO, "Drop a feature", "", "rita", from_fork=True, files=["features.py"])
    s.close_pull(REPO, rejected)
    pulls = list(world.gh.get_repo(REPO).get_pulls(state="closed", sort="updated", direction="desc"))
    assert [p.number for p in pulls] == [rejected, world.merged]
    assert (pulls[0].merged, pulls[0].merge_commit_sha, pulls[0].head.repo.fork) == (False, None, True)
    assert pulls[0].head.repo.full_name == "rita/model"

    merged = world.gh.get_repo(REPO).get_pull(world.merged)
    assert merged.merged and merged.merge_commit_sha == world.merge_sha
    assert merged.merged_by.login == "alice" and merged.merged_at is not None and merged.state == "closed"
    assert [(f.filename, f.additions) for f in merged.get_files()] == [("train.py", 5)]
    assert [c.commit.message for c in merged.get_commits()] == ["Tune the forest"]  # one commit, the title's
    s.push_to_pull(REPO, world.pull, message="Fix AB#3")
    assert [(c.sha, c.commit.message) for c in world.gh.get_repo(REPO).get_pull(world.pull).get_commits()] == [
        (sha, s.repo(REPO).commits[sha]) for sha in s.issue(REPO, world.pull).pull.commits]
    assert world.gh.get_repo(REPO).get_pull(world.pull).commits == 2
    assert [p.number for p in world.gh.get_repo(REPO).get_pulls()] == [world.pull]


def test_commit_statuses(world: SimpleNamespace) -> None:
    repo = world.gh.get_repo(REPO)
    head = repo.get_pull(world.pull).head.sha
    commit = repo.get_commit(head)
    commit.create_status("pending", target_url="http://ci.local/1", description="validating",
                         context="mlops/validate")
    commit.create_status("success", description="accuracy 0.97", context="mlops/validate")
    assert [s.state for s in world.emulator.state.statuses(REPO, head)] == ["pending", "success"]
    assert [s.state for s in commit.get_statuses()] == ["success", "pending"]  # newest first
    with pytest.raises(GithubException) as unknown:
        repo.get_commit("0" * 40)
    assert unknown.value.status == 422


@pytest.mark.parametrize(
    ("login", "permission"),
    [("alice", "admin"), ("maya", "write"), ("bob", "write"), ("tim", "read"), ("rita", "read"),
     ("acme", "admin")],
)
def test_collaborator_permission(world: SimpleNamespace, login: str, permission: str) -> None:
    assert world.gh.get_repo(REPO).get_collaborator_permission(login) == permission


def test_collaborator_permission_of_strangers(world: SimpleNamespace) -> None:
    world.emulator.state.add_user("stranger")
    repo = world.gh.get_repo(REPO)
    assert repo.get_collaborator_permission("stranger") == "read"  # a public repository
    with pytest.raises(UnknownObjectException):
        repo.get_collaborator_permission("nobody-at-all")


def test_create_issue_with_labels_then_edit_and_close(world: SimpleNamespace) -> None:
    repo = world.gh.get_repo(REPO)
    issue = repo.create_issue("Drift on area", body="PSI 0.4", labels=["drift", "needs-triage"])
    assert [label.name for label in issue.labels] == ["drift", "needs-triage"]
    assert "needs-triage" in world.emulator.state.labels(REPO)  # created on the fly, as GitHub does
    issue.edit(state="closed", body="PSI 0.4 (fixed by retraining)", labels=["drift", "retrained"])
    stored = world.emulator.state.issue(REPO, issue.number)
    assert (stored.state, stored.body, stored.labels) == ("closed", "PSI 0.4 (fixed by retraining)",
                                                         ["drift", "retrained"])
    assert stored.closed_by == "mlops-bot[bot]" and stored.state_reason == "completed"
    issue.add_to_labels("model-v3")
    issue.remove_from_labels("drift")
    assert world.emulator.state.labels(REPO, issue.number) == ["retrained", "model-v3"]
    with pytest.raises(GithubException) as absent:
        issue.remove_from_labels("drift")
    assert (absent.value.status, absent.value.data["message"]) == (404, "Label does not exist")
    repo.create_label("deployed", "0e8a16", "Deployed to production")
    assert "deployed" in [label.name for label in repo.get_labels()]
    with pytest.raises(GithubException) as duplicate:
        repo.create_label("deployed", "0e8a16")
    assert duplicate.value.status == 422
    with pytest.raises(GithubException) as untitled:
        world.gh.requester.requestJsonAndCheck("POST", f"/repos/{REPO}/issues", input={"body": "no title"})
    assert untitled.value.status == 422


def test_check_runs_need_a_github_app(world: SimpleNamespace, app_key: SimpleNamespace) -> None:
    head = world.emulator.state.issue(REPO, world.pull).pull.head_sha
    with pytest.raises(GithubException) as personal:
        world.gh.get_repo(REPO).create_check_run("mlops/validate", head)
    assert personal.value.status == 403

    app = app_client(world.emulator, app_key)
    repo = app.get_repo(REPO)
    run = repo.create_check_run("mlops/validate", head, status="in_progress", external_id="job-7")
    assert (run.status, run.app.slug, [p.number for p in run.pull_requests]) == ("in_progress", "mlops-bot",
                                                                                [world.pull])
    run.edit(conclusion="success", output={"title": "Validated", "summary": "accuracy 0.97"})
    stored = world.emulator.state.check_runs(REPO, head)[0]
    assert (stored.status, stored.conclusion, stored.output["title"]) == ("completed", "success", "Validated")
    assert world.emulator.log.count("POST", r"/app/installations/1/access_tokens", status=201) == 1
    with pytest.raises(GithubException) as not_a_user:
        app.get_user().login  # noqa: B018 - an installation has no user
    assert not_a_user.value.status == 403


def test_workflow_dispatch_and_runs(world: SimpleNamespace) -> None:
    repo = world.gh.get_repo(REPO)
    workflow = repo.get_workflow("train.yml")
    assert workflow.create_dispatch("main", inputs={"model": "v3"}) is True
    assert workflow.create_dispatch("no-such-branch") is False
    (run,) = world.emulator.state.workflow_runs(REPO, "train.yml")
    assert (run.event, run.inputs, run.status) == ("workflow_dispatch", {"model": "v3"}, "queued")

    listed = list(repo.get_workflow_runs(event="workflow_dispatch"))
    assert [(r.id, r.status, r.conclusion) for r in listed] == [(run.id, "queued", None)]
    world.emulator.state.complete_run(REPO, run.id, "failure")
    (done,) = repo.get_workflow_runs(status="completed")
    assert (done.status, done.conclusion, done.head_branch) == ("completed", "failure", "main")
    assert repo.get_workflow_runs(status="success").totalCount == 0


def test_rate_limit_overview_is_free(world: SimpleNamespace) -> None:
    first = world.gh.get_rate_limit().resources.core.remaining
    world.gh.get_repo(REPO)
    assert world.gh.get_rate_limit().resources.core.remaining == first - 1
    assert world.emulator.log.count("GET", "/rate_limit", charged=False) == 2


# ---------------------------------------------------------------------------
# Pagination, conditional requests, the primary limit


def test_pagination_walks_250_comments_by_link_headers(world: SimpleNamespace) -> None:
    s = world.emulator.state
    number = s.open_issue(REPO, "Chatty", "", "alice")
    ids = [s.add_comment(REPO, number, "bob", f"comment {k}") for k in range(250)]
    world.emulator.log.clear()

    walked = list(client(world.emulator, per_page=100, lazy=True).get_repo(REPO).get_issue(number).get_comments())
    assert [c.id for c in walked] == ids
    pages = world.emulator.log.filter("GET", rf"/repos/{REPO}/issues/{number}/comments")
    assert [e.query.get("page", "1") for e in pages] == ["1", "2", "3"]

    answer = requests.get(f"{world.emulator.base_url}/repos/{REPO}/issues/{number}/comments?per_page=100&page=2",
                          headers={"Authorization": f"token {world.emulator.token}"})
    rels = re.findall(r'<([^>]+)>; rel="(\w+)"', answer.headers["Link"])
    assert [rel for _, rel in rels] == ["prev", "next", "last", "first"]
    assert all(url.startswith(world.emulator.base_url + "/repos/") for url, _ in rels)
    assert dict((rel, url.rsplit("page=", 1)[1]) for url, rel in rels) == {"prev": "1", "next": "3", "last": "3",
                                                                           "first": "1"}
    assert "Last-Modified" in answer.headers and "ETag" in answer.headers
    assert world.gh.get_repo(REPO).get_issue(number).get_comments().totalCount == 250

    since = world.emulator.state.comment(ids[0]).created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = requests.get(f"{world.emulator.base_url}/repos/{REPO}/issues/comments",
                          params={"since": since, "per_page": 100},
                          headers={"Authorization": f"token {world.emulator.token}"})
    assert len(answer.json()) == 100 and f"since={since.replace(':', '%3A')}" in answer.headers["Link"]


def test_conditional_requests_answer_304_without_charge(world: SimpleNamespace) -> None:
    gh, log = world.gh, world.emulator.log
    issue = gh.get_repo(REPO).get_issue(world.issue)
    remaining = world.emulator.rate_limit_remaining()
    assert issue.update() is False  # PyGithub's conditional GET: If-None-Match + If-Modified-Since
    assert log.last.status == 304 and log.last.charged is False
    assert world.emulator.rate_limit_remaining() == remaining

    world.emulator.clock.advance(5)
    world.emulator.state.add_comment(REPO, world.issue, "rita", "+1")
    assert issue.update() is True and issue.comments == 2
    assert log.last.status == 200 and log.last.charged is True

    url = f"/repos/{REPO}/issues/comments"
    status, headers, _ = gh.requester.requestJson("GET", url)
    assert status == 200 and "last-modified" in headers
    status, _, output = gh.requester.requestJson("GET", url, headers={"If-None-Match": headers["etag"]})
    assert (status, output) == (304, "")
    assert log.count("GET", url, status=304, charged=False) == 1


def test_primary_limit_runs_out_and_recovers_at_reset() -> None:
    with GitHubEmulator(rate_limit=3) as emulator:
        emulator.state.add_repo(REPO)
        gh = client(emulator)
        for _ in range(3):
            gh.get_repo(REPO)
        with pytest.raises(RateLimitExceededException) as exhausted:
            gh.get_repo(REPO)
        assert exhausted.value.status == 403
        assert exhausted.value.headers["x-ratelimit-remaining"] == "0"
        assert int(exhausted.value.headers["x-ratelimit-reset"]) > emulator.clock.timestamp()
        assert gh.get_rate_limit().resources.core.remaining == 0  # still answers, for free

        emulator.clock.advance(3601)
        assert gh.get_repo(REPO).full_name == REPO
        assert gh.rate_limiting[0] == 2
        for _ in range(2):
            gh.get_repo(REPO)
        emulator.reset_rate_limit()
        gh.get_repo(REPO)
        assert emulator.log.count(status=403) == 1 and emulator.log.charged() == 7


# ---------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize("code", [500, 502, 503])
def test_server_errors(world: SimpleNamespace, code: int) -> None:
    world.emulator.faults.add("issues/get", code)
    repo = world.gh.get_repo(REPO)
    with pytest.raises(GithubException) as failed:
        repo.get_issue(world.issue)
    assert failed.value.status == code
    assert repo.get_issue(world.issue).number == world.issue  # once only


def test_timeout(world: SimpleNamespace) -> None:
    world.emulator.faults.add(r"GET /repos/acme/model/pulls/\d+", "timeout", hold=3)
    repo = client(world.emulator, timeout=1).get_repo(REPO)  # PyGithub takes whole seconds
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        repo.get_pull(world.pull)
    assert time.monotonic() - started < 2
    assert world.emulator.log.filter(fault="timeout")[0].status is None


@pytest.mark.parametrize("kind", ["rate_limit_primary", "rate_limit_secondary"])
def test_rate_limit_faults(world: SimpleNamespace, kind: str) -> None:
    world.emulator.faults.add("issues/create-comment", kind, retry_after=30)
    issue = world.gh.get_repo(REPO).get_issue(world.issue)
    with pytest.raises(RateLimitExceededException) as limited:
        issue.create_comment("hello")
    headers = limited.value.headers
    if kind == "rate_limit_primary":
        assert headers["x-ratelimit-remaining"] == "0" and int(headers["x-ratelimit-reset"]) > 0
    else:
        assert headers["retry-after"] == "30"
    assert world.emulator.state.comments(REPO, world.issue)[-1].body == "/retrain"  # nothing written


def test_429_with_retry_after(world: SimpleNamespace) -> None:
    world.emulator.faults.add("POST /repos/{owner}/{repo}/issues", "429", retry_after=7)
    with pytest.raises(GithubException) as limited:
        world.gh.get_repo(REPO).create_issue("Drift")
    assert (limited.value.status, limited.value.headers["retry-after"]) == (429, "7")
    assert not isinstance(limited.value, RateLimitExceededException)


def test_lost_response_applies_the_write(world: SimpleNamespace) -> None:
    world.emulator.faults.add("issues/create-comment", "lost_response")
    issue = world.gh.get_repo(REPO).get_issue(world.issue)
    with pytest.raises(requests.exceptions.ConnectionError):
        issue.create_comment("Model v3 trained")
    assert world.emulator.state.comments(REPO, world.issue)[-1].body == "Model v3 trained"
    (lost,) = world.emulator.log.filter(fault="lost_response")
    assert (lost.status, lost.charged, lost.body) == (None, True, {"body": "Model v3 trained"})
    issue.create_comment("and again")  # the connection pool recovers
    assert len(world.emulator.state.comments(REPO, world.issue)) == 3


def test_random_faults_are_reproducible(world: SimpleNamespace) -> None:
    def failures(seed: int) -> list[int]:
        world.emulator.faults.random(0.3, kinds=[500, 503], seed=seed, target="repos/get")
        outcomes = []
        for _ in range(30):
            try:
                world.gh.get_repo(REPO)
                outcomes.append(200)
            except GithubException as error:
                outcomes.append(error.status)
        return outcomes

    first = failures(seed=4)
    assert first == failures(seed=4)
    assert {500, 503, 200} == set(first)
    world.emulator.faults.clear()
    world.gh.get_repo(REPO)


def test_unknown_fault_kind_is_refused(world: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        world.emulator.faults.add("repos/get", 418)


def test_request_log_counts(world: SimpleNamespace) -> None:
    log = world.emulator.log
    log.clear()
    repo = world.gh.get_repo(REPO)
    repo.get_issue(world.issue).create_comment("one")
    repo.get_issue(world.issue).create_comment("two")
    assert len(log) == 5
    assert log.count("POST") == 2 == len(log.writes())
    assert log.count("GET", rf"/repos/{REPO}/issues/\d+") == 2
    assert log.count(route="issues/create-comment", status=201) == 2
    assert log.charged() == 5
    assert [e.body for e in log.filter("POST")] == [{"body": "one"}, {"body": "two"}]
    assert {e.identity for e in log} == {"mlops-bot[bot]"}


def test_runs_by_hand() -> None:
    command = [sys.executable, "-m", "tests.emulators.github", "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        base_url = re.search(r"at (http://127\.0\.0\.1:\d+/api/v3)", line).group(1)
        request = urllib.request.Request(f"{base_url}/repos/acme/model/issues?state=all",
                                         headers={"Authorization": "token test-token"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert len(json.load(answer)) == 3
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()


def test_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        GitHubEmulator(host="0.0.0.0")


# ---------------------------------------------------------------------------
# Every route against GitHub's REST description


@dataclass(frozen=True)
class Case:
    route: str  # the emulator's route name (the operationId)
    status: int
    call: Callable[[SimpleNamespace], tuple[str, str, Any, dict[str, str]]]  # method, url, input, headers
    client: str = "token"  # "token", "app", "bad"


def _etag(w: SimpleNamespace, url: str) -> dict[str, str]:
    return {"If-None-Match": w.gh.requester.requestJson("GET", url)[1]["etag"]}


def _head(w: SimpleNamespace) -> str:
    return w.emulator.state.issue(REPO, w.pull).pull.head_sha


R = f"/repos/{REPO}"
CASES = [
    Case("repos/get", 200, lambda w: ("GET", R, None, {})),
    Case("issues/list-for-repo", 200, lambda w: ("GET", f"{R}/issues?state=all&per_page=2", None, {})),
    Case("issues/create", 201, lambda w: ("POST", f"{R}/issues", {"title": "t", "labels": ["drift"]}, {})),
    Case("issues/create", 422, lambda w: ("POST", f"{R}/issues", {"body": "no title"}, {})),
    Case("issues/get", 200, lambda w: ("GET", f"{R}/issues/{w.pull}", None, {})),
    Case("issues/get", 304, lambda w: ("GET", f"{R}/issues/1", None, _etag(w, f"{R}/issues/1"))),
    Case("issues/get", 404, lambda w: ("GET", f"{R}/issues/999", None, {})),
    Case("issues/update", 200, lambda w: ("PATCH", f"{R}/issues/{w.issue}", {"state": "closed"}, {})),
    Case("issues/update", 422, lambda w: ("PATCH", f"{R}/issues/{w.issue}", {"state": "gone"}, {})),
    Case("issues/list-comments-for-repo", 200, lambda w: ("GET", f"{R}/issues/comments?since=2000-01-01T00:00:00Z",
                                                          None, {})),
    Case("issues/list-comments", 200, lambda w: ("GET", f"{R}/issues/{w.issue}/comments", None, {})),
    Case("issues/create-comment", 201, lambda w: ("POST", f"{R}/issues/{w.pull}/comments", {"body": "hi"}, {})),
    Case("issues/create-comment", 404, lambda w: ("POST", f"{R}/issues/999/comments", {"body": "hi"}, {})),
    Case("issues/get-comment", 200, lambda w: ("GET", f"{R}/issues/comments/{w.comment}", None, {})),
    Case("issues/get-comment", 404, lambda w: ("GET", f"{R}/issues/comments/1", None, {})),
    Case("issues/update-comment", 200, lambda w: ("PATCH", f"{R}/issues/comments/{w.comment}", {"body": "x"}, {})),
    Case("issues/update-comment", 422, lambda w: ("PATCH", f"{R}/issues/comments/{w.comment}", {}, {})),
    Case("reactions/list-for-issue-comment", 200, lambda w: ("GET", f"{R}/issues/comments/{w.comment}/reactions",
                                                             None, {})),
    Case("reactions/create-for-issue-comment", 201, lambda w: ("POST", f"{R}/issues/comments/{w.comment}/reactions",
                                                               {"content": "heart"}, {})),
    Case("reactions/create-for-issue-comment", 200, lambda w: ("POST", f"{R}/issues/comments/{w.comment}/reactions",
                                                               {"content": "eyes"}, {})),
    Case("reactions/create-for-issue-comment", 422, lambda w: ("POST", f"{R}/issues/comments/{w.comment}/reactions",
                                                               {"content": "smile"}, {})),
    Case("issues/add-labels", 200, lambda w: ("POST", f"{R}/issues/{w.issue}/labels", {"labels": ["a", "b c"]}, {})),
    Case("issues/remove-label", 200, lambda w: ("DELETE", f"{R}/issues/{w.issue}/labels/drift", None, {})),
    Case("issues/remove-label", 404, lambda w: ("DELETE", f"{R}/issues/{w.issue}/labels/none", None, {})),
    Case("issues/list-labels-for-repo", 200, lambda w: ("GET", f"{R}/labels", None, {})),
    Case("issues/create-label", 201, lambda w: ("POST", f"{R}/labels", {"name": "x y", "color": "#00ff00"}, {})),
    Case("issues/create-label", 422, lambda w: ("POST", f"{R}/labels", {"name": "drift"}, {})),
    Case("pulls/list", 200, lambda w: ("GET", f"{R}/pulls?state=all&sort=updated&direction=desc", None, {})),
    Case("pulls/list", 304, lambda w: ("GET", f"{R}/pulls", None, _etag(w, f"{R}/pulls"))),
    Case("pulls/get", 200, lambda w: ("GET", f"{R}/pulls/{w.merged}", None, {})),
    Case("pulls/get", 404, lambda w: ("GET", f"{R}/pulls/{w.issue}", None, {})),
    Case("pulls/list-files", 200, lambda w: ("GET", f"{R}/pulls/{w.pull}/files", None, {})),
    Case("pulls/list-commits", 200, lambda w: ("GET", f"{R}/pulls/{_pushed(w)}/commits?per_page=2", None, {})),
    Case("repos/get-commit", 200, lambda w: ("GET", f"{R}/commits/{w.merge_sha}", None, {})),
    Case("repos/create-commit-status", 201, lambda w: ("POST", f"{R}/statuses/{_head(w)}",
                                                       {"state": "success", "context": "mlops"}, {})),
    Case("repos/list-commit-statuses-for-ref", 200, lambda w: ("GET", f"{R}/commits/main/statuses", None, {})),
    Case("repos/list-commit-statuses-for-ref-legacy", 200, lambda w: ("GET", f"{R}/statuses/{_head(w)}", None, {})),
    Case("checks/create", 201, lambda w: ("POST", f"{R}/check-runs", {"name": "mlops", "head_sha": _head(w),
                                                                       "status": "completed",
                                                                       "conclusion": "neutral"}, {}), "app"),
    Case("checks/update", 200, lambda w: ("PATCH", f"{R}/check-runs/{_check_run(w)}", {"status": "in_progress"},
                                          {}), "app"),
    Case("checks/list-for-ref", 200, lambda w: ("GET", f"{R}/commits/{_checked_head(w)}/check-runs?check_name=mlops"
                                                "&filter=all", None, {}), "app"),
    Case("repos/get-collaborator-permission-level", 200, lambda w: ("GET", f"{R}/collaborators/maya/permission",
                                                                    None, {})),
    Case("repos/get-collaborator-permission-level", 404, lambda w: ("GET", f"{R}/collaborators/zed/permission",
                                                                    None, {})),
    Case("actions/get-workflow", 200, lambda w: ("GET", f"{R}/actions/workflows/train.yml", None, {})),
    Case("actions/create-workflow-dispatch", 204, lambda w: ("POST", f"{R}/actions/workflows/{w.workflow}/dispatches",
                                                             {"ref": "main"}, {})),
    Case("actions/create-workflow-dispatch", 200, lambda w: ("POST", f"{R}/actions/workflows/{w.workflow}/dispatches",
                                                             {"ref": "main", "return_run_details": True}, {})),
    Case("actions/list-workflow-runs-for-repo", 200, lambda w: ("GET", f"{R}/actions/runs", None, {})),
    Case("rate-limit/get", 200, lambda w: ("GET", "/rate_limit", None, {})),
    Case("users/get-authenticated", 200, lambda w: ("GET", "/user", None, {})),
    Case("users/get-authenticated", 304, lambda w: ("GET", "/user", None, _etag(w, "/user"))),
    Case("users/get-authenticated", 401, lambda w: ("GET", "/user", None, {}), "bad"),
    Case("users/get-authenticated", 403, lambda w: ("GET", "/user", None, {}), "app"),
    Case("apps/create-installation-access-token", 201, lambda w: ("POST", "/app/installations/1/access_tokens", {},
                                                                  {}), "jwt"),
    Case("actions/list-workflow-run-artifacts", 200,
         lambda w: ("GET", f"{R}/actions/runs/{_artifact(w)[0]}/artifacts", None, {})),
    Case("actions/download-artifact", 302, lambda w: ("GET", f"{R}/actions/artifacts/{_artifact(w)[1]}/zip", None, {})),
    Case("actions/download-artifact", 410,
         lambda w: ("GET", f"{R}/actions/artifacts/{_artifact(w, expired=True)[1]}/zip", None, {})),
]
# Not REST routes: where an artifact's download redirects to (storage, not GitHub's API), and the
# GraphQL endpoint, whose documents are checked against GitHub's GraphQL schema instead.
NOT_API = {"artifact-storage", "graphql"}


def _artifact(w: SimpleNamespace, *, expired: bool = False) -> tuple[int, int]:
    """A finished workflow run with an ``mlops-metrics`` artifact: (run id, artifact id)."""
    w.gh.get_repo(REPO).get_workflow("train.yml").create_dispatch("main")
    run = w.emulator.state.workflow_runs(REPO, "train.yml")[-1]
    w.emulator.state.complete_run(REPO, run.id, "success")
    artifact = w.emulator.state.add_artifact(REPO, run.id, "mlops-metrics", {"metrics.json": '{"metrics": {}}'})
    if expired:
        w.emulator.state.expire_artifact(REPO, artifact)
    return run.id, artifact


def _pushed(w: SimpleNamespace) -> int:
    """The open pull request, with two more commits pushed to it (three in all: two pages of two)."""
    for n in range(2):
        w.emulator.state.push_to_pull(REPO, w.pull, message=f"Fix {n}\n\nAB#{n}")
    return w.pull


def _check_run(w: SimpleNamespace) -> int:
    w.app.get_repo(REPO).create_check_run("mlops", _head(w))
    return w.emulator.state.check_runs(REPO)[-1].id


def _checked_head(w: SimpleNamespace) -> str:
    """The open pull request's head, with a check run on it."""
    _check_run(w)
    return _head(w)


@pytest.fixture
def schema_world(world: SimpleNamespace, app_key: SimpleNamespace) -> SimpleNamespace:
    refdata_dir()  # skips without ../shared/refdata
    world.schemas = world.emulator.schemas  # the fixture's, loaded once
    world.app = app_client(world.emulator, app_key)
    world.emulator.state.add_reaction(world.comment, world.emulator.login, "eyes")
    for k in range(3):
        world.emulator.state.add_comment(REPO, world.issue, "rita", f"+{k}")
    world.emulator.state.add_commit(REPO, sha=None, branch="main")
    world.app_key = app_key
    return world


def _absolute_urls(body: Any, emulator: GitHubEmulator, where: str = "") -> list[str]:
    """URL-valued fields not on the emulator's own host and port."""
    bad = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "documentation_url":  # GitHub's docs, not a resource
                continue
            if isinstance(value, str) and (key.endswith("url") or key == "href") and value.startswith("http"):
                if not value.startswith(emulator.url + "/"):
                    bad.append(f"{where}/{key}: {value}")
            else:
                bad.extend(_absolute_urls(value, emulator, f"{where}/{key}"))
    elif isinstance(body, list):
        for k, item in enumerate(body):
            bad.extend(_absolute_urls(item, emulator, f"{where}/{k}"))
    return bad


def _call(w: SimpleNamespace, case: Case) -> tuple[int, dict[str, str], Any]:
    method, url, body, headers = case.call(w)
    if case.client == "jwt":
        token = Auth.AppAuth(1, w.app_key.private).create_jwt()
        answer = requests.post(w.emulator.base_url + url, json=body, headers={"Authorization": f"Bearer {token}"})
        return answer.status_code, dict(answer.headers), answer.json()
    gh = {"token": w.gh, "app": w.app, "bad": client(w.emulator, "bad-token")}[case.client]
    status, response_headers, output = gh.requester.requestJson(method, url, input=body, headers=headers)
    return status, response_headers, (json.loads(output) if output else None)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.route}-{c.status}" for c in CASES])
def test_every_route_answers_within_githubs_schema(schema_world: SimpleNamespace, case: Case) -> None:
    route = next(r for r in schema_world.emulator.router.routes if r.name == case.route)
    status, headers, body = _call(schema_world, case)
    assert status == case.status, body
    errors = schema_world.schemas.validate_response(route.method, route.template, status, body, headers)
    assert errors == [], "\n".join(errors)
    assert _absolute_urls(body, schema_world.emulator) == []
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used"):
        assert name in {k.lower() for k in headers}
    if route.method == "GET" and status == 200:
        assert "etag" in {k.lower() for k in headers}
    assert schema_world.schemas.operation(route.method, route.template)["operationId"] == case.route


def test_schema_cases_cover_every_route(github_emulator: GitHubEmulator) -> None:  # noqa: F811
    assert {r.name for r in github_emulator.router.routes} == {c.route for c in CASES} | NOT_API


def test_schema_check_fails_when_a_required_field_is_dropped(
    schema_world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = schema_world.emulator
    original = GitHubEmulator._comment_json

    def without_user(self: GitHubEmulator, repo: Any, comment: Any) -> dict[str, Any]:
        body = original(self, repo, comment)
        del body["user"]
        return body

    monkeypatch.setattr(GitHubEmulator, "_comment_json", without_user)
    case = next(c for c in CASES if c.route == "issues/get-comment" and c.status == 200)
    route = next(r for r in emulator.router.routes if r.name == case.route)
    status, headers, body = _call(schema_world, case)
    errors = schema_world.schemas.validate_response(route.method, route.template, status, body, headers)
    assert errors == ["(root): 'user' is a required property"]
    # the fixture's emulator checks what it serves, too, and would fail the test at teardown
    assert emulator.violations == [f"GET /repos/{REPO}/issues/comments/{schema_world.comment} -> 200: {errors[0]}"]
    emulator.violations.clear()


def test_openapi_nullable_and_formats(schema_world: SimpleNamespace) -> None:
    schemas = schema_world.schemas
    label = {"id": 1, "node_id": "x", "url": "http://127.0.0.1:1/api/v3/l", "name": "a", "color": "ededed",
             "default": False, "description": None}
    assert schemas.validate(label, "#/components/schemas/label") == []
    assert schemas.validate({**label, "url": "/relative"}, "#/components/schemas/label") == [
        "url: '/relative' is not a 'uri'"]
    assert schemas.validate({**label, "name": None}, "#/components/schemas/label") == [
        "name: None is not of type 'string'"]
    user = {"$ref": "#/components/schemas/nullable-simple-user"}
    assert schemas.validate(None, user) == []
    assert schemas.validate({"id": "1"}, {"type": "object", "properties": {"id": {"type": "integer"}}}) == [
        "id: '1' is not of type 'integer'"]
    assert schemas.validate("2024-01-01T00:00:00Z", {"type": "string", "format": "date-time"}) == []
    assert schemas.validate("yesterday", {"type": "string", "format": "date-time"}) != []
    assert schemas.template_for(f"/repos/{REPO}/issues/comments") == "/repos/{owner}/{repo}/issues/comments"
    assert schemas.template_for(f"/repos/{REPO}/issues/7") == "/repos/{owner}/{repo}/issues/{issue_number}"


def test_issue_timestamps_follow_the_emulator_clock(world: SimpleNamespace) -> None:
    clock = world.emulator.clock
    before = clock.now()
    clock.advance(timedelta(days=2).total_seconds())
    issue = world.gh.get_repo(REPO).create_issue("Later")
    assert issue.created_at - before >= timedelta(days=2)


# ---------------------------------------------------------------------------
# Artifacts, clone URLs and App tokens


def test_an_artifact_downloads_by_a_redirect_to_storage_that_takes_no_token(world: SimpleNamespace) -> None:
    import io
    import zipfile

    run_id, artifact_id = _artifact(world)
    world.emulator.state.add_artifact(REPO, run_id, "logs", {"train.log": "..."})
    listed = world.gh.requester.requestJsonAndCheck("GET", f"{R}/actions/runs/{run_id}/artifacts",
                                                    parameters={"name": "mlops-metrics"})[1]
    assert [a["name"] for a in listed["artifacts"]] == ["mlops-metrics"] and listed["total_count"] == 1
    everything = world.gh.requester.requestJsonAndCheck("GET", f"{R}/actions/runs/{run_id}/artifacts")[1]
    assert [a["name"] for a in everything["artifacts"]] == ["mlops-metrics", "logs"]
    status, headers, _ = world.gh.requester.requestJson("GET", listed["artifacts"][0]["archive_download_url"])
    location = headers["location"]
    assert status == 302 and location.startswith(f"http://localhost:{world.emulator.port}/")
    with_token = requests.get(location, headers={"Authorization": f"token {world.emulator.token}"})
    assert with_token.status_code == 400  # storage refuses a second credential next to its signature
    archive = zipfile.ZipFile(io.BytesIO(requests.get(location).content))
    assert archive.read("metrics.json") == b'{"metrics": {}}'
    world.emulator.clock.advance(minutes=2)
    assert requests.get(location).status_code == 403  # the signed URL is short-lived
    assert world.emulator.log.filter(path=r"/_blobs/.*", charged=True) == []


def test_a_repositorys_clone_url_can_name_a_local_bare_repository(world: SimpleNamespace, tmp_path: Path) -> None:
    assert world.gh.get_repo(REPO).clone_url == f"{world.emulator.url}/{REPO}.git"
    world.emulator.state.add_repo(REPO, clone_url=tmp_path / "remote.git")
    assert world.gh.get_repo(REPO).clone_url == (tmp_path / "remote.git").as_uri()
    world.emulator.state.add_repo("acme/other", clone_url="https://git.example.com/acme/other.git")
    assert world.gh.get_repo("acme/other").clone_url == "https://git.example.com/acme/other.git"


def test_app_tokens_need_the_registered_key_and_expire(world: SimpleNamespace, app_key: SimpleNamespace) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    world.emulator.add_app(7, slug="seven", public_key=app_key.public)
    world.emulator.add_installation(70, app_id=7)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    forged = Auth.AppAuth(7, other).create_jwt()
    refused = requests.post(world.emulator.base_url + "/app/installations/70/access_tokens",
                            headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    jwt = Auth.AppAuth(7, app_key.private).create_jwt()
    issued = requests.post(world.emulator.base_url + "/app/installations/70/access_tokens",
                           headers={"Authorization": f"Bearer {jwt}"}).json()
    gh = client(world.emulator, issued["token"])
    assert gh.get_repo(REPO).full_name == REPO
    with pytest.raises(BadCredentialsException):
        wrong = issued["token"][:-1] + ("y" if issued["token"].endswith("x") else "x")  # never the token itself
        client(world.emulator, wrong).get_repo(REPO).full_name  # noqa: B018
    world.emulator.clock.advance(hours=1, seconds=1)
    with pytest.raises(BadCredentialsException):
        client(world.emulator, issued["token"]).get_repo("acme/model").full_name  # noqa: B018
