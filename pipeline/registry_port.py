"""What the bot and the pipeline ask of a model registry, and the records it answers with.

``RegistryPort`` is the port; ``integrations.mlflow_registry.MlflowRegistry`` implements it (on a
team's MLflow server, or on the embedded SQLite store under ``MLOPS_DATA_DIR/mlflow``). This module
holds only the port, its records and the pure helpers around them, so that ``pipeline/`` can
name a registry without importing ``integrations/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["MODEL_URI_SHAPES", "AliasChange", "AliasMove", "ModelUri", "ModelVersion", "RecallsAliasMoves",
           "RegistryError", "RegistryPort", "ReportsAliasMoves", "RunRecord", "Stage", "StageChange",
           "alias_changes", "parse_model_uri"]

# A model name every registry accepts (MLflow's are freer): also a safe folder and filter-string name.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RegistryError(Exception):
    """A registry request that cannot be met; the message says why and what exists."""


MODEL_URI_SHAPES = "models:/<name>@<alias> or models:/<name>/<version>"
_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[1-9][0-9]*))")


@dataclass(frozen=True)
class ModelUri:
    """A parsed ``models:/`` URI: exactly one of ``alias`` and ``version`` is set."""

    name: str
    alias: str | None = None
    version: int | None = None


def parse_model_uri(uri: str) -> ModelUri:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>``, as MLflow spells them.

    Raises ``RegistryError`` in one line naming the accepted shapes.
    """
    match = _MODEL_URI.fullmatch(uri.strip()) if isinstance(uri, str) else None
    if match is None or not _MODEL_NAME.fullmatch(match["name"]):
        raise RegistryError(f"{uri!r} is not a model URI; write {MODEL_URI_SHAPES} (e.g. models:/churn@production "
                            "or models:/churn/3)")
    if match["version"]:
        return ModelUri(match["name"], version=int(match["version"]))
    return ModelUri(match["name"], alias=match["alias"])


class Stage(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class _LocalFolder:
    """``ModelVersion.path``: a folder on this machine, given as a path or fetched on first read.

    A registry on a remote server passes a function instead of a path, so that listing versions
    downloads nothing: the function runs the first time ``path`` is read, and its answer is kept.
    """

    _key = "_path"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self._key]
        if callable(value):
            value = Path(value())
            instance.__dict__[self._key] = value
        return value

    def __set__(self, instance: Any, value: Path | Callable[[], Path]) -> None:
        instance.__dict__[self._key] = value if callable(value) else Path(value)


@dataclass(frozen=True)
class ModelVersion:
    """One published version; ``path`` is its artifact folder on this machine (``model.skops`` etc.).

    ``aliases`` and ``source`` are set by registries that have them (MLflow: the version's aliases
    and where its MLflow model lives); ``stage`` is then derived from the aliases.
    """

    model: str
    version: int
    stage: Stage
    # Not compared and not in repr: reading it may download the folder (see _LocalFolder).
    path: Path = field(compare=False, repr=False)
    created_at: datetime
    run_id: str
    metadata: dict[str, Any]
    aliases: tuple[str, ...] = ()
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        described = {
            "model": self.model,
            "version": self.version,
            "stage": str(self.stage),
            "path": str(self.path),
            "created_at": _to_text(self.created_at),
            "run_id": self.run_id,
            "metadata": self.metadata,
        }
        if self.aliases or self.source:
            described |= {"aliases": list(self.aliases), "source": self.source}
        return described


# Set after the dataclass is made, so that its __init__ stores the path (or the function that
# fetches it) through the descriptor, while the field itself stays required and positional.
ModelVersion.path = _LocalFolder()  # type: ignore[assignment]


@dataclass(frozen=True)
class StageChange:
    """One period during which a version was in production, and why it began and ended."""

    model: str
    version: int
    started_at: datetime
    ended_at: datetime | None
    reason: str
    run_id: str | None
    trigger: str
    ended_reason: str | None
    started_by: str  # "promote", "rollback" or "external" (a move made outside the bot)
    # Who asked and by which command; kept by registries that record them, else empty.
    by: str = ""
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        described = {
            "model": self.model,
            "version": self.version,
            "started_at": _to_text(self.started_at),
            "ended_at": _to_text(self.ended_at) if self.ended_at else None,
            "reason": self.reason,
            "run_id": self.run_id,
            "trigger": self.trigger,
            "ended_reason": self.ended_reason,
            "started_by": self.started_by,
        }
        if self.by or self.command:
            described |= {"by": self.by, "command": self.command}
        return described


