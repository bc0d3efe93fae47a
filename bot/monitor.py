"""The scheduled monitor: each production batch checked once against the production model, and
the model's real performance measured as labels arrive.

Batches are files (CSV or Parquet) in ``MLOPS_MONITOR_DIR``; a batch's identity is its name, size
and modification time, so a file is checked once, and again only if it is rewritten. A batch with
the project's target column carries its labels; labels that arrive later are files in
``MLOPS_LABELS_DIR`` joined to earlier batches by the project's id column. For classifiers the
performance is also estimated from the model's calibrated probabilities before any label arrives,
and the estimate's error is reported once the labels are in.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.events import DriftFound

if TYPE_CHECKING:
    from bot.lifecycle import Lifecycle

__all__ = ["batch_files", "check_latest", "check_new_batches", "check_new_labels"]

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
    """Check every batch not seen before, then any labels that arrived; returns how many batches were checked."""
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
    check_new_labels(lifecycle)
    return checked


def check_new_labels(lifecycle: Lifecycle) -> int:
    """Measure the production model on batches whose labels arrived since the last look, and over
    the ``[retrain]`` window of labelled rows.

    Returns how many batches got late labels. Nothing is read unless the label files changed or a
    labelled batch arrived since the last look.
    """
    model = lifecycle.project.name
    production = lifecycle.registry.production(model)
    labels_dir = lifecycle.settings.label_files_dir
    files = batch_files(labels_dir)
    seen = lifecycle.store.get_state("labels_seen", model) or {}
    identities = sorted(batch_id(path) for path in files)
    if production is None or (seen.get("files") == identities and not seen.get("stale")):
        return 0
    # Imported only when there are labels to read: pipeline.production brings pandas and pyarrow
    # (some 80 MB), which an idle bot's every monitor cycle would otherwise keep resident.
    from pipeline.production import read_labelled_production
    from pipeline.spec import load_project

    spec = load_project(lifecycle.project.path)
    labelled = read_labelled_production(
        lifecycle.settings.batches_dir, labels_dir, target=spec.data.target, id_column=spec.data.id_column,
        now=lifecycle.clock(), max_age_days=spec.retrain.max_age_days, max_rows=spec.retrain.max_rows,
        classes=(production.metadata.get("target") or {}).get("classes"),
    )
    for problem in labelled.problems:
        log.warning("labels for %s: %s", model, problem)
    estimator = _load(lifecycle, spec, production)
    updated = 0
    if estimator is not None and not labelled.frame.empty:
        counts = lifecycle.store.get_state("labelled_batches", model) or {}
        for batch, rows in labelled.by_batch().items():
            if counts.get(str(batch), 0) >= len(rows):
                continue
            measured = _measure(spec, production, estimator, rows)
            if measured is None:
                continue
            counts[str(batch)] = len(rows)
            event = _performance_event(lifecycle, spec, production, str(batch), len(rows), measured, late=True)
            lifecycle.handle(event, source="monitor")
            updated += 1
        lifecycle.store.put_state("labelled_batches", model, counts)
        _record_window(lifecycle, spec, production, estimator, labelled)
    lifecycle.store.put_state("labels_seen", model, {"files": identities, "problems": list(labelled.problems),
                                                     "unmatched": labelled.unmatched_labels})
    return updated


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
    report_dir = report_folder(lifecycle.settings, model, identity)
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
        # A batch that lost columns is broken data, not drift: retraining on it would not help.
        return DriftFound(model=model, version=production.version, batch=identity, drifted=False, severity="none",
                          summary=summary, report_dir=str(report_dir), data_problem=problem)
    features = [feature.name for feature in report.drifted_features]
    summary |= {"features": features, "markdown": report.to_markdown(link=str(report_dir / "report.md")),
                "batch_path": str(path)}
    from bot.planner import SEVERITY_ORDER

    performance = _batch_performance(lifecycle, spec, production, estimator, path) if origin is None else None
    if performance is not None:
        summary["performance"] = performance
    if (report.drifted and SEVERITY_ORDER[report.severity] >= SEVERITY_ORDER[lifecycle.settings.drift_min_severity]) \
            or (performance or {}).get("finding"):
        _remember_episode_batch(lifecycle, model, path, identity)
    lifecycle.store.put_state("last_drift", model, {
        "drifted": report.drifted, "severity": report.severity, "checked_at": now.isoformat(), "batch": identity,
        "features": features, "version": production.version,
    })
    log.info("drift check of %s v%s on %s: %s", model, production.version, path.name,
             f"{report.severity} drift in {len(features)} feature(s)" if report.drifted else "no drift")
    return DriftFound(model=model, version=production.version, batch=identity, drifted=report.drifted,
                      severity=report.severity, summary=summary, report_dir=str(report_dir))


def _load(lifecycle: Lifecycle, spec, production):
    from pipeline.package import ArtifactError, load_model

    try:
        return load_model(production.path, extra_trusted=tuple(spec.model.trusted_types), project_root=spec.root)
    except ArtifactError as exc:
        log.warning("performance of %s v%s not measured: %s", production.model, production.version, exc)
        return None


def _measure(spec, production, estimator, rows) -> dict[str, Any] | None:
    """The production model's metrics on labelled production rows (None when they cannot be scored)."""
    from pipeline.data import DataError, FeatureSchema
    from pipeline.performance import measured_performance

    try:
        features = FeatureSchema.from_list(production.metadata["features"]).select(rows)
        metrics = measured_performance(estimator, features, rows[spec.data.target],
                                       task=production.metadata.get("task", "classification"), metrics=spec.metrics.all)
    except (DataError, ValueError, TypeError) as exc:
        log.warning("performance of %s v%s on %d labelled rows not measured: %s", production.model,
                    production.version, len(rows), exc)
        return None
    return {"rows": len(rows), "metrics": metrics}


