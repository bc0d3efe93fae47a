"""The scheduled drift monitor: each production batch file checked once against the production model.

Batches are files (CSV or Parquet) in ``MLOPS_MONITOR_DIR``; a batch's identity is its name, size
and modification time, so a file is checked once, and again only if it is rewritten.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.events import DriftFound

if TYPE_CHECKING:
    from bot.lifecycle import Lifecycle

__all__ = ["batch_files", "check_latest", "check_new_batches"]

log = logging.getLogger("mlops_bot.monitor")

_SUFFIXES = {".csv", ".parquet", ".pq"}


def batch_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES),
                  key=lambda p: (p.stat().st_mtime, p.name))


def batch_id(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}@{stat.st_size}:{int(stat.st_mtime)}"


def check_new_batches(lifecycle: Lifecycle) -> int:
    """Check every batch not seen before; returns how many were checked."""
    model = lifecycle.project.name
    if lifecycle.registry.production(model) is None:
        return 0  # nothing to compare with yet; the batches wait for the first model
    checked = 0
    for path in batch_files(lifecycle.settings.batches_dir):
        identity = batch_id(path)
        if lifecycle.store.get_state("batches", f"{model}:{identity}"):
            continue
        event = _check(lifecycle, model, path, identity, origin=None)
        lifecycle.handle(event, source="monitor")
        lifecycle.store.put_state("batches", f"{model}:{identity}", {"checked_at": lifecycle.clock().isoformat(),
                                                                     "drifted": event.drifted})
        checked += 1
    return checked


def check_latest(lifecycle: Lifecycle, model: str, *, cause: str, origin: dict[str, Any]) -> DriftFound | None:
    """For ``/drift``: check the newest batch now, whether or not it was checked before."""
    files = batch_files(lifecycle.settings.batches_dir)
    production = lifecycle.registry.production(model)
    if production is None:
        return DriftFound(model=model, version=0, batch=f"none (asked by {cause})", drifted=False, severity="none",
                          summary={"origin": origin}, data_problem="there is no production model to compare with yet")
    if not files:
        return DriftFound(model=model, version=production.version, batch=f"none (asked by {cause})", drifted=False,
                          severity="none", summary={"origin": origin},
                          data_problem=f"no batch files in {lifecycle.settings.batches_dir}")
    return _check(lifecycle, model, files[-1], f"{batch_id(files[-1])}#{cause}", origin=origin)


def _check(lifecycle: Lifecycle, model: str, path: Path, identity: str, *, origin: dict[str, Any] | None) -> DriftFound:
    from pipeline.drift import DriftConfig, DriftInputError, check_drift
    from pipeline.package import ArtifactError, load_model
    from pipeline.spec import load_project

    production = lifecycle.registry.production(model)
    spec = load_project(lifecycle.project.path)
    now = lifecycle.clock()
    summary: dict[str, Any] = {"origin": origin, "checked_at": now.isoformat()}
    try:
        estimator = load_model(production.path, extra_trusted=tuple(spec.model.trusted_types), project_root=spec.root)
    except ArtifactError as exc:
        log.warning("prediction drift skipped for %s v%s: %s", model, production.version, exc)
        estimator = None
    report_dir = lifecycle.settings.data_dir.expanduser().resolve() / "reports" / model / _safe(identity)
    try:
        report = check_drift(production.path, path, config=DriftConfig.from_dict(spec.drift), model=estimator,
                             target=spec.data.target if _has_column(path, spec.data.target) else None,
                             model_name=model)
    except DriftInputError as exc:
        return DriftFound(model=model, version=production.version, batch=identity, drifted=False, severity="none",
                          summary=summary, data_problem=str(exc))
    report.write(report_dir)
    problem = _schema_problem(report.schema_changes)
    if problem:
        # A batch that lost columns or changed types is broken data, not drift: retraining on it would not help.
        return DriftFound(model=model, version=production.version, batch=identity, drifted=False, severity="none",
                          summary=summary, report_dir=str(report_dir), data_problem=problem)
    features = [feature.name for feature in report.drifted_features]
    summary |= {"features": features, "markdown": report.to_markdown(link=str(report_dir / "report.md"))}
    lifecycle.store.put_state("last_drift", model, {
        "drifted": report.drifted, "severity": report.severity, "checked_at": now.isoformat(), "batch": identity,
        "features": features, "version": production.version,
    })
    log.info("drift check of %s v%s on %s: %s", model, production.version, path.name,
             f"{report.severity} drift in {len(features)} feature(s)" if report.drifted else "no drift")
    return DriftFound(model=model, version=production.version, batch=identity, drifted=report.drifted,
                      severity=report.severity, summary=summary, report_dir=str(report_dir))


def _schema_problem(changes) -> str:
    parts = []
    if changes.get("missing_columns"):
        parts.append("missing column(s) " + ", ".join(changes["missing_columns"]))
    if changes.get("type_changes"):
        parts.append("column(s) of another type: " + ", ".join(
            f"{c['name']} ({c['reference']} → {c['current']})" for c in changes["type_changes"]))
    return "; ".join(parts) + ("; fix the export that writes these batches" if parts else "")


def _has_column(path: Path, column: str) -> bool:
    """Whether the batch carries labels (for performance drift), read from its header only."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                return column in handle.readline().strip().split(",")
        import pyarrow.parquet as pq

        return column in pq.read_schema(path).names
    except (OSError, ValueError):
        return False


def _safe(identity: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", identity)
