"""A local emulator of the parts of Azure DevOps' REST API the bot uses.

Point the real ``azure-devops`` client at it::

    with AzureDevOpsEmulator() as ado:
        ado.state.add_project("proj")
        conn = Connection(base_url=ado.base_url, creds=BasicAuthentication("", ado.pat))
        wit = conn.clients_v7_1.get_work_item_tracking_client()

It serves one organization at ``http://127.0.0.1:PORT/{organization}``. The client's first-use
discovery is answered as the service does: ``OPTIONS {org}/_apis`` lists the resource locations
(id, area, resourceName, routeTemplate, versions) of every call the bot makes, ResourceAreas
``e81700f7-...`` among them, and ``GET {org}/_apis/ResourceAreas`` lists the areas served at the
organization's URL (``RESOURCE_AREAS``), each at the emulator's, so every client stays on it. Bodies follow the 7.1 specs and examples in
``../shared/refdata/azure-devops/`` (``azure_devops_schemas()`` loads the specs for checking); lists
come wrapped as ``{"count": n, "value": [...]}``; every URL is absolute on the emulator's host.
Lists of pull requests are as the service gives them: newest created first, 101 unless ``$top``
says, paged by ``$skip``, descriptions cut to 400 symbols (read one by id for the whole).

Authentication is Basic with a personal access token (any user name, the PAT as password).
Failures answer with the service's error body (``$id``, ``message``, ``typeKey``...), which the
client turns into ``AzureDevOpsServiceError``. Faults are the framework's; ``"429"`` and ``"503"``
carry ``Retry-After``. The client retries a GET on 429/503 but not a POST or PATCH.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .framework import Clock, FaultRule, HttpEmulator, OpenAPISchemas, Request, Response, iso, parse_iso

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_PULLS_TOP",
    "FULL_ACCESS",
    "IMPLIED_SCOPES",
    "LISTED_DESCRIPTION_LIMIT",
    "LOCATIONS",
    "PROCESS_STATES",
    "RESOURCE_AREAS",
    "ROUTE_SCOPES",
    "STATE_CATEGORY_COLORS",
    "TYPE_STATES",
    "AzureDevOpsEmulator",
    "AzureDevOpsState",
    "azure_devops_schemas",
]

RESOURCE_AREAS_ID = "e81700f7-3be2-46de-8624-2eb35882fcaa"

#: id -> (area, resourceName, routeTemplate, maxVersion, resourceVersion), as the client reads them
#: from ``OPTIONS {org}/_apis``; the templates produce the paths of Microsoft's 7.1 specs.
LOCATIONS: dict[str, tuple[str, str, str, str, int]] = {
    RESOURCE_AREAS_ID: ("Location", "ResourceAreas", "_apis/{resource}/{areaId}", "7.1", 1),
    # work item tracking
    "62d3d110-0047-428c-ad3c-4fe872c91c74": ("wit", "workItems", "{project}/_apis/wit/workitems/${type}", "7.1", 3),
    "72c7ddf8-2cdc-4f60-90cd-ab71c14a399b": ("wit", "workItems", "{project}/_apis/wit/workitems/{id}", "7.1", 3),
    "1a9c53f7-f243-4447-b110-35ef023636e4": ("wit", "wiql", "{project}/{team}/_apis/wit/wiql/{id}", "7.1", 2),
    "608aac0a-32e1-4493-a863-b9cf4566d257": (
        "wit", "comments", "{project}/_apis/wit/workItems/{workItemId}/comments/{commentId}", "7.1", 4),
    # work (team settings)
    "c9175577-28a1-4b06-9197-8636af9f64ad": (
        "work", "iterations", "{project}/{team}/_apis/work/teamsettings/iterations/{id}", "7.1", 1),
    # git
    "9946fd70-0d40-406e-b686-b4744cbbcc37": (
        "git", "pullRequests", "{project}/_apis/git/repositories/{repositoryId}/pullrequests/{pullRequestId}",
        "7.1", 1),
    "ab6e2e5d-a0b7-4153-b64a-a4efe0d49449": (
        "git", "pullRequestThreads",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/threads/{threadId}", "7.1", 1),
    "965a3ec7-5ed8-455a-bdcb-835a5ea7fe7b": (
        "git", "pullRequestThreadComments",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/threads/{threadId}"
        "/comments/{commentId}", "7.1", 1),
    "b5f6bb4f-8d1e-4d79-8d11-4c9172c99c35": (
        "git", "pullRequestStatuses",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/statuses/{statusId}",
        "7.1", 1),
    "0a637fcc-5370-4ce8-b0e8-98091f5f9482": (
        "git", "pullRequestWorkItems",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/workitems", "7.1", 1),
    "428dd4fb-fda5-4722-af02-9313b80305da": (
        "git", "statuses", "{project}/_apis/git/repositories/{repositoryId}/commits/{commitId}/statuses",
        "7.1", 1),
    "225f7195-f9c7-4d14-ab28-a83f7ff77e1f": (
        "git", "repositories", "{project}/_apis/git/repositories/{repositoryId}", "7.1", 1),
    "5f2e2851-1389-425b-a00b-fb2adb3ef31b": (
        "git", "pullRequestCommentLikes",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/threads/{threadId}"
        "/comments/{commentId}/likes", "7.1", 1),
    "d43911ee-6958-46b0-a42b-8445b8a0d004": (
        "git", "pullRequestIterations",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/iterations/{iterationId}",
        "7.1", 2),
    "4216bdcf-b6b1-4d59-8b82-c34cc183fc8b": (
        "git", "pullRequestIterationChanges",
        "{project}/_apis/git/repositories/{repositoryId}/pullRequests/{pullRequestId}/iterations/{iterationId}"
        "/changes", "7.1", 1),
    # work item types and classification nodes (what ``mlops-bot doctor`` checks)
    "7c8d7a76-4a09-43e8-b5df-bd792f4ac6aa": ("wit", "workItemTypes", "{project}/_apis/wit/workitemtypes/{type}",
                                             "7.1", 2),
    # a work item type's states and their categories (where the retrain episode's stages put a work item)
    "7c9d7a76-4a09-43e8-b5df-bd792f4ac6aa": ("wit", "workItemTypeStates",
                                             "{project}/_apis/wit/workitemtypes/{type}/states", "7.1", 1),
    "5a172953-1b41-49d3-840a-33f79c3ce89f": (
        "wit", "classificationNodes", "{project}/_apis/wit/classificationnodes/{structureGroup}/{*path}", "7.1", 2),
    # location: who the token belongs to
    "00d9565f-ed9c-4a06-9a50-00e7896ccab4": ("Location", "ConnectionData", "_apis/connectionData", "7.1", 1),
    # pipelines
    "28e1305e-2afe-47bf-abaf-cbb0e6a91988": ("pipelines", "pipelines", "{project}/_apis/pipelines/{pipelineId}",
                                             "7.1", 1),
    "7859261e-d2e9-4a68-b820-a5d84cc5bb3d": ("pipelines", "runs", "{project}/_apis/pipelines/{pipelineId}/runs/{runId}",
                                             "7.1", 1),
}

#: a state category (what boards and backlogs make of a state) -> the colour the service gives its states
STATE_CATEGORY_COLORS: dict[str, str] = {"Proposed": "b2b2b2", "InProgress": "007acc", "Resolved": "ff9d00",
                                         "Completed": "339933", "Removed": "ffffff"}


def _workflow(*states: str) -> tuple[tuple[str, str], ...]:
    """``"New:Proposed"``, ... as (state, category) pairs, in the order the service lists them."""
    return tuple(tuple(state.split(":")) for state in states)  # type: ignore[misc]


_AGILE_BUG = _workflow("New:Proposed", "Active:InProgress", "Resolved:Resolved", "Closed:Completed")
_AGILE_PORTFOLIO = _workflow("New:Proposed", "Active:InProgress", "Resolved:Resolved", "Closed:Completed",
                             "Removed:Removed")
_SCRUM_BACKLOG = _workflow("New:Proposed", "Approved:Proposed", "Committed:InProgress", "Done:Completed",
                           "Removed:Removed")
_CMMI_WORK = _workflow("Proposed:Proposed", "Active:InProgress", "Resolved:InProgress", "Closed:Completed",
                       "Removed:Removed")
_CMMI_BUG = _workflow("Proposed:Proposed", "Active:InProgress", "Resolved:Resolved", "Closed:Completed")
_BASIC = _workflow("To Do:Proposed", "Doing:InProgress", "Done:Completed")
#: process -> work item type -> its states with their categories, in the service's order (the first is
#: where a new work item starts), as the four system processes define them: Microsoft's "workflow states
#: and state categories" (Resolved is a Resolved-category state only for Agile's Bug, Epic and Feature and
#: CMMI's Bug, Issue, Review and Risk; CMMI's Requirement and Task keep it In Progress; Scrum and Basic
#: have none), and a recorded answer for Agile's Bug (its four states, no Removed).
TYPE_STATES: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "Basic": {"Epic": _BASIC, "Issue": _BASIC, "Task": _BASIC},
    "Agile": {
        "Epic": _AGILE_PORTFOLIO, "Feature": _AGILE_PORTFOLIO,
        "User Story": _workflow("New:Proposed", "Active:InProgress", "Resolved:InProgress", "Closed:Completed",
                                "Removed:Removed"),
        "Task": _workflow("New:Proposed", "Active:InProgress", "Closed:Completed", "Removed:Removed"),
        "Bug": _AGILE_BUG,
        "Issue": _workflow("Active:InProgress", "Closed:Completed"),
    },
    "Scrum": {
        "Epic": _SCRUM_BACKLOG, "Feature": _SCRUM_BACKLOG, "Product Backlog Item": _SCRUM_BACKLOG,
        "Bug": _SCRUM_BACKLOG,
        "Task": _workflow("To Do:Proposed", "In Progress:InProgress", "Done:Completed", "Removed:Removed"),
        "Impediment": _workflow("Open:InProgress", "Closed:Completed"),
    },
    "CMMI": {
        "Epic": _CMMI_WORK, "Feature": _CMMI_WORK, "Requirement": _CMMI_WORK, "Task": _CMMI_WORK,
        "Bug": _CMMI_BUG, "Issue": _CMMI_BUG, "Risk": _CMMI_BUG, "Review": _CMMI_BUG, "Change Request": _CMMI_WORK,
    },
}
#: process -> the work item types its projects have
PROCESS_TYPES: dict[str, tuple[str, ...]] = {process: tuple(types) for process, types in TYPE_STATES.items()}
#: process -> (every state of its types, in order, and those that are done: Completed or Removed)
PROCESS_STATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    process: (tuple(dict.fromkeys(name for states in types.values() for name, _ in states)),
              tuple(dict.fromkeys(name for states in types.values() for name, category in states
                                  if category in ("Completed", "Removed"))))
    for process, types in TYPE_STATES.items()
}
#: route name (the 7.1 specs' operationId) -> the PAT scopes that open it, any one of them, as each
#: operation's ``security`` in ``../shared/refdata/azure-devops/specs/`` lists them (the specs write
#: "any of" as one list); Iterations_List is from the Work spec, not in the reference data. Routes
#: not here (discovery, ConnectionData) need only a valid PAT.
ROUTE_SCOPES: dict[str, tuple[str, ...]] = {
    "Work Items_Create": ("vso.work_write",),
    "Work Items_Get Work Item": ("vso.work",),
    "Work Items_Update": ("vso.work_write",),
    "Work Items_List": ("vso.work",),
    "Wiql_Query By Wiql (project)": ("vso.work",),
    "Wiql_Query By Wiql": ("vso.work",),
    "Comments_Add Comment": ("vso.work_write",),
    "Comments_Get Comments Batch": ("vso.work",),
    "Iterations_List": ("vso.work",),
    "Work Item Types_Get": ("vso.work",),
    "Work Item Types_List": ("vso.work",),
    "Work Item Type States_List": ("vso.work",),
    "Classification Nodes_Get (root)": ("vso.work",),
    "Classification Nodes_Get": ("vso.work",),
    "Pull Requests_Get Pull Requests": ("vso.code",),
    "Pull Requests_Get Pull Request": ("vso.code",),
    "Pull Request Threads_List": ("vso.code", "vso.threads_full"),
    "Pull Request Threads_Create": ("vso.code_write", "vso.threads_full"),
    "Pull Request Thread Comments_Create": ("vso.code_write", "vso.threads_full"),
    "Pull Request Thread Comments_Update": ("vso.code_write", "vso.threads_full"),
    "Pull Request Statuses_Create": ("vso.code_write", "vso.code_status"),
    "Pull Request Statuses_List": ("vso.code", "vso.code_status"),
    "Pull Request Work Items_List": ("vso.code",),
    "Pull Request Comment Likes_Create": ("vso.code_write", "vso.threads_full"),
    "Pull Request Comment Likes_List": ("vso.code", "vso.threads_full"),
    "Pull Request Iterations_List": ("vso.code",),
    "Pull Request Iteration Changes_Get": ("vso.code",),
    "Repositories_Get Repository": ("vso.code",),
    "Statuses_Create": ("vso.code_write", "vso.code_status"),
    "Statuses_List": ("vso.code", "vso.code_status"),
    "Pipelines_Get": ("vso.build",),
    "Runs_Run Pipeline": ("vso.build_execute",),
    "Runs_List": ("vso.build",),
    "Runs_Get": ("vso.build",),
}
#: a scope and the narrower ones it includes ("vso.code_manage includes vso.code_write", as Microsoft's
#: scope list says); vso.code_status and vso.threads_full include nothing else
IMPLIED_SCOPES: dict[str, tuple[str, ...]] = {
    "vso.work_write": ("vso.work",), "vso.work_full": ("vso.work_write", "vso.work"),
    "vso.code_write": ("vso.code",), "vso.code_manage": ("vso.code_write", "vso.code"),
    "vso.code_full": ("vso.code_manage", "vso.code_write", "vso.code"),
    "vso.build_execute": ("vso.build",),
}
#: a "Full access" PAT: every route opens to it
FULL_ACCESS = "app_token"
#: what the emulator's own PAT holds unless told otherwise: all the bot uses, and no more
ALL_SCOPES = frozenset({"vso.work_write", "vso.code_write", "vso.code_status", "vso.build_execute"})
#: the fields Azure keeps as sanitized HTML
HTML_FIELDS = ("System.Description", "System.History", "Microsoft.VSTS.Common.AcceptanceCriteria",
               "Microsoft.VSTS.TCM.ReproSteps")
PR_ARTIFACT = "vstfs:///Git/PullRequestId/"
#: "description field will be truncated up to 400 symbols" in a list of pull requests (symbols: .NET's
#: UTF-16 code units); the pull request read by id carries all of it
LISTED_DESCRIPTION_LIMIT = 400
#: what a list of pull requests holds when ``$top`` is not given: the service answers 101 at most
DEFAULT_PULLS_TOP = 101
#: (id, name) of the resource areas ``GET {org}/_apis/ResourceAreas`` lists, as the service does for
#: the areas served at the organization's URL (https://dev.azure.com/{org}/); the client takes each
#: area client's base URL from here (and, for an id not listed, asks app.vssps.visualstudio.com)
RESOURCE_AREAS: tuple[tuple[str, str], ...] = (
    ("79134c72-4a58-4b42-976c-04e7115f32bf", "core"),
    ("5264459e-e5e0-4bd8-b118-0985e68a4ec5", "wit"),
    ("1d4f49f9-02b9-4e26-b826-2cdb6195f2a9", "work"),
    ("4e080c62-fa21-4fbc-8fef-2a10a2b38049", "git"),
    ("8aa40520-446d-40e6-89f6-9c9f9ce44c48", "tfvc"),
    ("965220d5-5bb9-42cf-8d67-9b146df2a5a4", "build"),
    ("fb13a388-40dd-4a04-b530-013a739c72ef", "policy"),
    ("31c84e0a-3ece-48fd-a29d-100849af99ba", "dashboard"),
    ("bf7d82a0-8aa5-4613-94ef-6172a5ea01f3", "wiki"),
    ("a85b8835-c1a1-4aac-ae97-1c3d0ba72dbd", "distributedtask"),
)
STATUS_STATES = ("notSet", "pending", "succeeded", "failed", "error", "notApplicable")


# ---------------------------------------------------------------------------
# The world


@dataclass
class Identity:
    id: str
    display_name: str
    unique_name: str


@dataclass
class WorkComment:
    id: int
    text: str
    author: str  # unique name
    created: datetime
    version: int = 1
    format: str = "html"


@dataclass
class WorkItem:
    id: int
    project: str
    fields: dict[str, Any]
    relations: list[dict[str, Any]] = field(default_factory=list)
    rev: int = 1
    comments: list[WorkComment] = field(default_factory=list)
    #: (state, who set it) for each state it has been in, from its creation on: the moves on its board
    state_history: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ThreadComment:
    id: int
    author: str
    content: str
    published: datetime
    parent: int = 0
    comment_type: str = "text"
    likes: list[str] = field(default_factory=list)  # unique names of who liked it


@dataclass
class Thread:
    id: int
    comments: list[ThreadComment]
    published: datetime
    updated: datetime
    status: str | None = "active"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class PullRequest:
    id: int
    repo: str  # repository id
    title: str
    description: str
    author: str
    created: datetime
    source: str
    target: str
    status: str = "active"
    closed: datetime | None = None
    merge_commit: str | None = None
    source_commit: str = ""
    target_commit: str = ""
    work_items: list[int] = field(default_factory=list)
    threads: dict[int, Thread] = field(default_factory=dict)
    iterations: list[list[dict[str, Any]]] = field(default_factory=list)  # each push: its change entries
    statuses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repository:
    id: str
    name: str
    project: str
    default_branch: str = "refs/heads/main"
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    commit_statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class PipelineRun:
    id: int
    pipeline: int
    name: str
    created: datetime
    template_parameters: dict[str, Any]
    variables: dict[str, Any]
    ref: str
    state: str = "inProgress"
    result: str | None = None
    finished: datetime | None = None


@dataclass
class Pipeline:
    id: int
    name: str
    project: str
    folder: str = "\\"
    runs: dict[int, PipelineRun] = field(default_factory=dict)
    name_parameter: str | None = "run_id"  # the YAML's ``name: ${{ parameters.run_id }}``


@dataclass
class Project:
    id: str
    name: str
    process: str = "Agile"
    teams: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # team -> iterations
    areas: set[str] = field(default_factory=set)  # area paths below the root, lower-case, "\\"-separated
    #: work item type -> its states as a process administrator changed them (an inherited process)
    custom_states: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


class AzureDevOpsState:
    """The emulator's world: projects, work items, repositories with pull requests, pipelines.
    Tests set it up and read it back through these helpers; every method takes the lock."""

    def __init__(self, clock: Clock, lock: Any) -> None:
        self.clock = clock
        self.lock = lock
        self.projects: dict[str, Project] = {}  # lower-case name -> project
        self.identities: dict[str, Identity] = {}  # lower-case unique name -> identity
        self.work_items: dict[int, WorkItem] = {}
        self.repos: dict[str, Repository] = {}  # id -> repository
        self.pipelines: dict[int, Pipeline] = {}
        self._ids = itertools.count(1)
        self._work_ids = itertools.count(101)
        self._pr_ids = itertools.count(1)
        self._run_ids = itertools.count(1001)
        self._shas = itertools.count(1)

    # -- helpers

    def _uuid(self, *parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "emulator:" + ":".join(parts)))

    def new_sha(self) -> str:
        import hashlib

        return hashlib.sha1(f"azure commit {next(self._shas)}".encode()).hexdigest()

    def identity(self, unique_name: str, display_name: str | None = None) -> Identity:
        with self.lock:
            key = unique_name.lower()
            if key not in self.identities:
                shown = display_name or unique_name.split("@")[0]
                self.identities[key] = Identity(self._uuid("identity", key), shown, unique_name)
            return self.identities[key]

    def project(self, name: str) -> Project:
        with self.lock:
            found = self.projects.get(name.lower())
            if found is None:
                raise KeyError(f"no project {name!r} in the emulator")
            return found

    def find_project(self, name_or_id: str) -> Project | None:
        key = name_or_id.lower()
        return self.projects.get(key) or next((p for p in self.projects.values() if p.id == key), None)

    # -- setting up the world

    def add_project(self, name: str, *, process: str = "Agile", team: str | None = None,
                    iteration: str = "Sprint 1") -> Project:
        """A project with one team (``{name} Team``) whose current iteration is ``iteration``."""
        if process not in PROCESS_STATES:
            raise ValueError(f"unknown process {process!r}; expected one of {', '.join(PROCESS_STATES)}")
        with self.lock:
            if name.lower() in self.projects:
                return self.projects[name.lower()]
            project = Project(self._uuid("project", name.lower()), name, process)
            self.projects[name.lower()] = project
            self.add_iteration(name, iteration, team=team, current=True)
            return project

    def add_iteration(self, project: str, name: str, *, team: str | None = None, current: bool = False) -> None:
        with self.lock:
            p = self.project(project)
            team = team or f"{p.name} Team"
            iterations = p.teams.setdefault(team, [])
            now = self.clock.now()
            if current:
                for it in iterations:
                    if it["timeFrame"] == "current":
                        it["timeFrame"] = "past"
            iterations.append({
                "id": self._uuid("iteration", p.name, name), "name": name, "path": f"{p.name}\\{name}",
                "timeFrame": "current" if current else "future",
                "start": now - timedelta(days=3), "finish": now + timedelta(days=11),
            })

    def add_area(self, project: str, path: str) -> None:
        """An area path below the project's root (``ML`` or ``proj\\ML\\Vision``), with its parents."""
        with self.lock:
            p = self.project(project)
            parts = [part for part in re.split(r"[\\/]", path) if part]
            if parts and parts[0].lower() == p.name.lower():
                parts = parts[1:]
            for n in range(1, len(parts) + 1):
                p.areas.add("\\".join(parts[:n]).lower())

    def add_repo(self, project: str, name: str) -> Repository:
        with self.lock:
            p = self.project(project)
            for repo in self.repos.values():
                if repo.project == p.name and repo.name.lower() == name.lower():
                    return repo
            repo = Repository(self._uuid("repo", p.name, name), name, p.name)
            self.repos[repo.id] = repo
            return repo

    def repo(self, name_or_id: str) -> Repository:
        with self.lock:
            found = self.find_repo(name_or_id)
            if found is None:
                raise KeyError(f"no repository {name_or_id!r} in the emulator")
            return found

    def find_repo(self, name_or_id: str, project: str | None = None) -> Repository | None:
        key = name_or_id.lower()
        for repo in self.repos.values():
            if project is not None and repo.project.lower() != project.lower():
                p = self.find_project(project)
                if p is None or p.name != repo.project:
                    continue
            if repo.id == key or repo.name.lower() == key:
                return repo
        return None

    def open_pull(self, repo: str, title: str, description: str = "", author: str = "alice@example.com", *,
                  source: str = "refs/heads/feature", target: str = "refs/heads/main",
                  work_items: Sequence[int] = (), files: Sequence[str] | Mapping[str, str] = ()) -> int:
        """A pull request; ``files`` are the paths its first push changes (``{path: changeType}`` to say
        how: ``add``, ``edit``, ``delete``, ``rename``)."""
        with self.lock:
            r = self.repo(repo)
            self.identity(author)
            number = next(self._pr_ids)
            r.pulls[number] = PullRequest(number, r.id, title, description, author, self.clock.now(), source, target,
                                          source_commit=self.new_sha(), target_commit=self.new_sha(),
                                          work_items=list(work_items))
            self.push(repo, number, files)
            return number

    def push(self, repo: str, number: int, files: Sequence[str] | Mapping[str, str]) -> int:
        """A new iteration of the pull request (a push to its source branch); returns its id."""
        with self.lock:
            pull = self.repo(repo).pulls[number]
            kinds = dict(files) if isinstance(files, Mapping) else {path: "edit" for path in files}
            pull.iterations.append([{"path": "/" + path.lstrip("/"), "changeType": kind}
                                    for path, kind in kinds.items()])
            pull.source_commit = self.new_sha()
            return len(pull.iterations)

    def complete_pull(self, repo: str, number: int, *, merge_commit: str | None = None,
                      closed_at: datetime | None = None) -> str:
        """Completes (merges) the pull request; returns the merge commit. ``closed_at`` (default now)
        dates it earlier: a completion that becomes visible after newer ones were listed."""
        with self.lock:
            pull = self.repo(repo).pulls[number]
            pull.status, pull.closed = "completed", closed_at or self.clock.now()
            pull.merge_commit = merge_commit or self.new_sha()
            return pull.merge_commit

    def add_thread_comment(self, repo: str, number: int, content: str, author: str = "alice@example.com", *,
                           thread_id: int | None = None, comment_type: str = "text") -> tuple[int, int]:
        """A comment by ``author``, in a new thread or in ``thread_id``; returns (thread, comment)."""
        with self.lock:
            pull = self.repo(repo).pulls[number]
            self.identity(author)
            now = self.clock.now()
            if thread_id is None:
                thread_id = max(pull.threads, default=0) + 1
                pull.threads[thread_id] = Thread(thread_id, [], now, now)
            thread = pull.threads[thread_id]
            comment = ThreadComment(len(thread.comments) + 1, author, content, now,
                                    parent=1 if thread.comments else 0, comment_type=comment_type)
            thread.comments.append(comment)
            thread.updated = now
            return thread_id, comment.id

    def add_pipeline(self, project: str, name: str, *, name_parameter: str | None = "run_id") -> int:
        with self.lock:
            p = self.project(project)
            number = max(self.pipelines, default=0) + 1
            self.pipelines[number] = Pipeline(number, name, p.name, name_parameter=name_parameter)
            return number

    def finish_run(self, pipeline: int, run: int, result: str = "succeeded") -> None:
        with self.lock:
            r = self.pipelines[pipeline].runs[run]
            r.state, r.result, r.finished = "completed", result, self.clock.now()

    def add_work_item(self, project: str, title: str, *, type: str = "Task",  # noqa: A002
                      fields: Mapping[str, Any] | None = None, author: str = "alice@example.com") -> int:
        with self.lock:
            return self._create_work_item(self.project(project), type, {"System.Title": title, **(fields or {})},
                                          author).id

    def _create_work_item(self, p: Project, kind: str, values: Mapping[str, Any], author: str) -> WorkItem:
        who = self.identity(author)
        now = iso(self.clock.now())
        states = self.type_states(p.name, kind) or next(iter(TYPE_STATES[p.process].values()))
        number = next(self._work_ids)
        base = {
            "System.AreaPath": p.name, "System.TeamProject": p.name, "System.IterationPath": p.name,
            "System.WorkItemType": kind, "System.State": states[0][0], "System.Reason": "New",
            "System.CreatedDate": now, "System.CreatedBy": who.unique_name, "System.ChangedDate": now,
            "System.ChangedBy": who.unique_name, "System.CommentCount": 0,
            "Microsoft.VSTS.Common.Priority": 2,
        }
        item = WorkItem(number, p.name, {**base, **values})
        item.state_history.append((str(item.fields["System.State"]), who.unique_name))
        self.work_items[number] = item
        return item

    def work_item(self, number: int) -> WorkItem:
        with self.lock:
            return self.work_items[number]

    def type_states(self, project: str, kind: str) -> tuple[tuple[str, str], ...]:
        """The (state, category) pairs of the project's work item type ``kind``, in order."""
        with self.lock:
            p = self.project(project)
            found = next((t for t in PROCESS_TYPES[p.process] if t.lower() == kind.lower()), kind)
            return p.custom_states.get(found, TYPE_STATES[p.process].get(found, ()))

    def customize_states(self, project: str, kind: str, states: Sequence[tuple[str, str]]) -> None:
        """A process administrator's change to a type's states ((name, category) pairs; the first is
        where new work items start), as an inherited process allows."""
        with self.lock:
            p = self.project(project)
            found = next((t for t in PROCESS_TYPES[p.process] if t.lower() == kind.lower()), None)
            if found is None:
                raise ValueError(f"the {p.process} process has no work item type {kind!r}")
            p.custom_states[found] = tuple((str(name), str(category)) for name, category in states)

    def state_refusal(self, item: WorkItem, new_state: str) -> str | None:
        """Why the service refuses moving ``item`` to ``new_state`` (None: it does not).

        A state the work item's type does not have is refused (TF401320's LimitedToValues). Between
        its states every move is allowed (an inherited process's transitions), except out of the
        Removed category, which leads back only to the type's first state (Agile's Removed → New)."""
        kind = str(item.fields.get("System.WorkItemType") or "")
        states = self.type_states(item.project, kind)
        names = [name for name, _ in states]
        categories = dict(states)
        current = str(item.fields.get("System.State") or "")
        if new_state not in names or (categories.get(current) == "Removed" and new_state not in (current, names[0])):
            allowed = names if categories.get(current) != "Removed" else [current, names[0]]
            return (f"TF401320: Rule Error for field State. Error code: Required, HasValues, LimitedToValues, "
                    f"AllowsOldValue, InvalidEmpty. The value {new_state!r} is not in the list of supported values "
                    f"for {kind} from {current!r}: {', '.join(allowed)}.")
        return None

    def edit_work_item(self, number: int, fields: Mapping[str, Any], *, author: str = "alice@example.com") -> None:
        """A person's edit in the web page (a move on the board is one: ``{"System.State": "Done"}``):
        checked as the service checks an update, and a new revision."""
        with self.lock:
            item = self.work_items[number]
            state = fields.get("System.State")
            refusal = self.state_refusal(item, str(state)) if state is not None else None
            if refusal:
                raise ValueError(refusal)
            # The web page's edits go through the same sanitiser as the API's (a description's HTML).
            item.fields.update({name: sanitize_html(value) if name in HTML_FIELDS and isinstance(value, str) else value
                                for name, value in fields.items()})
            item.rev += 1
            item.fields["System.ChangedDate"] = iso(self.clock.now())
            item.fields["System.ChangedBy"] = self.identity(author).unique_name
            if state is not None and (not item.state_history or state != item.state_history[-1][0]):
                item.state_history.append((str(state), self.identity(author).unique_name))

    def has_work_item(self, number: int) -> bool:
        with self.lock:
            return number in self.work_items


