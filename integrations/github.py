"""GitHub through PyGithub: pull requests and their comments as source control, issues as the tracker.

Cheap on the API: each poll is one conditional request per kind (comments, closed pull requests)
per repository; GitHub answers 304 when nothing changed, which costs nothing against the primary
rate limit. Objects are built lazily (``Github(lazy=True)``), so a reply is one request, not a
fetch followed by a write.

Failures become the ports' errors: 5xx, timeouts, lost connections and rate limits are
``TransientError`` (a write whose answer was lost is flagged ``outcome_unknown``, so the outbox
looks for its marker before repeating it); 404 and 422 are ``PermanentError``.

Refusals for want of a permission are ``PermissionRefused``, naming what to grant: a fine-grained
token or App installation without the permission a route needs gets 403 "Resource not accessible
by ..." with ``X-Accepted-GitHub-Permissions`` (``issues=write``); a classic token without the
scope gets 404 with ``X-Accepted-OAuth-Scopes`` (``repo``); and a 404 from a repository the token
or installation was not given (GitHub hides a private repository rather than refuse it) is told
apart from a missing issue by asking for the repository itself.

A per-cycle budget (``MLOPS_GITHUB_CYCLE_BUDGET``) caps the requests made in one poll interval:
once spent, every further request raises ``CycleBudgetSpent`` (a ``StillRunning``: the work is not
failed, it waits), so a burst of work spreads over several cycles instead of spending the hour's
rate limit at once. The poll's own two requests are always made; each poll starts a new cycle, and
so does a poll interval gone by without one (a bot fed by webhooks that rarely polls).

Workflows on GitHub Actions report metrics by convention: the run uploads an artifact named
``mlops-metrics`` holding ``metrics.json``, either what ``mlops-bot pipeline run --json`` prints
or ``{"metrics": {"roc_auc": 0.97, ...}}``; the bot reads it through the artifacts API.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self
from urllib.parse import urlsplit

from integrations.api_calls import ApiCalls, CountingRetry
from integrations.github_payloads import change_from_pull, comment_from_json
from integrations.ports import (
    ApiCallObserver,
    Change,
    ChangeHead,
    CheckAnnotation,
    CheckReport,
    CheckRunRef,
    Comment,
    EditsTicketBody,
    ListsTickets,
    PermanentError,
    Permission,
    PermissionRefused,
    ReadsCommitStatuses,
    ReportsApiCalls,
    ReportsChangedPaths,
    ReportsChangeHeads,
    ReportsCheckRuns,
    ReportsCommitMessages,
    RunHandle,
    StillRunning,
    Target,
    Ticket,
    TicketBody,
    TransientError,
    marker_comment,
    with_marker,
)

__all__ = ["METRICS_ARTIFACT", "ContentPacer", "CycleBudgetSpent", "GitHubActionsEngine", "GitHubAppSource",
           "GitHubAuth", "GitHubClient", "GitHubIssues", "GitHubSource", "WritesPaced", "connect"]

log = logging.getLogger("mlops_bot.github")

_ROLE_PERMISSION = {
    "admin": Permission.admin, "maintain": Permission.maintain, "write": Permission.write,
    "triage": Permission.triage, "read": Permission.read, "none": Permission.none,
}
PERMISSION_TTL_S = 300.0
_REACTIONS = {"eyes", "+1", "-1", "rocket", "confused", "heart", "hooray", "laugh"}
_MARKER = re.compile(r"<!-- mlops-bot:(.*?) -->")  # marker_comment's form
METRICS_ARTIFACT, METRICS_FILE = "mlops-metrics", "metrics.json"
_MAX_METRICS_BYTES = 1024 * 1024


class CycleBudgetSpent(StillRunning):
    """This poll cycle's GitHub requests are spent: the work waits for the next cycle, it has not failed."""


class WritesPaced(StillRunning):
    """The hour's content-creating requests are spent: the write waits, it has not failed (nor been sent)."""


#: GitHub's advice for POST, PATCH, PUT and DELETE requests: "wait at least one second between each
#: request" ("Best practices for using the REST API"); PyGithub's own default ``seconds_between_writes``.
#: It keeps the bot under the secondary limit of 80 content-generating requests a minute.
WRITE_SPACING_S = 1.0
#: The secondary limit of 500 content-generating requests an hour ("Rate limits for the REST API"), less
#: a tenth for what others do with the same token or installation.
WRITES_PER_HOUR = 450
#: the longest a write waits for its slot in the thread that makes it; a longer wait is the outbox's
MAX_WRITE_WAIT_S = 10.0


