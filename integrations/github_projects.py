"""Retrain tickets as cards on a GitHub Project (the current Projects, "ProjectV2", GraphQL only).

Each retrain ticket (an issue, ``GitHubIssues``) is added to the project named by
``MLOPS_GITHUB_PROJECT``, and its single-select Status field follows the episode through four
stages: ``opened`` (Todo), ``retraining`` (In progress), ``review`` (a validated candidate waits for
``/deploy``: In review) and ``resolved`` (Done); the option names are settings, matched
case-insensitively. Custom fields named Model, Version, Severity or Reason (text or single-select)
are filled when the project has them.

People are respected: the bot moves a card only on its own transitions, reading the card's Status
first. A card already where the transition would put it is left alone, and a card a person moved to
Done is never moved back to an earlier column (``should_move``, in integrations/board_stages.py). The
caller keeps the status the bot last set and passes it in, so a Done the bot set itself is told
apart from a person's.

GraphQL goes through PyGithub's public ``Requester.graphql_query`` on the repository client's
session: the same credentials (an App's installation token is renewed there), base URL (GitHub
Enterprise's ``/api/graphql``), timeouts and retries as every REST call, and no second HTTP client
to configure. PyGithub's typed GraphQL helpers (``graphql_named_mutation`` and the classes) cover
none of ProjectV2, and ``graphql_query`` takes our own documents as they are, which is what lets
tests validate every one of them against GitHub's published schema.

Every write is safe to repeat: ``addProjectV2ItemById`` returns the item that is already there, and
setting a field to the value it holds changes nothing; the card is read before each move, so a
move whose answer was lost is found done on the next attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from integrations.board_stages import DEFAULT_STATUSES, STAGES, should_move
from integrations.github_project_refs import ProjectRef
from integrations.ports import (
    BoardItem,
    CardMove,
    PermanentError,
    PermissionRefused,
    ProjectField,
    ProjectLayout,
    ReadsBoardItems,
    TransientError,
)

__all__ = ["ADD_ITEM", "CUSTOM_FIELDS", "DOCUMENTS", "ISSUE_CARD", "ITEM_CARD", "SET_FIELD", "BoardSetupError", "Card",
           "GitHubProjectBoard"]

log = logging.getLogger("mlops_bot.github_projects")

#: fields filled when the project has one of the name (case-insensitive), text or single-select
CUSTOM_FIELDS = ("Model", "Version", "Severity", "Reason")
STATUS_FIELD = "Status"
_FILLABLE = {"TEXT", "SINGLE_SELECT"}
_HOW_TO_GRANT = ("a classic token needs the 'project' scope (github.com → Settings → Developer settings → "
                 "Personal access tokens); a GitHub App the organization permission Projects: read and write")

# --- the GraphQL documents (every one is validated against GitHub's schema in the tests) ----------

_PROJECT_FRAGMENT = """
fragment BoardProject on ProjectV2 {
  id
  title
  url
  fields(first: 50) {
    nodes {
      ... on ProjectV2FieldCommon { id name dataType }
      ... on ProjectV2SingleSelectField { options { id name } }
    }
  }
}
"""
ORGANIZATION_PROJECT = """
query OrganizationProject($login: String!, $number: Int!) {
  organization(login: $login) { projectV2(number: $number) { ...BoardProject } }
}
""" + _PROJECT_FRAGMENT
USER_PROJECT = """
query UserProject($login: String!, $number: Int!) {
  user(login: $login) { projectV2(number: $number) { ...BoardProject } }
}
""" + _PROJECT_FRAGMENT
#: ``acme/3``: an organization's or a user's, whichever the login is
OWNER_PROJECT = """
query OwnerProject($login: String!, $number: Int!) {
  repositoryOwner(login: $login) { ... on ProjectV2Owner { projectV2(number: $number) { ...BoardProject } } }
}
""" + _PROJECT_FRAGMENT
_CARD_FRAGMENT = """
fragment BoardCard on ProjectV2Item {
  id
  isArchived
  project { id }
  fieldValues(first: 50) {
    nodes {
      ... on ProjectV2ItemFieldSingleSelectValue { name optionId field { ... on ProjectV2FieldCommon { id name } } }
      ... on ProjectV2ItemFieldTextValue { text field { ... on ProjectV2FieldCommon { id name } } }
    }
  }
}
"""
ISSUE_CARD = """
query IssueCard($owner: String!, $name: String!, $number: Int!) {
  repository(owner: $owner, name: $name) {
    issue(number: $number) {
      id
      projectItems(first: 50, includeArchived: true) { nodes { ...BoardCard } }
    }
  }
}
""" + _CARD_FRAGMENT
#: a card by its own id, as a ``projects_v2_item`` delivery names it: which issue it stands for, and its fields
ITEM_CARD = """
query ItemCard($id: ID!) {
  node(id: $id) {
    ... on ProjectV2Item {
      ...BoardCard
      content { ... on Issue { number repository { nameWithOwner } } }
    }
  }
}
""" + _CARD_FRAGMENT
ADD_ITEM = """
mutation AddCard($projectId: ID!, $contentId: ID!) {
  addProjectV2ItemById(input: {projectId: $projectId, contentId: $contentId}) { item { id } }
}
"""
SET_FIELD = """
mutation SetCardField($projectId: ID!, $itemId: ID!, $fieldId: ID!, $value: ProjectV2FieldValue!) {
  updateProjectV2ItemFieldValue(input: {projectId: $projectId, itemId: $itemId, fieldId: $fieldId, value: $value}) {
    projectV2Item { id }
  }
}
"""
DOCUMENTS = (ORGANIZATION_PROJECT, USER_PROJECT, OWNER_PROJECT, ISSUE_CARD, ITEM_CARD, ADD_ITEM, SET_FIELD)


class BoardSetupError(PermanentError):
    """The project is not set up as the settings say (no Status field, an option missing): a person fixes it."""


@dataclass(frozen=True)
class Card:
    """A ticket's item on the project: its id, its Status (None: unset) and its field values by lower-case name."""

    item_id: str
    status: str | None
    values: Mapping[str, str]
    archived: bool = False


