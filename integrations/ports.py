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
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ApiCallObserver",
    "BoardItem",
    "Change",
    "ChangeHead",
    "Chat",
    "ChatAction",
    "CheckAnnotation",
    "CheckButton",
    "CheckReport",
    "CardMove",
    "CheckRunRef",
    "Comment",
    "DescribesTickets",
    "EditsTicketBody",
    "LinksChanges",
    "ListsTickets",
    "MessageRef",
    "NamesChangesForLinks",
    "PermanentError",
    "Permission",
    "PermissionRefused",
    "PipelineEngine",
    "ProjectField",
    "ProjectLayout",
    "ReadsBoardItems",
    "ReadsCommitStatuses",
    "ReportsChangeHeads",
    "ReportsChangedPaths",
    "ReportsCheckRuns",
    "ReportsCommitMessages",
    "ResolvesPermissions",
    "ReportsApiCalls",
    "RunHandle",
    "ShowsActions",
    "SourceControl",
    "Target",
    "StillRunning",
    "TakesTypedComments",
    "Ticket",
    "TicketBoard",
    "TicketBody",
    "Tracker",
    "TransientError",
    "UploadsFiles",
    "Whispers",
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


class PermissionRefused(PermanentError):
    """The service refused the bot for want of a permission its token, App or install lacks.

    Retrying cannot fix it, but a person can: ``permission`` is what to grant, in the service's own
    words (GitHub's ``issues=write``, a classic token's ``repo`` scope, Slack's ``chat:write``), and
    the message says how. So the outbox does not give the work up: it parks it, says once what to
    grant, and tries again now and then, until the grant lets it through.
    """

    def __init__(self, message: str, *, service: str, permission: str) -> None:
        super().__init__(message)
        self.service = service
        self.permission = permission


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
        """As people read it, in every message and command: ``change:48``, ``ticket:12``, ``#channel``."""
        if self.kind == "chat":
            return f"#{self.repo}"
        return f"{self.kind}:{self.number}"

    @property
    def key(self) -> str:
        """Its identity in the bot's state (outbox lanes, remembered comments): never reworded, so
        what a running bot stored is found again after an upgrade."""
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
class TicketBody:
    """A ticket's body as the tracker stores it (Markdown on GitHub and the local board, HTML on Azure
    Boards), with who wrote it last and the tracker's revision of it, where the tracker says."""

    text: str
    editor: str = ""  # who saved this body; "" when the tracker does not tell (GitHub's REST API)
    revision: str = ""  # the tracker's revision (Azure's ``rev``, the local board's edit id); "" if none


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
    """Merged changes and comments on one repository, and the bot's writes there.

    What some sources can do besides is a capability of its own below (``ReportsChangedPaths``,
    ``ReportsCommitMessages``, ``ReportsChangeHeads``, ``ReadsCommitStatuses``,
    ``NamesChangesForLinks``, ``TakesTypedComments``): an adapter that can declares it by
    inheriting the Protocol, and callers ask with ``isinstance``.
    """

    name: str
    repo: str  # the repository it reads, as its changes and comments name it
    branch: str  # the branch it watches unless settings name another
    # Whoever can comment can read the repository (GitHub: public, or private to those with access),
    # so read-level commands need no permission lookup.
    commenters_can_read: bool
    # The repository has issues of its own (GitHub): a comment on issue #12 is on one of the
    # tracker's tickets only when the tracker keeps its tickets there (``Tracker.tickets_in_repository``).
    # False where a comment on a ticket is on the tracker's ticket (the console).
    has_issues: bool

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


@runtime_checkable
class Tracker(Protocol):
    """Retrain tickets: opened once per key, updated, commented on, closed.

    Optional capabilities: ``LinksChanges``, ``ListsTickets``, ``DescribesTickets`` (below).
    """

    name: str
    # How a change's text names one of its tickets: ``"#"`` (``#12``: the repository's issues, the
    # local board) or ``"AB#"`` (``AB#12``: Azure Boards work items).
    reference_prefix: Literal["#", "AB#"]
    # Its tickets are the source control repository's own issues (GitHub Issues): see
    # ``SourceControl.has_issues``.
    tickets_in_repository: bool

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


@runtime_checkable
class Chat(Protocol):
    """Messages in channels, each episode one message updated in place with a thread of replies.

    Optional capabilities: ``ShowsActions``, ``UploadsFiles``, ``Whispers``, ``ResolvesPermissions``.
    """

    name: str

    def post(self, channel: str, text: str, *, marker: str, blocks: list[dict] | None = None) -> MessageRef:
        ...

    def update(self, message: MessageRef, text: str, *, blocks: list[dict] | None = None) -> None:
        ...

    def reply(self, parent: MessageRef, text: str, *, marker: str) -> MessageRef:
        ...

    def find_message(self, channel: str, marker: str, *, thread: str | None = None) -> MessageRef | None:
        ...