class ContentPacer:
    """Spaces the bot's writes to GitHub so that they stay under its secondary rate limits.

    ``wait()`` before each POST, PATCH, PUT or DELETE: it sleeps until ``spacing_s`` after the
    previous write (successive slots for concurrent callers), and raises ``WritesPaced`` (with
    ``retry_after``, taking no slot) when ``per_hour`` writes already fill the last hour or the slot
    is more than ``max_wait_s`` away. ``ContentPacer.unpaced()`` does nothing. ``monotonic`` and
    ``sleep`` are the time it paces on (a test passes a clock it controls).
    """

    def __init__(self, *, spacing_s: float = WRITE_SPACING_S, per_hour: int = WRITES_PER_HOUR,
                 max_wait_s: float = MAX_WRITE_WAIT_S, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spacing_s, self.per_hour, self.max_wait_s = spacing_s, per_hour, max_wait_s
        self._monotonic, self._sleep = monotonic, sleep
        self._hour: deque[float] = deque()  # slots of the writes of the last hour
        self._lock = threading.Lock()

    @classmethod
    def unpaced(cls) -> ContentPacer:
        return cls(spacing_s=0.0, per_hour=0)

    @classmethod
    def for_api(cls, base_url: str) -> ContentPacer:
        """Paced on github.com and GitHub Enterprise Cloud (``*.ghe.com``), whose secondary limits
        are documented; not on GitHub Enterprise Server, where "rate limits are disabled by
        default" and any an administrator sets are not known to the bot."""
        host = (urlsplit(base_url).hostname or "").lower()
        return cls() if host == "api.github.com" or host.endswith(".ghe.com") else cls.unpaced()

    def wait(self) -> None:
        if not self.spacing_s and not self.per_hour:
            return
        with self._lock:
            now = self._monotonic()
            while self._hour and self._hour[0] <= now - 3600:
                self._hour.popleft()
            at = max(now, self._hour[-1] + self.spacing_s) if self._hour else now
            if self.per_hour and len(self._hour) >= self.per_hour:
                at = max(at, self._hour[-self.per_hour] + 3600)
            if at - now > self.max_wait_s:
                raise WritesPaced(f"GitHub's secondary limits: {len(self._hour)} writes in the last hour; the next "
                                  f"waits {at - now:.0f} s", retry_after=at - now)
            self._hour.append(at)
            if len(self._hour) > max(self.per_hour, 1):
                self._hour.popleft()
        if at > now:
            self._sleep(at - now)


@dataclass(frozen=True)
class GitHubAuth:
    """A token, or a GitHub App (id, private key PEM, installation id)."""

    token: str | None = None
    app_id: str | None = None
    private_key: str | None = None
    installation_id: int | None = None


def connect(auth: GitHubAuth, *, base_url: str = "https://api.github.com", timeout: float = 15,
            retry: Any = "default") -> Any:
    """A PyGithub client, lazy, authenticated by token or as an App installation."""
    from github import Auth, Github

    if auth.token:
        credentials = Auth.Token(auth.token)
    elif auth.app_id and auth.private_key and auth.installation_id:
        credentials = Auth.AppAuth(auth.app_id, auth.private_key).get_installation_auth(int(auth.installation_id))
    else:
        raise PermanentError("GitHub needs GITHUB_TOKEN, or GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and "
                             "GITHUB_APP_INSTALLATION_ID")
    from urllib3.util.retry import Retry

    # Every request is counted by the Retry PyGithub hands to urllib3 (integrations/api_calls.py);
    # GitHubClient finds the count there, in the arguments the client was built with.
    calls = ApiCalls("github")
    if retry == "default":
        # Only reads are retried here, briefly; writes and rate limits go back to the outbox, which
        # waits as long as GitHub asks and checks for a lost write before repeating it.
        retry = CountingRetry(total=2, connect=2, read=1, status=2, backoff_factor=0.3,
                              status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"}),
                              respect_retry_after_header=False, raise_on_status=False, calls=calls)
    elif retry is None:  # what requests does with PyGithub's retry=None: no retries at all
        retry = CountingRetry(0, read=False, calls=calls)
    else:
        retry = CountingRetry.copying(Retry.from_int(retry), calls)
    # PyGithub's own spacing is off: it sleeps in the request on the wall clock, for reads too (0.25 s),
    # and cannot turn the hour's limit into a wait for the outbox. GitHubClient paces writes instead
    # (ContentPacer: GitHub's one second between writes, and its hourly limit).
    return Github(base_url=base_url.rstrip("/"), timeout=int(max(1, timeout)), auth=credentials, lazy=True,
                  per_page=100, retry=retry, seconds_between_requests=None, seconds_between_writes=None)


class GitHubClient:
    """One repository on GitHub, with the rate-limit budget kept in view."""

    def __init__(self, gh: Any, repo: str, *, bot_login: str = "", reserve: int = 50,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), cycle_budget: int = 0,
                 cycle_s: float = 60.0, pacer: ContentPacer | None = None):
        self.gh, self.repo_name, self.bot_login, self.reserve, self.clock = gh, repo, bot_login, reserve, clock
        self.repo = gh.get_repo(repo)  # lazy: no request
        self.requester = gh.requester
        self._etags: dict[str, str] = {}
        self.cycle_budget, self.cycle_s, self.cycle_used = cycle_budget, cycle_s, 0
        self._cycle_started = clock()
        self._clone_url: str | None = None
        self.pacer = pacer or ContentPacer.for_api(gh.requester.base_url)
        # The count of this client's requests, kept by the Retry it was built with (``connect``);
        # ``Requester.kwargs`` is PyGithub's own list of those arguments. None: built elsewhere, not counted.
        retry = gh.requester.kwargs.get("retry")
        self.api_calls: ApiCalls | None = retry.calls if isinstance(retry, CountingRetry) else None

    def report_api_calls(self, observer: ApiCallObserver) -> None:
        """Tell ``observer`` of each request from now on (see ``ReportsApiCalls``)."""
        if self.api_calls is None:
            log.warning("GitHub requests are not counted: the PyGithub client was not built by "
                        "integrations.github.connect, which gives it the Retry that counts them")
            return
        self.api_calls.observe(observer)

    def readiness(self) -> None:
        """GitHub's ``GET /rate_limit``: it answers whoever may use the API, and costs nothing against the limit."""
        self.gh.get_rate_limit()

    def begin_cycle(self) -> None:
        """A new poll cycle: its request budget starts afresh."""
        self.cycle_used, self._cycle_started = 0, self.clock()

    def call(self, verb: str, path: str, *, params: dict | None = None, body: Any = None,
             etag_key: str | None = None, write: bool = False, url: str | None = None,
             budgeted: bool = True, conditional: bool = True) -> tuple[dict, Any]:
        """One REST call on the repository (``path`` after ``/repos/{owner}/{repo}``, or a full ``url``).

        With ``etag_key`` the call is conditional (unless ``conditional`` is False: the ETag is only
        kept then); a 304 returns ``(headers, None)`` and is free. ``budgeted=False`` (the poll's own requests) is made even when the cycle's budget is spent.
        """
        self._spend(budgeted)
        if verb != "GET":
            self.pacer.wait()
        headers = {}
        if etag_key and conditional and etag_key in self._etags:
            headers["If-None-Match"] = self._etags[etag_key]
        try:
            # ``Github.requester`` is PyGithub's documented way to make a request its objects do not
            # ("to make requests to API endpoints not yet supported by PyGitHub"): the bot's polls are
            # conditional (If-None-Match), and its reads take one request where objects take several.
            response_headers, data = self.requester.requestJsonAndCheck(
                verb, url or f"{self.repo.url}{path}", parameters=params, headers=headers, input=body)
        except Exception as exc:
            from github import GithubException

            if self.api_calls is not None and isinstance(exc, GithubException) and exc.headers:
                self.api_calls.rate_limit(exc.headers)  # a refusal carries the budget too
            translated = _translate(exc, write=write, what=f"{verb} {self.repo_name}{path}" if url is None else
                                    f"{verb} {url}")
            if _status_of(exc) == 404 and type(translated) is PermanentError:
                translated = self._hidden_repository(exc, asked_for_it=(path == "" and url is None)) or translated
            raise translated from exc
        if self.api_calls is not None:
            self.api_calls.rate_limit(response_headers)
        if etag_key and response_headers.get("etag"):
            self._etags[etag_key] = response_headers["etag"]
        return response_headers, data

    def _hidden_repository(self, exc: Exception, *, asked_for_it: bool) -> PermissionRefused | None:
        """A 404 that GitHub gave because the token or installation may not see the repository
        (as a refusal saying what to grant), or None for a thing that is really not there."""
        from github import GithubException

        if asked_for_it:
            hidden = True
        else:  # the issue may be gone, or the whole repository hidden: ask for the repository
            try:
                self.gh.get_repo(self.repo_name, lazy=False)  # GET /repos/{owner}/{repo}
            except GithubException as probe:
                hidden = probe.status == 404
            except Exception:  # noqa: BLE001 - no answer: the 404 stays what it was
                return None
            else:
                hidden = False
        if not hidden:
            return None
        headers = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}
        if "x-oauth-scopes" in headers:  # a classic token: it sees private repositories with ``repo``
            granted = {scope.strip() for scope in headers["x-oauth-scopes"].split(",") if scope.strip()}
            if "repo" in granted:
                return None  # it would see it: the repository is not there
            return PermissionRefused(
                f"GitHub answered 404 for {self.repo_name}: a classic token without the 'repo' scope (it has "
                f"{', '.join(sorted(granted)) or 'none'}) cannot see a private repository; grant the token the "
                "'repo' scope (github.com → Settings → Developer settings → Personal access tokens), or check "
                "GITHUB_REPOSITORY", service="github", permission="repo")
        return PermissionRefused(
            f"GitHub answered 404 for {self.repo_name}: the token or App installation was not given this "
            f"repository (a private one is hidden from it), or it does not exist; give it access to "
            f"{self.repo_name} (fine-grained token: Repository access; GitHub App: the installation's repository "
            "access) with Metadata: Read-only, or check GITHUB_REPOSITORY", service="github",
            permission="metadata=read")

    def diagnose(self) -> list[tuple[str, str | None, str]]:
        """What ``mlops-bot doctor`` reports: (what was checked, the problem or None, the fix)."""
        try:
            headers, data = self.call("GET", "")
        except PermissionRefused:
            return []  # doctor's permission checks name what to grant, once
        except PermanentError as exc:
            return [(f"GitHub repository {self.repo_name}", str(exc),
                     "check GITHUB_REPOSITORY, and that the token or App installation can see the repository")]
        except TransientError as exc:
            return [(f"GitHub at {self.gh.requester.base_url}", str(exc), "check GITHUB_API_URL and the network")]
        checks: list[tuple[str, str | None, str]] = [(f"GitHub repository {self.repo_name}", None, "")]
        scopes = headers.get("x-oauth-scopes")
        if scopes is not None:  # classic tokens say their scopes; fine-grained tokens and Apps do not
            granted = {scope.strip() for scope in scopes.split(",") if scope.strip()}
            # Said, not judged: doctor's permission checks name a missing scope once, with its use.
            checks.append((f"token scopes ({', '.join(sorted(granted)) or 'none'})", None, ""))
        permissions = data.get("permissions") or {}
        if permissions and not permissions.get("push"):
            checks.append(("write access", "the token can read the repository but not write to it",
                           "give it write access (fine-grained: Issues, Pull requests and Commit statuses: read and write)"))
        remaining, limit = self.gh.rate_limiting
        checks.append((f"rate limit ({remaining} of {limit} left)",
                       "the rate limit is spent" if remaining == 0 else None, "wait for the reset or use a GitHub App"))
        return checks

    def token(self) -> str:
        """The credential git uses over HTTPS: the token, or the App installation's current token."""
        return self.requester.auth.token

    def clone_url(self) -> str:
        """The repository's HTTPS clone URL, asked once."""
        if self._clone_url is None:
            _headers, data = self.call("GET", "")
            self._clone_url = data["clone_url"]
        return self._clone_url

    def graphql(self, document: str, variables: dict[str, Any], *, write: bool) -> tuple[dict, dict]:
        """One GraphQL request through PyGithub's public ``Requester.graphql_query``: counted in the
        cycle's budget and spaced as a write when it is a mutation, as REST calls are; its rate-limit
        headers (GraphQL has a budget of its own, ``x-ratelimit-resource: graphql``) reach /metrics.
        PyGithub's and requests' errors are left to the caller, which knows what the request was for."""
        self._spend(True)
        if write:
            self.pacer.wait()  # GitHub's secondary limits count GraphQL mutations as writes
        headers, answer = self.requester.graphql_query(document, variables)
        if self.api_calls is not None:
            self.api_calls.rate_limit(headers)
        return headers, answer

    def download(self, url: str) -> bytes:
        """A file behind an API URL that answers 302 to short-lived signed storage elsewhere (an artifact's zip).

        The storage (``*.blob.core.windows.net`` and the like) is fetched with a plain request and no
        Authorization header, as it requires; PyGithub would refuse to follow a redirect off GitHub's domains.
        """
        import requests

        self._spend(True)
        try:
            status, headers, _body = self.requester.requestJson("GET", url)
        except Exception as exc:
            raise _translate(exc, write=False, what=f"GET {url}") from exc
        location = {k.lower(): v for k, v in (headers or {}).items()}.get("location")
        if status in {404, 410}:
            raise PermanentError(f"GitHub answered {status} for {url}")
        if status >= 500 or status == 429:
            raise TransientError(f"GitHub answered {status} for {url}")
        if status not in {301, 302, 303, 307} or not location:
            raise PermanentError(f"GitHub answered {status} for {url}, not a redirect to the file")
        try:
            with requests.get(location, timeout=30, stream=True) as answer:
                if answer.status_code >= 400:
                    raise TransientError(f"the artifact storage answered {answer.status_code}")
                data = bytearray()
                for chunk in answer.iter_content(65536):
                    data.extend(chunk)
                    if len(data) > 50 * _MAX_METRICS_BYTES:
                        raise PermanentError(f"the download from {url} is too large")
                return bytes(data)
        except requests.exceptions.RequestException as exc:
            raise TransientError(f"the artifact storage did not answer: {type(exc).__name__}") from exc

    def _spend(self, budgeted: bool) -> None:
        self._check_budget()
        if (budgeted and self.cycle_budget and self.cycle_used >= self.cycle_budget
                and (self.clock() - self._cycle_started).total_seconds() >= self.cycle_s):
            self.begin_cycle()  # a whole interval without a poll: webhooks alone must not stall
        if budgeted and self.cycle_budget and self.cycle_used >= self.cycle_budget:
            raise CycleBudgetSpent(f"this cycle's {self.cycle_budget} GitHub requests are spent",
                                   retry_after=self.cycle_s)
        self.cycle_used += 1

    def _check_budget(self) -> None:
        try:
            remaining, _limit = self.gh.rate_limiting  # asks GitHub only before the first answer
        except Exception as exc:
            raise _translate(exc, write=False) from exc
        if 0 <= remaining <= self.reserve and remaining != -1:
            reset = self.gh.rate_limiting_resettime
            if reset and reset <= time.time():
                return  # the window has reset since the last answer: this request refreshes the count
            wait = max(1.0, reset - time.time()) if reset else 60.0
            # Back off before the budget runs out, so commands a person types can still be answered.
            raise TransientError(f"GitHub rate limit nearly spent ({remaining} left); waiting for the reset",
                                 retry_after=wait)

    def paged(self, path: str, params: dict) -> list[Any]:
        """Every item of a list, following GitHub's ``Link: <...>; rel="next"`` headers."""
        items: list[Any] = []
        headers, data = self.call("GET", path, params=params)
        while True:
            items.extend(data or [])
            following = _next_link(headers.get("link", ""))
            if following is None:
                return items
            headers, data = self.call("GET", "", url=following)


