"""GitHub's JSON (REST responses and webhook deliveries share these shapes) into the ports' values.

The poller and the webhook route both call these, so a comment or a merge reads the same whichever
way it arrived, and its event key is the same: that is what lets polling and webhooks run together
without handling anything twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from integrations.ports import Change, Comment, Target

__all__ = ["CardEdit", "CheckClick", "WebhookFact", "change_from_pull", "comment_from_json", "parse_delivery"]

_NUMBER_IN_URL = re.compile(r"/(?P<kind>issues|pull)/(?P<number>\d+)")


def _time(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def comment_from_json(repo: str, comment: dict[str, Any], *, issue: dict[str, Any] | None = None,
                      bot_login: str = "", edited: bool | None = None) -> Comment:
    """A comment from the REST API or a webhook; whether it sits on a pull request comes from the
    issue (when given) or from the comment's own html_url (``/pull/N``)."""
    match = _NUMBER_IN_URL.search(comment.get("html_url", "")) or _NUMBER_IN_URL.search(comment.get("issue_url", ""))
    if issue is not None:
        number, on_pull = int(issue["number"]), "pull_request" in issue and issue["pull_request"] is not None
    elif match:
        number, on_pull = int(match["number"]), match["kind"] == "pull"
    else:
        raise ValueError(f"comment {comment.get('id')} names no issue or pull request")
    user = comment.get("user") or {}
    login = user.get("login", "")
    if edited is None:
        edited = bool(comment.get("updated_at")) and comment.get("updated_at") != comment.get("created_at")
    return Comment(
        id=str(comment["id"]),
        target=Target("change" if on_pull else "ticket", repo, number),
        author=login,
        body=comment.get("body") or "",
        created_at=_time(comment.get("created_at")),
        url=comment.get("html_url", ""),
        edited=edited,
        by_bot=_is_bot(login, bot_login),
    )


def change_from_pull(pull: dict[str, Any], *, paths: tuple[str, ...] = ()) -> Change:
    """A merged pull request; ``paths`` come from its files, which the payload does not carry."""
    base_repo = (pull.get("base") or {}).get("repo") or {}
    head_repo = (pull.get("head") or {}).get("repo") or {}
    return Change(
        repo=base_repo.get("full_name", ""),
        number=int(pull["number"]),
        title=pull.get("title") or "",
        body=pull.get("body") or "",
        author=(pull.get("user") or {}).get("login", ""),
        commit=pull.get("merge_commit_sha") or "",
        merged_at=_time(pull.get("merged_at")),
        url=pull.get("html_url", ""),
        branch=(pull.get("base") or {}).get("ref", ""),
        paths=paths,
        from_fork=bool(head_repo) and head_repo.get("full_name") != base_repo.get("full_name"),
    )


@dataclass(frozen=True)
class CheckClick:
    """A person's click on a check run: one of its buttons (``requested_action``, with the button's
    ``identifier``), its *Re-run* (``rerequested``), or *Re-run all checks* of a commit's suite
    (``suite_rerequested``: no check run, only the commit)."""

    action: Literal["requested_action", "rerequested", "suite_rerequested"]
    repo: str
    sender: str
    head_sha: str
    check_run_id: str = ""
    name: str = ""
    external_id: str = ""  # the run's id on the integrator's side: the bot's pipeline run id
    identifier: str = ""
    pulls: tuple[int, ...] = ()  # the open pull requests whose head is the commit, as GitHub lists them


@dataclass(frozen=True)
class CardEdit:
    """A person's (or an automation's) edit of a card on a project (``projects_v2_item`` edited).
    GitHub names the card, its project and the field that changed, not the new value: the card is
    read back for that."""

    item_id: str  # the item's node id
    project_id: str
    content_id: str
    content_type: str  # "Issue", "PullRequest" or "DraftIssue"
    field_id: str  # the changed field's node id ("" when the delivery names none)
    sender: str
    by_bot: bool


class WebhookFact:
    """What a delivery says, in the ports' words: a comment, a merge, a closed issue, a click on a
    check run, a card moved on a project, or nothing."""

    def __init__(self, kind: str, *, comment: Comment | None = None, change: Change | None = None,
                 ticket: int | None = None, repo: str = "", by: str = "", ignored: str = "",
                 click: CheckClick | None = None, body: str = "", card: CardEdit | None = None):
        self.kind, self.comment, self.change, self.ticket = kind, comment, change, ticket
        self.repo, self.by, self.ignored, self.click, self.card = repo, by, ignored, click, card
        self.body = body  # an edited issue's new body (``ticket_edited``)


