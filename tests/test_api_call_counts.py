"""Each SDK's requests are counted once each, as the emulator received them: the answers the SDK
retried itself, the tries that got no answer ("error"), error answers and 304s included.

The counts are read from the bot's own metrics (``Observability``, fed through ``observe_adapters``)
and compared with the emulator's request log over the same calls, so a missed or a doubled count
fails. Several adapters sharing one client are observed, as ``bot.app.build`` does.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bot.observability import Observability, observe_adapters
from integrations.ports import PermanentError, ReportsApiCalls, TransientError

REPO = "acme/model"


def counted(observability: Observability, service: str) -> Counter:
    """The ``mlops_bot_api_requests`` counts of ``service``, by status (zeros left out)."""
    counts: Counter = Counter()
    for family in observability.registry.collect():
        for sample in family.samples:
            if sample.name == "mlops_bot_api_requests_total" and sample.labels["service"] == service and sample.value:
                counts[sample.labels["status"]] += int(sample.value)
    return counts


def received(emulator) -> Counter:
    """What the emulator's log says it was sent, by the status it answered ("error": dropped unanswered)."""
    return Counter("error" if entry.status is None else str(entry.status) for entry in emulator.log.entries)


# --- GitHub: PyGithub, counted by the urllib3 Retry it is built with --------------------------------


def test_github_requests_are_counted_once_each(github_emulator):
    from integrations.github import (ContentPacer, GitHubActionsEngine, GitHubAuth, GitHubClient, GitHubIssues,
                                     GitHubSource, connect)

    github = github_emulator
    github.state.add_repo(REPO)
    pull = github.state.open_pull(REPO, "Tune", "body", "bob", files=["models/tiny/mlops.toml"])
    github.state.add_comment(REPO, pull, "bob", "/status")
    # As production builds it: its own retries of reads (502/503/504 and dropped answers).
    client = GitHubClient(connect(GitHubAuth(token=github.token), base_url=github.base_url, timeout=10), REPO,
                          bot_login="mlops-bot", pacer=ContentPacer.unpaced())
    source, issues = GitHubSource(client), GitHubIssues(client)
    engine = GitHubActionsEngine(client, workflow="train.yml")
    observability = Observability()
    observe_adapters(observability, source, issues, engine)  # three adapters, one client
    assert all(isinstance(adapter, ReportsApiCalls) for adapter in (source, issues, engine))
    github.log.clear()

    source.new_comments(None)
    _, cursor = source.new_comments(None)
    source.new_comments(cursor)  # unchanged: 304
    ticket = issues.open("retrain:tiny", "Retrain tiny", "body", ("mlops-bot",), marker="m-1")
    github.faults.add(rf"GET /repos/{REPO}/issues/{ticket.id}", 502)  # retried by the client itself
    assert issues.get(ticket.id) is not None
    github.faults.add(rf"GET /repos/{REPO}/issues/{ticket.id}", "lost_response")  # no answer: retried too
    assert issues.get(ticket.id) is not None
    github.faults.add(rf"POST /repos/{REPO}/issues/{ticket.id}/comments", 502)  # a write: not retried
    with pytest.raises(TransientError):
        issues.comment(ticket.id, "once", marker="m-2")
    github.faults.add(rf"POST /repos/{REPO}/issues/{ticket.id}/comments", "lost_response")
    with pytest.raises(TransientError):
        issues.comment(ticket.id, "twice", marker="m-3")
    assert issues.get(9999) is None  # 404, then the repository asked for (visible: a missing issue)
    observability.readiness.check()

    sent = received(github)
    assert {"200", "201", "304", "404", "502", "error"} <= set(sent), sent  # every kind of answer was made
    assert counted(observability, "github") == sent
    assert observability.registry.get_sample_value("mlops_bot_github_rate_limit_remaining",
                                                   {"resource": "core"}) is not None


