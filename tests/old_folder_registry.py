"""A model registry in the format mlops-bot kept before MLflow (``MLOPS_DATA_DIR/registry``), written
for the import tests: ``index.sqlite`` with the schema below (schema version 1, WAL) and each version's
folder ``models/<model>/v<N>/``. Only what an old registry held is written; nothing here reads it
(the import's own reader does).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pipeline.registry_port import RunRecord

# The folder registry's schema, as its last version (pipeline/registry.py, schema version 1) wrote it.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS versions (
        model      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        stage      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        metadata   TEXT NOT NULL,
        PRIMARY KEY (model, version))""",
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


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class OldFolderRegistry:
    """Writes an old-format folder registry at ``root``, reading the time from ``clock``."""

    def __init__(self, root: Path, *, clock: Callable[[], datetime]) -> None:
        self.root = Path(root)
        self._clock = clock
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.root / "index.sqlite", isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        for statement in SCHEMA:
            self._conn.execute(statement)
        self._conn.execute("PRAGMA user_version = 1")

    def publish(self, model: str, files: dict[str, bytes], metadata: dict, *, run_id: str,
                stage: str = "archived") -> tuple[int, datetime]:
        """A new version holding ``files`` and its metadata.json; returns its number and creation time."""
        version = self._conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?",
                                     (model,)).fetchone()[0]
        folder = self.root / "models" / model / f"v{version}"
        folder.mkdir(parents=True)
        full = {**metadata, "model": model, "version": version}
        for name, content in files.items():
            (folder / name).write_bytes(content)
        (folder / "metadata.json").write_text(json.dumps(full, indent=2))
        created_at = self._clock()
        self._conn.execute("INSERT INTO versions (model, version, stage, created_at, run_id, metadata)"
                           " VALUES (?, ?, ?, ?, ?, ?)",
                           (model, version, stage, _text(created_at), run_id, json.dumps(full, indent=2)))
        return version, created_at

    def record_run(self, run: RunRecord) -> None:
        self._conn.execute(
            "INSERT INTO runs (run_id, model, status, trigger, reason, started_at, finished_at, failed_stage, error,"
            " version, stages, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, run.model, run.status, run.trigger, run.reason, _text(run.started_at),
             _text(run.finished_at) if run.finished_at else None, run.failed_stage, run.error, run.version,
             json.dumps(run.stages), json.dumps(run.details)))

    def put_in_production(self, model: str, version: int, *, reason: str, trigger: str, run_id: str | None = None,
                          started_by: str = "promote") -> datetime:
        """End the open production period (the version before archived) and begin one for ``version``,
        as the folder registry's promote (``started_by="promote"``) and rollback (``"rollback"``) did;
        returns when the new period began."""
        moment = self._clock()
        now = _text(moment)
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute("UPDATE versions SET stage = 'archived' WHERE model = ? AND stage = 'production'",
                           (model,))
        self._conn.execute("UPDATE production_periods SET ended_at = ?, ended_reason = ? WHERE model = ? AND "
                           "ended_at IS NULL", (now, reason, model))
        self._conn.execute("UPDATE versions SET stage = 'production' WHERE model = ? AND version = ?",
                           (model, version))
        self._conn.execute("INSERT INTO production_periods (model, version, started_at, started_by, reason, run_id,"
                           " trigger) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (model, version, now, started_by, reason, run_id, trigger))
        self._conn.execute("COMMIT")
        return moment

    def close(self) -> None:
        self._conn.close()
