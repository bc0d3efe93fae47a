"""Requests and error answers checked against the services' descriptions in ../shared/refdata.

Every request a test's SDK client sends is checked where the emulators check answers
(``HttpEmulator._check_request``); these tests show that a request outside the description, and a
malformed error answer, become violations (which fail the sending test at teardown), and list the
routes each emulator serves that no description covers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.emulators.azure_devops import AzureDevOpsEmulator, azure_devops_schemas
from tests.emulators.fixtures import refdata_dir
from tests.emulators.framework import FaultRule, Request, Response
from tests.emulators.github import GitHubEmulator, github_schemas
from tests.emulators.slack import METHODS, SlackEmulator, slack_schemas


def _call(url: str, *, method: str = "GET", body: object = None, headers: dict[str, str] | None = None) -> int:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def github(no_proxy_for_loopback):
    emulator = GitHubEmulator(schemas=github_schemas(refdata_dir()))
    emulator.state.add_repo("acme/model")
    with emulator:
        yield emulator


def _github(emulator: GitHubEmulator, path: str, **kwargs) -> int:
    return _call(emulator.api(path), headers={"Authorization": f"token {emulator.token}",
                                              "Content-Type": "application/json"}, **kwargs)


# ---------------------------------------------------------------------------
# Routes no description covers


def _described(emulator, route) -> bool:
    if isinstance(emulator, SlackEmulator):
        return route.name in METHODS and any(
            emulator.schemas.operation(verb, f"/{route.name}") is not None for verb in ("get", "post"))
    return emulator.schemas.operation(route.method, route.template) is not None


@pytest.mark.parametrize("make", [
    lambda refdata: GitHubEmulator(schemas=github_schemas(refdata)),
    lambda refdata: AzureDevOpsEmulator(schemas=azure_devops_schemas(refdata)),
    lambda refdata: SlackEmulator(schemas=slack_schemas(refdata)),
], ids=["github", "azure-devops", "slack"])
def test_every_route_is_described_or_listed_with_a_reason(make) -> None:
    emulator = make(refdata_dir())
    routes = {route.key: route for route in emulator.router.routes}
    undescribed = sorted(key for key, route in routes.items() if not _described(emulator, route))
    # the allowlist (UNDESCRIBED_ROUTES, each entry commented in the emulator) is exactly the routes
    # outside the description: a route described later must leave it, so the list only shrinks
    assert undescribed == sorted(emulator.UNDESCRIBED_ROUTES)
    assert all(reason.strip() for reason in emulator.UNDESCRIBED_ROUTES.values())


# ---------------------------------------------------------------------------
# Requests


def test_the_sdk_s_requests_pass_and_a_conforming_raw_request_adds_nothing(github) -> None:
    assert _github(github, "/repos/acme/model/issues?state=all&per_page=50&since=2024-01-01T00:00:00Z") == 200
    assert _github(github, "/repos/acme/model/issues", method="POST", body={"title": "t", "labels": ["a"]}) == 201
    assert github.violations == [] and github.refused == []


@pytest.mark.parametrize(("path", "kwargs", "expected"), [
    ("/repos/acme/model/issues?bogus=1", {}, "query bogus: not a parameter of GET /repos/{owner}/{repo}/issues"),
    ("/repos/acme/model/issues?per_page=many", {}, "query per_page: 'many' is not of type 'integer' "
                                                  "[schema #/components/parameters/per-page/schema]"),
    ("/repos/acme/model/issues?state=gone", {}, "query state: 'gone' is not one of"),
    ("/repos/acme/model/issues", {"method": "POST", "body": {"title": "t", "colour": "red"}},
     "body colour: not a field of the request body"),
    ("/repos/acme/model/issues", {"method": "POST", "body": {"title": "t", "labels": "bug"}},
     "body/labels: 'bug' is not of type 'array'"),
])
def test_a_request_outside_the_description_is_a_violation_naming_route_and_schema(github, path, kwargs, expected):
    _github(github, path, **kwargs)
    assert len(github.violations) == 1, github.violations
    (violation,) = github.violations
    assert violation.startswith(f"request {kwargs.get('method', 'GET')} /api/v3{path} (route ")
    assert "(route GET /repos/{owner}/{repo}/issues)" in violation or "(route POST /repos/{owner}/{repo}/issues)" in violation
    assert expected in violation


def test_a_required_field_dropped_is_a_violation_unless_the_emulator_refuses_it(github) -> None:
    # a status without its required state: the emulator answers 422 as GitHub does, so the request is
    # only noted (the test of that refusal passes); the schema names the missing field either way
    status = _github(github, "/repos/acme/model/statuses/" + "a" * 40, method="POST", body={"context": "ci"})
    assert status == 422
    assert github.violations == []
    assert any("'state' is a required property" in r and "[schema #/paths/" in r for r in github.refused)


def test_the_description_s_required_parameters_and_bodies() -> None:
    schemas = github_schemas(refdata_dir())
    template = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
    params = {"owner": "acme", "repo": "model", "issue_number": "3"}
    assert schemas.validate_request("POST", template, path_params=params, body={"body": "hi"},
                                    content_type="application/json") == []
    assert any("'body' is a required property" in e for e in schemas.validate_request(
        "POST", template, path_params=params, body={}, content_type="application/json"))
    assert any("body: required but missing" in e for e in schemas.validate_request(
        "POST", template, path_params=params, body=None))
    assert any("issue_number: 'three' is not of type 'integer'" in e for e in schemas.validate_request(
        "GET", template, path_params={**params, "issue_number": "three"}))
    with pytest.raises(LookupError):
        schemas.validate_request("GET", "/nowhere")


def test_slack_arguments_are_checked_against_each_method_s_parameters(no_proxy_for_loopback) -> None:
    emulator = SlackEmulator(schemas=slack_schemas(refdata_dir()))
    channel = emulator.state.add_channel("mlops-alerts", members=("mlops-bot",))
    auth = {"Authorization": f"Bearer {emulator.token}", "Content-Type": "application/json"}
    with emulator:
        # JSON arrays and objects stand for the form's JSON strings; booleans for their text
        ok = {"channel": channel.id, "text": "x", "blocks": [{"type": "divider"}], "unfurl_links": False,
              "metadata": {"event_type": "e", "event_payload": {}}}
        assert _call(emulator.base_url + "chat.postMessage", method="POST", body=ok, headers=auth) == 200
        assert emulator.violations == []
        _call(emulator.base_url + "chat.postMessage", method="POST", body={**ok, "colour": "red"}, headers=auth)
        _call(emulator.base_url + "conversations.history", method="POST",
              body={"channel": channel.id, "limit": "ten"}, headers=auth)
    assert len(emulator.violations) == 1, emulator.violations
    assert "argument colour: not a parameter of chat.postMessage" in emulator.violations[0]
    # answered ok=false (invalid_arguments), as Slack would: noted, not a violation
    assert any("argument limit: 'ten' is not of type 'integer'" in r for r in emulator.refused), emulator.refused


def test_azure_requests_read_the_api_version_from_accept_and_pick_the_spec_s_variant() -> None:
    schemas = azure_devops_schemas(refdata_dir())
    template = "/{organization}/{project}/_apis/wit/workItems/{workItemId}/comments"
    params = {"organization": "o", "project": "p", "workItemId": "1"}
    # the list (x-ms-paths "...comments?") and the batch by ids ("...comments" with ids required)
    assert schemas.validate_request("GET", template, path_params=params,
                                    query={"api-version": "7.1-preview.4", "$top": "200"}) == []
    assert schemas.validate_request("POST", template, path_params=params, query={
        "api-version": "7.1-preview.4", "format": "html"}, body={"text": "hi"}) == []
    errors = schemas.validate_request("GET", template, path_params=params, query={"$top": "200"})
    assert any("query api-version: required but missing" in e for e in errors)


# ---------------------------------------------------------------------------
# Error answers


class _MalformedErrors(GitHubEmulator):
    def fault_response(self, rule: FaultRule, request: Request) -> Response:
        return Response(int(rule.kind), {"message": 500, "documentation_url": None})


@pytest.mark.parametrize("kind", ["500", "503", "429", "rate_limit_primary", "rate_limit_secondary"])
def test_injected_faults_answer_in_github_s_error_shape(github, kind) -> None:
    github.faults.add("GET /repos/{owner}/{repo}/issues", kind)
    assert _github(github, "/repos/acme/model/issues") >= 400
    assert github.violations == []


def test_a_malformed_error_answer_is_a_violation(no_proxy_for_loopback) -> None:
    emulator = _MalformedErrors(schemas=github_schemas(refdata_dir()))
    emulator.state.add_repo("acme/model")
    with emulator:
        emulator.faults.add("GET /repos/{owner}/{repo}/issues", "502")
        assert _github(emulator, "/repos/acme/model/issues") == 502
    assert any("-> 502: message: 500 is not of type 'string'" in v for v in emulator.violations), emulator.violations


def test_azure_and_slack_errors_are_checked_against_their_shapes() -> None:
    azure = azure_devops_schemas(refdata_dir())
    good = AzureDevOpsEmulator()._error(404, "gone", "ResourceNotFoundException").body
    assert azure.validate_error(good) == []
    assert any("'typeKey' is a required property" in e for e in azure.validate_error({"message": "x"}))
    slack = SlackEmulator(schemas=slack_schemas(refdata_dir()))
    assert slack.error_problems(Request("POST", "/api/x", {}, {}), Response(200)) == []  # Slack: own check
    from tests.emulators.slack import validate_answer

    assert validate_answer(slack.schemas, "chat.postMessage", {"ok": False, "error": "service_unavailable"}) == []
    assert validate_answer(slack.schemas, "chat.postMessage", {"ok": False, "error": 42}) != []


@pytest.mark.parametrize("kind", ["503", "429"])
def test_slack_and_azure_faults_are_within_their_shapes(no_proxy_for_loopback, kind) -> None:
    slack = SlackEmulator(schemas=slack_schemas(refdata_dir()))
    with slack:
        slack.faults.add("auth.test", kind)
        assert _call(slack.base_url + "auth.test", method="POST", body=b"",
                     headers={"Authorization": f"Bearer {slack.token}"}) == int(kind)
    assert slack.violations == []
    azure = AzureDevOpsEmulator(schemas=azure_devops_schemas(refdata_dir()))
    with azure:
        azure.faults.add(".*", kind)
        assert _call(azure.api("_apis/connectionData")) == int(kind)
    assert azure.violations == []
