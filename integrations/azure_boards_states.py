"""Retrain tickets on Azure Boards: the work item's State follows the retrain episode.

A retrain ticket on Azure Boards is a work item (``AzureBoards``); this board moves it through its
type's states on the episode's transitions, the four stages of ``integrations.board_stages``:
``opened``, ``retraining``, ``review`` (a validated candidate waits for ``/deploy``) and ``resolved``.

The states are never a list written here: they are read from the work item type's states API
(``GET {org}/{project}/_apis/wit/workitemtypes/{type}/states``), once per type, and each stage takes
the first state of a category, in the order the service lists them:

==============  =======================================================================
stage           state
==============  =======================================================================
opened          the first *Proposed* state (a type without one: its first *InProgress*)
retraining      the first *InProgress* state
review          the first *Resolved* state; a type without one stays at ``retraining``'s
resolved        the first *Completed* state
==============  =======================================================================

So the system processes walk: Agile Bug New → Active → Resolved → Closed (its Task, which has no
Resolved state, New → Active → Active → Closed); Scrum New → Committed → Done (Task: To Do → In
Progress → Done); Basic To Do → Doing → Done; CMMI Bug Proposed → Active → Resolved → Closed (its
Requirement and Task keep Resolved in the InProgress category, so they stay Active for review). A
process changed by its administrator is followed the same way.

On Azure Boards the board's columns map to states, so moving the State is moving the card: there is
nothing else to write. Tags carry ``model:<name>`` and ``severity:<level>``, merged into the work
item's tags (a person's tags stay). The version a move is about goes in the same write as a line of
the work item's discussion (``System.History``: no request of its own); the reason is in the
ticket's description already, and the opening never moves the State (a new work item starts there).

People are respected as on GitHub (``should_move``): a work item already in the stage's state is
left alone, one a person moved to a Completed state is never moved back (unless the bot put it
there), and one a person moved to a Removed state is left there. Every write is a JSON Patch that
starts with ``test /rev``, over the revision just read: a person's edit in between makes Azure
answer 412, and the bot reads the work item again and decides again, rather than overwrite it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from integrations.azure_devops import AzureDevOpsClient, html_marker, merge_tags
from integrations.board_stages import STAGES, should_move
from integrations.github_projects import BoardSetupError
from integrations.ports import CardMove, PermanentError, ProjectField, ProjectLayout, TransientError

__all__ = ["STAGE_CATEGORIES", "AzureBoardsStates", "WorkItemState", "stage_states"]

log = logging.getLogger("mlops_bot.azure_boards_states")

#: the state category each stage moves a work item to (the first state of it, in the type's order)
STAGE_CATEGORIES = {"opened": "Proposed", "retraining": "InProgress", "review": "Resolved", "resolved": "Completed"}
#: fields that become tags, ``<prefix>:<value>``
TAG_FIELDS = {"Model": "model", "Severity": "severity"}
#: a move whose revision was stale (412) is read and decided again, this many times in all
_ATTEMPTS = 3
_WHAT = {
    "opened": "a retrain ticket for a drift episode",
    "retraining": "a retrain is running",
    "review": "a validated candidate{version} waits for a person to deploy it",
    "resolved": "the retrained model{version} is in production",
}


@dataclass(frozen=True)
class WorkItemState:
    """One state of a work item type and its category (Proposed, InProgress, Resolved, Completed, Removed)."""

    name: str
    category: str


def stage_states(states: Sequence[WorkItemState], *, where: str) -> dict[str, str]:
    """Each stage's state (stage -> state name) among a type's ``states``, listed in the service's order.

    ``where`` names the type for the one-line BoardSetupError raised when the type has no states, or
    no InProgress or Completed state for the retrain and the resolution to move to."""
    if not states:
        raise BoardSetupError(f"{where} has no states (the states API lists none): check the work item type "
                              "in the process (Organization settings → Boards → Process), or set "
                              "MLOPS_AZURE_WORK_ITEM_TYPE to another type")

    def first(category: str) -> str | None:
        return next((state.name for state in states if state.category.casefold() == category.casefold()), None)

    in_progress, completed = first("InProgress"), first("Completed")
    if in_progress is None or completed is None:
        listed = ", ".join(f"{state.name} ({state.category})" for state in states)
        missing = " and ".join(name for name, found in (("InProgress", in_progress), ("Completed", completed))
                               if found is None)
        raise BoardSetupError(f"{where} has no state in the {missing} category (its states: {listed}): add one to "
                              "the type in the process, or set MLOPS_AZURE_WORK_ITEM_TYPE to another type")
    return {"opened": first("Proposed") or in_progress, "retraining": in_progress,
            "review": first("Resolved") or in_progress, "resolved": completed}


class AzureBoardsStates:
    """The retrain tickets' work items in ``project``, their State following the episode (a TicketBoard).

    ``work_item_type`` is the type retrain tickets are created as (MLOPS_AZURE_WORK_ITEM_TYPE); a
    work item of another type (one opened before the setting changed) follows its own type's states.
    """

    name = "azure-boards"

    def __init__(self, client: AzureDevOpsClient, *, project: str, work_item_type: str = "Task") -> None:
        self.client, self.project, self.work_item_type = client, project, work_item_type
        self._layouts: dict[str, ProjectLayout] = {}  # work item type (lower case) -> its states, read once

    # --- the type's states ------------------------------------------------------------------

    def layout(self, work_item_type: str | None = None) -> ProjectLayout:
        """The type's states as a board: the State field's options, and each stage's state.

        Read once per type (a process changed meanwhile is read again when Azure refuses a state)."""
        kind = work_item_type or self.work_item_type
        if kind.casefold() not in self._layouts:
            self._layouts[kind.casefold()] = self._read_layout(kind)
        return self._layouts[kind.casefold()]

    def states(self, work_item_type: str | None = None) -> tuple[WorkItemState, ...]:
        """The type's states, in the service's order, with their categories."""
        layout = self.layout(work_item_type)
        return tuple(WorkItemState(name, category) for category, name in layout.status.options)

    def _read_layout(self, kind: str) -> ProjectLayout:
        where = f"the work item type {kind!r} of the Azure DevOps project {self.project}"
        try:
            answer = self.client.call("wit", "get_work_item_type_states", self.project, kind)
        except PermanentError as exc:
            if getattr(exc, "status", None) == 404:
                raise BoardSetupError(f"the Azure DevOps project {self.project} has no work item type {kind!r} (or "
                                      "the project is not there): set MLOPS_AZURE_WORK_ITEM_TYPE to one of its "
                                      "types (mlops-bot doctor lists them) and AZURE_DEVOPS_PROJECT to the "
                                      "project") from None
            raise
        states = [WorkItemState(str(state.name), str(state.category or "")) for state in answer or [] if state.name]
        stages = stage_states(states, where=where)
        # The State field as a single-select one: each option's "id" is the state's category.
        field = ProjectField("System.State", "State", "SINGLE_SELECT",
                             tuple((state.category, state.name) for state in states))
        return ProjectLayout(id=kind, title=f"{self.project}: {kind}", url=self.client.organization_url, status=field,
                             stage_options={stage: (STAGE_CATEGORIES[stage], name) for stage, name in stages.items()},
                             custom={})

    def diagnose(self) -> list[tuple[str, str | None, str]]:
        """What ``mlops-bot doctor`` reports: the state each stage of the episode moves the work item
        to, read from the type's states as the bot will read them; or why they cannot be."""
        what = f"Azure Boards states of {self.work_item_type} (MLOPS_AZURE_WORK_ITEM_TYPE)"
        try:
            layout = self.layout()
        except BoardSetupError as exc:
            return [(what, str(exc), "add the missing state to the type in the process, or set "
                                     "MLOPS_AZURE_WORK_ITEM_TYPE to another type")]
        except PermanentError as exc:
            return [(what, str(exc), "check AZURE_DEVOPS_PROJECT and that the PAT has Work Items: Read")]
        except TransientError as exc:
            return [(what, str(exc), "check AZURE_DEVOPS_ORG_URL and the network, then run doctor again")]
        walk: list[str] = []
        for stage in STAGES:
            name = layout.stage_options[stage][1]
            if not walk or walk[-1] != name:  # Basic has no Resolved state: review stays in Doing
                walk.append(name)
        return [(f"{what}: {' → '.join(walk)}", None, "")]

    # --- moving a work item -------------------------------------------------------------------

    def follow(self, ticket_id: int, stage: str, *, last_set: str | None = None,
               fields: Mapping[str, str] | None = None) -> CardMove:
        """Move work item ``ticket_id`` to ``stage``'s state and merge the ``fields``' tags into its own,
        unless a person's move is to be respected; safe to repeat (it reads the work item first)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        fields = fields or {}
        refused_once = False
        for _attempt in range(_ATTEMPTS):
            item = self._work_item(ticket_id)
            values = item.fields or {}
            kind = str(values.get("System.WorkItemType") or self.work_item_type)
            layout = self.layout(kind)
            target = layout.stage_options[stage][1]
            current = str(values.get("System.State") or "")
            move, why = self._decide(layout, target, current, last_set)
            tags = _field_tags(fields)
            merged = merge_tags(values.get("System.Tags"), tags) if tags else None
            write_tags = merged is not None and _tag_set(merged) != _tag_set(values.get("System.Tags"))
            if not move and not write_tags:
                return CardMove(str(ticket_id), current, moved=False, why=why)
            document = [_operation("test", "/rev", item.rev)]
            if move:
                document += [_operation("replace", "/fields/System.State", target),
                             _operation("add", "/fields/System.History",
                                        _history(ticket_id, stage, current, target, fields))]
            if write_tags:
                document.append(_operation("add", "/fields/System.Tags", merged))
            try:
                self.client.call("wit", "update_work_item", document, ticket_id, project=self.project, write=True)
            except PermanentError as exc:
                status = getattr(exc, "status", None)
                if status == 412:  # changed since it was read (a person, another bot): read it and decide again
                    log.info("work item %s changed while mlops-bot moved it to %s: reading it again", ticket_id, target)
                    continue
                if status == 400 and move and "TF401320" in str(exc) and not refused_once:
                    # The state is not (or no longer) one the type allows: the process may have changed
                    # since its states were read. Read them again, once, and decide again.
                    refused_once = True
                    self._layouts.pop(kind.casefold(), None)
                    if self.layout(kind).stage_options[stage][1] != target:
                        continue
                    raise BoardSetupError(f"Azure Boards refuses moving work item {ticket_id} from {current!r} to "
                                          f"{target!r}, a state its type {kind!r} lists: {_first_sentence(exc)}; "
                                          "check the type's workflow rules in the process") from None
                raise
            return CardMove(str(ticket_id), target if move else current, moved=move, why=why)
        raise TransientError(f"work item {ticket_id} changed each time mlops-bot moved it ({_ATTEMPTS} tries): "
                             "it is tried again later")

    @staticmethod
    def _decide(layout: ProjectLayout, target: str, current: str, last_set: str | None) -> tuple[bool, str]:
        """Whether to move the work item from ``current`` to ``target``, and why not when it is left
        where a person put it ("" when it is where the stage wants it)."""
        categories = {name.casefold(): category for category, name in layout.status.options}
        category = categories.get(current.casefold())
        if category == "Removed":  # a person took it off the board and backlog: not the bot's to bring back
            return False, f"a person moved it to {current}"
        # Done is the type's first Completed state, or whichever Completed state a person chose.
        done = current if category == "Completed" else layout.stage_options["resolved"][1]
        if should_move(target, current or None, last_set=last_set, done=done):
            return True, ""
        return False, "" if current.casefold() == target.casefold() else f"a person moved it to {current}"

    def _work_item(self, ticket_id: int) -> Any:
        try:
            return self.client.call("wit", "get_work_item", int(ticket_id), project=self.project)
        except PermanentError as exc:
            if getattr(exc, "status", None) == 404:
                raise PermanentError(f"work item {ticket_id} is not in the Azure DevOps project {self.project} "
                                     "(deleted?): its state stays as it is") from None
            raise


def _field_tags(fields: Mapping[str, str]) -> list[str]:
    """``model:<name>`` and ``severity:<level>`` of the fields that have a value."""
    return [f"{prefix}:{str(fields[name]).strip()}" for name, prefix in TAG_FIELDS.items()
            if str(fields.get(name) or "").strip()]


def _tag_set(tags: str | None) -> set[str]:
    return {tag.strip().casefold() for tag in (tags or "").split(";") if tag.strip()}


def _history(ticket_id: int, stage: str, current: str, target: str, fields: Mapping[str, str]) -> str:
    """The discussion line a move writes: what happened, and the version it is about. Its marker
    tells the bot's own line from a person's comment."""
    version = f" (version {fields['Version']})" if fields.get("Version") else ""
    what = _WHAT[stage].format(version=version)
    reason = f" ({fields['Reason']})" if fields.get("Reason") and stage == "opened" else ""
    text = f"mlops-bot moved this work item from {current} to {target}: {what}{reason}."
    return f"<p>{html.escape(text, quote=False)}</p>\n{html_marker(f'board:{ticket_id}:{stage}')}"


def _operation(op: str, path: str, value: Any) -> Any:
    from azure.devops.v7_1.work_item_tracking.models import JsonPatchOperation

    return JsonPatchOperation(op=op, path=path, value=value)


def _first_sentence(exc: Exception) -> str:
    text = str(exc)
    start = text.find("TF401320")
    return text[start:].split(" (fix:")[0] if start >= 0 else text
