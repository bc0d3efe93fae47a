"""The bot's old folder registry (``MLOPS_DATA_DIR/registry``) imported into MLflow, once.

A team that switches to MLflow keeps what the bot published before: each version of the folder
registry becomes a registered model version (its artifact folder, metadata and the bot's run id),
its run record an MLflow run, its production periods the version tags that hold the alias
history (oldest first), and the version in production gets the production alias.

Exactly once, across a crash part-way: a version is looked for by the bot's run id before it is
published (as every publish does), the history tags are keyed by the move's time, and the alias
is set only where it is not already. Once everything is in, a marker in the data dir
(``mlflow/imported-registry.json``) names what was imported and where, so that later starts ask
MLflow nothing; a folder version the marker does not name (the folder registry used again
meanwhile) is imported at the next start. The old folder is read, never changed or removed:
``import_note`` says it can be removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from integrations.mlflow_registry import MlflowRegistry
from pipeline.registry_port import (
    AliasMove,
    ModelVersion,
    RegistryError,
    RunRecord,
    Stage,
    StageChange,
)

__all__ = [
    "MARKER_NAME",
    "ImportedRegistry",
    "import_folder_registry",
    "import_note",
    "marker_path",
    "moves_from_periods",
]

_log = logging.getLogger(__name__)

MARKER_NAME = "imported-registry.json"
_IMPORTED_BY = "import from the folder registry"


@dataclass(frozen=True)
class ImportedRegistry:
    """What one import put into MLflow: (model, folder version, MLflow version) of each version
    published now; versions found in MLflow already (an import resumed after a crash) are not listed."""

    source: Path
    published: tuple[tuple[str, int, int], ...]


def marker_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().resolve() / "mlflow" / MARKER_NAME


def import_folder_registry(folder: Path, target: MlflowRegistry, *, data_dir: Path) -> ImportedRegistry | None:
    """Import the folder registry at ``folder`` into ``target``; None when there is nothing to import
    (no folder registry, no versions, or all of them imported into this MLflow before).

    Raises ``RegistryError`` (one line) when MLflow refuses or cannot be reached: nothing is lost,
    the next call carries on where this one stopped.
    """
    folder = Path(folder).expanduser().resolve()
    if not (folder / "index.sqlite").is_file():
        return None  # never used: there is nothing to import, and nothing is created
    marker = marker_path(data_dir)
    old = _FolderRegistry(folder)
    try:
        versions = old.versions()
        if not versions or _imported_before(marker, target.tracking_uri, versions):
            return None
        published: list[tuple[str, int, int]] = []
        imported: list[dict[str, Any]] = []
        for model in sorted({v.model for v in versions}):
            own = [v for v in versions if v.model == model]
            numbers: dict[int, int] = {}  # folder version -> MLflow version
            for version in own:  # oldest first, so an empty MLflow gives them the same numbers
                numbers[version.version], is_new = _import_version(old, target, version)
                if is_new:
                    published.append((model, version.version, numbers[version.version]))
                imported.append({"model": model, "version": version.version, "run_id": version.run_id,
                                 "mlflow_version": numbers[version.version]})
            _import_history(old, target, model, own, numbers)
    finally:
        old.close()
    _write_marker(marker, folder, target.tracking_uri, imported)
    result = ImportedRegistry(folder, tuple(published))
    _log.warning("imported %d version(s) of %s from the folder registry %s into MLflow at %s; the folder is no "
                 "longer read and can be removed", len(imported), ", ".join(sorted({v.model for v in versions})),
                 folder, _shown(target.tracking_uri))
    return result


def import_note(data_dir: Path) -> str | None:
    """One line for ``doctor`` while an imported folder registry is still on disk, else None."""
    marker = marker_path(data_dir)
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    source = Path(recorded.get("source", ""))
    if not recorded.get("source") or not source.is_dir():
        return None
    return (f"the folder registry {source} was imported into MLflow ({len(recorded.get('versions', []))} "
            f"version(s), {recorded.get('imported_at', 'earlier')}); it is no longer read and can be removed")


def moves_from_periods(periods: Iterable[StageChange], numbers: dict[int, int], alias: str) -> list[AliasMove]:
    """The folder registry's production periods as alias moves, oldest first: each period begins
    with a move to its version; a period that ends with no other beginning then ends with a removal.
    Times are kept, made strictly increasing (moves of the same moment would sort by version)."""
    moves: list[AliasMove] = []
    ordered = list(periods)
    held: int | None = None

    def at(moment: datetime) -> datetime:
        return moment if not moves or moment > moves[-1].at else moves[-1].at + timedelta(microseconds=1)

    for index, period in enumerate(ordered):
        version = numbers[period.version]
        moves.append(AliasMove(alias=alias, version=version, previous=held, at=at(period.started_at),
                               action="rollback" if period.started_by == "rollback" else "promote",
                               reason=period.reason, trigger=period.trigger, by=period.by or "mlops-bot",
                               run_id=period.run_id, command=period.command))
        held = version
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        if period.ended_at is not None and (following is None or following.started_at > period.ended_at):
            moves.append(AliasMove(alias=alias, version=None, previous=version, at=at(period.ended_at),
                                   action="removed", reason=period.ended_reason or "left production",
                                   trigger=period.trigger, by="mlops-bot"))
            held = None
    return moves


def _import_version(old: _FolderRegistry, target: MlflowRegistry, version: ModelVersion) -> tuple[int, bool]:
    """The version's number in MLflow, publishing it first unless MLflow has it (found by run id)."""
    run_id = version.run_id or f"imported-{version.model}-v{version.version}"
    found = target.find_by_run_id(version.model, run_id)
    if found is not None:
        return found.version, False
    if not version.path.is_dir():
        raise RegistryError(f"{version.model} v{version.version} of the folder registry has no artifact folder "
                            f"{version.path}; restore it from a backup, or move {old.folder} away to start afresh")
    staging = target.staging_dir()
    shutil.copytree(version.path, staging, dirs_exist_ok=True)
    metadata = {k: v for k, v in version.metadata.items() if k not in ("model", "version")}
    created = target.publish(version.model, staging, metadata, run_id=run_id,
                             candidate=version.stage is Stage.CANDIDATE, created_at=version.created_at)
    # None when the version outlived its run record: the version is what matters.
    record = old.get_run(version.run_id) if version.run_id else None
    if record is not None:
        target.record_run(record)
    return created.version, True