class GitHubProjectBoard(ReadsBoardItems):
    """The retrain tickets of ``client``'s repository on the GitHub project ``ref``."""

    name = "github-project"

    def __init__(self, client: Any, ref: ProjectRef, *, statuses: Mapping[str, str] | None = None,
                 status_field: str = STATUS_FIELD) -> None:
        self.client, self.ref, self.status_field = client, ref, status_field
        self.statuses = {**DEFAULT_STATUSES, **(statuses or {})}
        self._layout: ProjectLayout | None = None

    # --- the project ------------------------------------------------------------------------

    def layout(self) -> ProjectLayout:
        """The project's id and fields, asked once (a changed project needs a restart, as a changed setting does)."""
        if self._layout is None:
            self._layout = self._read_layout()
        return self._layout

    def _read_layout(self) -> ProjectLayout:
        document, owner = {"organization": (ORGANIZATION_PROJECT, "organization"),
                           "user": (USER_PROJECT, "user")}.get(self.ref.kind or "", (OWNER_PROJECT, "repositoryOwner"))
        data = self._graphql(document, {"login": self.ref.owner, "number": self.ref.number}, write=False,
                             what=f"the project {self.ref}")
        project = (data.get(owner) or {}).get("projectV2")
        if not project:
            raise PermanentError(f"GitHub has no project {self.ref} that this token can see: check MLOPS_GITHUB_PROJECT "
                                 f"(the project's URL), and that {_HOW_TO_GRANT}")
        fields = [_field(node) for node in (project.get("fields") or {}).get("nodes") or [] if node and node.get("id")]
        by_name = {f.name.casefold(): f for f in fields}
        status = by_name.get(self.status_field.casefold())
        where = f"the GitHub project {self.ref} (“{project.get('title', '')}”)"
        if status is None or status.data_type != "SINGLE_SELECT":
            raise BoardSetupError(f"{where} has no single-select field {self.status_field!r}: add one with the options "
                                  f"{', '.join(self.statuses[stage] for stage in STAGES)}")
        stage_options, missing = {}, []
        for stage in STAGES:
            option = status.option_named(self.statuses[stage])
            if option is None:
                missing.append(f"{self.statuses[stage]!r} ({stage})")
            else:
                stage_options[stage] = option
        if missing:
            have = ", ".join(repr(name) for _id, name in status.options) or "none"
            raise BoardSetupError(f"{where}: its {status.name} field has no option {', '.join(missing)}; its options are "
                                  f"{have}: add the missing ones to the field, or name existing ones in "
                                  f"MLOPS_GITHUB_PROJECT_STATUSES (e.g. {{\"review\": \"Review\"}})")
        custom = {name.casefold(): by_name[name.casefold()] for name in CUSTOM_FIELDS
                  if name.casefold() in by_name and by_name[name.casefold()].data_type in _FILLABLE}
        return ProjectLayout(project["id"], project.get("title", ""), project.get("url", ""), status, stage_options,
                             custom)

    def diagnose(self) -> list[tuple[str, str | None, str]]:
        """What ``mlops-bot doctor`` reports: (what was checked, the problem or None, the fix)."""
        what = f"GitHub project {self.ref} (MLOPS_GITHUB_PROJECT)"
        try:
            layout = self.layout()
        except PermissionRefused as exc:
            return [(what, str(exc), ("grant the token the 'project' scope, or the GitHub App the organization "
                                      "permission Projects: read and write"))]
        except BoardSetupError as exc:
            return [(what, str(exc), ("add the missing options to the project's Status field, or name existing "
                                      "ones in MLOPS_GITHUB_PROJECT_STATUSES"))]
        except PermanentError as exc:
            return [(what, str(exc), ("check MLOPS_GITHUB_PROJECT; a classic token needs the 'project' scope, a "
                                      "GitHub App the organization permission Projects: read and write"))]
        except TransientError as exc:
            return [(what, str(exc), "check GITHUB_API_URL and the network, and run doctor again")]
        columns = ", ".join(name for _id, name in layout.stage_options.values())
        return [(f"{what} “{layout.title}”: Status {columns}", None, "")]

    # --- cards ------------------------------------------------------------------------------

    def card(self, ticket_id: int) -> tuple[str, Card | None]:
        """The issue's node id and its card on the project (None: not on it)."""
        layout = self.layout()
        owner, _, name = self.client.repo_name.partition("/")
        data = self._graphql(ISSUE_CARD, {"owner": owner, "name": name, "number": int(ticket_id)}, write=False,
                             what=f"issue #{ticket_id}'s project cards")
        issue = ((data.get("repository") or {}).get("issue")) or None
        if issue is None:
            raise PermanentError(f"issue #{ticket_id} of {self.client.repo_name} is not there")
        for item in (issue.get("projectItems") or {}).get("nodes") or []:
            if item and (item.get("project") or {}).get("id") == layout.id:
                return issue["id"], _card(item, layout)
        return issue["id"], None

    def item(self, item_id: str) -> BoardItem | None:
        layout = self.layout()
        try:
            data = self._graphql(ITEM_CARD, {"id": item_id}, write=False, what=f"the project card {item_id}")
        except PermissionRefused:
            raise  # the token lost the project scope: the caller says so, this is not "no such card"
        except PermanentError:  # GitHub answers NOT_FOUND for a card deleted since
            return None
        node = data.get("node") or {}
        content = node.get("content") or {}
        if (node.get("project") or {}).get("id") != layout.id or "number" not in content:
            return None  # another project's card, or a draft issue or a pull request
        if ((content.get("repository") or {}).get("nameWithOwner") or "").casefold() != self.client.repo_name.casefold():
            return None  # the project also tracks other repositories' issues
        return BoardItem(node["id"], int(content["number"]), _card(node, layout).status)

    def follow(self, ticket_id: int, stage: str, *, last_set: str | None = None,
               fields: Mapping[str, str] | None = None) -> CardMove:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        layout = self.layout()
        option_id, target = layout.stage_options[stage]
        content_id, card = self.card(ticket_id)
        added = card is None
        if card is None:  # returns the item already there, should an earlier answer have been lost
            data = self._graphql(ADD_ITEM, {"projectId": layout.id, "contentId": content_id}, write=True,
                                 what=f"adding issue #{ticket_id} to the project {self.ref}")
            item = ((data.get("addProjectV2ItemById") or {}).get("item")) or {}
            if not item.get("id"):
                raise TransientError(f"GitHub added issue #{ticket_id} to the project {self.ref} but named no item")
            card = Card(item["id"], None, {})
        if card.archived:
            return CardMove(card.item_id, card.status, moved=False, why="archived on the board by a person")
        self._fill(layout, card, fields or {})
        if not should_move(target, card.status, last_set=last_set, done=layout.stage_options["resolved"][1]):
            why = "" if (card.status or "").casefold() == target.casefold() else f"a person moved it to {card.status}"
            return CardMove(card.item_id, card.status, moved=False, added=added, why=why)
        self._set(layout, card.item_id, layout.status.id, {"singleSelectOptionId": option_id},
                  what=f"moving issue #{ticket_id} to {target}")
        return CardMove(card.item_id, target, moved=True, added=added)

    def _fill(self, layout: ProjectLayout, card: Card, fields: Mapping[str, str]) -> None:
        """The custom fields the project has, each written only when it holds something else."""
        for name, value in fields.items():
            project_field = layout.custom.get(name.casefold())
            if project_field is None or value is None or str(value) == "":
                continue
            value = str(value)
            if (card.values.get(project_field.name.casefold()) or "").casefold() == value.casefold():
                continue
            if project_field.data_type == "TEXT":
                self._set(layout, card.item_id, project_field.id, {"text": value}, what=f"setting {project_field.name}")
            elif option := project_field.option_named(value):
                self._set(layout, card.item_id, project_field.id, {"singleSelectOptionId": option[0]},
                          what=f"setting {project_field.name}")
            else:  # a person's field: the bot adds no options to it
                log.info("the project %s's field %s has no option %r: left as it is", self.ref, project_field.name, value)

    def _set(self, layout: ProjectLayout, item_id: str, field_id: str, value: dict[str, str], *, what: str) -> None:
        self._graphql(SET_FIELD, {"projectId": layout.id, "itemId": item_id, "fieldId": field_id, "value": value},
                      write=True, what=what)

    # --- GraphQL ----------------------------------------------------------------------------

    def _graphql(self, document: str, variables: dict[str, Any], *, write: bool, what: str) -> dict[str, Any]:
        """The ``data`` of one GraphQL request; failures as the ports' errors."""
        import requests
        from github import GithubException

        try:
            _headers, answer = self.client.graphql(document, variables, write=write)
        except GithubException as exc:
            raise _translate(exc, write=write, what=what) from None
        except requests.RequestException as exc:  # timeout, connection lost: a write may have happened
            raise TransientError(f"GitHub GraphQL ({what}): {type(exc).__name__}", outcome_unknown=write) from None
        return answer.get("data") or {}