@runtime_checkable
class PipelineEngine(Protocol):
    name: str

    def start(self, project: str, *, run_id: str, trigger: str, reason: str, context: dict[str, Any],
              promote: bool = True) -> RunHandle:
        """Start (or, for an in-process engine, run to the end) the pipeline; ``run_id`` makes it idempotent."""

    def status(self, run_id: str) -> RunHandle | None:
        """Where the run stands; None if the engine never saw it."""


# --- capabilities: what some adapters can do besides their port ----------------------------------
#
# An adapter that has one declares it by inheriting the Protocol (``class GitHubSource(ReportsChangedPaths,
# ...)``), so readers and the type checker see it, and an adapter that drops one of its methods can
# no longer be made (the methods are abstract). Callers ask with ``isinstance(adapter, Capability)``.


@runtime_checkable
class ReportsChangedPaths(Protocol):
    """A source control that can list the files a change touched, for changes that arrive without
    them (a webhook's pull request); sources whose changes always carry their paths need not."""

    @abstractmethod
    def change_paths(self, repo: str, number: int) -> list[str]:
        """The paths the change touched, relative to the repository's root."""


@runtime_checkable
class ReportsCommitMessages(Protocol):
    """A source control that can read a pull request's commit messages, where ``AB#12`` may link a
    work item too."""

    @abstractmethod
    def change_messages(self, repo: str, number: int) -> list[str]:
        """The change's commit messages, oldest first."""


@runtime_checkable
class ReportsChangeHeads(Protocol):
    """A source control where a change may come from a fork: commands that run a change's code ask
    where its head is first (see ``bot/fork_guard.py``)."""

    @abstractmethod
    def change_head(self, repo: str, number: int) -> ChangeHead:
        """Where the change's code is now: its head commit and the repository holding it."""


@runtime_checkable
class ReadsCommitStatuses(Protocol):
    """A source control that can read back a commit's statuses, so a status whose answer was lost
    is not set twice."""

    @abstractmethod
    def status_of(self, repo: str, commit: str, context: str) -> tuple[str, str] | None:
        """The newest status of ``context`` on the commit, as (state, description); None if none."""


@dataclass(frozen=True)
class CheckAnnotation:
    """A note on lines of a file in the repository, shown beside the code (GitHub check runs)."""

    path: str  # relative to the repository's root
    start_line: int
    end_line: int
    level: Literal["notice", "warning", "failure"]
    message: str
    title: str = ""


@dataclass(frozen=True)
class CheckButton:
    """A button on a check run: GitHub takes at most three, ``label`` and ``identifier`` up to 20
    characters, ``description`` up to 40; a click comes back as a ``requested_action`` webhook."""

    identifier: str
    label: str
    description: str


@dataclass(frozen=True)
class CheckReport:
    """What a check run shows: its state, a title and Markdown summary, annotations and buttons."""

    status: Literal["in_progress", "completed"]
    title: str
    summary: str
    conclusion: Literal["success", "failure", "neutral", "cancelled", "timed_out", "action_required"] | None = None
    annotations: tuple[CheckAnnotation, ...] = ()
    buttons: tuple[CheckButton, ...] = ()
    details_url: str = ""


@dataclass(frozen=True)
class CheckRunRef:
    """A check run as found again: its id, where it stands, and how many annotations it holds
    (annotations sent again are added again, so a repeat after a lost answer leaves them out)."""

    id: str
    status: str
    conclusion: str | None
    annotations: int


@runtime_checkable
class ReportsCheckRuns(Protocol):
    """A source control that shows a commit's pipeline run as a check run (GitHub, as an App only:
    GitHub refuses check runs to tokens), with a summary, annotations and buttons. Sources without
    it set commit statuses instead.

    Exactly once: a check run is named by the commit, its ``name`` and the bot's ``external_id``
    (the pipeline run's id), so a write whose answer was lost is found and updated, never repeated.
    """

    @abstractmethod
    def find_check_run(self, repo: str, head_sha: str, name: str, external_id: str) -> CheckRunRef | None:
        """The bot's check run ``name`` on the commit carrying ``external_id``, if there is one."""

    @abstractmethod
    def create_check_run(self, repo: str, head_sha: str, name: str, *, external_id: str,
                         report: CheckReport) -> CheckRunRef:
        """Create the check run showing ``report``."""

    @abstractmethod
    def update_check_run(self, repo: str, check_run_id: str, report: CheckReport) -> None:
        """Show ``report`` on the check run; its annotations are added to those it has, its
        buttons replace those it had (none: no buttons)."""