def _import_history(old: _FolderRegistry, target: MlflowRegistry, model: str, versions: list[ModelVersion],
                    numbers: dict[int, int]) -> None:
    """The production history as the versions' move tags, and the production alias, unless MLflow
    already has a production version of its own (then its history is MLflow's, and is left alone)."""
    in_production = next((v.version for v in versions if v.stage is Stage.PRODUCTION), None)
    production = numbers.get(in_production) if in_production is not None else None
    held = target.aliases(model).get(target.production_alias)
    if held is not None and held != production:
        _log.warning("MLflow already has %s v%s as %s: the folder registry's production history is not imported",
                     model, held, target.production_alias)
        return
    periods = [p for p in old.history(model) if p.version in numbers]
    target.import_moves(model, moves_from_periods(periods, numbers, target.production_alias), production=production)


class _FolderRegistry:
    """The old folder registry, read only: ``index.sqlite`` (tables ``versions``, ``production_periods``,
    ``runs``; schema version 1) and each version's folder ``models/<model>/v<N>/``.

    Nothing in the folder is written. The index is opened read-only; as ``immutable`` when its
    write-ahead log is empty or gone (a registry closed cleanly), since even a read-only reader of a
    WAL database makes the ``-wal`` and ``-shm`` files beside it. A log with content (the last
    registry was killed) must be read, so then only ``mode=ro``. A version folder without an index
    row (a publish killed before it committed) is not a version, as it never was for the folder registry.
    """

    _SCHEMA_VERSION = 1

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        index = folder / "index.sqlite"
        log = folder / "index.sqlite-wal"
        unlogged = not log.exists() or log.stat().st_size == 0
        self._conn = sqlite3.connect(f"{index.as_uri()}?mode=ro{'&immutable=1' if unlogged else ''}", uri=True)
        self._conn.row_factory = sqlite3.Row
        found = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if found > self._SCHEMA_VERSION:
            self._conn.close()
            raise RegistryError(f"the folder registry index {index} has schema version {found}, newer than the "
                                f"{self._SCHEMA_VERSION} this mlops-bot imports; import it with the mlops-bot that "
                                "wrote it")

    def versions(self) -> list[ModelVersion]:
        """Every version, ordered by model then version. Registries written before a model had one
        candidate may hold several: only the newest stays a candidate, as the folder registry read them."""
        rows = self._conn.execute("SELECT * FROM versions ORDER BY model, version").fetchall()
        newest_candidate = {row["model"]: row["version"] for row in rows if row["stage"] == Stage.CANDIDATE}
        return [ModelVersion(model=row["model"], version=row["version"],
                             stage=(Stage.ARCHIVED if row["stage"] == Stage.CANDIDATE
                                    and newest_candidate[row["model"]] != row["version"] else Stage(row["stage"])),
                             path=self.folder / "models" / row["model"] / f"v{row['version']}",
                             created_at=datetime.fromisoformat(row["created_at"]), run_id=row["run_id"],
                             metadata=json.loads(row["metadata"]))
                for row in rows]

    def history(self, model: str) -> list[StageChange]:
        """Which version was in production from when to when and why, oldest first."""
        rows = self._conn.execute("SELECT * FROM production_periods WHERE model = ? ORDER BY started_at, id",
                                  (model,)).fetchall()
        return [StageChange(model=row["model"], version=row["version"],
                            started_at=datetime.fromisoformat(row["started_at"]),
                            ended_at=datetime.fromisoformat(row["ended_at"]) if row["ended_at"] else None,
                            reason=row["reason"], run_id=row["run_id"], trigger=row["trigger"],
                            ended_reason=row["ended_reason"], started_by=row["started_by"])
                for row in rows]

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return RunRecord(run_id=row["run_id"], model=row["model"], status=row["status"], trigger=row["trigger"],
                         reason=row["reason"], started_at=datetime.fromisoformat(row["started_at"]),
                         finished_at=datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None,
                         failed_stage=row["failed_stage"], error=row["error"], version=row["version"],
                         stages=json.loads(row["stages"]), details=json.loads(row["details"]))

    def close(self) -> None:
        self._conn.close()


def _imported_before(marker: Path, tracking_uri: str, versions: list[ModelVersion]) -> bool:
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("tracking_uri") != _fingerprint(tracking_uri):
        return False  # another MLflow: it has none of them yet
    done = {(entry["model"], entry["version"], entry["run_id"]) for entry in recorded.get("versions", [])}
    return all((v.model, v.version, v.run_id) in done for v in versions)


def _write_marker(marker: Path, folder: Path, tracking_uri: str, imported: list[dict[str, Any]]) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"source": str(folder), "tracking_uri": _fingerprint(tracking_uri),
                       "imported_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                       "versions": imported}, indent=2)
    partial = marker.with_suffix(".partial")
    partial.write_text(text + "\n")
    os.replace(partial, marker)  # whole or absent: a crash leaves no half a marker


def _fingerprint(tracking_uri: str) -> str:
    """Which MLflow, without writing its URI down: a URI may carry a password."""
    return "sha256:" + hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]


def _shown(tracking_uri: str) -> str:
    """The URI fit for a log line: without a password a user may have put in it."""
    parsed = urlparse(tracking_uri)
    if parsed.password is None:
        return tracking_uri
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")).geturl()