# ---------------------------------------------------------------------------
# The emulator


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class AzureDevOpsEmulator(HttpEmulator):
    """Azure DevOps Services for the ``azure-devops`` client, at ``base_url``
    (``http://127.0.0.1:PORT/{organization}``). ``pat`` authenticates as ``user``; add more with
    ``add_pat``."""

    service = "azure-devops"

    #: routes Microsoft's 7.1 specs in refdata do not describe, and why
    UNDESCRIBED_ROUTES = {
        # the client's location discovery (refdata/azure-devops/client-first-use-requests.json and
        # client-locations.json record them), part of no area's spec
        "OPTIONS /{organization}/_apis": "location discovery, before any client call",
        "GET /{organization}/_apis/ResourceAreas": "location discovery: the areas' hosts",
        "GET /{organization}/_apis/connectionData": "the connection's identity (Location area, no spec here)",
        # the Work area's spec (team settings) is not among the refdata specs
        "GET /{organization}/{project}/{team}/_apis/work/teamsettings/iterations": "the Work area: no spec in refdata",
        # the specs give these with the optional segment always present; the client leaves it out
        "POST /{organization}/{project}/_apis/wit/wiql": "wiql without {team} (the spec has only the team's)",
        "GET /{organization}/{project}/_apis/wit/classificationnodes/{structureGroup}":
            "a classification root: the spec's .../{structureGroup}/{path} with an empty path",
    }

    def __init__(
        self,
        *,
        organization: str = "fakeorg",
        pat: str = "test-pat",
        user: str = "mlops-bot@example.com",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        schemas: Any = None,
    ) -> None:
        super().__init__(host=host, port=port, prefix="", clock=clock, schemas=schemas)
        self.organization = organization
        self.state = AzureDevOpsState(self.clock, self.lock)
        self.pat = pat
        self.user = user
        self._pats: dict[str, str] = {}
        self._scopes: dict[str, frozenset[str]] = {}
        self.add_pat(pat, user)
        self._register_routes()

    def add_pat(self, pat: str, user: str, scopes: Sequence[str] = ALL_SCOPES) -> None:
        """A PAT for ``user`` with ``scopes`` (``vso.work``, ``vso.work_write``, ``vso.code``,
        ``vso.code_write``, ``vso.code_status``, ``vso.threads_full``, ``vso.build``,
        ``vso.build_execute``, ... or ``FULL_ACCESS``); a route none of them opens answers 401
        TF400813, as the service does."""
        with self.lock:
            self.state.identity(user)
            self._pats[pat] = user
            self._scopes[pat] = _with_implied(scopes)

    def set_scopes(self, pat: str, scopes: Sequence[str]) -> None:
        """What ``pat`` holds from now on (a person edited the token): ``scopes``, all of them."""
        with self.lock:
            if pat not in self._pats:
                raise ValueError(f"no PAT {pat!r}: add it with add_pat first")
            self._scopes[pat] = _with_implied(scopes)

    def revoke_pat(self, pat: str) -> None:
        """The PAT is revoked or expired: every call with it answers 401 from now on."""
        with self.lock:
            self._pats.pop(pat, None)
            self._scopes.pop(pat, None)

    @property
    def base_url(self) -> str:
        return f"{self.url}/{self.organization}"

    def api(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- the pipeline

    def _error(self, status: int, message: str, type_key: str = "VssServiceException", *,
               headers: Mapping[str, str] | None = None) -> Response:
        return Response(status, {
            "$id": "1", "innerException": None, "message": message,
            "typeName": f"Microsoft.VisualStudio.Services.WebApi.{type_key}, Microsoft.VisualStudio.Services.WebApi",
            "typeKey": type_key, "errorCode": 0, "eventId": 3000,
        }, dict(headers or {}))

    def request_problems(self, request: Request) -> list[str]:
        # the client sends api-version in Accept ("application/json;api-version=7.1-preview.3"), which
        # the specs list as a query parameter
        accept = request.header("accept") or ""
        if "api-version" not in request.query and "api-version=" in accept:
            version = accept.split("api-version=")[-1].split(";")[0].strip()
            request = replace(request, query={**request.query, "api-version": version})
        # the service reads an enum in the query whatever its case (the client documents $expand as
        # { None, Relations, Fields, Links, All }, the specs list them in lower case)
        if self.schemas is not None and request.route is not None and any(v != v.lower() for v in request.query.values()):
            try:
                described = self.schemas.request_parameters(request.route.method, request.route.template)
            except LookupError:
                described = {}
            query = dict(request.query)
            for name, value in query.items():
                enum = described.get(("query", name), ("", False, {}))[2].get("enum", [])
                query[name] = next((e for e in enum if isinstance(e, str) and e.lower() == value.lower()), value)
            request = replace(request, query=query)
        return super().request_problems(request)

    def error_problems(self, request: Request, response: Response) -> list[str]:
        if self.schemas is None:
            return []
        if response.status == 401 and isinstance(response.body, bytes):
            return []  # a PAT the service does not know: its sign-in answer, not JSON (as the client expects)
        return self.schemas.validate_error(response.body)

    def not_found(self, request: Request) -> Response:
        return self._error(404, f"The resource {request.path} could not be found.", "ResourceNotFoundException")

    def _secret(self, request: Request) -> str | None:
        header = request.header("authorization") or ""
        scheme, _, credential = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _user, _, secret = base64.b64decode(credential.strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return secret

    def _authenticate(self, request: Request) -> str | None:
        secret = self._secret(request)
        return self._pats.get(secret) if secret is not None else None

    def _scope_allows(self, request: Request) -> bool:
        """Whether the request's PAT holds one of the scopes its route accepts (``ROUTE_SCOPES``)."""
        accepted = ROUTE_SCOPES.get(request.route.name if request.route else "", ())
        held = self._scopes.get(self._secret(request) or "", frozenset())
        return not accepted or FULL_ACCESS in held or any(scope in held for scope in accepted)

    def identity_name(self, request: Request) -> str | None:
        return request.identity if isinstance(request.identity, str) else None

    def dispatch(self, request: Request) -> Response:
        assert request.route is not None
        who = self._authenticate(request)
        if who is None:
            # the service answers an HTML sign-in page; the client raises AzureDevOpsAuthenticationError
            return Response(401, b"Access Denied: The Personal Access Token used has expired or is invalid.",
                            {"WWW-Authenticate": 'Basic realm="https://dev.azure.com/"'},
                            content_type="text/plain; charset=utf-8")
        request.identity = who
        if not self._scope_allows(request):
            # A valid PAT without the route's scope: 401 with TF400813, the answer people report from the
            # service (e.g. microsoft/terraform-provider-azuredevops#901, Azure/azure-cli#24108); the
            # user is named by id there, by unique name here.
            return self._error(401, f"TF400813: The user '{who}' is not authorized to access this resource.",
                               "UnauthorizedRequestException")
        if request.params.get("organization", self.organization) != self.organization:
            return self.not_found(request)
        try:
            return request.route.handler(request)
        except _Answer as answer:
            return answer.response

    def fault_response(self, rule: FaultRule, request: Request) -> Response:
        if rule.kind in ("429", "rate_limit_primary", "rate_limit_secondary"):
            return self._error(429, "Request was blocked due to exceeding usage of resource 'Concurrency'.",
                               "RequestBlockedException",
                               headers={"Retry-After": str(rule.retry_after), "X-RateLimit-Resource": "Concurrency"})
        if rule.kind == "503":
            return self._error(503, "The service is temporarily unavailable.", "ServiceUnavailableException",
                               headers={"Retry-After": str(rule.retry_after)})
        return self._error(int(rule.kind), "An unexpected error occurred.", "InternalServerErrorException")

    def finalize(self, request: Request, response: Response) -> Response:
        response.headers = {"ActivityId": str(uuid.uuid4()), "X-TFS-ProcessId": str(uuid.uuid4()),
                            "X-VSS-E2EID": str(uuid.uuid4()), **response.headers}
        if response.status == 200 and isinstance(response.body, (dict, list)) and "api-version" in (
                request.header("accept") or ""):
            version = (request.header("accept") or "").split("api-version=")[-1]
            response.content_type = f"application/json; charset=utf-8; api-version={version}"
        return response

    # -- request helpers

    def _body(self, request: Request, kind: type = dict) -> Any:
        try:
            body = request.json()
        except ValueError:
            raise _Answer(self._error(400, "The request body could not be parsed as JSON.",
                                      "VssRequestContentException")) from None
        if not isinstance(body, kind):
            raise _Answer(self._error(400, f"Expected a JSON {kind.__name__}.", "VssRequestContentException"))
        return body

    def _project(self, request: Request) -> Project:
        p = self.state.find_project(request.params.get("project", ""))
        if p is None:
            raise _Answer(self._error(404, f"TF200016: The following project does not exist: "
                                      f"{request.params.get('project')}. Verify that the name of the project is "
                                      "correct and that the project exists on the specified Azure DevOps Server.",
                                      "ProjectDoesNotExistWithNameException"))
        return p

    def _repo(self, request: Request) -> Repository:
        p = self._project(request)
        repo = self.state.find_repo(request.params["repositoryId"], p.name)
        if repo is None:
            raise _Answer(self._error(404, f"TF401019: The Git repository with name or identifier "
                                      f"{request.params['repositoryId']} does not exist or you do not have "
                                      "permissions for the operation you are attempting.",
                                      "GitRepositoryNotFoundException"))
        return repo

    def _pull(self, request: Request, repo: Repository) -> PullRequest:
        try:
            return repo.pulls[int(request.params["pullRequestId"])]
        except (KeyError, ValueError):
            raise _Answer(self._error(404, "TF401180: The requested pull request was not found.",
                                      "GitPullRequestNotFoundException")) from None

    def _work_item(self, number: str | int) -> WorkItem:
        try:
            return self.state.work_items[int(number)]
        except (KeyError, ValueError):
            raise _Answer(self._error(404, f"TF401232: Work item {number} does not exist, or you do not have "
                                      "permissions to read it.", "WorkItemUnauthorizedAccessException")) from None

    def _identity_json(self, unique_name: str) -> dict[str, Any]:
        who = self.state.identity(unique_name)
        return {
            "id": who.id, "displayName": who.display_name, "uniqueName": who.unique_name,
            "url": self.api(f"_apis/Identities/{who.id}"),
            "imageUrl": self.api(f"_api/_common/identityImage?id={who.id}"),
            "descriptor": f"aad.{base64.b64encode(who.id.encode()).decode().rstrip('=')}",
        }

    @staticmethod
    def _wrap(items: list[Any]) -> dict[str, Any]:
        return {"count": len(items), "value": items}

    # -- JSON

    def _work_item_json(self, item: WorkItem, *, relations: bool = True) -> dict[str, Any]:
        """The work item; its relations only when asked (``$expand=relations``), as a GET answers,
        and always after a change, as a PATCH answers."""
        fields = {}
        for name, value in item.fields.items():
            if name in ("System.CreatedBy", "System.ChangedBy") and isinstance(value, str):
                value = self._identity_json(value)
            fields[name] = value
        url = self.api(f"{self.state.project(item.project).id}/_apis/wit/workItems/{item.id}")
        body: dict[str, Any] = {"id": item.id, "rev": item.rev, "fields": fields, "url": url, "_links": {
            "self": {"href": url}, "workItemUpdates": {"href": url + "/updates"},
            "workItemRevisions": {"href": url + "/revisions"}, "workItemComments": {"href": url + "/comments"},
            "html": {"href": self.api(f"{item.project}/_workitems/edit/{item.id}")},
            "workItemType": {"href": self.api(f"_apis/wit/workItemTypes/{item.fields['System.WorkItemType']}")},
            "fields": {"href": self.api("_apis/wit/fields")},
        }}
        if item.relations and relations:
            body["relations"] = item.relations
        return body

    def _comment_json(self, item: WorkItem, comment: WorkComment) -> dict[str, Any]:
        return {
            "workItemId": item.id, "id": comment.id, "version": comment.version, "text": comment.text,
            "format": comment.format, "renderedText": comment.text,
            "createdBy": self._identity_json(comment.author), "createdDate": iso(comment.created),
            "modifiedBy": self._identity_json(comment.author), "modifiedDate": iso(comment.created),
            "isDeleted": False,
            "url": self.api(f"{self.state.project(item.project).id}/_apis/wit/workItems/{item.id}"
                            f"/comments/{comment.id}"),
        }

    def _repo_json(self, repo: Repository) -> dict[str, Any]:
        p = self.state.project(repo.project)
        return {
            "id": repo.id, "name": repo.name, "url": self.api(f"_apis/git/repositories/{repo.id}"),
            "project": {"id": p.id, "name": p.name, "url": self.api(f"_apis/projects/{p.id}"),
                        "state": "wellFormed", "revision": 1, "visibility": "private"},
            "remoteUrl": self.api(f"_git/{repo.name}"), "defaultBranch": repo.default_branch,
        }

    def _commit_ref(self, repo: Repository, sha: str) -> dict[str, Any]:
        return {"commitId": sha, "url": self.api(f"_apis/git/repositories/{repo.id}/commits/{sha}")}

    def _pull_json(self, repo: Repository, pull: PullRequest, *, listed: bool = False) -> dict[str, Any]:
        """The pull request as read by id, or as a list holds it (``listed``: the description cut to
        ``LISTED_DESCRIPTION_LIMIT``)."""
        url = self.api(f"{self.state.project(repo.project).id}/_apis/git/repositories/{repo.id}"
                       f"/pullRequests/{pull.id}")
        body: dict[str, Any] = {
            "repository": self._repo_json(repo), "pullRequestId": pull.id, "codeReviewId": pull.id,
            "status": pull.status, "createdBy": self._identity_json(pull.author), "creationDate": iso(pull.created),
            "title": pull.title, "sourceRefName": pull.source,
            "description": _truncated(pull.description, LISTED_DESCRIPTION_LIMIT) if listed else pull.description,
            "targetRefName": pull.target, "mergeStatus": "succeeded", "isDraft": False,
            "mergeId": self.state._uuid("merge", repo.id, str(pull.id)),
            "lastMergeSourceCommit": self._commit_ref(repo, pull.source_commit),
            "lastMergeTargetCommit": self._commit_ref(repo, pull.target_commit),
            "reviewers": [], "url": url, "supportsIterations": True,
        }
        if pull.merge_commit:
            body["lastMergeCommit"] = self._commit_ref(repo, pull.merge_commit)
        if pull.closed:
            body["closedDate"] = iso(pull.closed)
            body["closedBy"] = self._identity_json(pull.author)
        return body

    def _thread_json(self, repo: Repository, pull: PullRequest, thread: Thread) -> dict[str, Any]:
        base = self.api(f"{self.state.project(repo.project).id}/_apis/git/repositories/{repo.id}"
                        f"/pullRequests/{pull.id}/threads/{thread.id}")
        return {
            "id": thread.id, "publishedDate": iso(thread.published), "lastUpdatedDate": iso(thread.updated),
            "comments": [self._thread_comment_json(base, c) for c in thread.comments],
            "status": thread.status, "properties": thread.properties,
            "isDeleted": False, "_links": {"self": {"href": base}},
        }

    def _thread_comment_json(self, thread_url: str, comment: ThreadComment) -> dict[str, Any]:
        url = f"{thread_url}/comments/{comment.id}"
        return {
            "id": comment.id, "parentCommentId": comment.parent, "author": self._identity_json(comment.author),
            "content": comment.content, "publishedDate": iso(comment.published),
            "lastUpdatedDate": iso(comment.published), "lastContentUpdatedDate": iso(comment.published),
            "commentType": comment.comment_type, "usersLiked": [self._identity_json(u) for u in comment.likes],
            "_links": {"self": {"href": url}},
        }

    def _run_json(self, pipeline: Pipeline, run: PipelineRun) -> dict[str, Any]:
        p = self.state.project(pipeline.project)
        url = self.api(f"{p.id}/_apis/pipelines/{pipeline.id}/runs/{run.id}")
        body: dict[str, Any] = {
            "id": run.id, "name": run.name, "state": run.state, "createdDate": iso(run.created), "url": url,
            "pipeline": {"id": pipeline.id, "name": pipeline.name, "folder": pipeline.folder, "revision": 1,
                         "url": self.api(f"{p.id}/_apis/pipelines/{pipeline.id}?revision=1")},
            "resources": {"repositories": {"self": {"refName": run.ref, "version": self.state.new_sha(),
                                                    "repository": {"type": "azureReposGit"}}}},
            "templateParameters": dict(run.template_parameters), "variables": dict(run.variables),
            "_links": {"self": {"href": url},
                       "web": {"href": self.api(f"{p.name}/_build/results?buildId={run.id}")},
                       "pipeline": {"href": self.api(f"{p.id}/_apis/pipelines/{pipeline.id}?revision=1")}},
        }
        if run.result:
            body["result"] = run.result
        if run.finished:
            body["finishedDate"] = iso(run.finished)
        return body

    # -- routes

    def _register_routes(self) -> None:
        org = "/{organization}"
        wit = org + "/{project}/_apis/wit"
        git = org + "/{project}/_apis/git/repositories/{repositoryId}"
        pr = git + "/pullRequests/{pullRequestId}"
        add = self.route
        add("OPTIONS", org + "/_apis", self._options, name="Locations_Options")
        add("GET", org + "/_apis/ResourceAreas", self._resource_areas, name="ResourceAreas_List")
        add("POST", wit + "/workitems/${type}", self._create_work_item, name="Work Items_Create")
        add("GET", wit + "/workitems/{id}", self._get_work_item, name="Work Items_Get Work Item")
        add("PATCH", wit + "/workitems/{id}", self._update_work_item, name="Work Items_Update")
        add("GET", wit + "/workitems", self._list_work_items, name="Work Items_List")
        add("POST", wit + "/wiql", self._wiql, name="Wiql_Query By Wiql (project)")
        add("POST", org + "/{project}/{team}/_apis/wit/wiql", self._wiql, name="Wiql_Query By Wiql")
        add("POST", wit + "/workItems/{workItemId}/comments", self._add_comment, name="Comments_Add Comment")
        add("GET", wit + "/workItems/{workItemId}/comments", self._list_comments, name="Comments_Get Comments Batch")
        add("GET", org + "/{project}/{team}/_apis/work/teamsettings/iterations", self._iterations,
            name="Iterations_List")
        add("GET", git + "/pullrequests", self._list_pulls, name="Pull Requests_Get Pull Requests")
        add("GET", git + "/pullrequests/{pullRequestId}", self._get_pull, name="Pull Requests_Get Pull Request")
        add("GET", pr + "/threads", self._list_threads, name="Pull Request Threads_List")
        add("POST", pr + "/threads", self._create_thread, name="Pull Request Threads_Create")
        add("POST", pr + "/threads/{threadId}/comments", self._create_thread_comment,
            name="Pull Request Thread Comments_Create")
        add("PATCH", pr + "/threads/{threadId}/comments/{commentId}", self._update_thread_comment,
            name="Pull Request Thread Comments_Update")
        add("POST", pr + "/statuses", self._create_pull_status, name="Pull Request Statuses_Create")
        add("GET", pr + "/statuses", self._list_pull_statuses, name="Pull Request Statuses_List")
        add("GET", pr + "/workitems", self._pull_work_items, name="Pull Request Work Items_List")
        likes = pr + "/threads/{threadId}/comments/{commentId}/likes"
        add("POST", likes, self._create_like, name="Pull Request Comment Likes_Create")
        add("GET", likes, self._list_likes, name="Pull Request Comment Likes_List")
        add("GET", pr + "/iterations", self._list_iterations, name="Pull Request Iterations_List")
        add("GET", pr + "/iterations/{iterationId}/changes", self._iteration_changes,
            name="Pull Request Iteration Changes_Get")
        add("GET", git, self._get_repository, name="Repositories_Get Repository")
        add("GET", org + "/_apis/connectionData", self._connection_data, name="Connection Data_Get")
        add("GET", wit + "/workitemtypes/{type}", self._get_work_item_type, name="Work Item Types_Get")
        add("GET", wit + "/workitemtypes/{type}/states", self._work_item_type_states,
            name="Work Item Type States_List")
        add("GET", wit + "/workitemtypes", self._list_work_item_types, name="Work Item Types_List")
        add("GET", wit + "/classificationnodes/{structureGroup}", self._classification_node,
            name="Classification Nodes_Get (root)")
        add("GET", wit + "/classificationnodes/{structureGroup}/{path}", self._classification_node,
            name="Classification Nodes_Get")
        add("GET", org + "/{project}/_apis/pipelines/{pipelineId}", self._get_pipeline, name="Pipelines_Get")
        add("POST", git + "/commits/{commitId}/statuses", self._create_commit_status, name="Statuses_Create")
        add("GET", git + "/commits/{commitId}/statuses", self._list_commit_statuses, name="Statuses_List")
        runs = org + "/{project}/_apis/pipelines/{pipelineId}/runs"
        add("POST", runs, self._run_pipeline, name="Runs_Run Pipeline")
        add("GET", runs, self._list_runs, name="Runs_List")
        add("GET", runs + "/{runId}", self._get_run, name="Runs_Get")

    # discovery

    def _options(self, request: Request) -> Response:
        value = [{
            "id": location_id, "area": area, "resourceName": resource, "routeTemplate": template,
            "resourceVersion": version, "minVersion": "1.0", "maxVersion": max_version,
            "releasedVersion": "7.0",
        } for location_id, (area, resource, template, max_version, version) in LOCATIONS.items()]
        return Response(200, self._wrap(value))

    def _resource_areas(self, request: Request) -> Response:
        """Every area at the organization's URL (with its trailing ``/``, as the service writes it)."""
        return Response(200, self._wrap([{"id": area_id, "name": name, "locationUrl": self.base_url + "/"}
                                         for area_id, name in RESOURCE_AREAS]))

    # work items

    def _apply_patch(self, item: WorkItem | None, document: list[Any], project: Project,
                     who: str, kind: str = "") -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
        """The field values, relations and the relation indexes removed by a JSON Patch document
        (``kind``: the type of the work item it creates, when ``item`` is None)."""
        kind = str(item.fields.get("System.WorkItemType")) if item is not None else kind
        values: dict[str, Any] = {}
        relations = [dict(r) for r in (item.relations if item else [])]
        for op in document:
            if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove", "test"):
                raise _Answer(self._error(400, "You must pass a valid patch document in the body of the request.",
                                          "VssPropertyValidationException"))
            path = str(op.get("path", ""))
            if path.startswith("/fields/"):
                name = path.removeprefix("/fields/")
                if op["op"] == "remove":
                    values[name] = None
                elif op["op"] != "test":
                    values[name] = op.get("value")
            elif path.startswith("/relations/"):
                where = path.removeprefix("/relations/")
                if op["op"] == "add" and where == "-":
                    relation = op.get("value") or {}
                    if not isinstance(relation, dict) or not relation.get("rel") or not relation.get("url"):
                        raise _Answer(self._error(400, "Relation must have rel and url.",
                                                  "WorkItemLinkInvalidException"))
                    if any(r["rel"] == relation["rel"] and r["url"] == relation["url"] for r in relations):
                        raise _Answer(self._error(400, "TF201035: The link already exists.",
                                                  "WorkItemLinkAlreadyExistsException"))
                    if relation["rel"] == "ArtifactLink" and not (relation.get("attributes") or {}).get("name"):
                        raise _Answer(self._error(400, "Artifact links must have a valid name specified.\r\n"
                                                  "Parameter name: workItemUpdates", "ArgumentException"))
                    stamp = iso(self.clock.now())
                    attributes = dict(relation.get("attributes") or {})
                    if not relation["rel"].startswith("System.LinkTypes."):
                        attributes.update({"authorizedDate": stamp, "id": next(self.state._ids),
                                           "resourceCreatedDate": stamp, "resourceModifiedDate": stamp,
                                           "revisedDate": "9999-01-01T00:00:00Z"})
                    relations.append({"rel": relation["rel"], "url": relation["url"], "attributes": attributes})
                elif where.isdigit() and int(where) < len(relations):
                    if op["op"] == "remove":
                        relations[int(where)] = {}
                    elif op["op"] == "replace":
                        relations[int(where)] = dict(op.get("value") or {})
                else:
                    raise _Answer(self._error(400, f"Invalid relation path {path}.", "WorkItemLinkInvalidException"))
            elif path == "/rev" and op["op"] == "test":
                if item is not None and op.get("value") != item.rev:
                    raise _Answer(self._error(412, "The work item has been changed.", "WorkItemRevisionMismatchException"))
            else:
                raise _Answer(self._error(400, f"Invalid patch path {path}.", "VssPropertyValidationException"))
        state = values.get("System.State")
        if state is not None:
            # a new work item is checked as one in its type's first state
            subject = item or WorkItem(0, project.name, {"System.WorkItemType": kind,
                                                         "System.State": next(iter(
                                                             self.state.type_states(project.name, kind)), ("",))[0]})
            refusal = self.state.state_refusal(subject, str(state))
            if refusal:
                raise _Answer(self._error(400, refusal, "RuleValidationException"))
        for name in HTML_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = sanitize_html(values[name])
        tags = values.get("System.Tags")
        if isinstance(tags, str):  # the service keeps tags sorted, "; "-separated
            values["System.Tags"] = "; ".join(sorted({t.strip() for t in tags.split(";") if t.strip()},
                                                     key=str.lower))
        if "System.Title" in values and not values["System.Title"] and item is None:
            raise _Answer(self._error(400, "TF401320: Rule Error for field Title. Error code: Required.",
                                      "RuleValidationException"))
        return values, [r for r in relations if r], []

    def _create_work_item(self, request: Request) -> Response:
        p = self._project(request)
        document = self._body(request, list)
        kind = self._type(p, request.params["type"])
        values, relations, _ = self._apply_patch(None, document, p, request.identity, kind)
        if not values.get("System.Title"):
            raise _Answer(self._error(400, "TF401320: Rule Error for field Title. Error code: Required, "
                                      "InvalidEmpty.", "RuleValidationException"))
        fields = {k: v for k, v in values.items() if v is not None}
        self._check_classification(p, fields)
        if str(request.query.get("validateOnly", "")).lower() == "true":  # checked, not saved
            return Response(200, {"fields": {"System.WorkItemType": kind, "System.TeamProject": p.name, **fields},
                                  "url": self.api(f"{p.id}/_apis/wit/workItems")})
        history = fields.pop("System.History", None)
        item = self.state._create_work_item(p, kind, fields, request.identity)
        item.relations = relations
        if history:
            self._history_comment(item, history, request.identity)
        return Response(200, self._work_item_json(item))

    def _type(self, p: Project, name: str) -> str:
        found = next((t for t in PROCESS_TYPES[p.process] if t.lower() == name.lower()), None)
        if found is None:
            raise _Answer(self._error(404, f"VS402323: Work item type {name} does not exist in project {p.name}.",
                                      "WorkItemTypeNotFoundException"))
        return found

    def _check_classification(self, p: Project, fields: Mapping[str, Any]) -> None:
        """An area path the project has (when the test set areas up) and an iteration path of one of its teams."""
        area = fields.get("System.AreaPath")
        if area and p.areas and not self._area_known(p, str(area)):
            raise _Answer(self._error(400, "TF401347: Invalid tree name given for work item -1, field "
                                      "'System.AreaPath'.", "WorkItemFieldInvalidTreeNameException"))
        iteration = fields.get("System.IterationPath")
        paths = {it["path"].lower() for its in p.teams.values() for it in its} | {p.name.lower()}
        if iteration and str(iteration).lower() not in paths:
            raise _Answer(self._error(400, "TF401347: Invalid tree name given for work item -1, field "
                                      "'System.IterationPath'.", "WorkItemFieldInvalidTreeNameException"))

    @staticmethod
    def _area_known(p: Project, path: str) -> bool:
        parts = [part for part in re.split(r"[\\/]", path) if part]
        if not parts or parts[0].lower() != p.name.lower():
            return False
        return len(parts) == 1 or "\\".join(parts[1:]).lower() in p.areas

    def _history_comment(self, item: WorkItem, text: str, who: str) -> None:
        """``System.History`` written with a change is a comment in the work item's discussion."""
        item.comments.append(WorkComment(max((c.id for c in item.comments), default=0) + 1, text, who,
                                         self.clock.now()))
        item.fields["System.CommentCount"] = len(item.comments)

    def _get_work_item(self, request: Request) -> Response:
        item = self._work_item(request.params["id"])
        return Response(200, self._work_item_json(item, relations=_expands_relations(request)))

    def _update_work_item(self, request: Request) -> Response:
        item = self._work_item(request.params["id"])
        p = self.state.project(item.project)
        document = self._body(request, list)
        values, relations, _ = self._apply_patch(item, document, p, request.identity)
        history = values.pop("System.History", None)
        for name, value in values.items():
            if value is None:
                item.fields.pop(name, None)
            else:
                item.fields[name] = value
        item.relations = relations
        item.rev += 1
        item.fields["System.ChangedDate"] = iso(self.clock.now())
        item.fields["System.ChangedBy"] = request.identity
        if item.fields.get("System.State") != (item.state_history[-1][0] if item.state_history else None):
            item.state_history.append((str(item.fields["System.State"]), request.identity))
        if history:
            self._history_comment(item, history, request.identity)
        return Response(200, self._work_item_json(item))

    def _list_work_items(self, request: Request) -> Response:
        ids = [i for i in request.query.get("ids", "").split(",") if i.strip()]
        if not ids:
            raise _Answer(self._error(400, "The ids parameter is required.", "ArgumentNullException"))
        if len(ids) > 200:
            raise _Answer(self._error(400, "The maximum number of ids is 200.", "ArgumentException"))
        found = []
        for number in ids:
            item = self.state.work_items.get(int(number)) if number.strip().isdigit() else None
            if item is None:
                if request.query.get("errorPolicy", "").lower() == "omit":
                    found.append(None)
                    continue
                self._work_item(number)
            found.append(self._work_item_json(item, relations=_expands_relations(request)))
        return Response(200, self._wrap(found))

    _WIQL_CLAUSE = re.compile(
        r"\[(?P<field>[\w.]+)\]\s*(?P<op>=|<>|CONTAINS WORDS|CONTAINS|NOT IN|IN|NOT CONTAINS)\s*"
        r"(?P<value>'(?:[^']|'')*'|\([^)]*\)|@project|\d+)", re.IGNORECASE)

    def _wiql(self, request: Request) -> Response:
        """A small WIQL: ``SELECT ... FROM WorkItems WHERE`` clauses joined by AND, with ``=``, ``<>``,
        ``CONTAINS``, ``CONTAINS WORDS``, ``IN``, ``NOT IN`` on fields, and ``@project``."""
        body = self._body(request)
        query = str(body.get("query") or "")
        match = re.match(r"\s*SELECT\s+.+?\s+FROM\s+WorkItems\b(?P<rest>.*)$", query, re.IGNORECASE | re.DOTALL)
        if match is None:
            raise _Answer(self._error(400, "TF51005: The query references a field that does not exist or the "
                                      "query is not valid WIQL.", "InvalidQueryTextException"))
        rest = match.group("rest")
        where, _, _order = re.split(r"\bORDER\s+BY\b", rest, maxsplit=1, flags=re.IGNORECASE)[0].partition("\0")
        where = re.sub(r"^\s*WHERE\s+", "", where, flags=re.IGNORECASE).strip()
        parts = [c.strip() for c in re.split(r"\s+AND\s+", where, flags=re.IGNORECASE) if c.strip()]
        project = self.state.find_project(request.params.get("project", ""))
        clauses = []
        for part in parts:
            m = self._WIQL_CLAUSE.fullmatch(part)
            if m is None:
                raise _Answer(self._error(400, f"TF51006: The query statement is not valid near {part!r}.",
                                          "InvalidQueryTextException"))
            raw = m.group("value")
            if raw.lower() == "@project":
                value: Any = project.name if project else ""
            elif raw.startswith("("):
                value = [v.strip().strip("'").replace("''", "'") for v in raw[1:-1].split(",") if v.strip()]
            elif raw.startswith("'"):
                value = raw[1:-1].replace("''", "'")
            else:
                value = int(raw)
            clauses.append((m.group("field"), m.group("op").upper(), value))
        hits = []
        for item in sorted(self.state.work_items.values(), key=lambda i: i.id):
            if project is not None and item.project != project.name:
                continue
            if all(_wiql_match(item.fields, *c) for c in clauses):
                hits.append(item)
        top = request.query.get("$top")
        if top and top.isdigit():
            hits = hits[: int(top)]
        return Response(200, {
            "queryType": "flat", "queryResultType": "workItem", "asOf": iso(self.clock.now()),
            "columns": [{"referenceName": "System.Id", "name": "ID", "url": self.api("_apis/wit/fields/System.Id")}],
            "workItems": [{"id": i.id, "url": self.api(f"_apis/wit/workItems/{i.id}")} for i in hits],
        })

    def _add_comment(self, request: Request) -> Response:
        item = self._work_item(request.params["workItemId"])
        body = self._body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _Answer(self._error(400, "The comment text cannot be empty.", "ArgumentException"))
        fmt = request.query.get("format", "html").lower()
        if fmt != "markdown":
            text = sanitize_html(text)
        comment = WorkComment(max((c.id for c in item.comments), default=0) + 1, text, request.identity,
                              self.clock.now(), format="markdown" if fmt == "markdown" else "html")
        item.comments.append(comment)
        item.fields["System.CommentCount"] = len(item.comments)
        return Response(200, self._comment_json(item, comment))

    def _list_comments(self, request: Request) -> Response:
        item = self._work_item(request.params["workItemId"])
        ordered = sorted(item.comments, key=lambda c: c.id, reverse=request.query.get("order", "desc") != "asc")
        top = int(request.query.get("$top") or 200)
        start = int(request.query.get("continuationToken") or 0)
        page = ordered[start: start + top]
        body: dict[str, Any] = {"totalCount": len(item.comments), "count": len(page),
                                "comments": [self._comment_json(item, c) for c in page],
                                "url": self.api(f"{item.project}/_apis/wit/workItems/{item.id}/comments")}
        if start + top < len(ordered):
            body["continuationToken"] = str(start + top)
            body["nextPage"] = body["url"] + f"?continuationToken={start + top}"
        return Response(200, body)

    # team settings

    def _iterations(self, request: Request) -> Response:
        p = self._project(request)
        team = request.params["team"]
        iterations = p.teams.get(team) or next((v for k, v in p.teams.items() if k.lower() == team.lower()), None)
        if iterations is None:
            raise _Answer(self._error(404, f"The team with id {team} does not exist.", "TeamNotFoundException"))
        timeframe = request.query.get("$timeframe")
        if timeframe is not None and timeframe.lower() != "current":
            raise _Answer(self._error(400, "Only $timeframe=current is supported.", "ArgumentException"))
        chosen = [it for it in iterations if timeframe is None or it["timeFrame"] == "current"]
        return Response(200, self._wrap([{
            "id": it["id"], "name": it["name"], "path": it["path"],
            "attributes": {"startDate": iso(it["start"]), "finishDate": iso(it["finish"]),
                           "timeFrame": it["timeFrame"]},
            "url": self.api(f"{p.id}/_apis/work/teamsettings/iterations/{it['id']}"),
        } for it in chosen]))

    # git

    def _list_pulls(self, request: Request) -> Response:
        """Pull Requests - Get Pull Requests: the criteria's status (``active`` unless given; ``all``),
        branches, creator and time range (``minTime``/``maxTime``, strictly after/before, on the date
        ``queryTimeRangeType`` names: ``created`` unless ``closed``); newest created first (by id),
        whatever the time range; ``$skip`` then ``$top`` (``DEFAULT_PULLS_TOP`` when absent); each
        description cut to 400 symbols."""
        repo = self._repo(request)
        query = request.query
        status = query.get("searchCriteria.status", "active").lower()
        pulls = [p for p in repo.pulls.values() if status == "all" or p.status == status]
        for key, attribute in (("targetRefName", "target"), ("sourceRefName", "source")):
            if query.get(f"searchCriteria.{key}"):
                pulls = [p for p in pulls if getattr(p, attribute) == query[f"searchCriteria.{key}"]]
        if query.get("searchCriteria.creatorId"):
            pulls = [p for p in pulls if self.state.identity(p.author).id == query["searchCriteria.creatorId"]]
        kind = query.get("searchCriteria.queryTimeRangeType", "created").lower()
        if kind not in ("created", "closed"):
            raise _Answer(self._error(400, f"The value '{query['searchCriteria.queryTimeRangeType']}' is not "
                                      "valid for queryTimeRangeType.", "InvalidArgumentValueException"))
        low, high = self._time_bound(query, "minTime"), self._time_bound(query, "maxTime")
        if low is not None or high is not None:
            def when(p: PullRequest) -> datetime | None:
                return p.closed if kind == "closed" else p.created

            pulls = [p for p in pulls if when(p) is not None and (low is None or when(p) > low)
                     and (high is None or when(p) < high)]
        pulls.sort(key=lambda p: p.id, reverse=True)  # newest created first
        skip, top = self._count_parameter(query, "$skip", 0), self._count_parameter(query, "$top", DEFAULT_PULLS_TOP)
        return Response(200, self._wrap([self._pull_json(repo, p, listed=True) for p in pulls[skip: skip + top]]))

    def _time_bound(self, query: Mapping[str, str], name: str) -> datetime | None:
        text = query.get(f"searchCriteria.{name}")
        if not text:
            return None
        try:
            return parse_iso(re.sub(r"(\.\d{6})\d+", r"\1", text))
        except ValueError:
            raise _Answer(self._error(400, f"The value '{text}' is not valid for {name}.",
                                      "InvalidArgumentValueException")) from None

    def _count_parameter(self, query: Mapping[str, str], name: str, default: int) -> int:
        text = query.get(name)
        if text in (None, ""):
            return default
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise _Answer(self._error(400, f"The value '{text}' is not valid for {name}.",
                                      "InvalidArgumentValueException"))
        return value

    def _get_pull(self, request: Request) -> Response:
        repo = self._repo(request)
        return Response(200, self._pull_json(repo, self._pull(request, repo)))

    def _list_threads(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        return Response(200, self._wrap([self._thread_json(repo, pull, t) for t in pull.threads.values()]))

    def _create_thread(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        body = self._body(request)
        comments = body.get("comments") or []
        if not isinstance(comments, list) or not comments or not all(
                isinstance(c, dict) and c.get("content") for c in comments):
            raise _Answer(self._error(400, "A thread must have at least one comment with content.",
                                      "ArgumentException"))
        now = self.clock.now()
        thread = Thread(max(pull.threads, default=0) + 1, [], now, now, status=body.get("status") or "active",
                        properties=dict(body.get("properties") or {}))
        for n, c in enumerate(comments, start=1):
            thread.comments.append(ThreadComment(n, request.identity, c["content"], now,
                                                 parent=int(c.get("parentCommentId") or 0),
                                                 comment_type=c.get("commentType") or "text"))
        pull.threads[thread.id] = thread
        return Response(200, self._thread_json(repo, pull, thread))

    def _create_thread_comment(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        try:
            thread = pull.threads[int(request.params["threadId"])]
        except (KeyError, ValueError):
            raise _Answer(self._error(404, "TF401181: The pull request thread cannot be found.",
                                      "GitPullRequestCommentThreadNotFoundException")) from None
        body = self._body(request)
        if not body.get("content"):
            raise _Answer(self._error(400, "The comment content cannot be empty.", "ArgumentException"))
        now = self.clock.now()
        comment = ThreadComment(len(thread.comments) + 1, request.identity, body["content"], now,
                                parent=int(body.get("parentCommentId") or 0),
                                comment_type=body.get("commentType") or "text")
        thread.comments.append(comment)
        thread.updated = now
        base = self.api(f"{self.state.project(repo.project).id}/_apis/git/repositories/{repo.id}"
                        f"/pullRequests/{pull.id}/threads/{thread.id}")
        return Response(200, self._thread_comment_json(base, comment))

    def _update_thread_comment(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        try:
            thread = pull.threads[int(request.params["threadId"])]
            comment = thread.comments[int(request.params["commentId"]) - 1]
        except (KeyError, ValueError, IndexError):
            raise _Answer(self._error(404, "TF401181: The pull request comment cannot be found.",
                                      "GitPullRequestCommentNotFoundException")) from None
        if comment.author != request.identity:
            raise _Answer(self._error(403, "Only the author may edit a comment.", "UnauthorizedAccessException"))
        body = self._body(request)
        if body.get("content"):
            comment.content = body["content"]
        base = self.api(f"{self.state.project(repo.project).id}/_apis/git/repositories/{repo.id}"
                        f"/pullRequests/{pull.id}/threads/{thread.id}")
        return Response(200, self._thread_comment_json(base, comment))

    def _status_json(self, repo: Repository, status: dict[str, Any], self_url: str) -> dict[str, Any]:
        return {**status, "createdBy": self._identity_json(status["createdBy"]),
                "_links": {"self": {"href": self_url},
                           "repository": {"href": self.api(f"_apis/git/repositories/{repo.id}")}}}

    def _new_status(self, request: Request, statuses: list[dict[str, Any]]) -> dict[str, Any]:
        body = self._body(request)
        context = body.get("context") or {}
        if not isinstance(context, dict) or not context.get("name"):
            raise _Answer(self._error(400, "The status context name is required.", "ArgumentNullException"))
        state = body.get("state") or "notSet"
        if state not in STATUS_STATES:
            raise _Answer(self._error(400, f"Invalid status state {state!r}.", "ArgumentException"))
        now = iso(self.clock.now())
        status = {"id": len(statuses) + 1, "state": state, "description": body.get("description") or "",
                  "context": {"name": context["name"], "genre": context.get("genre") or ""},
                  "creationDate": now, "updatedDate": now, "createdBy": request.identity}
        if body.get("targetUrl"):
            status["targetUrl"] = body["targetUrl"]
        statuses.append(status)
        return status

    def _create_pull_status(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        status = self._new_status(request, pull.statuses)
        return Response(200, self._status_json(
            repo, status, self.api(f"_apis/git/repositories/{repo.id}/pullRequests/{pull.id}/statuses/{status['id']}")))

    def _list_pull_statuses(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        return Response(200, self._wrap([self._status_json(
            repo, s, self.api(f"_apis/git/repositories/{repo.id}/pullRequests/{pull.id}/statuses/{s['id']}"))
            for s in pull.statuses]))

    def _create_commit_status(self, request: Request) -> Response:
        repo = self._repo(request)
        sha = request.params["commitId"]
        if not re.fullmatch(r"[0-9a-fA-F]{40}", sha):
            raise _Answer(self._error(400, f"The commit id {sha} is not valid.", "ArgumentException"))
        status = self._new_status(request, repo.commit_statuses.setdefault(sha.lower(), []))
        return Response(200, self._status_json(
            repo, status, self.api(f"_apis/git/repositories/{repo.id}/commits/{sha}/statuses/{status['id']}")))

    def _list_commit_statuses(self, request: Request) -> Response:
        repo = self._repo(request)
        sha = request.params["commitId"].lower()
        statuses = list(reversed(repo.commit_statuses.get(sha, [])))
        return Response(200, self._wrap([self._status_json(
            repo, s, self.api(f"_apis/git/repositories/{repo.id}/commits/{sha}/statuses/{s['id']}"))
            for s in statuses]))

    def _pull_work_items(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        linked = set(pull.work_items)
        artifact = f"{PR_ARTIFACT}{self.state.project(repo.project).id}%2F{repo.id}%2F{pull.id}".lower()
        for item in self.state.work_items.values():  # the link may be made from the work item's side too
            if any(r.get("rel") == "ArtifactLink" and str(r.get("url", "")).lower() == artifact
                   for r in item.relations):
                linked.add(item.id)
        return Response(200, self._wrap([{"id": str(n), "url": self.api(f"_apis/wit/workItems/{n}")}
                                         for n in sorted(linked)]))

    def _thread_comment(self, request: Request) -> tuple[Repository, PullRequest, ThreadComment]:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        try:
            thread = pull.threads[int(request.params["threadId"])]
            return repo, pull, thread.comments[int(request.params["commentId"]) - 1]
        except (KeyError, ValueError, IndexError):
            raise _Answer(self._error(404, "TF401181: The pull request comment cannot be found.",
                                      "GitPullRequestCommentNotFoundException")) from None

    def _create_like(self, request: Request) -> Response:
        """A like by the caller; liking twice changes nothing. The service answers with no body."""
        _repo, _pull, comment = self._thread_comment(request)
        if request.identity not in comment.likes:
            comment.likes.append(request.identity)
        return Response(200, None)

    def _list_likes(self, request: Request) -> Response:
        _repo, _pull, comment = self._thread_comment(request)
        return Response(200, self._wrap([self._identity_json(u) for u in comment.likes]))

    def _iteration_json(self, repo: Repository, pull: PullRequest, number: int) -> dict[str, Any]:
        return {"id": number, "description": f"Update {number}", "author": self._identity_json(pull.author),
                "createdDate": iso(pull.created), "updatedDate": iso(pull.created),
                "sourceRefCommit": {"commitId": pull.source_commit}, "targetRefCommit": {"commitId": pull.target_commit},
                "commonRefCommit": {"commitId": pull.target_commit}, "hasMoreCommits": False, "reason": "push",
                "_links": {"self": {"href": self.api(f"{self.state.project(repo.project).id}/_apis/git/repositories/"
                                                     f"{repo.id}/pullRequests/{pull.id}/iterations/{number}")}}}

    def _list_iterations(self, request: Request) -> Response:
        repo = self._repo(request)
        pull = self._pull(request, repo)
        return Response(200, self._wrap([self._iteration_json(repo, pull, n)
                                         for n in range(1, len(pull.iterations) + 1)]))

    def _iteration_changes(self, request: Request) -> Response:
        """The files changed up to an iteration, against ``$compareTo`` (0, the default: the common
        commit with the target, i.e. the whole pull request), paged by ``$top``/``$skip``."""
        repo = self._repo(request)
        pull = self._pull(request, repo)
        try:
            upto = int(request.params["iterationId"])
            since = int(request.query.get("$compareTo") or 0)
        except ValueError:
            upto = since = -1
        if not 1 <= upto <= len(pull.iterations) or not 0 <= since < upto:
            raise _Answer(self._error(404, f"The iteration {request.params['iterationId']} does not exist.",
                                      "GitPullRequestIterationNotFoundException"))
        changes: dict[str, dict[str, Any]] = {}
        for entries in pull.iterations[since:upto]:
            for entry in entries:
                changes[entry["path"]] = entry
        entries = list(changes.values())
        top, skip = int(request.query.get("$top") or 100), int(request.query.get("$skip") or 0)
        page = entries[skip: skip + top]
        body: dict[str, Any] = {"changeEntries": [{
            "changeTrackingId": n, "changeId": n,
            "item": {"objectId": self.state._uuid("blob", entry["path"]).replace("-", "")[:40], "path": entry["path"]},
            "changeType": entry["changeType"],
        } for n, entry in enumerate(page, start=skip + 1)]}
        if skip + top < len(entries):
            body["nextSkip"], body["nextTop"] = skip + top, top
        return Response(200, body)

    def _get_repository(self, request: Request) -> Response:
        return Response(200, self._repo_json(self._repo(request)))

    # work item types, areas, who the caller is

    def _connection_data(self, request: Request) -> Response:
        who = self._identity_json(request.identity)
        user = {"id": who["id"], "descriptor": who["descriptor"], "providerDisplayName": who["displayName"],
                "isActive": True, "properties": {"Account": {"$type": "System.String", "$value": who["uniqueName"]}}}
        return Response(200, {"authenticatedUser": user, "authorizedUser": user,
                              "instanceId": self.state._uuid("organization", self.organization),
                              "deploymentId": self.state._uuid("deployment"), "deploymentType": "hosted",
                              "locationServiceData": {"serviceOwner": "00025394-6065-48ca-87d9-7f5672854ef7",
                                                      "defaultAccessMappingMoniker": "PublicAccessMapping",
                                                      "lastChangeId": 1, "lastChangeId64": 1}})

    def _states_json(self, p: Project, name: str) -> list[dict[str, Any]]:
        return [{"name": state, "color": STATE_CATEGORY_COLORS.get(category, "b2b2b2"), "category": category}
                for state, category in self.state.type_states(p.name, name)]

    def _get_work_item_type(self, request: Request) -> Response:
        p = self._project(request)
        name = self._type(p, request.params["type"])
        return Response(200, {
            "name": name, "referenceName": f"Microsoft.VSTS.WorkItemTypes.{name.replace(' ', '')}",
            "description": f"{name} in the {p.process} process", "color": "F2CB1D", "isDisabled": False,
            "states": self._states_json(p, name),
            "url": self.api(f"{p.id}/_apis/wit/workItemTypes/{name}"),
        })

    def _work_item_type_states(self, request: Request) -> Response:
        """``GET .../workitemtypes/{type}/states``: the type's states, in order, with their categories
        (Proposed, InProgress, Resolved, Completed, Removed) and colours."""
        p = self._project(request)
        return Response(200, self._wrap(self._states_json(p, self._type(p, request.params["type"]))))

    def _list_work_item_types(self, request: Request) -> Response:
        p = self._project(request)
        return Response(200, self._wrap([{"name": t, "referenceName": f"Microsoft.VSTS.WorkItemTypes.{t.replace(' ', '')}",
                                          "url": self.api(f"{p.id}/_apis/wit/workItemTypes/{t}")}
                                         for t in PROCESS_TYPES[p.process]]))

    def _classification_node(self, request: Request) -> Response:
        p = self._project(request)
        group = request.params["structureGroup"].lower()
        path = request.params.get("path", "")
        parts = [part for part in re.split(r"[\\/]", path) if part]
        if group not in ("areas", "iterations") or (parts and not (
                group == "areas" and "\\".join(parts).lower() in p.areas)):
            raise _Answer(self._error(404, f"VS402485: The node {path or group} does not exist in project {p.name}.",
                                      "WorkItemClassificationNodeDoesNotExistException"))
        name = parts[-1] if parts else p.name
        return Response(200, {
            "id": int(self.state._uuid("node", p.name, path.lower())[:6], 16), "identifier": self.state._uuid("node", p.name, path),
            "name": name, "structureType": "area" if group == "areas" else "iteration", "hasChildren": False,
            "path": "\\" + "\\".join([p.name, "Area" if group == "areas" else "Iteration", *parts]),
            "url": self.api(f"{p.id}/_apis/wit/classificationNodes/{request.params['structureGroup']}/{path}"),
        })

    # pipelines

    def _get_pipeline(self, request: Request) -> Response:
        pipeline = self._pipeline(request)
        p = self.state.project(pipeline.project)
        url = self.api(f"{p.id}/_apis/pipelines/{pipeline.id}?revision=1")
        return Response(200, {"id": pipeline.id, "name": pipeline.name, "folder": pipeline.folder, "revision": 1,
                              "url": url, "configuration": {"type": "yaml", "path": "azure-pipelines.yml"},
                              "_links": {"self": {"href": url},
                                         "web": {"href": self.api(f"{p.name}/_build/definition?definitionId="
                                                                  f"{pipeline.id}")}}})

    def _pipeline(self, request: Request) -> Pipeline:
        p = self._project(request)
        try:
            pipeline = self.state.pipelines[int(request.params["pipelineId"])]
        except (KeyError, ValueError):
            pipeline = None
        if pipeline is None or pipeline.project != p.name:
            raise _Answer(self._error(404, f"Pipeline with id {request.params['pipelineId']} not found.",
                                      "PipelineNotFoundException"))
        return pipeline

    def _run_pipeline(self, request: Request) -> Response:
        pipeline = self._pipeline(request)
        body = self._body(request)
        parameters = body.get("templateParameters") or {}
        if not isinstance(parameters, dict):
            raise _Answer(self._error(400, "templateParameters must be an object.", "ArgumentException"))
        ref = (((body.get("resources") or {}).get("repositories") or {}).get("self") or {}).get("refName")
        number = next(self.state._run_ids)
        name = str(parameters.get(pipeline.name_parameter)) if pipeline.name_parameter and \
            parameters.get(pipeline.name_parameter) else f"{self.clock.now():%Y%m%d}.{len(pipeline.runs) + 1}"
        run = PipelineRun(number, pipeline.id, name, self.clock.now(), dict(parameters),
                          dict(body.get("variables") or {}), ref or "refs/heads/main")
        pipeline.runs[number] = run
        return Response(200, self._run_json(pipeline, run))

    def _list_runs(self, request: Request) -> Response:
        pipeline = self._pipeline(request)
        runs = sorted(pipeline.runs.values(), key=lambda r: r.id, reverse=True)
        return Response(200, self._wrap([{k: v for k, v in self._run_json(pipeline, r).items()
                                          if k not in ("templateParameters", "variables", "resources")}
                                         for r in runs]))

    def _get_run(self, request: Request) -> Response:
        pipeline = self._pipeline(request)
        try:
            run = pipeline.runs[int(request.params["runId"])]
        except (KeyError, ValueError):
            raise _Answer(self._error(404, f"Run {request.params['runId']} not found.",
                                      "PipelineRunNotFoundException")) from None
        return Response(200, self._run_json(pipeline, run))


_DROPPED_ELEMENTS = re.compile(r"<(script|style|iframe|object|embed)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)([^>]*)>")
_ATTRIBUTE = re.compile(r"""([\w:-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""")
_KEPT_ATTRIBUTES = {"href", "src", "alt", "title", "style", "colspan", "rowspan", "align", "target", "rel"}


def _with_implied(scopes: Sequence[str]) -> frozenset[str]:
    return frozenset(scopes) | {narrower for scope in scopes for narrower in IMPLIED_SCOPES.get(scope, ())}


def _truncated(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-16 code units, as .NET counts a string's length; a surrogate
    pair the cut would split is left out whole."""
    units = text.encode("utf-16-le")
    if len(units) <= 2 * limit:
        return text
    return units[:2 * limit].decode("utf-16-le", errors="ignore")


def _expands_relations(request: Request) -> bool:
    return request.query.get("$expand", "").lower() in ("relations", "all")


def sanitize_html(text: str) -> str:
    """Rich text as the service stores it: HTML comments, scripts and styles dropped, event
    handlers, ``data-*`` and other unknown attributes removed, ``javascript:`` links emptied; the
    text itself kept. (The real sanitizer's exact rules are not published; this one is at least as
    strict where it matters to the bot: nothing hidden in markup is relied on to survive.)"""
    text = _HTML_COMMENT.sub("", _DROPPED_ELEMENTS.sub("", text))

    def tag(match: re.Match) -> str:
        closing, name, rest = match.groups()
        if closing:
            return f"</{name.lower()}>"
        kept = []
        for attr, value in _ATTRIBUTE.findall(rest):
            attr = attr.lower()
            if attr not in _KEPT_ATTRIBUTES:
                continue
            if attr in ("href", "src") and value.strip("\"'").strip().lower().startswith("javascript:"):
                value = '""'
            kept.append(f"{attr}={value}")
        end = " /" if rest.rstrip().endswith("/") else ""
        return f"<{name.lower()}{''.join(' ' + a for a in kept)}{end}>"

    return _TAG.sub(tag, text)


def _wiql_match(fields: Mapping[str, Any], name: str, op: str, value: Any) -> bool:
    aliases = {"State": "System.State", "Title": "System.Title", "Tags": "System.Tags"}
    actual = fields.get(aliases.get(name, name))
    text = "" if actual is None else str(actual)
    if name in ("System.Tags", "Tags"):
        tags = {t.strip().lower() for t in text.split(";") if t.strip()}
        if op in ("CONTAINS", "CONTAINS WORDS"):
            return str(value).lower() in tags
        if op == "NOT CONTAINS":
            return str(value).lower() not in tags
    if op == "=":
        return text.lower() == str(value).lower()
    if op == "<>":
        return text.lower() != str(value).lower()
    if op in ("CONTAINS", "CONTAINS WORDS"):
        return str(value).lower() in text.lower()
    if op == "NOT CONTAINS":
        return str(value).lower() not in text.lower()
    if op == "IN":
        return text.lower() in {str(v).lower() for v in value}
    if op == "NOT IN":
        return text.lower() not in {str(v).lower() for v in value}
    return False


# ---------------------------------------------------------------------------
# Schemas


#: The body of the service's error answers, which the specs do not describe: the fields the client
#: reads it into (azure-devops' ``WrappedException``, ``AzureDevOpsServiceError``), with ``message``
#: and ``typeKey`` required (every error answer carries them; the client shows the message).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message", "typeKey"],
    "properties": {
        "$id": {"type": "string"},
        "innerException": {"anyOf": [{"$ref": "#/definitions/WrappedException"}, {"type": "null"}]},
        "message": {"type": "string"},
        "typeName": {"type": "string"},
        "typeKey": {"type": "string"},
        "errorCode": {"type": "integer"},
        "eventId": {"type": "integer"},
        "customProperties": {"type": ["object", "null"]},
    },
}


class AzureDevOpsSchemas:
    """Microsoft's 7.1 specs (work item tracking, git, pipelines) as one checker, with the
    emulator's view of them: a list the spec describes as an array is checked through the
    ``value`` of the ``{"count", "value"}`` wrapper the service actually sends."""

    def __init__(self, documents: Sequence[OpenAPISchemas]) -> None:
        self.documents = list(documents)
        self._errors = OpenAPISchemas({"swagger": "2.0", "paths": {}, "definitions": {"WrappedException": ERROR_SCHEMA}})

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        document = self._document(method, template)
        return document.operation(method, template) if document is not None else None

    def request_parameters(self, method: str, template: str) -> dict[tuple[str, str], tuple[str, bool, Any]]:
        document = self._document(method, template)
        if document is None:
            raise LookupError(f"{method} {template} is not in the specs")
        return document.request_parameters(method, template)

    def validate_request(self, method: str, template: str, **request: Any) -> list[str]:
        """A request against its operation in the specs (see ``OpenAPISchemas.validate_request``)."""
        document = self._document(method, template)
        if document is None:
            raise LookupError(f"{method} {template} is not in the specs")
        return document.validate_request(method, template, **request)

    def validate_error(self, body: Any) -> list[str]:
        """An error answer's body against the service's error shape (``ERROR_SCHEMA``)."""
        return self._errors.validate(body, "#/definitions/WrappedException")

    def _document(self, method: str, template: str) -> OpenAPISchemas | None:
        return next((d for d in self.documents if d.operation(method, template) is not None), None)

    def describes(self, method: str, template: str, status: int) -> bool:
        document = self._document(method, template)
        return document is not None and document.describes(method, template, status)

    def validate_response(self, method: str, template: str, status: int, body: Any,
                          headers: Mapping[str, str] | None = None) -> list[str]:
        document = self._document(method, template)
        if document is None:
            raise LookupError(f"{method} {template} is not in the specs")
        described, pointer = document.response(method, template, status)
        if pointer is not None and isinstance(body, dict) and "value" in body and "count" in body:
            node: Any = document.document
            for part in pointer.removeprefix("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            if node.get("type") == "array":
                return document.validate(body["value"], pointer)
        return document.validate_response(method, template, status, body)


def _any_object(node: Any) -> Any:
    """The specs write .NET's ``object`` (any JSON value: a field's string, number or identity) as a
    bare ``{"type": "object"}``; as JSON Schema that would refuse ``"New"``, so it becomes ``{}``.
    A generic's type parameter (``Change<T>.item``, the changed item: an object) is written
    ``{"type": "string", "format": "T"}``; it becomes ``{}`` too."""
    if isinstance(node, list):
        return [_any_object(item) for item in node]
    if not isinstance(node, dict):
        return node
    if (node.get("type") == "object" and set(node) <= {"type", "description"}) or (
            node.get("type") == "string" and node.get("format") == "T"):
        return {key: value for key, value in node.items() if key == "description"}
    # a .NET list subclass (JsonPatchDocument: List<JsonPatchOperation>) is written as an object whose
    # allOf is the array: what is sent is the array
    parts = node.get("allOf")
    if node.get("type") == "object" and isinstance(parts, list) and len(parts) == 1 and \
            parts[0].get("type") == "array" and not node.get("properties"):
        return _any_object(parts[0])
    return {key: _any_object(value) for key, value in node.items()}


def azure_devops_schemas(refdata: Path) -> AzureDevOpsSchemas:
    """The specs in ``refdata/azure-devops/specs`` (files with a byte-order mark)."""
    folder = Path(refdata) / "azure-devops" / "specs"
    return AzureDevOpsSchemas([
        OpenAPISchemas(_any_object(json.loads((folder / name).read_text(encoding="utf-8-sig"))))
        for name in ("workItemTracking.json", "git.json", "pipelines.json")])


# ---------------------------------------------------------------------------
# Running by hand


def seed(emulator: AzureDevOpsEmulator) -> None:
    """A small world: project ``proj`` (Agile) with repository ``model``, a completed pull request
    and a pipeline ``train``."""
    state = emulator.state
    state.add_project("proj")
    state.add_repo("proj", "model")
    number = state.open_pull("model", "Tune the model", "Improves recall. AB#101")
    state.complete_pull("model", number)
    state.add_pipeline("proj", "train")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Azure DevOps emulator on loopback.")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--pat", default="test-pat")
    args = parser.parse_args(argv)
    emulator = AzureDevOpsEmulator(port=args.port, pat=args.pat)
    seed(emulator)
    print(f"Azure DevOps emulator at {emulator.start().base_url} (PAT {args.pat!r}); Ctrl-C to stop")
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()
