"""The ports: the few things the bot asks of source control, a tracker, chat and a pipeline engine.

Each is a narrow ``typing.Protocol``; ``integrations/local.py`` satisfies them on embedded
defaults and the GitHub, Azure DevOps and Slack adapters with the real SDKs. The values that cross
a port are plain frozen dataclasses, so nothing above this line sees an SDK object.

Exactly-once writes: every write takes a ``marker``, a short string the adapter must embed where
it can be found again but not seen (an HTML comment in a comment body, message metadata in
chat). Before repeating a write whose outcome is unknown, the outbox asks ``find_*`` for the
marker; an adapter that cannot search returns None and the write is repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "Change",
    "ChangeHead",
    "Chat",
    "ChatAction",
    "Comment",
    "MessageRef",
    "PermanentError",
    "Permission",
    "PipelineEngine",
    "RunHandle",
    "SourceControl",
    "Target",
    "StillRunning",
    "Ticket",
    "Tracker",
    "TransientError",
    "marker_comment",
    "with_marker",
]


class TransientError(RuntimeError):
    """A call failed in a way worth retrying later (5xx, timeout, rate limit, connection lost).

    ``outcome_unknown`` is True when the request may have been applied (a timeout or lost
    response on a write), so the write must be checked for before being repeated.
    ``retry_after`` is the service's own hint, in seconds, when it gave one.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


class StillRunning(TransientError):
    """Work started elsewhere (a pipeline on remote runners) is still going: look again later.

    Not a failure: it does not count against an effect's attempts, however long the work takes.
    """

    def __init__(self, message: str, *, retry_after: float = 30.0):
        super().__init__(message, outcome_unknown=True, retry_after=retry_after)


class PermanentError(RuntimeError):
    """A call failed in a way that retrying cannot fix (not found, refused, invalid): give up on it."""


class Permission(IntEnum):
    """Who may do what, in GitHub's order; other services map onto it."""

    none = 0
    read = 1
    triage = 2
    write = 3
    maintain = 4
    admin = 5


@dataclass(frozen=True)
class Target:
    """Where a comment lives or a reply goes: a change (pull request) or a ticket, in a repository."""

    kind: Literal["change", "ticket", "chat"]  # "chat": a command typed in a chat channel; ``repo`` is the channel
    repo: str
    number: int

    def __str__(self) -> str:
        if self.kind == "chat":
            return f"#{self.repo}"
        return f"{self.repo}#{self.number}" if self.kind == "ticket" else f"{self.repo}!{self.number}"


@dataclass(frozen=True)
class Change:
    """A merged change (pull request, or a commit on the watched branch)."""

    repo: str
    number: int
    title: str
    body: str
    author: str
    commit: str  # the merge commit
    merged_at: datetime
    url: str = ""
    branch: str = "main"
    paths: tuple[str, ...] = ()  # files the change touched, for the project path filter
    from_fork: bool = False

    @property
    def target(self) -> Target:
        return Target("change", self.repo, self.number)


@dataclass(frozen=True)
class ChangeHead:
    """Where a change's code is: its head commit, the repository holding it (a fork's, maybe), its state."""

    repo: str
    number: int
    commit: str  # the head commit
    head_repo: str  # "owner/name"; empty when the fork was deleted
    from_fork: bool
    state: Literal["open", "closed", "merged"]
    merge_commit: str = ""


@dataclass(frozen=True)
class Comment:
    """A comment someone wrote on a change or a ticket."""

    id: str
    target: Target
    author: str
    body: str
    created_at: datetime
    url: str = ""
    edited: bool = False
    by_bot: bool = False


@dataclass(frozen=True)
class Ticket:
    id: int
    key: str  # what the bot tracks with it, e.g. "retrain:breast-cancer"
    title: str
    state: Literal["open", "closed"]
    url: str = ""
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class MessageRef:
    """A posted chat message; ``thread`` is the parent's id for replies (Slack's ts / thread_ts)."""

    channel: str
    id: str
    thread: str | None = None


@dataclass(frozen=True)
class ChatAction:
    """A button under a chat message that gives a command about a model: ``retrain``, ``deploy``
    (``version``) or ``rollback`` (of ``version``, the one the message deployed)."""

    command: Literal["retrain", "deploy", "rollback"]
    model: str
    version: int | None = None


@dataclass(frozen=True)
class RunHandle:
    run_id: str
    status: Literal["queued", "running", "succeeded", "not_promoted", "failed"]
    url: str = ""
    result: dict[str, Any] = field(default_factory=dict)  # RunResult.to_dict() once finished