class _CountedByClient(ReportsApiCalls):
    """The GitHub adapters share one ``GitHubClient``: its requests and its readiness are theirs."""

    api_service = "github"
    client: GitHubClient

    def report_api_calls(self, observer: ApiCallObserver) -> None:
        self.client.report_api_calls(observer)

    def readiness(self) -> None:
        self.client.readiness()


class GitHubSource(ReportsChangedPaths, ReportsCommitMessages, ReportsChangeHeads, ReadsCommitStatuses,
                   _CountedByClient):
    """Pull requests and their comments on one repository, behind the SourceControl port."""

    name = "github"
    # Whoever can comment on a repository can read it (public: everyone; private: only those with
    # access), so read-level commands need no permission lookup.
    commenters_can_read = True
    has_issues = True  # issue #12 is a ticket only when the tracker is the repository's issues

    def __new__(cls, client: GitHubClient, **_options: Any) -> Self:
        """Made over an App installation's client, the source is a ``GitHubAppSource``, which reports
        runs as check runs (GitHub gives check runs to Apps alone); over a token, one that sets
        commit statuses. The class picks its kind from the credentials, as ``pathlib.Path`` does
        from the platform, so whoever builds a source gets the one the credentials allow."""
        kind = GitHubAppSource if cls is GitHubSource and _authenticated_as_app(client) else cls
        return super().__new__(kind)

    def __init__(self, client: GitHubClient, *, branch: str | None = None):
        self.client, self.repo = client, client.repo_name
        self.branch = branch or "main"
        self._permissions: dict[str, tuple[Permission, float]] = {}
        # The cursor each poll expects to be given next: a different one means the caller did not
        # take the whole last answer (a rate limit or the cycle's budget stopped it part-way), so
        # the next request must not be conditional, or GitHub's 304 would hide what is left.
        self._expected: dict[str, str | None] = {}

    # --- polling: one conditional request per kind and cycle -----------------------------------

    def new_comments(self, cursor: str | None) -> tuple[list[Comment], str | None]:
        since = cursor or (self.client.clock() - timedelta(minutes=10)).isoformat()
        headers, data = self.client.call("GET", "/issues/comments", params={
            "since": since, "sort": "updated", "direction": "asc", "per_page": 100,
        }, etag_key="comments", budgeted=False, conditional=self._expected.get("comments", cursor) == cursor)
        if not data:
            self._expected["comments"] = cursor
            return [], cursor or since
        # Timestamps are to the second and ``since`` is inclusive: a burst of more than a page within
        # the cursor's second would bring back the same first page for ever, so read on. Until the
        # last page is in, the next poll must not be conditional (its 304 would hide the rest).
        self._expected["comments"] = None
        data, following = list(data), _next_link(headers.get("link", ""))
        for _ in range(_MAX_COMMENT_PAGES - 1):
            if following is None:
                break
            headers, more = self.client.call("GET", "", url=following, budgeted=False)
            data.extend(more or [])
            following = _next_link(headers.get("link", ""))
        comments = [comment_from_json(self.repo, item, bot_login=self.client.bot_login) for item in data]
        fresh = [c for c in comments if not c.edited]
        stamps = [item.get("updated_at") or item.get("created_at") for item in data]
        newest = max(stamps)
        # The next poll's first page holds the comments of the newest second: while they fill it, a
        # 304 on that page would hide newer comments behind it, so ask without the ETag.
        self._expected["comments"] = newest if stamps.count(newest) < 100 else None
        # ``since`` is inclusive: the newest comment comes again next time and its event key dedupes it.
        return fresh, newest

    def merged_changes(self, cursor: str | None) -> tuple[list[Change], str | None]:
        """Merges among the recently updated closed pull requests.

        The cursor is the newest ``updated_at`` seen and the pull requests seen at that very second
        (``time|1,2``): timestamps are to the second, so the boundary is both inclusive and exact.
        A poll asks for merges first, so this also starts the request budget's new cycle.
        """
        self.client.begin_cycle()
        _headers, data = self.client.call("GET", "/pulls", params={
            "state": "closed", "sort": "updated", "direction": "desc", "per_page": 50,
        }, etag_key="pulls", budgeted=False, conditional=self._expected.get("pulls", cursor) == cursor)
        changes, next_cursor = self._merges(data, cursor)
        self._expected["pulls"] = next_cursor
        return changes, next_cursor

    def _merges(self, data: list | None, cursor: str | None) -> tuple[list[Change], str | None]:
        if not data:
            # 304, or no closed pull request yet; after a first look, "|" means "every merge from now on".
            return [], cursor if cursor is not None else (None if data is None else "|")
        newest = max(item.get("updated_at", "") for item in data)
        at_newest = sorted(str(item["number"]) for item in data if item.get("updated_at") == newest)
        next_cursor = f"{newest}|{','.join(at_newest)}"
        if cursor is None:
            return [], next_cursor  # a first look starts from now: old merges are history, not news
        since, _, seen = cursor.partition("|")
        seen_numbers = set(seen.split(",")) if seen else set()
        merged = [item for item in data if item.get("merged_at") and (
            item.get("updated_at", "") > since
            or (item.get("updated_at") == since and str(item["number"]) not in seen_numbers))]
        changes = [change_from_pull(item) for item in sorted(merged, key=lambda item: item["merged_at"])]
        if newest == since:
            next_cursor = f"{newest}|{','.join(sorted(seen_numbers | set(at_newest)))}"
        return changes, next_cursor

    def change_paths(self, repo: str, number: int) -> list[str]:
        return [item["filename"] for item in self.client.paged(f"/pulls/{number}/files", {"per_page": 100})]

    def change_messages(self, repo: str, number: int) -> list[str]:
        """The pull request's commit messages, oldest first, read for ``AB#12`` links.

        GitHub lists at most 250 commits of a pull request (three pages of 100 here); AB# in a later
        commit of a longer one goes unseen. A fault raises (TransientError for 5xx, timeouts and rate
        limits), so the merge is read again later rather than linked without its commits.
        """
        return [(item.get("commit") or {}).get("message") or ""
                for item in self.client.paged(f"/pulls/{number}/commits", {"per_page": 100})]

    def change_head(self, repo: str, number: int) -> ChangeHead:
        """Where the pull request's code is now: its head commit and the repository (maybe a fork) holding it."""
        _h, pull = self.client.call("GET", f"/pulls/{number}")
        base_repo = ((pull.get("base") or {}).get("repo") or {}).get("full_name") or self.repo
        head = pull.get("head") or {}
        head_repo = (head.get("repo") or {}).get("full_name") or ""  # empty: the fork was deleted
        state = "merged" if pull.get("merged") or pull.get("merged_at") else pull.get("state", "open")
        return ChangeHead(repo=base_repo, number=int(pull["number"]), commit=head.get("sha", ""),
                          head_repo=head_repo, from_fork=head_repo.lower() != base_repo.lower(), state=state,
                          merge_commit=pull.get("merge_commit_sha") or "")

    # --- writes --------------------------------------------------------------------------------

    def reply(self, target: Target, body: str, *, marker: str) -> str:
        _h, data = self.client.call("POST", f"/issues/{target.number}/comments",
                                    body={"body": with_marker(body, marker)}, write=True)
        return str(data["id"])

    def edit_reply(self, target: Target, comment_id: str, body: str, *, marker: str) -> None:
        self.client.call("PATCH", f"/issues/comments/{comment_id}", body={"body": with_marker(body, marker)},
                         write=True)

    def find_reply(self, target: Target, marker: str) -> str | None:
        hidden = marker_comment(marker)
        for item in self.client.paged(f"/issues/{target.number}/comments", {"per_page": 100}):
            if hidden in (item.get("body") or ""):
                return str(item["id"])
        return None

    def react(self, comment: Comment, reaction: str) -> None:
        if reaction not in _REACTIONS:
            raise PermanentError(f"GitHub has no reaction {reaction!r}")
        # GitHub answers 200 for a reaction that already exists: repeating is harmless.
        self.client.call("POST", f"/issues/comments/{comment.id}/reactions", body={"content": reaction}, write=True)

    def set_status(self, repo: str, commit: str, *, state: str, description: str, context: str, url: str = "") -> None:
        body = {"state": state, "description": description[:140], "context": context}
        if url:
            body["target_url"] = url
        self.client.call("POST", f"/statuses/{commit}", body=body, write=True)

    def status_of(self, repo: str, commit: str, context: str) -> tuple[str, str] | None:
        """The newest status of ``context`` on the commit, as (state, description): what the outbox
        asks before repeating a status whose answer was lost (each POST adds one more)."""
        _, statuses = self.client.call("GET", f"/commits/{commit}/statuses", params={"per_page": 100})
        for status in statuses or ():  # newest first
            if status.get("context") == context:
                return status.get("state"), status.get("description") or ""
        return None

    def permission(self, repo: str, user: str) -> Permission:
        # A person's role rarely changes; asking once per five minutes saves a request per command.
        cached = self._permissions.get(user)
        if cached and time.monotonic() - cached[1] < PERMISSION_TTL_S:
            return cached[0]
        level = self._ask_permission(user)
        self._permissions[user] = (level, time.monotonic())
        return level

    def _ask_permission(self, user: str) -> Permission:
        try:
            _h, data = self.client.call("GET", f"/collaborators/{user}/permission")
        except PermissionRefused:
            raise  # the bot may not ask (a hidden repository): nobody's level is known, "none" would be a guess
        except PermanentError:
            return Permission.none  # not a collaborator: 404
        role = (data or {}).get("role_name") or (data or {}).get("permission") or "none"
        return _ROLE_PERMISSION.get(role, Permission.read)

    def linked_tickets(self, change: Change, patterns: tuple[str, ...]) -> list[tuple[str, int]]:
        from integrations.ticket_references import find_ticket_references

        return find_ticket_references(f"{change.title}\n{change.body}", patterns)


