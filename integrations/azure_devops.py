"""Azure DevOps through the ``azure-devops`` client: Boards as the tracker, Repos as source
control, Pipelines as the pipeline engine (the service hooks' deliveries are read as events by
``integrations/azure_payloads.py``).

- ``AzureBoards`` (Tracker): retrain tickets are work items of a configured type in the team's
  current iteration and a configured area path, tagged ``mlops-bot`` plus the bot's labels, with
  the priority taken from the severity label and the hidden marker in ``System.Description``.
- ``AzureRepos`` (SourceControl): completed pull requests, comments from pull request threads,
  replies in the thread of the command, commit statuses (genre ``mlops-bot``).
- ``AzurePipelines`` (PipelineEngine): one YAML pipeline run with template parameters; the run's
  name is the bot's ``run_id`` (the YAML says ``name: ${{ parameters.run_id }}``), which makes
  ``start`` idempotent.

Failures become the ports' errors. The client retries a GET on 429/503 itself, never a POST or
PATCH: a write that is refused with 429 is a ``TransientError`` with the service's
``Retry-After``; a 5xx or a lost answer on a write is ``outcome_unknown``, so the outbox looks for
the write's marker before repeating it. 400/403/404 are ``PermanentError`` with what to fix. A PAT
without the scope a call needs (401 TF400813), a wrong or expired PAT (401) and a user without a
project permission (403 "You need the ... permission") are ``PermissionRefused``, naming the scope
or permission to grant and where: the outbox parks such work until it is granted.

Nothing here connects at import time; ``connect`` builds the client. Set
``AZURE_DEVOPS_CACHE_DIR`` before the first use to choose where the client caches discovery.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from integrations.api_calls import ApiCalls, CountingRetry
from integrations.azure_payloads import CLOSED_STATES, MARKER, marker_in, name_of, time_of
from integrations.ports import (
    ApiCallObserver,
    Change,
    Comment,
    EditsTicketBody,
    LinksChanges,
    ListsTickets,
    NamesChangesForLinks,
    PermanentError,
    Permission,
    PermissionRefused,
    ReportsApiCalls,
    ReportsChangedPaths,
    RunHandle,
    Target,
    Ticket,
    TicketBody,
    TransientError,
    marker_comment,
)

__all__ = [
    "CLOSE_STATE",
    "SCOPE_NAMES",
    "AzureBoards",
    "AzureDevOpsClient",
    "AzurePipelines",
    "AzureRepos",
    "connect",
    "diagnose",
    "html_marker",
    "markdown_to_html",
    "merge_tags",
    "scopes_for",
    "tokens_page",
]

log = logging.getLogger("mlops_bot.azure_devops")

#: the state ``close`` moves a work item to, per process template
CLOSE_STATE: dict[str, str] = {"Basic": "Done", "Agile": "Closed", "Scrum": "Done", "CMMI": "Closed"}
_PRIORITY = {"critical": 1, "high": 1, "medium": 2, "low": 3}
#: writes made over a revision read first (``test /rev``): a 412 (changed meanwhile) reads again, this many times in all
_REV_ATTEMPTS = 3
_STATUS_STATE = {"pending": "pending", "success": "succeeded", "failure": "failed", "error": "error"}
_LEVELS = {p.name: p for p in Permission}
_PR_ARTIFACT = "vstfs:///Git/PullRequestId/"
_ITERATION_CHANGES = "4216bdcf-b6b1-4d59-8b82-c34cc183fc8b"  # git: pull request iteration changes
_PULL_REQUESTS = "9946fd70-0d40-406e-b686-b4744cbbcc37"  # git: pull requests (7.1.0b4's criteria lack minTime)
_PULLS_PAGE = 100
#: a list of pull requests cuts each description to 400 symbols (UTF-16 code units)
_LISTED_DESCRIPTION = 400
#: merges closed this long before the newest one seen are listed again, and their ids kept in the
#: cursor: a completion that becomes visible after a newer one was listed is still read, once
_MERGE_LOOKBACK = timedelta(minutes=5)
#: reactions that mean "seen" or "good": each becomes the one reaction Azure Repos has, a like
_LIKED = frozenset({"eyes", "+1", "rocket", "heart", "hooray", "laugh"})
#: a 403 for want of a permission in the project's security: "You need the Git 'X' permission ..."
_PROJECT_PERMISSION = re.compile(r"You need the (.+?) permission")


# ---------------------------------------------------------------------------
# The client


def connect(organization_url: str, pat: str, *, timeout: float = 30.0, retries: int = 3,
            backoff: float = 0.8) -> AzureDevOpsClient:
    """A client for one organization (``https://dev.azure.com/ORG``), authenticated by a PAT.

    Sends nothing yet: the first call asks the service for its resource locations.
    """
    from azure.devops.connection import Connection
    from msrest.authentication import BasicAuthentication

    if not pat:
        raise PermanentError("Azure DevOps needs a personal access token (AZURE_DEVOPS_PAT) with Work Items, "
                             "Code and Build scopes")
    connection = Connection(base_url=organization_url.rstrip("/"), creds=BasicAuthentication("", pat))
    return AzureDevOpsClient(connection, timeout=timeout, retries=retries, backoff=backoff)


class AzureDevOpsClient:
    """The SDK's 7.1 clients, configured once (timeout, GET retries), and one way to call them
    that turns their failures into the ports' errors.

    Each SDK client is configured through msrest's public configuration: its session callback
    (``config.session_configuration_callback``) gives every session's ``requests`` adapters a
    ``CountingRetry`` with the rules of their own Retry (so every try is counted, see
    integrations/api_calls.py), and a response hook (``config.hooks``) keeps each thread's last
    answer, whose status and ``Retry-After`` the SDK's exceptions do not carry. The one request this
    cannot see is the SDK's ``Connection`` asking for the organization's resource areas when the
    first client is built (its own client, not configurable; once a process, none when the SDK's
    discovery cache has them).
    """

    _FACTORIES = {
        "wit": "get_work_item_tracking_client",
        "work": "get_work_client",
        "git": "get_git_client",
        "pipelines": "get_pipelines_client",
        "location": "get_location_client",
    }
    #: Microsoft's documented 7.1 REST routes of the answers read as plain JSON (``get_json``), by
    #: the location id the SDK knows them by; relative to the area's URL (the SDK client's).
    _JSON_ROUTES = {
        "9946fd70-0d40-406e-b686-b4744cbbcc37": "{project}/_apis/git/repositories/{repositoryId}/pullrequests",
        "4216bdcf-b6b1-4d59-8b82-c34cc183fc8b": "{project}/_apis/git/repositories/{repositoryId}/pullRequests/"
                                                "{pullRequestId}/iterations/{iterationId}/changes",
    }

    def __init__(self, connection: Any, *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.8) -> None:
        self.connection = connection
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._clients: dict[str, Any] = {}
        self._plain: dict[str, Any] = {}  # kind -> msrest ServiceClient for plain JSON reads
        self.api_calls = ApiCalls("azure")
        self._answers = threading.local()  # .last: (status, Retry-After) of this thread's last answer

    def client(self, kind: str) -> Any:
        if kind not in self._clients:
            factory = getattr(self.connection.clients_v7_1, self._FACTORIES[kind])
            sdk = self._guard(lambda: factory(), write=False, what=f"connect the {kind} client")
            self._configure(sdk.config)
            self._clients[kind] = sdk
        return self._clients[kind]

    def _configure(self, config: Any) -> None:
        """Timeout and retries as asked, every try counted, every answer's status kept (see the class)."""
        config.connection.timeout = self.timeout
        config.retry_policy.retries = self.retries
        config.retry_policy.backoff_factor = self.backoff
        config.session_configuration_callback = self._count_tries
        config.hooks.append(self._keep_answer)

    def _count_tries(self, session: Any, _config: Any, _operation_config: Any, **request_kwargs: Any) -> Any:
        # msrest calls this with the session of every request. The SDK client made the session of the
        # thread that built it already, with the retry policy as it was then: each session's adapters
        # get a counting copy of their Retry once (after ``_configure``, so with the retries asked for).
        for adapter in session.adapters.values():
            if not isinstance(adapter.max_retries, CountingRetry):
                adapter.max_retries = CountingRetry.copying(adapter.max_retries, self.api_calls)
        return request_kwargs

    def _keep_answer(self, response: Any, *_args: Any, **_kwargs: Any) -> None:
        self._answers.last = (response.status_code, response.headers.get("Retry-After"))

    def report_api_calls(self, observer: ApiCallObserver) -> None:
        """Tell ``observer`` of each request from now on (see ``ReportsApiCalls``)."""
        self.api_calls.observe(observer)

    def readiness(self) -> None:
        """The organization's resource areas: any valid PAT may read them."""
        self.call("location", "get_resource_areas")

    def call(self, kind: str, method: str, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        sdk = self.client(kind)
        return self._guard(lambda: getattr(sdk, method)(*args, **kwargs), write=write, what=f"{kind}.{method}",
                           scopes=scopes_for(kind, method))

    @property
    def organization_url(self) -> str:
        return str(self.connection.base_url).rstrip("/")

    def get_json(self, kind: str, what: str, *, location_id: str, version: str, route_values: dict[str, Any],
                 query: dict[str, Any] | None = None) -> Any:
        """A GET answered as plain JSON, for the few answers whose SDK models drop fields the bot
        needs: the documented route (``_JSON_ROUTES``) at the area's URL, sent by msrest with the
        same credentials, timeout, retries and counting as the SDK's own calls."""
        from urllib.parse import quote

        from msrest.universal_http import ClientRequest

        route = self._JSON_ROUTES[location_id]
        path = route.format(**{name: quote(str(value), safe="") for name, value in route_values.items()})
        query = {k: str(v) for k, v in (query or {}).items() if v is not None}

        def send() -> Any:
            plain = self._plain_client(kind)
            request = ClientRequest("GET", f"{plain.config.base_url.rstrip('/')}/{path}")
            if query:
                request.format_parameters(query)
            # As the SDK asks: the version in Accept, and a 401 rather than a redirect to a sign-in page.
            response = plain.send(request, headers={"Accept": f"application/json;api-version={version}",
                                                    "X-TFS-FedAuthRedirect": "Suppress"})
            if response.status_code >= 300:
                raise _answer_error(response)
            return response.json()

        return self._guard(send, write=False, what=what, scopes=scopes_for(kind, "get"))

    def _plain_client(self, kind: str) -> Any:
        if kind not in self._plain:
            from azure.devops.client_configuration import ClientConfiguration
            from msrest.service_client import ServiceClient

            sdk = self.client(kind)  # its URL is the area's, found through the organization's resource areas
            config = ClientConfiguration(sdk.config.base_url)
            config.credentials = sdk.config.credentials
            self._configure(config)
            self._plain[kind] = ServiceClient(config.credentials, config)
        return self._plain[kind]

    def _guard(self, action: Callable[[], Any], *, write: bool, what: str, scopes: tuple[str, ...] = ()) -> Any:
        self._answers.last = None
        try:
            return action()
        except (TransientError, PermanentError):
            raise
        except Exception as exc:
            status, retry_after = _answer_behind(exc, self._answers.last)
            raise _translate(exc, write=write, what=what, scopes=scopes, organization_url=self.organization_url,
                             status=status, retry_after=retry_after) from exc


class _CountedByClient(ReportsApiCalls):
    """The Azure DevOps adapters share one ``AzureDevOpsClient``: its requests and readiness are theirs."""

    api_service = "azure"
    client: AzureDevOpsClient

    def report_api_calls(self, observer: ApiCallObserver) -> None:
        self.client.report_api_calls(observer)

    def readiness(self) -> None:
        self.client.readiness()


def _answer_error(response: Any) -> Exception:
    """The SDK's exception for an error answer to a plain JSON read, its message the service's own."""
    from azure.devops.exceptions import AzureDevOpsAuthenticationError, AzureDevOpsClientRequestError

    try:
        message = str((response.json() or {}).get("message") or "")
    except ValueError:
        message = ""
    message = message or f"Operation returned a {response.status_code} status code."
    if response.status_code == 401:
        return AzureDevOpsAuthenticationError(message)
    return AzureDevOpsClientRequestError(message)


def _answer_behind(exc: Exception, last: tuple[int, str | None] | None) -> tuple[int | None, str | None]:
    """(status, Retry-After) of the error answer the SDK raised ``exc`` for; (None, None) when no
    answer came (its transport's ``ClientRequestError``) or the exception is not about one."""
    from azure.devops.exceptions import AzureDevOpsAuthenticationError, AzureDevOpsClientRequestError

    if isinstance(exc, (AzureDevOpsClientRequestError, AzureDevOpsAuthenticationError)) and last and last[0] >= 400:
        return last
    return None, None


# ---------------------------------------------------------------------------
# Authorization: the PAT's scopes
#
# A PAT holds scopes (Work Items: Read & write = vso.work_write, ...). The service answers a call the
# PAT has no scope for with 401 and "TF400813: The user '...' is not authorized to access this
# resource." (typeKey UnauthorizedRequestException), and a PAT that is wrong, expired or revoked with
# 401 and no JSON body (the client raises AzureDevOpsAuthenticationError); a user who lacks a
# permission in the project (its security settings, not the PAT) gets 403. Each operation's scopes are
# in the ``security`` of Microsoft's 7.1 REST specs; any one of those listed opens it.

#: the scopes as the PAT page (User settings → Personal access tokens) shows them
SCOPE_NAMES: dict[str, str] = {
    "vso.work": "Work Items (Read)", "vso.work_write": "Work Items (Read & write)",
    "vso.code": "Code (Read)", "vso.code_write": "Code (Read & write)", "vso.code_status": "Code (Status)",
    "vso.threads_full": "Pull Request Threads (Read & write)",
    "vso.build": "Build (Read)", "vso.build_execute": "Build (Read & execute)",
}
#: the writes the bot makes -> the scopes that open them, the one to ask for first
_WRITE_SCOPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("wit", "create_work_item"): ("vso.work_write",),
    ("wit", "update_work_item"): ("vso.work_write",),
    ("wit", "add_work_item_comment"): ("vso.work_write",),
    ("git", "create_thread"): ("vso.code_write", "vso.threads_full"),
    ("git", "create_comment"): ("vso.code_write", "vso.threads_full"),
    ("git", "update_comment"): ("vso.code_write", "vso.threads_full"),
    ("git", "create_like"): ("vso.code_write", "vso.threads_full"),
    ("git", "create_commit_status"): ("vso.code_status", "vso.code_write"),
    ("pipelines", "run_pipeline"): ("vso.build_execute",),
}
#: every other call of an area reads, with its read scope (wit and work are both Work Items)
_READ_SCOPES: dict[str, str] = {"wit": "vso.work", "work": "vso.work", "git": "vso.code", "pipelines": "vso.build"}


def scopes_for(kind: str, method: str) -> tuple[str, ...]:
    """The PAT scopes that open the client call ``kind.method`` (any one of them, the first the one
    to ask for); empty for calls any valid PAT may make (who am I)."""
    if (kind, method) in _WRITE_SCOPES:
        return _WRITE_SCOPES[kind, method]
    return (_READ_SCOPES[kind],) if kind in _READ_SCOPES else ()


def tokens_page(organization_url: str) -> str:
    """Where the PAT's owner creates or edits a PAT: the organization's own token page."""
    return f"{organization_url.rstrip('/')}/_usersSettings/tokens"


def _scope_refusal(what: str, message: str, scopes: tuple[str, ...], organization_url: str) -> PermissionRefused:
    """A TF400813 answer: the PAT lacks the scope the call needs; one line naming it and where to add it."""
    wanted = scopes[0]
    others = "".join(f" (or {SCOPE_NAMES.get(s, s)}, {s})" for s in scopes[1:])
    refusal = PermissionRefused(
        f"Azure DevOps refused {what} (401 {message.split(':', 1)[0]}): the PAT lacks "
        f"{SCOPE_NAMES.get(wanted, wanted)}, {wanted}{others}: create a PAT with it at "
        f"{tokens_page(organization_url)} (or edit this one) and set AZURE_DEVOPS_EXT_PAT",
        service="azure-devops", permission=wanted)
    refusal.status = 401  # type: ignore[attr-defined]
    return refusal


def _translate(exc: Exception, *, write: bool, what: str, scopes: tuple[str, ...] = (),
               organization_url: str = "https://dev.azure.com/ORG", status: int | None = None,
               retry_after: str | None = None) -> Exception:
    """The port's error for ``exc``, raised by the SDK for an answer of ``status`` (with its
    ``Retry-After``), or for no answer at all when ``status`` is None."""
    from msrest.exceptions import ClientRequestError

    message = str(getattr(exc, "message", None) or exc).strip()
    if status is None and type(exc).__name__ == "AzureDevOpsAuthenticationError":
        status = 401
    if status == 401 and "TF400813" in message and scopes:
        return _scope_refusal(what, message, scopes, organization_url)
    if status == 401:
        # Wrong, expired or revoked: a person renews it, and what waited goes through then.
        refusal = PermissionRefused(
            f"Azure DevOps refused the PAT for {what} (401): it is wrong, expired or revoked; renew "
            f"AZURE_DEVOPS_EXT_PAT with a PAT created at {tokens_page(organization_url)} with Work Items (Read & "
            "write), Code (Read & write), Code (Status) and Build (Read & execute)", service="azure-devops",
            permission="a valid PAT")
        refusal.status = 401  # type: ignore[attr-defined]
        return refusal
    if status == 403 and _PROJECT_PERMISSION.search(message):
        # The PAT has the scope but its owner lacks a permission in the project (e.g. TF401027:
        # "You need the Git 'PullRequestContribute' permission to perform this action").
        needed = _PROJECT_PERMISSION.search(message).group(1)  # type: ignore[union-attr]
        refusal = PermissionRefused(
            f"Azure DevOps refused {what} (403): {message}; give the PAT's user the {needed} permission "
            "(Project settings → Repositories or Boards → Security), or use a PAT of a user who has it",
            service="azure-devops", permission=needed)
        refusal.status = 403  # type: ignore[attr-defined]
        return refusal
    if status is not None:
        if status == 429:
            return TransientError(f"Azure DevOps throttled {what} (429): {message}",
                                  retry_after=_seconds(retry_after))
        if status >= 500:
            return TransientError(f"Azure DevOps answered {status} to {what}: {message}", outcome_unknown=write,
                                  retry_after=_seconds(retry_after))
        fixes = {
            403: "the PAT's user lacks a permission in the project: check its access level and the project's "
                 "security settings (Boards, Repos, Pipelines) for that user",
            404: "check the organization URL, project, team, repository and pipeline id in the settings",
            400: "the request was refused as invalid: check the work item type, area path and states "
                 "configured for this process",
        }
        fix = fixes.get(status, "see the message")
        error = PermanentError(f"Azure DevOps answered {status} to {what}: {message} (fix: {fix})")
        error.status = status  # type: ignore[attr-defined]
        return error
    if isinstance(exc, ClientRequestError):
        # No answer: a timeout, a dropped connection, or reads retried until exhausted.
        return TransientError(f"Azure DevOps did not answer {what}: {message[:200]}", outcome_unknown=write)
    if isinstance(exc, ValueError) and "is not registered" in message:
        return PermanentError(f"Azure DevOps does not offer {what} at this URL: {message} "
                              "(fix: check the organization URL and the server's version)")
    return exc


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# Text


def markdown_to_html(text: str) -> str:
    """The bot's Markdown, minimally as HTML: headings, bullet lists, code spans, bold, links and
    paragraphs; HTML comments (markers) pass through; everything else is escaped."""
    out: list[str] = []
    in_list = False
    for line in text.splitlines():
        stripped = line.strip()
        if MARKER.fullmatch(stripped):
            out.append(stripped)
            continue
        bullet = re.match(r"^[-*]\s+(.*)$", stripped)
        if bullet and not in_list:
            out.append("<ul>")
            in_list = True
        if not bullet and in_list:
            out.append("</ul>")
            in_list = False
        if bullet:
            out.append(f"<li>{_inline(bullet.group(1))}</li>")
        elif heading := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif stripped:
            out.append(f"<p>{_inline(stripped)}</p>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r'<a href="\2">\1</a>', escaped)


def _with_marker(text: str, marker: str) -> str:
    """A Markdown body (pull request threads keep Markdown as written) with its hidden marker."""
    return f"{text}\n{marker_comment(marker)}" if marker else text


def html_marker(marker: str) -> str:
    """The marker as rich text keeps it: a small grey line of text. Azure sanitizes work item HTML
    (descriptions, comments), dropping comments and unknown attributes; text always survives."""
    return f'<p style="font-size:smaller;color:#888888">[mlops-bot:{html.escape(marker, quote=False)}]</p>'


def _with_html_marker(body_html: str, marker: str) -> str:
    return f"{body_html}\n{html_marker(marker)}" if marker else body_html


def _has_marker(text: str | None, marker: str) -> bool:
    if not text:
        return False
    return f"[mlops-bot:{marker}]" in html.unescape(text) or marker_comment(marker) in text


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------
# Boards


class AzureBoards(LinksChanges, ListsTickets, EditsTicketBody, _CountedByClient):
    """Retrain tickets as work items, behind the Tracker port."""

    name = "azure"
    reference_prefix = "AB#"
    tickets_in_repository = False
    hides_comments = False  # the HTML sanitiser drops comments: the checklist's markers are visible text

    def __init__(self, client: AzureDevOpsClient, *, project: str, team: str | None = None,
                 work_item_type: str = "Task", area_path: str | None = None, process: str = "Agile",
                 close_state: str | None = None, closed_states: Iterable[str] | None = None,
                 tag: str = "mlops-bot") -> None:
        if process not in CLOSE_STATE and close_state is None:
            raise PermanentError(f"unknown process {process!r}: name one of {', '.join(CLOSE_STATE)} "
                                 "or give close_state")
        self.client, self.project = client, project
        self.team = team or f"{project} Team"
        self.work_item_type, self.area_path, self.tag = work_item_type, area_path, tag
        self.close_state = close_state or CLOSE_STATE[process]
        self.closed_states = tuple(closed_states or CLOSED_STATES.get(process, (self.close_state,)))
        if self.close_state not in self.closed_states:
            self.closed_states = (*self.closed_states, self.close_state)

    # --- reads

    def find_open(self, key: str, *, opened_by: str | None = None) -> Ticket | None:
        for item in self._tagged("open"):
            description = str((item.fields or {}).get("System.Description") or "")
            if _has_marker(description, key) and (opened_by is None or _has_marker(description, opened_by)):
                return self._ticket(item)
        return None

    def tickets(self, *, state: str | None = None) -> list[Ticket]:
        """The work items carrying the bot's tag, in ``state`` (all with None), oldest first."""
        return sorted((self._ticket(item) for item in self._tagged(state)), key=lambda ticket: ticket.id)

    def _tagged(self, state: str | None) -> Iterator[Any]:
        """The project's work items carrying the bot's tag, open or closed (``closed_states``) or
        both, read 200 at a time; one deleted meanwhile is left out."""
        from azure.devops.v7_1.work_item_tracking.models import Wiql

        states = ", ".join(f"'{s}'" for s in self.closed_states)
        where = {"open": f" AND [System.State] NOT IN ({states})", "closed": f" AND [System.State] IN ({states})"}
        query = ("SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "
                 f"AND [System.Tags] CONTAINS '{_quote(self.tag)}'{where.get(state or '', '')}")
        result = self.client.call("wit", "query_by_wiql", Wiql(query=query), team_context=self._context())
        ids = [ref.id for ref in (result.work_items or [])]
        for start in range(0, len(ids), 200):
            items = self.client.call("wit", "get_work_items", ids[start:start + 200], project=self.project,
                                     error_policy="omit")
            yield from (item for item in items or [] if item is not None)

    def get(self, ticket_id: int) -> Ticket | None:
        item = self._work_item(ticket_id)
        return None if item is None else self._ticket(item)

    def _work_item(self, ticket_id: int) -> Any | None:
        """The work item, or None when there is none by that number."""
        try:
            return self.client.call("wit", "get_work_item", ticket_id, project=self.project)
        except PermanentError as exc:
            if "answered 404" in str(exc):
                return None
            raise

    def body(self, ticket_id: int) -> TicketBody | None:
        """The description as stored (sanitised HTML), its revision and who saved it (``System.ChangedBy``,
        by its unique name, as permissions name people)."""
        item = self._work_item(ticket_id)
        if item is None:
            return None
        fields = item.fields or {}
        changed_by = fields.get("System.ChangedBy") or ""
        if isinstance(changed_by, dict):  # an identity reference; older servers send "Name <unique name>"
            editor = str(changed_by.get("uniqueName") or changed_by.get("displayName") or "")
        else:
            found = re.search(r"<([^<>]+)>\s*$", str(changed_by))
            editor = found.group(1) if found else str(changed_by)
        return TicketBody(text=str(fields.get("System.Description") or ""), editor=editor, revision=str(item.rev or ""))

    def set_body(self, ticket_id: int, text: str) -> None:
        self.client.call("wit", "update_work_item", _patch({"System.Description": text}, op="replace"), ticket_id,
                         project=self.project, write=True)

    def as_body(self, markdown: str) -> str:
        return markdown_to_html(markdown)

    def find_comment(self, ticket_id: int, marker: str) -> str | None:
        token = None
        while True:
            page = self.client.call("wit", "get_comments", self.project, ticket_id, top=200,
                                    continuation_token=token)
            for comment in page.comments or []:
                if _has_marker(comment.text, marker):
                    return str(comment.id)
            token = page.continuation_token
            if not token:
                return None

    # --- writes

    def open(self, key: str, title: str, body: str, labels: tuple[str, ...], *, marker: str) -> Ticket:
        fields: dict[str, Any] = {
            "System.Title": title,
            # The key's marker first (``_ticket`` reads the key from it), then this write's own.
            "System.Description": _with_html_marker(_with_html_marker(markdown_to_html(body), key),
                                                    marker if marker != key else ""),
            "System.Tags": self._tags(labels),
            "Microsoft.VSTS.Common.Priority": _priority(labels),
        }
        iteration = self._current_iteration()
        if iteration:
            fields["System.IterationPath"] = iteration
        if self.area_path:
            fields["System.AreaPath"] = self.area_path
        item = self.client.call("wit", "create_work_item", _patch(fields), self.project, self.work_item_type,
                                write=True)
        return self._ticket(item)

    def update(self, ticket: Ticket, *, title: str | None = None, body: str | None = None,
               labels: tuple[str, ...] | None = None) -> Ticket:
        fields: dict[str, Any] = {}
        if title is not None:
            fields["System.Title"] = title
        if body is not None:
            fields["System.Description"] = _with_html_marker(markdown_to_html(body), ticket.key)
        if labels is not None:
            fields["Microsoft.VSTS.Common.Priority"] = _priority(labels)
        if not fields:
            return ticket
        if labels is None:
            item = self.client.call("wit", "update_work_item", _patch(fields, op="replace"), ticket.id,
                                    project=self.project, write=True)
            return self._ticket(item)
        # The tags are merged into those the work item has (a person's, the board's model: and
        # severity:), so they are read first, and written only over that very revision.
        for attempt in range(_REV_ATTEMPTS):
            current = self.client.call("wit", "get_work_item", ticket.id, project=self.project)
            fields["System.Tags"] = self._tags(labels, (current.fields or {}).get("System.Tags"))
            try:
                item = self.client.call("wit", "update_work_item",
                                        [_rev_test(current.rev), *_patch(fields, op="replace")], ticket.id,
                                        project=self.project, write=True)
            except PermanentError as exc:
                if getattr(exc, "status", None) != 412:
                    raise
                continue  # changed meanwhile: read again and merge into that
            return self._ticket(item)
        raise TransientError(f"work item {ticket.id} changed each time mlops-bot updated it ({_REV_ATTEMPTS} tries): "
                             "it is tried again later")

    def comment(self, ticket_id: int, body: str, *, marker: str) -> str:
        from azure.devops.v7_1.work_item_tracking.models import CommentCreate

        created = self.client.call("wit", "add_work_item_comment",
                                   CommentCreate(text=_with_html_marker(markdown_to_html(body), marker)),
                                   self.project, ticket_id, "html", write=True)
        return str(created.id)

    def close(self, ticket_id: int) -> None:
        item = self.client.call("wit", "get_work_item", ticket_id, project=self.project)
        if (item.fields or {}).get("System.State") in self.closed_states:
            return
        self.client.call("wit", "update_work_item", _patch({"System.State": self.close_state}, op="replace"),
                         ticket_id, project=self.project, write=True)

    def link(self, ticket_id: int, url: str, body: str, *, marker: str, title: str = "") -> str:
        """Link the work item to a pull request once, with a comment saying so.

        ``url`` is an Azure Repos pull request's artifact (``vstfs:///Git/PullRequestId/...``, an
        ``ArtifactLink`` named "Pull Request") or any web address (a ``Hyperlink``, e.g. a GitHub
        pull request); empty, only the comment is written. The relation and the comment go in one
        update (the comment as ``System.History``), so either both exist or neither does: the
        relation already on the work item means the whole link was made. The client does not
        retry a write, and the service refuses a duplicate relation, so the work item's relations
        are read first and again after a refusal. Returns ``linked``, ``already`` (nothing
        written) or ``missing`` (no such work item: nothing to link).
        """
        from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

        text = _with_html_marker(markdown_to_html(body), marker)
        if not url:
            if not self._exists(ticket_id):
                return "missing"
            if self.find_comment(ticket_id, marker):
                return "already"
            self.comment(ticket_id, body, marker=marker)
            return "linked"
        linked = self._linked(ticket_id, url)
        if linked is None:
            return "missing"
        if linked:
            return "already"
        if url.lower().startswith(_PR_ARTIFACT.lower()):
            relation = {"rel": "ArtifactLink", "url": url, "attributes": {"name": "Pull Request"}}
        else:
            relation = {"rel": "Hyperlink", "url": url, "attributes": {"comment": title[:255]} if title else {}}
        document = [JsonPatchOperation(op="add", path="/relations/-", value=relation),
                    JsonPatchOperation(op="add", path="/fields/System.History", value=text)]
        try:
            self.client.call("wit", "update_work_item", document, ticket_id, project=self.project, write=True)
        except PermanentError:
            if self._linked(ticket_id, url):  # linked meanwhile (by a lost answer, or a person)
                return "already"
            raise
        return "linked"

    def diagnose(self) -> list[tuple[str, str | None, str]]:
        """The project, work item type, team iteration and area path, as ``mlops-bot doctor`` shows them."""
        return diagnose(self)

    # --- helpers

    def _linked(self, ticket_id: int, url: str) -> bool | None:
        """Whether the work item has a relation to ``url``; None when there is no such work item."""
        try:
            item = self.client.call("wit", "get_work_item", ticket_id, project=self.project, expand="Relations")
        except PermanentError as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise
        return any(str(r.url or "").lower() == url.lower() for r in item.relations or [])

    def _exists(self, ticket_id: int) -> bool:
        return self.get(ticket_id) is not None

    def _context(self) -> Any:
        from azure.devops.v7_1.work.models import TeamContext

        return TeamContext(project=self.project, team=self.team)

    def _current_iteration(self) -> str | None:
        iterations = self.client.call("work", "get_team_iterations", self._context(), timeframe="current")
        return iterations[0].path if iterations else None

    def _tags(self, labels: Iterable[str], current: str | None = None) -> str:
        """The bot's tag and ``labels`` merged into the ``current`` tags (see ``merge_tags``)."""
        return merge_tags(current, [self.tag, *(label for label in labels if label != self.tag)])

    def _ticket(self, item: Any) -> Ticket:
        fields = item.fields or {}
        key = marker_in(str(fields.get("System.Description") or ""))
        tags = [t.strip() for t in str(fields.get("System.Tags") or "").split(";") if t.strip()]
        links = getattr(item, "_links", None)
        url = ""
        if links is not None and getattr(links, "additional_properties", None):
            url = (links.additional_properties.get("html") or {}).get("href", "")
        return Ticket(id=int(item.id), key=key or "",
                      title=str(fields.get("System.Title") or ""),
                      state="closed" if fields.get("System.State") in self.closed_states else "open",
                      url=url or str(item.url or ""), labels=tuple(t for t in tags if t != self.tag))


def merge_tags(current: str | None, wanted: Iterable[str]) -> str:
    """``System.Tags`` holding ``wanted`` and keeping every other tag there (a person's): a wanted
    ``prefix:value`` takes the place of the tag with the same ``prefix:`` (``drift:low`` becomes
    ``drift:high``); tags compare in any case, as Azure's do. ``;`` separates tags, so none is in one."""
    wanted = [tag.replace(";", ",").strip() for tag in wanted if tag and tag.strip()]
    prefixes = {tag.split(":", 1)[0].casefold() for tag in wanted if ":" in tag}
    kept = [tag.strip() for tag in (current or "").split(";") if tag.strip()
            and not (":" in tag and tag.strip().split(":", 1)[0].casefold() in prefixes)]
    merged: dict[str, str] = {}
    for tag in [*kept, *wanted]:
        merged[tag.casefold()] = tag
    return "; ".join(merged.values())


def _rev_test(rev: Any) -> Any:
    """The JSON Patch operation that makes a write apply only over revision ``rev`` (412 otherwise)."""
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    return JsonPatchOperation(op="test", path="/rev", value=rev)


def _priority(labels: Iterable[str]) -> int:
    for label in labels:
        prefix, _, level = label.lower().partition(":")
        if prefix in ("drift", "severity", "priority") and level in _PRIORITY:
            return _PRIORITY[level]
    return 2


def _patch(fields: Mapping[str, Any], *, op: str = "add") -> list[Any]:
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    return [JsonPatchOperation(op=op, path=f"/fields/{name}", value=value)
            for name, value in fields.items()]


def _quote(text: str) -> str:
    return text.replace("'", "''")


# ---------------------------------------------------------------------------
# Repos


class AzureRepos(ReportsChangedPaths, NamesChangesForLinks, _CountedByClient):
    """Pull requests and their threads on one repository, behind the SourceControl port.

    Who may do what is not asked of the service: ``permissions`` maps users (unique names) and
    groups (named in ``groups``, a mapping of group to members) to a level name of ``Permission``
    (``"write"``, ``"admin"``...); anyone else gets ``default_permission``.
    """

    name = "azure"
    commenters_can_read = False  # a project's readers are not known from a comment: levels come from settings
    has_issues = False

    def __init__(self, client: AzureDevOpsClient, *, project: str, repository: str, branch: str = "main",
                 bot_user: str = "", permissions: Mapping[str, str] | None = None,
                 groups: Mapping[str, Iterable[str]] | None = None, default_permission: str = "read",
                 status_genre: str = "mlops-bot") -> None:
        self.client, self.project, self.repo, self.branch = client, project, repository, branch
        self.bot_user = bot_user.lower()
        self.permissions = {k.lower(): _level(v) for k, v in (permissions or {}).items()}
        self.groups = {k.lower(): {m.lower() for m in v} for k, v in (groups or {}).items()}
        self.default_permission = _level(default_permission)
        self.status_genre = status_genre
        self._threads: dict[int, str] = {}  # pull request -> the comment id a reply should follow
        self._ids: tuple[str, str] | None = None  # (project id, repository id), read once
        self._first_comments_cursor: str | None = None

    # --- polling

    def merged_changes(self, cursor: str | None) -> tuple[list[Change], str | None]:
        """Pull requests completed into ``branch`` since the cursor, oldest merge first.

        The cursor is the newest closed date seen and the ids of the pull requests closed within
        ``_MERGE_LOOKBACK`` of it (``closedDate|id,id``). A poll reads every page (``$skip``, ``$top``)
        of the completed pull requests closed after that date less the lookback (``minTime`` on
        ``queryTimeRangeType=closed``): the service lists newest created first, so an old pull
        request merged now can be on any page, and paging by offset over a set that only grows can
        repeat one, never skip one. A merge is news when its id is not in the cursor, so two in the
        same second, one completed out of creation order and one that shows up late are each read
        once. Nothing merged: one request (while fewer than a page closed within the lookback). A
        listed description is cut to 400 symbols; a cut one is read whole, by id, so ``AB#12`` near
        its end is seen.

        A first look starts from now: the newest closed date among the newest created pull
        requests, then every one closed after it, give the newest closed date of all.
        """
        if cursor is None:
            closed = [time_of(p["closedDate"]) for p in self._completed(None, pages=False)]
            if not closed:
                return [], "|"
            return [], self._merge_cursor(self._completed(max(closed) - _MERGE_LOOKBACK), max(closed))
        since_text, _, seen_text = cursor.partition("|")
        seen = {part for part in seen_text.split(",") if part}
        since = time_of(since_text) if since_text else None
        listed = self._completed(since - _MERGE_LOOKBACK if since is not None else None)
        fresh = sorted((p for p in listed if str(p["pullRequestId"]) not in seen
                        and (p.get("lastMergeCommit") or {}).get("commitId")),
                       key=lambda p: (time_of(p["closedDate"]), int(p["pullRequestId"])))
        return [self._change(p) for p in fresh], self._merge_cursor(listed, since)

    def _completed(self, after: datetime | None, *, pages: bool = True) -> list[dict[str, Any]]:
        """The completed pull requests into ``branch`` closed after ``after`` (all with None), every
        page of them (the first only, without ``pages``), as JSON."""
        query: dict[str, Any] = {"searchCriteria.status": "completed",
                                 "searchCriteria.targetRefName": f"refs/heads/{self.branch}", "$top": _PULLS_PAGE}
        if after is not None:
            query["searchCriteria.queryTimeRangeType"] = "closed"
            query["searchCriteria.minTime"] = after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        found: dict[int, dict[str, Any]] = {}
        skip = 0
        while True:
            page = self.client.get_json(
                "git", "git.get_pull_requests", location_id=_PULL_REQUESTS, version="7.1-preview.1",
                route_values={"project": self.project, "repositoryId": self.repo},
                query={**query, "$skip": skip or None}) or {}
            items = page.get("value") or []
            for item in items:
                if item.get("closedDate") and (after is None or time_of(item["closedDate"]) > after):
                    found.setdefault(int(item["pullRequestId"]), item)
            if not pages or len(items) < _PULLS_PAGE:
                return list(found.values())
            skip += len(items)

    @staticmethod
    def _merge_cursor(listed: list[dict[str, Any]], since: datetime | None) -> str:
        """The newest closed date and the ids read within the lookback of it; one listed without its
        merge commit yet is left out, so it is read again while the lookback covers it."""
        closed = {int(p["pullRequestId"]): time_of(p["closedDate"]) for p in listed}
        newest = max([*closed.values(), *([since] if since is not None else [])], default=None)
        if newest is None:
            return "|"
        merged = {int(p["pullRequestId"]) for p in listed if (p.get("lastMergeCommit") or {}).get("commitId")}
        recent = sorted(n for n, when in closed.items() if when > newest - _MERGE_LOOKBACK and n in merged)
        return f"{_stamp(newest)}|{','.join(map(str, recent))}"

    def new_comments(self, cursor: str | None) -> tuple[list[Comment], str | None]:
        """Comments in the threads of active pull requests since the cursor (``time|id,id``);
        system comments are left out. A first look starts from now; its cursor is kept here too,
        since a caller stores a cursor only with the events it brings (and a first look brings none)."""
        from azure.devops.v7_1.git.models import GitPullRequestSearchCriteria

        if cursor is None and self._first_comments_cursor is not None:
            cursor = self._first_comments_cursor

        found: list[tuple[str, Comment]] = []
        for pull in self._active_pulls(GitPullRequestSearchCriteria(status="active")):
            for thread in self.client.call("git", "get_threads", self.repo, pull.pull_request_id,
                                           project=self.project) or []:
                if thread.is_deleted:
                    continue
                for item in thread.comments or []:
                    if item.comment_type == "system" or item.is_deleted or not item.content:
                        continue
                    found.append((_stamp(time_of(item.published_date)), self._comment(pull, thread, item)))
        if not found:
            if cursor is None:
                self._first_comments_cursor = "|"
            return [], cursor if cursor is not None else "|"
        newest = max(stamp for stamp, _ in found)
        at_newest = sorted(c.id for stamp, c in found if stamp == newest)
        if cursor is None:
            self._first_comments_cursor = f"{newest}|{','.join(at_newest)}"
            return [], self._first_comments_cursor
        since, _, seen = cursor.partition("|")
        seen_ids = set(seen.split(",")) if seen else set()
        fresh = sorted(((s, c) for s, c in found if s > since or (s == since and c.id not in seen_ids)),
                       key=lambda pair: pair[0])
        for _stamp_, comment in fresh:
            if not comment.by_bot:  # a reply to this target follows the newest command
                self._threads[comment.target.number] = comment.id
        if newest == since:
            at_newest = sorted(seen_ids | set(at_newest))
        return [c for _, c in fresh], f"{newest}|{','.join(at_newest)}"

    def _active_pulls(self, criteria: Any) -> list[Any]:
        """Every active pull request, page by page: a busy repository has more than one page."""
        pulls: dict[int, Any] = {}
        skip = 0
        while True:
            page = self.client.call("git", "get_pull_requests", self.repo, criteria, project=self.project,
                                    skip=skip or None, top=_PULLS_PAGE) or []
            for pull in page:  # a pull request created between two pages shifts the rest: read once each
                pulls.setdefault(pull.pull_request_id, pull)
            if len(page) < _PULLS_PAGE:
                return list(pulls.values())
            skip += len(page)

    def change_paths(self, repo: str, number: int) -> list[str]:
        """The files the pull request changes (its newest iteration against the common commit with
        the target, i.e. the whole pull request), without the leading ``/``; a rename gives both
        its paths. Two requests, plus one per 2000 files.

        Read as JSON: the client's ``GitPullRequestChange`` model (7.1.0b4) keeps only
        ``changeTrackingId`` and drops each entry's ``item.path`` and ``changeType``.
        """
        iterations = self.client.call("git", "get_pull_request_iterations", self.repo, number, project=self.project)
        if not iterations:
            return []
        last = max(int(it.id) for it in iterations)
        paths: list[str] = []
        skip: int | None = 0
        while skip is not None:
            page = self.client.get_json(
                "git", "git.get_pull_request_iteration_changes", location_id=_ITERATION_CHANGES,
                version="7.1-preview.1", route_values={"project": self.project, "repositoryId": self.repo,
                                                       "pullRequestId": number, "iterationId": last},
                query={"$top": 2000, "$skip": skip or None}) or {}
            for entry in page.get("changeEntries") or []:
                item = entry.get("item") or {}
                for path in (item.get("path"), entry.get("originalPath"), entry.get("sourceServerItem")):
                    if path and not item.get("isFolder"):
                        clean = str(path).lstrip("/")
                        if clean and clean not in paths:
                            paths.append(clean)
            skip = page.get("nextSkip") if page.get("nextSkip") else None
        return paths

    def link_url(self, target: Target) -> str:
        """The pull request as a work item link: ``vstfs:///Git/PullRequestId/{project}%2F{repo}%2F{n}``
        (the ids are read once, with the repository)."""
        if self._ids is None:
            repository = self.client.call("git", "get_repository", self.repo, project=self.project)
            self._ids = (str(repository.project.id), str(repository.id))
        project_id, repo_id = self._ids
        return f"{_PR_ARTIFACT}{project_id}%2F{repo_id}%2F{target.number}"

    # --- writes

    def reply(self, target: Target, body: str, *, marker: str, in_reply_to: str | None = None) -> str:
        """A comment with the marker: in the thread of ``in_reply_to`` (``pr:thread:comment``) or
        of the newest command ``new_comments`` saw on the pull request, else in a new thread."""
        from azure.devops.v7_1.git.models import Comment as GitComment, GitPullRequestCommentThread

        content = _with_marker(body, marker)
        parent = in_reply_to or self._threads.get(target.number)
        if parent:
            _pr, thread_id, comment_id = (int(part) for part in parent.split(":"))
            created = self.client.call("git", "create_comment",
                                       GitComment(content=content, parent_comment_id=comment_id, comment_type="text"),
                                       self.repo, target.number, thread_id, project=self.project, write=True)
            return f"{target.number}:{thread_id}:{created.id}"
        thread = self.client.call("git", "create_thread",
                                  GitPullRequestCommentThread(comments=[GitComment(content=content, comment_type="text")],
                                                              status="closed"),
                                  self.repo, target.number, project=self.project, write=True)
        return f"{target.number}:{thread.id}:{thread.comments[0].id}"

    def edit_reply(self, target: Target, comment_id: str, body: str, *, marker: str) -> None:
        from azure.devops.v7_1.git.models import Comment as GitComment

        _pr, thread_id, number = (int(part) for part in comment_id.split(":"))
        self.client.call("git", "update_comment", GitComment(content=_with_marker(body, marker)), self.repo,
                         target.number, thread_id, number, project=self.project, write=True)

    def find_reply(self, target: Target, marker: str) -> str | None:
        hidden = marker_comment(marker)
        for thread in self.client.call("git", "get_threads", self.repo, target.number, project=self.project) or []:
            for item in thread.comments or []:
                if hidden in (item.content or ""):
                    return f"{target.number}:{thread.id}:{item.id}"
        return None

    def react(self, comment: Comment, reaction: str) -> None:
        """Azure Repos comments have one reaction, the like (the thumbs-up under a comment): ``eyes``
        (a command was seen), ``+1``, ``rocket`` and the like become a like by the bot's user;
        ``-1`` and ``confused`` have no counterpart and send nothing. Liking twice changes nothing,
        so repeating after an unknown outcome is harmless."""
        if reaction not in _LIKED:
            return
        parts = comment.id.split(":")
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            log.debug("cannot like comment %s: not a pull request thread comment id", comment.id)
            return
        pull, thread, number = (int(part) for part in parts)
        self.client.call("git", "create_like", self.repo, pull, thread, number, project=self.project, write=True)

    def set_status(self, repo: str, commit: str, *, state: str, description: str, context: str, url: str = "") -> None:
        """A commit status on ``commit`` (the git statuses API): genre and name from ``context``
        (``mlops-bot/pipeline``); the newest status per context is the one shown."""
        from azure.devops.v7_1.git.models import GitStatus, GitStatusContext

        if state not in _STATUS_STATE:
            raise PermanentError(f"unknown status state {state!r}; expected one of {', '.join(_STATUS_STATE)}")
        genre, _, name = context.rpartition("/")
        status = GitStatus(state=_STATUS_STATE[state], description=description[:256],
                           context=GitStatusContext(genre=genre or self.status_genre, name=name or "pipeline"),
                           target_url=url or None)
        self.client.call("git", "create_commit_status", status, commit, self.repo, project=self.project, write=True)

    def permission(self, repo: str, user: str) -> Permission:
        who = user.lower()
        levels = [self.permissions[who]] if who in self.permissions else []
        levels += [self.permissions[g] for g, members in self.groups.items() if who in members and g in self.permissions]
        return max(levels) if levels else self.default_permission

    def linked_tickets(self, change: Change, patterns: tuple[str, ...]) -> list[tuple[str, int]]:
        from integrations.ticket_references import find_ticket_references

        found = find_ticket_references(f"{change.title}\n{change.body}", patterns)
        refs = self.client.call("git", "get_pull_request_work_item_refs", self.repo, change.number,
                                project=self.project)
        for ref in refs or []:
            pair = ("azure", int(ref.id))
            if pair not in found:
                found.append(pair)
        return found

    # --- helpers

    def _change(self, pull: Mapping[str, Any]) -> Change:
        """A listed completed pull request as a change; a description the list cut is read whole."""
        number, body = int(pull["pullRequestId"]), str(pull.get("description") or "")
        if len(body.encode("utf-16-le")) // 2 >= _LISTED_DESCRIPTION - 1:  # cut (maybe inside a surrogate pair)
            body = self.client.call("git", "get_pull_request", self.repo, number,
                                    project=self.project).description or body
        return Change(repo=self.repo, number=number, title=str(pull.get("title") or ""), body=body,
                      author=name_of(pull.get("createdBy")), commit=str(pull["lastMergeCommit"]["commitId"]),
                      merged_at=time_of(pull["closedDate"]), url=str(pull.get("url") or ""),
                      branch=str(pull.get("targetRefName") or "").removeprefix("refs/heads/"))

    def _comment(self, pull: Any, thread: Any, item: Any) -> Comment:
        author = name_of(item.author)
        by_bot = (bool(self.bot_user) and author.lower() == self.bot_user) or "<!-- mlops-bot:" in item.content
        return Comment(id=f"{pull.pull_request_id}:{thread.id}:{item.id}",
                       target=Target("change", self.repo, int(pull.pull_request_id)), author=author,
                       body=item.content, created_at=time_of(item.published_date),
                       edited=item.last_content_updated_date is not None
                       and time_of(item.last_content_updated_date) > time_of(item.published_date),
                       by_bot=by_bot)


def _level(name: str) -> Permission:
    try:
        return _LEVELS[name.lower()]
    except KeyError:
        raise PermanentError(f"unknown permission level {name!r}; expected one of {', '.join(_LEVELS)}") from None


# ---------------------------------------------------------------------------
# Pipelines


class AzurePipelines(_CountedByClient):
    """One YAML pipeline, behind the PipelineEngine port.

    ``start`` passes ``run_id``, ``project``, ``trigger``, ``reason``, ``promote`` and ``context``
    (JSON) as template parameters; the YAML must declare them and name the run
    ``name: ${{ parameters.run_id }}``, so that ``status(run_id)`` finds it among the runs.
    """

    name = "azure-pipelines"

    def __init__(self, client: AzureDevOpsClient, *, project: str, pipeline_id: int, branch: str = "main") -> None:
        self.client, self.project, self.pipeline_id, self.branch = client, project, int(pipeline_id), branch

    def start(self, project: str, *, run_id: str, trigger: str, reason: str, context: dict[str, Any],
              promote: bool = True) -> RunHandle:
        existing = self.status(run_id)
        if existing is not None:
            return existing
        parameters = {"run_id": run_id, "project": project, "trigger": trigger, "reason": reason,
                      "promote": "true" if promote else "false", "context": json.dumps(context, sort_keys=True)}
        body = {"templateParameters": parameters,
                "resources": {"repositories": {"self": {"refName": f"refs/heads/{self.branch}"}}}}
        run = self.client.call("pipelines", "run_pipeline", body, self.project, self.pipeline_id, write=True)
        return self._handle(run, run_id)

    def status(self, run_id: str) -> RunHandle | None:
        runs = self.client.call("pipelines", "list_runs", self.project, self.pipeline_id)
        match = next((r for r in runs or [] if r.name == run_id), None)
        if match is None:
            return None
        run = self.client.call("pipelines", "get_run", self.project, self.pipeline_id, match.id)
        return self._handle(run, run_id)

    def _handle(self, run: Any, run_id: str) -> RunHandle:
        state, result = (run.state or "unknown"), (run.result or "")
        if state == "completed":
            status = "succeeded" if result == "succeeded" else "failed"
        elif state in ("inProgress", "canceling"):
            status = "running"
        else:
            status = "queued"
        links = getattr(run, "_links", None)
        web = ""
        if links is not None and getattr(links, "additional_properties", None):
            web = (links.additional_properties.get("web") or {}).get("href", "")
        return RunHandle(run_id=run_id, status=status, url=web or str(run.url or ""),
                         result={"azure_run_id": run.id, "state": state, "result": result or None})


# ---------------------------------------------------------------------------
# Doctor

_SCOPE_FIX = {
    "wit": "edit the PAT (User settings → Personal access tokens) and give it Work Items: Read & write",
    "git": "edit the PAT and give it Code: Read & status, and Code: Read & write for replies in pull request threads",
    "pipelines": "edit the PAT and give it Build: Read & execute",
}


def diagnose(boards: AzureBoards, repos: AzureRepos | None = None,
             pipelines: AzurePipelines | None = None) -> list[tuple[str, str | None, str]]:
    """What ``mlops-bot doctor`` reports for Azure DevOps: (what was checked, the problem or None,
    the fix). Reads only, except one ``validateOnly`` work item creation, which the service checks
    (type, area, iteration, the PAT's write scope) and does not save. A PAT's scopes cannot be
    listed with the PAT itself, so each is proven by a call that needs it; the status scope (commit
    statuses) is the one left unproven, as only a write would show it."""
    client, project = boards.client, boards.project
    checks: list[tuple[str, str | None, str]] = []

    def failed(what: str, exc: Exception, area: str, fixes: Mapping[int, str]) -> None:
        status = getattr(exc, "status", None)
        if isinstance(exc, TransientError):
            checks.append((what, str(exc), "check AZURE_DEVOPS_ORG_URL and the network, then try again"))
        elif status == 401:
            checks.append((what, f"the PAT may not do this: {exc}", _SCOPE_FIX[area]))
        else:
            checks.append((what, str(exc), fixes.get(status or 0, "see the message")))

    # 1. the PAT: who it is (any valid PAT may ask)
    try:
        data = client.call("location", "get_connection_data")
        user = getattr(data.authenticated_user, "provider_display_name", None) or "?"
        checks.append((f"Azure DevOps token (authenticates as {user})", None, ""))
    except (PermanentError, TransientError) as exc:
        if getattr(exc, "status", None) == 401:
            checks.append(("Azure DevOps token", "the PAT was refused: it is wrong, expired or revoked",
                           "create a PAT (User settings → Personal access tokens) with Work Items: Read & write "
                           "(and Code: Read & status, Build: Read & execute for Repos and Pipelines) and set "
                           "AZURE_DEVOPS_EXT_PAT"))
        elif getattr(exc, "status", None) == 404:
            checks.append(("Azure DevOps organization", str(exc),
                           "set AZURE_DEVOPS_ORG_URL to https://dev.azure.com/YOUR-ORG"))
        else:
            checks.append(("Azure DevOps", str(exc), "check AZURE_DEVOPS_ORG_URL and the network"))
        return checks  # nothing else can work

    # 2. the project and the work item type (Work Items: Read)
    what = f"project {project}, work item type {boards.work_item_type}"
    try:
        kind = client.call("wit", "get_work_item_type", project, boards.work_item_type)
    except (PermanentError, TransientError) as exc:
        if getattr(exc, "status", None) == 404 and "VS402323" in str(exc):
            names = [t.name for t in client.call("wit", "get_work_item_types", project) or []]
            checks.append((what, f"the project has no work item type {boards.work_item_type!r}",
                           f"set MLOPS_AZURE_WORK_ITEM_TYPE to one of: {', '.join(names)}"))
        else:
            failed(what, exc, "wit", {404: "set AZURE_DEVOPS_PROJECT to the project's name as in its URL"})
        return checks
    states = [s.name for s in kind.states or []]
    missing = [s for s in (boards.close_state,) if states and s not in states]
    checks.append((what, f"{boards.work_item_type} has no state {missing[0]!r} (its states: {', '.join(states)})"
                   if missing else None, "set MLOPS_AZURE_PROCESS to the project's process (Basic, Agile, Scrum, CMMI)"))

    # 3. the team and its current iteration
    what = f"team {boards.team}"
    try:
        current = client.call("work", "get_team_iterations", boards._context(), timeframe="current")
        checks.append((f"{what}, current iteration {current[0].path}" if current else what,
                       None if current else "the team has no current iteration: tickets would go to the "
                       "project's root iteration",
                       "give the team an iteration that covers today (Project settings → Boards → Team "
                       "configuration → Iterations)"))
    except (PermanentError, TransientError) as exc:
        failed(what, exc, "wit", {404: f"set MLOPS_AZURE_TEAM to one of the project's teams (default "
                                       f"'{project} Team')"})

    # 4. the area path
    if boards.area_path:
        what = f"area path {boards.area_path}"
        parts = [p for p in re.split(r"[\\/]", boards.area_path) if p]
        if not parts or parts[0].lower() != project.lower():
            checks.append((what, f"it does not start with the project's name ({project})",
                           f"set MLOPS_AZURE_AREA_PATH to {project}\\AREA"))
        else:
            try:
                if parts[1:]:
                    client.call("wit", "get_classification_node", project, "areas", path="/".join(parts[1:]))
                checks.append((what, None, ""))
            except (PermanentError, TransientError) as exc:
                failed(what, exc, "wit", {404: "set MLOPS_AZURE_AREA_PATH to an existing area (Project settings → "
                                               "Boards → Project configuration → Areas)"})

    # 5. writing work items (Work Items: Read & write), checked by the service and not saved
    what = "creating work items (checked, not saved)"
    try:
        from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

        fields = {"System.Title": "mlops-bot doctor", "System.Tags": boards.tag}
        if boards.area_path:
            fields["System.AreaPath"] = boards.area_path
        document = [JsonPatchOperation(op="add", path=f"/fields/{k}", value=v) for k, v in fields.items()]
        client.call("wit", "create_work_item", document, project, boards.work_item_type, validate_only=True)
        checks.append((what, None, ""))
    except (PermanentError, TransientError) as exc:
        failed(what, exc, "wit", {400: "check MLOPS_AZURE_AREA_PATH and the work item type's rules"})

    # 6. the repository (Code: Read) and 7. the pipeline (Build: Read)
    if repos is not None:
        what = f"repository {repos.repo}"
        try:
            client.call("git", "get_repository", repos.repo, project=project)
            checks.append((what, None, ""))
        except (PermanentError, TransientError) as exc:
            failed(what, exc, "git", {404: "set MLOPS_AZURE_REPOSITORY to a repository of the project"})
    if pipelines is not None:
        what = f"pipeline {pipelines.pipeline_id}"
        try:
            found = client.call("pipelines", "get_pipeline", project, pipelines.pipeline_id)
            checks.append((f"pipeline {found.name} ({pipelines.pipeline_id})", None, ""))
        except (PermanentError, TransientError) as exc:
            failed(what, exc, "pipelines", {404: "set MLOPS_AZURE_PIPELINE_ID to the id in the pipeline's URL "
                                                 "(…/_build?definitionId=ID)"})
    return checks
