"""Permissions as the services enforce them, and what the bot does when one is missing.

The emulators refuse what a token, App installation or Slack app lacks the permission for, with the
services' own answers (GitHub's 403 "Resource not accessible by ..." and its
``X-Accepted-GitHub-Permissions``, its 404 for a repository hidden from the token; Slack's
``missing_scope``). The bot, driven end to end with the real SDKs, parks the effect instead of giving
it up, says once what to grant (log, ``Outbox.blocked``, ``/metrics``), tries again every interval,
and delivers it exactly once after the grant.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from github import Auth, Github, GithubException

from bot.outbox import Blocked, Delivered, DeliveryReport, Outbox
from bot.store import NewEffect, Store
from integrations.ports import PermissionRefused, TransientError
from tests.conftest import FakeClock, write_drifted_batch
from tests.emulators.github import DEFAULT_PERMISSIONS
from tests.emulators.slack import DEFAULT_SCOPES
from tests.test_github_bot import REPO, Remote

FINE_GRAINED = "github_pat_fine_grained"
INTERVAL = timedelta(minutes=10)  # the outbox's default wait before trying a blocked effect again


# --- the emulators: what GitHub and Slack refuse ---------------------------------------------------


def _pygithub(emulator, token: str, *, lazy: bool = False) -> Github:
    return Github(base_url=emulator.base_url, auth=Auth.Token(token), retry=None, seconds_between_requests=None,
                  seconds_between_writes=None, lazy=lazy)


def _refusal(call) -> GithubException:
    with pytest.raises(GithubException) as refused:
        call()
    return refused.value


def test_github_refuses_a_write_the_fine_grained_token_lacks_and_hides_a_private_repository(github_emulator):
    state = github_emulator.state
    state.add_repo("acme/model")
    state.add_repo("acme/secret", private=True)
    github_emulator.add_token("reader", "reader-bot", permissions={**DEFAULT_PERMISSIONS, "issues": "read"})
    github_emulator.add_token("elsewhere", "other-bot", permissions=DEFAULT_PERMISSIONS, repositories=["acme/model"])
    reader = _pygithub(github_emulator, "reader")

    refused = _refusal(lambda: reader.get_repo("acme/model").create_issue("drift"))
    assert refused.status == 403
    assert refused.data["message"] == "Resource not accessible by personal access token"
    assert {k.lower(): v for k, v in refused.headers.items()}["x-accepted-github-permissions"] == "issues=write"
    assert [i.title for i in reader.get_repo("acme/secret").get_issues()] == []  # reading it may
    assert state.issues("acme/model") == []

    # A pull request's comments open to Pull requests as well as Issues.
    pull = state.open_pull("acme/model", "A change", "", "bob")
    github_emulator.set_permissions("reader", {"pull_requests": "write"})
    reader.get_repo("acme/model").get_issue(pull).create_comment("on the pull request")
    refused = _refusal(lambda: reader.get_repo("acme/model").get_issue(state.open_issue("acme/model", "x"))
                       .create_comment("on the issue"))
    assert refused.status == 403

    # A private repository the token was not given is not there, for reads and writes alike.
    elsewhere = _pygithub(github_emulator, "elsewhere", lazy=True)
    for call in (lambda: elsewhere.get_repo("acme/secret").create_issue("x"),
                 lambda: list(elsewhere.get_repo("acme/secret").get_issues())):
        hidden = _refusal(call)
        assert hidden.status == 404 and hidden.data["message"] == "Not Found"
    github_emulator.set_permissions("elsewhere", DEFAULT_PERMISSIONS, repositories=None)
    assert elsewhere.get_repo("acme/secret").create_issue("now it may").number == 1


def test_github_refuses_an_installation_by_integration_and_a_classic_token_by_404(github_emulator):
    state = github_emulator.state
    state.add_repo("acme/model")
    github_emulator.add_installation(7, permissions={**DEFAULT_PERMISSIONS, "statuses": "read"})
    github_emulator.add_token("classic-none", "classic-bot", scopes=())
    sha = state.repo("acme/model").branches["main"]

    import jwt  # what PyGithub's AppAuth sends, without a key to sign with (the emulator checks none)

    app_jwt = jwt.encode({"iss": "1", "iat": 0, "exp": 4_000_000_000}, "k" * 32, algorithm="HS256")
    app = Github(base_url=github_emulator.base_url, auth=Auth.Token(app_jwt), retry=None)
    token = app.requester.requestJsonAndCheck("POST", "/app/installations/7/access_tokens")[1]["token"]
    installation = _pygithub(github_emulator, token)
    refused = _refusal(lambda: installation.get_repo("acme/model").get_commit(sha).create_status("success"))
    assert refused.status == 403 and refused.data["message"] == "Resource not accessible by integration"
    assert {k.lower(): v for k, v in refused.headers.items()}["x-accepted-github-permissions"] == "statuses=write"
    github_emulator.add_installation(7, permissions=DEFAULT_PERMISSIONS)  # the owner accepts the new permission
    installation.get_repo("acme/model").get_commit(sha).create_status("success")
    assert [s.state for s in state.statuses("acme/model", sha)] == ["success"]

    # A classic token without public_repo: GitHub says the repository's issues are not there.
    classic = _pygithub(github_emulator, "classic-none")
    hidden = _refusal(lambda: classic.get_repo("acme/model").create_issue("x"))
    headers = {k.lower(): v for k, v in hidden.headers.items()}
    assert hidden.status == 404 and headers["x-accepted-oauth-scopes"] == "public_repo, repo"
    assert headers["x-oauth-scopes"] == ""
    github_emulator.set_scopes("classic-none", ["public_repo"])
    assert classic.get_repo("acme/model").create_issue("now it may").number == 1


def test_slack_answers_missing_scope_with_the_scope_needed(slack_emulator):
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    channel = slack_emulator.state.add_channel("mlops-alerts")
    slack_emulator.set_scopes(slack_emulator.token, [s for s in DEFAULT_SCOPES if s != "chat:write"])
    client = WebClient(token=slack_emulator.token, base_url=slack_emulator.base_url)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=channel.id, text="hello")
    assert refused.value.response.data["error"] == "missing_scope"
    assert refused.value.response.data["needed"] == "chat:write"
    assert "chat:write" not in refused.value.response.data["provided"].split(",")
    slack_emulator.set_scopes(slack_emulator.token, DEFAULT_SCOPES)
    assert client.chat_postMessage(channel=channel.id, text="hello")["ok"]


# --- the adapters: refusals as PermissionRefused, naming what to grant ------------------------------


def test_the_adapters_name_the_permission_to_grant(github_emulator, slack_emulator):
    from integrations.github import GitHubAuth, GitHubClient, GitHubIssues, connect
    from integrations.slack import SlackChat

    github_emulator.state.add_repo("acme/model")
    github_emulator.state.add_repo("acme/secret", private=True)
    github_emulator.add_token("reader", "reader-bot", permissions={**DEFAULT_PERMISSIONS, "issues": "read"})
    github_emulator.add_token("classic-public", "classic-bot", scopes=("public_repo",))

    def issues(token: str, repo: str) -> GitHubIssues:
        return GitHubIssues(GitHubClient(connect(GitHubAuth(token=token), base_url=github_emulator.base_url,
                                                 retry=None), repo))

    with pytest.raises(PermissionRefused) as refused:
        issues("reader", "acme/model").open("k", "title", "body", (), marker="k")
    assert (refused.value.service, refused.value.permission) == ("github", "issues=write")
    assert "Issues: Read and write" in str(refused.value)
    with pytest.raises(PermissionRefused) as refused:
        issues("classic-public", "acme/secret").find_open("k")
    assert refused.value.permission == "repo" and "'repo' scope" in str(refused.value)
    assert issues("classic-public", "acme/model").get(99) is None  # a missing issue is only missing

    channel = slack_emulator.state.add_channel("mlops-alerts")
    slack_emulator.state.set_member(channel.id, member=False)
    from slack_sdk import WebClient

    chat = SlackChat(WebClient(token=slack_emulator.token, base_url=slack_emulator.base_url),
                     channels={"mlops-alerts": channel.id})
    with pytest.raises(PermissionRefused) as refused:
        chat.find_message("mlops-alerts", "some-marker")  # conversations.history: not_in_channel
    assert refused.value.service == "slack" and refused.value.permission == f"membership of {channel.id}"
    assert "/invite @mlops-bot" in str(refused.value)


# --- the bot, end to end ------------------------------------------------------------------------


@pytest.fixture
def world(github_emulator, repo, tmp_path):
    remote = Remote(repo, tmp_path)
    github_emulator.state.add_repo(REPO, clone_url=remote.bare, private=True)
    github_emulator.state.add_collaborator(REPO, "mlops-bot[bot]", "write")
    github_emulator.add_token(FINE_GRAINED, "mlops-bot[bot]", permissions=DEFAULT_PERMISSIONS)
    return github_emulator


def _drift(app) -> None:
    """Two drifted production batches (the first labelled), for the monitor to find."""
    write_drifted_batch(app, "b1.csv", 1, labelled=True)
    write_drifted_batch(app, "b2.csv", 2, labelled=False)


def _blocked_gauge(app) -> dict[tuple[str, str], float]:
    text = app.observability.exposition().decode()
    return {(service, permission): float(value) for permission, service, value in re.findall(
        r'^mlops_bot_blocked_effects\{permission="([^"]*)",service="([^"]*)"\} (\S+)$', text, re.M)}


def _refusals_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlops_bot.outbox" and r.levelno >= logging.WARNING]


def _bot_tickets(world) -> list:
    return [i for i in world.state.issues(REPO) if "mlops-bot" in i.labels]


def test_a_token_without_issues_write_blocks_the_drift_ticket_until_it_is_granted(world, make_app, caplog):
    caplog.set_level(logging.INFO)
    world.set_permissions(FINE_GRAINED, {**DEFAULT_PERMISSIONS, "issues": "read"})
    app = make_app(github_repository=REPO, github_token=FINE_GRAINED, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1)
    app.run_once()  # the first model
    _drift(app)
    for _ in range(3):
        app.run_once()

    (blocked,) = app.outbox.blocked()
    assert blocked.effect.kind == "tracker.drift" and blocked.effect.status == "pending"
    assert blocked.effect.attempts == 0  # waiting for a grant is not a failed attempt
    assert (blocked.service, blocked.permission) == ("github", "issues=write")
    assert "grant issues=write (Issues: Read and write)" in blocked.message
    assert app.store.effects(status="dead") == []
    assert _bot_tickets(world) == []
    assert _blocked_gauge(app) == {("github", "issues=write"): 1.0}
    creates = world.log.count("POST", rf"/repos/{REPO}/issues")
    assert creates == 1

    # Within the interval: not asked again. After it: asked once more, still refused, nothing more said.
    app.clock.now += INTERVAL / 2
    app.run_once()
    assert world.log.count("POST", rf"/repos/{REPO}/issues") == creates
    app.clock.now += INTERVAL
    app.run_once()
    assert world.log.count("POST", rf"/repos/{REPO}/issues") == creates + 1
    refusals = _refusals_logged(caplog)
    assert len(refusals) == 1 and "github refuses the bot issues=write" in refusals[0], refusals
    assert "tracker.drift" in refusals[0] and "10 min" in refusals[0]

    # Granted: the next cycle after the interval opens the ticket, once.
    world.set_permissions(FINE_GRAINED, DEFAULT_PERMISSIONS)
    app.clock.now += INTERVAL
    app.run_once()
    assert len(_bot_tickets(world)) == 1 and _bot_tickets(world)[0].title.startswith("Retrain tiny")
    assert app.outbox.blocked() == [] and _blocked_gauge(app) == {}
    assert app.store.effect(blocked.effect.key).status == "done"
    for _ in range(3):
        app.clock.now += INTERVAL
        app.run_once()
    assert len(_bot_tickets(world)) == 1
    assert world.log.count("POST", rf"/repos/{REPO}/issues") == creates + 2
    assert len(_refusals_logged(caplog)) == 1


def test_a_private_repository_hidden_from_the_token_blocks_the_ticket_until_it_is_given(world, make_app, caplog):
    app = make_app(github_repository=REPO, github_token=FINE_GRAINED, github_api_url=world.base_url,
                   project_paths=["models/tiny"], github_timeout_s=1)
    app.run_once()  # the first model, while the token still sees the repository
    world.set_permissions(FINE_GRAINED, DEFAULT_PERMISSIONS, repositories=["acme/elsewhere"])
    _drift(app)
    app.monitor()
    app.deliver()

    (blocked,) = app.outbox.blocked()
    assert blocked.effect.kind == "tracker.drift"
    assert (blocked.service, blocked.permission) == ("github", "metadata=read")
    assert f"give it access to {REPO}" in blocked.message
    # The refusal was a 404, told apart from a missing issue by asking for the repository itself.
    assert world.log.count("GET", rf"/repos/{REPO}", status=404) == 1
    assert _blocked_gauge(app) == {("github", "metadata=read"): 1.0}

    world.set_permissions(FINE_GRAINED, DEFAULT_PERMISSIONS, repositories=None)
    assert app.outbox.resume_blocked(service="github") == 1  # what doctor does when it sees the grant
    assert app.deliver().delivered >= 1
    assert len(_bot_tickets(world)) == 1 and app.outbox.blocked() == []


def test_a_slack_app_without_chat_write_holds_its_messages_until_the_scope_is_added(slack_emulator, make_app,
                                                                                     caplog):
    caplog.set_level(logging.INFO)
    for name in ("mlops-pipeline", "mlops-alerts", "mlops-digest"):
        slack_emulator.state.add_channel(name)
    slack_emulator.set_scopes(slack_emulator.token, [s for s in DEFAULT_SCOPES if s != "chat:write"])
    app = make_app(slack_bot_token=slack_emulator.token, slack_api_url=slack_emulator.base_url)
    app.run_once()  # the first model: its chat waits

    blocked = app.outbox.blocked()
    assert blocked and {(b.service, b.permission) for b in blocked} == {("slack", "chat:write")}
    assert all(b.effect.attempts == 0 for b in blocked) and app.store.effects(status="dead") == []
    assert "add chat:write under OAuth & Permissions" in blocked[0].message
    assert _blocked_gauge(app) == {("slack", "chat:write"): float(len(blocked))}
    posts = len(slack_emulator.calls("chat.postMessage"))
    assert posts == len(blocked)  # one try each: what waits behind them in their lanes is not tried
    app.clock.now += INTERVAL / 2
    app.run_once()
    assert len(slack_emulator.calls("chat.postMessage")) == posts
    app.clock.now += INTERVAL
    app.run_once()
    assert len(slack_emulator.calls("chat.postMessage")) == 2 * posts
    refusals = _refusals_logged(caplog)
    assert len(refusals) == 1 and "slack refuses the bot chat:write" in refusals[0], refusals
    assert slack_emulator.state.messages("mlops-pipeline") == []

    slack_emulator.set_scopes(slack_emulator.token, DEFAULT_SCOPES)
    app.clock.now += INTERVAL
    app.run_once()
    for _ in range(5):
        app.clock.now += INTERVAL
        app.run_once()
    pipeline = slack_emulator.state.messages("mlops-pipeline")
    assert len(pipeline) == 1 and pipeline[0].replies  # the first model's message, once, with its thread
    assert app.outbox.blocked() == [] and _blocked_gauge(app) == {}
    assert app.store.effects(status="pending") == [] and app.store.effects(status="dead") == []
    assert len(_refusals_logged(caplog)) == 1


# --- the outbox: blocked, not dead ---------------------------------------------------------------


class _Service:
    """A pretend service that refuses writes until ``granted``; it records each call."""

    def __init__(self) -> None:
        self.granted = False
        self.calls: list[str] = []
        self.written: list[str] = []

    def deliver(self, effect) -> Delivered:
        self.calls.append(f"deliver {effect.key}")
        if not self.granted:
            raise PermissionRefused("the app lacks chat:write; add it", service="chat", permission="chat:write")
        self.written.append(effect.key)
        return Delivered({"n": len(self.written)})

    def find_done(self, effect) -> Delivered | None:
        self.calls.append(f"find_done {effect.key}")
        if not self.granted:
            raise PermissionRefused("the app lacks chat:read; add it", service="chat", permission="chat:read")
        return Delivered({"found": True}) if effect.key in self.written else None


@pytest.fixture
def still() -> FakeClock:
    return FakeClock(step=timedelta(0))


@pytest.fixture
def store(state_url, still):
    store = Store(state_url, clock=still)
    yield store
    store.close()


def _outbox(store, service, clock, told) -> Outbox:
    return Outbox(store, {"chat.post": service}, ingest=lambda event: None, clock=clock, blocked_retry_s=600,
                  on_blocked=told.append)


def test_a_refused_effect_waits_at_the_head_of_its_lane_and_is_told_once(store, still):
    service, told = _Service(), []
    box = _outbox(store, service, still, told)
    store.add_effects("event", [NewEffect(key, "chat.post", {}, "alerts") for key in ("a1", "a2")]
                      + [NewEffect("b1", "chat.post", {}, "pipeline")])
    assert box.deliver_due() == DeliveryReport(blocked=2)  # a2 waits behind a1, never tried
    assert service.calls == ["deliver a1", "deliver b1"]
    assert [(b.effect.key, b.permission) for b in box.blocked()] == [("a1", "chat:write"), ("b1", "chat:write")]
    assert len(told) == 1 and isinstance(told[0], Blocked)
    assert (told[0].service, told[0].permission, told[0].effect_key) == ("chat", "chat:write", "a1")

    assert box.deliver_due() == DeliveryReport()  # not due again within the interval
    still.now += timedelta(seconds=601)
    assert box.deliver_due() == DeliveryReport(blocked=2) and len(told) == 1
    assert [e.attempts for e in store.effects(status="pending")] == [0, 0, 0]

    # Granted: the first to get through lets the others go at once, without waiting out their interval.
    store.block(store.effect("b1").id, service="chat", permission="chat:write", message="m",
                at=still.now + timedelta(hours=1), outcome_unknown=False)  # b1 would wait an hour more
    still.now += timedelta(seconds=601)
    service.granted = True
    assert box.deliver_due() == DeliveryReport(delivered=3)
    assert service.written == ["a1", "a2", "b1"]
    assert box.blocked() == [] and store.effects(status="dead") == [] and len(told) == 1


def test_a_refusal_while_looking_keeps_the_outcome_unknown(store, still):
    service, told = _Service(), []
    box = _outbox(store, service, still, told)
    store.add_effects("event", [NewEffect("a1", "chat.post", {}, "alerts")])
    effect = store.effect("a1")
    store.retry_later(effect.id, "TransientError: lost", at=still.now, outcome_unknown=True)  # may have happened
    assert box.deliver_due() == DeliveryReport(blocked=1)
    (blocked,) = box.blocked()
    assert blocked.permission == "chat:read" and blocked.effect.outcome_unknown
    assert len(told) == 1
    service.granted = True
    service.written.append("a1")  # the earlier attempt had happened after all
    assert box.resume_blocked() == 1
    assert box.deliver_due() == DeliveryReport(recovered=1)
    assert service.calls == ["find_done a1", "find_done a1"]


def test_a_failing_alert_does_not_stop_the_deliveries(store, still, caplog):
    caplog.set_level(logging.WARNING)
    service = _Service()

    def broken(blocked: Blocked) -> None:
        raise TransientError("chat down")

    box = Outbox(store, {"chat.post": service}, ingest=lambda event: None, clock=still, on_blocked=broken)
    store.add_effects("event", [NewEffect("a1", "chat.post", {}, "alerts")])
    assert box.deliver_due() == DeliveryReport(blocked=1)
    assert any("could not tell" in r.getMessage() for r in caplog.records)