@runtime_checkable
class SourceControl(Protocol):
    name: str

    def merged_changes(self, cursor: str | None) -> tuple[list[Change], str | None]:
        """Changes merged since ``cursor`` (oldest first) and the cursor to store for next time."""

    def new_comments(self, cursor: str | None) -> tuple[list[Comment], str | None]:
        """Comments written since ``cursor`` (oldest first) and the next cursor."""

    def reply(self, target: Target, body: str, *, marker: str) -> str:
        """Post a comment; returns its id."""

    def edit_reply(self, target: Target, comment_id: str, body: str, *, marker: str) -> None:
        """Replace the body of a comment the bot posted."""

    def find_reply(self, target: Target, marker: str) -> str | None:
        """The id of the bot's comment carrying ``marker``, if there is one."""

    def react(self, comment: Comment, reaction: str) -> None:
        """Add a reaction (``eyes``, ``+1``, ``-1``, ``rocket``, ``confused``); idempotent."""

    def set_status(self, repo: str, commit: str, *, state: str, description: str, context: str, url: str = "") -> None:
        """Set a commit status (``pending``, ``success``, ``failure``, ``error``); idempotent per context."""

    def permission(self, repo: str, user: str) -> Permission:
        """The user's permission on the repository."""

    def linked_tickets(self, change: Change, patterns: tuple[str, ...]) -> list[tuple[str, int]]:
        """Tickets the change refers to, as (tracker name, number): ``Fixes #12``, ``AB#34``."""

    # Optional: ``change_paths(repo, number) -> list[str]``, the files a change touched, for changes
    # that arrive without them (a webhook's pull request). Adapters whose changes always carry their
    # paths leave it out.
    # Optional: ``change_head(repo, number) -> ChangeHead``, for services where a change may come
    # from a fork: commands that run a change's code check it first (see ``bot/fork_guard.py``).
    # Optional: ``change_messages(repo, number) -> list[str]``, a pull request's commit messages,
    # read for ``AB#12`` links. Optional: ``link_url(target) -> str``, what a tracker links a change
    # by when it is not its web URL (Azure Repos: the pull request's ``vstfs:///`` artifact).
    # Optional: ``status_of(repo, commit, context) -> (state, description) | None``, the newest status
    # of a context, so a status whose answer was lost is not set twice.
    # Optional: ``commenters_can_read = True`` where whoever can comment can read the repository
    # (GitHub): read-level commands then skip the permission lookup.


@runtime_checkable
class Tracker(Protocol):
    name: str

    def find_open(self, key: str, *, opened_by: str | None = None) -> Ticket | None:
        """The open ticket the bot keeps for ``key`` (searching by its marker), if any; with
        ``opened_by``, only if that ticket was opened by the write with that marker (``open``'s
        ``marker``), so a write whose answer was lost can tell its own ticket from another's."""

    def open(self, key: str, title: str, body: str, labels: tuple[str, ...], *, marker: str) -> Ticket:
        """Open a ticket for ``key``; its body carries the key's marker (``find_open``) and, when it
        differs, ``marker``, the marker of this write (the effect's key)."""

    def update(self, ticket: Ticket, *, title: str | None = None, body: str | None = None,
               labels: tuple[str, ...] | None = None) -> Ticket:
        ...

    def comment(self, ticket_id: int, body: str, *, marker: str) -> str:
        ...

    def find_comment(self, ticket_id: int, marker: str) -> str | None:
        ...

    def close(self, ticket_id: int) -> None:
        """Close the ticket; idempotent."""

    def get(self, ticket_id: int) -> Ticket | None:
        ...

    # Optional: ``link(ticket_id, url, body, *, marker, title="") -> str``, the ticket linked to a
    # change (``AB#12``) with a comment, once; ``linked``, ``already`` or ``missing`` (Azure Boards).


@runtime_checkable
class Chat(Protocol):
    name: str

    def post(self, channel: str, text: str, *, marker: str, blocks: list[dict] | None = None) -> MessageRef:
        ...

    def update(self, message: MessageRef, text: str, *, blocks: list[dict] | None = None) -> None:
        ...

    def reply(self, parent: MessageRef, text: str, *, marker: str) -> MessageRef:
        ...

    def find_message(self, channel: str, marker: str, *, thread: str | None = None) -> MessageRef | None:
        ...

    # Optional: an adapter that can show buttons sets ``shows_actions = True`` and takes
    # ``actions: Sequence[ChatAction]`` on ``post`` and ``update``; callers pass them only then.


@runtime_checkable
class PipelineEngine(Protocol):
    name: str

    def start(self, project: str, *, run_id: str, trigger: str, reason: str, context: dict[str, Any],
              promote: bool = True) -> RunHandle:
        """Start (or, for an in-process engine, run to the end) the pipeline; ``run_id`` makes it idempotent."""

    def status(self, run_id: str) -> RunHandle | None:
        """Where the run stands; None if the engine never saw it."""


def marker_comment(marker: str) -> str:
    """The hidden form of a marker inside Markdown or HTML bodies."""
    return f"<!-- mlops-bot:{marker} -->"


def with_marker(body: str, marker: str) -> str:
    """A Markdown body with its marker hidden at the end (no marker: the body as it is)."""
    return f"{body}\n\n{marker_comment(marker)}" if marker else body