def _estimate(production, estimator, frame) -> dict[str, float] | None:
    """Performance expected from the model's calibrated probabilities, before any label arrives."""
    from pipeline.data import DataError, FeatureSchema
    from pipeline.performance import Calibration, estimate_performance
    from pipeline.validate import model_outputs

    calibration = production.metadata.get("calibration")
    if not calibration:
        return None
    try:
        features = FeatureSchema.from_list(production.metadata["features"]).select(frame)
        _, probabilities = model_outputs(estimator, features, probabilities=True)
    except (DataError, ValueError, TypeError) as exc:
        log.warning("performance of %s v%s not estimated: %s", production.model, production.version, exc)
        return None
    if probabilities is None:
        return None
    try:
        return estimate_performance(Calibration.from_dict(calibration), probabilities, list(estimator.classes_))
    except ValueError as exc:  # a damaged calibration in the metadata: no estimate, said once in the log
        log.warning("performance of %s v%s not estimated: %s", production.model, production.version, exc)
        return None


def _finding(spec, production, metrics: dict[str, float], *, what: str) -> dict[str, Any] | None:
    """A drop of the primary metric beyond ``[monitor] max_drop``, or a gate limit broken, on production data."""
    from pipeline.performance import PerformanceError, limits_broken, performance_drop

    validated = production.metadata.get("metrics") or {}
    try:
        found = performance_drop(metrics, validated, primary=spec.metrics.primary, data=what,
                                 direction=spec.metrics.primary_direction, max_drop=spec.performance_max_drop,
                                 estimated="estimated" in what)
    except PerformanceError as exc:
        log.warning("performance of %s v%s not judged: %s", production.model, production.version, exc)
        found = None
    problems = ([found.description] if found is not None else []) + limits_broken(metrics, spec.gates.limits,
                                                                                  data=what)
    if not problems:
        return None
    severe = found is not None and found.drop > 2 * spec.performance_max_drop
    return {"problems": problems, "severity": "high" if severe else "medium"}


def _batch_performance(lifecycle: Lifecycle, spec, production, estimator, path: Path) -> dict[str, Any] | None:
    """For a new batch: the estimate (classifiers with a calibration) and, for a labelled batch, the
    measured metrics and any finding; remembered per batch so late labels can say how far the
    estimate was off."""
    from pipeline.data import DataError, read_table

    if estimator is None:
        return None
    try:
        frame = read_table(path)
    except DataError:
        return None  # the drift check has said what is wrong with the file
    model = production.model
    estimated = _estimate(production, estimator, frame)
    measured = _measure(spec, production, estimator, frame) if spec.data.target in frame.columns else None
    entry: dict[str, Any] = {"estimated": estimated, "version": production.version,
                             "validated": production.metadata.get("metrics") or {},
                             "checked_at": lifecycle.clock().isoformat()}
    finding = None
    if measured is not None:
        entry["measured"] = measured
        finding = _finding(spec, production, measured["metrics"], what=f"batch {path.name}")
        if estimated:
            entry["estimate_error"] = _estimate_error(estimated, measured["metrics"])
        counts = lifecycle.store.get_state("labelled_batches", model) or {}
        lifecycle.store.put_state("labelled_batches", model, {**counts, path.name: measured["rows"]})
        seen = lifecycle.store.get_state("labels_seen", model) or {}
        lifecycle.store.put_state("labels_seen", model, {**seen, "stale": True})  # the window has new rows
    elif estimated and spec.monitor.estimated_trigger:
        finding = _finding(spec, production, estimated, what=f"batch {path.name} (estimated)")  # the word marks it
    entry["finding"] = finding
    _remember_batch(lifecycle, model, path.name, entry)
    return entry