#: GitHub's limits on a check run's ``output`` ("Create a check run"): annotations per request, and
#: the length of the summary
MAX_ANNOTATIONS_PER_REQUEST, MAX_CHECK_SUMMARY = 50, 65535


class GitHubAppSource(GitHubSource, ReportsCheckRuns):
    """``GitHubSource`` as a GitHub App installation: a run on a commit is a check run there."""

    def find_check_run(self, repo: str, head_sha: str, name: str, external_id: str) -> CheckRunRef | None:
        # ``filter=all``: GitHub's default (``latest``) hides a run behind a newer one of the same name.
        _h, data = self.client.call("GET", f"/commits/{head_sha}/check-runs",
                                    params={"check_name": name, "filter": "all", "per_page": 100})
        for run in (data or {}).get("check_runs", []):
            if run.get("external_id") == external_id and run.get("name") == name:
                return _check_run_ref(run)
        return None

    def create_check_run(self, repo: str, head_sha: str, name: str, *, external_id: str,
                         report: CheckReport) -> CheckRunRef:
        batches = _annotation_batches(report.annotations)
        _h, data = self.client.call("POST", "/check-runs", write=True, body={
            "name": name, "head_sha": head_sha, "external_id": external_id, **_check_fields(report, batches[0])})
        created = _check_run_ref(data)
        for batch in batches[1:]:  # GitHub adds each request's annotations to the run's
            self.client.call("PATCH", f"/check-runs/{created.id}", write=True,
                             body={"output": _check_output(report, batch)})
        return created

    def update_check_run(self, repo: str, check_run_id: str, report: CheckReport) -> None:
        for batch in _annotation_batches(report.annotations):
            self.client.call("PATCH", f"/check-runs/{check_run_id}", write=True, body=_check_fields(report, batch))


