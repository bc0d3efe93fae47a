"""The ``mlops-bot`` command.

Heavy libraries (scikit-learn, pandas, the service SDKs) are imported inside the commands that use
them, so ``mlops-bot --help`` starts about as fast as Python itself.

Exit codes: 0 done, 1 the operation failed, 2 a usage or settings error.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
_SETTINGS_NOTES = "mlops_bot.settings_notes"  # ctx.meta key: the start-up notes on the settings


class OperationFailed(click.ClickException):
    exit_code = EXIT_FAILED

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class UsageProblem(OperationFailed):
    """A command asked for something that is not there (a project folder): one line, exit 2."""

    exit_code = EXIT_USAGE


class SettingsProblem(OperationFailed):
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"settings error: {self.format_message()}", err=True)


class _Context:
    """What every command gets: the settings (read once) and the registry, built on first use."""

    def __init__(self, env_file: str | None):
        self._env_file = env_file
        self._settings = None
        self.project: Path | None = None  # --project DIR, over MLOPS_PROJECT_DIR
        self.project_name: str | None = None  # --project NAME: one of the model projects the bot serves

    @property
    def settings(self):
        if self._settings is None:
            from bot.settings import SettingsError, load_settings

            try:
                settings = load_settings(self._env_file or ".env")
            except SettingsError as exc:
                raise SettingsProblem(str(exc)) from None
            if self.project is not None:
                settings = settings.model_copy(update={"project_dir": self.project})
            elif self.project_name is not None:
                settings = self._named_project_settings(settings)
            self._settings = settings
        return self._settings

    def nothing_here_yet(self, *, state: bool = False) -> str | None:
        """Why a read-only command has nothing to read (no data folder yet), or None. Read-only
        commands say this instead of creating an empty registry or state database where they run."""
        settings = self.settings
        data_dir = settings.data_dir.expanduser().resolve()
        if data_dir.is_dir() or (state and settings.state_url) or (not state and settings.mlflow_tracking_uri):
            return None
        return (f"nothing here yet: no mlops-bot data folder at {data_dir}; run `mlops-bot pipeline run` or "
                "`mlops-bot run` first, or set MLOPS_DATA_DIR to the bot's data folder")

    def registry(self):
        from bot.app import open_registry

        return open_registry(self.settings)

    def version(self, registry, ref: tuple[str | None, str], model: str | None = None):
        """The registry version a VersionRef names; its model part, if any, wins over --model."""
        ref_model, version = ref
        name = self.model_name(registry, ref_model or model)
        if version == "production":
            chosen = registry.production(name)
            if chosen is None:
                raise OperationFailed(f"{name} has no production model yet; run `mlops-bot pipeline run`")
            return chosen
        return _registry_call(lambda: registry.get(name, int(version)))

    def _named_project_settings(self, settings):
        """The settings of the model project --project NAME names, among those of this repository: as
        the bot serving them all has them (its batches and labels in folders of its own beside others)."""
        from bot.projects import projects_to_serve, shared_project_settings

        served = projects_to_serve(settings)
        found = served[1].named(self.project_name) if served else None
        if found is None:
            names = [project.name for project in served[1].projects] if served else []
            raise UsageProblem(f"model project folder {self.project_name} does not exist; pass --project DIR"
                               + (f", or the name of one of this repository's model projects: {', '.join(names)}"
                                  if names else " (the folder holding the model project's mlops.toml)"))
        if len(served[1].projects) > 1:
            return shared_project_settings(settings, found)
        return settings.model_copy(update={"project_dir": found.spec.root})

    def project_dir(self, model: str | None = None) -> Path:
        """The folder of the model project a command is about: --project's, MLOPS_PROJECT_DIR's, else
        the repository's one project (or the one called ``model``), else the bundled example."""
        from bot.projects import projects_to_serve

        served = projects_to_serve(self.settings)
        if served is None:
            return self.settings.project_dir
        projects = served[1].projects
        chosen = served[1].named(model) if model else None
        if chosen is None and len(projects) > 1:
            raise _which_project([project.name for project in projects])
        return (chosen or projects[0]).spec.root

    def served_projects(self) -> list[str] | None:
        """The names of the model projects the bot serves in this repository (MLOPS_PROJECT_DIR and
        --project unset: bot/projects.py); None when it serves one named project."""
        from bot.projects import projects_to_serve

        served = projects_to_serve(self.settings)
        return [project.name for project in served[1].projects] if served else None

    def model_name(self, registry, given: str | None) -> str:
        """The model a command is about: as given, else the one project --project names or the bot
        serves, else the configured project's, else the only one in the registry."""
        if given:
            return given
        served = self.served_projects()
        if served is not None and len(served) > 1:
            raise _which_project(served)
        if served is not None:
            return served[0]
        from pipeline.spec import SpecError, load_project

        try:
            return load_project(self.settings.project_dir).name
        except SpecError:
            models = registry.models()
            if len(models) == 1:
                return models[0]
            raise OperationFailed(
                "cannot tell which model you mean; pass --model NAME"
                + (f" (known: {', '.join(models)})" if models else " (the registry is empty)")
            ) from None


def _which_project(names: list[str]) -> UsageProblem:
    return UsageProblem(f"this repository holds several model projects ({', '.join(names)}); pass --project NAME")


