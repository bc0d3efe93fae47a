"""One pipeline run: train → package → validate → deploy, each stage timed and recorded.

A failure in any stage ends the run with that stage and the reason; nothing becomes visible in the
registry unless validation finished, and production changes only when every gate passed and the
deploy command (if any) succeeded. "Not promoted" is a normal outcome with reasons, not an error.

The part that runs the project's own code (reading its data, its estimator, packaging and
validating the candidate) is ``build_candidate``: plain data in, plain data out, so that
``run_pipeline(..., isolated=True)`` can run it in a process of its own (pipeline/child.py) while
this process keeps the registry: the run records, publishing, promotion and the deploy command.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.registry_port import RegistryPort, RunRecord

__all__ = ["ProductionFolders", "RunResult", "StageRecord", "build_candidate", "run_pipeline"]

STAGES = ("train", "package", "validate", "deploy")


@dataclass(frozen=True)
class ProductionFolders:
    """Where production data lands: batch files (some carrying labels) and late label files."""

    batches: Path
    labels: Path


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
    data: dict[str, Any] | None = None  # what the version was trained on: rows, fingerprint, sources
    recent: dict[str, Any] | None = None  # candidate and production on the newest held-out production rows
    nothing_new: str | None = None  # why a retrain stopped before training: it had nothing new to learn from

    @property
    def reasons(self) -> list[str]:
        if self.error:
            return [self.error]
        if self.nothing_new:
            return [self.nothing_new]
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
            details={"promoted": self.promoted, "validation": self.validation, "data": self.data,
                     "recent": self.recent, "nothing_new": self.nothing_new},
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
            "data": self.data,
            "recent": self.recent,
            "nothing_new": self.nothing_new,
        }


def run_pipeline(
    project_dir: str | Path,
    registry: RegistryPort,
    *,
    trigger: str = "manual",
    reason: str = "",
    run_id: str | None = None,
    context: dict[str, Any] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_progress: Callable[[RunResult], None] | None = None,
    promote: bool = True,
    production_data: ProductionFolders | None = None,
    require_new_data: bool = False,
    isolated: bool = False,
) -> RunResult:
    """Run the whole pipeline for the project in ``project_dir``; never raises for the project's faults.

    ``context`` is stored with the version (e.g. the commit and change that triggered the run), and
    ``on_progress`` is called after each stage, so a caller can show progress as it happens.
    ``promote=False`` validates without deploying (the deploy stage is skipped).
    ``production_data``: where labelled production rows are found; the project's ``[retrain]`` table
    says whether and which of them join the training data. ``require_new_data`` (a retrain asked
    for by a person or an alert) stops before training when neither the data nor the code differs
    from production's: retraining would only reproduce the production model.
    ``isolated=True`` runs the project's code (train, package, validate) in a child process with
    none of this process's secrets, stopped after ``[model] timeout_seconds``; a crash or a kill
    there (the OOM killer) fails the run at its stage and leaves this process as it was.
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
        result.model = spec.name
        # Before any data is read or anything fitted: a metric that cannot score this kind of model
        # would otherwise fail only at validation, after the whole training. It may call the
        # project's estimator factory, so an isolated run checks it in its own process.
        if not isolated:
            from pipeline.train import check_metrics_suit_task

            check_metrics_suit_task(spec)
    except SpecError as exc:
        return _finish(result, registry, clock, on_progress, failed=("train", str(exc)))
    registry.record_run(result.to_record())
    staging = registry.staging_dir()
    try:
        _run_stages(spec, registry, staging, result, clock, on_progress, context or {}, promote,
                    production_data, require_new_data, isolated)
    except _StageFailed as failure:
        return _finish(result, registry, clock, on_progress, failed=(failure.stage, failure.reason))
    except _NothingNew as nothing:
        result.status, result.nothing_new = "not_promoted", str(nothing)
        for record in result.stages:
            record.status, record.detail = "skipped", str(nothing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _finish(result, registry, clock, on_progress)


class _NothingNew(Exception):
    """A retrain whose data and code are production's: there is nothing to learn."""


class _StageFailed(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def _run_stages(spec, registry, staging, result, clock, on_progress, context, promote, production_data,
                require_new_data, isolated) -> None:
    events = _StageEvents(result, clock, on_progress)

    def stage(name: str, *, resume: bool = False):
        return _Stage(name, events, project_root=spec.root, resume=resume)

    earlier = registry.find_by_run_id(spec.name, result.run_id)
    if earlier is None:
        version = _build_and_validate(spec, registry, staging, result, stage, events, context, clock,
                                      production_data, require_new_data, isolated)
    else:
        # The same run was interrupted after its version was published: finish it, do not publish twice.
        version = earlier
        result.version, result.validation = earlier.version, earlier.metadata.get("validation")
        result.data, result.recent = _data_summary(earlier.metadata.get("data") or {}), earlier.metadata.get("recent")
        for name in ("train", "package", "validate"):
            record = result.stage(name)
            record.status, record.detail = "succeeded", f"done before a restart (v{earlier.version})"
    _deploy(spec, registry, version, result, stage, promote)


def _build_and_validate(spec, registry, staging, result, stage, events, context, clock, production_data,
                        require_new_data, isolated):
    """The project's code builds and validates the candidate (here, or in a process of its own with
    ``isolated``); this process publishes it, so the registry is never in reach of the project's code."""
    production = registry.production(spec.name)
    job = {
        "project_dir": str(spec.root),
        "run": {"run_id": result.run_id, "trigger": result.trigger, "reason": result.reason,
                "started_at": result.started_at.isoformat()},
        "context": context,
        "production": None if production is None else {
            "version": production.version, "path": str(production.path), "metadata": production.metadata},
        "production_data": None if production_data is None else {
            "batches": str(production_data.batches), "labels": str(production_data.labels)},
        # The newest labelled production rows are chosen as of this clock's now.
        "now": clock().isoformat() if production_data is not None and spec.retrain.include_production else None,
        "require_new_data": require_new_data,
        "staging": str(staging),
        "check_task": isolated,  # in-process, run_pipeline has checked the metrics against the task already
    }
    if isolated:
        from pipeline.child import run_in_child
        from pipeline.loader import shared_loader

        # The child's fresh-process check is forked from this process's loader, which outlives the
        # child and so is started once for many runs (None: the check starts a new Python process).
        loader = shared_loader()
        job["loader"] = loader.address if loader is not None else None
        built = run_in_child(job, on_event=events, cwd=spec.root, timeout_s=spec.model.timeout_seconds)
    else:
        built = build_candidate(job, events)
    result.data, result.validation, result.recent = built.get("data"), built.get("validation"), built.get("recent")
    if built["outcome"] == "nothing_new":
        raise _NothingNew(built["reason"])
    if built["outcome"] == "failed":
        events.fail(built["stage"], built["reason"])
        raise _StageFailed(built["stage"], built["reason"])
    from pipeline.package import write_descriptor

    with stage("validate", resume=True) as record:  # the validate stage ends once its candidate is published
        # Only a validated version is a candidate (it gets the registry's candidate alias).
        version = registry.publish(spec.name, staging, built["metadata"], run_id=result.run_id,
                                   finalize=write_descriptor, candidate=bool((result.validation or {}).get("passed")))
        result.version = version.version
        validation = result.validation or {}
        record.detail = "all gates passed" if validation.get("passed") else "; ".join(validation.get("reasons", []))
    return version


@dataclass(frozen=True)
class _Production:
    """What the project's side knows of the production version: its number, folder and metadata."""

    version: int
    path: Path
    metadata: dict[str, Any]


def build_candidate(job: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the project's data, train, package into ``job["staging"]`` and validate: the part of a run
    that runs the project's code, up to (not including) publishing.

    Plain data in and out, so that it can run in a process of its own (``python -m pipeline.child``).
    ``job``: ``project_dir``; ``run`` (``run_id``, ``trigger``, ``reason``, ``started_at``);
    ``context``; ``production`` (``version``, ``path``, ``metadata``) or None; ``production_data``
    (``batches``, ``labels``) or None; ``now`` (ISO time, for the labelled-production window);
    ``require_new_data``; ``staging``; ``check_task`` (check the metrics against the task first);
    ``loader`` (optional: where the fresh-process check comes from, see ``pipeline.load_check.LoaderChoice``).
    ``emit`` gets ``{"stage", "status", "detail"}`` as stages start (``running``) and end
    (``succeeded``, ``failed``, ``skipped``); validate's end is the publisher's to report.
    Returns ``{"outcome": "built", "metadata"}``, ``{"outcome": "failed", "stage", "reason"}`` or
    ``{"outcome": "nothing_new", "reason"}``, each with the ``data``, ``validation`` and ``recent``
    found so far; never raises for the project's faults.
    """
    from pipeline.spec import SpecError, load_project

    found: dict[str, Any] = {"data": None, "validation": None, "recent": None}
    try:
        spec = load_project(job["project_dir"])
        if job.get("check_task"):
            from pipeline.train import check_metrics_suit_task

            check_metrics_suit_task(spec)
    except SpecError as exc:
        return {"outcome": "failed", "stage": "train", "reason": str(exc), **found}
    try:
        metadata = _build(spec, job, emit, found)
    except _StageFailed as failure:
        return {"outcome": "failed", "stage": failure.stage, "reason": failure.reason, **found}
    except _NothingNew as nothing:
        return {"outcome": "nothing_new", "reason": str(nothing), **found}
    return {"outcome": "built", "metadata": metadata, **found}


def _build(spec, job: dict[str, Any], emit, found: dict[str, Any]) -> dict[str, Any]:
    from pipeline.data import assemble_training_data, split_for_validation
    from pipeline.load_check import FreshProcessCheck, ModelOutputs
    from pipeline.package import load_model, package, record_reference_metric
    from pipeline.train import build_estimator, code_version, train
    from pipeline.validate import validate

    def stage(name: str, *, leave_open: bool = False):
        return _Stage(name, emit, project_root=spec.root, leave_open=leave_open)

    production = None if job.get("production") is None else _Production(
        version=int(job["production"]["version"]), path=Path(job["production"]["path"]),
        metadata=job["production"]["metadata"])
    folders = job.get("production_data")
    production_data = None if folders is None else ProductionFolders(Path(folders["batches"]), Path(folders["labels"]))
    run = job["run"]
    with stage("train") as record:
        labelled = _labelled_production(spec, production_data, job.get("now"))
        dataset = assemble_training_data(spec, labelled)
        found["data"] = _data_summary(_data_metadata(spec, dataset))
        if job.get("require_new_data") and production is not None:
            _stop_if_nothing_new(spec, production, dataset, code_version(spec.root))
        estimator, task = build_estimator(spec.model, dataset.features.head(0), seed=spec.data.split.seed, project_root=spec.root)
        split = split_for_validation(dataset, spec.data, stratify_labels=task == "classification")
        trained = train(spec.model, split.x_train, split.y_train, seed=spec.data.split.seed, project_root=spec.root)
        production_rows = int(dataset.production_rows.sum())
        record.detail = (f"{trained.training_rows} rows, {len(trained.schema.names)} features"
                         + (f", {production_rows} labelled production rows" if production_rows else ""))

    staging = Path(job["staging"])
    with stage("package") as record:
        metadata = package(
            trained, staging, model_name=spec.name, training_features=split.x_train, training_target=split.y_train,
            primary_metric=spec.metrics.primary, keep_raw=spec.package.keep_raw_data,
        )
        metadata |= {
            "description": spec.project.description,
            "estimator": spec.model.estimator,
            "trusted_types": spec.model.trusted_types,
            "created_at": run["started_at"],
            "run": {"run_id": run["run_id"], "trigger": run["trigger"], "reason": run["reason"]},
            "context": job.get("context") or {},
            "data": _data_metadata(spec, dataset),
            "primary_metric": {"name": spec.metrics.primary, "direction": str(spec.metrics.primary_direction)},
        }
        record.detail = "model, metadata, model card and reference profile written"

    with stage("validate", leave_open=True), FreshProcessCheck(
            staging, split.x_test, trusted_types=tuple(spec.model.trusted_types), project_root=spec.root,
            timeout_s=spec.deploy.timeout_seconds, loader=job.get("loader", "shared")) as fresh_process:
        # Loaded as it will be deployed: in a fresh process, by the same loader as `models predict`
        # (a new Python starts now, its start-up overlapping what follows; a forked one at finish).
        champion = known = production_model = None
        if production is not None:
            known = _scores_on_the_same_rows(production.metadata, metadata["data"], spec.metrics.all)
            if known is None or split.recent.any():
                production_model = load_model(production.path, extra_trusted=tuple(spec.model.trusted_types),
                                              project_root=spec.root)
            champion = (production.version, production_model)
        # The candidate predicts the held-out rows once: its metrics, its score on the recent rows,
        # the fresh process's comparison and the calibration all read these outputs.
        outputs = ModelOutputs.of(trained.estimator, split.x_test)
        validation = validate(
            trained.estimator, split.x_test, split.y_test, task=trained.task, metrics=spec.metrics, gates=spec.gates,
            production=champion, known_production_metrics=known,
            candidate_outputs=(outputs.predictions, outputs.probabilities),
        )
        found["validation"] = validation.to_dict()
        found["recent"] = _recent_scores(spec, trained, split, production, production_model, outputs)
        fresh_process.finish(outputs)
        metadata |= {"metrics": validation.metrics, "validation": found["validation"], "recent": found["recent"]}
        calibration = _calibration(trained, split, outputs.probabilities)
        if calibration is not None:
            metadata["calibration"] = calibration
        record_reference_metric(staging, validation.metrics[spec.metrics.primary])
    return metadata


def _labelled_production(spec, production_data: ProductionFolders | None, now: str | None):
    """The labelled production rows the project's ``[retrain]`` window selects, or None."""
    if production_data is None or not spec.retrain.include_production or now is None:
        return None
    from pipeline.production import read_labelled_production

    return read_labelled_production(
        production_data.batches, production_data.labels, target=spec.data.target, id_column=spec.data.id_column,
        now=datetime.fromisoformat(now), max_age_days=spec.retrain.max_age_days, max_rows=spec.retrain.max_rows,
    )


def _data_metadata(spec, dataset) -> dict[str, Any]:
    return {
        "files": [_relative(path, spec.root) for path in dataset.files],
        "fingerprint": dataset.fingerprint,
        "rows": len(dataset.features),
        "target": spec.data.target,
        "id_column": spec.data.id_column,
        "split": spec.data.split.model_dump(),
        "sources": [dict(source) for source in dataset.sources],
        "production_problems": list(dataset.problems),
    }


def _data_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What a run report says of the data: its size, fingerprint, sources and problems met."""
    return {key: data.get(key) for key in ("rows", "fingerprint", "sources", "production_problems")}


def _stop_if_nothing_new(spec, production, dataset, code) -> None:
    recorded = production.metadata
    same_data = (recorded.get("data") or {}).get("fingerprint") == dataset.fingerprint
    before = recorded.get("code_version") or {}
    same_code = bool(code and before and code.get("commit") == before.get("commit")
                     and not code.get("dirty") and not before.get("dirty"))
    if same_data and same_code:
        raise _NothingNew(
            f"nothing new to learn from: no labelled production data since v{production.version} and the same "
            f"code; add labelled batches or label files (with the {spec.data.id_column or 'id'} column) to the "
            f"labels folder, or update {spec.data.path}"
        )


def _recent_scores(spec, trained, split, production, production_model, outputs) -> dict[str, Any] | None:
    """Candidate and production on the newest held-out production rows: the data the model will meet.
    ``outputs``: the candidate's on all the held-out rows, of which the recent ones are a part."""
    from pipeline.validate import model_outputs

    if not split.recent.any():
        return None
    recent_rows = split.recent  # a boolean mask over the held-out rows
    x_recent, y_recent = split.x_test[recent_rows], split.y_test[recent_rows]
    names = spec.metrics.all
    mine = (outputs.predictions[recent_rows],
            None if outputs.probabilities is None else outputs.probabilities[recent_rows])
    recent: dict[str, Any] = {"rows": int(recent_rows.sum()),
                              "metrics": _scores(trained.estimator, x_recent, y_recent, trained.task, names, mine)}
    if production is not None and production_model is not None:
        recent["production_version"] = production.version
        theirs = model_outputs(production_model, x_recent, probabilities=trained.task == "classification")
        recent["production_metrics"] = _scores(production_model, x_recent, y_recent, trained.task, names, theirs)
    return recent


def _scores(estimator, features, target, task, names, outputs) -> dict[str, float]:
    """Every metric that is defined on these rows (ROC AUC is not, on rows of one class)."""
    from pipeline.validate import score

    scores = {}
    for name in names:
        try:
            scores.update(score(estimator, features, target, task=task, names=[name], outputs=outputs))
        except ValueError:
            continue
    return scores


def _calibration(trained, split, probabilities) -> dict[str, Any] | None:
    """Calibrated probabilities on held-out rows (``probabilities``: the candidate's on them), for
    estimating performance before labels arrive."""
    from pipeline.performance import CalibrationError, fit_calibration

    if trained.task != "classification":
        return None
    if probabilities is None:
        return None
    try:
        return fit_calibration(probabilities, split.y_test.to_numpy(), list(trained.estimator.classes_)).to_dict()
    except CalibrationError:  # e.g. held-out rows of one class: no estimate for this version, nothing worse
        return None


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
                cwd=spec.root, timeout=spec.deploy.timeout_seconds, env_names=spec.deploy.env,
            )
        registry.promote(spec.name, version.version, reason=result.reason or "pipeline run", run_id=result.run_id, trigger=result.trigger)
        result.promoted = True
        record.detail = f"v{version.version} promoted to production"


class _Stage:
    """One stage: reports its start and end to ``report`` and turns any exception into a failure of that stage.

    ``report`` gets ``{"stage", "status", "detail"}``: ``running`` on entering, then ``succeeded``
    (or the status the block set, e.g. ``skipped``), ``failed`` or ``skipped`` (nothing new to learn).
    ``project_root``: the model project's folder, so an error raised in the project's own code is
    reported with its file and line. ``leave_open``: a success is not reported (the caller ends the
    stage later); ``resume``: the stage was reported running already (by ``leave_open``).
    """

    def __init__(self, name: str, report: Callable[[dict[str, Any]], None], *, project_root: Path | None = None,
                 leave_open: bool = False, resume: bool = False):
        self.record, self.report, self.project_root = StageRecord(name, status="running"), report, project_root
        self.leave_open, self.resume = leave_open, resume

    def __enter__(self) -> StageRecord:
        if not self.resume:
            self._report("running")
        return self.record

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            if not self.leave_open:
                self._report("succeeded" if self.record.status == "running" else self.record.status,
                             self.record.detail)
            return False
        if isinstance(exc, _NothingNew):
            self._report("skipped", str(exc))
            return False
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return False
        reason = _reason(exc, self.project_root)
        # The report keeps one line; the whole story, with every file and line, is for MLOPS_LOG_LEVEL=DEBUG.
        logging.getLogger(__name__).debug("%s failed: %s", self.record.name, reason, exc_info=(exc_type, exc, tb))
        self._report("failed", reason)
        raise _StageFailed(self.record.name, reason) from exc

    def _report(self, status: str, detail: str = "") -> None:
        self.report({"stage": self.record.name, "status": status, "detail": detail})


class _StageEvents:
    """The run's stage records, kept from the stages' reports (``_Stage``), wherever those ran: each
    timed by this process's clock, and each change shown to ``on_progress``."""

    _STATUSES = ("running", "succeeded", "failed", "skipped")

    def __init__(self, result: RunResult, clock, on_progress):
        self.result, self.clock, self.on_progress = result, clock, on_progress
        self._started: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        name, status = event.get("stage"), event.get("status")
        if name not in STAGES or status not in self._STATUSES:
            return  # a report this process did not ask for: nothing to record
        record = self.result.stage(name)
        if status == "running":
            record.status, record.started_at, record.detail = "running", self.clock(), ""
            self._started[name] = time.perf_counter()
        else:
            record.finished_at = self.clock()
            record.duration_s = time.perf_counter() - self._started.get(name, time.perf_counter())
            record.status, record.detail = status, str(event.get("detail") or "")
        if status != "failed":  # a failure is shown once the run is finished
            _notify(self.on_progress, self.result)

    def fail(self, name: str, reason: str) -> None:
        """End ``name`` as failed, if it is still running (its process died before it could say so)."""
        if name in STAGES and self.result.stage(name).status == "running":
            self({"stage": name, "status": "failed", "detail": reason})


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


def _reason(exc: BaseException, project_root: Path | None = None) -> str:
    """One line: where in the project's own code it failed, when it did; our own errors carry messages
    written for people; anything else gets its type for context."""
    from pipeline.data import DataError
    from pipeline.deploy import DeployError
    from pipeline.package import ArtifactError
    from pipeline.spec import SpecError
    from pipeline.train import TrainError, describe_user_error

    located = describe_user_error(exc, project_root) if project_root is not None else None
    if located is not None:
        return located
    if isinstance(exc, DataError | TrainError | DeployError | ArtifactError | SpecError):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