@runtime_checkable
class NamesChangesForLinks(Protocol):
    """A source control whose changes a tracker links by something other than their web address
    (Azure Repos: the pull request's ``vstfs:///`` artifact)."""

    repo: str

    @abstractmethod
    def link_url(self, target: Target) -> str:
        """What a tracker's link to the change (one of ``repo``'s) points at."""


@runtime_checkable
class TakesTypedComments(Protocol):
    """A source control whose comments a person types on this machine (``mlops-bot console`` and
    ``board comment``), as if on a change or a ticket."""

    @abstractmethod
    def add_comment(self, target: Target, body: str, *, author: str | None = None) -> Comment:
        """Write a comment as ``author`` (default: the console user); the next poll reads it."""


@runtime_checkable
class LinksChanges(Protocol):
    """A tracker whose tickets a change links by naming them (``AB#12`` on Azure Boards): the
    ticket gets a link to the change and a comment saying so, once."""

    @abstractmethod
    def link(self, ticket_id: int, url: str, body: str, *, marker: str, title: str = "") -> str:
        """Link the ticket to ``url`` with ``body`` as a comment, once: ``linked``, ``already``
        (nothing written) or ``missing`` (no such ticket)."""


@runtime_checkable
class ListsTickets(Protocol):
    """A tracker that can list the tickets the bot keeps on it (``mlops-bot board list`` and ``status``)."""

    @abstractmethod
    def tickets(self, *, state: Literal["open", "closed"] | None = None) -> list[Ticket]:
        """The bot's tickets in ``state`` (all with None), oldest first."""


@runtime_checkable
class DescribesTickets(Protocol):
    """A tracker that can show a ticket whole, its body and comments (``mlops-bot board show``)."""

    @abstractmethod
    def details(self, ticket_id: int) -> dict[str, Any] | None:
        """``id``, ``key``, ``title``, ``state``, ``url``, ``labels``, ``body``, ``created_at``,
        ``closed_at`` and ``comments`` (each ``author``, ``body``, ``created_at``); None if no such ticket."""


@runtime_checkable
class EditsTicketBody(Protocol):
    """A tracker whose ticket bodies the bot reads back and rewrites in part: the live checklist
    (``bot/checklist.py``) is a section the bot owns inside a body people may edit too.

    ``hides_comments``: an HTML comment in a body survives (GitHub, the local board), so the
    checklist's markers can be hidden; False where the service's sanitiser strips them (Azure
    Boards), and the markers are visible lines of text.
    """

    hides_comments: bool

    @abstractmethod
    def body(self, ticket_id: int) -> TicketBody | None:
        """The ticket's body as stored, with its last editor where known; None if no such ticket."""

    @abstractmethod
    def set_body(self, ticket_id: int, text: str) -> None:
        """Store ``text`` as the body exactly (no marker added: it keeps those the body had)."""

    @abstractmethod
    def as_body(self, markdown: str) -> str:
        """The bot's Markdown in the form this tracker stores (HTML on Azure Boards)."""


@runtime_checkable
class ShowsActions(Protocol):
    """A chat that shows buttons under a message: its ``post`` and ``update`` take ``actions``.

    ``shows_actions`` is what tells it apart at run time, where ``isinstance`` sees member names,
    not signatures: every chat has a ``post``.
    """

    shows_actions: Literal[True]

    @abstractmethod
    def post(self, channel: str, text: str, *, marker: str, blocks: list[dict] | None = None,
             actions: Sequence[ChatAction] = ()) -> MessageRef:
        """``Chat.post``, with ``actions`` as buttons under the message."""

    @abstractmethod
    def update(self, message: MessageRef, text: str, *, blocks: list[dict] | None = None,
               actions: Sequence[ChatAction] = ()) -> None:
        """``Chat.update``; the message's buttons become ``actions`` (none if empty)."""


@runtime_checkable
class UploadsFiles(Protocol):
    """A chat that can show a file (the drift chart) in a message's thread."""

    @abstractmethod
    def upload(self, parent: MessageRef, path: str | Path, title: str) -> None:
        """Upload the file into ``parent``'s thread, once: a file already there is not sent again."""


@runtime_checkable
class Whispers(Protocol):
    """A chat that can show a message to one person only (Slack's ephemeral messages)."""

    @abstractmethod
    def whisper(self, channel: str, user: str, text: str, *, thread: str | None = None) -> None:
        """A message in ``channel`` that only ``user`` sees."""


