"""One pipeline run: train → package → validate → deploy, each stage timed and recorded.

A failure in any stage ends the run with that stage and the reason; nothing becomes visible in the
registry unless validation finished, and production changes only when every gate passed and the
deploy command (if any) succeeded. "Not promoted" is a normal outcome with reasons, not an error.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.registry import ModelRegistry, RunRecord

__all__ = ["RunResult", "StageRecord", "run_pipeline"]

STAGES = ("train", "package", "validate", "deploy")


@dataclass
class StageRecord:
    name: str
    status: str = "pending"  # pending, running, succeeded, failed, skipped
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 4),
            "detail": self.detail,
        }


@dataclass
class RunResult:
    run_id: str
    model: str
    trigger: str
    reason: str
    started_at: datetime
    status: str = "running"  # running, succeeded (promoted or kept as candidate), not_promoted, failed
    finished_at: datetime | None = None
    stages: list[StageRecord] = field(default_factory=lambda: [StageRecord(name) for name in STAGES])
    failed_stage: str | None = None
    error: str | None = None
    version: int | None = None
    promoted: bool = False
    validation: dict[str, Any] | None = None

    @property
    def reasons(self) -> list[str]:
        if self.error:
            return [self.error]
        return list((self.validation or {}).get("reasons", []))

    def stage(self, name: str) -> StageRecord:
        return next(stage for stage in self.stages if stage.name == name)

    def to_record(self) -> RunRecord:
        return RunRecord(
            run_id=self.run_id,
            model=self.model,
            status=self.status,
            trigger=self.trigger,
            reason=self.reason,
            started_at=self.started_at,
            finished_at=self.finished_at,
            failed_stage=self.failed_stage,
            error=self.error,
            version=self.version,
            stages=[stage.to_dict() for stage in self.stages],
            details={"promoted": self.promoted, "validation": self.validation},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "status": self.status,
            "trigger": self.trigger,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "failed_stage": self.failed_stage,
            "error": self.error,
            "version": self.version,
            "promoted": self.promoted,
            "reasons": self.reasons,
            "stages": [stage.to_dict() for stage in self.stages],
            "validation": self.validation,
        }


def run_pipeline(
    project_dir: str | Path,
    registry: ModelRegistry,
    *,
    trigger: str = "manual",
    reason: str = "",
    run_id: str | None = None,
    context: dict[str, Any] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_progress: Callable[[RunResult], None] | None = None,
    promote: bool = True,
) -> RunResult:
    """Run the whole pipeline for the project in ``project_dir``; never raises for the project's faults.

    ``context`` is stored with the version (e.g. the commit and change that triggered the run), and
    ``on_progress`` is called after each stage, so a caller can show progress as it happens.
    ``promote=False`` validates without deploying (the deploy stage is skipped).
    """
    from pipeline.spec import SpecError, load_project

    result = RunResult(
        run_id=run_id or f"run-{clock():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
        model=Path(project_dir).name,
        trigger=trigger,
        reason=reason,
        started_at=clock(),
    )
    try:
        spec = load_project(project_dir)
    except SpecError as exc:
        return _finish(result, registry, clock, on_progress, failed=("train", str(exc)))
    result.model = spec.name
    registry.record_run(result.to_record())
    staging = registry.staging_dir()
    try:
        _run_stages(spec, registry, staging, result, clock, on_progress, context or {}, promote)
    except _StageFailed as failure:
        return _finish(result, registry, clock, on_progress, failed=(failure.stage, failure.reason))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _finish(result, registry, clock, on_progress)


class _StageFailed(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def _run_stages(spec, registry, staging, result, clock, on_progress, context, promote) -> None:
    def stage(name: str):
        return _Stage(result.stage(name), clock, on_progress, result)

    earlier = next((v for v in registry.versions(spec.name) if v.run_id == result.run_id), None)
    if earlier is None:
        version = _build_and_validate(spec, registry, staging, result, stage, context)
    else:
        # The same run was interrupted after its version was published: finish it, do not publish twice.
        version = earlier
        result.version, result.validation = earlier.version, earlier.metadata.get("validation")
        for name in ("train", "package", "validate"):
            record = result.stage(name)
            record.status, record.detail = "succeeded", f"done before a restart (v{earlier.version})"
    _deploy(spec, registry, version, result, stage, promote)


def _build_and_validate(spec, registry, staging, result, stage, context):
    from pipeline.data import load_dataset, split_dataset
    from pipeline.package import load_model, package, record_reference_metric, write_descriptor
    from pipeline.train import build_estimator, train
    from pipeline.validate import validate

    with stage("train") as record:
        dataset = load_dataset(spec.data, spec.root)
        estimator, task = build_estimator(spec.model, dataset.features.head(0), seed=spec.data.split.seed, project_root=spec.root)
        x_train, x_test, y_train, y_test = split_dataset(dataset, spec.data, stratify_labels=task == "classification")
        trained = train(spec.model, x_train, y_train, seed=spec.data.split.seed, project_root=spec.root)
        record.detail = f"{trained.training_rows} rows, {len(trained.schema.names)} features"

    with stage("package") as record:
        metadata = package(
            trained, staging, model_name=spec.name, training_features=x_train, training_target=y_train,
            primary_metric=spec.metrics.primary, keep_raw=spec.package.keep_raw_data,
        )
        metadata |= {
            "description": spec.project.description,
            "estimator": spec.model.estimator,
            "trusted_types": spec.model.trusted_types,
            "created_at": result.started_at.isoformat(),
            "run": {"run_id": result.run_id, "trigger": result.trigger, "reason": result.reason},
            "context": context,
            "data": {
                "files": [_relative(path, spec.root) for path in dataset.files],
                "fingerprint": dataset.fingerprint,
                "rows": len(dataset.features),
                "target": spec.data.target,
                "split": spec.data.split.model_dump(),
            },
            "primary_metric": {"name": spec.metrics.primary, "direction": str(spec.metrics.primary_direction)},
        }
        record.detail = "model, metadata, model card and reference profile written"

    with stage("validate") as record:
        production = registry.production(spec.name)
        champion = known = None
        if production is not None:
            known = _scores_on_the_same_rows(production.metadata, metadata["data"], spec.metrics.all)
            model = None if known is not None else load_model(
                production.path, extra_trusted=tuple(spec.model.trusted_types), project_root=spec.root)
            champion = (production.version, model)
        validation = validate(
            trained.estimator, x_test, y_test, task=trained.task, metrics=spec.metrics, gates=spec.gates,
            production=champion, known_production_metrics=known,
        )
        result.validation = validation.to_dict()
        metadata |= {"metrics": validation.metrics, "validation": result.validation}
        record_reference_metric(staging, validation.metrics[spec.metrics.primary])
        version = registry.publish(spec.name, staging, metadata, run_id=result.run_id, finalize=write_descriptor)
        result.version = version.version
        record.detail = "all gates passed" if validation.passed else "; ".join(validation.reasons)
    return version


def _scores_on_the_same_rows(production: dict[str, Any], data: dict[str, Any], names: list[str]) -> dict | None:
    """Production's recorded held-out scores, when it was validated on these very rows.

    The same data (by content fingerprint) split the same way gives the same held-out rows, and a
    fitted model scores them the same, so scoring it again would only repeat the numbers.
    """
    recorded = production.get("data") or {}
    metrics = production.get("metrics") or {}
    same_rows = recorded.get("fingerprint") == data["fingerprint"] and recorded.get("split") == data["split"]
    return metrics if same_rows and all(name in metrics for name in names) else None


def _deploy(spec, registry, version, result, stage, promote) -> None:
    from pipeline.deploy import run_deploy_command

    with stage("deploy") as record:
        if not (result.validation or {}).get("passed"):
            result.status = "not_promoted"
            record.status, record.detail = "skipped", "not promoted: " + "; ".join(result.reasons)
            return
        if not promote:
            record.status, record.detail = "skipped", "validation only: not deployed"
            return
        if spec.deploy.stage != "production":
            record.detail = f"kept as a candidate (deploy.stage = {spec.deploy.stage!r})"
            return
        if spec.deploy.command:
            run_deploy_command(
                spec.deploy.command, model=spec.name, version=version.version, artifact=version.path,
                cwd=spec.root, timeout=spec.deploy.timeout_seconds,
            )
        registry.promote(spec.name, version.version, reason=result.reason or "pipeline run", run_id=result.run_id, trigger=result.trigger)
        result.promoted = True
        record.detail = f"v{version.version} promoted to production"


class _Stage:
    """Times one stage, records its outcome and turns any exception into a failure of that stage."""

    def __init__(self, record: StageRecord, clock, on_progress, result: RunResult):
        self.record, self.clock, self.on_progress, self.result = record, clock, on_progress, result

    def __enter__(self) -> StageRecord:
        self.record.status, self.record.started_at = "running", self.clock()
        self._start = time.perf_counter()
        _notify(self.on_progress, self.result)
        return self.record

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.record.finished_at = self.clock()
        self.record.duration_s = time.perf_counter() - self._start
        if exc is None:
            if self.record.status == "running":
                self.record.status = "succeeded"
            _notify(self.on_progress, self.result)
            return False
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return False
        self.record.status = "failed"
        self.record.detail = _reason(exc)
        raise _StageFailed(self.record.name, self.record.detail) from exc


def _finish(result: RunResult, registry, clock, on_progress, *, failed: tuple[str, str] | None = None) -> RunResult:
    if failed is not None:
        result.status, result.failed_stage, result.error = "failed", failed[0], failed[1]
        for record in result.stages:
            if record.status == "pending":
                record.status = "skipped"
        if result.stage(failed[0]).status != "failed":
            result.stage(failed[0]).status, result.stage(failed[0]).detail = "failed", failed[1]
    elif result.status == "running":
        result.status = "succeeded"
    result.finished_at = clock()
    registry.record_run(result.to_record())
    _notify(on_progress, result)
    return result


def _notify(on_progress, result: RunResult) -> None:
    if on_progress is not None:
        on_progress(result)


def _reason(exc: BaseException) -> str:
    # Our own errors carry messages written for people; anything else gets its type for context.
    from pipeline.data import DataError
    from pipeline.deploy import DeployError
    from pipeline.package import ArtifactError
    from pipeline.train import TrainError

    if isinstance(exc, DataError | TrainError | DeployError | ArtifactError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
