"""The model registry on MLflow: a team's MLflow server, or an embedded SQLite store with no server.

``MlflowRegistry`` satisfies ``pipeline.registry_port.RegistryPort`` and returns its records
(``ModelVersion``, ``StageChange``, ``RunRecord``). What lives where:

* a pipeline run is an MLflow run in the experiment ``mlops-bot/<model>``, named after the bot's
  run id: params (estimator and its parameters, split, seed), metrics (validation metrics and
  production's on the same rows, ``production.<name>``), lineage tags (``mlops.commit``,
  ``mlops.change``, ``mlops.tickets``, ...), and the bot's own record in ``mlops_*`` tags;
* a published model is a version of the registered model of the same name; its MLflow model
  (``runs:/<run>/model``) holds the bot's artifact folder unchanged under ``data/artifact``
  (``model.skops``: no pickle) and an ``MLmodel`` whose pyfunc ``loader_module`` is
  ``integrations/mlflow_flavor.py``, so ``mlflow.pyfunc.load_model("models:/<name>@production")``
  works anywhere;
* production and candidate are aliases. MLflow keeps no history of alias moves, so each move the
  bot makes (or notices) is a tag on the version that received the alias,
  ``mlops_alias_move.<alias>.<UTC stamp>`` = JSON (who, when, why, command, trigger, run id,
  previous version); ``history()`` reads them back as production periods;
* the bot's run id is a tag (``mlops_run_id``) set in the request that creates the version, so a
  repeated publish finds its version instead of making a second one.

MLflow is imported on the first call that needs it, never at import or construction (``import
mlflow`` takes seconds). Before that first call, unless already set: ``MLFLOW_DISABLE_TELEMETRY``,
``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` (MLflow prints "View run ... at" to stdout, which would
spoil ``--json`` output), ``MLFLOW_LOGGING_LEVEL=WARNING`` (MLflow's INFO lines, such as the
embedded store's "Creating initial MLflow database tables" on first use, are not the bot's to say),
and fewer, shorter HTTP retries than MLflow's (about 4 minutes per call
against a server that is down): the bot retries on its own schedule.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from integrations.mlflow_webhooks import WEBHOOK_EVENTS
from pipeline.registry_port import (
    AliasChange,
    AliasMove,
    ModelVersion,
    RegistryError,
    RegistryPort,
    ReportsAliasMoves,
    RunRecord,
    Stage,
    StageChange,
    parse_model_uri,
)

_log = logging.getLogger(__name__)

__all__ = [
    "MlflowRegistry",
    "drift_report_folders",
    "embedded_tracking_uri",
    "metrics_table",
    "move_tag",
    "moves_from_tags",
    "periods",
    "rollback_target",
    "run_fields",
]

TAG_RUN_ID = "mlops_run_id"            # MLflow run and model version: the bot's run id
TAG_METADATA = "mlops_metadata"        # model version: metadata.json, compact
TAG_CREATED_AT = "mlops_created_at"    # model version: when the bot published it (its clock, exact)
TAG_MANAGED = "mlops_bot"              # registered model and experiment: kept by mlops-bot
TAG_MOVE = "mlops_alias_move"          # model version: one tag per alias move, f"{TAG_MOVE}.{alias}.{stamp}"
EXPERIMENT_PREFIX = "mlops-bot/"
ARTIFACT_SUBDIR = "artifact"           # the bot's folder inside the MLflow model: data/artifact
MODEL_ARTIFACT_PATH = "model"          # the MLflow model inside the run's artifacts
FLAVOR_MODULE = "mlops_bot_mlflow_flavor"
# The run's own artifacts, beside the MLflow model: for people browsing the run in MLflow's UI.
RUN_ARTIFACT_CARD = "model_card"             # MODEL_CARD.md
RUN_ARTIFACT_PROFILE = "reference_profile"   # profile.json, profile-sample.parquet (profile-raw.parquet)
RUN_ARTIFACT_METRICS = "metrics"             # metrics.json, metrics.md: the candidate's and production's
RUN_ARTIFACT_DRIFT = "drift_reports"         # <report folder>/report.json, report.md, report.png
_CARD_FILE, _PROFILE_FILES = "MODEL_CARD.md", ("profile.json", "profile-sample.parquet", "profile-raw.parquet")
_DRIFT_REPORT_FILES = ("report.json", "report.md", "report.png")  # what pipeline.drift.DriftReport.write writes

_RUN_STATUS = {"running": "RUNNING", "succeeded": "FINISHED", "not_promoted": "FINISHED", "failed": "FAILED"}
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # pipeline.registry_port's rule
# Run ids go into MLflow filter strings between single quotes, which have no escape: no quote, no space.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,249}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RUN_TAG_LIMIT = 8000                  # MLflow's limits: run tag values, params, version tag values
_PARAM_LIMIT = 6000
_VERSION_TAG_LIMIT = 100_000
_BATCH_LIMIT = 100                     # params or tags per log_batch request
_METADATA_IN_ARTIFACT = "@artifact"
_STAGING_MAX_AGE_S = 60 * 60
# Stores the client reads and writes itself: artifacts then go under the data dir, not ./mlruns.
_LOCAL_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql")
_UNREACHABLE = re.compile(r"Failed to establish a new connection|Connection refused|Max retries exceeded|"
                          r"Name or service not known|timed out|Connection reset|RemoteDisconnected")


# -- pure functions ----------------------------------------------------------------------------------------


def embedded_tracking_uri(data_dir: Path) -> str:
    """The embedded store's URI: ``sqlite:///<data_dir>/mlflow/mlflow.db``."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'mlflow' / 'mlflow.db'}"


def move_tag(move: AliasMove) -> tuple[str, str]:
    """The version tag that records ``move``; keys sort in time order within an alias."""
    stamp = move.at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{TAG_MOVE}.{move.alias}.{stamp}", move.to_json()


def moves_from_tags(tagged: Iterable[Mapping[str, str]], alias: str | None = None) -> list[AliasMove]:
    """Every recorded move found in the versions' tags, oldest first (optionally of one alias)."""
    moves = [AliasMove.from_json(value) for tags in tagged for key, value in tags.items()
             if key.startswith(TAG_MOVE + ".")]
    return sorted((m for m in moves if alias is None or m.alias == alias), key=lambda m: (m.at, m.version or 0))


def periods(model: str, moves: list[AliasMove]) -> list[StageChange]:
    """Production periods from the production alias's moves: each move ends the period before it,
    and a removal (``version`` None) starts none."""
    result: list[StageChange] = []
    for i, move in enumerate(moves):
        if move.version is None:
            continue
        after = moves[i + 1] if i + 1 < len(moves) else None
        result.append(StageChange(
            model=model, version=move.version, started_at=move.at, ended_at=after.at if after else None,
            reason=move.reason, run_id=move.run_id, trigger=move.trigger,
            ended_reason=after.reason if after else None,
            started_by=move.action if move.action in ("rollback", "external") else "promote",
            by=move.by, command=move.command))
    return result


