"""The ``mlops-bot`` command.

Heavy libraries (scikit-learn, pandas, the service SDKs) are imported inside the commands that use
them, so ``mlops-bot --help`` starts about as fast as Python itself.

Exit codes: 0 done, 1 the operation failed, 2 a usage or settings error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2


class OperationFailed(click.ClickException):
    exit_code = EXIT_FAILED

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class SettingsProblem(OperationFailed):
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"settings error: {self.format_message()}", err=True)


class _Context:
    """What every command gets: the settings (read once) and the registry, built on first use."""

    def __init__(self, env_file: str | None):
        self._env_file = env_file
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            from bot.settings import SettingsError, load_settings

            try:
                self._settings = load_settings(self._env_file or ".env")
            except SettingsError as exc:
                raise SettingsProblem(str(exc)) from None
        return self._settings

    def registry(self):
        from pipeline.registry import ModelRegistry

        return ModelRegistry(self.settings.registry_dir)

    def model_name(self, registry, given: str | None) -> str:
        """The model a command is about: as given, else the configured project's, else the only one."""
        if given:
            return given
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


pass_context = click.make_pass_decorator(_Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
model_option = click.option("--model", "model", metavar="NAME", help="Model name (default: the configured project's).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--env-file", metavar="FILE", help="Read settings from this file instead of ./.env.")
@click.version_option(package_name="mlops-bot")
@click.pass_context
def cli(ctx: click.Context, env_file: str | None) -> None:
    """mlops-bot keeps a model's lifecycle (train, package, validate, deploy, monitor, retrain)
    tied to pull requests, tickets and chat."""
    ctx.obj = _Context(env_file)


# --- pipeline ---------------------------------------------------------------------------------


@cli.group()
def pipeline() -> None:
    """Run the ML pipeline: train, package, validate, deploy."""


@pipeline.command("run")
@click.option("--project", "project", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Model project folder with an mlops.toml (default: MLOPS_PROJECT_DIR, the bundled example).")
@click.option("--reason", default="", metavar="TEXT", help="Why this run happens; recorded with the version.")
@json_option
@pass_context
def pipeline_run(obj: _Context, project: Path | None, reason: str, as_json: bool) -> None:
    """Train, package, validate and (if every gate passes) deploy the model project."""
    from pipeline.run import run_pipeline

    registry = obj.registry()
    project_dir = project or obj.settings.project_dir

    def progress(result) -> None:
        if not as_json:
            running = [stage for stage in result.stages if stage.status == "running"]
            if running:
                click.echo(f"  {running[0].name} ...", err=True)

    result = run_pipeline(project_dir, registry, trigger="cli", reason=reason, on_progress=progress)
    if as_json:
        _print_json(result.to_dict())
    else:
        _print_run(result)
    if result.status == "failed":
        sys.exit(EXIT_FAILED)


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
@click.option("--all", "all_models", is_flag=True, help="Every model in the registry, not only one.")
@json_option
@pass_context
def models_list(obj: _Context, model: str | None, all_models: bool, as_json: bool) -> None:
    """Every version with its stage, metrics, data fingerprint and code version."""
    registry = obj.registry()
    names = registry.models() if all_models else [obj.model_name(registry, model)]
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


@models.command("show")
@click.argument("version", type=int)
@model_option
@json_option
@pass_context
def models_show(obj: _Context, version: int, model: str | None, as_json: bool) -> None:
    """One version: everything recorded about it, and its time in production."""
    registry = obj.registry()
    described = _registry_call(lambda: registry.describe(obj.model_name(registry, model), version))
    if as_json:
        _print_json(described)
        return
    from pipeline.package import MODEL_CARD_FILE

    card = Path(described["path"]) / MODEL_CARD_FILE
    click.echo(card.read_text() if card.is_file() else json.dumps(described, indent=2, default=str))
    click.echo(f"stage: {described['stage']}")
    for period in described.get("history", []):
        click.echo(f"  production from {period['started_at']} to {period.get('ended_at') or 'now'}: {period['reason']}")


@models.command("promote")
@click.argument("version", type=int)
@model_option
@click.option("--reason", default="promoted by hand", metavar="TEXT", help="Recorded in the production history.")
@json_option
@pass_context
def models_promote(obj: _Context, version: int, model: str | None, reason: str, as_json: bool) -> None:
    """Make VERSION the production model (the current one is archived)."""
    registry = obj.registry()
    name = obj.model_name(registry, model)
    promoted = _registry_call(lambda: registry.promote(name, version, reason=reason, trigger="cli"))
    _report_production(registry, promoted, as_json)


@models.command("rollback")
@model_option
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
@click.argument("version", type=int, required=False)
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="CSV or Parquet file with the model's feature columns.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Where to write predictions (.csv or .parquet); default: CSV to standard output.")
@model_option
@pass_context
def models_predict(obj: _Context, version: int | None, input_path: Path, output_path: Path | None, model: str | None) -> None:
    """Score a file with VERSION (default: the production model)."""
    from pipeline.data import DataError
    from pipeline.package import ArtifactError
    from pipeline.predict import predict_file

    registry = obj.registry()
    name = obj.model_name(registry, model)
    if version is None:
        chosen = registry.production(name)
        if chosen is None:
            raise OperationFailed(f"{name} has no production model; pass a VERSION or run `mlops-bot pipeline run`")
    else:
        chosen = _registry_call(lambda: registry.get(name, version))
    try:
        predictions = predict_file(chosen, input_path, project_root=obj.settings.project_dir)
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


# --- helpers ----------------------------------------------------------------------------------


def _registry_call(call: Callable[[], Any]) -> Any:
    from pipeline.registry import RegistryError

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
