"""The few normalised events every source produces: pollers, webhooks and the console alike.

Each event has a natural ``key`` that names its cause in the outside world (a comment id, a merge
commit, a batch file), so the same thing seen twice (by polling and by a webhook, or again after a
restart) is handled once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from typing import Any, ClassVar

from integrations.ports import Change, Comment, Target

__all__ = [
    "ChangeMerged",
    "ChecklistTicked",
    "CommandGiven",
    "DriftFound",
    "Event",
    "ModelPromoted",
    "ModelRolledBack",
    "ProductionRemoved",
    "RunFinished",
    "TicketClosed",
    "event_from_dict",
]


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"

    @property
    def key(self) -> str:  # pragma: no cover - every event defines it
        raise TypeError(f"{type(self).__name__} has no key")

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, whose deep copies showed in the profile.
        return {"kind": self.kind, **{f.name: _plain(getattr(self, f.name)) for f in fields(self)}}


@dataclass(frozen=True)
class CommandGiven(Event):
    """A comment holding one or more commands, on a change or a ticket."""

    kind: ClassVar[str] = "command"
    source: str
    comment: Comment

    @property
    def key(self) -> str:
        return f"{self.source}:comment:{self.comment.target.repo}:{self.comment.id}"


@dataclass(frozen=True)
class ChangeMerged(Event):
    kind: ClassVar[str] = "change_merged"
    source: str
    change: Change

    @property
    def key(self) -> str:
        return f"{self.source}:merged:{self.change.repo}:{self.change.commit}"


@dataclass(frozen=True)
class TicketClosed(Event):
    kind: ClassVar[str] = "ticket_closed"
    source: str
    ticket_id: int
    by: str = ""

    @property
    def key(self) -> str:
        return f"{self.source}:ticket-closed:{self.ticket_id}"


@dataclass(frozen=True)
class DriftFound(Event):
    """The monitor checked a batch of production data against the production model's profile."""

    kind: ClassVar[str] = "drift_found"
    model: str
    version: int
    batch: str  # the batch's identity (file name, size and time), so each batch counts once
    drifted: bool
    severity: str
    summary: dict[str, Any] = field(default_factory=dict)  # drifted features and their effects
    report_dir: str = ""
    data_problem: str = ""  # set when the batch could not be checked (missing columns, no rows, ...)

    @property
    def key(self) -> str:
        return f"drift:{self.model}:{self.batch}"


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    run_id: str
    model: str
    status: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"run-finished:{self.run_id}"


@dataclass(frozen=True)
class ModelPromoted(Event):
    kind: ClassVar[str] = "model_promoted"
    model: str
    version: int
    previous: int | None
    reason: str
    cause: str  # the event or run that led to it

    @property
    def key(self) -> str:
        return f"promoted:{self.model}:v{self.version}:{self.cause}"


@dataclass(frozen=True)
class ModelRolledBack(Event):
    kind: ClassVar[str] = "model_rolled_back"
    model: str
    version: int
    previous: int
    reason: str
    cause: str

    @property
    def key(self) -> str:
        return f"rolled-back:{self.model}:v{self.previous}->v{self.version}:{self.cause}"


@dataclass(frozen=True)
class ProductionRemoved(Event):
    """The production alias was deleted outside the bot (MLflow's UI, another tool): no version is
    in production until one is promoted."""

    kind: ClassVar[str] = "production_removed"
    model: str
    previous: int  # the version that held the alias
    alias: str
    cause: str  # the registry's record of the removal

    @property
    def key(self) -> str:
        return f"production-removed:{self.model}:v{self.previous}:{self.cause}"


@dataclass(frozen=True)
class ChecklistTicked(Event):
    """A box of the bot's checklist ticked in a ticket's body (``bot/checklist.py``), seen in an
    edit's webhook or in a poll of the body.

    The key names the box and the section's revision the person ticked, not who reported it nor
    who ticked it: a redelivered webhook, a poll after the webhook and two people ticking the
    same box at once are one event, so the box acts once.
    """

    kind: ClassVar[str] = "checklist_ticked"
    source: str
    tracker: str  # the tracker's name: ticket numbers are its own
    ticket_id: int
    action: str  # the box's stable id: retrain, deploy-v3, rollback-v2
    revision: int  # the revision of the bot's section the box was ticked in
    editor: str = ""  # who ticked it; "" when the source cannot tell (a poll of a GitHub issue)

    @property
    def key(self) -> str:
        return f"checklist:{self.tracker}:{self.ticket_id}:{self.action}:r{self.revision}"


_KINDS = {cls.kind: cls for cls in (CommandGiven, ChangeMerged, TicketClosed, DriftFound, RunFinished, ModelPromoted,
                                    ModelRolledBack, ProductionRemoved, ChecklistTicked)}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event stored with ``to_dict``."""
    cls = _KINDS[data["kind"]]
    values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
    if cls is CommandGiven:
        values["comment"] = _comment(values["comment"])
    if cls is ChangeMerged:
        change = dict(values["change"])
        change["merged_at"] = datetime.fromisoformat(change["merged_at"])
        change["paths"] = tuple(change.get("paths", ()))
        values["change"] = Change(**change)
    return cls(**values)


def _comment(data: dict[str, Any]) -> Comment:
    values = dict(data)
    values["target"] = Target(**values["target"])
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    return Comment(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
