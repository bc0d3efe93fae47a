"""The model registry: published model versions, which one is in production, and pipeline runs.

The embedded default keeps everything under one folder::

    root/index.sqlite           the index (WAL): the only record of what exists
    root/models/<model>/v<N>/   each published version's artifact folder
    root/.staging/<id>/         folders a pipeline is still writing, invisible to readers

A version exists once its index row is committed. Its folder is renamed into place
inside the same transaction, so no reader ever sees a half-written version, and a
version folder without a row is a leftover of a killed process that the next
``ModelRegistry`` removes.

Every operation opens its own SQLite connection, so any number of threads and
processes can share one root; writers queue on SQLite's lock instead of failing.

``RegistryPort`` is what the bot and the pipeline ask of a registry; ``ModelRegistry`` here and
``integrations.mlflow_registry.MlflowRegistry`` both satisfy it and return the records below.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["MODEL_URI_SHAPES", "ModelRegistry", "ModelUri", "ModelVersion", "RegistryError", "RegistryPort",
           "ReportsAliasMoves", "RunRecord", "Stage", "StageChange", "parse_model_uri"]

_SCHEMA_VERSION = 1
# Long enough for a concurrent publish or promote to finish; short enough to notice a hung peer.
_BUSY_TIMEOUT_S = 30.0
# A staging folder untouched this long belongs to a pipeline that died before publishing.
_STAGING_MAX_AGE_S = 60 * 60
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION_FOLDER = re.compile(r"v([1-9][0-9]*)")
_RUN_STATUSES = ("running", "succeeded", "not_promoted", "failed")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS versions (
        model      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        stage      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        metadata   TEXT NOT NULL,
        PRIMARY KEY (model, version))""",
    # The index itself refuses a second production version of a model.
    """CREATE UNIQUE INDEX IF NOT EXISTS one_production_version
        ON versions (model) WHERE stage = 'production'""",
    """CREATE TABLE IF NOT EXISTS production_periods (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        model        TEXT NOT NULL,
        version      INTEGER NOT NULL,
        started_at   TEXT NOT NULL,
        ended_at     TEXT,
        started_by   TEXT NOT NULL,
        reason       TEXT NOT NULL,
        run_id       TEXT,
        trigger      TEXT NOT NULL,
        ended_reason TEXT,
        FOREIGN KEY (model, version) REFERENCES versions (model, version))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS one_open_period
        ON production_periods (model) WHERE ended_at IS NULL""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id       TEXT PRIMARY KEY,
        model        TEXT NOT NULL,
        status       TEXT NOT NULL,
        trigger      TEXT NOT NULL,
        reason       TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        failed_stage TEXT,
        error        TEXT,
        version      INTEGER,
        stages       TEXT NOT NULL,
        details      TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS runs_by_model ON runs (model, started_at)",
)


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
    started_by: str  # "promote" or "rollback"; MLflow adds "external" (a move made outside the bot)
    # Who asked and by which command; kept by registries that record them (MLflow), else empty.
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

    def adopt_external_moves(self, model: str, changes: Iterable[Any]) -> list[Any]:
        """Record the moves in ``changes`` (aliases that point elsewhere than the bot last saw) that
        the bot did not make itself, each once; returns those recorded. An alias deleted is a move
        whose ``version`` is None, recorded on the version that lost it (``previous``)."""
        ...


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ModelRegistry(RegistryPort):
    """Model versions in a folder, indexed by SQLite; safe to share between processes."""

    def __init__(self, root: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.root = Path(root)
        self._clock = clock
        self._index = self.root / "index.sqlite"
        self._models = self.root / "models"
        self._staging = self.root / ".staging"
        self._connections = threading.local()
        self._models.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(exist_ok=True)
        self._remove_stale_staging()
        self._enable_wal()
        with self._write() as conn:
            _create_schema(conn, self._index)
            _keep_one_candidate(conn)
            self._remove_orphan_versions(conn)

    # -- publishing ---------------------------------------------------------------

    def staging_dir(self) -> Path:
        """A new, empty, private folder to write an artifact into before ``publish``.

        Publish within an hour: older staging folders are treated as abandoned and
        removed by the next ``ModelRegistry`` created on this root.
        """
        folder = self._staging / uuid.uuid4().hex
        folder.mkdir(mode=0o700)
        return folder

    def publish(
        self,
        model: str,
        staging: Path,
        metadata: dict[str, Any],
        *,
        run_id: str,
        finalize: Callable[[Path, dict[str, Any]], None] | None = None,
        candidate: bool = True,
    ) -> ModelVersion:
        """Make the staged folder the model's next version, as its ``candidate`` (else ``archived``).

        A new candidate replaces the model's earlier one (archived), as MLflow's candidate alias
        moves: the candidate is the newest validated version not promoted.

        ``finalize(folder, metadata)``, if given, is called once the version number is
        known, after ``metadata.json`` is written and before the folder is moved into
        place, to write files that mention the version (a model card, say). It runs
        while the registry's write lock is held, so keep it quick.

        On any failure the registry is left as it was and the staged folder is put
        back where it was, with its own ``metadata.json`` (if any) restored; other
        files ``finalize`` wrote stay in it.

        Each call publishes a new version, even for a ``run_id`` published before: callers
        that may repeat a run ask ``find_by_run_id`` first.
        """
        _check_model_name(model)
        staging = Path(staging)
        if not staging.is_dir():
            raise RegistryError(f"cannot publish {model}: staging folder {staging} does not exist")
        metadata_file = staging / "metadata.json"
        original_metadata = metadata_file.read_bytes() if metadata_file.exists() else None
        published: Path | None = None
        stage = Stage.CANDIDATE if candidate else Stage.ARCHIVED
        with self._connect() as conn:
            # BEGIN IMMEDIATE takes the write lock before reading the highest version,
            # so two publishers can never pick the same number.
            conn.execute("BEGIN IMMEDIATE")
            try:
                _refuse_case_clash(conn, model)
                version = _next_version(conn, model)
                full_metadata = {**metadata, "model": model, "version": version}
                metadata_text = _to_json(full_metadata, f"metadata for {model}")
                metadata_file.write_text(metadata_text, encoding="utf-8")
                if finalize is not None:
                    # A copy, so nothing finalize does can make the index and the file disagree.
                    finalize(staging, json.loads(metadata_text))
                target = self._version_path(model, version)
                # We hold the write lock and no row has this number, so anything
                # already there is the leftover of a publish that was killed.
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target)
                published = target
                created_at = _to_text(self._clock())
                if candidate:
                    conn.execute("UPDATE versions SET stage = ? WHERE model = ? AND stage = ?",
                                 (Stage.ARCHIVED, model, Stage.CANDIDATE))
                conn.execute(
                    "INSERT INTO versions (model, version, stage, created_at, run_id, metadata)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (model, version, stage, created_at, run_id, metadata_text),
                )
                conn.execute("COMMIT")
            except BaseException:
                # Undo before releasing the lock, so a registry starting up elsewhere
                # cannot take our folder for an orphan while we move it back.
                _undo_publish(staging, published, metadata_file, original_metadata)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return ModelVersion(
            model=model,
            version=version,
            stage=stage,
            path=target,
            created_at=_from_text(created_at),
            run_id=run_id,
            metadata=full_metadata,
        )

    # -- reading versions ---------------------------------------------------------

    def get(self, model: str, version: int) -> ModelVersion:
        with self._connect() as conn:
            return self._get(conn, model, version)

    def find_by_run_id(self, model: str, run_id: str) -> ModelVersion | None:
        """The (first) version that pipeline run ``run_id`` published, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM versions WHERE model = ? AND run_id = ? ORDER BY version LIMIT 1",
                (model, run_id),
            ).fetchone()
        return self._version_from_row(row) if row else None

    def versions(self, model: str | None = None) -> list[ModelVersion]:
        """Versions ordered by model then version; all models when ``model`` is None."""
        query = "SELECT * FROM versions"
        params: tuple[Any, ...] = ()
        if model is not None:
            query += " WHERE model = ?"
            params = (model,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY model, version", params).fetchall()
        return [self._version_from_row(row) for row in rows]

    def models(self) -> list[str]:
        with self._connect() as conn:
            return _model_names(conn)

    def production(self, model: str) -> ModelVersion | None:
        """The version in production, or None (also for a model never published)."""
        with self._connect() as conn:
            return self._production(conn, model)

    def candidate(self, model: str) -> ModelVersion | None:
        """The model's candidate (the newest validated version not promoted), or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM versions WHERE model = ? AND stage = ? ORDER BY version DESC LIMIT 1",
                (model, Stage.CANDIDATE),
            ).fetchone()
        return self._version_from_row(row) if row else None

    def version_for_uri(self, uri: str) -> ModelVersion:
        """The version ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` names.

        This registry's aliases are its stages: ``production`` and ``candidate``.
        """
        parsed = parse_model_uri(uri)
        if parsed.version is not None:
            return self.get(parsed.name, parsed.version)
        find = {Stage.PRODUCTION.value: self.production, Stage.CANDIDATE.value: self.candidate}.get(parsed.alias)
        if find is None:
            raise RegistryError(f"{uri!r}: the folder registry knows the aliases production and candidate, not "
                                f"{parsed.alias!r}; write models:/{parsed.name}@production or a version number")
        found = find(parsed.name)
        if found is None:
            if parsed.name not in self.models():
                with self._connect() as conn:
                    raise _no_such_model(conn, parsed.name)
            raise RegistryError(f"no version of {parsed.name} is {parsed.alias} now")
        return found

    # -- production -----------------------------------------------------------------

    def promote(
        self,
        model: str,
        version: int,
        *,
        reason: str,
        run_id: str | None = None,
        trigger: str = "manual",
        by: str = "mlops-bot",
        command: str | None = None,
    ) -> ModelVersion:
        """Put ``version`` in production and archive the one it replaces.

        Promoting the version already in production changes nothing. An archived
        version may be promoted: that is how an older version is deployed by hand.
        ``by`` and ``command`` are accepted for the port and not stored here.
        """
        with self._write() as conn:
            chosen = self._get(conn, model, version)
            if chosen.stage is Stage.PRODUCTION:
                return chosen
            now = _to_text(self._clock())
            _end_production(conn, model, now, reason)
            _start_production(
                conn, model, version, now,
                started_by="promote", reason=reason, run_id=run_id, trigger=trigger,
            )
        return replace(chosen, stage=Stage.PRODUCTION)

    def rollback(
        self,
        model: str,
        *,
        reason: str,
        trigger: str = "manual",
        by: str = "mlops-bot",
        command: str | None = None,
    ) -> ModelVersion:
        """Restore the version that was in production before the current one.

        ``by`` and ``command`` are accepted for the port and not stored here.
        """
        with self._write() as conn:
            current = self._production(conn, model)
            if current is None:
                if model not in _model_names(conn):
                    raise _no_such_model(conn, model)
                raise RegistryError(f"cannot roll back {model}: no version is in production")
            earlier = _rollback_target(conn, model)
            if earlier is None:
                raise RegistryError(
                    f"cannot roll back {model}: v{current.version} is in production, no"
                    " earlier version was in production before it"
                )
            now = _to_text(self._clock())
            _end_production(conn, model, now, reason)
            _start_production(
                conn, model, earlier, now,
                started_by="rollback", reason=reason, run_id=None, trigger=trigger,
            )
            return self._get(conn, model, earlier)

    def history(self, model: str) -> list[StageChange]:
        """Which version was in production from when to when and why, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM production_periods WHERE model = ? ORDER BY started_at, id",
                (model,),
            ).fetchall()
        return [_period_from_row(row) for row in rows]

    def describe(self, model: str, version: int) -> dict[str, Any]:
        """``to_dict()`` of the version plus its own production periods under ``history``."""
        with self._connect() as conn:
            chosen = self._get(conn, model, version)
            rows = conn.execute(
                "SELECT * FROM production_periods WHERE model = ? AND version = ?"
                " ORDER BY started_at, id",
                (model, version),
            ).fetchall()
        return chosen.to_dict() | {"history": [_period_from_row(row).to_dict() for row in rows]}

    # -- runs -----------------------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        """Insert the run, or replace what was recorded under its ``run_id``."""
        _check_model_name(run.model)
        if run.status not in _RUN_STATUSES:
            raise RegistryError(
                f"run {run.run_id} has status {run.status!r};"
                f" expected one of {', '.join(_RUN_STATUSES)}"
            )
        row = {
            "run_id": run.run_id,
            "model": run.model,
            "status": run.status,
            "trigger": run.trigger,
            "reason": run.reason,
            "started_at": _to_text(run.started_at),
            "finished_at": _to_text(run.finished_at) if run.finished_at else None,
            "failed_stage": run.failed_stage,
            "error": run.error,
            "version": run.version,
            "stages": _to_json(run.stages, f"stages of run {run.run_id}"),
            "details": _to_json(run.details, f"details of run {run.run_id}"),
        }
        columns = ", ".join(row)
        placeholders = ", ".join(f":{name}" for name in row)
        updates = ", ".join(f"{name} = excluded.{name}" for name in row if name != "run_id")
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO runs ({columns}) VALUES ({placeholders})"
                f" ON CONFLICT (run_id) DO UPDATE SET {updates}",
                row,
            )

    def runs(self, model: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The most recent runs, newest first; all models when ``model`` is None."""
        query = "SELECT * FROM runs"
        params: tuple[Any, ...] = ()
        if model is not None:
            query += " WHERE model = ?"
            params = (model,)
        with self._connect() as conn:
            rows = conn.execute(
                query + " ORDER BY started_at DESC, rowid DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [_run_from_row(row) for row in rows]

    def get_run(self, run_id: str) -> RunRecord:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RegistryError(f"no run with id {run_id!r}")
        return _run_from_row(row)

    # -- internals ------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per thread, kept: opening one per call made SQLite re-read the schema and
        # checkpoint the WAL each time, which cost more than the queries. isolation_level=None: no
        # implicit transactions (so no stale snapshot between calls, and each write can begin with
        # BEGIN IMMEDIATE). timeout is SQLite's busy_timeout: wait for the lock, don't fail.
        conn = getattr(self._connections, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._index, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            self._connections.conn = conn
        yield conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._connections, "conn", None)
        if conn is not None:
            conn.close()
            self._connections.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A transaction holding the write lock from its first statement."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _enable_wal(self) -> None:
        # WAL lets readers go on while a publish writes. The mode sticks to the file;
        # switching it needs the file to itself, so only ask when it is not set yet.
        # SQLite answers "locked" at once, without its busy handler, while another connection holds
        # the file (two processes opening a new registry together): wait and ask again.
        for attempt in range(50):
            try:
                with self._connect() as conn:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _remove_stale_staging(self) -> None:
        # Folder times are written by the OS, so their age is measured by the OS clock,
        # not the injected one.
        cutoff = time.time() - _STAGING_MAX_AGE_S
        for folder in self._staging.iterdir():
            try:
                abandoned = folder.is_dir() and folder.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue  # another registry starting up removed it first
            if abandoned:
                shutil.rmtree(folder, ignore_errors=True)

    def _remove_orphan_versions(self, conn: sqlite3.Connection) -> None:
        """Remove version folders without an index row: publishes killed before commit.

        Must run inside a write transaction: a live publish holds the write lock from
        before its rename until its commit, so none can be in flight while this looks.
        """
        rows = conn.execute("SELECT model, version FROM versions")
        indexed = {(row["model"], row["version"]) for row in rows}
        for model_folder in self._models.iterdir():
            if not model_folder.is_dir():
                continue
            for version_folder in model_folder.iterdir():
                match = _VERSION_FOLDER.fullmatch(version_folder.name)
                if match and (model_folder.name, int(match[1])) not in indexed:
                    shutil.rmtree(version_folder, ignore_errors=True)
            _remove_if_empty(model_folder)

    def _version_path(self, model: str, version: int) -> Path:
        return self._models / model / f"v{version}"

    def _get(self, conn: sqlite3.Connection, model: str, version: int) -> ModelVersion:
        row = conn.execute(
            "SELECT * FROM versions WHERE model = ? AND version = ?", (model, version)
        ).fetchone()
        if row is not None:
            return self._version_from_row(row)
        rows = conn.execute(
            "SELECT version FROM versions WHERE model = ? ORDER BY version", (model,)
        )
        known = [row[0] for row in rows]
        if not known:
            raise _no_such_model(conn, model)
        raise RegistryError(
            f"model {model} has no version {version}; versions: {', '.join(map(str, known))}"
        )

    def _production(self, conn: sqlite3.Connection, model: str) -> ModelVersion | None:
        row = conn.execute(
            "SELECT * FROM versions WHERE model = ? AND stage = ?", (model, Stage.PRODUCTION)
        ).fetchone()
        return self._version_from_row(row) if row else None

    def _version_from_row(self, row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            model=row["model"],
            version=row["version"],
            stage=Stage(row["stage"]),
            path=self._version_path(row["model"], row["version"]),
            created_at=_from_text(row["created_at"]),
            run_id=row["run_id"],
            metadata=json.loads(row["metadata"]),
        )


def _create_schema(conn: sqlite3.Connection, index: Path) -> None:
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > _SCHEMA_VERSION:
        raise RegistryError(
            f"registry index {index} has schema version {found}, but this mlops-bot only"
            f" knows schema version {_SCHEMA_VERSION}; upgrade mlops-bot to use this registry"
        )
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _keep_one_candidate(conn: sqlite3.Connection) -> None:
    """Registries written before the candidate was one version: only each model's newest candidate stays one."""
    conn.execute(
        "UPDATE versions SET stage = ? WHERE stage = ? AND version < (SELECT MAX(newer.version) FROM versions"
        " AS newer WHERE newer.model = versions.model AND newer.stage = ?)",
        (Stage.ARCHIVED, Stage.CANDIDATE, Stage.CANDIDATE),
    )


def _check_model_name(model: str) -> None:
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise RegistryError(
            f"invalid model name {model!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )


def _refuse_case_clash(conn: sqlite3.Connection, model: str) -> None:
    # On case-insensitive file systems "Churn" and "churn" would share one folder.
    row = conn.execute(
        "SELECT model FROM versions WHERE lower(model) = lower(?) AND model != ? LIMIT 1",
        (model, model),
    ).fetchone()
    if row is not None:
        raise RegistryError(
            f"cannot publish {model}: it differs from existing model {row[0]} only in case"
        )


def _next_version(conn: sqlite3.Connection, model: str) -> int:
    return conn.execute(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?", (model,)
    ).fetchone()[0]


def _undo_publish(
    staging: Path, published: Path | None, metadata_file: Path, original_metadata: bytes | None
) -> None:
    """Put the staged folder back as it was before a failed publish.

    Errors are swallowed so the publish's own error is the one reported: a folder
    left in models/ has no index row, so it stays invisible and is removed later.
    """
    try:
        if published is not None:
            os.rename(published, staging)
            _remove_if_empty(published.parent)
        if original_metadata is None:
            metadata_file.unlink(missing_ok=True)
        else:
            metadata_file.write_bytes(original_metadata)
    except OSError:
        pass


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or already gone): nothing to tidy


def _end_production(conn: sqlite3.Connection, model: str, now: str, reason: str) -> None:
    conn.execute(
        "UPDATE versions SET stage = ? WHERE model = ? AND stage = ?",
        (Stage.ARCHIVED, model, Stage.PRODUCTION),
    )
    conn.execute(
        "UPDATE production_periods SET ended_at = ?, ended_reason = ?"
        " WHERE model = ? AND ended_at IS NULL",
        (now, reason, model),
    )


def _start_production(
    conn: sqlite3.Connection,
    model: str,
    version: int,
    now: str,
    *,
    started_by: str,
    reason: str,
    run_id: str | None,
    trigger: str,
) -> None:
    conn.execute(
        "UPDATE versions SET stage = ? WHERE model = ? AND version = ?",
        (Stage.PRODUCTION, model, version),
    )
    conn.execute(
        "INSERT INTO production_periods"
        " (model, version, started_at, started_by, reason, run_id, trigger)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (model, version, now, started_by, reason, run_id, trigger),
    )


def _rollback_target(conn: sqlite3.Connection, model: str) -> int | None:
    """The version a rollback restores, or None when there is none.

    The production history is read as a stack: a promotion pushes its version and a
    rollback pops the current one. So after promoting 1, 2, 3, rollbacks restore 2
    and then 1, rather than bouncing between the last two periods.
    """
    stack: list[int] = []
    for row in conn.execute(
        "SELECT version, started_by FROM production_periods WHERE model = ? ORDER BY id", (model,)
    ):
        if row["started_by"] == "rollback":
            stack.pop()
        else:
            stack.append(row["version"])
    return stack[-2] if len(stack) >= 2 else None


def _model_names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT DISTINCT model FROM versions ORDER BY model")]


def _no_such_model(conn: sqlite3.Connection, model: str) -> RegistryError:
    known = _model_names(conn)
    listing = ", ".join(known) if known else "none published yet"
    return RegistryError(f"no model named {model!r}; models: {listing}")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=2)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"{what} is not JSON-serialisable: {error}") from error


def _to_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise RegistryError(
            f"timestamp {moment.isoformat()} has no time zone; use an aware datetime"
        )
    # A fixed-width UTC form, so the index can sort timestamps as text.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _period_from_row(row: sqlite3.Row) -> StageChange:
    return StageChange(
        model=row["model"],
        version=row["version"],
        started_at=_from_text(row["started_at"]),
        ended_at=_from_text(row["ended_at"]) if row["ended_at"] else None,
        reason=row["reason"],
        run_id=row["run_id"],
        trigger=row["trigger"],
        ended_reason=row["ended_reason"],
        started_by=row["started_by"],
    )


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        model=row["model"],
        status=row["status"],
        trigger=row["trigger"],
        reason=row["reason"],
        started_at=_from_text(row["started_at"]),
        finished_at=_from_text(row["finished_at"]) if row["finished_at"] else None,
        failed_stage=row["failed_stage"],
        error=row["error"],
        version=row["version"],
        stages=json.loads(row["stages"]),
        details=json.loads(row["details"]),
    )