def parse_delivery(event: str, payload: dict[str, Any], *, bot_login: str = "") -> WebhookFact:
    """Read one webhook delivery. Raises ValueError (a 400) when a known event lacks what it needs."""
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    action = payload.get("action", "")
    repo = (payload.get("repository") or {}).get("full_name", "")
    if event == "ping":
        return WebhookFact("ping", repo=repo)
    if event == "issue_comment":
        if action != "created":
            return WebhookFact("ignored", repo=repo, ignored=f"issue_comment {action}: only new comments carry commands")
        _require(payload, "comment", "issue", "repository")
        return WebhookFact("comment", repo=repo, comment=comment_from_json(
            repo, payload["comment"], issue=payload["issue"], bot_login=bot_login, edited=False))
    if event == "pull_request":
        _require(payload, "pull_request", "repository")
        pull = payload["pull_request"]
        if action == "closed" and pull.get("merged"):
            return WebhookFact("merged", repo=repo, change=change_from_pull(pull))
        return WebhookFact("ignored", repo=repo, ignored=f"pull_request {action}: only merges start a run")
    if event == "issues":
        _require(payload, "issue", "repository")
        if action == "closed":
            return WebhookFact("ticket_closed", repo=repo, ticket=int(payload["issue"]["number"]),
                               by=(payload.get("sender") or {}).get("login", ""))
        if action == "edited" and isinstance((payload.get("changes") or {}).get("body"), dict):
            # A body edit (a box of the bot's checklist ticked, maybe): its editor is the sender,
            # whose permission the tick acts with. Title-only edits carry no changes.body.
            _require(payload, "sender")
            return WebhookFact("ticket_edited", repo=repo, ticket=int(payload["issue"]["number"]),
                               by=str(payload["sender"].get("login") or ""),
                               body=str(payload["issue"].get("body") or ""))
        return WebhookFact("ignored", repo=repo, ignored=f"issues {action}: only closing and body edits matter to "
                                                         "the bot")
    if event == "check_run":
        if action not in {"requested_action", "rerequested"}:
            return WebhookFact("ignored", repo=repo, ignored=f"check_run {action}: only a click (a button, "
                                                             "Re-run) matters to the bot")
        _require(payload, "check_run", "repository", "sender")
        run = payload["check_run"]
        identifier = ""
        if action == "requested_action":
            _require(payload, "requested_action")
            identifier = str(payload["requested_action"].get("identifier") or "")
        return WebhookFact("check_click", repo=repo, click=CheckClick(
            action=action, repo=repo, sender=str(payload["sender"]["login"]), head_sha=str(run["head_sha"]),
            check_run_id=str(run["id"]), name=str(run.get("name") or ""), external_id=str(run.get("external_id") or ""),
            identifier=identifier, pulls=_pull_numbers(run)))
    if event == "check_suite":
        if action != "rerequested":
            return WebhookFact("ignored", repo=repo, ignored=f"check_suite {action}: only Re-run all checks "
                                                             "(rerequested) matters to the bot")
        _require(payload, "check_suite", "repository", "sender")
        suite = payload["check_suite"]
        return WebhookFact("check_click", repo=repo, click=CheckClick(
            action="suite_rerequested", repo=repo, sender=str(payload["sender"]["login"]),
            head_sha=str(suite["head_sha"]), pulls=_pull_numbers(suite)))
    if event == "projects_v2_item":  # an organization's or a user's project: no repository in the delivery
        if action != "edited":
            return WebhookFact("ignored", ignored=f"projects_v2_item {action}: only a card's edited fields matter "
                                                  "to the bot")
        _require(payload, "projects_v2_item", "sender")
        changed = (payload.get("changes") or {}).get("field_value")
        if not isinstance(changed, dict):
            return WebhookFact("ignored", ignored="projects_v2_item edited: no field value changed")
        item, login = payload["projects_v2_item"], str(payload["sender"].get("login") or "")
        return WebhookFact("card_edited", by=login, card=CardEdit(
            item_id=str(item["node_id"]), project_id=str(item["project_node_id"]),
            content_id=str(item.get("content_node_id") or ""), content_type=str(item.get("content_type") or ""),
            field_id=str(changed.get("field_node_id") or ""), sender=login,
            by_bot=_is_bot(login, bot_login)))
    return WebhookFact("ignored", repo=repo, ignored=f"{event or 'unnamed'} events are not used by the bot")


def _is_bot(login: str, bot_login: str) -> bool:
    """Whether ``login`` is the bot's: its user, or its App's ``slug[bot]``."""
    return bool(bot_login) and login.lower() in {bot_login.lower(), f"{bot_login.lower()}[bot]"}


def _pull_numbers(run_or_suite: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(pull["number"]) for pull in run_or_suite.get("pull_requests") or []
                 if isinstance(pull, dict) and "number" in pull)


def _require(payload: dict[str, Any], *keys: str) -> None:
    missing = [key for key in keys if not isinstance(payload.get(key), dict)]
    if missing:
        raise ValueError(f"the delivery has no {', '.join(missing)} object")