def _authenticated_as_app(client: GitHubClient) -> bool:
    """Whether the client speaks for a GitHub App installation (``connect`` with an App's id and key)."""
    from github import Auth

    return isinstance(getattr(client.requester, "auth", None), Auth.AppInstallationAuth)


def _annotation_batches(annotations: tuple[CheckAnnotation, ...]) -> list[tuple[CheckAnnotation, ...]]:
    """The annotations in GitHub's requests of at most 50 each; one empty batch when there are none."""
    size = MAX_ANNOTATIONS_PER_REQUEST
    return [annotations[start:start + size] for start in range(0, len(annotations), size)] or [()]


def _check_output(report: CheckReport, annotations: tuple[CheckAnnotation, ...]) -> dict[str, Any]:
    output: dict[str, Any] = {"title": report.title[:255], "summary": report.summary[:MAX_CHECK_SUMMARY]}
    if annotations:
        output["annotations"] = [{
            "path": a.path, "start_line": a.start_line, "end_line": a.end_line, "annotation_level": a.level,
            "message": a.message, **({"title": a.title[:255]} if a.title else {}),
        } for a in annotations]
    return output


def _check_fields(report: CheckReport, annotations: tuple[CheckAnnotation, ...]) -> dict[str, Any]:
    """A check run's body for GitHub: its state, output and buttons (``actions``, always sent, so
    that a run's buttons go away when its report has none)."""
    fields: dict[str, Any] = {"status": report.status, "output": _check_output(report, annotations),
                              "actions": [{"identifier": b.identifier, "label": b.label,
                                           "description": b.description} for b in report.buttons]}
    if report.conclusion is not None:
        fields["conclusion"] = report.conclusion
    if report.details_url:
        fields["details_url"] = report.details_url
    return fields


