"""GitHub's secondary rate limits: the emulator enforces them as GitHub documents them, and the
adapter paces its writes to stay under them.

Time is the emulator's clock, frozen: the adapter's pacer sleeps on that same clock, so a minute
of pacing costs no wall time and nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest
from github import Auth, Github

from integrations.github import (
    WRITE_SPACING_S,
    ContentPacer,
    GitHubAuth,
    GitHubClient,
    GitHubSource,
    WritesPaced,
    connect,
)
from integrations.ports import Permission, PermissionRefused, Target, TransientError
from tests.emulators import github as github_emulator_module
from tests.emulators.fixtures import github_emulator, no_proxy_for_loopback  # noqa: F401 - the fixtures
from tests.emulators.github import (
    SECONDARY_CONTENT_PER_HOUR,
    SECONDARY_CONTENT_PER_MINUTE,
)

REPO = "acme/model"
MARKER = re.compile(r"<!-- mlops-bot:(.*?) -->")


@pytest.fixture
def github(github_emulator):  # noqa: F811 - the imported fixture
    """The emulator with GitHub's secondary limits on and its clock standing still."""
    github_emulator.secondary_limits = True
    github_emulator.clock.freeze()
    github_emulator.state.add_repo(REPO)
    github_emulator.state.add_collaborator(REPO, "bob", "write")
    return github_emulator


def client(emulator, pacer: ContentPacer) -> GitHubClient:
    gh = connect(GitHubAuth(token=emulator.token), base_url=emulator.base_url, timeout=2, retry=None)
    return GitHubClient(gh, REPO, bot_login="mlops-bot", pacer=pacer)


def paced_on(clock, **options) -> ContentPacer:
    return ContentPacer(monotonic=clock.seconds, sleep=clock.sleep, **options)


def comment_bodies(emulator, number: int) -> list[str]:
    return [c.body for c in emulator.state.comments(REPO, number)]


# --- the emulator ---------------------------------------------------------------------------------


def test_past_80_content_creating_requests_in_a_minute_github_answers_403_with_retry_after(github):
    issue = github.state.open_issue(REPO, "Busy", "", "bob")
    requester = Github(base_url=github.base_url, auth=Auth.Token(github.token), retry=None,
                       seconds_between_requests=None, seconds_between_writes=None).requester
    url = f"{github.base_url}/repos/{REPO}/issues/{issue}/comments"
    for n in range(SECONDARY_CONTENT_PER_MINUTE):
        status, _headers, _body = requester.requestJson("POST", url, input={"body": f"comment {n}"})
        assert status == 201
    status, headers, body = requester.requestJson("POST", url, input={"body": "one too many"})
    assert status == 403
    assert "You have exceeded a secondary rate limit" in body
    assert 1 <= int(headers["retry-after"]) <= 60
    assert github.secondary_limited == 1
    assert "one too many" not in comment_bodies(github, issue)  # refused: nothing applied
    assert requester.requestJson("GET", url)[0] == 200  # reads are not content-generating

    github.clock.advance(int(headers["retry-after"]))  # waiting as asked is enough
    assert requester.requestJson("POST", url, input={"body": "after the wait"})[0] == 201


def test_past_500_content_creating_requests_in_an_hour_github_answers_403(github):
    issue = github.state.open_issue(REPO, "Busy hour", "", "bob")
    requester = Github(base_url=github.base_url, auth=Auth.Token(github.token), retry=None,
                       seconds_between_requests=None, seconds_between_writes=None).requester
    url = f"{github.base_url}/repos/{REPO}/issues/{issue}/comments"
    for n in range(SECONDARY_CONTENT_PER_HOUR):
        github.clock.advance(1)  # 60 a minute: always under the minute's limit
        assert requester.requestJson("POST", url, input={"body": f"comment {n}"})[0] == 201, n
    github.clock.advance(1)
    status, headers, _body = requester.requestJson("POST", url, input={"body": "one too many"})
    assert status == 403 and github.secondary_limited == 1
    # the first of the hour leaves its window 3600 s after it was made, 501 s ago
    assert int(headers["retry-after"]) == pytest.approx(3600 - SECONDARY_CONTENT_PER_HOUR, abs=2)


