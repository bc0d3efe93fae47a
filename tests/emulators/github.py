"""A local emulator of the parts of GitHub's REST API the bot uses.

Point the real PyGithub client at it::

    with GitHubEmulator() as gh:
        gh.state.add_repo("acme/model")
        client = Github(base_url=gh.base_url, auth=Auth.Token(gh.token), retry=None,
                        seconds_between_requests=None, seconds_between_writes=None)

It serves ``http://127.0.0.1:PORT/api/v3`` the way GitHub Enterprise Server does (web pages
would live at ``http://127.0.0.1:PORT/org/repo``), so every URL in a body is absolute on the
emulator's own host, port and prefix. Bodies follow the schemas of GitHub's REST description
(``../shared/refdata/github/openapi/``); ``github_schemas()`` loads them for checking.

Run it by hand with a small seeded world: ``python -m tests.emulators.github --port 8080``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import itertools
import json
import math
import secrets
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .framework import (
    Clock,
    FaultRule,
    HttpEmulator,
    OpenAPISchemas,
    Request,
    Response,
    SlidingWindow,
    etag_of,
    format_http_date,
    iso,
    json_bytes,
    paginate,
    parse_http_date,
    parse_iso,
)

__all__ = ["DEFAULT_PERMISSIONS", "GitHubEmulator", "GitHubGraphQL", "GitHubState", "ROLES", "ROUTE_PERMISSIONS",
           "github_graphql_schema", "github_schemas"]

API_PREFIX = "/api/v3"
_JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
    "the assertion expires"
)
DOCS = "https://docs.github.com/rest"
# GitHub's secondary rate limits, from "Rate limits for the REST API" (docs.github.com/rest/using-the-rest-api/
# rate-limits-for-the-rest-api, "About secondary rate limits"): no more than 100 concurrent requests, and no
# more than 80 content-generating requests a minute and 500 an hour. The refdata's OpenAPI description says
# of every route that creates content: "Creating content too quickly using this endpoint may result in
# secondary rate limiting". A refused request answers 403 (or 429) with ``retry-after`` and this message.
SECONDARY_CONCURRENT = 100
SECONDARY_CONTENT_PER_MINUTE = 80
SECONDARY_CONTENT_PER_HOUR = 500
SECONDARY_DOCS = ("https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
                  "#about-secondary-rate-limits")
_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
#: role -> (legacy permission, {permissions flags})
ROLES = {
    "admin": ("admin", {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True}),
    "maintain": ("write", {"admin": False, "maintain": True, "push": True, "triage": True, "pull": True}),
    "write": ("write", {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}),
    "triage": ("read", {"admin": False, "maintain": False, "push": False, "triage": True, "pull": True}),
    "read": ("read", {"admin": False, "maintain": False, "push": False, "triage": False, "pull": True}),
}
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
STATUS_STATES = ("error", "failure", "pending", "success")
CHECK_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CHECK_CONCLUSIONS = ("success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required")

# ---------------------------------------------------------------------------
# Permissions, as GitHub enforces them
#
# Fine-grained tokens and App installations hold repository permissions ("issues": "write", ...) on
# the repositories they were given; classic tokens hold scopes ("repo", "public_repo"). Each route
# needs the permission GitHub's "Permissions required for GitHub Apps / fine-grained personal access
# tokens" pages give it (the REST description's subset carries none): issues and their comments,
# labels and reactions need Issues, or Pull requests when the issue is a pull request; pull requests
# Pull requests; commit statuses Commit statuses; commits Contents; workflows, runs and artifacts
# Actions; check runs Checks; the repository itself and a collaborator's permission Metadata, which
# every fine-grained token and installation holds. What GitHub answers without it:
#
# - fine-grained actor, repository it was not given: 404 "Not Found" when the repository is
#   private; on a public one reads go through (public resources need no permission), writes 403;
# - fine-grained actor, permission missing (or read where write is needed): 403 "Resource not
#   accessible by integration" (App installations) or "... by personal access token", with
#   ``X-Accepted-GitHub-Permissions: issues=write`` (several sets that would each do are separated
#   by "; "); reads of a public repository need no permission;
# - classic token: a private repository needs ``repo`` for anything; on a public one reads need no
#   scope and writes ``public_repo`` or ``repo`` (a workflow dispatch ``repo``). Without it GitHub
#   answers 404 "Not Found", as if the repository were not there, and ``X-Accepted-OAuth-Scopes``
#   says what would do.

#: levels of a fine-grained permission, lowest first
ACCESS = {"none": 0, "read": 1, "write": 2, "admin": 3}
#: what an App installation and a fine-grained token hold unless told otherwise: all the bot uses
DEFAULT_PERMISSIONS = {
    "actions": "write", "checks": "write", "contents": "read", "issues": "write",
    "metadata": "read", "pull_requests": "write", "statuses": "write",
}
#: route name -> (permission, level) it needs from a fine-grained actor
ROUTE_PERMISSIONS: dict[str, tuple[str, str]] = {
    "repos/get": ("metadata", "read"),
    "repos/get-collaborator-permission-level": ("metadata", "read"),
    "issues/list-for-repo": ("issues", "read"),
    "issues/create": ("issues", "write"),
    "issues/get": ("issues", "read"),
    "issues/update": ("issues", "write"),
    "issues/list-comments-for-repo": ("issues", "read"),
    "issues/list-comments": ("issues", "read"),
    "issues/create-comment": ("issues", "write"),
    "issues/get-comment": ("issues", "read"),
    "issues/update-comment": ("issues", "write"),
    "reactions/list-for-issue-comment": ("issues", "read"),
    "reactions/create-for-issue-comment": ("issues", "write"),
    "issues/add-labels": ("issues", "write"),
    "issues/remove-label": ("issues", "write"),
    "issues/list-labels-for-repo": ("issues", "read"),
    "issues/create-label": ("issues", "write"),
    "pulls/list": ("pull_requests", "read"),
    "pulls/get": ("pull_requests", "read"),
    "pulls/list-files": ("pull_requests", "read"),
    "pulls/list-commits": ("pull_requests", "read"),
    "repos/get-commit": ("contents", "read"),
    "repos/create-commit-status": ("statuses", "write"),
    "repos/list-commit-statuses-for-ref": ("statuses", "read"),
    "repos/list-commit-statuses-for-ref-legacy": ("statuses", "read"),
    "checks/create": ("checks", "write"),
    "checks/update": ("checks", "write"),
    "checks/list-for-ref": ("checks", "read"),
    "actions/get-workflow": ("actions", "read"),
    "actions/create-workflow-dispatch": ("actions", "write"),
    "actions/list-workflow-runs-for-repo": ("actions", "read"),
    "actions/list-workflow-run-artifacts": ("actions", "read"),
    "actions/download-artifact": ("actions", "read"),
}
#: routes on issues and pull requests alike, which either permission opens
_ISSUES_OR_PULLS = frozenset({"issues/list-comments-for-repo", "issues/list-labels-for-repo", "issues/create-label"})
#: classic scopes a write needs on a public repository (a private one needs ``repo`` for anything)
_PUBLIC_WRITE_SCOPES = ("public_repo", "repo")
_SCOPES_OF_ROUTE = {"actions/create-workflow-dispatch": ("repo",)}


# ---------------------------------------------------------------------------
# The world


@dataclass
class User:
    login: str
    id: int
    type: str = "User"  # "User", "Bot" or "Organization"
    name: str | None = None
    created_at: datetime | None = None


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None
    default: bool = False


@dataclass
class Reaction:
    id: int
    user: str
    content: str
    created_at: datetime


@dataclass
class Comment:
    id: int
    number: int  # the issue or pull request it belongs to
    user: str
    body: str
    created_at: datetime
    updated_at: datetime
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class Pull:
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    head_repo: str  # "owner/name"; differs from the base repository for a fork
    files: list[dict[str, Any]] = field(default_factory=list)
    draft: bool = False
    merged: bool = False
    merged_at: datetime | None = None
    merge_commit_sha: str | None = None
    merged_by: str | None = None
    commits: list[str] = field(default_factory=list)  # the SHAs of its commits, oldest first; the last is the head


@dataclass
class Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: str
    created_at: datetime
    updated_at: datetime
    state: str = "open"
    state_reason: str | None = None
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    closed_at: datetime | None = None
    closed_by: str | None = None
    locked: bool = False
    pull: Pull | None = None  # set for pull requests, which are issues too

    @property
    def is_pull(self) -> bool:
        return self.pull is not None


@dataclass
class Status:
    id: int
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: str
    created_at: datetime
    updated_at: datetime


@dataclass
class CheckRun:
    id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: datetime | None
    completed_at: datetime | None
    external_id: str
    details_url: str | None
    output: dict[str, Any]  # title, summary, text, and every annotation added (GitHub appends them)
    app_id: int | None
    check_suite_id: int
    actions: list[dict[str, str]] = field(default_factory=list)  # its buttons: label, description, identifier


@dataclass
class Workflow:
    id: int
    name: str
    path: str  # ".github/workflows/train.yml"
    created_at: datetime
    updated_at: datetime
    state: str = "active"
    run_name_input: str | None = None  # the workflow's `run-name: ${{ inputs.<this> }}`, if it has one


@dataclass
class WorkflowRun:
    id: int
    workflow_id: int
    run_number: int
    event: str
    head_branch: str | None
    head_sha: str
    actor: str
    created_at: datetime
    updated_at: datetime
    inputs: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    conclusion: str | None = None
    run_started_at: datetime | None = None
    check_suite_id: int = 0


@dataclass
class Artifact:
    id: int
    run_id: int
    name: str
    archive: bytes  # the zip GitHub serves
    created_at: datetime
    expires_at: datetime
    head_sha: str
    head_branch: str | None
    expired: bool = False


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    private: bool
    description: str | None
    created_at: datetime
    updated_at: datetime
    fork: bool = False
    parent: str | None = None
    branches: dict[str, str] = field(default_factory=dict)  # name -> head sha
    commits: dict[str, str] = field(default_factory=dict)  # sha -> message
    labels: dict[str, Label] = field(default_factory=dict)  # lower-case name -> label
    issues: dict[int, Issue] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    statuses: list[Status] = field(default_factory=list)
    check_runs: dict[int, CheckRun] = field(default_factory=dict)
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> role
    workflows: dict[int, Workflow] = field(default_factory=dict)
    runs: dict[int, WorkflowRun] = field(default_factory=dict)
    artifacts: dict[int, Artifact] = field(default_factory=dict)
    clone_url: str | None = None  # where ``git`` fetches from: by default the emulator's own (unserved) URL

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def pushed_at(self) -> datetime:
        return self.updated_at


class GitHubState:
    """The emulator's world. Tests set it up and read it back through these helpers; the
    emulator's handlers change it. Every method takes the emulator's lock."""

    def __init__(self, clock: Clock, lock: Any) -> None:
        self.clock = clock
        self.lock = lock
        self.users: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}  # lower-case "owner/name" -> repo
        self._ids = itertools.count(1001)
        self._shas = itertools.count(1)

    # -- identities and helpers

    def next_id(self) -> int:
        return next(self._ids)

    def new_sha(self) -> str:
        return hashlib.sha1(f"emulated commit {next(self._shas)}".encode()).hexdigest()

    def add_user(self, login: str, *, type: str | None = None, name: str | None = None) -> User:  # noqa: A002
        """The user ``login`` (created on first use; a login ending in ``[bot]`` is a Bot)."""
        with self.lock:
            key = login.lower()
            if key not in self.users:
                kind = type or ("Bot" if login.endswith("[bot]") else "User")
                self.users[key] = User(login, self.next_id(), kind, name, self.clock.now())
            elif type is not None:
                self.users[key].type = type
            return self.users[key]

    def repo(self, full_name: str) -> Repo:
        with self.lock:
            try:
                return self.repos[full_name.lower()]
            except KeyError:
                raise KeyError(f"no repository {full_name!r} in the emulator") from None

    def find_repo(self, owner: str, name: str) -> Repo | None:
        return self.repos.get(f"{owner}/{name}".lower())

    # -- setting up the world

    def add_repo(
        self,
        full_name: str,
        *,
        default_branch: str = "main",
        private: bool = False,
        description: str | None = None,
        owner_type: str = "Organization",
        clone_url: str | Path | None = None,
    ) -> Repo:
        """A repository. ``clone_url`` is what its ``clone_url`` field says, for tests that fetch
        its code with git: a URL, or the path of a local (bare) repository, given as a file URL."""
        owner, _, name = full_name.partition("/")
        if not owner or not name:
            raise ValueError(f"expected 'owner/name', got {full_name!r}")
        with self.lock:
            if full_name.lower() in self.repos:
                repo = self.repos[full_name.lower()]
                if clone_url is not None:
                    repo.clone_url = _as_url(clone_url)
                return repo
            self.add_user(owner, type=owner_type if owner.lower() not in self.users else None)
            now = self.clock.now()
            repo = Repo(self.next_id(), owner, name, default_branch, private, description, now, now,
                        clone_url=_as_url(clone_url) if clone_url is not None else None)
            sha = self.new_sha()
            repo.commits[sha] = "Initial commit"
            repo.branches[default_branch] = sha
            self.repos[full_name.lower()] = repo
            return repo

    def add_collaborator(self, repo: str, login: str, permission: str = "write") -> None:
        """Gives ``login`` a role on ``repo``: "admin", "maintain", "write", "triage" or "read"."""
        if permission not in ROLES:
            raise ValueError(f"unknown permission {permission!r}; expected one of {', '.join(ROLES)}")
        with self.lock:
            self.add_user(login)
            self.repo(repo).collaborators[login.lower()] = permission

    def add_label(self, repo: str, name: str, *, color: str = "ededed", description: str | None = None) -> Label:
        with self.lock:
            r = self.repo(repo)
            if name.lower() not in r.labels:
                r.labels[name.lower()] = Label(self.next_id(), name, color.lstrip("#").lower(), description)
            return r.labels[name.lower()]

    def add_commit(self, repo: str, *, sha: str | None = None, branch: str | None = None, message: str = "") -> str:
        """A commit in ``repo`` (moving ``branch`` to it, when given); returns its SHA."""
        with self.lock:
            r = self.repo(repo)
            sha = sha or self.new_sha()
            r.commits[sha] = message or f"Commit {sha[:7]}"
            if branch is not None:
                r.branches[branch] = sha
            return sha

    def _new_issue(self, r: Repo, title: str, body: str | None, author: str, labels: Iterable[str]) -> Issue:
        self.add_user(author)
        now = self.clock.now()
        number = max(r.issues, default=0) + 1
        issue = Issue(self.next_id(), number, title, body, author, now, now)
        issue.labels = [self._label(r, name).name for name in labels]
        r.issues[number] = issue
        r.updated_at = now
        return issue

    def _label(self, r: Repo, name: str) -> Label:
        """The label ``name`` of ``r``, created as GitHub does when an issue is given an unknown one."""
        if name.lower() not in r.labels:
            r.labels[name.lower()] = Label(self.next_id(), name)
        return r.labels[name.lower()]

    def open_issue(
        self, repo: str, title: str, body: str | None = "", author: str = "octocat", *, labels: Iterable[str] = ()
    ) -> int:
        with self.lock:
            return self._new_issue(self.repo(repo), title, body, author, labels).number

    def close_issue(self, repo: str, number: int, *, by: str | None = None, reason: str = "completed") -> None:
        with self.lock:
            issue = self.issue(repo, number)
            now = self.clock.now()
            issue.state, issue.state_reason, issue.closed_at, issue.updated_at = "closed", reason, now, now
            issue.closed_by = by or issue.user

    def edit_issue_body(self, repo: str, number: int, body: str, *, by: str) -> str | None:
        """A person's edit of the issue's body in the web page (ticking a task-list box is one);
        returns the body before it, which the ``issues`` edited webhook carries as
        ``changes.body.from`` (``by`` is its ``sender``)."""
        with self.lock:
            issue = self.issue(repo, number)
            self.add_user(by)
            before, issue.body, issue.updated_at = issue.body, body, self.clock.now()
            return before

    def reopen_issue(self, repo: str, number: int) -> None:
        with self.lock:
            issue = self.issue(repo, number)
            issue.state, issue.state_reason, issue.closed_at, issue.closed_by = "open", "reopened", None, None
            issue.updated_at = self.clock.now()

    def open_pull(
        self,
        repo: str,
        title: str,
        body: str | None = "",
        author: str = "octocat",
        *,
        head_sha: str | None = None,
        head_ref: str | None = None,
        base: str | None = None,
        from_fork: bool = False,
        files: Sequence[str | Mapping[str, Any]] = (),
        labels: Iterable[str] = (),
        draft: bool = False,
        commits: Sequence[str] = (),
    ) -> int:
        """A pull request from ``author``; ``files`` are names or diff-entry fields
        (``filename``, ``status``, ``additions``, ``deletions``, ``patch``). ``commits`` are its
        commit messages, oldest first (the last one is the head commit); by default it has one
        commit, messaged with the title."""
        with self.lock:
            r = self.repo(repo)
            base_ref = base or r.default_branch
            head_sha = head_sha or self.new_sha()
            messages = list(commits) or [title]
            shas = [self.new_sha() for _ in messages[:-1]] + [head_sha]
            head_ref = head_ref or f"{author.removesuffix('[bot]')}-patch-{max(r.issues, default=0) + 1}"
            head_repo = r.full_name
            if from_fork:
                fork = self.add_repo(f"{author}/{r.name}", default_branch=r.default_branch, owner_type="User")
                fork.fork, fork.parent = True, r.full_name
                fork.commits.update(zip(shas, messages))
                fork.branches[head_ref] = head_sha
                head_repo = fork.full_name
            else:
                r.branches[head_ref] = head_sha
            r.commits.update(zip(shas, messages))  # GitHub knows a pull request's commits in the base repository
            issue = self._new_issue(r, title, body, author, labels)
            issue.pull = Pull(
                head_ref, head_sha, base_ref, r.branches.get(base_ref, ""), head_repo, _diff_entries(files), draft
            )
            issue.pull.commits = shas
            return issue.number

    def merge_pull(self, repo: str, number: int, *, merge_sha: str | None = None, by: str | None = None) -> str:
        """Merges the pull request: merged, merged_at, merge_commit_sha, closed; the base branch moves."""
        with self.lock:
            r = self.repo(repo)
            issue = self.issue(repo, number)
            if issue.pull is None:
                raise ValueError(f"{repo}#{number} is an issue, not a pull request")
            now = self.clock.now()
            sha = merge_sha or self.new_sha()
            r.commits[sha] = f"Merge pull request #{number}"
            r.branches[issue.pull.base_ref] = sha
            pull = issue.pull
            pull.merged, pull.merged_at, pull.merge_commit_sha = True, now, sha
            pull.merged_by = by or r.owner
            issue.state, issue.closed_at, issue.updated_at, issue.closed_by = "closed", now, now, pull.merged_by
            r.updated_at = now
            return sha

    def push_to_pull(self, repo: str, number: int, head_sha: str | None = None, *, message: str = "") -> str:
        """A new commit on the pull request's head branch (in the fork, for a fork), messaged
        ``message`` (default ``Update <branch>``); returns its SHA."""
        with self.lock:
            r = self.repo(repo)
            issue = self.issue(repo, number)
            if issue.pull is None:
                raise ValueError(f"{repo}#{number} is an issue, not a pull request")
            sha = head_sha or self.new_sha()
            head_repo = self.repo(issue.pull.head_repo)
            head_repo.commits[sha] = message or f"Update {issue.pull.head_ref}"
            head_repo.branches[issue.pull.head_ref] = sha
            r.commits[sha] = head_repo.commits[sha]
            issue.pull.head_sha = sha
            issue.pull.commits.append(sha)
            issue.updated_at = self.clock.now()
            return sha

    def close_pull(self, repo: str, number: int, *, by: str | None = None) -> None:
        """Closes the pull request without merging it."""
        self.close_issue(repo, number, by=by)
        with self.lock:
            self.issue(repo, number).state_reason = None

    def add_comment(self, repo: str, number: int, author: str, body: str) -> int:
        """A comment by ``author`` on issue or pull request ``number``; returns its id."""
        with self.lock:
            r = self.repo(repo)
            issue = self.issue(repo, number)
            self.add_user(author)
            now = self.clock.now()
            comment = Comment(self.next_id(), number, author, body, now, now)
            r.comments[comment.id] = comment
            issue.updated_at = now  # a new comment updates its issue, as on GitHub
            return comment.id

    def edit_comment(self, comment_id: int, body: str) -> None:
        """Changes a comment's body (comment ids are unique across repositories, as on GitHub)."""
        with self.lock:
            comment = self.comment(comment_id)
            comment.body, comment.updated_at = body, self.clock.now()

    def add_reaction(self, comment_id: int, user: str, content: str) -> Reaction:
        """``user``'s reaction to a comment; an existing identical one is returned as it is."""
        with self.lock:
            if content not in REACTIONS:
                raise ValueError(f"unknown reaction {content!r}")
            comment = self.comment(comment_id)
            for reaction in comment.reactions:
                if reaction.user.lower() == user.lower() and reaction.content == content:
                    return reaction
            self.add_user(user)
            reaction = Reaction(self.next_id(), user, content, self.clock.now())
            comment.reactions.append(reaction)
            return reaction

    def add_workflow(self, repo: str, file_name: str, *, name: str | None = None,
                     run_name_input: str | None = None) -> int:
        """A workflow ``.github/workflows/<file_name>``; returns its id. With ``run_name_input`` its runs
        are titled by that dispatch input, as ``run-name: ${{ inputs.<name> }}`` does on GitHub."""
        with self.lock:
            r = self.repo(repo)
            now = self.clock.now()
            path = file_name if "/" in file_name else f".github/workflows/{file_name}"
            workflow = Workflow(self.next_id(), name or Path(file_name).stem, path, now, now,
                                run_name_input=run_name_input)
            r.workflows[workflow.id] = workflow
            return workflow.id

    def start_run(self, repo: str, run_id: int) -> None:
        with self.lock:
            run = self.run(repo, run_id)
            now = self.clock.now()
            run.status, run.run_started_at, run.updated_at = "in_progress", now, now

    def complete_run(self, repo: str, run_id: int, conclusion: str = "success") -> None:
        """Finishes a workflow run with ``conclusion`` ("success", "failure", "cancelled", ...)."""
        with self.lock:
            run = self.run(repo, run_id)
            now = self.clock.now()
            run.status, run.conclusion, run.updated_at = "completed", conclusion, now
            run.run_started_at = run.run_started_at or now

    def add_artifact(self, repo: str, run_id: int, name: str, files: Mapping[str, str | bytes], *,
                     retention_days: int = 90) -> int:
        """An artifact the workflow run uploaded (``actions/upload-artifact``): ``files`` zipped."""
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file_name, content in files.items():
                archive.writestr(file_name, content.encode() if isinstance(content, str) else content)
        with self.lock:
            r = self.repo(repo)
            run = self.run(repo, run_id)
            now = self.clock.now()
            artifact = Artifact(self.next_id(), run.id, name, buffer.getvalue(), now,
                                now + timedelta(days=retention_days), run.head_sha, run.head_branch)
            r.artifacts[artifact.id] = artifact
            return artifact.id

    def expire_artifact(self, repo: str, artifact_id: int) -> None:
        with self.lock:
            self.repo(repo).artifacts[artifact_id].expired = True

    # -- reading the world back

    def issue(self, repo: str, number: int) -> Issue:
        with self.lock:
            try:
                return self.repo(repo).issues[number]
            except KeyError:
                raise KeyError(f"no issue or pull request #{number} in {repo}") from None

    def comment(self, comment_id: int) -> Comment:
        with self.lock:
            for repo in self.repos.values():
                if comment_id in repo.comments:
                    return repo.comments[comment_id]
            raise KeyError(f"no comment {comment_id}")

    def run(self, repo: str, run_id: int) -> WorkflowRun:
        with self.lock:
            return self.repo(repo).runs[run_id]

    def issues(self, repo: str, *, state: str = "all", pulls: bool = False) -> list[Issue]:
        """Issues (``pulls=True``: pull requests too) by number."""
        with self.lock:
            return [
                i
                for _, i in sorted(self.repo(repo).issues.items())
                if (state == "all" or i.state == state) and (pulls or not i.is_pull)
            ]

    def pulls(self, repo: str, *, state: str = "all") -> list[Issue]:
        with self.lock:
            return [i for i in self.issues(repo, state=state, pulls=True) if i.is_pull]

    def comments(self, repo: str, number: int | None = None) -> list[Comment]:
        """Comments of one issue or pull request (or of the whole repository), oldest first."""
        with self.lock:
            found = self.repo(repo).comments.values()
            return [c for c in sorted(found, key=lambda c: c.id) if number is None or c.number == number]

    def reactions(self, comment_id: int) -> list[Reaction]:
        with self.lock:
            return list(self.comment(comment_id).reactions)

    def labels(self, repo: str, number: int | None = None) -> list[str]:
        """Label names of an issue, or of the repository when ``number`` is None."""
        with self.lock:
            if number is not None:
                return list(self.issue(repo, number).labels)
            return [label.name for label in self.repo(repo).labels.values()]

    def statuses(self, repo: str, sha: str) -> list[Status]:
        """Commit statuses of ``sha``, oldest first."""
        with self.lock:
            return [s for s in self.repo(repo).statuses if s.sha == sha]

    def check_runs(self, repo: str, sha: str | None = None) -> list[CheckRun]:
        with self.lock:
            return [c for c in self.repo(repo).check_runs.values() if sha is None or c.head_sha == sha]

    def workflow_runs(self, repo: str, workflow: int | str | None = None) -> list[WorkflowRun]:
        """Workflow runs, oldest first; ``workflow`` is an id or a file name."""
        with self.lock:
            r = self.repo(repo)
            wanted = None if workflow is None else _find_workflow(r, str(workflow))
            return [run for run in r.runs.values() if wanted is None or run.workflow_id == wanted.id]