@dataclass(frozen=True)
class RunRecord:
    """What one pipeline run did; ``stages`` and ``details`` are stored as given (JSON)."""

    run_id: str
    model: str
    status: str  # "running", "succeeded", "not_promoted" or "failed"
    trigger: str
    reason: str
    started_at: datetime
    finished_at: datetime | None = None
    failed_stage: str | None = None
    error: str | None = None
    version: int | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "status": self.status,
            "trigger": self.trigger,
            "reason": self.reason,
            "started_at": _to_text(self.started_at),
            "finished_at": _to_text(self.finished_at) if self.finished_at else None,
            "failed_stage": self.failed_stage,
            "error": self.error,
            "version": self.version,
            "stages": self.stages,
            "details": self.details,
        }


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias, as recorded on the version that received it."""

    alias: str
    version: int | None             # None: the alias was removed (from ``previous``), no version holds it
    previous: int | None
    at: datetime
    action: str                     # "promote", "rollback", "candidate", "external" or "removed" (both seen, not
                                    # made, by the bot)
    reason: str
    trigger: str
    by: str                         # who asked: a person, "pipeline", "mlops-bot", or "outside mlops-bot"
    run_id: str | None = None
    command: str | None = None      # e.g. "github:org/repo#12:comment-99" or "cli"

    def to_json(self) -> str:
        return json.dumps({"alias": self.alias, "version": self.version, "previous": self.previous,
                           "at": _to_text(self.at), "action": self.action, "reason": self.reason,
                           "trigger": self.trigger, "by": self.by, "run_id": self.run_id, "command": self.command},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AliasMove:
        d = json.loads(text)
        version = None if d["version"] is None else int(d["version"])
        return cls(alias=d["alias"], version=version, previous=d.get("previous"), at=datetime.fromisoformat(d["at"]),
                   action=d["action"], reason=d.get("reason", ""), trigger=d.get("trigger", ""), by=d.get("by", ""),
                   run_id=d.get("run_id"), command=d.get("command"))


@dataclass(frozen=True)
class AliasChange:
    """An alias that points elsewhere than the bot last saw (None: no such alias)."""

    alias: str
    before: int | None
    after: int | None


def alias_changes(known: Mapping[str, int | None], current: Mapping[str, int | None],
                  watched: Iterable[str]) -> list[AliasChange]:
    """The watched aliases that point elsewhere than the bot last saw."""
    return [AliasChange(alias, known.get(alias), current.get(alias)) for alias in watched
            if known.get(alias) != current.get(alias)]


@runtime_checkable
class RegistryPort(Protocol):
    """What the bot and the pipeline ask of a model registry.

    Versions are numbered per model from 1. ``publish`` makes a staged folder the next version;
    with ``candidate=True`` (pass whether validation passed) it becomes the model's one candidate,
    the newest validated version not promoted, which the candidate before it stops being.
    ``promote`` puts a version in production and ``rollback`` restores the one before it, reading
    the production history as a stack. ``version_for_uri`` resolves ``models:/<name>@<alias>``
    and ``models:/<name>/<version>``.
    ``by`` and ``command`` say who asked and how; a registry that cannot keep them ignores them.
    Every refusal is a ``RegistryError`` whose one-line message says what exists or what to do.
    """

    def staging_dir(self) -> Path: ...

    def publish(self, model: str, staging: Path, metadata: dict[str, Any], *, run_id: str,
                finalize: Callable[[Path, dict[str, Any]], None] | None = None,
                candidate: bool = True) -> ModelVersion: ...

    def find_by_run_id(self, model: str, run_id: str) -> ModelVersion | None: ...

    def get(self, model: str, version: int) -> ModelVersion: ...

    def versions(self, model: str | None = None) -> list[ModelVersion]: ...

    def models(self) -> list[str]: ...

    def production(self, model: str) -> ModelVersion | None: ...

    def candidate(self, model: str) -> ModelVersion | None: ...

    def version_for_uri(self, uri: str) -> ModelVersion: ...

    def promote(self, model: str, version: int, *, reason: str, run_id: str | None = None,
                trigger: str = "manual", by: str = "mlops-bot", command: str | None = None) -> ModelVersion: ...

    def rollback(self, model: str, *, reason: str, trigger: str = "manual", by: str = "mlops-bot",
                 command: str | None = None) -> ModelVersion: ...

    def history(self, model: str) -> list[StageChange]: ...

    def describe(self, model: str, version: int) -> dict[str, Any]: ...

    def record_run(self, run: RunRecord) -> None: ...

    def runs(self, model: str | None = None, limit: int = 50) -> list[RunRecord]: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def close(self) -> None: ...


@runtime_checkable
class ReportsAliasMoves(Protocol):
    """A registry others move aliases in too (MLflow: its UI, other tools): the bot sees those moves
    and records them in the version's history, so a rollback and `models show` account for them."""

    production_alias: str
    candidate_alias: str

    def aliases(self, model: str) -> dict[str, int]:
        """Every alias of ``model`` and the version it points at, in one request."""
        ...

    def adopt_external_moves(self, model: str, changes: Iterable[AliasChange]) -> list[AliasMove]:
        """Record the moves in ``changes`` (aliases that point elsewhere than the bot last saw) that
        the bot did not make itself, each once; returns those recorded. An alias deleted is a move
        whose ``version`` is None, recorded on the version that lost it (``previous``)."""
        ...


@runtime_checkable
class RecallsAliasMoves(Protocol):
    """A registry that reads back the alias moves it recorded: what a watcher stopped part-way (after
    recording a move, before saying it) finds again, as ``adopt_external_moves`` records each once."""

    def alias_history(self, model: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias``, oldest first."""
        ...


def _to_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise RegistryError(f"timestamp {moment.isoformat()} has no time zone; use an aware datetime")
    # A fixed-width UTC form, so that stored timestamps sort as text.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