def _performance_event(lifecycle: Lifecycle, spec, production, batch: str, rows: int, measured: dict[str, Any],
                       *, late: bool) -> DriftFound:
    """Late labels measured on an earlier batch: an event like a drift check, with performance only."""
    model = production.model
    state = lifecycle.store.get_state("performance", model) or {}
    earlier = (state.get("batches") or {}).get(batch) or {}
    entry = {**earlier, "measured": measured, "version": production.version, "late_labels": late,
             "validated": production.metadata.get("metrics") or {}, "checked_at": lifecycle.clock().isoformat()}
    if earlier.get("estimated"):
        entry["estimate_error"] = _estimate_error(earlier["estimated"], measured["metrics"])
    entry["finding"] = _finding(spec, production, measured["metrics"], what=f"batch {batch} (late labels)")
    _remember_batch(lifecycle, model, batch, entry)
    if entry["finding"]:
        _remember_episode_batch(lifecycle, model, lifecycle.settings.batches_dir / batch, batch)
    return DriftFound(model=model, version=production.version, batch=f"{batch}#labels:{rows}", drifted=False,
                      severity="none", summary={"checked_at": entry["checked_at"], "performance": entry,
                                                "batch_path": str(lifecycle.settings.batches_dir / batch)})


def _estimate_error(estimated: dict[str, float], realised: dict[str, float]) -> dict[str, float]:
    from pipeline.performance import estimate_error

    return estimate_error(estimated, realised)


def _remember_batch(lifecycle: Lifecycle, model: str, batch: str, entry: dict[str, Any]) -> None:
    """The newest batches' performance, for status, the digest and the ticket (the last 20 kept)."""
    state = lifecycle.store.get_state("performance", model) or {}
    batches = {name: value for name, value in (state.get("batches") or {}).items() if name != batch}
    batches[batch] = entry
    lifecycle.store.put_state("performance", model, {**state, "batches": dict(list(batches.items())[-20:]),
                                                     "last_batch": batch})


def _record_window(lifecycle: Lifecycle, spec, production, estimator, labelled) -> None:
    """The production model over every labelled row in the ``[retrain]`` window."""
    measured = _measure(spec, production, estimator, labelled.frame)
    if measured is None:
        return
    state = lifecycle.store.get_state("performance", production.model) or {}
    lifecycle.store.put_state("performance", production.model, {
        **state, "window": {**measured, "version": production.version, "checked_at": lifecycle.clock().isoformat(),
                            "validated": production.metadata.get("metrics") or {}}})


def _remember_episode_batch(lifecycle: Lifecycle, model: str, path: Path, identity: str) -> None:
    """A batch that raised (or fed) the open episode: re-checked once a retrain is promoted."""
    state = lifecycle.store.get_state("episode_batches", model) or {}
    batches = [entry for entry in state.get("batches", []) if entry["path"] != str(path)]
    batches.append({"path": str(path), "batch": identity})
    lifecycle.store.put_state("episode_batches", model, {"batches": batches[-20:]})


def _schema_problem(changes) -> str:
    # Lost columns are broken data; a column whose type changed is drift of that feature (the report says so).
    if not changes.get("missing_columns"):
        return ""
    return ("missing column(s) " + ", ".join(changes["missing_columns"])
            + "; fix the export that writes these batches")


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


def report_folder(settings, model: str, batch: str) -> Path:
    """Where the drift report of ``batch`` (a batch's identity) for ``model`` is written."""
    return settings.data_dir.expanduser().resolve() / "reports" / model / re.sub(r"[^A-Za-z0-9._-]+", "_", batch)
