"""What Azure DevOps sends, read into the ports' values: service hook deliveries, and the pieces of
the service's JSON (people, times, the bot's markers) that the Azure adapter reads the same way.

``parse_service_hook`` turns a delivery into one of the bot's few events; the webhook route calls
it, and ``integrations/azure_devops.py`` reads polled pull requests and comments with the same
helpers, so an event reads the same whichever way it arrived. Nothing here talks to the service.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.ports import Change, Comment, Target

__all__ = ["CLOSED_STATES", "MARKER", "marker_in", "name_of", "parse_service_hook", "time_of"]

#: the states that count as no longer open, per process template: the Completed and Removed state
#: categories. Resolved is not among them: Azure's boards treat it as In Progress ("implemented, not
#: verified yet"), and it is where a retrain ticket waits for /deploy (integrations/azure_boards_states.py)
CLOSED_STATES: dict[str, tuple[str, ...]] = {
    "Basic": ("Done",),
    "Agile": ("Closed", "Removed"),
    "Scrum": ("Done", "Removed"),
    "CMMI": ("Closed", "Removed"),
}
_ALL_CLOSED = frozenset(s for states in CLOSED_STATES.values() for s in states)
#: the hidden marker as Markdown carries it (``marker_comment``'s form)
MARKER = re.compile(r"<!-- mlops-bot:(.*?) -->")
#: the marker in rich text (work item descriptions and comments): visible text, since the
#: service's HTML sanitizer keeps text but not comments or unknown attributes
_TEXT_MARKER = re.compile(r"\[mlops-bot:([^\]<>\s]+)\]")


def parse_service_hook(payload: Mapping[str, Any], *, closed_states: Iterable[str] = _ALL_CLOSED) -> dict | None:
    """A service hook delivery as one of the bot's few events, or None when it is not one.

    ``{"kind": "merged", "change": Change}`` for a pull request updated to completed,
    ``{"kind": "comment", "comment": Comment}`` for a work item comment or a pull request comment,
    ``{"kind": "ticket_closed", "ticket_id": int, "state": str}`` for a work item moved to a closed
    state, and ``{"kind": "ignored", "event": str}`` for anything else the service sends.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("eventType"), str):
        return None
    event = payload["eventType"]
    resource = payload.get("resource")
    if not isinstance(resource, Mapping):
        return None
    closed = set(closed_states)
    if event == "git.pullrequest.updated" and resource.get("status") == "completed":
        merge = resource.get("lastMergeCommit") or {}
        repo = resource.get("repository") or {}
        if not merge.get("commitId"):
            return {"kind": "ignored", "event": event}
        when = resource.get("closedDate") or resource.get("creationDate")
        return {"kind": "merged", "change": Change(
            repo=str(repo.get("name") or ""), number=int(resource["pullRequestId"]),
            title=str(resource.get("title") or ""), body=str(resource.get("description") or ""),
            author=name_of(resource.get("createdBy")), commit=str(merge["commitId"]), merged_at=time_of(when),
            url=str(resource.get("url") or ""),
            branch=str(resource.get("targetRefName") or "").removeprefix("refs/heads/"))}
    if event == "ms.vss-code.git-pullrequest-comment-event":
        comment, pull = resource.get("comment") or {}, resource.get("pullRequest") or {}
        if comment.get("commentType") == "system" or not comment.get("content"):
            return {"kind": "ignored", "event": event}
        repo = (pull.get("repository") or {}).get("name") or ""
        number = int(pull.get("pullRequestId") or 0)
        links = comment.get("_links") or {}
        href = str((links.get("threads") or {}).get("href") or (links.get("self") or {}).get("href") or "")
        thread = re.search(r"/threads/(\d+)", href)
        # the id polling gives the same comment (pull:thread:comment), so either way it is handled once
        ident = f"{number}:{thread.group(1)}:{comment.get('id')}" if thread else str(comment.get("id"))
        return {"kind": "comment", "comment": Comment(
            id=ident, target=Target("change", str(repo), number),
            author=name_of(comment.get("author")), body=str(comment["content"]),
            created_at=time_of(comment.get("publishedDate")),
            by_bot="<!-- mlops-bot:" in str(comment["content"]))}
    if event == "workitem.commented":
        fields = resource.get("fields") or {}
        text = str(fields.get("System.History") or "")
        if not text:
            return {"kind": "ignored", "event": event}
        return {"kind": "comment", "comment": Comment(
            id=f"{resource.get('id')}:{resource.get('rev')}",
            target=Target("ticket", str(fields.get("System.TeamProject") or ""), int(resource["id"])),
            author=name_of(fields.get("System.ChangedBy")), body=text,
            created_at=time_of(fields.get("System.ChangedDate") or datetime.now(UTC)),
            url=str(resource.get("url") or ""), by_bot=marker_in(text) is not None)}
    if event == "workitem.updated":
        change = (resource.get("fields") or {}).get("System.State") or {}
        new_state = change.get("newValue") if isinstance(change, Mapping) else None
        if new_state in closed and change.get("oldValue") not in closed:
            # ``id`` is the update's; the work item's is ``workItemId`` (0 in old samples) or the revision's
            number = resource.get("workItemId") or (resource.get("revision") or {}).get("id") or resource["id"]
            return {"kind": "ticket_closed", "ticket_id": int(number), "state": new_state}
    return {"kind": "ignored", "event": event}


def marker_in(text: str | None) -> str | None:
    """The marker a rich-text or Markdown body carries (either form), if any."""
    if not text:
        return None
    found = _TEXT_MARKER.search(html.unescape(text)) or MARKER.search(text)
    return found.group(1) if found else None


def name_of(identity: Any) -> str:
    """A user as the bot names them: the unique name (e-mail) when there is one."""
    if identity is None:
        return ""
    if isinstance(identity, str):
        return identity
    if isinstance(identity, Mapping):
        return str(identity.get("uniqueName") or identity.get("displayName") or "")
    return str(getattr(identity, "unique_name", None) or getattr(identity, "display_name", None) or "")


def time_of(value: Any) -> datetime:
    """A time as the service sends it (ISO 8601) or the client gives it, in UTC when it names no zone."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    # the service sends up to 7 fraction digits; Python reads 6
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