def test_past_100_concurrent_requests_github_answers_403(github, monkeypatch):
    monkeypatch.setattr(github_emulator_module, "SECONDARY_CONCURRENT", 2)  # 101 sockets make the same point
    requester = Github(base_url=github.base_url, auth=Auth.Token(github.token), retry=None,
                       seconds_between_requests=None, seconds_between_writes=None).requester
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(requester.requestJson("GET", f"{github.base_url}/repos/{REPO}")[0])

    threads = [threading.Thread(target=ask) for _ in range(3)]
    with github.lock:  # the emulator is busy: the requests wait in flight
        for thread in threads:
            thread.start()
        while github.in_flight < 3:
            threading.Event().wait(0.01)
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 403]
    assert github.secondary_limited == 1


# --- the adapter ----------------------------------------------------------------------------------


def test_a_busy_episode_of_replies_is_paced_under_the_limit_and_each_lands_once(github):
    issue = github.state.open_issue(REPO, "Busy", "", "bob")
    source = GitHubSource(client(github, paced_on(github.clock)))
    started = github.clock.seconds()
    for n in range(120):
        source.reply(Target("ticket", REPO, issue), f"reply {n}", marker=f"reply-{n}")
    assert github.secondary_limited == 0
    landed = Counter(MARKER.findall("\n".join(comment_bodies(github, issue))))
    assert landed == Counter(f"reply-{n}" for n in range(120))  # each exactly once
    # GitHub's advice, one second between writes, is what kept it under 80 a minute
    assert github.clock.seconds() - started >= 119 * WRITE_SPACING_S


def test_unpaced_the_same_episode_meets_the_secondary_limit(github):
    """The test above can fail: without pacing, GitHub refuses the 81st write of the minute."""
    issue = github.state.open_issue(REPO, "Busy", "", "bob")
    source = GitHubSource(client(github, ContentPacer.unpaced()))
    with pytest.raises(TransientError) as refused:
        for n in range(120):
            source.reply(Target("ticket", REPO, issue), f"reply {n}", marker=f"reply-{n}")
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert github.secondary_limited == 1 and len(comment_bodies(github, issue)) == SECONDARY_CONTENT_PER_MINUTE


class FakeTime:
    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_spaces_writes_and_hands_the_hours_limit_to_the_outbox():
    time = FakeTime()
    pacer = ContentPacer(spacing_s=1.0, per_hour=5, max_wait_s=10, monotonic=time.monotonic, sleep=time.sleep)
    for _ in range(5):
        pacer.wait()
    assert time.slept == [1.0] * 4  # the first goes at once, each next a second after the one before
    with pytest.raises(WritesPaced) as paced:
        pacer.wait()
    # the hour's five are spent: the sixth may go an hour after the first, which is far: the outbox waits
    assert paced.value.retry_after == pytest.approx(3600 - 4)
    time.now += 3600 - 4
    pacer.wait()  # then it goes, and the pacer took no slot for the refused one
    assert time.slept == [1.0] * 4


@pytest.mark.parametrize(("url", "paced"), [
    ("https://api.github.com", True),
    ("https://api.acme.ghe.com", True),  # GitHub Enterprise Cloud with data residency: github.com's limits
    ("https://github.acme.internal/api/v3", False),  # GitHub Enterprise Server: limits off by default
])
def test_writes_are_paced_where_github_documents_secondary_limits(url, paced):
    pacer = ContentPacer.for_api(url)
    assert (pacer.spacing_s > 0 and pacer.per_hour > 0) is paced


# --- the permission lookup ------------------------------------------------------------------------


def test_a_refused_permission_lookup_is_raised_not_read_as_no_permission(github):
    """A token not given the (private) repository cannot ask anyone's permission there: the
    refusal must reach the operator, not turn every commenter into someone without access."""
    github.state.add_repo("acme/private-model", private=True)
    github.state.add_collaborator("acme/private-model", "bob", "admin")
    github.add_token("narrow-token", "mlops-bot[bot]", scopes=None, repositories=[REPO])
    gh = connect(GitHubAuth(token="narrow-token"), base_url=github.base_url, timeout=2, retry=None)
    source = GitHubSource(GitHubClient(gh, "acme/private-model", pacer=ContentPacer.unpaced()))
    with pytest.raises(PermissionRefused) as refused:
        source.permission("acme/private-model", "bob")
    assert refused.value.service == "github"
    # a person who is no collaborator is still just that, on a repository the token sees
    visible = GitHubSource(client(github, ContentPacer.unpaced()))
    assert visible.permission(REPO, "eve") is Permission.none