def _diff_entries(files: Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    for item in files:
        entry = {"filename": item} if isinstance(item, str) else dict(item)
        entry.setdefault("status", "modified")
        entry.setdefault("additions", 1)
        entry.setdefault("deletions", 0)
        entry.setdefault("patch", "@@ -0,0 +1 @@\n+emulated change")
        entry["changes"] = entry["additions"] + entry["deletions"]
        entries.append(entry)
    return entries


def _as_url(location: str | Path) -> str:
    text = str(location)
    return text if "://" in text else Path(text).resolve().as_uri()


def _find_workflow(r: Repo, key: str) -> Workflow | None:
    for workflow in r.workflows.values():
        if key == str(workflow.id) or key == workflow.path or key == Path(workflow.path).name:
            return workflow
    return None


def _node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def _permissions(given: Mapping[str, str] | None) -> dict[str, str]:
    """Repository permissions as held: ``DEFAULT_PERMISSIONS`` when None; metadata always readable."""
    held = dict(DEFAULT_PERMISSIONS if given is None else given)
    for name, level in held.items():
        if level not in ACCESS:
            raise ValueError(f"permission {name}={level!r}: expected one of {', '.join(ACCESS)}")
    if ACCESS[held.get("metadata", "none")] < ACCESS["read"]:
        held["metadata"] = "read"  # GitHub grants it to every fine-grained token and installation
    return held


def _repositories(given: Iterable[str] | None) -> frozenset[str] | None:
    return None if given is None else frozenset(name.lower() for name in given)


# ---------------------------------------------------------------------------
# Authentication and rate limits


@dataclass
class _Identity:
    login: str
    kind: str  # "token" (personal/OAuth), "installation", "app" (a JWT), "anonymous"
    scopes: tuple[str, ...] | None = None  # a classic token's; None: fine-grained (or not a token)
    installation_id: int | None = None
    app_id: int | None = None
    expires_at: datetime | None = None
    # A fine-grained token's permissions and repositories (lower-case "owner/name"; None: all); an
    # installation token's permissions are those it asked for (None: all the installation's).
    permissions: dict[str, str] | None = None
    repositories: frozenset[str] | None = None

    @property
    def fine_grained(self) -> bool:
        return self.kind == "installation" or (self.kind == "token" and self.scopes is None)

    @property
    def budget_key(self) -> str:
        if self.kind == "installation":
            return f"installation:{self.installation_id}"
        return f"{self.kind}:{self.login.lower()}"


@dataclass
class _Budget:
    limit: int
    used: int = 0
    reset: int = 0

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass
class _App:
    app_id: int
    slug: str
    owner: str
    public_key: str | None
    created_at: datetime


@dataclass
class _Answer(Exception):
    response: Response


# ---------------------------------------------------------------------------
# The emulator


class GitHubEmulator(HttpEmulator):
    """GitHub's REST API for PyGithub, at ``base_url`` (``http://127.0.0.1:PORT/api/v3``).

    ``token`` authenticates as ``login`` (``Authorization: token X`` or ``Bearer X``), with
    ``scopes`` in ``X-OAuth-Scopes``; add more with ``add_token``. A GitHub App (``app_id`` 1,
    installation 1) is registered by default: ``POST /app/installations/1/access_tokens`` with
    its JWT returns an installation token for ``<slug>[bot]``. Check runs need such a token
    (``check_runs_need_app``), as on GitHub.

    Permissions (see ``ROUTE_PERMISSIONS``): a classic token holds its ``scopes``; a fine-grained
    token (``add_token(..., permissions=...)``, or ``scopes=None``) and an installation hold GitHub's
    repository permissions, ``DEFAULT_PERMISSIONS`` unless told otherwise, on the repositories they
    were given (all unless told otherwise). ``set_scopes``, ``set_permissions`` and
    ``add_installation`` change them later: a person granting or taking away a permission. What an
    installation holds applies at once to the tokens it has issued (GitHub applies a change to new
    tokens, which an App asks for at least hourly).

    Each identity has a primary budget of ``rate_limit`` requests an hour on the emulator's
    clock; ``GET /rate_limit``, 304 answers and 401s are free.

    With ``secondary_limits``, GitHub's secondary limits apply as well: per identity, at most
    ``SECONDARY_CONTENT_PER_MINUTE`` content-generating requests (every POST, PATCH, PUT and DELETE
    but an App's token exchange) in any minute and ``SECONDARY_CONTENT_PER_HOUR`` in any hour of the
    emulator's clock, and at most ``SECONDARY_CONCURRENT`` requests in flight; past them the answer
    is 403 with ``retry-after`` and GitHub's message, applying nothing. ``secondary_limited``
    counts those answers (scripted faults are in ``faults.fired``).
    """

    service = "github"

    #: the one route GitHub's REST description lacks: the storage an artifact's download answer
    #: redirects to (on GitHub, a signed URL on another host, outside the API)
    UNDESCRIBED_ROUTES = {"GET /_blobs/{name}": "artifact storage: the signed URL a download redirects to",
                          # GraphQL has no REST description: each document is validated against
                          # GitHub's GraphQL schema instead (GitHubGraphQL.answer)
                          "POST /graphql": "GraphQL: documents checked against schema.validatable.graphql"}

    def __init__(
        self,
        *,
        token: str = "test-token",
        login: str = "mlops-bot[bot]",
        scopes: Sequence[str] | None = ("repo", "workflow"),
        rate_limit: int = 5000,
        anonymous_rate_limit: int = 60,
        check_runs_need_app: bool = True,
        app_id: int = 1,
        app_slug: str = "mlops-bot",
        installation_id: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        schemas: OpenAPISchemas | None = None,
        secondary_limits: bool = False,
        graphql_schema: Any = None,
    ) -> None:
        super().__init__(host=host, port=port, prefix=API_PREFIX, clock=clock, schemas=schemas)
        self.state = GitHubState(self.clock, self.lock)
        self.graphql = GitHubGraphQL(self, graphql_schema)  # POST /graphql: projects (see the GraphQL section)
        self.secondary_limits = secondary_limits
        self.secondary_limited = 0  # requests answered with a secondary rate limit (not scripted faults)
        self._content_windows: dict[str, tuple[SlidingWindow, SlidingWindow]] = {}
        self.token = token
        self.login = login
        self.rate_limit = rate_limit
        self.anonymous_rate_limit = anonymous_rate_limit
        self.check_runs_need_app = check_runs_need_app
        self._tokens: dict[str, _Identity] = {}
        self._budgets: dict[str, _Budget] = {}
        self._apps: dict[int, _App] = {}
        self._installations: dict[int, tuple[int, str]] = {}  # id -> (app id, account)
        # id -> (permissions, repositories: lower-case "owner/name", None for all)
        self._installation_access: dict[int, tuple[dict[str, str], frozenset[str] | None]] = {}
        self._downloads: dict[str, tuple[int, datetime]] = {}  # signed download name -> (artifact id, expiry)
        self.add_token(token, login, scopes=scopes)
        self.add_app(app_id, slug=app_slug)
        self.add_installation(installation_id, app_id=app_id)
        self._register_routes()

    # -- configuration

    def add_token(self, token: str, login: str, *, scopes: Sequence[str] | None = ("repo",),
                  permissions: Mapping[str, str] | None = None, repositories: Iterable[str] | None = None) -> None:
        """A personal access token for ``login``: classic, holding ``scopes`` (said in ``X-OAuth-Scopes``),
        or fine-grained when ``permissions`` is given or ``scopes`` is None (no ``X-OAuth-Scopes``):
        ``permissions`` (``{"issues": "write", ...}``; ``DEFAULT_PERMISSIONS`` when None) on
        ``repositories`` (``owner/name``; None: every repository)."""
        fine_grained = permissions is not None or scopes is None
        with self.lock:
            self.state.add_user(login)
            self._tokens[token] = _Identity(
                login, "token", None if fine_grained else tuple(scopes or ()),
                permissions=_permissions(permissions) if fine_grained else None,
                repositories=_repositories(repositories) if fine_grained else None)

    def set_scopes(self, token: str, scopes: Sequence[str]) -> None:
        """The scopes of the classic token ``token`` from now on."""
        with self.lock:
            identity = self._tokens[token]
            if identity.fine_grained:
                raise ValueError(f"{token!r} is a fine-grained token: it holds permissions, not scopes")
            identity.scopes = tuple(scopes)

    def set_permissions(self, token: str, permissions: Mapping[str, str], *,
                        repositories: Any = ...) -> None:
        """What the fine-grained token ``token`` holds from now on: ``permissions`` (all of them:
        those left out are "none", but for metadata, always "read"), and ``repositories`` unless
        left out (None: every repository)."""
        with self.lock:
            identity = self._tokens[token]
            if not identity.fine_grained or identity.kind != "token":
                raise ValueError(f"{token!r} is not a fine-grained personal access token")
            identity.permissions = _permissions(permissions)
            if repositories is not ...:
                identity.repositories = _repositories(repositories)

    def add_app(self, app_id: int, *, slug: str = "mlops-bot", public_key: str | None = None) -> None:
        """A GitHub App. With ``public_key`` (PEM), JWT signatures are verified (RS256);
        without, any well-formed JWT whose ``iss`` is ``app_id`` is accepted."""
        with self.lock:
            self._apps[app_id] = _App(app_id, slug, "acme", public_key, self.clock.now())
            self.state.add_user(f"{slug}[bot]", type="Bot")

    def add_installation(self, installation_id: int, *, app_id: int = 1, account: str = "acme",
                         permissions: Mapping[str, str] | None = None,
                         repositories: Iterable[str] | None = None) -> None:
        """An installation of App ``app_id`` on ``account``, granted ``permissions``
        (``DEFAULT_PERMISSIONS`` when None) on ``repositories`` (None: all). Called again for an
        existing installation, it changes what the installation holds (and its tokens with it)."""
        with self.lock:
            self._installations[installation_id] = (app_id, account)
            self._installation_access[installation_id] = (_permissions(permissions), _repositories(repositories))

    def reset_rate_limit(self, token: str | None = None) -> None:
        """Refills the budget of ``token``'s identity (of every identity when None)."""
        with self.lock:
            if token is None:
                self._budgets.clear()
            elif token in self._tokens:
                for resource in ("core", "graphql"):
                    self._budgets.pop(_budget_name(self._tokens[token].budget_key, resource), None)

    def rate_limit_remaining(self, token: str | None = None) -> int:
        with self.lock:
            identity = self._tokens[token or self.token]
            return self._budget(identity).remaining

    # -- URLs

    def api(self, path: str) -> str:
        return self.base_url + path

    def web(self, path: str) -> str:
        return self.url + path

    # -- the pipeline

    def _error(self, status: int, message: str, **extra: Any) -> Response:
        return Response(status, {"message": message, **extra, "documentation_url": DOCS, "status": str(status)})

    def not_found(self, request: Request) -> Response:
        return self._error(404, "Not Found")

    def error_problems(self, request: Request, response: Response) -> list[str]:
        """An error its operation does not describe (401, 429, a fault's 5xx) against GitHub's
        general shapes: ``validation-error`` for 422, ``basic-error`` otherwise."""
        if self.schemas is None:
            return []
        if not isinstance(response.body, (dict, list)):
            return [f"(root): an error answer's body is JSON on GitHub, got {str(response.body)[:80]!r}"]
        name = "validation-error" if response.status == 422 else "basic-error"
        return self.schemas.validate(response.body, f"#/components/schemas/{name}")

    def _authenticate(self, request: Request) -> _Identity | Response:
        header = request.header("authorization")
        if not header:
            return _Identity("", "anonymous")
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("token", "bearer") or not credential:
            return self._error(401, "Bad credentials")
        identity = self._tokens.get(credential)
        if identity is not None:
            if identity.expires_at is not None and identity.expires_at <= self.clock.now():
                return self._error(401, "Bad credentials")
            return identity
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            return self._app_from_jwt(credential)
        return self._error(401, "Bad credentials")

    def _app_from_jwt(self, token: str) -> _Identity | Response:
        import jwt  # PyJWT, installed with PyGithub

        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            app = self._apps.get(int(claims.get("iss")))
            if app is None:
                return self._error(401, "Integration not found")
            if app.public_key is not None:
                jwt.decode(token, app.public_key, algorithms=["RS256"], options={"verify_iss": False})
            elif claims.get("exp") is None or float(claims["exp"]) < datetime.now().timestamp():
                raise jwt.ExpiredSignatureError("expired")
        except jwt.ExpiredSignatureError:
            return self._error(401, _JWT_EXPIRED)
        except (jwt.PyJWTError, TypeError, ValueError):
            return self._error(401, "A JSON web token could not be decoded")
        return _Identity(f"{app.slug}[bot]", "app", app_id=app.app_id)

    def _budget(self, identity: _Identity, resource: str = "core") -> _Budget:
        """``identity``'s primary budget for ``resource``: ``core`` (REST) or ``graphql``, which GitHub
        keeps apart (one point per request here: the emulator does not price a query by its nodes)."""
        limit = self.anonymous_rate_limit if identity.kind == "anonymous" else self.rate_limit
        budget = self._budgets.setdefault(_budget_name(identity.budget_key, resource), _Budget(limit))
        now = self.clock.timestamp()
        if budget.reset <= now:  # a new window starts with the first request after the reset
            budget.used, budget.reset = 0, now + 3600
        return budget

    def _limit_exceeded(self, identity: _Identity | None) -> Response:
        """GitHub's answer once the primary limit is spent (PyGithub: RateLimitExceededException)."""
        if identity is not None and identity.kind == "installation":
            who = f"installation ID {identity.installation_id}"
        elif identity is not None and identity.login:
            who = f"user ID {self.state.add_user(identity.login).id}"
        else:
            who = "127.0.0.1"
        return Response(403, {
            "message": f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please "
                       f"include the request ID {secrets.token_hex(8).upper()}.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        })

    def _rate_headers(self, budget: _Budget, resource: str = "core") -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(budget.limit),
            "X-RateLimit-Remaining": str(budget.remaining),
            "X-RateLimit-Reset": str(budget.reset),
            "X-RateLimit-Used": str(budget.used),
            "X-RateLimit-Resource": resource,
        }

    def identity_name(self, request: Request) -> str | None:
        identity = request.identity
        return identity.login or identity.kind if isinstance(identity, _Identity) else None

    def _secondary_limit(self, status: int, retry_after: int) -> Response:
        """GitHub's answer past a secondary limit (PyGithub, with ``retry=None``: a 403 raises
        ``RateLimitExceededException``, a 429 a ``GithubException``)."""
        message = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                   f"If you reach out to GitHub Support for help, please include the request ID {secrets.token_hex(4)}.")
        response = Response(status, {"message": message, "documentation_url": SECONDARY_DOCS, "status": str(status)})
        response.headers["Retry-After"] = str(retry_after)
        return response

    def admit(self, request: Request) -> Response | None:
        if self.secondary_limits and self.in_flight > SECONDARY_CONCURRENT:
            with self.lock:
                self.secondary_limited += 1
            return self._secondary_limit(403, 60)
        return None

    def _content_limited(self, request: Request, identity: _Identity) -> Response | None:
        """The secondary limit on content-generating requests, counted per identity; a refused
        request is not counted."""
        if not self.secondary_limits or request.method not in _WRITES or identity.kind == "app":
            return None
        windows = self._content_windows.setdefault(identity.budget_key, (
            SlidingWindow(SECONDARY_CONTENT_PER_MINUTE, 60), SlidingWindow(SECONDARY_CONTENT_PER_HOUR, 3600)))
        now = self.clock.seconds()
        wait = max(window.wait(now) for window in windows)
        if wait == 0:
            for window in windows:
                window.take(now)
            return None
        self.secondary_limited += 1
        return self._secondary_limit(403, max(1, math.ceil(wait)))

    def _process(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Any:
        # GraphQL lives beside the REST prefix (/api/graphql); its top-level fields become the query,
        # so that the log names each operation and a fault can aim at one mutation.
        if raw_path.partition("?")[0] == GRAPHQL_PATH:
            raw_path = f"{API_PREFIX}{GRAPHQL_ROUTE}?" + urllib.parse.urlencode({"fields": GitHubGraphQL.top_fields(body)})
        return super()._process(method, raw_path, headers, body)

    def dispatch(self, request: Request) -> Response:
        assert request.route is not None
        identity = self._authenticate(request)
        if isinstance(identity, Response):
            return identity
        request.identity = identity
        app_route = request.path.startswith("/app/")
        if identity.kind == "app" and not app_route:
            return self._error(401, "Bad credentials")
        if app_route and identity.kind != "app":
            return self._error(401, "A JSON web token could not be decoded")
        if identity.kind == "anonymous" and request.method != "GET":
            return self._error(401, "Requires authentication")
        limited = self._content_limited(request, identity)
        if limited is not None:
            return limited
        # Downloads from the storage an artifact redirects to are not API requests.
        free = request.path == "/rate_limit" or identity.kind == "app" or request.path.startswith("/_blobs/")
        budget = self._budget(identity, _resource(request.path))
        if not free and budget.remaining <= 0:
            return self._limit_exceeded(identity)
        accepted: dict[str, str] = {}
        try:
            accepted = self._authorize(request, identity)
            response = request.route.handler(request)
        except _Answer as answer:
            response = answer.response
        response.headers = {**accepted, **response.headers}
        if request.method == "GET" and response.status == 200 and not isinstance(response.body, bytes):
            response = self._conditional(request, response)
        if not free and response.status != 304:
            budget.used += 1
            response.charged = True
        return response

    # -- permissions

    def _granted(self, identity: _Identity) -> tuple[dict[str, str], frozenset[str] | None]:
        """What a fine-grained actor holds now: (permissions, repositories or None for all)."""
        if identity.kind != "installation":
            return identity.permissions or {}, identity.repositories
        held, repositories = self._installation_access.get(identity.installation_id or 0, ({}, frozenset()))
        if identity.permissions is None:
            return held, repositories
        asked = {name: level for name, level in identity.permissions.items() if name in held}
        narrowed = {name: min(level, held[name], key=ACCESS.__getitem__) for name, level in asked.items()}
        return _permissions(narrowed), repositories

    def _needed(self, request: Request, repo: Repo) -> list[tuple[str, str]]:
        """The permission sets that would each let ``request`` through (empty: it needs none)."""
        assert request.route is not None
        need = ROUTE_PERMISSIONS.get(request.route.name)
        if need is None:
            return []
        name, level = need
        if name == "issues" and (request.route.name in _ISSUES_OR_PULLS or self._on_pull(request, repo)):
            return [(name, level), ("pull_requests", level)]  # a pull request's: either permission
        return [need]

    def _on_pull(self, request: Request, repo: Repo) -> bool:
        try:
            if "issue_number" in request.params:
                issue = repo.issues.get(int(request.params["issue_number"]))
            elif "comment_id" in request.params:
                comment = repo.comments.get(int(request.params["comment_id"]))
                issue = repo.issues.get(comment.number) if comment else None
            else:
                return False
        except ValueError:
            return False
        return issue is not None and issue.is_pull

    def _authorize(self, request: Request, identity: _Identity) -> dict[str, str]:
        """Refuses, as GitHub does, a request its token or installation lacks the permission for
        (raises ``_Answer``); otherwise the headers saying what the route accepts."""
        if "owner" not in request.params or "repo" not in request.params or identity.kind in ("anonymous", "app"):
            return {}
        repo = self.state.find_repo(request.params["owner"], request.params["repo"])
        if repo is None:
            return {}  # the handler answers 404
        needed = self._needed(request, repo)
        if not needed:
            return {}
        write = any(level != "read" for _, level in needed)
        if not identity.fine_grained:
            if repo.private:
                accepted: tuple[str, ...] = ("repo",)
            else:
                accepted = _SCOPES_OF_ROUTE.get(request.route.name, _PUBLIC_WRITE_SCOPES) if write else ()
            headers = {"X-Accepted-OAuth-Scopes": ", ".join(accepted)}
            if accepted and not set(accepted) & set(identity.scopes or ()):
                raise _Answer(self._with_headers(self.not_found(request), headers))
            return headers
        headers = {"X-Accepted-GitHub-Permissions": "; ".join(f"{name}={level}" for name, level in needed)}
        held, repositories = self._granted(identity)
        if repositories is not None and repo.full_name.lower() not in repositories:
            if repo.private:
                raise _Answer(self._with_headers(self.not_found(request), headers))
            if write:
                raise _Answer(self._with_headers(self._not_accessible(identity), headers))
            return headers  # public resources need no permission
        if not write and not repo.private:
            return headers
        if any(ACCESS[held.get(name, "none")] >= ACCESS[level] for name, level in needed):
            return headers
        raise _Answer(self._with_headers(self._not_accessible(identity), headers))

    def _not_accessible(self, identity: _Identity) -> Response:
        by = "integration" if identity.kind == "installation" else "personal access token"
        return self._error(403, f"Resource not accessible by {by}")

    @staticmethod
    def _with_headers(response: Response, headers: Mapping[str, str]) -> Response:
        response.headers.update(headers)
        return response

    def _conditional(self, request: Request, response: Response) -> Response:
        """ETag and Last-Modified on every GET; a matching ``If-None-Match`` (or, without it,
        ``If-Modified-Since``) answers 304 with no body."""
        payload = json_bytes(response.body)
        tag = etag_of(payload, self.identity_name(request) or "")
        response.headers["ETag"] = tag
        if response.last_modified is None and isinstance(response.body, list):
            response.last_modified = self.clock.now()
        if response.last_modified is not None:
            response.headers["Last-Modified"] = format_http_date(response.last_modified)
        not_modified = False
        if_none_match = request.header("if-none-match")
        if if_none_match is not None:
            wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
            not_modified = "*" in wanted or tag.removeprefix("W/") in wanted
        elif (since := request.header("if-modified-since")) and response.last_modified is not None:
            parsed = parse_http_date(since)
            not_modified = parsed is not None and response.last_modified <= parsed
        if not_modified:
            kept = {k: v for k, v in response.headers.items() if k in ("ETag", "Last-Modified", "Link")}
            return Response(304, None, kept, last_modified=response.last_modified)
        return response

    def finalize(self, request: Request, response: Response) -> Response:
        identity = request.identity if isinstance(request.identity, _Identity) else None
        headers = {
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            "X-GitHub-Request-Id": secrets.token_hex(8).upper(),
            "Access-Control-Expose-Headers": (
                "ETag, Link, Location, Retry-After, X-GitHub-OTP, X-RateLimit-Limit, X-RateLimit-Remaining, "
                "X-RateLimit-Used, X-RateLimit-Resource, X-RateLimit-Reset, X-OAuth-Scopes, "
                "X-Accepted-OAuth-Scopes, X-Poll-Interval, X-GitHub-Media-Type"
            ),
            "Vary": "Accept, Authorization, Cookie, X-GitHub-OTP",
        }
        if request.method == "GET":
            headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
        if identity is not None:
            resource = _resource(request.path)
            headers.update(self._rate_headers(self._budget(identity, resource), resource))
        elif identity is None:  # unauthenticated or refused: the caller's address budget
            headers.update(self._rate_headers(self._budget(_Identity("", "anonymous"))))
        if identity is not None and identity.scopes is not None:
            headers["X-OAuth-Scopes"] = ", ".join(identity.scopes)
            headers["X-Accepted-OAuth-Scopes"] = ""
        response.headers = {**headers, **response.headers}
        return response

    def fault_response(self, rule: FaultRule, request: Request) -> Response:
        identity = self._authenticate(request)
        if isinstance(identity, _Identity):
            request.identity = identity
        if rule.kind == "rate_limit_primary":
            response = self._limit_exceeded(request.identity if isinstance(request.identity, _Identity) else None)
            response.headers.update({
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(self.clock.timestamp() + rule.retry_after),
                "X-RateLimit-Used": str(self.rate_limit),
            })
            return response
        if rule.kind in ("rate_limit_secondary", "429"):
            return self._secondary_limit(429 if rule.kind == "429" else 403, rule.retry_after)
        messages = {500: "Server Error", 502: "Server Error", 503: "Service Unavailable"}
        return Response(int(rule.kind), {"message": messages[int(rule.kind)]})

    # -- request helpers

    def _repo(self, request: Request) -> Repo:
        repo = self.state.find_repo(request.params["owner"], request.params["repo"])
        if repo is None or (repo.private and request.identity.kind == "anonymous"):
            raise _Answer(self.not_found(request))
        return repo

    def _issue(self, request: Request, repo: Repo) -> Issue:
        try:
            issue = repo.issues[int(request.params["issue_number"])]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None
        return issue

    def _comment(self, request: Request, repo: Repo) -> Comment:
        try:
            return repo.comments[int(request.params["comment_id"])]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None

    def _body(self, request: Request, *, kinds: tuple[type, ...] = (dict,)) -> Any:
        try:
            body = request.json()
        except ValueError:
            raise _Answer(self._error(400, "Problems parsing JSON")) from None
        if body is None:
            body = {} if dict in kinds else []
        if not isinstance(body, kinds):
            raise _Answer(self._error(400, "Problems parsing JSON"))
        return body

    def _invalid(self, resource: str, field_name: str, code: str = "missing_field", **extra: Any) -> _Answer:
        error = {"resource": resource, "code": code, "field": field_name, **extra}
        return _Answer(self._error(422, "Validation Failed", errors=[error]))

    def _since(self, request: Request) -> datetime | None:
        if "since" not in request.query:
            return None
        try:
            return parse_iso(request.query["since"])
        except ValueError:
            raise self._invalid("Issue", "since", "invalid", value=request.query["since"]) from None

    def _page(self, request: Request, items: Sequence[Any]) -> tuple[list[Any], dict[str, str]]:
        return paginate(items, request, self.base_url)

    def _actor(self, request: Request) -> str:
        identity = request.identity
        return identity.login if identity.login else "ghost"

    def _known_sha(self, request: Request, repo: Repo, ref: str) -> str:
        if ref in repo.commits:
            return ref
        for branch in (ref, ref.removeprefix("heads/"), ref.removeprefix("refs/heads/")):
            if branch in repo.branches:
                return repo.branches[branch]
        matches = [sha for sha in repo.commits if len(ref) >= 7 and sha.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise _Answer(self._error(422, f"No commit found for SHA: {ref}"))

    # -- JSON bodies

    def _user(self, login: str | None) -> dict[str, Any] | None:
        if login is None:
            return None
        user = self.state.add_user(login)
        q = urllib.parse.quote(user.login, safe="")
        api = self.api(f"/users/{q}")
        return {
            "login": user.login,
            "id": user.id,
            "node_id": _node_id("User" if user.type == "User" else user.type, user.id),
            "avatar_url": self.web(f"/avatars/u/{user.id}?v=4"),
            "gravatar_id": "",
            "url": api,
            "html_url": self.web(f"/{q}"),
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": user.type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _role(self, repo: Repo, login: str) -> str | None:
        if login.lower() == repo.owner.lower():
            return "admin"
        return repo.collaborators.get(login.lower())

    def _association(self, repo: Repo, login: str) -> str:
        if login.lower() == repo.owner.lower():
            return "OWNER"
        if login.lower() in repo.collaborators:
            return "COLLABORATOR"
        if any(i.user.lower() == login.lower() and i.pull and i.pull.merged for i in repo.issues.values()):
            return "CONTRIBUTOR"
        return "NONE"

    def _repo_json(self, repo: Repo, viewer: _Identity | None = None, *, full: bool = False) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}")
        host = urllib.parse.urlsplit(self.url).netloc
        open_issues = sum(1 for i in repo.issues.values() if i.state == "open")
        body: dict[str, Any] = {
            "id": repo.id,
            "node_id": _node_id("Repository", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self._user(repo.owner),
            "private": repo.private,
            "html_url": self.web(f"/{repo.full_name}"),
            "description": repo.description,
            "fork": repo.fork,
            "url": api,
            "archive_url": f"{api}/{{archive_format}}{{/ref}}",
            "assignees_url": f"{api}/assignees{{/user}}",
            "blobs_url": f"{api}/git/blobs{{/sha}}",
            "branches_url": f"{api}/branches{{/branch}}",
            "collaborators_url": f"{api}/collaborators{{/collaborator}}",
            "comments_url": f"{api}/comments{{/number}}",
            "commits_url": f"{api}/commits{{/sha}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "contributors_url": f"{api}/contributors",
            "deployments_url": f"{api}/deployments",
            "downloads_url": f"{api}/downloads",
            "events_url": f"{api}/events",
            "forks_url": f"{api}/forks",
            "git_commits_url": f"{api}/git/commits{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "git_tags_url": f"{api}/git/tags{{/sha}}",
            "git_url": f"git://{host}/{repo.full_name}.git",
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "issue_events_url": f"{api}/issues/events{{/number}}",
            "issues_url": f"{api}/issues{{/number}}",
            "keys_url": f"{api}/keys{{/key_id}}",
            "labels_url": f"{api}/labels{{/name}}",
            "languages_url": f"{api}/languages",
            "merges_url": f"{api}/merges",
            "milestones_url": f"{api}/milestones{{/number}}",
            "notifications_url": f"{api}/notifications{{?since,all,participating}}",
            "pulls_url": f"{api}/pulls{{/number}}",
            "releases_url": f"{api}/releases{{/id}}",
            "ssh_url": f"git@{host.split(':')[0]}:{repo.full_name}.git",
            "stargazers_url": f"{api}/stargazers",
            "statuses_url": f"{api}/statuses/{{sha}}",
            "subscribers_url": f"{api}/subscribers",
            "subscription_url": f"{api}/subscription",
            "tags_url": f"{api}/tags",
            "teams_url": f"{api}/teams",
            "trees_url": f"{api}/git/trees{{/sha}}",
            "clone_url": repo.clone_url or self.web(f"/{repo.full_name}.git"),
            "mirror_url": None,
            "hooks_url": f"{api}/hooks",
            "svn_url": self.web(f"/{repo.full_name}"),
            "homepage": None,
            "language": "Python",
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 1,
            "default_branch": repo.default_branch,
            "open_issues_count": open_issues,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": iso(repo.pushed_at),
            "created_at": iso(repo.created_at),
            "updated_at": iso(repo.updated_at),
            "allow_forking": True,
            "web_commit_signoff_required": False,
            "license": None,
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
        }
        if viewer is not None and viewer.login:
            role = self._role(repo, viewer.login) or ("write" if viewer.kind == "installation" else None)
            flags = ROLES[role][1] if role else {**ROLES["read"][1], "pull": not repo.private}
            body["permissions"] = dict(flags)
        if full:
            body.update(
                {
                    "subscribers_count": 0,
                    "network_count": 0,
                    "allow_rebase_merge": True,
                    "allow_squash_merge": True,
                    "allow_merge_commit": True,
                    "allow_auto_merge": False,
                    "delete_branch_on_merge": False,
                    "temp_clone_token": "",
                }
            )
            if repo.parent is not None:
                parent = self.state.repo(repo.parent)
                body["parent"] = body["source"] = self._repo_json(parent)
        return body

    def _label_json(self, repo: Repo, label: Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "node_id": _node_id("Label", label.id),
            "url": self.api(f"/repos/{repo.full_name}/labels/{urllib.parse.quote(label.name, safe='')}"),
            "name": label.name,
            "description": label.description,
            "color": label.color,
            "default": label.default,
        }

    def _rollup(self, url: str, reactions: Sequence[Reaction]) -> dict[str, Any]:
        counts = {content: sum(1 for r in reactions if r.content == content) for content in REACTIONS}
        return {"url": url, "total_count": len(reactions), **counts}

    def _issue_json(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}/issues/{issue.number}")
        kind = "pull" if issue.is_pull else "issues"
        html = self.web(f"/{repo.full_name}/{kind}/{issue.number}")
        body: dict[str, Any] = {
            "id": issue.id,
            "node_id": _node_id("PullRequest" if issue.is_pull else "Issue", issue.id),
            "url": api,
            "repository_url": self.api(f"/repos/{repo.full_name}"),
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": html,
            "number": issue.number,
            "state": issue.state,
            "state_reason": issue.state_reason,
            "title": issue.title,
            "body": issue.body,
            "user": self._user(issue.user),
            "labels": [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels],
            "assignee": self._user(issue.assignees[0]) if issue.assignees else None,
            "assignees": [self._user(a) for a in issue.assignees],
            "milestone": None,
            "locked": issue.locked,
            "active_lock_reason": None,
            "comments": sum(1 for c in repo.comments.values() if c.number == issue.number),
            "closed_at": iso(issue.closed_at),
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_by": self._user(issue.closed_by),
            "author_association": self._association(repo, issue.user),
            "reactions": self._rollup(f"{api}/reactions", []),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": None,
        }
        if issue.pull is not None:
            pull_api = self.api(f"/repos/{repo.full_name}/pulls/{issue.number}")
            body["draft"] = issue.pull.draft
            body["pull_request"] = {
                "url": pull_api,
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": iso(issue.pull.merged_at),
            }
        return body

    def _comment_json(self, repo: Repo, comment: Comment) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}/issues/comments/{comment.id}")
        issue = repo.issues[comment.number]
        kind = "pull" if issue.is_pull else "issues"
        return {
            "id": comment.id,
            "node_id": _node_id("IssueComment", comment.id),
            "url": api,
            "html_url": self.web(f"/{repo.full_name}/{kind}/{comment.number}#issuecomment-{comment.id}"),
            "body": comment.body,
            "user": self._user(comment.user),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "issue_url": self.api(f"/repos/{repo.full_name}/issues/{comment.number}"),
            "author_association": self._association(repo, comment.user),
            "performed_via_github_app": None,
            "reactions": self._rollup(f"{api}/reactions", comment.reactions),
        }

    def _reaction_json(self, reaction: Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": _node_id("Reaction", reaction.id),
            "user": self._user(reaction.user),
            "content": reaction.content,
            "created_at": iso(reaction.created_at),
        }

    def _pull_json(self, repo: Repo, issue: Issue, *, simple: bool = False) -> dict[str, Any]:
        pull = issue.pull
        assert pull is not None
        api = self.api(f"/repos/{repo.full_name}/pulls/{issue.number}")
        issue_api = self.api(f"/repos/{repo.full_name}/issues/{issue.number}")
        html = self.web(f"/{repo.full_name}/pull/{issue.number}")
        statuses = self.api(f"/repos/{repo.full_name}/statuses/{pull.head_sha}")
        head_repo = self.state.repo(pull.head_repo)
        labels = [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels]
        if simple:  # the list's schema types a label's description as a plain string
            labels = [{**label, "description": label["description"] or ""} for label in labels]

        def side(ref: str, sha: str, owner_repo: Repo) -> dict[str, Any]:
            return {
                "label": f"{owner_repo.owner}:{ref}",
                "ref": ref,
                "sha": sha,
                "user": self._user(owner_repo.owner),
                "repo": self._repo_json(owner_repo),
            }

        body: dict[str, Any] = {
            "url": api,
            "id": issue.id,
            "node_id": _node_id("PullRequest", issue.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_api,
            "commits_url": f"{api}/commits",
            "review_comments_url": f"{api}/comments",
            "review_comment_url": self.api(f"/repos/{repo.full_name}/pulls/comments{{/number}}"),
            "comments_url": f"{issue_api}/comments",
            "statuses_url": statuses,
            "number": issue.number,
            "state": issue.state,
            "locked": issue.locked,
            "title": issue.title,
            "user": self._user(issue.user),
            "body": issue.body,
            "labels": labels,
            "milestone": None,
            "active_lock_reason": None,
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "merged_at": iso(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha,
            "assignee": self._user(issue.assignees[0]) if issue.assignees else None,
            "assignees": [self._user(a) for a in issue.assignees],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": side(pull.head_ref, pull.head_sha, head_repo),
            "base": side(pull.base_ref, pull.base_sha, repo),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": issue_api},
                "comments": {"href": f"{issue_api}/comments"},
                "review_comments": {"href": f"{api}/comments"},
                "review_comment": {"href": self.api(f"/repos/{repo.full_name}/pulls/comments{{/number}}")},
                "commits": {"href": f"{api}/commits"},
                "statuses": {"href": statuses},
            },
            "author_association": self._association(repo, issue.user),
            "auto_merge": None,
            "draft": pull.draft,
        }
        if not simple:
            open_ = issue.state == "open"
            body.update(
                {
                    "merged": pull.merged,
                    "mergeable": True if open_ else None,
                    "rebaseable": True if open_ else None,
                    "mergeable_state": "clean" if open_ else "unknown",
                    "merged_by": self._user(pull.merged_by),
                    "comments": sum(1 for c in repo.comments.values() if c.number == issue.number),
                    "review_comments": 0,
                    "maintainer_can_modify": head_repo is not repo,
                    "commits": len(pull.commits),
                    "additions": sum(f["additions"] for f in pull.files),
                    "deletions": sum(f["deletions"] for f in pull.files),
                    "changed_files": len(pull.files),
                }
            )
        return body

    def _file_json(self, repo: Repo, pull: Pull, entry: Mapping[str, Any]) -> dict[str, Any]:
        name = entry["filename"]
        quoted = urllib.parse.quote(name)
        body = {
            "sha": hashlib.sha1(f"{pull.head_sha}:{name}".encode()).hexdigest(),
            "filename": name,
            "status": entry["status"],
            "additions": entry["additions"],
            "deletions": entry["deletions"],
            "changes": entry["changes"],
            "blob_url": self.web(f"/{pull.head_repo}/blob/{pull.head_sha}/{quoted}"),
            "raw_url": self.web(f"/{pull.head_repo}/raw/{pull.head_sha}/{quoted}"),
            "contents_url": self.api(f"/repos/{pull.head_repo}/contents/{quoted}?ref={pull.head_sha}"),
            "patch": entry["patch"],
        }
        if "previous_filename" in entry:
            body["previous_filename"] = entry["previous_filename"]
        return body

    def _status_json(self, repo: Repo, status: Status) -> dict[str, Any]:
        creator = self._user(status.creator)
        return {
            "url": self.api(f"/repos/{repo.full_name}/statuses/{status.sha}"),
            "avatar_url": creator["avatar_url"] if creator else None,
            "id": status.id,
            "node_id": _node_id("StatusContext", status.id),
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": iso(status.created_at),
            "updated_at": iso(status.updated_at),
            "creator": creator,
        }

    def _app_json(self, app_id: int | None) -> dict[str, Any] | None:
        app = self._apps.get(app_id) if app_id is not None else None
        if app is None:
            return None
        return {
            "id": app.app_id,
            "slug": app.slug,
            "node_id": _node_id("Integration", app.app_id),
            "client_id": f"Iv1.{app.app_id:016x}",
            "owner": self._user(app.owner),
            "name": app.slug,
            "description": None,
            "external_url": self.web(f"/apps/{app.slug}"),
            "html_url": self.web(f"/apps/{app.slug}"),
            "created_at": iso(app.created_at),
            "updated_at": iso(app.created_at),
            "permissions": {"issues": "write", "checks": "write", "metadata": "read", "contents": "read",
                            "pull_requests": "write", "statuses": "write", "actions": "write"},
            "events": ["issue_comment", "issues", "pull_request", "push"],
        }

    def _check_run_json(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}/check-runs/{run.id}")
        pulls = [
            {
                "id": issue.id,
                "number": issue.number,
                "url": self.api(f"/repos/{repo.full_name}/pulls/{issue.number}"),
                "head": {"ref": issue.pull.head_ref, "sha": issue.pull.head_sha,
                         "repo": {"id": repo.id, "url": self.api(f"/repos/{repo.full_name}"), "name": repo.name}},
                "base": {"ref": issue.pull.base_ref, "sha": issue.pull.base_sha,
                         "repo": {"id": repo.id, "url": self.api(f"/repos/{repo.full_name}"), "name": repo.name}},
            }
            for issue in repo.issues.values()
            if issue.pull and issue.state == "open" and issue.pull.head_sha == run.head_sha
            and issue.pull.head_repo == repo.full_name
        ]
        output = run.output
        return {
            "id": run.id,
            "head_sha": run.head_sha,
            "node_id": _node_id("CheckRun", run.id),
            "external_id": run.external_id,
            "url": api,
            "html_url": self.web(f"/{repo.full_name}/runs/{run.id}"),
            "details_url": run.details_url,
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": iso(run.started_at),
            "completed_at": iso(run.completed_at),
            "output": {
                "title": output.get("title"),
                "summary": output.get("summary"),
                "text": output.get("text"),
                "annotations_count": len(output.get("annotations", [])),
                "annotations_url": f"{api}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": run.check_suite_id},
            "app": self._app_json(run.app_id),
            "pull_requests": pulls,
        }

    # -- webhooks a person's click sends to the App (shaped as GitHub's example deliveries in
    #    ../shared/refdata/github/webhooks/examples/api.github.com/check_run and check_suite)

    def check_run_delivery(self, repo: str, check_run_id: int, *, sender: str,
                           identifier: str | None = None) -> tuple[str, dict[str, Any]]:
        """What GitHub sends the App when ``sender`` clicks the check run's button ``identifier``
        (``requested_action``), or its *Re-run* (``rerequested``) without one: (event, payload).
        Only a button the run shows can be clicked, and only once the run has completed."""
        with self.lock:
            held = self.state.repo(repo)
            run = held.check_runs[check_run_id]
            if identifier is not None and (run.status != "completed"
                                           or identifier not in {a["identifier"] for a in run.actions}):
                raise ValueError(f"check run {check_run_id} shows no button {identifier!r} to click")
            body = self._check_run_json(held, run)
            body["check_suite"] = self._check_suite_json(held, run.check_suite_id, run.head_sha, run.app_id)
            payload = {"action": "requested_action" if identifier is not None else "rerequested", "check_run": body,
                       **({"requested_action": {"identifier": identifier}} if identifier is not None else {}),
                       "repository": self._repo_json(held), "sender": self._user(sender),
                       "installation": self._installation_json(run.app_id)}
        return "check_run", payload

    def check_suite_delivery(self, repo: str, sha: str, *, sender: str) -> tuple[str, dict[str, Any]]:
        """What GitHub sends the App when ``sender`` clicks *Re-run all checks* on the commit's suite."""
        with self.lock:
            held = self.state.repo(repo)
            runs = [run for run in held.check_runs.values() if run.head_sha == sha]
            if not runs:
                raise ValueError(f"the commit {sha} has no check suite")
            suite = self._check_suite_json(held, runs[-1].check_suite_id, sha, runs[-1].app_id)
            message = held.commits.get(sha, "")
            person = {"name": sender, "email": f"{sender}@users.noreply.localhost"}
            suite.update(latest_check_runs_count=len(runs),
                         check_runs_url=self.api(f"/repos/{repo}/check-suites/{runs[-1].check_suite_id}/check-runs"),
                         head_commit={"id": sha, "tree_id": hashlib.sha1(f"tree {sha}".encode()).hexdigest(),
                                      "message": message, "timestamp": iso(held.created_at), "author": person,
                                      "committer": person})
            payload = {"action": "rerequested", "check_suite": suite, "repository": self._repo_json(held),
                       "sender": self._user(sender), "installation": self._installation_json(runs[-1].app_id)}
        return "check_suite", payload

    def _check_suite_json(self, repo: Repo, suite_id: int, sha: str, app_id: int | None) -> dict[str, Any]:
        runs = [run for run in repo.check_runs.values() if run.check_suite_id == suite_id] or \
            [run for run in repo.check_runs.values() if run.head_sha == sha]
        done = all(run.status == "completed" for run in runs)
        branch = next((name for name, head in repo.branches.items() if head == sha), None)
        stamps = [run.started_at or self.clock.now() for run in runs] or [self.clock.now()]
        return {
            "id": suite_id, "node_id": _node_id("CheckSuite", suite_id), "head_branch": branch, "head_sha": sha,
            "status": "completed" if done else "in_progress",
            "conclusion": (runs[-1].conclusion if done and runs else None),
            "url": self.api(f"/repos/{repo.full_name}/check-suites/{suite_id}"), "before": None, "after": sha,
            "pull_requests": self._check_run_json(repo, runs[-1])["pull_requests"] if runs else [],
            "app": self._app_json(app_id), "created_at": iso(min(stamps)), "updated_at": iso(max(stamps)),
        }

    def _installation_json(self, app_id: int | None) -> dict[str, Any]:
        installation = next((number for number, (app, _account) in self._installations.items() if app == app_id), 0)
        return {"id": installation, "node_id": _node_id("Installation", installation)}

    def _workflow_json(self, repo: Repo, workflow: Workflow) -> dict[str, Any]:
        return {
            "id": workflow.id,
            "node_id": _node_id("Workflow", workflow.id),
            "name": workflow.name,
            "path": workflow.path,
            "state": workflow.state,
            "created_at": iso(workflow.created_at),
            "updated_at": iso(workflow.updated_at),
            "url": self.api(f"/repos/{repo.full_name}/actions/workflows/{workflow.id}"),
            "html_url": self.web(f"/{repo.full_name}/blob/{repo.default_branch}/{workflow.path}"),
            "badge_url": self.web(f"/{repo.full_name}/workflows/{urllib.parse.quote(workflow.name)}/badge.svg"),
        }

    def _run_json(self, repo: Repo, run: WorkflowRun) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}/actions/runs/{run.id}")
        workflow = repo.workflows[run.workflow_id]
        message = repo.commits.get(run.head_sha, "")
        person = {"name": run.actor, "email": f"{run.actor}@users.noreply.localhost"}
        return {
            "id": run.id,
            "name": workflow.name,
            "node_id": _node_id("WorkflowRun", run.id),
            "check_suite_id": run.check_suite_id,
            "check_suite_node_id": _node_id("CheckSuite", run.check_suite_id),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": f"{workflow.path}@{run.head_branch or run.head_sha}",
            "display_title": str(run.inputs.get(workflow.run_name_input or "", "") or workflow.name),
            "run_number": run.run_number,
            "run_attempt": 1,
            "referenced_workflows": [],
            "event": run.event,
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": run.workflow_id,
            "url": api,
            "html_url": self.web(f"/{repo.full_name}/actions/runs/{run.id}"),
            "pull_requests": [],
            "created_at": iso(run.created_at),
            "updated_at": iso(run.updated_at),
            "actor": self._user(run.actor),
            "triggering_actor": self._user(run.actor),
            "run_started_at": iso(run.run_started_at or run.created_at),
            "jobs_url": f"{api}/jobs",
            "logs_url": f"{api}/logs",
            "check_suite_url": self.api(f"/repos/{repo.full_name}/check-suites/{run.check_suite_id}"),
            "artifacts_url": f"{api}/artifacts",
            "cancel_url": f"{api}/cancel",
            "rerun_url": f"{api}/rerun",
            "previous_attempt_url": None,
            "workflow_url": self.api(f"/repos/{repo.full_name}/actions/workflows/{run.workflow_id}"),
            "head_commit": {
                "id": run.head_sha,
                "tree_id": hashlib.sha1(f"tree {run.head_sha}".encode()).hexdigest(),
                "message": message,
                "timestamp": iso(run.created_at),
                "author": person,
                "committer": person,
            },
            "repository": self._repo_json(repo),
            "head_repository": self._repo_json(repo),
        }

    def _commit_json(self, repo: Repo, sha: str) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}/commits/{sha}")
        when = iso(repo.created_at)
        person = {"name": repo.owner, "email": f"{repo.owner}@users.noreply.localhost", "date": when}
        tree = hashlib.sha1(f"tree {sha}".encode()).hexdigest()
        return {
            "url": api,
            "sha": sha,
            "node_id": _node_id("Commit", int(sha[:8], 16)),
            "html_url": self.web(f"/{repo.full_name}/commit/{sha}"),
            "comments_url": f"{api}/comments",
            "commit": {
                "url": self.api(f"/repos/{repo.full_name}/git/commits/{sha}"),
                "author": person,
                "committer": person,
                "message": repo.commits.get(sha, ""),
                "comment_count": 0,
                "tree": {"sha": tree, "url": self.api(f"/repos/{repo.full_name}/git/trees/{tree}")},
            },
            "author": self._user(repo.owner),
            "committer": self._user(repo.owner),
            "parents": [],
            "stats": {"additions": 0, "deletions": 0, "total": 0},
            "files": [],
        }

    # -- routes

    def _register_routes(self) -> None:
        add = self.route
        r = "/repos/{owner}/{repo}"
        add("GET", r, self._get_repo, name="repos/get")
        add("GET", f"{r}/issues", self._list_issues, name="issues/list-for-repo")
        add("POST", f"{r}/issues", self._create_issue, name="issues/create")
        add("GET", f"{r}/issues/{{issue_number}}", self._get_issue, name="issues/get")
        add("PATCH", f"{r}/issues/{{issue_number}}", self._update_issue, name="issues/update")
        add("GET", f"{r}/issues/comments", self._list_repo_comments, name="issues/list-comments-for-repo")
        add("GET", f"{r}/issues/{{issue_number}}/comments", self._list_comments, name="issues/list-comments")
        add("POST", f"{r}/issues/{{issue_number}}/comments", self._create_comment, name="issues/create-comment")
        add("GET", f"{r}/issues/comments/{{comment_id}}", self._get_comment, name="issues/get-comment")
        add("PATCH", f"{r}/issues/comments/{{comment_id}}", self._update_comment, name="issues/update-comment")
        add("GET", f"{r}/issues/comments/{{comment_id}}/reactions", self._list_reactions,
            name="reactions/list-for-issue-comment")
        add("POST", f"{r}/issues/comments/{{comment_id}}/reactions", self._create_reaction,
            name="reactions/create-for-issue-comment")
        add("POST", f"{r}/issues/{{issue_number}}/labels", self._add_labels, name="issues/add-labels")
        add("DELETE", f"{r}/issues/{{issue_number}}/labels/{{name}}", self._remove_label, name="issues/remove-label")
        add("GET", f"{r}/labels", self._list_labels, name="issues/list-labels-for-repo")
        add("POST", f"{r}/labels", self._create_label, name="issues/create-label")
        add("GET", f"{r}/pulls", self._list_pulls, name="pulls/list")
        add("GET", f"{r}/pulls/{{pull_number}}", self._get_pull, name="pulls/get")
        add("GET", f"{r}/pulls/{{pull_number}}/files", self._list_files, name="pulls/list-files")
        add("GET", f"{r}/pulls/{{pull_number}}/commits", self._list_pull_commits, name="pulls/list-commits")
        add("GET", f"{r}/commits/{{ref}}", self._get_commit, name="repos/get-commit")
        add("POST", f"{r}/statuses/{{sha}}", self._create_status, name="repos/create-commit-status")
        add("GET", f"{r}/commits/{{ref}}/statuses", self._list_statuses, name="repos/list-commit-statuses-for-ref")
        # the older path of the same list, which PyGithub's Commit.get_statuses() calls
        add("GET", f"{r}/statuses/{{sha}}", self._list_statuses, name="repos/list-commit-statuses-for-ref-legacy")
        add("POST", f"{r}/check-runs", self._create_check_run, name="checks/create")
        add("PATCH", f"{r}/check-runs/{{check_run_id}}", self._update_check_run, name="checks/update")
        add("GET", f"{r}/commits/{{ref}}/check-runs", self._list_check_runs, name="checks/list-for-ref")
        add("GET", f"{r}/collaborators/{{username}}/permission", self._permission,
            name="repos/get-collaborator-permission-level")
        add("GET", f"{r}/actions/workflows/{{workflow_id}}", self._get_workflow, name="actions/get-workflow")
        add("POST", f"{r}/actions/workflows/{{workflow_id}}/dispatches", self._dispatch_workflow,
            name="actions/create-workflow-dispatch")
        add("GET", f"{r}/actions/runs", self._list_runs, name="actions/list-workflow-runs-for-repo")
        add("GET", f"{r}/actions/runs/{{run_id}}/artifacts", self._list_run_artifacts,
            name="actions/list-workflow-run-artifacts")
        add("GET", f"{r}/actions/artifacts/{{artifact_id}}/{{archive_format}}", self._download_artifact,
            name="actions/download-artifact")
        add("GET", "/_blobs/{name}", self._blob, name="artifact-storage")
        add("GET", "/rate_limit", self._rate_limit, name="rate-limit/get")
        add("GET", "/user", self._get_user, name="users/get-authenticated")
        add("POST", "/app/installations/{installation_id}/access_tokens", self._installation_token,
            name="apps/create-installation-access-token")
        add("POST", GRAPHQL_ROUTE, lambda request: self.graphql.answer(request), name="graphql")

    def _get_repo(self, request: Request) -> Response:
        repo = self._repo(request)
        return Response(200, self._repo_json(repo, request.identity, full=True), last_modified=repo.updated_at)

    @staticmethod
    def _ordered(items: list[Any], key: Any, direction: str) -> list[Any]:
        return sorted(items, key=lambda x: (key(x), x.id), reverse=direction == "desc")

    def _list_issues(self, request: Request) -> Response:
        repo = self._repo(request)
        q = request.query
        state = q.get("state", "open")
        wanted = [name.strip().lower() for name in q.get("labels", "").split(",") if name.strip()]
        since = self._since(request)
        found = [
            i
            for i in repo.issues.values()
            if (state == "all" or i.state == state)
            and all(name in {label.lower() for label in i.labels} for name in wanted)
            and (since is None or i.updated_at >= since)
            and (q.get("creator") is None or i.user.lower() == q["creator"].lower())
        ]
        sort = q.get("sort", "created")
        keys = {
            "created": lambda i: i.created_at,
            "updated": lambda i: i.updated_at,
            "comments": lambda i: sum(1 for c in repo.comments.values() if c.number == i.number),
        }
        found = self._ordered(found, keys.get(sort, keys["created"]), q.get("direction", "desc"))
        page, headers = self._page(request, found)
        last = max((i.updated_at for i in found), default=None)
        return Response(200, [self._issue_json(repo, i) for i in page], headers, last_modified=last)

    def _create_issue(self, request: Request) -> Response:
        repo = self._repo(request)
        body = self._body(request)
        title = body.get("title")
        if title in (None, ""):
            raise self._invalid("Issue", "title")
        labels = [x["name"] if isinstance(x, dict) else str(x) for x in body.get("labels") or []]
        issue = self.state._new_issue(repo, str(title), body.get("body"), self._actor(request), labels)
        assignees = list(body.get("assignees") or ([body["assignee"]] if body.get("assignee") else []))
        issue.assignees = [self.state.add_user(a).login for a in assignees]
        url = self.api(f"/repos/{repo.full_name}/issues/{issue.number}")
        return Response(201, self._issue_json(repo, issue), {"Location": url})

    def _get_issue(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._issue(request, repo)
        return Response(200, self._issue_json(repo, issue), last_modified=issue.updated_at)

    def _update_issue(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._issue(request, repo)
        body = self._body(request)
        state = body.get("state")
        if state is not None and state not in ("open", "closed"):
            raise self._invalid("Issue", "state", "invalid", value=state)
        if "title" in body:
            if not body["title"]:
                raise self._invalid("Issue", "title")
            issue.title = str(body["title"])
        if "body" in body:
            issue.body = body["body"]
        if "labels" in body:
            names = [x["name"] if isinstance(x, dict) else str(x) for x in body["labels"] or []]
            issue.labels = [self.state._label(repo, name).name for name in names]
        if "assignees" in body:
            issue.assignees = [self.state.add_user(a).login for a in body["assignees"] or []]
        now = self.clock.now()
        if state == "closed" and issue.state != "closed":
            issue.state, issue.closed_at, issue.closed_by = "closed", now, self._actor(request)
            issue.state_reason = body.get("state_reason") or ("completed" if not issue.is_pull else None)
        elif state == "open" and issue.state != "open":
            issue.state, issue.closed_at, issue.closed_by, issue.state_reason = "open", None, None, "reopened"
        elif "state_reason" in body and issue.state == "closed":
            issue.state_reason = body["state_reason"]
        issue.updated_at = now
        return Response(200, self._issue_json(repo, issue))

    def _list_repo_comments(self, request: Request) -> Response:
        repo = self._repo(request)
        since = self._since(request)
        found = [c for c in repo.comments.values() if since is None or c.updated_at >= since]
        sort = request.query.get("sort")
        if sort in ("created", "updated"):
            key = (lambda c: c.created_at) if sort == "created" else (lambda c: c.updated_at)
            found = self._ordered(found, key, request.query.get("direction", "desc"))
        else:  # without ``sort``, oldest first; ``direction`` is ignored
            found = sorted(found, key=lambda c: c.id)
        page, headers = self._page(request, found)
        last = max((c.updated_at for c in found), default=None)
        return Response(200, [self._comment_json(repo, c) for c in page], headers, last_modified=last)

    def _list_comments(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._issue(request, repo)
        since = self._since(request)
        found = [
            c
            for c in sorted(repo.comments.values(), key=lambda c: c.id)
            if c.number == issue.number and (since is None or c.updated_at >= since)
        ]
        page, headers = self._page(request, found)
        last = max((c.updated_at for c in found), default=None)
        return Response(200, [self._comment_json(repo, c) for c in page], headers, last_modified=last)

    def _create_comment(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._issue(request, repo)
        body = self._body(request)
        if not body.get("body"):
            raise self._invalid("IssueComment", "body")
        if issue.locked and self._role(repo, self._actor(request)) is None:
            raise _Answer(self._error(403, "Unable to create comment because issue is locked."))
        comment_id = self.state.add_comment(repo.full_name, issue.number, self._actor(request), str(body["body"]))
        comment = repo.comments[comment_id]
        headers = {"Location": self.api(f"/repos/{repo.full_name}/issues/comments/{comment.id}")}
        return Response(201, self._comment_json(repo, comment), headers)

    def _get_comment(self, request: Request) -> Response:
        repo = self._repo(request)
        comment = self._comment(request, repo)
        return Response(200, self._comment_json(repo, comment), last_modified=comment.updated_at)

    def _update_comment(self, request: Request) -> Response:
        repo = self._repo(request)
        comment = self._comment(request, repo)
        body = self._body(request)
        if not body.get("body"):
            raise self._invalid("IssueComment", "body")
        comment.body, comment.updated_at = str(body["body"]), self.clock.now()
        return Response(200, self._comment_json(repo, comment))

    def _list_reactions(self, request: Request) -> Response:
        repo = self._repo(request)
        comment = self._comment(request, repo)
        content = request.query.get("content")
        found = [r for r in comment.reactions if content is None or r.content == content]
        page, headers = self._page(request, found)
        last = max((r.created_at for r in found), default=None)
        return Response(200, [self._reaction_json(r) for r in page], headers, last_modified=last)

    def _create_reaction(self, request: Request) -> Response:
        repo = self._repo(request)
        comment = self._comment(request, repo)
        content = self._body(request).get("content")
        if content not in REACTIONS:
            raise self._invalid("Reaction", "content", "invalid", value=content)
        before = len(comment.reactions)
        reaction = self.state.add_reaction(comment.id, self._actor(request), content)
        status = 201 if len(comment.reactions) > before else 200
        return Response(status, self._reaction_json(reaction))

    def _add_labels(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._issue(request, repo)
        body = self._body(request, kinds=(dict, list))
        names = body.get("labels", []) if isinstance(body, dict) else body
        names = [x["name"] if isinstance(x, dict) else str(x) for x in names]
        if not names:
            raise self._invalid("Label", "labels")
        present = {label.lower() for label in issue.labels}
        for name in names:
            if name.lower() not in present:
                issue.labels.append(self.state._label(repo, name).name)
                present.add(name.lower())
        issue.updated_at = self.clock.now()
        return Response(200, [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels])

    def _remove_label(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._issue(request, repo)
        name = request.params["name"]
        kept = [label for label in issue.labels if label.lower() != name.lower()]
        if len(kept) == len(issue.labels):
            raise _Answer(self._error(404, "Label does not exist"))
        issue.labels, issue.updated_at = kept, self.clock.now()
        return Response(200, [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels])

    def _list_labels(self, request: Request) -> Response:
        repo = self._repo(request)
        found = sorted(repo.labels.values(), key=lambda label: label.name.lower())
        page, headers = self._page(request, found)
        return Response(200, [self._label_json(repo, label) for label in page], headers)

    def _create_label(self, request: Request) -> Response:
        repo = self._repo(request)
        body = self._body(request)
        name = body.get("name")
        if not name:
            raise self._invalid("Label", "name")
        color = str(body.get("color") or "ededed").lstrip("#").lower()
        if len(color) != 6 or any(ch not in "0123456789abcdef" for ch in color):
            raise self._invalid("Label", "color", "invalid")
        if name.lower() in repo.labels:
            raise self._invalid("Label", "name", "already_exists")
        label = self.state.add_label(repo.full_name, name, color=color, description=body.get("description"))
        url = self.api(f"/repos/{repo.full_name}/labels/{urllib.parse.quote(name, safe='')}")
        return Response(201, self._label_json(repo, label), {"Location": url})

    def _list_pulls(self, request: Request) -> Response:
        repo = self._repo(request)
        q = request.query
        state = q.get("state", "open")
        found = [
            i
            for i in repo.issues.values()
            if i.pull is not None
            and (state == "all" or i.state == state)
            and (q.get("base") is None or i.pull.base_ref == q["base"])
            and (q.get("head") is None or q["head"] == f"{i.pull.head_repo.split('/')[0]}:{i.pull.head_ref}")
        ]
        sort = q.get("sort", "created")
        keys = {
            "created": lambda i: i.created_at,
            "updated": lambda i: i.updated_at,
            "popularity": lambda i: sum(1 for c in repo.comments.values() if c.number == i.number),
            "long-running": lambda i: i.created_at,
        }
        direction = q.get("direction", "desc" if sort == "created" else "asc")
        found = self._ordered(found, keys.get(sort, keys["created"]), direction)
        page, headers = self._page(request, found)
        last = max((i.updated_at for i in found), default=None)
        return Response(200, [self._pull_json(repo, i, simple=True) for i in page], headers, last_modified=last)

    def _pull(self, request: Request, repo: Repo) -> Issue:
        try:
            issue = repo.issues[int(request.params["pull_number"])]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None
        if issue.pull is None:
            raise _Answer(self.not_found(request))
        return issue

    def _get_pull(self, request: Request) -> Response:
        repo = self._repo(request)
        issue = self._pull(request, repo)
        return Response(200, self._pull_json(repo, issue), last_modified=issue.updated_at)

    def _list_files(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo).pull
        assert pull is not None
        page, headers = self._page(request, pull.files)
        return Response(200, [self._file_json(repo, pull, f) for f in page], headers)

    def _list_pull_commits(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo).pull
        assert pull is not None
        # GitHub lists at most 250 commits of a pull request (oldest first), 30 a page by default, 100 at most.
        page, headers = self._page(request, pull.commits[:250])
        return Response(200, [self._commit_json(repo, sha) for sha in page], headers)

    def _get_commit(self, request: Request) -> Response:
        repo = self._repo(request)
        sha = self._known_sha(request, repo, request.params["ref"])
        return Response(200, self._commit_json(repo, sha), last_modified=repo.created_at)

    def _create_status(self, request: Request) -> Response:
        repo = self._repo(request)
        sha = self._known_sha(request, repo, request.params["sha"])
        body = self._body(request)
        state = body.get("state")
        if state not in STATUS_STATES:
            raise self._invalid("Status", "state", "custom" if state else "missing_field")
        context = body.get("context") or "default"
        if sum(1 for s in repo.statuses if s.sha == sha and s.context == context) >= 1000:
            raise self._invalid("Status", "context", "custom",
                                message="This SHA and context has reached the maximum number of statuses.")
        now = self.clock.now()
        status = Status(
            self.state.next_id(), sha, state, context, body.get("description"), body.get("target_url"),
            self._actor(request), now, now,
        )
        repo.statuses.append(status)
        url = self.api(f"/repos/{repo.full_name}/statuses/{sha}")
        return Response(201, self._status_json(repo, status), {"Location": url})

    def _list_statuses(self, request: Request) -> Response:
        repo = self._repo(request)
        ref = request.params.get("ref") or request.params["sha"]
        found = [s for s in reversed(repo.statuses) if s.sha == self._known_sha(request, repo, ref)]  # newest first
        page, headers = self._page(request, found)
        last = max((s.updated_at for s in found), default=None)
        return Response(200, [self._status_json(repo, s) for s in page], headers, last_modified=last)

    def _check_run_fields(self, run: CheckRun, body: Mapping[str, Any], *, creating: bool) -> None:
        # The buttons and annotations are checked first: a refused request changes nothing.
        actions = self._check_actions(body["actions"]) if "actions" in body else None
        output = body.get("output") if isinstance(body.get("output"), dict) else None
        added = self._check_annotations(output.get("annotations")) if output is not None else []
        if "status" in body:
            if body["status"] not in CHECK_STATUSES:
                raise self._invalid("CheckRun", "status", "invalid")
            run.status = body["status"]
        if body.get("conclusion") is not None:
            if body["conclusion"] not in CHECK_CONCLUSIONS:
                raise self._invalid("CheckRun", "conclusion", "invalid")
            run.conclusion, run.status = body["conclusion"], "completed"
        if run.status == "completed" and run.conclusion is None:
            raise self._invalid("CheckRun", "conclusion", "missing_field")
        for key in ("name", "details_url"):
            if key in body:
                setattr(run, key, body[key])
        if "external_id" in body:
            run.external_id = body["external_id"] or ""
        if actions is not None:
            run.actions = actions
        if output is not None:
            run.output = {**run.output, **output, "annotations": [*run.output.get("annotations", []), *added]}
        now = self.clock.now()
        if "started_at" in body:
            run.started_at = parse_iso(body["started_at"])
        elif creating:
            run.started_at = now
        if "completed_at" in body:
            run.completed_at = parse_iso(body["completed_at"])
        elif run.status == "completed" and run.completed_at is None:
            run.completed_at = now

    #: GitHub's limits on a check run's buttons ("Create a check run": at most three, each field this long)
    #: and on the annotations of one request (more go in further updates, which add to them)
    CHECK_ACTIONS_MAX, CHECK_ACTION_FIELDS = 3, {"label": 20, "identifier": 20, "description": 40}
    CHECK_ANNOTATIONS_PER_REQUEST = 50

    def _check_actions(self, actions: Any) -> list[dict[str, str]]:
        """The buttons as GitHub takes them, or its 422 for too many, a field missing or too long."""
        if not isinstance(actions, list) or len(actions) > self.CHECK_ACTIONS_MAX:
            raise self._invalid("CheckRun", "actions", "invalid",
                                message=f"A check run takes at most {self.CHECK_ACTIONS_MAX} actions")
        for action in actions:
            for name, limit in self.CHECK_ACTION_FIELDS.items():
                value = action.get(name) if isinstance(action, dict) else None
                if not isinstance(value, str) or not value:
                    raise self._invalid("CheckRun", f"actions.{name}")
                if len(value) > limit:
                    raise self._invalid("CheckRun", f"actions.{name}", "invalid",
                                        message=f"{name} is too long (maximum is {limit} characters)")
        return [{name: action[name] for name in self.CHECK_ACTION_FIELDS} for action in actions]

    def _check_annotations(self, annotations: Any) -> list[dict[str, Any]]:
        if annotations is None:
            return []
        if not isinstance(annotations, list) or len(annotations) > self.CHECK_ANNOTATIONS_PER_REQUEST:
            raise self._invalid("CheckRun", "output.annotations", "invalid",
                                message=f"at most {self.CHECK_ANNOTATIONS_PER_REQUEST} annotations per request")
        for annotation in annotations:
            for name in ("path", "start_line", "end_line", "annotation_level", "message"):
                if not isinstance(annotation, dict) or annotation.get(name) in (None, ""):
                    raise self._invalid("CheckRun", f"output.annotations.{name}")
            if annotation["annotation_level"] not in ("notice", "warning", "failure"):
                raise self._invalid("CheckRun", "output.annotations.annotation_level", "invalid")
        return [dict(annotation) for annotation in annotations]

    def _list_check_runs(self, request: Request) -> Response:
        """``GET /repos/{owner}/{repo}/commits/{ref}/check-runs``: by ``check_name``, ``status`` and
        ``app_id``; ``filter=latest`` (the default) keeps the newest run of each name."""
        repo = self._repo(request)
        sha = self._known_sha(request, repo, request.params["ref"])
        q = request.query
        found = [run for run in sorted(repo.check_runs.values(), key=lambda r: r.id, reverse=True)
                 if run.head_sha == sha and q.get("check_name", run.name) == run.name
                 and q.get("status", run.status) == run.status
                 and ("app_id" not in q or str(run.app_id) == q["app_id"])]
        if q.get("filter", "latest") == "latest":
            newest: dict[str, CheckRun] = {}
            for run in found:
                newest.setdefault(run.name, run)
            found = list(newest.values())
        page, headers = self._page(request, found)
        return Response(200, {"total_count": len(found), "check_runs": [self._check_run_json(repo, r) for r in page]},
                        headers)

    def _create_check_run(self, request: Request) -> Response:
        repo = self._repo(request)
        identity = request.identity
        if self.check_runs_need_app and identity.kind != "installation":
            raise _Answer(self._error(403, "You must authenticate via a GitHub App."))
        body = self._body(request)
        if not body.get("name"):
            raise self._invalid("CheckRun", "name")
        if not body.get("head_sha"):
            raise self._invalid("CheckRun", "head_sha")
        sha = self._known_sha(request, repo, str(body["head_sha"]))
        run = CheckRun(
            self.state.next_id(), str(body["name"]), sha, "queued", None, None, None, "", None, {},
            self._installations.get(identity.installation_id, (None,))[0], self.state.next_id(),
        )
        self._check_run_fields(run, body, creating=True)
        repo.check_runs[run.id] = run
        return Response(201, self._check_run_json(repo, run))

    def _update_check_run(self, request: Request) -> Response:
        repo = self._repo(request)
        try:
            run = repo.check_runs[int(request.params["check_run_id"])]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None
        self._check_run_fields(run, self._body(request), creating=False)
        return Response(200, self._check_run_json(repo, run))

    def _permission(self, request: Request) -> Response:
        repo = self._repo(request)
        login = request.params["username"]
        user = self.state.users.get(login.lower())
        if user is None:
            raise _Answer(self.not_found(request))
        role = self._role(repo, login)
        if role is None:  # not a collaborator: what anyone may do
            legacy, flags, role_name = ("none", {k: False for k in ROLES["read"][1]}, "none") if repo.private else (
                "read", ROLES["read"][1], "read")
        else:
            legacy, flags, role_name = ROLES[role][0], ROLES[role][1], role
        collaborator = {**self._user(user.login), "permissions": dict(flags), "role_name": role_name}
        return Response(200, {"permission": legacy, "role_name": role_name, "user": collaborator})

    def _workflow(self, request: Request, repo: Repo) -> Workflow:
        workflow = _find_workflow(repo, request.params["workflow_id"])
        if workflow is None:
            raise _Answer(self.not_found(request))
        return workflow

    def _get_workflow(self, request: Request) -> Response:
        repo = self._repo(request)
        workflow = self._workflow(request, repo)
        return Response(200, self._workflow_json(repo, workflow), last_modified=workflow.updated_at)

    def _dispatch_workflow(self, request: Request) -> Response:
        repo = self._repo(request)
        workflow = self._workflow(request, repo)
        body = self._body(request)
        ref = body.get("ref")
        if not ref:
            raise self._invalid("Workflow", "ref")
        branch = str(ref).removeprefix("refs/heads/")
        if branch not in repo.branches:
            raise _Answer(self._error(422, f"No ref found for: {ref}"))
        inputs = body.get("inputs") or {}
        if not isinstance(inputs, dict) or len(inputs) > 25:
            raise _Answer(self._error(422, "inputs are too large or not an object"))
        now = self.clock.now()
        number = 1 + sum(1 for run in repo.runs.values() if run.workflow_id == workflow.id)
        run = WorkflowRun(
            self.state.next_id(), workflow.id, number, "workflow_dispatch", branch, repo.branches[branch],
            self._actor(request), now, now, dict(inputs), check_suite_id=self.state.next_id(),
        )
        repo.runs[run.id] = run
        if body.get("return_run_details"):
            details = {
                "workflow_run_id": run.id,
                "run_url": self.api(f"/repos/{repo.full_name}/actions/runs/{run.id}"),
                "html_url": self.web(f"/{repo.full_name}/actions/runs/{run.id}"),
            }
            return Response(200, details)
        return Response(204)

    def _list_runs(self, request: Request) -> Response:
        repo = self._repo(request)
        q = request.query
        found = [
            run
            for run in repo.runs.values()
            if (q.get("branch") is None or run.head_branch == q["branch"])
            and (q.get("event") is None or run.event == q["event"])
            and (q.get("status") is None or q["status"] in (run.status, run.conclusion))
            and (q.get("head_sha") is None or run.head_sha == q["head_sha"])
            and (q.get("actor") is None or run.actor.lower() == q["actor"].lower())
        ]
        found = sorted(found, key=lambda run: (run.created_at, run.id), reverse=True)
        page, headers = self._page(request, found)
        body = {"total_count": len(found), "workflow_runs": [self._run_json(repo, run) for run in page]}
        last = max((run.updated_at for run in found), default=None)
        return Response(200, body, headers, last_modified=last)

    def _artifact_json(self, repo: Repo, artifact: Artifact) -> dict[str, Any]:
        api = self.api(f"/repos/{repo.full_name}/actions/artifacts/{artifact.id}")
        return {
            "id": artifact.id,
            "node_id": _node_id("Artifact", artifact.id),
            "name": artifact.name,
            "size_in_bytes": len(artifact.archive),
            "url": api,
            "archive_download_url": f"{api}/zip",
            "expired": artifact.expired,
            "created_at": iso(artifact.created_at),
            "updated_at": iso(artifact.created_at),
            "expires_at": iso(artifact.expires_at),
            "digest": "sha256:" + hashlib.sha256(artifact.archive).hexdigest(),
            "workflow_run": {
                "id": artifact.run_id, "repository_id": repo.id, "head_repository_id": repo.id,
                "head_branch": artifact.head_branch, "head_sha": artifact.head_sha,
            },
        }

    def _list_run_artifacts(self, request: Request) -> Response:
        repo = self._repo(request)
        try:
            run = repo.runs[int(request.params["run_id"])]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None
        found = [a for a in repo.artifacts.values() if a.run_id == run.id
                 and (request.query.get("name") is None or a.name == request.query["name"])]
        page, headers = self._page(request, found)
        body = {"total_count": len(found), "artifacts": [self._artifact_json(repo, a) for a in page]}
        return Response(200, body, headers, last_modified=run.updated_at)

    def _download_artifact(self, request: Request) -> Response:
        """GitHub answers 302 to a short-lived signed URL on another host (blob storage), which
        takes no Authorization header; here, ``localhost`` instead of ``127.0.0.1``."""
        repo = self._repo(request)
        try:
            artifact = repo.artifacts[int(request.params["artifact_id"])]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None
        if request.params["archive_format"] != "zip":
            raise _Answer(self.not_found(request))
        if artifact.expired:
            raise _Answer(self._error(410, "Artifact has expired"))
        name = secrets.token_urlsafe(24)
        self._downloads[name] = (artifact.id, self.clock.now() + timedelta(minutes=1))
        location = f"http://localhost:{self.port}{API_PREFIX}/_blobs/{name}"
        return Response(302, None, {"Location": location})

    def _blob(self, request: Request) -> Response:
        if request.header("authorization"):
            # Blob storage refuses a second authentication scheme next to its signed URL.
            raise _Answer(Response(400, b"<Error><Code>InvalidAuthenticationInfo</Code></Error>",
                                   content_type="application/xml"))
        found = self._downloads.get(request.params["name"])
        if found is None or found[1] < self.clock.now():
            raise _Answer(Response(403, b"<Error><Code>AuthenticationFailed</Code></Error>",
                                   content_type="application/xml"))
        for repo in self.state.repos.values():
            if found[0] in repo.artifacts:
                return Response(200, repo.artifacts[found[0]].archive, content_type="application/zip")
        raise _Answer(self.not_found(request))

    def _rate_limit(self, request: Request) -> Response:
        budget = self._budget(request.identity)
        core = {"limit": budget.limit, "used": budget.used, "remaining": budget.remaining, "reset": budget.reset}
        later = self.clock.timestamp() + 3600
        fresh = {
            name: {"limit": limit, "used": 0, "remaining": limit, "reset": later}
            for name, limit in (("search", 30), ("integration_manifest", 5000),
                                ("source_import", 100), ("code_search", 10), ("dependency_snapshots", 100))
        }
        graphql = self._budget(request.identity, "graphql")
        fresh["graphql"] = {"limit": graphql.limit, "used": graphql.used, "remaining": graphql.remaining,
                            "reset": graphql.reset}
        return Response(200, {"resources": {"core": core, **fresh}, "rate": core})

    def _get_user(self, request: Request) -> Response:
        identity = request.identity
        if identity.kind == "anonymous":
            raise _Answer(self._error(401, "Requires authentication"))
        if identity.kind == "installation":
            raise _Answer(self._error(403, "Resource not accessible by integration"))
        user = self.state.add_user(identity.login)
        body = {
            **self._user(user.login),
            "name": user.name,
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "public_repos": sum(1 for r in self.state.repos.values() if r.owner.lower() == user.login.lower()),
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": iso(user.created_at),
            "updated_at": iso(user.created_at),
            "private_gists": 0,
            "total_private_repos": 0,
            "owned_private_repos": 0,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": False,
        }
        return Response(200, body, last_modified=user.created_at)

    def _installation_token(self, request: Request) -> Response:
        identity = request.identity
        try:
            installation_id = int(request.params["installation_id"])
            app_id, account = self._installations[installation_id]
        except (KeyError, ValueError):
            raise _Answer(self.not_found(request)) from None
        if app_id != identity.app_id:
            raise _Answer(self.not_found(request))
        body = self._body(request)
        held, _repositories = self._installation_access.get(installation_id, ({}, None))
        asked = body.get("permissions") or None  # none asked for: all the installation's
        if asked is not None and (not isinstance(asked, dict) or any(
                ACCESS.get(str(level), 99) > ACCESS[held.get(str(name), "none")] for name, level in asked.items())):
            raise _Answer(self._error(422, "The permissions requested are not granted to this installation."))
        token = "ghs_" + secrets.token_urlsafe(27).replace("-", "A").replace("_", "B")[:36]
        expires = self.clock.now() + timedelta(hours=1)
        login = f"{self._apps[app_id].slug}[bot]"
        self._tokens[token] = _Identity(login, "installation", None, installation_id, app_id, expires,
                                        permissions=_permissions(asked) if asked is not None else None)
        permissions = dict(asked) if asked is not None else dict(held)
        return Response(
            201,
            {"token": token, "expires_at": iso(expires), "permissions": permissions, "repository_selection": "all"},
        )


# ---------------------------------------------------------------------------
# Schemas

#: Operations the emulator serves that the refdata subset lacks. Transcribed by hand from
#: GitHub's description (github/rest-api-description): required fields only, with ``$ref``s
#: into the subset's own components.
_SIMPLE_COMMIT = {
    "type": "object",
    "required": ["id", "tree_id", "message", "timestamp", "author", "committer"],
    "properties": {
        "id": {"type": "string"},
        "tree_id": {"type": "string"},
        "message": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "author": {"type": "object", "nullable": True, "required": ["name", "email"]},
        "committer": {"type": "object", "nullable": True, "required": ["name", "email"]},
    },
}
_WORKFLOW_RUN = {
    "type": "object",
    "required": [
        "id", "node_id", "head_branch", "run_number", "display_title", "event", "status", "conclusion",
        "head_sha", "path", "workflow_id", "url", "html_url", "created_at", "updated_at", "head_commit",
        "head_repository", "repository", "jobs_url", "logs_url", "check_suite_url", "cancel_url", "rerun_url",
        "artifacts_url", "workflow_url", "pull_requests",
    ],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string", "nullable": True},
        "node_id": {"type": "string"},
        "head_branch": {"type": "string", "nullable": True},
        "head_sha": {"type": "string"},
        "path": {"type": "string"},
        "run_number": {"type": "integer"},
        "event": {"type": "string"},
        "status": {"type": "string", "nullable": True},
        "conclusion": {"type": "string", "nullable": True},
        "workflow_id": {"type": "integer"},
        "url": {"type": "string"},
        "html_url": {"type": "string"},
        "pull_requests": {
            "type": "array", "nullable": True, "items": {"$ref": "#/components/schemas/pull-request-minimal"}
        },
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "actor": {"$ref": "#/components/schemas/simple-user"},
        "triggering_actor": {"$ref": "#/components/schemas/simple-user"},
        "head_commit": {**_SIMPLE_COMMIT, "nullable": True},
        "repository": {"$ref": "#/components/schemas/minimal-repository"},
        "head_repository": {"$ref": "#/components/schemas/minimal-repository"},
        "display_title": {"type": "string"},
    },
}
_WORKFLOW = {
    "type": "object",
    "required": [
        "id", "node_id", "name", "path", "state", "url", "html_url", "badge_url", "created_at", "updated_at"
    ],
    "properties": {
        "id": {"type": "integer"},
        "state": {
            "type": "string",
            "enum": ["active", "deleted", "disabled_fork", "disabled_inactivity", "disabled_manually"],
        },
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_DIFF_ENTRY = {
    "type": "object",
    "required": [
        "sha", "filename", "status", "additions", "deletions", "changes", "blob_url", "raw_url", "contents_url"
    ],
    "properties": {
        "status": {
            "type": "string",
            "enum": ["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"],
        },
        "additions": {"type": "integer"},
        "deletions": {"type": "integer"},
        "changes": {"type": "integer"},
        "blob_url": {"type": "string", "format": "uri"},
        "raw_url": {"type": "string", "format": "uri"},
        "contents_url": {"type": "string", "format": "uri"},
    },
}
_ARTIFACT = {
    "type": "object",
    "required": [
        "id", "node_id", "name", "size_in_bytes", "url", "archive_download_url", "expired", "created_at",
        "expires_at", "updated_at",
    ],
    "properties": {
        "id": {"type": "integer"},
        "node_id": {"type": "string"},
        "name": {"type": "string"},
        "size_in_bytes": {"type": "integer"},
        "url": {"type": "string"},
        "archive_download_url": {"type": "string"},
        "expired": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time", "nullable": True},
        "expires_at": {"type": "string", "format": "date-time", "nullable": True},
        "updated_at": {"type": "string", "format": "date-time", "nullable": True},
        "digest": {"type": "string", "nullable": True},
        "workflow_run": {
            "type": "object", "nullable": True,
            "properties": {"id": {"type": "integer"}, "repository_id": {"type": "integer"},
                           "head_repository_id": {"type": "integer"}, "head_branch": {"type": "string"},
                           "head_sha": {"type": "string"}},
        },
    },
}
_GIT_PERSON = {"type": "object", "nullable": True, "required": ["name", "email", "date"]}
_COMMIT = {
    "type": "object",
    "required": ["url", "sha", "node_id", "html_url", "comments_url", "commit", "author", "committer", "parents"],
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "html_url": {"type": "string", "format": "uri"},
        "commit": {
            "type": "object",
            "required": ["author", "committer", "comment_count", "message", "tree", "url"],
            "properties": {"author": _GIT_PERSON, "committer": _GIT_PERSON, "tree": {"required": ["sha", "url"]}},
        },
        "author": {"$ref": "#/components/schemas/nullable-simple-user"},
        "committer": {"$ref": "#/components/schemas/nullable-simple-user"},
        "parents": {"type": "array", "items": {"type": "object", "required": ["sha", "url"]}},
        "files": {"type": "array", "items": _DIFF_ENTRY},
    },
}


def _json_response(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": "transcribed", "content": {"application/json": {"schema": dict(schema)}}}


SUPPLEMENTARY_PATHS: dict[str, Any] = {
    "/repos/{owner}/{repo}/statuses/{sha}": {
        "get": {
            "operationId": "repos/list-commit-statuses-for-ref-legacy",
            "responses": {"200": _json_response({"type": "array", "items": {"$ref": "#/components/schemas/status"}})},
        },
    },
    "/repos/{owner}/{repo}/pulls/{pull_number}/files": {
        "get": {"operationId": "pulls/list-files",
                "responses": {"200": _json_response({"type": "array", "items": _DIFF_ENTRY})}},
    },
    "/repos/{owner}/{repo}/commits/{ref}": {
        "get": {"operationId": "repos/get-commit", "responses": {"200": _json_response(_COMMIT)}},
    },
    # "Lists a maximum of 250 commits for a pull request", paged by per_page (default 30, at most 100)
    # and page, with a Link header; each item GitHub's ``commit`` schema, which the subset lacks (as
    # for repos/get-commit above), so the transcribed ``_COMMIT`` stands in for its $ref.
    "/repos/{owner}/{repo}/pulls/{pull_number}/commits": {
        "get": {
            "operationId": "pulls/list-commits",
            "responses": {"200": {**_json_response({"type": "array", "items": _COMMIT}),
                                  "headers": {"Link": {"$ref": "#/components/headers/link"}}}},
        },
    },
    "/repos/{owner}/{repo}/actions/workflows/{workflow_id}": {
        "get": {"operationId": "actions/get-workflow", "responses": {"200": _json_response(_WORKFLOW)}},
    },
    "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches": {
        "post": {
            "operationId": "actions/create-workflow-dispatch",
            "responses": {
                "204": {"description": "Response"},
                "200": _json_response({
                    "type": "object",
                    "required": ["workflow_run_id", "run_url", "html_url"],
                    "properties": {"workflow_run_id": {"type": "integer"},
                                   "run_url": {"type": "string", "format": "uri"},
                                   "html_url": {"type": "string", "format": "uri"}},
                }),
            },
        },
    },
    "/repos/{owner}/{repo}/actions/runs": {
        "get": {
            "operationId": "actions/list-workflow-runs-for-repo",
            "responses": {"200": _json_response({
                "type": "object",
                "required": ["total_count", "workflow_runs"],
                "properties": {"total_count": {"type": "integer"},
                               "workflow_runs": {"type": "array", "items": _WORKFLOW_RUN}},
            })},
        },
    },
}
SUPPLEMENTARY_PATHS["/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts"] = {
    "get": {
        "operationId": "actions/list-workflow-run-artifacts",
        "responses": {"200": _json_response({
            "type": "object",
            "required": ["total_count", "artifacts"],
            "properties": {"total_count": {"type": "integer"}, "artifacts": {"type": "array", "items": _ARTIFACT}},
        })},
    },
}
SUPPLEMENTARY_PATHS["/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}"] = {
    "get": {
        "operationId": "actions/download-artifact",
        "responses": {"302": {"description": "Response",
                              "headers": {"Location": {"example": "https://pipelines.actions.githubusercontent.com/...",
                                                       "schema": {"type": "string"}}}},
                      "410": {"$ref": "#/components/responses/gone"}},
    },
}

def _path_parameter(name: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind, **extra}}


def _query_parameter(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": dict(schema)}


_OWNER_REPO = [{"$ref": "#/components/parameters/owner"}, {"$ref": "#/components/parameters/repo"}]
_PAGED = [{"$ref": "#/components/parameters/per-page"}, {"$ref": "#/components/parameters/page"}]
#: the parameters (and the one request body) of the transcribed operations, from GitHub's description
SUPPLEMENTARY_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "repos/list-commit-statuses-for-ref-legacy": [*_OWNER_REPO, _path_parameter("sha"), *_PAGED],
    "pulls/list-files": [*_OWNER_REPO, {"$ref": "#/components/parameters/pull-number"}, *_PAGED],
    "repos/get-commit": [*_OWNER_REPO, *_PAGED, {"$ref": "#/components/parameters/commit-ref"}],
    "pulls/list-commits": [*_OWNER_REPO, {"$ref": "#/components/parameters/pull-number"}, *_PAGED],
    "actions/get-workflow": [*_OWNER_REPO, {"name": "workflow_id", "in": "path", "required": True,
                                            "schema": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}],
    "actions/create-workflow-dispatch": [*_OWNER_REPO, {"name": "workflow_id", "in": "path", "required": True,
                                                        "schema": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}],
    "actions/list-workflow-runs-for-repo": [
        *_OWNER_REPO, *(_query_parameter(n, {"type": "string"}) for n in ("actor", "branch", "event", "created", "head_sha")),
        _query_parameter("status", {"type": "string", "enum": [
            "completed", "action_required", "cancelled", "failure", "neutral", "skipped", "stale", "success",
            "timed_out", "in_progress", "queued", "requested", "waiting", "pending"]}),
        *_PAGED, _query_parameter("exclude_pull_requests", {"type": "boolean", "default": False}),
        _query_parameter("check_suite_id", {"type": "integer"})],
    "actions/list-workflow-run-artifacts": [
        *_OWNER_REPO, _path_parameter("run_id", "integer"), *_PAGED, _query_parameter("name", {"type": "string"}),
        _query_parameter("direction", {"type": "string", "enum": ["asc", "desc"]})],
    "actions/download-artifact": [*_OWNER_REPO, _path_parameter("artifact_id", "integer"),
                                  _path_parameter("archive_format")],
}
SUPPLEMENTARY_PATHS["/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches"]["post"]["requestBody"] = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["ref"],
        "properties": {"ref": {"type": "string"},
                       "inputs": {"type": "object", "maxProperties": 25, "additionalProperties": True},
                       "return_run_details": {"type": "boolean"}},
    }}},
}
for _operations in SUPPLEMENTARY_PATHS.values():
    for _operation in _operations.values():
        _operation.setdefault("parameters", SUPPLEMENTARY_PARAMETERS[_operation["operationId"]])

SUPPLEMENTARY_OPERATIONS = frozenset(
    (method.upper(), path) for path, ops in SUPPLEMENTARY_PATHS.items() for method in ops
)


def github_schemas(refdata: Path) -> OpenAPISchemas:
    """GitHub's REST description from ``refdata`` (``../shared/refdata``), plus the transcribed
    operations in ``SUPPLEMENTARY_PATHS`` that its subset lacks. The body of issues/add-labels is
    widened to what its own text says ("You can also pass an ``array`` of labels directly", as
    PyGithub does): its schema lists only the object form."""
    import json

    path = Path(refdata) / "github" / "openapi" / "api.github.com.subset.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    add_labels = document["paths"]["/repos/{owner}/{repo}/issues/{issue_number}/labels"]["post"]
    one_of = add_labels["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    one_of.append(dict(one_of[0]["properties"]["labels"]))  # the same array, not wrapped in an object
    return OpenAPISchemas(document, extra_paths=SUPPLEMENTARY_PATHS)


# ---------------------------------------------------------------------------
# GraphQL: Projects (ProjectV2)
#
# GitHub serves GraphQL at ``/graphql`` (GitHub Enterprise Server: ``/api/graphql``, beside
# ``/api/v3``, where PyGithub's ``Requester.graphql_url`` points). Every document is validated
# against GitHub's published schema (``../shared/refdata/github/graphql/schema.validatable.graphql``)
# and then executed by graphql-core over the emulator's projects, so any query of the fields
# modelled here is answered in the shape the schema gives. An invalid document is answered as
# GitHub answers it (200 and ``errors``) and recorded in ``violations``, which fails the test.
#
# Errors come as GitHub sends them, with HTTP 200: ``{"data": {...: null}, "errors": [{"type":
# "NOT_FOUND", "path": [...], "locations": [...], "message": "Could not resolve to ..."}]}``; a
# classic token without the ``read:project`` scope (``project`` for mutations) gets
# ``INSUFFICIENT_SCOPES`` and no data ("Your token has not been granted the required scopes ...");
# a fine-grained token or App installation without the organization permission Projects
# (``organization_projects``) gets ``FORBIDDEN`` "Resource not accessible by integration".
#
# A GraphQL request is logged, and can be aimed at by a fault, as ``POST /graphql`` with its
# top-level fields as the query (``?fields=updateProjectV2ItemFieldValue``):
# ``faults.add(r"POST /graphql\?fields=addProjectV2ItemById", "lost_response")``.

GRAPHQL_PATH = "/api/graphql"
GRAPHQL_ROUTE = "/graphql"
#: fields that read or write projects, and the classic scopes each needs (``project`` implies ``read:project``)
_PROJECT_READS = frozenset({"projectV2", "projectsV2", "projectItems", "projectV2Item", "project"})  # "project": an item's, read by node(id:)
_PROJECT_WRITES = frozenset({"addProjectV2ItemById", "updateProjectV2ItemFieldValue"})
_SCOPES_DOCS = "https://github.com/settings/tokens"


@functools.cache
def github_graphql_schema(refdata: Path) -> Any:
    """GitHub's GraphQL schema from ``refdata``, built once per process (it takes seconds).

    The published file as graphql-core accepts it: ``schema.validatable.graphql`` (its SOURCE.txt)."""
    from graphql import build_schema

    path = Path(refdata) / "github" / "graphql" / "schema.validatable.graphql"
    return build_schema(path.read_text(encoding="utf-8"))


@dataclass
class ProjectFieldV2:
    id: str
    name: str
    data_type: str  # ProjectV2FieldType: TEXT, SINGLE_SELECT, NUMBER, DATE, ...
    options: dict[str, str] = field(default_factory=dict)  # option id -> name, in order


@dataclass
class ProjectItemV2:
    id: str
    repo: str  # "owner/name"
    number: int
    values: dict[str, str] = field(default_factory=dict)  # field id -> option id (single select) or text
    archived: bool = False
    #: (field name, value as shown, who) for every change, the bot's and people's
    history: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class ProjectV2:
    id: str
    owner: str
    owner_kind: str  # "organization" or "user"
    number: int
    title: str
    fields: dict[str, ProjectFieldV2] = field(default_factory=dict)  # id -> field, in order
    items: dict[str, ProjectItemV2] = field(default_factory=dict)  # id -> item

    def field_named(self, name: str) -> ProjectFieldV2:
        for candidate in self.fields.values():
            if candidate.name.casefold() == name.casefold():
                return candidate
        raise KeyError(f"project {self.owner}/{self.number} has no field {name!r}")

    def item_for(self, repo: str, number: int) -> ProjectItemV2 | None:
        return next((item for item in self.items.values()
                     if item.repo.lower() == repo.lower() and item.number == number), None)

    def shown(self, item: ProjectItemV2, name: str) -> str | None:
        """The value of the field ``name`` on ``item`` as people see it (an option's name, a text)."""
        project_field = self.field_named(name)
        value = item.values.get(project_field.id)
        return project_field.options.get(value, value) if value is not None else None


class _GraphQLFault(Exception):
    """An error GitHub reports in ``errors`` with its ``type``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class GitHubGraphQL:
    """The ``POST /graphql`` endpoint of a ``GitHubEmulator`` and the projects it serves (``emulator.graphql``).

    Without ``schema`` (``github_graphql_schema(refdata)``), every GraphQL request is answered 500
    with what to pass: there is nothing to validate or execute against."""

    _DEFAULT_STATUS = ("Todo", "In progress", "In review", "Done")

    def __init__(self, emulator: GitHubEmulator, schema: Any = None) -> None:
        self.emulator, self.schema = emulator, schema
        self.projects: dict[str, ProjectV2] = {}  # id -> project
        self.documents: list[str] = []  # every document received, in order
        self._ids = itertools.count(1)

    # -- setting up and reading back

    def add_project(self, owner: str, number: int, *, kind: str = "organization", title: str = "Model work",
                    status: Sequence[str] | None = _DEFAULT_STATUS,
                    fields: Mapping[str, Sequence[str] | None] | None = None) -> ProjectV2:
        """A project of ``owner`` (an organization or a user) with a single-select Status field of
        ``status`` (None: no Status field) and ``fields``: name -> options (single select) or None (text)."""
        if kind not in ("organization", "user"):
            raise ValueError("kind is 'organization' or 'user'")
        with self.emulator.lock:
            self.emulator.state.add_user(owner, type="Organization" if kind == "organization" else "User")
            project = ProjectV2(self._node("ProjectV2"), owner, kind, number, title)
            self._add_field(project, "Title", None)
            if status is not None:
                self._add_field(project, "Status", status)
            for name, options in (fields or {}).items():
                self._add_field(project, name, options)
            self.projects[project.id] = project
            return project

    def project(self, owner: str, number: int) -> ProjectV2:
        for project in self.projects.values():
            if project.owner.lower() == owner.lower() and project.number == number:
                return project
        raise KeyError(f"no project {owner}/{number} in the emulator")

    def card(self, owner: str, number: int, repo: str, issue_number: int) -> ProjectItemV2 | None:
        return self.project(owner, number).item_for(repo, issue_number)

    def card_delivery(self, owner: str, number: int, repo: str, issue_number: int, name: str, *,
                      sender: str) -> tuple[str, dict[str, Any]]:
        """What GitHub sends for ``sender``'s edit of the field ``name`` of an issue's card: (event,
        payload), shaped as ../shared/refdata/github/webhooks/examples/api.github.com/projects_v2_item/
        edited.payload.json, which names the item and the field but not the new value."""
        emulator = self.emulator
        with emulator.lock:
            project = self.project(owner, number)
            item = project.item_for(repo, issue_number)
            if item is None:
                raise KeyError(f"{repo}#{issue_number} is not on project {owner}/{number}")
            held = emulator.state.find_repo(*repo.split("/", 1))
            issue = held.issues[issue_number]
            account = emulator.state.add_user(owner)
            now = iso(emulator.clock.now())
            payload = {
                "action": "edited",
                "projects_v2_item": {
                    "id": int(base64.b64decode(item.id).decode().removeprefix(f"0{len('ProjectV2Item')}:ProjectV2Item")),
                    "node_id": item.id, "project_node_id": project.id, "content_node_id": _node_id("Issue", issue.id),
                    "content_type": "Issue", "creator": emulator._user(emulator.login), "created_at": now,
                    "updated_at": now, "archived_at": None,
                },
                "changes": {"field_value": {"field_node_id": project.field_named(name).id,
                                            "field_type": project.field_named(name).data_type.lower()}},
                "organization": {"login": account.login, "id": account.id,
                                 "node_id": _node_id("Organization", account.id),
                                 "url": emulator.api(f"/orgs/{account.login}"),
                                 "repos_url": emulator.api(f"/orgs/{account.login}/repos"), "description": ""},
                "sender": emulator._user(sender),
            }
        return "projects_v2_item", payload

    def set_field(self, owner: str, number: int, repo: str, issue_number: int, name: str, value: str, *,
                  by: str = "alice") -> None:
        """A person sets a field of an issue's card, as in the project's web page."""
        with self.emulator.lock:
            project = self.project(owner, number)
            item = project.item_for(repo, issue_number)
            if item is None:
                raise KeyError(f"{repo}#{issue_number} is not on project {owner}/{number}")
            project_field = project.field_named(name)
            stored = next((option_id for option_id, option in project_field.options.items() if option == value), None)
            if project_field.data_type == "SINGLE_SELECT" and stored is None:
                raise KeyError(f"field {name!r} has no option {value!r}")
            item.values[project_field.id] = stored or value
            item.history.append((project_field.name, value, by))

    def _node(self, kind: str) -> str:
        return _node_id(kind, next(self._ids))

    def _add_field(self, project: ProjectV2, name: str, options: Sequence[str] | None) -> None:
        kind = "SINGLE_SELECT" if options is not None else "TEXT"
        field_id = self._node("ProjectV2SingleSelectField" if options is not None else "ProjectV2Field")
        project.fields[field_id] = ProjectFieldV2(field_id, name, kind,
                                                  {f"{next(self._ids):08x}": option for option in options or ()})

    # -- the endpoint

    @staticmethod
    def top_fields(body: bytes) -> str:
        """The top-level fields of a GraphQL request body, comma-separated ("" when unreadable)."""
        from graphql import GraphQLError, OperationDefinitionNode, parse

        try:
            document = parse(json.loads(body or b"{}").get("query") or "")
        except (GraphQLError, ValueError, AttributeError, TypeError):
            return ""
        names: list[str] = []
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                names += [selection.name.value for selection in definition.selection_set.selections
                          if hasattr(selection, "name")]
        return ",".join(names)

    def answer(self, request: Request) -> Response:
        from graphql import GraphQLError, graphql_sync, parse, validate

        if self.schema is None:
            return Response(500, {"message": "the emulator was started without GitHub's GraphQL schema: pass "
                                             "graphql_schema=github_graphql_schema(refdata)"})
        try:
            body = request.json() or {}
            source, variables = body["query"], body.get("variables") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            return Response(400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
        self.documents.append(source)
        try:
            document = parse(source)
        except GraphQLError as error:
            return self._invalid([error])
        invalid = validate(self.schema, document)
        if invalid:
            return self._invalid(invalid)
        refused = self._refused(document, request.identity)
        if refused is not None:
            return Response(200, {"errors": [refused]})
        result = graphql_sync(self.schema, source, root_value=self._root(), variable_values=variables,
                              operation_name=body.get("operationName"))
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            out["errors"] = [self._error_json(error) for error in result.errors]
        return Response(200, out)

    def _invalid(self, errors: Sequence[Any]) -> Response:
        messages = [error.message for error in errors]
        self.emulator.violations.append("POST /graphql: the document does not validate against GitHub's schema: "
                                        + "; ".join(messages))
        return Response(200, {"errors": [{"message": error.message, "locations": _locations(error)}
                                         for error in errors]})

    def _refused(self, document: Any, identity: Any) -> dict[str, Any] | None:
        """GitHub's error for a token or installation that may not touch projects, or None."""
        from graphql import FieldNode, visit
        from graphql.language import Visitor

        used: list[Any] = []

        class _Fields(Visitor):
            def enter_field(self, node: FieldNode, *_args: Any) -> None:
                if node.name.value in _PROJECT_READS | _PROJECT_WRITES:
                    used.append(node)

        visit(document, _Fields())
        if not used or not isinstance(identity, _Identity) or identity.kind in ("anonymous", "app"):
            return None
        writes = [node for node in used if node.name.value in _PROJECT_WRITES]
        first = (writes or used)[0]
        if not identity.fine_grained:
            held = set(identity.scopes or ())
            needed = ["project"] if writes else ["read:project"]
            if "project" in held or (not writes and "read:project" in held):
                return None
            return {"type": "INSUFFICIENT_SCOPES", "locations": _locations(first),
                    "message": f"Your token has not been granted the required scopes to execute this query. The "
                               f"'{first.name.value}' field requires one of the following scopes: {needed!r}, but "
                               f"your token has only been granted the: {sorted(held)!r} scopes. Please modify your "
                               f"token's scopes at: {_SCOPES_DOCS}."}
        permissions, _repositories = self.emulator._granted(identity)
        if ACCESS[permissions.get("organization_projects", "none")] >= ACCESS["write" if writes else "read"]:
            return None
        by = "integration" if identity.kind == "installation" else "personal access token"
        return {"type": "FORBIDDEN", "path": [first.name.value], "locations": _locations(first),
                "message": f"Resource not accessible by {by}"}

    @staticmethod
    def _error_json(error: Any) -> dict[str, Any]:
        original = error.original_error
        kind = original.kind if isinstance(original, _GraphQLFault) else "INTERNAL"
        return {"type": kind, "path": list(error.path or []), "locations": _locations(error),
                "message": error.message}

    # -- resolvers: dictionaries whose callables graphql-core calls with the field's arguments

    def _root(self) -> dict[str, Any]:
        return {
            "organization": lambda _info, login: self._owner(login, "organization"),
            "user": lambda _info, login: self._owner(login, "user"),
            "repositoryOwner": lambda _info, login: self._owner(login, None),
            "repository": lambda _info, owner, name, **_: self._repository(owner, name),
            "node": lambda _info, id: self._find_node(id),  # noqa: A006 - the schema's name
            "addProjectV2ItemById": lambda _info, input: self._add_item(input),  # noqa: A006 - the schema's name
            "updateProjectV2ItemFieldValue": lambda _info, input: self._update_field(input),  # noqa: A006
        }

    def _owner(self, login: str, kind: str | None) -> dict[str, Any] | None:
        user = self.emulator.state.users.get(login.lower())
        actual = None if user is None else ("organization" if user.type == "Organization" else "user")
        if actual is None or (kind is not None and actual != kind):
            if kind is None:
                return None  # repositoryOwner is null for an unknown login
            typename = "Organization" if kind == "organization" else "User"
            raise _GraphQLFault("NOT_FOUND", f"Could not resolve to an {typename} with the login of '{login}'."
                                if kind == "organization" else
                                f"Could not resolve to a {typename} with the login of '{login}'.")

        def project(_info: Any, number: int) -> dict[str, Any]:
            for candidate in self.projects.values():
                if candidate.owner.lower() == login.lower() and candidate.number == number:
                    return self._project_json(candidate)
            raise _GraphQLFault("NOT_FOUND", f"Could not resolve to a ProjectV2 with the number {number}.")

        return {"__typename": "Organization" if actual == "organization" else "User",
                "id": _node_id("Organization" if actual == "organization" else "User", user.id),
                "login": user.login, "projectV2": project}

    def _project_json(self, project: ProjectV2) -> dict[str, Any]:
        web = "orgs" if project.owner_kind == "organization" else "users"
        return {
            "__typename": "ProjectV2", "id": project.id, "number": project.number, "title": project.title,
            "url": self.emulator.web(f"/{web}/{project.owner}/projects/{project.number}"), "closed": False,
            "fields": lambda _info, first=None, **_: _connection(
                [self._field_json(f) for f in project.fields.values()], first),
        }

    @staticmethod
    def _field_json(project_field: ProjectFieldV2) -> dict[str, Any]:
        single = project_field.data_type == "SINGLE_SELECT"
        return {
            "__typename": "ProjectV2SingleSelectField" if single else "ProjectV2Field",
            "id": project_field.id, "name": project_field.name, "dataType": project_field.data_type,
            **({"options": [{"id": option_id, "name": name, "nameHTML": name}
                            for option_id, name in project_field.options.items()]} if single else {}),
        }

    def _repository(self, owner: str, name: str) -> dict[str, Any]:
        repo = self.emulator.state.find_repo(owner, name)
        if repo is None:
            raise _GraphQLFault("NOT_FOUND", f"Could not resolve to a Repository with the name '{owner}/{name}'.")

        def issue(_info: Any, number: int) -> dict[str, Any]:
            found = repo.issues.get(number)
            if found is None or found.is_pull:
                raise _GraphQLFault("NOT_FOUND", f"Could not resolve to an Issue with the number of {number}.")
            return self._issue_json(repo, found)

        return {"__typename": "Repository", "id": _node_id("Repository", repo.id), "name": repo.name, "issue": issue}

    def _issue_json(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        def items(_info: Any, first: int | None = None, includeArchived: bool = True, **_: Any) -> dict[str, Any]:  # noqa: N803
            found = [(project, item) for project in self.projects.values() for item in project.items.values()
                     if item.repo.lower() == repo.full_name.lower() and item.number == issue.number
                     and (includeArchived or not item.archived)]
            return _connection([self._item_json(project, item) for project, item in found], first)

        return {"__typename": "Issue", "id": _node_id("Issue", issue.id), "number": issue.number,
                "title": issue.title, "projectItems": items,
                "repository": {"__typename": "Repository", "id": _node_id("Repository", repo.id), "name": repo.name,
                               "nameWithOwner": repo.full_name}}

    def _item_json(self, project: ProjectV2, item: ProjectItemV2) -> dict[str, Any]:
        def value_json(field_id: str) -> dict[str, Any] | None:
            project_field, value = project.fields[field_id], item.values.get(field_id)
            if value is None:
                return None
            if project_field.data_type == "SINGLE_SELECT":
                return {"__typename": "ProjectV2ItemFieldSingleSelectValue", "id": f"{item.id}:{field_id}",
                        "name": project_field.options.get(value), "optionId": value,
                        "field": self._field_json(project_field)}
            return {"__typename": "ProjectV2ItemFieldTextValue", "id": f"{item.id}:{field_id}", "text": value,
                    "field": self._field_json(project_field)}

        def by_name(_info: Any, name: str) -> dict[str, Any] | None:
            matching = [f for f in project.fields.values() if f.name == name]
            return value_json(matching[0].id) if matching else None

        def content(_info: Any) -> dict[str, Any] | None:
            repo = self.emulator.state.find_repo(*item.repo.split("/", 1))
            issue = repo.issues.get(item.number) if repo is not None else None
            return self._issue_json(repo, issue) if issue is not None else None

        return {
            "__typename": "ProjectV2Item", "id": item.id, "isArchived": item.archived, "type": "ISSUE",
            "project": self._project_json(project), "content": content,
            "fieldValues": lambda _info, first=None, **_: _connection(
                [v for v in (value_json(field_id) for field_id in project.fields) if v is not None], first),
            "fieldValueByName": by_name,
        }

    def _find_node(self, node_id: str) -> dict[str, Any]:
        """``node(id:)`` for a project's item (the only node the bot asks for by id)."""
        for project in self.projects.values():
            if node_id in project.items:
                return self._item_json(project, project.items[node_id])
        raise _GraphQLFault("NOT_FOUND", f"Could not resolve to a node with the global id of '{node_id}'")

    def _find_project(self, project_id: str) -> ProjectV2:
        project = self.projects.get(project_id)
        if project is None:
            raise _GraphQLFault("NOT_FOUND", f"Could not resolve to a node with the global id of '{project_id}'")
        return project

    def _add_item(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Adds the issue to the project; an issue already there answers with its item (GitHub's
        "If the item already exists, the existing item's ID is returned")."""
        project = self._find_project(given["projectId"])
        content = self._issue_by_node(given["contentId"])
        if content is None:
            raise _GraphQLFault("NOT_FOUND", f"Could not resolve to a node with the global id of '{given['contentId']}'")
        repo, issue = content
        item = project.item_for(repo.full_name, issue.number)
        if item is None:
            item = ProjectItemV2(self._node("ProjectV2Item"), repo.full_name, issue.number)
            project.items[item.id] = item
        return {"clientMutationId": given.get("clientMutationId"), "item": self._item_json(project, item)}

    def _update_field(self, given: Mapping[str, Any]) -> dict[str, Any]:
        project = self._find_project(given["projectId"])
        item = project.items.get(given["itemId"])
        project_field = project.fields.get(given["fieldId"])
        if item is None or project_field is None:
            missing = given["itemId"] if item is None else given["fieldId"]
            raise _GraphQLFault("NOT_FOUND", f"Could not resolve to a node with the global id of '{missing}'")
        value = given["value"] or {}
        if project_field.data_type == "SINGLE_SELECT":
            option = value.get("singleSelectOptionId")
            if option not in project_field.options:
                raise _GraphQLFault("UNPROCESSABLE", "The single select option Id does not belong to the field")
            item.values[project_field.id] = option
            shown = project_field.options[option]
        elif project_field.data_type == "TEXT" and isinstance(value.get("text"), str):
            item.values[project_field.id] = shown = value["text"]
        else:
            raise _GraphQLFault("UNPROCESSABLE", f"Did not receive a value of the type of the field "
                                                 f"{project_field.name} ({project_field.data_type.lower()})")
        item.history.append((project_field.name, shown, self.emulator.login))
        return {"clientMutationId": given.get("clientMutationId"), "projectV2Item": self._item_json(project, item)}

    def _issue_by_node(self, node_id: str) -> tuple[Repo, Issue] | None:
        try:
            decoded = base64.b64decode(node_id).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not decoded.startswith("05:Issue"):
            return None
        number = decoded.removeprefix("05:Issue")
        for repo in self.emulator.state.repos.values():
            for issue in repo.issues.values():
                if str(issue.id) == number and not issue.is_pull:
                    return repo, issue
        return None


def _connection(nodes: list[Any], first: int | None) -> dict[str, Any]:
    shown = nodes[:first] if first is not None else nodes
    return {"nodes": shown, "totalCount": len(nodes),
            "pageInfo": {"hasNextPage": len(shown) < len(nodes), "hasPreviousPage": False,
                         "startCursor": None, "endCursor": None}}


def _locations(error_or_node: Any) -> list[dict[str, int]]:
    locations = getattr(error_or_node, "locations", None)
    if locations:
        return [{"line": location.line, "column": location.column} for location in locations]
    loc = getattr(error_or_node, "loc", None)
    if loc is not None and loc.source is not None:
        from graphql import get_location

        where = get_location(loc.source, loc.start)
        return [{"line": where.line, "column": where.column}]
    return []


# ---------------------------------------------------------------------------
# Running by hand


def seed(emulator: GitHubEmulator) -> None:
    """A small world: acme/model with collaborators, labels, an issue, pull requests, a workflow."""
    state = emulator.state
    repo = "acme/model"
    state.add_repo(repo, description="A model whose lifecycle the bot runs")
    state.add_collaborator(repo, "alice", "admin")
    state.add_collaborator(repo, "bob", "write")
    state.add_collaborator(repo, "carol", "triage")
    state.add_collaborator(repo, emulator.login, "write")
    state.add_label(repo, "retrain", color="0e8a16", description="Retrain the model")
    state.add_label(repo, "drift", color="d93f0b", description="Data drift detected")
    issue = state.open_issue(repo, "Drift on feature mean_radius", "PSI 0.31 over the last week", "alice",
                             labels=["drift"])
    state.add_comment(repo, issue, "bob", "/retrain")
    pull = state.open_pull(repo, "Add a feature", "Adds mean_area.", "bob",
                           files=["features.py", {"filename": "mlops.toml", "additions": 3, "deletions": 1}])
    state.add_comment(repo, pull, "alice", "/validate")
    merged = state.open_pull(repo, "Tune the forest", "", "alice", files=["train.py"])
    state.merge_pull(repo, merged)
    state.add_workflow(repo, "train.yml", name="Train")



def _resource(path: str) -> str:
    """The rate-limit resource a request is charged to: GraphQL's budget is its own."""
    return "graphql" if path == "/graphql" else "core"


def _budget_name(key: str, resource: str) -> str:
    return key if resource == "core" else f"{key}:{resource}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local GitHub emulator until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--login", default="mlops-bot[bot]")
    parser.add_argument("--rate-limit", type=int, default=5000)
    args = parser.parse_args(argv)
    emulator = GitHubEmulator(
        host=args.host, port=args.port, token=args.token, login=args.login, rate_limit=args.rate_limit
    )
    seed(emulator)
    emulator.start()
    print(f"GitHub emulator at {emulator.base_url} (token {args.token!r}); Ctrl-C to stop", flush=True)
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