def _card(item: Mapping[str, Any], layout: ProjectLayout) -> Card:
    values = {}
    for value in (item.get("fieldValues") or {}).get("nodes") or []:
        field_name = ((value or {}).get("field") or {}).get("name")
        if field_name:
            values[field_name.casefold()] = value.get("name") if "name" in value else value.get("text")
    return Card(item["id"], values.get(layout.status.name.casefold()), values, bool(item.get("isArchived")))


def _field(node: Mapping[str, Any]) -> ProjectField:
    options = tuple((option["id"], option["name"]) for option in node.get("options") or [])
    return ProjectField(node["id"], node.get("name", ""), node.get("dataType", ""), options)


def _translate(exc: Any, *, write: bool, what: str) -> Exception:
    """A GraphQL failure as the ports' error. GitHub answers GraphQL errors with 200 and a list of
    ``{"type": ..., "message": ...}``, which PyGithub raises as 404 (one NOT_FOUND) or 400."""
    status = getattr(exc, "status", None)
    data = getattr(exc, "data", None)
    errors = data.get("errors") if isinstance(data, dict) else None
    kinds = {error.get("type") for error in errors or [] if isinstance(error, dict)}
    first = next((str(error.get("message", "")) for error in errors or [] if isinstance(error, dict)), "")
    if "INSUFFICIENT_SCOPES" in kinds:
        return PermissionRefused(f"GitHub refuses {what}: the token lacks the 'project' scope; {_HOW_TO_GRANT}",
                                 service="github", permission="project")
    if "FORBIDDEN" in kinds:
        return PermissionRefused(f"GitHub refuses {what} ({first}); {_HOW_TO_GRANT}", service="github",
                                 permission="organization_projects=write")
    if "RATE_LIMITED" in kinds:
        return TransientError(f"GitHub's GraphQL rate limit ({what})", retry_after=60.0)
    if kinds:  # NOT_FOUND and the like: asking again will not help
        return PermanentError(f"GitHub GraphQL ({what}): {first}")
    headers = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}
    if status == 401:
        return PermanentError(f"GitHub refused the credentials ({what}): check GITHUB_TOKEN or the App settings")
    if status in {403, 429} and (headers.get("retry-after") or headers.get("x-ratelimit-remaining") == "0"):
        retry_after = float(headers.get("retry-after") or 60)
        return TransientError(f"GitHub's rate limit ({what})", retry_after=retry_after)
    if status is None or status >= 500:
        return TransientError(f"GitHub answered {status} ({what})", outcome_unknown=write)
    return PermanentError(f"GitHub answered {status} ({what})")
