"""POST /webhooks/github: signatures, bad bodies, repeated deliveries, and every example delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bot.events import CommandGiven
from bot.webhooks import create_app
from integrations.github_payloads import comment_from_json
from tests.conftest import REPO

SECRET = "It's a Secret to Everybody"
REFDATA = REPO.parent / "shared" / "refdata"
EXAMPLES = REFDATA / "github" / "webhooks" / "examples" / "api.github.com"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def web(make_app):
    app = make_app(github_webhook_secret=SECRET)
    woken = []
    client = TestClient(create_app(app, wake=lambda: woken.append(1)))
    client.bot, client.woken = app, woken
    return client


def deliver(client, event: str, payload, *, delivery: str = "d-1", signature: str | None = None, body: bytes | None = None):
    raw = body if body is not None else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
               "X-Hub-Signature-256": sign(raw) if signature is None else signature}
    return client.post("/webhooks/github", content=raw, headers=headers)


def comment_payload(body: str = "/status", comment_id: int = 7, number: int = 3, pull: bool = True) -> dict:
    issue = {"number": number, "title": "t", **({"pull_request": {"url": "x"}} if pull else {})}
    return {
        "action": "created",
        "issue": issue,
        "comment": {"id": comment_id, "body": body, "user": {"login": "alice", "type": "User"},
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                    "html_url": f"https://github.com/org/repo/pull/{number}#issuecomment-{comment_id}"},
        "repository": {"full_name": "org/repo"},
        "sender": {"login": "alice"},
    }


def test_a_signed_comment_is_stored_once_and_wakes_the_deliverer(web):
    first = deliver(web, "issue_comment", comment_payload())
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    assert web.woken == [1]
    again = deliver(web, "issue_comment", comment_payload())  # GitHub's redelivery: same id
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    other_delivery = deliver(web, "issue_comment", comment_payload(), delivery="d-2")  # same comment, new delivery
    assert other_delivery.json()["status"] == "seen before"
    assert len(web.bot.store.events(kind="command")) == 1


def test_polling_and_webhooks_share_event_keys(web):
    payload = comment_payload(comment_id=99)
    deliver(web, "issue_comment", payload)
    polled = CommandGiven("github", comment_from_json("org/repo", payload["comment"]))
    assert web.bot.lifecycle.handle(polled) is False  # the poller sees it later: not handled twice


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"signature": ""}, 401, "bad or missing X-Hub-Signature-256"),
        ({"signature": "sha256=" + "0" * 64}, 401, "bad or missing X-Hub-Signature-256"),
        ({"signature": sign(b"{}", "wrong secret")}, 401, "bad or missing"),
        ({"body": b"not json{"}, 400, "the body is not JSON"),
        ({"body": b"[1, 2]"}, 400, "cannot read this issue_comment delivery"),
        ({"body": json.dumps({"action": "created"}).encode()}, 400, "has no comment, issue, repository"),
    ],
)
def test_bad_deliveries_are_refused_clearly(web, kwargs, status, message):
    response = deliver(web, "issue_comment", None, **kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert web.bot.store.events() == []


def test_an_oversized_body_is_413(make_app):
    app = make_app(github_webhook_secret=SECRET, webhook_max_bytes=2048)
    client = TestClient(create_app(app))
    response = deliver(client, "issue_comment", None, body=b"{" + b" " * 5000 + b"}")
    assert response.status_code == 413


def test_without_a_secret_every_delivery_is_refused(make_app):
    client = TestClient(create_app(make_app()))
    response = deliver(client, "issue_comment", comment_payload())
    assert response.status_code == 403 and "GITHUB_WEBHOOK_SECRET" in response.json()["error"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_merged_pull_request_becomes_one_change_event(web):
    pull = {"number": 5, "merged": True, "merged_at": "2026-01-02T00:00:00Z", "merge_commit_sha": "abc123",
            "title": "Tune", "body": "Fixes #2", "html_url": "https://github.com/org/repo/pull/5",
            "user": {"login": "bob"}, "base": {"ref": "main", "repo": {"full_name": "org/repo"}},
            "head": {"ref": "tune", "repo": {"full_name": "org/repo"}}}
    response = deliver(web, "pull_request", {"action": "closed", "pull_request": pull, "repository": {"full_name": "org/repo"}})
    assert response.status_code == 202 and response.json()["event"] == "github:merged:org/repo:abc123"
    unmerged = deliver(web, "pull_request", {"action": "closed", "pull_request": {**pull, "merged": False},
                                             "repository": {"full_name": "org/repo"}}, delivery="d-3")
    assert unmerged.json()["status"] == "ignored"


def example_deliveries() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.json")) if EXAMPLES.is_dir() else []


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="../shared/refdata not found: the example deliveries live there")
@pytest.mark.parametrize("path", example_deliveries(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_delivery_is_accepted_or_cleanly_ignored(web, path):
    event = path.parent.name
    payload = json.loads(path.read_text())
    response = deliver(web, event, payload, delivery=path.name)
    assert response.status_code in {200, 202}, response.text
    assert response.json()["status"] in {"accepted", "ignored", "pong"}
    expected = {"ping": "pong", "issue_comment": "accepted" if payload.get("action") == "created" else "ignored"}
    if event in expected:
        assert response.json()["status"] == expected[event]