@runtime_checkable
class ResolvesPermissions(Protocol):
    """A chat that works out who may do what itself (Slack: through user groups), rather than
    from the settings' names alone."""

    @abstractmethod
    def permission(self, user: str, levels: Mapping[str, str]) -> Permission:
        """``user``'s level from ``levels``, which maps users, groups and ``*`` to level names."""


# --- observing the services: what an adapter's SDK client says about its requests ----------------


class ApiCallObserver(Protocol):
    """Told of the HTTP requests an adapter's SDK client makes (``bot/observability.py``); a type
    for the checker only: nothing asks ``isinstance`` of it."""

    def api_response(self, service: str, status: int | str) -> None:
        """One request: the status of its answer, or ``"error"`` when no answer came (refused,
        dropped, timed out). Told once per request sent, a request the SDK retries once per try."""

    def api_rate_limit(self, service: str, headers: Mapping[str, str]) -> None:
        """The rate-limit headers of an answer already told of (GitHub's ``x-ratelimit-*``)."""


@runtime_checkable
class ReportsApiCalls(Protocol):
    """An adapter whose SDK client reports its requests through the SDK's own extension points
    (a urllib3 ``Retry`` handed to PyGithub and to msrest, a slack-sdk retry handler), and that can
    ask its service one cheap question to show that it is reachable."""

    api_service: str  # the service its requests are counted under and its readiness check is named by

    @abstractmethod
    def report_api_calls(self, observer: ApiCallObserver) -> None:
        """Tell ``observer`` of every request the adapter's client makes from now on. Adapters that
        share a client share its observer: a later call replaces an earlier one, so a request is
        told of once however many adapters hand the observer on."""

    @abstractmethod
    def readiness(self) -> None:
        """Ask the service one cheap question; raise when it does not answer or refuses the bot."""


def marker_comment(marker: str) -> str:
    """The hidden form of a marker inside Markdown or HTML bodies."""
    return f"<!-- mlops-bot:{marker} -->"


def with_marker(body: str, marker: str) -> str:
    """A Markdown body with its marker hidden at the end (no marker: the body as it is)."""
    return f"{body}\n\n{marker_comment(marker)}" if marker else body


# --- the board people track retrain tickets on (a GitHub Project, Azure Boards' states) ---------------


@dataclass(frozen=True)
class ProjectField:
    id: str
    name: str
    data_type: str  # ProjectV2FieldType: TEXT, SINGLE_SELECT, ...
    options: tuple[tuple[str, str], ...] = ()  # (option id, name) of a single-select field

    def option_named(self, name: str) -> tuple[str, str] | None:
        """(id, name as the project spells it) of the option called ``name`` in any case."""
        return next(((option_id, spelled) for option_id, spelled in self.options
                     if spelled.casefold() == name.casefold()), None)


@dataclass(frozen=True)
class ProjectLayout:
    """What the bot uses of the board: its id, its Status field and the custom fields it has."""

    id: str
    title: str
    url: str
    status: ProjectField
    stage_options: Mapping[str, tuple[str, str]]  # stage -> (option id, option name)
    custom: Mapping[str, ProjectField]  # lower-case field name -> field


@dataclass(frozen=True)
class CardMove:
    """What a transition did: ``status`` is where the card is now; ``moved`` whether the bot moved it,
    ``added`` whether it put it on the board; ``why`` when it left the card where a person put it."""

    item_id: str
    status: str | None
    moved: bool
    added: bool = False
    why: str = ""


@dataclass(frozen=True)
class BoardItem:
    """A card read back by its own id: the ticket it stands for and the column it is in."""

    item_id: str
    ticket_id: int
    status: str | None


@runtime_checkable
class ReadsBoardItems(Protocol):
    """A board whose events name a card, not its ticket, nor where it went (GitHub's
    ``projects_v2_item`` edited names the item and the field only): the card is read back."""

    @abstractmethod
    def item(self, item_id: str) -> BoardItem | None:
        """The card ``item_id`` when it is one of this board's cards for the repository's issues;
        None when it is not (another project's, a draft, another repository's issue, deleted)."""


@runtime_checkable
class TicketBoard(Protocol):
    """A board people track tickets on, whose cards follow the retrain episode's stages."""

    name: str

    def follow(self, ticket_id: int, stage: str, *, last_set: str | None,
               fields: Mapping[str, str]) -> CardMove:
        """Put the ticket on the board and move its card to ``stage``'s column, unless a person's
        move is to be respected; fill ``fields`` the board has."""

    def layout(self) -> ProjectLayout:
        """The board as the bot uses it; BoardSetupError when it lacks what the settings name."""