def _check_run_ref(run: dict[str, Any]) -> CheckRunRef:
    return CheckRunRef(id=str(run["id"]), status=str(run.get("status") or ""), conclusion=run.get("conclusion"),
                       annotations=int((run.get("output") or {}).get("annotations_count") or 0))


class GitHubIssues(ListsTickets, EditsTicketBody, _CountedByClient):
    """Retrain tickets as issues on the repository, found again by label and hidden marker."""

    name = "github"
    reference_prefix = "#"
    tickets_in_repository = True
    hides_comments = True  # an HTML comment in an issue body survives, unseen

    def __init__(self, client: GitHubClient, *, label: str = "mlops-bot"):
        self.client, self.label = client, label

    def find_open(self, key: str, *, opened_by: str | None = None) -> Ticket | None:
        hidden = marker_comment(key)
        opener = marker_comment(opened_by) if opened_by is not None else ""
        for item in self.client.paged("/issues", {"state": "open", "labels": self.label, "per_page": 100}):
            body = item.get("body") or ""
            if "pull_request" not in item and hidden in body and opener in body:
                return _ticket(item, key)
        return None

    def open(self, key: str, title: str, body: str, labels: tuple[str, ...], *, marker: str) -> Ticket:
        _h, data = self.client.call("POST", "/issues", body={
            "title": title, "body": with_marker(with_marker(body, key), marker if marker != key else ""),
            "labels": sorted({self.label, *labels}),
        }, write=True)
        return _ticket(data, key)

    def update(self, ticket: Ticket, *, title: str | None = None, body: str | None = None,
               labels: tuple[str, ...] | None = None) -> Ticket:
        patch: dict[str, Any] = {}
        if title is not None:
            patch["title"] = title
        if body is not None:
            patch["body"] = with_marker(body, ticket.key)
        if labels is not None:
            patch["labels"] = sorted({self.label, *labels})
        if not patch:
            return ticket
        _h, data = self.client.call("PATCH", f"/issues/{ticket.id}", body=patch, write=True)
        return _ticket(data, ticket.key)

    def comment(self, ticket_id: int, body: str, *, marker: str) -> str:
        _h, data = self.client.call("POST", f"/issues/{ticket_id}/comments", body={"body": with_marker(body, marker)},
                                    write=True)
        return str(data["id"])

    def find_comment(self, ticket_id: int, marker: str) -> str | None:
        hidden = marker_comment(marker)
        for item in self.client.paged(f"/issues/{ticket_id}/comments", {"per_page": 100}):
            if hidden in (item.get("body") or ""):
                return str(item["id"])
        return None

    def close(self, ticket_id: int) -> None:
        self.client.call("PATCH", f"/issues/{ticket_id}", body={"state": "closed", "state_reason": "completed"},
                         write=True)

    def get(self, ticket_id: int) -> Ticket | None:
        try:
            _h, data = self.client.call("GET", f"/issues/{ticket_id}")
        except PermissionRefused:
            raise  # not a ticket gone: one the bot may not read
        except PermanentError:
            return None
        return _ticket(data, _key_in(data.get("body") or ""))

    def tickets(self, *, state: str | None = None) -> list[Ticket]:
        """The issues carrying the bot's label (pull requests left out), oldest first, each with the
        key its marker names."""
        items = self.client.paged("/issues", {"state": state or "all", "labels": self.label, "direction": "asc",
                                              "per_page": 100})
        found = [_ticket(item, _key_in(item.get("body") or "")) for item in items if "pull_request" not in item]
        return sorted(found, key=lambda ticket: ticket.id)

    def body(self, ticket_id: int) -> TicketBody | None:
        """The issue's body. Its editor is not said: the REST API names who opened an issue, not
        who last edited it (the ``issues`` edited webhook's ``sender`` does)."""
        try:
            _h, data = self.client.call("GET", f"/issues/{ticket_id}")
        except PermissionRefused:
            raise
        except PermanentError:
            return None
        return TicketBody(text=data.get("body") or "", revision=str(data.get("updated_at") or ""))

    def set_body(self, ticket_id: int, text: str) -> None:
        self.client.call("PATCH", f"/issues/{ticket_id}", body={"body": text}, write=True)

    def as_body(self, markdown: str) -> str:
        return markdown