def test_a_github_client_observed_again_reports_to_the_new_observer_only(github_emulator):
    from integrations.github import GitHubAuth, GitHubClient, GitHubSource, connect

    github_emulator.state.add_repo(REPO)
    source = GitHubSource(GitHubClient(connect(GitHubAuth(token=github_emulator.token),
                                               base_url=github_emulator.base_url, timeout=10), REPO))
    first, second = Observability(), Observability()
    observe_adapters(first, source)
    source.readiness()
    observe_adapters(second, source)
    source.readiness()
    assert counted(first, "github") == Counter({"200": 1}) and counted(second, "github") == Counter({"200": 1})


# --- Azure DevOps: msrest, counted by the Retry its session callback hands to each session ---------


def test_azure_devops_requests_are_counted_once_each(azure_devops_emulator):
    from integrations.azure_devops import AzureBoards, AzurePipelines, AzureRepos, connect

    ado = azure_devops_emulator
    ado.state.add_project("proj")
    ado.state.add_repo("proj", "model")
    client = connect(ado.base_url, ado.pat, timeout=2, retries=2, backoff=0)
    boards = AzureBoards(client, project="proj", area_path="proj\\ML")
    repos = AzureRepos(client, project="proj", repository="model", bot_user="mlops-bot@example.com")
    engine = AzurePipelines(client, project="proj", pipeline_id=1)
    observability = Observability()
    observe_adapters(observability, boards, repos, engine)
    # The SDK's Connection asks for the resource areas with a client of its own when the first SDK
    # client is built (the one request no public hook reaches): build them before counting.
    for kind in ("wit", "work", "git", "location"):
        client.client(kind)
    ado.log.clear()

    ticket = boards.open("retrain:tiny", "Retrain tiny", "body", ("mlops-bot",), marker="m-1")
    item = rf"/{ado.organization}/proj/_apis/wit/workItems/{ticket.id}"
    ado.faults.add(f"GET (?i:{item})", 503)  # retried by msrest itself
    assert boards.get(ticket.id) is not None
    ado.faults.add(f"GET (?i:{item})", "lost_response")  # no answer: retried too
    assert boards.get(ticket.id) is not None
    ado.faults.add(f"PATCH (?i:{item})", 429, retry_after=7)  # a write: not retried; Retry-After kept
    with pytest.raises(TransientError) as throttled:
        boards.update(ticket, title="Retrain tiny now")
    assert throttled.value.retry_after == 7
    with pytest.raises(PermanentError, match="404"):
        client.call("wit", "get_work_item", 99999, project="proj")
    repos.merged_changes(None)  # a plain JSON read (get_json), through msrest too
    observability.readiness.check()

    sent = received(ado)
    assert {"200", "404", "429", "503", "error"} <= set(sent), sent
    assert counted(observability, "azure") == sent


# --- Slack: slack-sdk, counted by the first of its retry handlers ----------------------------------


def test_slack_requests_are_counted_once_each(slack_emulator):
    from integrations.ports import Permission
    from integrations.slack import SlackChat, connect

    slack = slack_emulator
    channel = slack.state.add_channel("mlops-pipeline").id
    carol = slack.state.add_user("carol").id
    slack.state.add_usergroup("ml-leads", members=["carol"])
    chat = SlackChat(connect(slack.token, base_url=slack.base_url, timeout=2, backoff=0.01))
    observability = Observability()
    observe_adapters(observability, chat)
    slack.log.clear()

    message = chat.post(channel, "hello", marker="m-1")
    slack.faults.add("POST /api/chat.update", 429, retry_after=1)  # waited out by the SDK's handler
    chat.update(message, "hello again")
    slack.faults.add("POST /api/auth.test", "lost_response")  # a read without an answer: retried
    observability.readiness.check()
    assert chat.permission(carol, {"@ml-leads": "write"}) == Permission.write  # the lookup client's reads

    sent = received(slack)
    assert {"200", "429", "error"} <= set(sent), sent
    assert counted(observability, "slack") == sent