def rollback_target(moves: list[AliasMove]) -> int | None:
    """The version a rollback restores: the moves form a stack (a rollback pops, anything else pushes)."""
    stack: list[int] = []
    for move in moves:
        # A removal takes the version out of production as a rollback does.
        if move.action == "rollback" or move.version is None:
            if stack:
                stack.pop()
        else:
            stack.append(move.version)
    return stack[-2] if len(stack) >= 2 else None


def metrics_table(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The validation metrics beside production's on the same held-out rows: as JSON-ready data and
    as a Markdown table. Production's column is empty where it was not scored (no production yet)."""
    validation = metadata.get("validation") or {}
    production = validation.get("production") or {}
    theirs, difference = production.get("metrics") or {}, production.get("difference") or {}
    rows = [{"metric": name, "candidate": value, "production": theirs.get(name), "difference": difference.get(name)}
            for name, value in (metadata.get("metrics") or {}).items()]
    table = {"model": metadata.get("model"), "version": metadata.get("version"),
             "primary_metric": (metadata.get("primary_metric") or {}).get("name"),
             "production_version": production.get("version"), "held_out_rows": validation.get("held_out_rows"),
             "passed": validation.get("passed"), "note": production.get("note"), "rows": rows}
    title = f"{table['model']} v{table['version']}"
    against = f"production v{table['production_version']}" if table["production_version"] else "production"
    lines = [f"# Metrics: {title} against {against}", "",
             f"| metric | {title} | {against} | difference |", "|---|---:|---:|---:|"]
    lines += [f"| {r['metric']} | {_shown_number(r['candidate'])} | {_shown_number(r['production'])} | "
              f"{_shown_number(r['difference'], signed=True)} |" for r in rows]
    if table["note"]:
        lines += ["", f"_{table['note']}_"]
    return table, "\n".join(lines) + "\n"


def drift_report_folders(metadata: Mapping[str, Any]) -> list[Path]:
    """The drift report folders a run was trained for (``context.drift_reports``) that exist on disk."""
    named = (metadata.get("context") or {}).get("drift_reports") or []
    folders = [Path(str(name)) for name in named if isinstance(name, str | os.PathLike)]
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


def run_fields(metadata: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """MLflow params, metrics and tags of a pipeline run, from the metadata of the version it published.

    params: the estimator and its parameters, the split and the seed; metrics: the validation
    metrics and production's metrics on the same rows (``production.<name>``); tags: commit,
    change, episode, tickets, trigger, data fingerprint and sources (see pipeline/run.py).
    """
    params: dict[str, str] = {}
    if metadata.get("estimator"):
        params["estimator"] = str(metadata["estimator"])
    for key, value in (metadata.get("params") or {}).items():
        params[_key(f"model.{key}")] = _short(value, _PARAM_LIMIT)
    data = metadata.get("data") or {}
    for key, value in (data.get("split") or {}).items():
        if value is not None:
            params[_key(f"split.{key}")] = _short(value, _PARAM_LIMIT)
    if metadata.get("seed") is not None:
        params["seed"] = str(metadata["seed"])
    metrics = {_key(name): float(value) for name, value in (metadata.get("metrics") or {}).items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    production = ((metadata.get("validation") or {}).get("production") or {}).get("metrics") or {}
    metrics |= {_key(f"production.{name}"): float(value) for name, value in production.items()
                if isinstance(value, int | float) and not isinstance(value, bool)}
    context = metadata.get("context") or {}
    origin = context.get("origin") or {}
    code = metadata.get("code_version") or {}
    run = metadata.get("run") or {}
    tickets = [*(origin.get("tickets") or []), *([origin["ticket"]] if origin.get("ticket") is not None else [])]
    change = None
    if origin.get("change") is not None:
        change = f"{origin['repo']}#{origin['change']}" if origin.get("repo") else str(origin["change"])
    tags = {
        # The commit trained (the project's checkout), else the one the run was asked for.
        "mlops.commit": code.get("commit") or origin.get("commit"),
        "mlops.change": change,
        "mlops.episode": origin.get("episode"),
        "mlops.tickets": json.dumps(tickets) if tickets else None,
        "mlops.trigger": run.get("trigger") or context.get("trigger"),
        "mlops.data_fingerprint": data.get("fingerprint"),
        "mlops.data_sources": json.dumps(data.get("sources"), default=str) if data.get("sources") else None,
    }
    return params, metrics, {k: _short(v, _RUN_TAG_LIMIT) for k, v in tags.items() if v}


# -- the MLflow implementation -----------------------------------------------------------------------------

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _translated(method: _Method) -> _Method:
    """Errors of MLflow and its HTTP client become one-line ``RegistryError``s naming the URI."""

    @functools.wraps(method)
    def call(self: MlflowRegistry, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except RegistryError:
            raise
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in ("mlflow", "requests", "urllib3"):
                raise
            raise self._error(exc) from exc

    return call  # type: ignore[return-value]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class MlflowRegistry(RegistryPort, ReportsAliasMoves):
    """The registry port on MLflow. ``data_dir`` holds staging, the download cache and, for a
    store the client writes itself (``sqlite:``, a file or a database URI), the artifacts."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None, *, data_dir: Path,
                 production_alias: str = "production", candidate_alias: str = "candidate",
                 clock: Callable[[], datetime] = _utc_now) -> None:
        for what, alias in (("production alias", production_alias), ("candidate alias", candidate_alias)):
            if not _ALIAS.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
                raise RegistryError(f"invalid {what} {alias!r}: use letters, digits, '_' or '-'"
                                    " ('latest' and v<number> are MLflow's own)")
        if production_alias == candidate_alias:
            raise RegistryError(f"the production and candidate aliases are both {production_alias!r}; "
                                "give them different names")
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.production_alias, self.candidate_alias = production_alias, candidate_alias
        self.data_dir = Path(data_dir).expanduser().resolve()
        root = self.data_dir / "mlflow"
        self._cache = root / "cache"
        self._staging = root / "staging"
        self._artifact_root = root / "artifacts" if _is_local_store(tracking_uri) else None
        self._clock = clock
        self._client_obj: Any = None
        self._experiments: dict[str, str] = {}
        self._known_models: set[str] = set()

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            for name, value in (("MLFLOW_DISABLE_TELEMETRY", "true"),
                                ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
                                ("MLFLOW_LOGGING_LEVEL", "WARNING"),
                                ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
                                ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                                ("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")):
                os.environ.setdefault(name, value)
            tracking_db, registry_db = _sqlite_file(self.tracking_uri), _sqlite_file(self.registry_uri)
            databases = sorted({db for db in (tracking_db, registry_db) if db is not None})
            for database in databases:  # SQLite makes the file, not its folder
                database.parent.mkdir(parents=True, exist_ok=True)
            from mlflow import MlflowClient  # here, not at import: `import mlflow` takes seconds

            # MLflow makes a new SQLite store's tables on its first use with no lock between processes:
            # two processes opening a new store at once (the bot and a command on a first start) fail
            # with "table ... already exists". They take turns at that first use, behind a lock file.
            with contextlib.ExitStack() as turn:
                for database in databases:
                    turn.enter_context(_store_creation_lock(database))
                client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
                if tracking_db is not None:
                    client.search_experiments(max_results=1)
                if registry_db is not None:
                    client.search_registered_models(max_results=1)
            self._client_obj = client
        return self._client_obj

    def close(self) -> None:
        """Drop the client; MLflow keeps no connection of ours open beyond it."""
        self._client_obj = None

    # -- publishing ---------------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        """A new, empty, private folder to write an artifact into before ``publish``.

        Publish within an hour: older staging folders are taken for abandoned and removed.
        """
        self._staging.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - _STAGING_MAX_AGE_S
        for old in self._staging.iterdir():
            try:
                abandoned = old.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if abandoned:
                shutil.rmtree(old, ignore_errors=True)
        folder = self._staging / uuid.uuid4().hex
        folder.mkdir(mode=0o700)
        return folder

    @_translated
    def publish(self, model: str, staging: Path, metadata: dict[str, Any], *, run_id: str,
                finalize: Callable[[Path, dict[str, Any]], None] | None = None,
                candidate: bool = True, created_at: datetime | None = None) -> ModelVersion:
        """Register the staged folder as the model's next version, once per bot run id.

        A run id published before returns its version and publishes nothing. The version number
        is MLflow's to give and is known only once the version exists, but metadata.json and the
        model card name it: it is predicted (highest + 1), written, uploaded, and only if MLflow
        gave another (a publisher elsewhere) are the files written and uploaded again.
        On success the staged folder is consumed; on failure it is left with its own
        metadata.json (if any) restored. ``created_at`` keeps the time a version was first
        published elsewhere (an import from the folder registry); by default, now.
        """
        _check_model_name(model)
        _check_run_id(run_id)
        staging = Path(staging)
        if not staging.is_dir():
            raise RegistryError(f"cannot publish {model}: staging folder {staging} does not exist")
        _to_json({**metadata, "model": model, "version": 0}, f"metadata for {model}")
        # One listing of the model's versions answers both questions asked before a version is made:
        # did this run publish one already (exactly once), and which number comes next (a prediction).
        listed = self._search_versions(f"name = '{model}'")
        earlier, aliases = self._first_of_run(model, listed, run_id)
        if earlier is not None:
            if candidate and self.candidate_alias not in earlier.aliases:
                # The answer to the first publish was lost before the candidate alias moved: move it,
                # unless a newer version holds it already (the aliases just read with the version).
                holder = aliases.get(self.candidate_alias)
                if holder is None or holder < earlier.version:
                    self._move(model, self.candidate_alias, earlier.version, action="candidate",
                               reason="published as a candidate", run_id=run_id,
                               trigger=str((earlier.metadata.get("run") or {}).get("trigger") or ""), by="pipeline",
                               command=None)
                    return self.get(model, earlier.version)
            return earlier
        self._ensure_registered_model(model)
        metadata_file = staging / "metadata.json"
        original = metadata_file.read_bytes() if metadata_file.exists() else None
        scratch = self._staging / f".mlflow-model-{uuid.uuid4().hex}"
        try:
            mlflow_run = self._ensure_run(model, run_id)
            predicted = max((int(mv.version) for mv in listed), default=0) + 1
            full = self._write_metadata(staging, metadata, model, predicted, finalize)
            params, metrics, tags = run_fields(full)
            self._log_batch(mlflow_run.info.run_id, params, metrics, tags, logged=mlflow_run.data.params)
            self._upload(mlflow_run.info.run_id, self._mlflow_model(staging, scratch), MODEL_ARTIFACT_PATH)
            # Before the version exists: a publish retried after a crash finds the version and stops, so
            # what is logged after it might never be. Fixed paths: a retry overwrites, never duplicates.
            self._log_run_artifacts(mlflow_run.info.run_id, staging, full, scratch / "run")
            version_tags = {TAG_RUN_ID: run_id, TAG_CREATED_AT: _to_text(created_at or self._clock()),
                            TAG_METADATA: self._metadata_tag(full)}
            created = self._client.create_model_version(
                model, source=f"runs:/{mlflow_run.info.run_id}/{MODEL_ARTIFACT_PATH}", run_id=mlflow_run.info.run_id,
                tags=version_tags, await_creation_for=0)  # OSS stores create versions READY; waiting only polls
            version = int(created.version)
            if version != predicted:
                full = self._write_metadata(staging, metadata, model, version, finalize)
                self._upload(mlflow_run.info.run_id, staging, f"{MODEL_ARTIFACT_PATH}/data/{ARTIFACT_SUBDIR}")
                self._log_run_artifacts(mlflow_run.info.run_id, staging, full, scratch / "run-again")
                version_tags[TAG_METADATA] = self._metadata_tag(full)
                self._client.set_model_version_tag(model, str(version), TAG_METADATA, version_tags[TAG_METADATA])
        except BaseException:
            _restore(metadata_file, original)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if candidate:
            trigger = str((full.get("run") or {}).get("trigger") or "")
            self._move(model, self.candidate_alias, version, action="candidate", reason="published as a candidate",
                       run_id=run_id, trigger=trigger, by="pipeline", command=None)
        # Consumed: its files are in the artifact store now (and, for a remote one, kept as the download).
        self._keep_published(staging, model, version, created.source, mlflow_run.info.artifact_uri)
        # The version just made, not read back: its tags are the ones written (move tags are not part of
        # the record) and a new version's only alias is the candidate alias just moved to it.
        return self._version(created, {self.candidate_alias: version} if candidate else {},
                             tags={**(created.tags or {}), **version_tags})

    @_translated
    def find_by_run_id(self, model: str, run_id: str) -> ModelVersion | None:
        """The (first) version that pipeline run ``run_id`` published, or None."""
        if not _MODEL_NAME.fullmatch(model) or not _RUN_ID.fullmatch(run_id):
            return None  # never published: publish refuses such names
        found = self._client.search_model_versions(f"name = '{model}' AND tags.{TAG_RUN_ID} = '{run_id}'",
                                                   max_results=10)
        return self._first_of_run(model, found, run_id)[0]

    def _first_of_run(self, model: str, found: Iterable[Any],
                      run_id: str) -> tuple[ModelVersion | None, dict[str, int]]:
        """The first of MLflow's versions ``found`` that ``run_id`` published (or None), and the model's
        aliases when there is one."""
        found = [mv for mv in found if (mv.tags or {}).get(TAG_RUN_ID) == run_id]
        if not found:
            return None, {}
        first = min(found, key=lambda mv: int(mv.version))
        # search_model_versions leaves aliases out: they are asked for separately.
        aliases = self._aliases_of(model)
        return self._version(first, aliases), aliases

    # -- reading --------------------------------------------------------------------------------------------

    @_translated
    def get(self, model: str, version: int) -> ModelVersion:
        return self._version(self._model_version(model, version))

    def _model_version(self, model: str, version: int) -> Any:
        """MLflow's model version, or a RegistryError saying which models or versions exist."""
        try:
            return self._client.get_model_version(model, str(version))
        except Exception as exc:
            if not _not_found(exc) and not _invalid(exc):
                raise
            known = self._version_numbers(model) if _MODEL_NAME.fullmatch(model) else []
            if not known and not self._registered(model):
                raise self._no_such_model(model) from None
            raise RegistryError(f"model {model} has no version {version}; versions: "
                                f"{', '.join(map(str, known)) or 'none published yet'}") from None

    @_translated
    def versions(self, model: str | None = None) -> list[ModelVersion]:
        """Versions ordered by model then version; all the bot's models when ``model`` is None."""
        names = [model] if model is not None else self.models()
        result = []
        for name in names:
            if not _MODEL_NAME.fullmatch(name):
                continue
            aliases = self._aliases_of(name)
            result += [self._version(mv, aliases) for mv in self._search_versions(f"name = '{name}'")]
        return sorted(result, key=lambda v: (v.model, v.version))

    @_translated
    def models(self) -> list[str]:
        found = self._client.search_registered_models(filter_string=f"tags.{TAG_MANAGED} = 'true'")
        return sorted(rm.name for rm in found)

    @_translated
    def production(self, model: str) -> ModelVersion | None:
        """The version holding the production alias, or None (also for a model never published)."""
        return self._by_alias(model, self.production_alias)

    @_translated
    def candidate(self, model: str) -> ModelVersion | None:
        """The version holding the candidate alias, or None."""
        return self._by_alias(model, self.candidate_alias)

    @_translated
    def aliases(self, model: str) -> dict[str, int]:
        """Every alias of the model and its version, in one request: the idle cycle's check."""
        return self._aliases_of(model)

    @_translated
    def version_for_uri(self, uri: str) -> ModelVersion:
        """The version ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` names."""
        parsed = parse_model_uri(uri)
        if parsed.version is not None:
            return self.get(parsed.name, parsed.version)
        found = self._by_alias(parsed.name, parsed.alias)
        if found is None:
            if not self._registered(parsed.name):
                raise self._no_such_model(parsed.name)
            raise RegistryError(f"{parsed.name} has no alias {parsed.alias!r}; aliases: "
                                f"{', '.join(sorted(self._aliases_of(parsed.name))) or 'none'}")
        return found

    # -- production ---------------------------------------------------------------------------------------------

    @_translated
    def promote(self, model: str, version: int, *, reason: str, run_id: str | None = None, trigger: str = "manual",
                by: str = "mlops-bot", command: str | None = None) -> ModelVersion:
        """Point the production alias at ``version`` and record the move on that version's tags.

        Promoting the version already in production records nothing new (a promote delivered
        twice moves the alias once), unless its last move was never recorded (the process died
        between moving the alias and writing the tag). A promoted candidate loses the candidate alias.
        """
        # The model's aliases and versions, read once: the version promoted and its aliases, which version
        # holds production now and the moves recorded so far (the versions' tags) all come from them.
        aliases = self._aliases_of(model)
        listed = self._search_versions(f"name = '{model}'") if _MODEL_NAME.fullmatch(model) else []
        mv = next((found for found in listed if int(found.version) == version), None)
        if mv is None:  # no such version (the error says which exist), or made since the listing
            mv = self._model_version(model, version)
        self._move(model, self.production_alias, version, action="promote", reason=reason, run_id=run_id,
                   trigger=trigger, by=by, command=command, seen=(aliases, listed))
        own = {alias for alias, holder in aliases.items() if holder == version} | {self.production_alias}
        if self.candidate_alias in own:
            # Read again before deleting: a newer candidate (another run, a person in the MLflow UI) may
            # have taken the alias since, and MLflow deletes an alias whatever it points at.
            if self._aliases_of(model).get(self.candidate_alias) == version:
                self._client.delete_registered_model_alias(model, self.candidate_alias)
            own.discard(self.candidate_alias)  # deleted, or held by a newer candidate now
        # The version read above with the aliases this promote gave and took, not read a second time.
        return self._version(mv, dict.fromkeys(own, version))

    @_translated
    def rollback(self, model: str, *, reason: str, trigger: str = "manual", by: str = "mlops-bot",
                 command: str | None = None) -> ModelVersion:
        """Restore the version that was in production before the current one (the history is a stack)."""
        # The aliases and versions read once, as promote does: the version in production, the moves
        # recorded so far (the versions' tags) and the version restored all come from them.
        aliases = self._aliases_of(model)
        current = aliases.get(self.production_alias)
        if current is None:
            if model not in self.models():
                raise self._no_such_model(model)
            raise RegistryError(f"cannot roll back {model}: no version is in production")
        listed = self._search_versions(f"name = '{model}'") if _MODEL_NAME.fullmatch(model) else []
        moves = moves_from_tags((mv.tags for mv in listed), self.production_alias)
        seen: tuple[dict[str, int], list[Any]] | None = (aliases, listed)
        if not moves or moves[-1].version != current:
            # Moved outside the bot and not adopted yet: that move is the top of the stack. Its tag is
            # written after the listing, so the move below reads the history again.
            before = moves[-1].version if moves else None
            moves += self.adopt_external_moves(model, [AliasChange(self.production_alias, before, current)])
            seen = None
        target = rollback_target(moves)
        if target is None:
            raise RegistryError(f"cannot roll back {model}: v{current} is in production, no earlier version was"
                                " in production before it")
        self._move(model, self.production_alias, target, action="rollback", reason=reason, run_id=None,
                   trigger=trigger, by=by, command=command, seen=seen)
        restored = next((found for found in listed if int(found.version) == target), None)
        if restored is None:
            return self.get(model, target)
        # The version as listed, with the aliases after this move, not read a second time.
        return self._version(restored, aliases | {self.production_alias: target})

    @_translated
    def alias_history(self, model: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias``, oldest first (one request)."""
        if not _MODEL_NAME.fullmatch(model):
            return []
        return moves_from_tags((mv.tags for mv in self._search_versions(f"name = '{model}'")), alias)

    @_translated
    def history(self, model: str) -> list[StageChange]:
        """Which version held the production alias from when to when and why, oldest first."""
        return periods(model, self.alias_history(model, self.production_alias))

    @_translated
    def describe(self, model: str, version: int) -> dict[str, Any]:
        """``to_dict()`` of the version plus its own production periods under ``history``."""
        chosen = self.get(model, version)
        own = [period.to_dict() for period in self.history(model) if period.version == version]
        return chosen.to_dict() | {"history": own}

    @_translated
    def adopt_external_moves(self, model: str, changes: Iterable[AliasChange]) -> list[AliasMove]:
        """Record alias moves made outside the bot (seen by polling or a webhook), each once."""
        recorded = []
        for change in changes:
            moves = self.alias_history(model, change.alias)
            last = moves[-1] if moves else None
            if change.after is None:
                removal = self._removal(model, change, last)
                if removal is not None:
                    recorded.append(removal)
                continue
            if last is not None and last.version == change.after:
                continue  # the bot's own move, or adopted already
            move = AliasMove(alias=change.alias, version=change.after,
                             previous=change.before if change.before is not None else (last.version if last else None),
                             at=self._moment_after(last), action="external", reason="moved outside mlops-bot",
                             trigger="external", by="outside mlops-bot")
            self._client.set_model_version_tag(model, str(change.after), *move_tag(move))
            recorded.append(move)
        return recorded

    @_translated
    def import_moves(self, model: str, moves: Iterable[AliasMove], *, production: int | None) -> None:
        """Record alias moves made in another registry (the folder registry being imported), each on
        the version that received the alias (a removal: on the version that lost it), then point the
        production alias at ``production`` without recording a move of its own: the moves are its
        history. A tag's key is the move's alias and time, so repeating this writes nothing new."""
        for move in moves:
            holder = move.version if move.version is not None else move.previous
            if holder is not None:
                self._client.set_model_version_tag(model, str(holder), *move_tag(move))
        if production is not None and self._aliases_of(model).get(self.production_alias) != production:
            self._client.set_registered_model_alias(model, self.production_alias, str(production))

    def _removal(self, model: str, change: AliasChange, last: AliasMove | None) -> AliasMove | None:
        """Record an alias deleted outside the bot, on the version that held it; None if recorded already
        or no version is known to have held it."""
        if last is not None and last.version is None:
            return None  # the removal is recorded already
        holder = change.before if change.before is not None else (last.version if last else None)
        if holder is None:
            return None
        move = AliasMove(alias=change.alias, version=None, previous=holder, at=self._moment_after(last),
                         action="removed", reason=f"{change.alias} alias removed outside mlops-bot",
                         trigger="external", by="outside mlops-bot")
        try:
            self._client.set_model_version_tag(model, str(holder), *move_tag(move))
        except Exception as exc:
            if not _not_found(exc):
                raise
            return None  # the version itself was deleted: there is nothing left to tag
        return move

    # -- webhooks ---------------------------------------------------------------------------------------------

    @_translated
    def ensure_webhook(self, name: str, url: str, secret: str, events: Iterable[str] = WEBHOOK_EVENTS) -> str:
        """Create (or update, by name) the bot's registry webhook on the server; returns its id."""
        events = list(events)
        token = None
        while True:
            page = self._client.list_webhooks(max_results=100, page_token=token)
            for hook in page:
                if hook.name == name:
                    return self._client.update_webhook(hook.webhook_id, url=url, events=events, secret=secret,
                                                       status="ACTIVE").webhook_id
            token = page.token
            if not token:
                break
        return self._client.create_webhook(name=name, url=url, events=events, secret=secret).webhook_id

    # -- runs -----------------------------------------------------------------------------------------------

    @_translated
    def record_run(self, run: RunRecord) -> None:
        """Create the MLflow run of a bot run, or update what it records; a finished run is ended."""
        _check_model_name(run.model)
        _check_run_id(run.run_id)
        if run.status not in _RUN_STATUS:
            raise RegistryError(f"run {run.run_id} has status {run.status!r}; expected one of {', '.join(_RUN_STATUS)}")
        values = {"model": run.model, "status": run.status, "trigger": run.trigger, "reason": run.reason,
                  "started_at": _to_text(run.started_at),
                  "finished_at": _to_text(run.finished_at) if run.finished_at else "",
                  "failed_stage": run.failed_stage or "", "error": run.error or "",
                  "version": "" if run.version is None else str(run.version),
                  "stages": _to_json(run.stages, f"stages of run {run.run_id}", compact=True),
                  "details": _to_json(run.details, f"details of run {run.run_id}", compact=True)}
        mlflow_run = self._ensure_run(run.model, run.run_id, started_at=run.started_at).info.run_id
        too_long = [k for k in ("stages", "details") if len(values[k]) > _RUN_TAG_LIMIT]
        if too_long:
            self._client.log_text(mlflow_run, json.dumps({k: json.loads(values[k]) for k in too_long}),
                                  "mlops/record.json")
            values |= {k: _METADATA_IN_ARTIFACT for k in too_long}
        self._log_batch(mlflow_run, {}, {}, {f"mlops_{k}": _short(v, _RUN_TAG_LIMIT) for k, v in values.items()})
        if run.status != "running":
            self._client.set_terminated(mlflow_run, status=_RUN_STATUS[run.status],
                                        end_time=_millis(run.finished_at or self._clock()))

    @_translated
    def runs(self, model: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The most recent runs, newest first; all the bot's models when ``model`` is None."""
        ids = self._experiment_ids(model)
        if not ids:
            return []
        found = self._client.search_runs(ids, filter_string=f"tags.{TAG_RUN_ID} LIKE '%'", max_results=limit,
                                         order_by=["attributes.start_time DESC"])
        return [self._run_record(r) for r in found]

    @_translated
    def get_run(self, run_id: str) -> RunRecord:
        ids = self._experiment_ids(None) if _RUN_ID.fullmatch(run_id) else []
        found = self._client.search_runs(ids, filter_string=f"tags.{TAG_RUN_ID} = '{run_id}'",
                                         max_results=1) if ids else []
        if not found:
            raise RegistryError(f"no run with id {run_id!r}")
        return self._run_record(found[0])

    # -- internals ------------------------------------------------------------------------------------------

    def _move(self, model: str, alias: str, version: int, *, action: str, reason: str, run_id: str | None,
              trigger: str, by: str, command: str | None,
              seen: tuple[dict[str, int], list[Any]] | None = None) -> None:
        """Move ``alias`` to ``version`` and record the move. ``seen``: the model's aliases and versions
        as the caller has just read them in this operation; else they are read here."""
        if seen is None:
            current, moves = self._aliases_of(model).get(alias), self.alias_history(model, alias)
        else:
            current, moves = seen[0].get(alias), moves_from_tags((mv.tags for mv in seen[1]), alias)
        last = moves[-1] if moves else None
        if current == version and last is not None and last.version == version:
            return  # there already, and recorded
        if current != version:
            self._client.set_registered_model_alias(model, alias, str(version))
        # Moved first, recorded second: a crash in between leaves an unrecorded move, which the next
        # promote of the same version, or the alias poll, records; never a recorded move that did not happen.
        previous = current if current != version else (last.version if last else None)
        move = AliasMove(alias=alias, version=version, previous=previous, at=self._moment_after(last),
                         action=action, reason=reason, trigger=trigger, by=by, run_id=run_id, command=command)
        self._client.set_model_version_tag(model, str(version), *move_tag(move))

    def _moment_after(self, last: AliasMove | None) -> datetime:
        """Now, or just after ``last`` if the clock has not moved on: move tags must not collide."""
        now = self._clock()
        return now if last is None or now > last.at else last.at + timedelta(microseconds=1)

    def _by_alias(self, model: str, alias: str) -> ModelVersion | None:
        if not _MODEL_NAME.fullmatch(model):
            return None
        try:
            mv = self._client.get_model_version_by_alias(model, alias)
        except Exception as exc:
            # A missing model is RESOURCE_DOES_NOT_EXIST, but a missing alias of an existing model is
            # INVALID_PARAMETER_VALUE "Registered model alias <alias> not found." (3.x, SQL store and server).
            if _not_found(exc) or (_invalid(exc) and "not found" in str(exc)):
                return None
            raise
        return self._version(mv)

    def _registered(self, model: str) -> bool:
        try:
            self._client.get_registered_model(model)
        except Exception as exc:
            if _not_found(exc):
                return False
            raise
        return True

    def _aliases_of(self, model: str) -> dict[str, int]:
        try:
            rm = self._client.get_registered_model(model)
        except Exception as exc:
            if _not_found(exc):
                return {}
            raise
        return {alias: int(version) for alias, version in (rm.aliases or {}).items()}

    def _search_versions(self, filter_string: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = self._client.search_model_versions(filter_string, max_results=200, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def _version_numbers(self, model: str) -> list[int]:
        return sorted(int(mv.version) for mv in self._search_versions(f"name = '{model}'"))

    def _version(self, mv: Any, aliases: dict[str, int] | None = None, *,
                 tags: Mapping[str, str] | None = None) -> ModelVersion:
        """The record of MLflow's version ``mv``; ``aliases`` (the model's, alias to version) and ``tags``
        stand in for ``mv``'s own where the caller knows them better (it has just written them)."""
        version = int(mv.version)
        own = tuple(sorted(mv.aliases)) if aliases is None else tuple(sorted(a for a, v in aliases.items()
                                                                             if v == version))
        tags = dict(mv.tags or {}) if tags is None else dict(tags)
        locate = functools.partial(self._local_folder, mv.name, version, mv.source)
        metadata_text = tags.get(TAG_METADATA) or "{}"
        created = tags.get(TAG_CREATED_AT)
        return ModelVersion(
            model=mv.name, version=version, stage=self._stage_of(own), path=locate,  # type: ignore[arg-type]
            created_at=_from_text(created) if created else datetime.fromtimestamp(mv.creation_timestamp / 1000,
                                                                                    timezone.utc),
            run_id=tags.get(TAG_RUN_ID, ""),
            # Metadata too long for a tag is in the version's own metadata.json (read, so fetched, here).
            metadata=(json.loads((locate() / "metadata.json").read_text()) if metadata_text == _METADATA_IN_ARTIFACT
                      else json.loads(metadata_text)),
            aliases=own, source=mv.source)

    def _stage_of(self, aliases: Iterable[str]) -> Stage:
        held = set(aliases)
        if self.production_alias in held:
            return Stage.PRODUCTION
        if self.candidate_alias in held:
            return Stage.CANDIDATE
        return Stage.ARCHIVED

    @_translated
    def _local_folder(self, model: str, version: int, source: str) -> Path:
        """The version's artifact folder here: in place in a local artifact store, else downloaded once.

        Only ``data/artifact`` is downloaded (not MLmodel, code/, the environment files). A version's
        files never change, so a download is kept under the data dir, keyed by the version's source,
        and later reads make no request; a version this registry published keeps its staged folder there
        instead, and is never downloaded here.
        """
        target = self._cache_folder(model, version, source)
        if target.is_dir():
            return target
        uri = self._artifact_uri(source).rstrip("/") + f"/data/{ARTIFACT_SUBDIR}"
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            folder = Path(unquote(parsed.path))
            if not folder.is_dir():
                raise RegistryError(f"{model} v{version} has no mlops-bot artifact folder at {folder}: "
                                    "was it published by mlops-bot?")
            return folder
        from mlflow.artifacts import download_artifacts

        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            # The client's own URIs, never MLflow's global ones (they default to ./mlflow.db).
            got = download_artifacts(artifact_uri=uri, dst_path=str(scratch), tracking_uri=self.tracking_uri,
                                     registry_uri=self.registry_uri)
            try:
                os.rename(got, target)  # whoever renames first wins; the copies are the same
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def _cache_folder(self, model: str, version: int, source: str) -> Path:
        """Where a download of the version's artifact folder is kept, keyed by the version's source."""
        key = hashlib.sha256(f"{self.registry_uri}\n{source}".encode()).hexdigest()[:12]
        return self._cache / model / f"v{version}-{key}"

    def _keep_published(self, staging: Path, model: str, version: int, source: str, artifact_uri: str) -> None:
        """The staged folder, consumed by a publish. For a remote artifact store, it becomes the version's
        download cache: its files are the ones just uploaded (a version's files never change), so
        reading the version back here downloads nothing. A local store is read in place: removed."""
        if urlparse(artifact_uri).scheme not in ("", "file"):
            target = self._cache_folder(model, version, source)
            with contextlib.suppress(OSError):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target)  # fails if a download got there first; the copies are the same
        shutil.rmtree(staging, ignore_errors=True)

    def _artifact_uri(self, source: str) -> str:
        """Where the MLflow model of a version's ``source`` is, as an artifact URI."""
        if source.startswith("runs:/"):
            mlflow_run, _, sub = source.removeprefix("runs:/").partition("/")
            return self._client.get_run(mlflow_run).info.artifact_uri.rstrip("/") + "/" + sub
        if source.startswith("models:/m-"):  # a LoggedModel (MLflow 3's log_model), made outside the bot
            return self._client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location
        return source

    def _write_metadata(self, staging: Path, metadata: dict[str, Any], model: str, version: int,
                        finalize: Callable[[Path, dict[str, Any]], None] | None) -> dict[str, Any]:
        text = _to_json({**metadata, "model": model, "version": version}, f"metadata for {model}")
        (staging / "metadata.json").write_text(text, encoding="utf-8")
        if finalize is not None:
            # A copy, so nothing finalize does can make the tag and the file disagree.
            finalize(staging, json.loads(text))
        return json.loads(text)

    def _metadata_tag(self, full: dict[str, Any]) -> str:
        text = json.dumps(full, separators=(",", ":"), default=str)
        return text if len(text) <= _VERSION_TAG_LIMIT else _METADATA_IN_ARTIFACT

    def _mlflow_model(self, staging: Path, scratch: Path) -> Path:
        """An MLflow model of the staged folder: MLmodel (pyfunc, loader_module), code/, data/artifact/."""
        import mlflow.pyfunc

        scratch.mkdir(parents=True)
        # save_model names the data folder after the folder it is given: give it one named "artifact".
        (scratch / ARTIFACT_SUBDIR).symlink_to(staging.resolve(), target_is_directory=True)
        flavor = scratch / f"{FLAVOR_MODULE}.py"
        shutil.copyfile(Path(__file__).with_name("mlflow_flavor.py"), flavor)
        target = scratch / "model"
        mlflow.pyfunc.save_model(path=str(target), loader_module=FLAVOR_MODULE,
                                 data_path=str(scratch / ARTIFACT_SUBDIR), code_paths=[str(flavor)],
                                 pip_requirements=_requirements())
        return target

    def _log_run_artifacts(self, mlflow_run: str, staging: Path, metadata: Mapping[str, Any], scratch: Path) -> None:
        """The run's artifacts beside its model, from the staged version: the model card, the reference
        profile, the metrics table (JSON and Markdown) and the drift reports the run's context names
        (``context.drift_reports``: the episode's report folders) that exist on disk; one upload."""
        scratch.mkdir(parents=True)
        present = [(RUN_ARTIFACT_CARD, staging / _CARD_FILE)] + \
                  [(RUN_ARTIFACT_PROFILE, staging / name) for name in _PROFILE_FILES]
        for folder in drift_report_folders(metadata):
            present += [(f"{RUN_ARTIFACT_DRIFT}/{folder.name}", folder / name) for name in _DRIFT_REPORT_FILES]
        for where, source in present:
            if source.is_file():
                (scratch / where).mkdir(parents=True, exist_ok=True)
                # A link, not a copy: a reference profile may be large; the upload reads through it.
                (scratch / where / source.name).symlink_to(source.resolve())
        table, markdown = metrics_table(metadata)
        (scratch / RUN_ARTIFACT_METRICS).mkdir()
        (scratch / RUN_ARTIFACT_METRICS / "metrics.json").write_text(json.dumps(table, indent=2) + "\n")
        (scratch / RUN_ARTIFACT_METRICS / "metrics.md").write_text(markdown)
        self._upload(mlflow_run, scratch, None)

    def _upload(self, mlflow_run: str, folder: Path, artifact_path: str | None) -> None:
        try:
            self._client.log_artifacts(mlflow_run, str(folder), artifact_path)
        except OSError as exc:  # a local artifact store that refuses writes (permissions, disk full)
            raise RegistryError(f"MLflow's artifact store for {_shown(self.tracking_uri)} refused the model's files: "
                                f"{_one_line(exc)}; make it writable or free space") from exc

    def _ensure_registered_model(self, model: str) -> None:
        if model in self._known_models:
            return
        # Names that differ only in case are refused: the two models' download caches would be one
        # folder on a case-insensitive file system.
        clashes = [rm.name for rm in self._client.search_registered_models(filter_string=f"name ILIKE '{model}'")
                   if rm.name.lower() == model.lower() and rm.name != model]
        if clashes:
            raise RegistryError(f"cannot publish {model}: it differs from existing model {clashes[0]} only in case")
        try:
            existing = self._client.get_registered_model(model)
        except Exception as exc:
            if not _not_found(exc):
                raise
            existing = None
        if existing is None:
            try:
                self._client.create_registered_model(model, tags={TAG_MANAGED: "true"},
                                                     description="Published by mlops-bot")
            except Exception as exc:
                if not _already_exists(exc):  # made meanwhile by another publisher of the bot's
                    raise
        elif (existing.tags or {}).get(TAG_MANAGED) != "true":
            # Registered by people or another tool: the bot publishes into it from now on, and says so.
            _log.warning("MLflow registered model %s was not made by mlops-bot; adopting it (its versions so far: "
                         "%s)", model, ", ".join(map(str, self._version_numbers(model))) or "none")
            self._client.set_registered_model_tag(model, TAG_MANAGED, "true")
        self._known_models.add(model)

    def _experiment_id(self, model: str) -> str:
        if model not in self._experiments:
            name = EXPERIMENT_PREFIX + model
            found = self._client.get_experiment_by_name(name)
            if found is not None:
                self._experiments[model] = found.experiment_id
            else:
                # Without a location, a SQLite store puts artifacts in ./mlruns of whoever creates the experiment.
                location = (self._artifact_root / model).as_uri() if self._artifact_root else None
                try:
                    self._experiments[model] = self._client.create_experiment(
                        name, artifact_location=location, tags={TAG_MANAGED: "true"})
                except Exception as exc:
                    if not _already_exists(exc):
                        raise
                    self._experiments[model] = self._client.get_experiment_by_name(name).experiment_id
        return self._experiments[model]

    def _experiment_ids(self, model: str | None) -> list[str]:
        if model is not None:
            if not _MODEL_NAME.fullmatch(model):
                return []
            found = self._client.get_experiment_by_name(EXPERIMENT_PREFIX + model)
            return [found.experiment_id] if found else []
        return [e.experiment_id for e in self._client.search_experiments(filter_string=f"tags.{TAG_MANAGED} = 'true'")]

    def _ensure_run(self, model: str, run_id: str, *, started_at: datetime | None = None) -> Any:
        experiment = self._experiment_id(model)
        found = self._client.search_runs([experiment], filter_string=f"tags.{TAG_RUN_ID} = '{run_id}'",
                                         max_results=1)
        if found:
            return found[0]
        return self._client.create_run(experiment, start_time=_millis(started_at or self._clock()), run_name=run_id,
                                       tags={TAG_RUN_ID: run_id, "mlops_model": model})

    def _log_batch(self, mlflow_run: str, params: dict[str, str], metrics: dict[str, float],
                   tags: dict[str, str], *, logged: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        # A param, once logged, cannot change: a repeated publish of the run logs only new ones.
        params = {k: v for k, v in params.items() if k not in (logged or {})}
        now = _millis(self._clock())
        param_items = [Param(k, v) for k, v in params.items()]
        tag_items = [RunTag(k, v) for k, v in tags.items()]
        metric_items = [Metric(k, v, now, 0) for k, v in metrics.items()]
        # MLflow takes at most 100 params and 100 tags per request.
        while param_items or tag_items or metric_items:
            self._client.log_batch(mlflow_run, params=param_items[:_BATCH_LIMIT], tags=tag_items[:_BATCH_LIMIT],
                                   metrics=metric_items[:_BATCH_LIMIT * 10])
            param_items, tag_items = param_items[_BATCH_LIMIT:], tag_items[_BATCH_LIMIT:]
            metric_items = metric_items[_BATCH_LIMIT * 10:]

    def _run_record(self, run: Any) -> RunRecord:
        t = run.data.tags
        stages, details = t.get("mlops_stages", "[]"), t.get("mlops_details", "{}")
        if _METADATA_IN_ARTIFACT in (stages, details):
            with tempfile.TemporaryDirectory() as scratch:  # the client's own URIs, not MLflow's global ones
                stored = json.loads(Path(self._client.download_artifacts(run.info.run_id, "mlops/record.json",
                                                                         scratch)).read_text())
            if stages == _METADATA_IN_ARTIFACT:
                stages = json.dumps(stored.get("stages", []))
            if details == _METADATA_IN_ARTIFACT:
                details = json.dumps(stored.get("details", {}))
        return RunRecord(
            run_id=t.get(TAG_RUN_ID, run.info.run_name), model=t.get("mlops_model", ""),
            status=t.get("mlops_status", "running"), trigger=t.get("mlops_trigger", ""),
            reason=t.get("mlops_reason", ""),
            started_at=_from_text(t["mlops_started_at"]) if t.get("mlops_started_at")
            else datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc),
            finished_at=_from_text(t["mlops_finished_at"]) if t.get("mlops_finished_at") else None,
            failed_stage=t.get("mlops_failed_stage") or None, error=t.get("mlops_error") or None,
            version=int(t["mlops_version"]) if t.get("mlops_version") else None,
            stages=json.loads(stages), details=json.loads(details))

    def _no_such_model(self, model: str) -> RegistryError:
        known = self.models()
        return RegistryError(f"no model named {model!r}; models: {', '.join(known) if known else 'none published yet'}")

    def _error(self, exc: Exception) -> RegistryError:
        """One line for an MLflow failure: which MLflow, what went wrong, what to do."""
        where = f"MLflow at {_shown(self.tracking_uri)}"
        code, text = _error_code(exc), _one_line(exc)
        if _UNREACHABLE.search(text):
            cause = re.search(r"\[Errno -?\d+\] ([^\"')]+)|(timed out)", text)
            why = (cause.group(1) or cause.group(2)).strip() if cause else "no answer"
            return RegistryError(f"{where} cannot be reached ({why}); start the server, or set MLFLOW_TRACKING_URI "
                                 "to one that runs (unset, the bot uses its embedded store)")
        if code == "UNAUTHENTICATED" or "error code 401" in text:
            return RegistryError(f"{where} refused the bot's credentials (401 unauthenticated); set "
                                 "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        if code == "PERMISSION_DENIED" or "error code 403" in text:
            return RegistryError(f"{where} refused the request (403 permission denied); give the bot's MLflow user "
                                 "permission to edit the registered model and its experiment")
        return RegistryError(f"{where}: {text[:400]}")


# -- helpers -----------------------------------------------------------------------------------------------


def _requirements() -> list[str]:
    """The MLflow model's pip requirements, pinned to this environment's. Given, so that MLflow does not
    infer them: inferring loads the model in a subprocess and takes seconds."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("scikit-learn", "skops", "numpy", "scipy", "pandas"):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _is_local_store(uri: str) -> bool:
    if uri.split(":")[0].startswith("databricks"):  # "databricks", "databricks-uc": no scheme, not a path
        return False
    scheme = urlparse(uri).scheme.split("+")[0]
    return scheme in _LOCAL_SCHEMES or len(scheme) == 1  # a Windows drive letter is a path


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    name = uri.removeprefix("sqlite:///").split("?")[0]
    return None if name in ("", ":memory:") else Path(name)


@contextlib.contextmanager
def _store_creation_lock(database: Path) -> Iterator[None]:
    """Held while MLflow opens (and on first use creates) the SQLite store ``database``: one process at a time."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; MLflow's own lock for this skips Windows as well
        yield
        return
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _shown(uri: str) -> str:
    """A URI fit for a message: without the password a user may have put in it."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")).geturl()


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _not_found(exc: Exception) -> bool:
    return _error_code(exc) == "RESOURCE_DOES_NOT_EXIST"


def _invalid(exc: Exception) -> bool:
    return _error_code(exc) == "INVALID_PARAMETER_VALUE"


def _already_exists(exc: Exception) -> bool:
    return _error_code(exc) == "RESOURCE_ALREADY_EXISTS"


def _check_model_name(model: str) -> None:
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise RegistryError(f"invalid model name {model!r}: use 1-64 letters, digits, '.', '_' or '-',"
                            " starting with a letter or digit")


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise RegistryError(f"invalid run id {run_id!r}: use letters, digits and . _ : @ + - "
                            "(no spaces or quotes), starting with a letter or digit")


def _to_json(value: Any, what: str, *, compact: bool = False) -> str:
    try:
        return json.dumps(value, separators=(",", ":")) if compact else json.dumps(value, indent=2)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"{what} is not JSON-serialisable: {error}") from error


def _restore(metadata_file: Path, original: bytes | None) -> None:
    try:
        if original is None:
            metadata_file.unlink(missing_ok=True)
        else:
            metadata_file.write_bytes(original)
    except OSError:
        pass  # the publish's own error is the one to report


def _shown_number(value: Any, *, signed: bool = False) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _key(name: str) -> str:
    """A param or metric name MLflow accepts: letters, digits, _ - . / space, at most 250 characters."""
    return re.sub(r"[^\w.\- /]", "_", name)[:250]


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _to_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise RegistryError(f"timestamp {moment.isoformat()} has no time zone; use an aware datetime")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)