class GitHubActionsEngine(_CountedByClient):
    """Training on the team's own runners: a workflow dispatched with the run's id as an input.

    The workflow must title its runs by that input (``run-name: ${{ inputs.run_id }}``): the run is
    found by its title, so asking again after a restart or a lost answer never starts it twice.
    """

    name = "github-actions"

    def __init__(self, client: GitHubClient, *, workflow: str, ref: str = "main"):
        self.client, self.workflow, self.ref = client, workflow, ref

    def start(self, project: str, *, run_id: str, trigger: str, reason: str, context: dict[str, Any],
              promote: bool = True) -> RunHandle:
        existing = self.status(run_id)
        if existing is not None:
            return existing
        self.client.call("POST", f"/actions/workflows/{self.workflow}/dispatches", write=True, body={
            "ref": self.ref,
            "inputs": {"run_id": run_id, "project": project, "trigger": trigger, "reason": reason[:200],
                       "promote": "true" if promote else "false"},
        })
        return RunHandle(run_id, "queued", result=self._result(run_id, project, "queued", None))

    def status(self, run_id: str) -> RunHandle | None:
        _h, data = self.client.call("GET", "/actions/runs", params={"event": "workflow_dispatch", "per_page": 100})
        run = next((r for r in (data or {}).get("workflow_runs", []) if r.get("display_title") == run_id), None)
        if run is None:
            return None
        if run.get("status") != "completed":
            status = "queued" if run.get("status") in {"queued", "requested", "waiting", "pending"} else "running"
        else:
            status = "succeeded" if run.get("conclusion") == "success" else "failed"
        result = self._result(run_id, "", status, run)
        if run.get("status") == "completed":
            published = self._published(run)
            if status == "succeeded" and published.pop("not_promoted", False):
                status = "not_promoted"
            published.pop("not_promoted", None)
            if status == "failed":  # the run's failure is the reason
                published.pop("reasons", None)
                published.pop("nothing_new", None)
            result.update(published)
            result["status"] = status
        return RunHandle(run_id, status, url=run.get("html_url", ""), result=result)

    def _result(self, run_id: str, project: str, status: str, run: dict[str, Any] | None) -> dict[str, Any]:
        url = (run or {}).get("html_url", "")
        failed = status == "failed"
        return {
            "run_id": run_id, "model": project, "status": status, "version": None, "promoted": False,
            "validation": None, "stages": [], "url": url,
            "failed_stage": "github-actions" if failed else None,
            "error": f"the workflow run concluded {(run or {}).get('conclusion')}: {url}" if failed else None,
            "reasons": [f"the workflow run concluded {(run or {}).get('conclusion')}: {url}"] if failed else [],
        }

    def _published(self, run: dict[str, Any]) -> dict[str, Any]:
        """What the run published in its ``mlops-metrics`` artifact, as a local run's result fields.

        The workflow's own registry numbers its versions, so its version is not reported as ours:
        only the metrics, the gates and (for a run that was not promoted) its reasons.
        """
        _h, data = self.client.call("GET", f"/actions/runs/{run['id']}/artifacts",
                                    params={"name": METRICS_ARTIFACT, "per_page": 10})
        found = [a for a in (data or {}).get("artifacts", [])
                 if a.get("name") == METRICS_ARTIFACT and not a.get("expired")]
        if not found:
            return {}
        try:
            archive = zipfile.ZipFile(io.BytesIO(self.client.download(found[0]["archive_download_url"])))
            with archive.open(METRICS_FILE) as handle:
                published = json.loads(handle.read(_MAX_METRICS_BYTES))
        except PermissionRefused:
            raise  # not an unreadable artifact: one the bot may not read
        except (KeyError, ValueError, zipfile.BadZipFile, PermanentError) as exc:
            log.warning("workflow run %s: no readable %s in its %s artifact (%s)", run.get("id"), METRICS_FILE,
                        METRICS_ARTIFACT, type(exc).__name__)
            return {}
        return _metrics_fields(published)


def _metrics_fields(published: Any) -> dict[str, Any]:
    """``metrics.json``: a whole run result (``mlops-bot pipeline run --json``), or ``{"metrics": {...}}``.

    Only well-formed parts are kept (numbers as numbers), since the file comes from the team's workflow.
    """
    if not isinstance(published, dict):
        return {}
    fields: dict[str, Any] = {}
    data = _data_fields(published.get("data"))
    if data:
        fields["data"] = data
    if published.get("nothing_new"):
        # A retrain (``pipeline run --require-new-data``) that stopped before training: not a failure.
        fields.update(not_promoted=True, nothing_new=str(published["nothing_new"])[:1000],
                      reasons=[str(published["nothing_new"])[:1000]])
        return fields
    given = published.get("validation") if isinstance(published.get("validation"), dict) else published
    metrics = _numbers(given.get("metrics"))
    if not metrics:
        return fields
    validation: dict[str, Any] = {"metrics": metrics}
    production = given.get("production")
    if isinstance(production, dict):
        validation["production"] = {
            "version": production.get("version") if isinstance(production.get("version"), int) else None,
            "metrics": _numbers(production.get("metrics")), "difference": _numbers(production.get("difference")),
            **({"note": str(production["note"])} if production.get("note") else {}),
        }
    gates = [{"name": str(g["name"]), "passed": bool(g["passed"]), "detail": str(g.get("detail", ""))}
             for g in given.get("gates") or [] if isinstance(g, dict) and "name" in g and "passed" in g]
    if gates:
        validation["gates"] = gates
    if isinstance(given.get("passed"), bool):
        validation["passed"] = given["passed"]
    fields["validation"] = validation
    if published.get("status") == "not_promoted":
        fields["not_promoted"] = True
        fields["reasons"] = [str(reason) for reason in published.get("reasons") or []]
    stages = [{"name": str(s["name"]), "status": str(s["status"]),
               "duration_s": s.get("duration_s") if isinstance(s.get("duration_s"), int | float) else None}
              for s in published.get("stages") or [] if isinstance(s, dict) and "name" in s and "status" in s]
    if stages:
        fields["stages"] = stages
    return fields