pass_context = click.make_pass_decorator(_Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
model_option = click.option("--model", "model", metavar="NAME", help="Model name (default: the configured project's).")


def _take_project(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    if not value.is_dir() and len(value.parts) == 1:  # a name: one of the projects of this repository
        ctx.ensure_object(_Context).project_name = str(value)
        return
    if not value.is_dir():
        raise UsageProblem(f"model project folder {value} does not exist; pass --project DIR or set MLOPS_PROJECT_DIR")
    if not (value / "mlops.toml").is_file():
        raise UsageProblem(f"{value} has no mlops.toml; pass --project with the model project's folder (the one "
                           "holding mlops.toml)")
    ctx.ensure_object(_Context).project = value.resolve()


def project_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--project DIR|NAME on a command: the model project it is about, over MLOPS_PROJECT_DIR."""
    return click.option(
        "--project", type=click.Path(file_okay=False, path_type=Path), metavar="DIR|NAME", expose_value=False,
        callback=_take_project, is_eager=True,
        help="Model project: its folder (with an mlops.toml), or its name where the repository holds several "
             "(default: MLOPS_PROJECT_DIR; unset, every model project of the repository, else the bundled example).",
    )(command)


class VersionRef(click.ParamType):
    """A model version as every command spells it: 3, v3, name:v3 or production (name:production)."""

    name = "VERSION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str | None, str]:
        if isinstance(value, tuple):
            return value
        match = _VERSION_REF.fullmatch(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a model version; write 3, v3, name:v3 or production", param, ctx)
        return match["model"], match["version"] or "production"


_VERSION_REF = re.compile(r"(?:(?P<model>[A-Za-z0-9][A-Za-z0-9._-]*):)?(?:v?(?P<version>\d+)|production)")


class _OneLineErrors(click.Group):
    """Whatever a command lets escape ends as one line on stderr; the traceback only at MLOPS_LOG_LEVEL=DEBUG."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if not isinstance(ctx.obj, _Context):
                raise
            settings = ctx.obj.settings  # a settings problem, if there is one, is the line to show
            if settings.log_level == "DEBUG":
                raise
            from bot.settings import path_problem

            problem = path_problem(settings, exc) if isinstance(exc, OSError) else None
            if problem:
                raise SettingsProblem(problem) from None
            from bot.logs import redact, secrets_of

            said = redact(" ".join(str(exc).split()), secrets_of(settings))
            raise OperationFailed(f"{said or 'failed'} ({type(exc).__name__}; MLOPS_LOG_LEVEL=DEBUG shows where)") \
                from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--env-file", metavar="FILE", help="Read settings from this file instead of ./.env.")
@click.version_option(package_name="mlops-bot")
@click.pass_context
def cli(ctx: click.Context, env_file: str | None) -> None:
    """mlops-bot keeps a model's lifecycle (train, package, validate, deploy, monitor, retrain)
    tied to pull requests, tickets and chat."""
    ctx.obj = _Context(env_file)
    from bot.settings import settings_notes

    # Said once at start, on stderr: variables that look meant for the bot but do nothing.
    # doctor lists them among its checks instead.
    ctx.meta[_SETTINGS_NOTES] = notes = settings_notes(env_file or ".env")
    if ctx.invoked_subcommand != "doctor":
        for note in notes:
            click.echo(f"warning: {note.line}", err=True)


# --- pipeline ---------------------------------------------------------------------------------


@cli.group()
def pipeline() -> None:
    """Run the ML pipeline: train, package, validate, deploy."""


@pipeline.command("run")
@project_option
@click.option("--reason", default="", metavar="TEXT", help="Why this run happens; recorded with the version.")
@click.option("--require-new-data", is_flag=True,
              help="A retrain, as the bot's /retrain: stop before training when neither the data (labelled "
                   "production rows included) nor the code differs from production's.")
@json_option
@pass_context
def pipeline_run(obj: _Context, reason: str, require_new_data: bool, as_json: bool) -> None:
    """Train, package, validate and (if every gate passes) deploy the model project."""
    from bot.logs import configure_logging
    from pipeline.run import ProductionFolders, run_pipeline
    from pipeline.spec import SpecError, load_project
    from pipeline.train import check_metrics_suit_task

    project_dir = obj.project_dir()
    configure_logging(obj.settings)  # at MLOPS_LOG_LEVEL=DEBUG, a failed stage's whole traceback
    # A missing folder, a typo in mlops.toml or a metric that cannot score this model is the user's to
    # fix before anything runs: one line, exit 2, and no run recorded. A run that fails is exit 1.
    try:
        check_metrics_suit_task(load_project(project_dir))
    except SpecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    registry = obj.registry()
    production_data = ProductionFolders(obj.settings.batches_dir, obj.settings.label_files_dir)
    # Progress is for people watching a terminal; --json and a pipe get only the result.
    with _StageProgress(enabled=not as_json and sys.stderr.isatty()) as progress:
        # In a child process, as the bot runs it: the project's code never sees this process's secrets.
        result = run_pipeline(project_dir, registry, trigger="cli", reason=reason, on_progress=progress.update,
                              production_data=production_data, require_new_data=require_new_data,
                              isolated=True)
    if as_json:
        _print_json(result.to_dict())
    else:
        _print_run(result)
    if result.status == "failed":
        sys.exit(EXIT_FAILED)


class _StageProgress:
    """The running stage and its elapsed time on one terminal line, redrawn every second
    (training 1,500 trees takes minutes: the line shows the run is alive)."""

    def __init__(self, *, enabled: bool, stream=None, tick_s: float = 1.0):
        import threading
        import time

        self.enabled, self.stream, self.tick_s, self._now = enabled, stream or sys.stderr, tick_s, time.monotonic
        self._stage: str | None = None
        self._started = 0.0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._redraw_every_tick, name="stage-progress", daemon=True)

    def __enter__(self) -> _StageProgress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.update(None)

    def update(self, result) -> None:
        """Called by the pipeline after each stage change: finish the last stage's line, start the next."""
        if not self.enabled:
            return
        running = next((stage.name for stage in result.stages if stage.status == "running"), None) if result else None
        with self._lock:
            if running == self._stage:
                return
            if self._stage is not None:
                self._draw(end="\n")
            self._stage = running
            if running is not None:
                self._started = self._now()
                self._draw()

    def _redraw_every_tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                if self._stage is not None:
                    self._draw()

    def _draw(self, end: str = "") -> None:
        self.stream.write(f"\r\x1b[K  {self._stage} ... {self._now() - self._started:.0f}s{end}")
        self.stream.flush()


def _print_run(result) -> None:
    for stage in result.stages:
        took = f"{stage.duration_s:.2f}s" if stage.duration_s is not None else ""
        click.echo(f"  {stage.name:<9} {stage.status:<10} {took:>8}  {stage.detail}")
    validation = result.validation or {}
    if validation:
        production = validation.get("production") or {}
        rows = [
            (name, f"{value:.4f}", _fmt((production.get("metrics") or {}).get(name)),
             _fmt((production.get("difference") or {}).get(name), signed=True))
            for name, value in validation["metrics"].items()
        ]
        label = f"production v{production['version']}" if production.get("version") else "production"
        click.echo(_table(("metric", "candidate", label, "difference"), rows))
    if result.status == "failed":
        click.echo(f"run {result.run_id} FAILED in {result.failed_stage}: {result.error}", err=True)
    elif result.nothing_new:
        click.echo(f"run {result.run_id}: {result.model} not retrained: {result.nothing_new}")
    elif result.status == "not_promoted":
        click.echo(f"run {result.run_id}: {result.model} v{result.version} NOT promoted:")
        for reason in result.reasons:
            click.echo(f"  - {reason}")
    else:
        verdict = "promoted to production" if result.promoted else "registered as a candidate"
        click.echo(f"run {result.run_id}: {result.model} v{result.version} {verdict}")


# --- models -----------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """List, inspect, promote, roll back and use model versions."""


@models.command("list")
@model_option
@project_option
@click.option("--all", "all_models", is_flag=True, help="Every model in the registry, not only one.")
@json_option
@pass_context
def models_list(obj: _Context, model: str | None, all_models: bool, as_json: bool) -> None:
    """Every version with its stage, metrics, data fingerprint and code version."""
    if (nothing := obj.nothing_here_yet()) is not None:
        click.echo("[]" if as_json else nothing)
        return
    registry = obj.registry()
    # Without --model, every model project the bot serves here (one, unless the repository holds several).
    names = registry.models() if all_models else [model] if model else \
        obj.served_projects() or [obj.model_name(registry, None)]
    versions = [version for name in names for version in registry.versions(name)]
    if as_json:
        _print_json([registry.describe(v.model, v.version) for v in versions])
        return
    if not versions:
        click.echo("no model versions yet; run `mlops-bot pipeline run`")
        return
    rows = []
    for v in versions:
        meta = v.metadata
        primary = (meta.get("primary_metric") or {}).get("name")
        metric = f"{primary}={meta['metrics'][primary]:.4f}" if primary in (meta.get("metrics") or {}) else ""
        code = (meta.get("code_version") or {}).get("commit", "")[:10]
        rows.append((v.model, f"v{v.version}", str(v.stage), metric, meta.get("data", {}).get("fingerprint", "")[:19],
                     code, v.created_at.strftime("%Y-%m-%d %H:%M")))
    click.echo(_table(("model", "version", "stage", "primary metric", "data", "commit", "created"), rows))


class ModelReference(VersionRef):
    """VersionRef, or a registry URI: models:/<name>@<alias> or models:/<name>/<version> (MLflow's spelling)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str | None, str] | str:
        if isinstance(value, str) and value.strip().startswith("models:"):
            from pipeline.registry_port import RegistryError, parse_model_uri

            try:
                parse_model_uri(value)
            except RegistryError as exc:
                raise UsageProblem(str(exc)) from None
            return value.strip()
        return super().convert(value, param, ctx)


def _referenced_version(obj: _Context, registry, ref: tuple[str | None, str] | str, model: str | None):
    """The version a ModelReference names: a models:/ URI through the registry, else as obj.version does."""
    if isinstance(ref, str):
        return _registry_call(lambda: registry.version_for_uri(ref))
    return obj.version(registry, ref, model)


@models.command("show")
@click.argument("version", type=ModelReference())
@model_option
@project_option
@json_option
@pass_context
def models_show(obj: _Context, version: tuple[str | None, str] | str, model: str | None, as_json: bool) -> None:
    """One VERSION (3, v3, name:v3, production, models:/name@alias or models:/name/3): everything recorded
    about it, and its time in production."""
    if (nothing := obj.nothing_here_yet()) is not None:
        raise OperationFailed(nothing)
    registry = obj.registry()
    chosen = _referenced_version(obj, registry, version, model)
    described = _registry_call(lambda: registry.describe(chosen.model, chosen.version))
    if as_json:
        _print_json(described)
        return
    from pipeline.package import MODEL_CARD_FILE

    card = Path(described["path"]) / MODEL_CARD_FILE
    click.echo(card.read_text() if card.is_file() else json.dumps(described, indent=2, default=str))
    click.echo(f"stage: {described['stage']}")
    for period in described.get("history", []):
        ended = f"{period['ended_at']} ({period['ended_reason']})" if period.get("ended_at") else "now"
        click.echo(f"  production from {period['started_at']} to {ended}: {period['reason']}")
    if registry.production(chosen.model) is None:
        # Said plainly: a production alias removed in MLflow leaves no version in production.
        click.echo(f"no version of {chosen.model} is in production now")


@models.command("promote")
@click.argument("version", type=ModelReference())
@model_option
@project_option
@click.option("--reason", default="promoted by hand", metavar="TEXT", help="Recorded in the production history.")
@json_option
@pass_context
def models_promote(obj: _Context, version: tuple[str | None, str] | str, model: str | None, reason: str,
                   as_json: bool) -> None:
    """Make VERSION (3, v3, name:v3, models:/name/3 or models:/name@candidate) the production model (the
    current one is archived)."""
    registry = obj.registry()
    chosen = _referenced_version(obj, registry, version, model)
    promoted = _registry_call(lambda: registry.promote(chosen.model, chosen.version, reason=reason, trigger="cli"))
    _report_production(registry, promoted, as_json)


@models.command("rollback")
@model_option
@project_option
@click.option("--reason", default="rolled back by hand", metavar="TEXT", help="Recorded in the production history.")
@json_option
@pass_context
def models_rollback(obj: _Context, model: str | None, reason: str, as_json: bool) -> None:
    """Put the previous production version back in production."""
    registry = obj.registry()
    name = obj.model_name(registry, model)
    restored = _registry_call(lambda: registry.rollback(name, reason=reason, trigger="cli"))
    _report_production(registry, restored, as_json)


def _report_production(registry, version, as_json: bool) -> None:
    if as_json:
        _print_json(registry.describe(version.model, version.version))
    else:
        click.echo(f"{version.model} v{version.version} is in production")


@models.command("predict")
@click.argument("version", type=ModelReference(), required=False)
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="CSV or Parquet file with the model's feature columns.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Where to write predictions (.csv or .parquet); default: CSV to standard output.")
@click.option("--keep", "keep", multiple=True, metavar="COL",
              help="Copy this input column to the output, after the id column (data.id_column) which is always "
                   "copied when present; repeatable.")
@model_option
@project_option
@pass_context
def models_predict(obj: _Context, version: tuple[str | None, str] | str | None, input_path: Path,
                   output_path: Path | None, keep: tuple[str, ...], model: str | None) -> None:
    """Score a file with VERSION (3, v3, name:v3, models:/name@alias or models:/name/3; default: the
    production model).

    The output holds the id column and any --keep columns, then `prediction` and, for classifiers,
    `probability_<class>`. Bad input (a missing column, text in a numeric column) is one line
    naming the column and row, and exit status 1.
    """
    from pipeline.data import DataError
    from pipeline.package import ArtifactError
    from pipeline.predict import predict_file

    if (nothing := obj.nothing_here_yet()) is not None:
        raise OperationFailed(nothing)
    registry = obj.registry()
    chosen = _referenced_version(obj, registry, version or (None, "production"), model)
    name = chosen.model
    try:
        predictions = predict_file(chosen, input_path, project_root=obj.project_dir(chosen.model), keep=keep)
    except (DataError, ArtifactError) as exc:
        raise OperationFailed(str(exc)) from None
    if output_path is None:
        predictions.to_csv(sys.stdout, index=False)
    elif output_path.suffix.lower() in {".parquet", ".pq"}:
        predictions.to_parquet(output_path, index=False)
    else:
        predictions.to_csv(output_path, index=False)
    if output_path is not None:
        click.echo(f"{len(predictions)} predictions from {name} v{chosen.version} written to {output_path}", err=True)


# --- drift ------------------------------------------------------------------------------------

EXIT_DRIFT = 3


@cli.group()
def drift() -> None:
    """Check production data for drift against a model's reference profile or a data file."""


@drift.command("check")
@click.option("--reference", required=True, metavar="PATH|VERSION",
              help="Reference data (CSV/Parquet file, folder or glob) or a model version (v3, name:v3, production) "
                   "whose profile to use.")
@click.option("--current", required=True, metavar="PATH", help="The batch to check: CSV/Parquet file, folder or glob.")
@click.option("--target", default=None, metavar="COL", help="Label column in the batch, for performance drift.")
@click.option("--version", "model_version", default=None, type=VersionRef(), metavar="VERSION",
              help="Model version whose predictions to compare (prediction and performance drift): 3, v3, name:v3 "
                   "or production.")
@model_option
@project_option
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Write report.json, report.md and report.png here.")
@click.option("--fail-on-drift", is_flag=True, help=f"Exit {EXIT_DRIFT} when the data drifted (for CI scripts).")
@json_option
@pass_context
def drift_check(obj: _Context, reference: str, current: str, target: str | None,
                model_version: tuple[str | None, str] | None, model: str | None, report_dir: Path | None,
                fail_on_drift: bool, as_json: bool) -> None:
    """Compare a batch with the reference; exit 0 whatever the verdict unless --fail-on-drift."""
    from pipeline.drift import DriftInputError, check_drift
    from pipeline.package import ArtifactError, load_model

    if model is not None and _VERSION_REF.fullmatch(model) and not model.startswith("production"):
        raise click.BadParameter(f"--model names a model; for the version {model!r} use --version {model}",
                                 param_hint="--model")
    reference_version = _version_ref(obj, reference, model)
    model_name = None
    if model_version is not None:
        chosen = obj.version(obj.registry(), model_version, model)
        try:
            model = load_model(chosen.path, extra_trusted=tuple(chosen.metadata.get("trusted_types", [])),
                               project_root=obj.project_dir(chosen.model))
        except ArtifactError as exc:
            raise OperationFailed(str(exc)) from None
    else:
        model = None
    if reference_version is not None:
        model_name = reference_version.model
    try:
        report = check_drift(reference_version.path if reference_version else reference, current, model=model,
                             target=target, model_name=model_name)
    except DriftInputError as exc:
        raise OperationFailed(str(exc)) from None
    if report_dir is not None:
        report.write(report_dir)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(report.to_markdown(link=str(report_dir / "report.md") if report_dir else None))
    if fail_on_drift and report.drifted:
        sys.exit(EXIT_DRIFT)


def _version_ref(obj: _Context, ref: str, model: str | None):
    """The registry version --reference names (v3, churn:v3, production), or None for a data path.

    A bare number is a file name here, never a version: only the spellings with v or production count.
    """
    if Path(ref).exists() or ref.isdigit() or _VERSION_REF.fullmatch(ref) is None:
        return None
    return obj.version(obj.registry(), VersionRef().convert(ref, None, None), model)


# --- the bot -----------------------------------------------------------------------------------


def _app(obj: _Context, *, quiet: bool = False, log_file: Path | None = None):
    from bot.app import build
    from bot.logs import configure_logging
    from bot.store import StoreError
    from pipeline.spec import SpecError

    configure_logging(obj.settings, file=log_file)
    try:
        return build(obj.settings, out=None if quiet else sys.stdout)
    except (SpecError, StoreError) as exc:
        raise OperationFailed(str(exc)) from None


@cli.command("run")
@project_option
@click.option("--once", is_flag=True, help="Run each job once (poll, deliver, drift check, digest) and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print what was done as JSON.")
@pass_context
def run_bot(obj: _Context, once: bool, as_json: bool) -> None:
    """Run the bot: poll for merged changes and commands, check drift, deliver effects, post the digest."""
    app = _app(obj, quiet=as_json)
    if once:
        from bot.scheduler import AnotherBotLeads, run_once

        try:
            done = run_once(app)
        except AnotherBotLeads as exc:
            raise OperationFailed(str(exc)) from None
        if as_json:
            _print_json(done)
        else:
            click.echo(f"done: {done['events']} new event(s), {done['batches']} batch(es) checked, "
                       f"{done['effects']} effect(s) delivered", err=True)
        return
    from bot.scheduler import run_forever

    run_forever(app)


@cli.command("serve")
@project_option
@click.option("--host", default=None, metavar="HOST", help="Address to listen on (default: MLOPS_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, metavar="PORT", help="Port to listen on (default: MLOPS_PORT, 8080).")
@pass_context
def serve(obj: _Context, host: str | None, port: int | None) -> None:
    """Receive webhooks (POST /webhooks/github) and run the bot's jobs alongside."""
    import uvicorn

    from bot.scheduler import Runner
    from bot.webhooks import create_app

    app = _app(obj)
    runner = Runner(app)
    web = create_app(app, wake=runner.wake)
    host, port = host or obj.settings.host, port or obj.settings.port
    runner.start()
    try:
        # uvicorn handles SIGTERM and Ctrl-C: it stops taking requests, then we stop the jobs.
        # log_config=None: uvicorn's own lines go through the bot's handler (format, ids, redaction).
        uvicorn.run(web, host=host, port=port, log_level=obj.settings.log_level.lower(), access_log=False,
                    log_config=None)
    finally:
        runner.stop()


@cli.command("console")
@project_option
@click.option("--on", "on", default=None, metavar="ticket:N|change:N",
              help="Where typed comments go (default: the open retrain ticket, else the latest change).")
@pass_context
def console(obj: _Context, on: str | None) -> None:
    """Type comments (/retrain, /status, ...) as if on a change or ticket, and watch the bot answer."""
    # The conversation is the terminal's: log lines go to a file, never between the messages.
    log_file = obj.settings.log_file or obj.settings.data_dir.expanduser().resolve() / "logs" / "console.log"
    app = _app(obj, log_file=log_file)
    click.echo(f"(the bot's log: {log_file})", err=True)
    app.run_once()
    target = _console_target(app, on)
    click.echo(f"Commenting on {target.kind}:{target.number}. Type a comment (e.g. /status or /help); "
               "':on ticket:N' or ':on change:N' moves; an empty line runs the bot's jobs; ':quit' leaves.")
    while True:
        try:
            line = input(f"{target.kind}:{target.number}> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        line = line.strip()
        if line in {":quit", ":q", "exit"}:
            return
        if line.startswith(":on"):
            try:
                target = _console_target(app, line.removeprefix(":on").strip())
            except OperationFailed as exc:
                click.echo(exc.message)
            continue
        if line:
            app.scm.add_comment(target, line)
        app.run_once()


def _console_target(app, on: str | None):
    from integrations.ports import Target

    repo = app.scm.repo
    if on:
        kind, _, number = on.partition(":")
        if kind not in {"ticket", "change"} or not number.isdigit():
            raise OperationFailed(f"--on {on!r}: expected ticket:N or change:N, e.g. ticket:1")
        if kind == "ticket" and app.tracker.get(int(number)) is None:
            raise OperationFailed(f"there is no ticket:{number}; see `mlops-bot board list --all`")
        if kind == "change":
            changes, _ = app.scm.merged_changes(None)
            newest = changes[-1].number if changes else 0
            if not 1 <= int(number) <= newest:
                raise OperationFailed(f"there is no change {number}; changes are the branch's commits, 1 to {newest}")
        return Target(kind, repo, int(number))
    for lifecycle in app.lifecycles:  # the open retrain ticket of a project served, the first found
        ticket = app.tracker.find_open(f"retrain:{lifecycle.project.name}")
        if ticket is not None:
            return Target("ticket", repo, ticket.id)
    changes, _ = app.scm.merged_changes(None)
    return Target("change", repo, changes[-1].number if changes else 1)


@cli.command("status")
@project_option
@json_option
@pass_context
def status(obj: _Context, as_json: bool) -> None:
    """Production model, open tickets, recent runs and the queue of effects, for every model project
    served (or the one --project names)."""
    from integrations.ports import ListsTickets

    app = _app(obj, quiet=True)
    outbox = app.store.outbox_stats()
    blocked = [{"service": b.service, "permission": b.permission, "effect": b.effect.key,
                "kind": b.effect.kind, "message": b.message} for b in app.outbox.blocked()]
    tickets = app.tracker.tickets(state="open") if isinstance(app.tracker, ListsTickets) else None
    several = len(app.lifecycles) > 1
    # Workers sharing the work (MLOPS_WORK_SHARING=lanes): those whose rows stand now.
    workers = [{"worker": w.holder, "since": w.started_at.isoformat(), "lanes": w.lanes}
               for w in app.store.workers() if w.alive]
    summaries = [_project_status(app, lifecycle.project.name, tickets, only_its_own=several)
                 | {"outbox": outbox, "blocked": blocked} | ({"workers": workers} if workers else {})
                 for lifecycle in app.lifecycles]
    if as_json:
        _print_json(summaries[0] if len(summaries) == 1 else {"projects": summaries})
        return
    for summary in summaries:
        _print_project_status(app, summary)
    click.echo(f"outbox: {outbox['pending']} pending, {outbox['dead']} failed for good, {outbox['done']} delivered")
    if workers:
        click.echo(f"workers: {len(workers)} sharing the work, holding "
                   + ", ".join(f"{w['lanes']} lane(s) ({w['worker']})" for w in workers))
    waiting: dict[tuple[str, str], list[dict]] = {}
    for one in blocked:
        waiting.setdefault((one["service"], one["permission"]), []).append(one)
    for (service, permission), effects in waiting.items():
        click.echo(f"blocked: {len(effects)} effect(s) wait for {service} to grant {permission}: "
                   f"{effects[0]['message']}")
    for summary in summaries:
        runs = summary["recent_runs"]
        if runs:
            if several:
                click.echo(f"{summary['model']}, recent runs:")
            click.echo(_table(("run", "status", "version", "trigger", "started"),
                              [(r["run_id"], r["status"], f"v{r['version']}" if r["version"] else "—", r["trigger"],
                                r["started_at"][:16].replace("T", " ")) for r in runs]))


def _project_status(app, model: str, tickets: list | None, *, only_its_own: bool) -> dict:
    """One model project's part of ``status``; ``tickets``: every open ticket, where the tracker lists
    them, of which ``only_its_own`` keeps the project's retrain ticket (where the bot serves several)."""
    from bot.planner import ticket_key

    production = app.registry.production(model)
    if tickets is None:  # a tracker that cannot list: the model's retrain ticket, the one the bot keeps open
        tickets = [t for t in [app.tracker.find_open(ticket_key(model))] if t is not None]
    elif only_its_own:
        tickets = [t for t in tickets if t.key == ticket_key(model)]
    return {
        "model": model,
        "production": production.to_dict() | {"metrics": production.metadata.get("metrics", {})} if production else None,
        "open_tickets": [{"id": t.id, "title": t.title, "url": t.url} for t in tickets],
        "recent_runs": [r.to_dict() for r in app.registry.runs(model, limit=5)],
        "last_drift": app.store.get_state("last_drift", model),
        "held_alert": _held_alert(app.store.get_state("episodes", model)),
        "performance": app.store.get_state("performance", model),
        "labels": app.store.get_state("labels_seen", model),
    }


def _print_project_status(app, summary: dict) -> None:
    from bot.messages import batch_name, held_alert_text, performance_lines

    model, production = summary["model"], app.registry.production(summary["model"])
    if production:
        metric = (production.metadata.get("primary_metric") or {}).get("name")
        value = production.metadata.get("metrics", {}).get(metric)
        click.echo(f"{model}: v{production.version} in production since {production.created_at:%Y-%m-%d %H:%M}"
                   + (f" ({metric} {value:.4f})" if value is not None else ""))
    elif (ended := [period for period in app.registry.history(model) if period.ended_at]):
        # Production was there once and nothing replaced it (an alias removed in MLflow): say what ended it.
        click.echo(f"{model}: no version is in production: v{ended[-1].version} left it at "
                   f"{ended[-1].ended_at:%Y-%m-%d %H:%M} ({ended[-1].ended_reason}); put one back with "
                   "`mlops-bot models promote VERSION`")
    else:
        click.echo(f"{model}: no model in production yet (run `mlops-bot run --once`)")
    click.echo("open tickets: " + (", ".join(f"ticket:{t['id']} {t['title']}" for t in summary["open_tickets"])
                                   or "none"))
    if summary["held_alert"]:
        click.echo(f"alerts held on ticket:{summary['held_alert']['ticket_id']}: {held_alert_text(summary['held_alert'])}")
    drift = summary["last_drift"]
    click.echo("last drift check: " + (f"{drift['severity'] if drift['drifted'] else 'no drift'} on "
                                       f"{batch_name(drift['batch'])}"
                                       if drift else "none yet"))
    for line in performance_lines(summary["performance"]):
        click.echo(line)
    labels = summary["labels"] or {}
    if labels.get("unmatched"):
        click.echo(f"labels: {labels['unmatched']} id(s) match no batch yet (kept until they do, or age out)")
    for problem in labels.get("problems", []):
        click.echo(f"⚠️ labels: {problem}")


def _held_alert(episode: dict | None) -> dict | None:
    """The open retrain ticket's finding that the cooldown held back from chat, if any."""
    episode = episode or {}
    held = episode.get("seen_again") or {}
    return {"ticket_id": episode["ticket_id"], **held} if episode.get("ticket_id") and held.get("until") else None


@cli.group()
def events() -> None:
    """What the bot saw and what it did about it."""


@events.command("list")
@project_option
@click.option("--limit", default=20, show_default=True, help="How many events, newest first.")
@json_option
@pass_context
def events_list(obj: _Context, limit: int, as_json: bool) -> None:
    """Events newest first, each with the effects it caused and their state."""
    if (nothing := obj.nothing_here_yet(state=True)) is not None:
        click.echo("[]" if as_json else nothing)
        return
    app = _app(obj, quiet=True)
    rows = app.store.events(limit=limit)
    if as_json:
        _print_json([_event_row(row) for row in rows])
        return
    if not rows:
        click.echo("no events yet")
    for row in rows:
        click.echo(f"{row.received_at:%Y-%m-%d %H:%M:%S}  {row.kind:<14} {row.key}")
        for effect in row.effects:
            note = f" ({effect.last_error})" if effect.last_error and effect.status != "done" else ""
            click.echo(f"    {effect.status:<8} {effect.kind:<17} {effect.key}{note}")


def _event_row(row) -> dict:
    return {"key": row.key, "kind": row.kind, "source": row.source, "received_at": row.received_at.isoformat(),
            "effects": [{"key": e.key, "kind": e.kind, "status": e.status, "attempts": e.attempts,
                         "last_error": e.last_error} for e in row.effects]}


@cli.command("trace")
@project_option
@click.argument("ref")
@json_option
@pass_context
def trace(obj: _Context, ref: str, as_json: bool) -> None:
    """Walk the lineage from REF: a model version (v3 or name:v3), a run id, ticket:N, change:N, commit:SHA."""
    if (nothing := obj.nothing_here_yet(state=True)) is not None:
        raise OperationFailed(nothing)
    app = _app(obj, quiet=True)
    kind, ident = _parse_ref(app, ref)
    links = app.store.trace(kind, ident)
    if as_json:
        _print_json({"from": {"kind": kind, "id": ident},
                     "links": [{"from": f"{l.src_kind}:{l.src_id}", "relation": l.relation, "to": f"{l.dst_kind}:{l.dst_id}"}
                               for l in links]})
        return
    if not links:
        raise OperationFailed(f"nothing is linked to {kind} {ident}; check the reference (see `mlops-bot trace --help`)")
    click.echo("\n".join(_lineage_tree((kind, ident), links)))


def _lineage_tree(root: tuple[str, str], links) -> list[str]:
    """The links as a tree from ``root`` outward, each object once, nearest first:

    model:churn:v3
    ├── produced_by → run:run-1a2b
    │   └── built_from → commit:acme/churn@7dc25be
    └── ← closed_by ticket:12
    """
    touching: dict[tuple[str, str], list] = {}
    for link in links:
        touching.setdefault((link.src_kind, link.src_id), []).append(link)
        touching.setdefault((link.dst_kind, link.dst_id), []).append(link)
    children: dict[tuple[str, str], list[tuple[str, tuple[str, str]]]] = {}
    seen, frontier = {root}, [root]
    while frontier:  # breadth first: an object hangs under the nearest object linked to it
        following = []
        for node in frontier:
            for link in touching.get(node, []):
                src, dst = (link.src_kind, link.src_id), (link.dst_kind, link.dst_id)
                other, label = (dst, f"{link.relation} →") if src == node else (src, f"← {link.relation}")
                if other in seen:
                    continue
                seen.add(other)
                children.setdefault(node, []).append((label, other))
                following.append(other)
        frontier = following
    lines = [_node_text(root)]

    def walk(node: tuple[str, str], indent: str) -> None:
        below = children.get(node, [])
        for index, (label, child) in enumerate(below):
            last = index == len(below) - 1
            lines.append(f"{indent}{'└── ' if last else '├── '}{label} {_node_text(child)}")
            walk(child, indent + ("    " if last else "│   "))

    walk(root, "")
    return lines


def _node_text(node: tuple[str, str]) -> str:
    """An object as people read it: commits and data fingerprints shortened (--json keeps them whole)."""
    kind, ident = node
    if kind == "commit" and "@" in ident:  # one repository's commit, as `trace commit:SHA` takes it back
        return f"commit:{ident.rpartition('@')[2][:12]}"
    if kind == "data" and ident.startswith("sha256:"):
        return f"data:{ident[:19]}"
    return f"{kind}:{ident}"


def _parse_ref(app, ref: str) -> tuple[str, str]:
    model = app.lifecycle.project.name
    repo = app.scm.repo
    kind, sep, ident = ref.partition(":")
    if not sep:
        kind, ident = "", ref
    if kind == "" and ident.startswith("v") and ident[1:].isdigit():
        if len(app.lifecycles) > 1:
            raise UsageProblem(f"{ref} of which model? This repository holds several ({', '.join(app.router.lifecycles)}): "
                               f"write {model}:{ref}, or pass --project NAME")
        return "model", f"{model}:{ident}"
    if kind == "" and ident.startswith("run-"):
        return "run", ident
    if kind in {"ticket", "#"} or (kind == "" and ident.startswith("#")):
        return "ticket", ident.lstrip("#")
    if kind == "change":
        return "change", ident if ":" in ident else f"{repo}:{ident}"
    if kind == "commit":
        return "commit", ident if "@" in ident else _commit_id(app, f"{repo}@{ident}")
    if kind and ident.startswith("v") and ident[1:].isdigit():
        return "model", f"{kind}:{ident}"
    raise OperationFailed(f"cannot read reference {ref!r}; use v3, {model}:v3, run-..., ticket:12, change:4 or commit:SHA")


def _commit_id(app, given: str) -> str:
    """The linked commit a short hash names (``commit:e83da5beeb98`` as `trace` prints it)."""
    found = app.store.linked_ids("commit", given)
    if len(found) > 1:
        raise OperationFailed(f"commit:{given.rpartition('@')[2]} is ambiguous: it starts "
                              f"{', '.join(ident.rpartition('@')[2][:12] for ident in found)}; give more of the hash")
    return found[0] if found else given


@cli.command("doctor")
@project_option
@pass_context
def doctor(obj: _Context) -> None:
    """Check the settings and each configured service; say what is wrong and how to fix it."""
    checks = _doctor_checks(obj)
    # Settings that do nothing (an ignored GITHUB_TOKEN, a misspelt MLOPS_ name): worth a word, not a failure.
    for note in click.get_current_context().meta.get(_SETTINGS_NOTES, []):
        click.echo(f"! {note.variable} {note.problem}\n    fix: {note.fix}")
    failed = 0
    for name, problem, fix in checks:
        if problem:
            failed += 1
            click.echo(f"✗ {name}: {problem}\n    fix: {fix}")
        else:
            click.echo(f"✓ {name}")
    # Each permission the configured features need: granted, missing (a failure), or not checkable
    # without writing (said, not counted).
    for check in _doctor_permission_checks(obj.settings):
        if check.state == "missing":
            failed += 1
            click.echo(f"✗ {check.name}: missing\n    fix: {check.fix}")
        elif check.state == "unchecked":
            click.echo(f"? {check.name}: not checked\n    note: {check.fix}")
        else:
            click.echo(f"✓ {check.name}")
    if failed:
        click.echo(f"{failed} problem(s) found", err=True)
        sys.exit(EXIT_FAILED)
    # Everything checks out: what waited for a permission is tried again at the next cycle.
    from bot.store import Store

    store = Store(obj.settings.state_database_url)
    resumed = store.unblock()
    store.close()
    if resumed:
        click.echo(f"{resumed} effect(s) waiting for a permission will be tried again at the next cycle")
    click.echo("all checks passed")


def _project_checks(spec, *, named: bool) -> list[tuple[str, str | None, str]]:
    """One model project's checks: it reads, its metrics suit its task, its data loads, its drift
    settings hold; ``named``: each check names the project (where the bot serves several)."""
    from pipeline.data import DataError, load_dataset
    from pipeline.drift import DriftConfig
    from pipeline.spec import SpecError
    from pipeline.train import check_metrics_suit_task

    of = f" of {spec.name}" if named else ""
    checks: list[tuple[str, str | None, str]] = [(f"model project {spec.name} ({spec.root})", None, "")]
    try:  # before any training: a metric that cannot score this kind of model fails only at validate
        check_metrics_suit_task(spec)
        checks.append((f"metrics{of} suit the model's task", None, ""))
    except SpecError as exc:
        checks.append((f"metrics{of} suit the model's task", str(exc), f"change [metrics] in {spec.root}/mlops.toml"))
    try:
        rows = len(load_dataset(spec.data, spec.root).features)
        checks.append((f"training data{of} ({rows} labelled rows)", None, ""))
    except DataError as exc:
        checks.append((f"training data{of}", str(exc), f"check data.path and data.target in {spec.root}/mlops.toml"))
    try:
        DriftConfig.from_dict(spec.drift)
        checks.append((f"drift settings{of} ([drift] in mlops.toml)", None, ""))
    except ValueError as exc:
        checks.append((f"drift settings{of} ([drift] in mlops.toml)", str(exc),
                       f"fix the [drift] table in {spec.root}/mlops.toml"))
    return checks


def _work_sharing_check(store, sharing: str) -> tuple[str, str | None, str]:
    """The state database, and on a shared one how its bots share the work: bots set otherwise than
    this one would wait for each other (bot/workers.py)."""
    if not store.shared:
        return ("state database", None, "")
    leader, workers = store.live_leader(), store.live_workers()
    fix = f"give every bot on the database the same MLOPS_WORK_SHARING (this one: {sharing})"
    if sharing == "lanes" and leader is not None:
        return ("state database (work shared by lanes)", f"{leader} leads it alone (MLOPS_WORK_SHARING=leader): "
                "this bot would wait instead of working", fix)
    if sharing == "leader" and workers:
        return ("state database (one bot leads)", f"{len(workers)} worker(s) share its work "
                "(MLOPS_WORK_SHARING=lanes): this bot would stand by", fix)
    at_work = f"{len(workers)} worker(s) at work" if sharing == "lanes" else f"led by {leader or 'nobody yet'}"
    return (f"state database (MLOPS_WORK_SHARING={sharing}: {at_work})", None, "")


def _repository_project_checks(repository: Path, served: list[Path]) -> list[tuple[str, str | None, str]]:
    """The model projects the repository holds (every folder with an mlops.toml), those served
    marked; each that cannot be read is a problem of its own."""
    from bot.projects import find_projects

    found = find_projects(repository)
    checks: list[tuple[str, str | None, str]] = []
    if found.projects:
        names = ", ".join(f"{project.name} ({project.repo_path or '.'})"
                          + (" served" if project.spec.root in served else "")
                          for project in found.projects)
        checks.append((f"model projects in {repository}: {names}", None, ""))
    checks += [(f"model project {problem.repo_path or '.'}", problem.reason, "fix that folder's mlops.toml")
               for problem in found.problems]
    return checks


def _doctor_checks(obj: _Context) -> list[tuple[str, str | None, str]]:
    """(what was checked, the problem or None, how to fix it)."""
    import shutil

    settings = obj.settings  # a settings problem has already stopped us with exit 2
    checks: list[tuple[str, str | None, str]] = [("settings", None, "")]
    from integrations.mlflow_import import import_note

    if (imported := import_note(settings.data_dir)) is not None:
        checks.append((imported, None, ""))
    from bot.projects import projects_to_serve
    from pipeline.spec import SpecError, load_project

    served = projects_to_serve(settings)  # MLOPS_PROJECT_DIR unset: every model project of the repository
    if served is not None:
        specs = [project.spec for project in served[1].projects]
    else:
        try:
            specs = [load_project(settings.project_dir)]
        except SpecError as exc:
            checks.append(("model project", str(exc), "fix mlops.toml, or point MLOPS_PROJECT_DIR at your project"))
            specs = []
    for spec in specs:
        checks += _project_checks(spec, named=len(specs) > 1)
    spec = specs[0] if specs else None
    if shutil.which("git") is None:
        checks.append(("git", "git is not installed", "install git (e.g. apt-get install git)"))
    else:
        from bot.projects import git_root

        root = settings.repo_dir or (git_root(spec.root) if spec else None)
        repository = git_root(Path(root)) if root else None
        checks.append(("local git repository" + (f" ({root})" if root else ""),
                       None if repository else "no git repository holds the project",
                       "set MLOPS_REPO_DIR to the repository whose commits should trigger runs, or run `git init`"))
        if repository is not None:
            checks += _repository_project_checks(repository, [served_spec.root for served_spec in specs])
    from bot.store import Store, StoreError

    try:
        store = Store(settings.state_database_url)
        try:
            checks.append(_work_sharing_check(store, settings.work_sharing))
        finally:
            store.close()
    except StoreError as exc:
        locked = "locked" in str(exc)
        checks.append(("state database", str(exc),
                       "stop the other mlops-bot, or set MLOPS_STATE_URL" if locked else
                       "the file is damaged or not mlops-bot's: restore it from a backup (docs/operations.md), "
                       "or move it away and the bot starts with an empty state"))
    from integrations.mlflow_registry import embedded_tracking_uri

    # Unset MLFLOW_TRACKING_URI: the embedded MLflow store, a SQLite file in the data folder.
    embedded = embedded_tracking_uri(settings.data_dir).removeprefix("sqlite:///")
    where = f"embedded MLflow store {embedded}" if not settings.mlflow_tracking_uri else "MLflow"
    try:
        registry = obj.registry()
        registry.models()  # reads the store: a damaged or unreachable one shows here
        registry.close()
        checks.append((f"model registry ({where})", None, ""))
    except OSError as exc:
        checks.append(("model registry", str(exc), "set MLOPS_DATA_DIR to a writable folder"))
    except Exception as exc:  # a damaged store or an unreachable server is a finding here, not a crash
        checks.append(("model registry", " ".join(str(exc).split())[:600],
                       f"restore {embedded} from a backup (docs/operations.md), or move it away and retrain"
                       if not settings.mlflow_tracking_uri else
                       "check MLFLOW_TRACKING_URI and the MLflow credentials (MLFLOW_TRACKING_TOKEN, or "
                       "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"))
    if settings.github_enabled:
        from bot.app import _github

        try:
            source, _tracker = _github(settings, lambda: None)
            checks += source.client.diagnose()
            if settings.github_project:  # the board the retrain tickets' cards move on, and its Status options
                from bot.app import _github_project

                checks += _github_project(settings, _tracker).diagnose()
        except Exception as exc:  # a broken key or URL is a finding here, not a crash
            checks.append(("GitHub", str(exc), "check the GITHUB_* settings"))
    if settings.slack_bot_token is not None:
        from bot.app import _slack
        from bot.planner import CHANNEL_ALERTS, CHANNEL_DIGEST, CHANNEL_PIPELINE

        try:
            checks += _slack(settings).diagnose([CHANNEL_PIPELINE, CHANNEL_ALERTS, CHANNEL_DIGEST],
                                                settings.slack_permissions)
        except Exception as exc:  # a bad token or URL is a finding here, not a crash
            checks.append(("Slack", str(exc), "check SLACK_BOT_TOKEN and MLOPS_SLACK_API_URL"))
    if settings.azure_enabled:
        from bot.app import _azure

        try:
            azure_scm, azure_tracker, azure_engine = _azure(settings, None)
            from integrations.azure_devops import diagnose

            azure_checks = diagnose(azure_tracker, azure_scm, azure_engine)
            checks += azure_checks
            if not any(problem for _what, problem, _fix in azure_checks):  # one problem is said once
                from bot.app import _azure_board

                checks += _azure_board(settings, azure_tracker).diagnose()
        except Exception as exc:  # a malformed URL or an unknown process is a finding here, not a crash
            checks.append(("Azure DevOps", str(exc), "check the AZURE_DEVOPS_* and MLOPS_AZURE_* settings"))
    batches = settings.batches_dir
    checks.append((f"monitoring folder ({batches})",
                   None if batches.is_dir() or not batches.exists() else f"{batches} is not a folder",
                   "set MLOPS_MONITOR_DIR to a folder of CSV or Parquet batches"))
    return checks


def _doctor_permission_checks(settings) -> list:
    """For each configured service, each permission the bot's features need and whether the
    credential has it (integrations/permissions.py says how each is checked). A service that cannot
    be reached gives no lines here: ``_doctor_checks`` has already said why."""
    from integrations import permissions

    found: list[permissions.PermissionCheck] = []
    if settings.github_enabled:
        from bot.app import _github

        try:
            source, _tracker = _github(settings, lambda: None)
            installation = None
            if settings.github_app_id and settings.github_app_private_key is not None:
                installation = permissions.github_installation_permissions(
                    settings.github_app_id, settings.github_app_private_key.get_secret_value().replace("\\n", "\n"),
                    int(settings.github_app_installation_id), base_url=settings.github_api_url)
            found += permissions.github_permissions(source.client, actions=bool(settings.github_workflow),
                                                    installation=installation)
        except Exception:  # noqa: BLE001 - unreachable or refused: the GitHub checks above say so
            pass
    if settings.slack_bot_token is not None:
        from bot.app import _slack

        try:
            needs = permissions.slack_needs(permission_keys=list(settings.slack_permissions),
                                            slash_commands=settings.slack_signing_secret is not None)
            found += permissions.slack_permissions(_slack(settings).client, needs)
        except Exception:  # noqa: BLE001 - the Slack checks above say why
            pass
    if settings.azure_enabled:
        from bot.app import _azure

        try:
            _scm, tracker, _engine = _azure(settings, None)
            found += permissions.azure_devops_permissions(
                tracker.client, project=settings.azure_devops_project, work_item_type=settings.azure_work_item_type,
                repository=settings.azure_repository, pipeline_id=settings.azure_pipeline_id)
        except Exception:  # noqa: BLE001 - the Azure DevOps checks above say why
            pass
    return found


@cli.group()
def db() -> None:
    """The state database's schema (migrations run by themselves when the bot starts)."""


@db.command("upgrade")
@json_option
@pass_context
def db_upgrade(obj: _Context, as_json: bool) -> None:
    """Bring the state database's schema to this mlops-bot's newest revision (in place, keeping the data)."""
    from bot.store import Store, StoreError

    try:
        store = Store(obj.settings.state_database_url)
    except StoreError as exc:
        raise OperationFailed(str(exc)) from None
    change, label = store.schema_upgrade, store.label
    store.close()
    if as_json:
        _print_json({"database": label, "from": change[0] if change else None,
                     "to": change[1] if change else None, "upgraded": change is not None})
    elif change is None:
        click.echo(f"state database {label} is already at the newest revision")
    else:
        click.echo(f"state database {label} upgraded from revision {change[0] or '(none)'} to {change[1]}")


@db.command("current")
@json_option
@pass_context
def db_current(obj: _Context, as_json: bool) -> None:
    """Show the state database's schema revision and the newest this mlops-bot knows; changes nothing."""
    from bot.store import StoreError, schema_status

    try:
        status = schema_status(obj.settings.state_database_url)
    except StoreError as exc:
        raise OperationFailed(str(exc)) from None
    if as_json:
        _print_json({"database": status.database, "revision": status.revision, "head": status.head,
                     "current": status.current})
        return
    if status.revision is None and status.legacy is None:
        state = "not created yet (the bot creates it when it starts)"
    elif status.revision is None:
        state = "from before migrations (`mlops-bot db upgrade` or starting the bot upgrades it)"
    elif status.current:
        state = "current"
    else:
        from bot.migrations import known

        state = ("older (`mlops-bot db upgrade` or starting the bot upgrades it)" if known(status.revision)
                 else "written by a newer mlops-bot: upgrade mlops-bot")
    click.echo(f"state database {status.database}\nrevision {status.revision or '(none)'}, newest {status.head}: "
               f"{state}")


@cli.group()
def board() -> None:
    """The retrain tickets on the tracker: the local board, GitHub issues or Azure Boards work items."""


@board.command("list")
@project_option
@click.option("--all", "show_all", is_flag=True, help="Closed tickets too.")
@json_option
@pass_context
def board_list(obj: _Context, show_all: bool, as_json: bool) -> None:
    """The bot's tickets on the tracker, oldest first (with --project NAME, that project's retrain tickets)."""
    from bot.planner import ticket_key
    from integrations.ports import ListsTickets

    app = _app(obj, quiet=True)
    if not isinstance(app.tracker, ListsTickets):
        raise OperationFailed(f"the {app.tracker.name} tracker cannot list its tickets; look for them there")
    tickets = app.tracker.tickets(state=None if show_all else "open")
    if obj.project_name is not None:
        tickets = [t for t in tickets if t.key == ticket_key(app.lifecycle.project.name)]
    if as_json:
        _print_json([{"id": t.id, "title": t.title, "state": t.state, "labels": list(t.labels)} for t in tickets])
        return
    if not tickets:
        click.echo("no open tickets" if not show_all else "no tickets")
        return
    click.echo(_table(("ticket", "state", "title", "labels"),
                      [(f"ticket:{t.id}", t.state, t.title, ", ".join(t.labels)) for t in tickets]))


@board.command("show")
@project_option
@click.argument("ticket", type=int)
@json_option
@pass_context
def board_show(obj: _Context, ticket: int, as_json: bool) -> None:
    """A ticket with its comments (where the tracker can show them; else its title, state and address)."""
    from integrations.ports import DescribesTickets

    app = _app(obj, quiet=True)
    if isinstance(app.tracker, DescribesTickets):
        details = app.tracker.details(ticket)
    else:  # the rest is on the tracker's own page
        found = app.tracker.get(ticket)
        details = found and {"id": found.id, "key": found.key, "title": found.title, "state": found.state,
                             "url": found.url, "labels": list(found.labels)}
    if details is None:
        raise OperationFailed(f"there is no ticket:{ticket}; see `mlops-bot board list --all`")
    card = app.store.get_state("board_cards", str(ticket))  # on a GitHub project or Azure Boards' states
    if as_json:
        _print_json({**details, "card": card})
        return
    from integrations.local import show_markdown

    body = details["body"] if "body" in details else f"(body and comments at {details['url'] or 'the tracker'})"
    heading = f"ticket:{details['id']} [{details['state']}] {details['title']}"
    if card:
        person = card.get("moved_by_person")
        heading += f"\ncard: {card.get('status') or 'no Status'}, where the bot last put it" + (
            f"; {person['by']} moved it to {person['status'] or 'no Status'} at {person['at']}" if person else "")
    # Rendered Markdown on a terminal, the text as written when piped (show_markdown decides).
    show_markdown(sys.stdout, heading, body, plain=f"{heading}\n\n{body}\n", indent=0)
    for comment in details.get("comments", []):
        heading = f"--- {comment['author']} at {comment['created_at']}"
        show_markdown(sys.stdout, heading, comment["body"], plain=f"{heading}\n{comment['body']}\n", indent=0)


@board.command("comment")
@project_option
@click.argument("ticket", type=int)
@click.argument("text")
@pass_context
def board_comment(obj: _Context, ticket: int, text: str) -> None:
    """Comment on a ticket as the console user (commands such as /retrain work), then run the bot once."""
    from integrations.ports import TakesTypedComments, Target

    app = _app(obj)
    if not isinstance(app.scm, TakesTypedComments):
        raise OperationFailed(f"comments are written on {app.scm.name}, not here: comment on the ticket there")
    if app.tracker.get(ticket) is None:
        raise OperationFailed(f"there is no ticket:{ticket}; see `mlops-bot board list --all`")
    app.scm.add_comment(Target("ticket", app.scm.repo, ticket), text)
    app.run_once()


@board.command("tick")
@click.argument("ticket", type=int)
@click.argument("box")
@pass_context
def board_tick(obj: _Context, ticket: int, box: str) -> None:
    """Tick a box of the ticket's checklist as the console user (BOX: its label's start, e.g. "Deploy v2",
    or its id), as a person does in the ticket's page; then run the bot once."""
    from bot import checklist
    from integrations.local import CONSOLE_USER, LocalBoard

    app = _app(obj)
    if not isinstance(app.tracker, LocalBoard):
        raise OperationFailed(f"tickets are on {app.tracker.name}: tick the box in the ticket's page there")
    current = app.tracker.body(ticket)
    if current is None:
        raise OperationFailed(f"there is no ticket:{ticket}; see `mlops-bot board list --all`")
    try:
        ticked = checklist.tick(current.text, box)
    except ValueError as exc:
        raise OperationFailed(str(exc)) from None
    app.tracker.edit_body(ticket, ticked, editor=CONSOLE_USER)
    app.run_once()


# --- helpers ----------------------------------------------------------------------------------


def _registry_call(call: Callable[[], Any]) -> Any:
    from pipeline.registry_port import RegistryError

    try:
        return call()
    except RegistryError as exc:
        raise OperationFailed(str(exc)) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [tuple(map(str, row)) for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=argv, prog_name="mlops-bot")