def _data_fields(data: Any) -> dict[str, Any]:
    """What the run trained on (``rows``, ``fingerprint``, ``sources``), the well-formed parts only."""
    if not isinstance(data, dict):
        return {}
    fields: dict[str, Any] = {}
    if isinstance(data.get("rows"), int) and not isinstance(data.get("rows"), bool):
        fields["rows"] = data["rows"]
    if isinstance(data.get("fingerprint"), str):
        fields["fingerprint"] = data["fingerprint"][:100]
    sources = [{"kind": str(source["kind"]), "path": str(source.get("path", ""))[:300],
                **({"rows": source["rows"]} if isinstance(source.get("rows"), int) else {})}
               for source in data.get("sources") or [] if isinstance(source, dict) and "kind" in source]
    if sources:
        fields["sources"] = sources[:200]
    return fields


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {str(name): float(value) for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def _key_in(body: str) -> str:
    """The key a ticket's body carries: its first hidden marker (``open`` writes the key's first)."""
    found = _MARKER.search(body)
    return found.group(1) if found else ""


def _ticket(item: dict[str, Any], key: str) -> Ticket:
    return Ticket(id=int(item["number"]), key=key, title=item.get("title", ""),
                  state="closed" if item.get("state") == "closed" else "open", url=item.get("html_url", ""),
                  labels=tuple(label["name"] if isinstance(label, dict) else str(label)
                               for label in item.get("labels", [])))



_MAX_COMMENT_PAGES = 10  # per poll; what is left comes next time (sorted oldest first, nothing skipped)


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        if 'rel="next"' in part:
            return part[part.index("<") + 1:part.index(">")]
    return None


def _translate(exc: Exception, *, write: bool, what: str = "") -> Exception:
    """PyGithub's and requests' exceptions, as the ports' kinds of failure."""
    import requests
    from github import GithubException, RateLimitExceededException

    if isinstance(exc, RateLimitExceededException):
        return TransientError("GitHub rate limit exceeded", retry_after=_retry_after(exc.headers))
    if isinstance(exc, GithubException):
        status = exc.status
        if status in {429} or (status == 403 and _is_rate_limit(exc)):
            return TransientError(f"GitHub rate limit ({status})", retry_after=_retry_after(exc.headers))
        if status >= 500:
            return TransientError(f"GitHub answered {status}", outcome_unknown=write)
        if status == 401:
            return PermanentError("GitHub refused the credentials (401); check GITHUB_TOKEN or the App's key")
        refused = _permission_refused(exc, what)
        if refused is not None:
            return refused
        return PermanentError(f"GitHub answered {status}: {_message(exc)}")
    if isinstance(exc, requests.exceptions.RequestException):
        # A timeout or a dropped connection: a write may have been applied before the answer was lost.
        return TransientError(f"GitHub did not answer: {type(exc).__name__}", outcome_unknown=write)
    return exc


#: GitHub's names of the fine-grained permissions, as its settings pages show them
_PERMISSION_NAMES = {
    "actions": "Actions", "checks": "Checks", "contents": "Contents", "issues": "Issues", "metadata": "Metadata",
    "pull_requests": "Pull requests", "statuses": "Commit statuses", "workflows": "Workflows",
}
_LEVEL_NAMES = {"read": "Read-only", "write": "Read and write", "admin": "Admin"}


def _status_of(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _permission_refused(exc: Any, what: str) -> PermissionRefused | None:
    """GitHub's refusals for want of a permission: a fine-grained token's or installation's 403
    (``X-Accepted-GitHub-Permissions``), a classic token's 404 for want of a scope
    (``X-Accepted-OAuth-Scopes``, none of which it has)."""
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    message = _message(exc)
    where = f" to {what}" if what else ""
    if exc.status == 403 and ("x-accepted-github-permissions" in headers or "not accessible by" in message):
        sets = [part.strip() for part in str(headers.get("x-accepted-github-permissions", "")).split(";")
                if part.strip()]
        if not sets:
            return PermissionRefused(f"GitHub refused{where}: {message} (403); the token or App installation lacks a "
                                     "permission GitHub did not name: see the endpoint's documentation",
                                     service="github", permission="unnamed")
        shown = " or ".join(f"{s} ({', '.join(_permission_name(p) for p in s.split(','))})" for s in sets)
        return PermissionRefused(
            f"GitHub refused{where}: {message} (403); grant {shown} in the fine-grained token's repository "
            "permissions, or in the GitHub App's permissions (then accept them on its installation)",
            service="github", permission=sets[0])
    if exc.status == 404 and "x-oauth-scopes" in headers and headers.get("x-accepted-oauth-scopes"):
        accepted = [s.strip() for s in str(headers["x-accepted-oauth-scopes"]).split(",") if s.strip()]
        granted = {s.strip() for s in str(headers["x-oauth-scopes"]).split(",") if s.strip()}
        if accepted and not granted & set(accepted):
            return PermissionRefused(
                f"GitHub answered 404{where}: the classic token lacks the scope for it (it has "
                f"{', '.join(sorted(granted)) or 'none'}); grant it the '{accepted[0]}' scope"
                + (f" (or {', '.join(repr(a) for a in accepted[1:])})" if len(accepted) > 1 else "")
                + " (github.com → Settings → Developer settings → Personal access tokens)",
                service="github", permission=accepted[0])
    return None


def _permission_name(permission: str) -> str:
    """``issues=write`` as GitHub's settings show it: ``Issues: Read and write``."""
    name, _, level = permission.strip().partition("=")
    return f"{_PERMISSION_NAMES.get(name, name)}: {_LEVEL_NAMES.get(level, level)}"


def _is_rate_limit(exc) -> bool:
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    message = _message(exc).lower()
    return headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers or "rate limit" in message


def _retry_after(headers: dict | None) -> float:
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if headers.get("retry-after", "").isdigit():
        return float(headers["retry-after"])
    if headers.get("x-ratelimit-reset", "").isdigit():
        return max(1.0, float(headers["x-ratelimit-reset"]) - time.time())
    return 60.0


def _message(exc) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    return str(data.get("message") or exc.data or "")[:200]
