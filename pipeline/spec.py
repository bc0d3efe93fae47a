"""The model project: a folder with an ``mlops.toml`` that says what to train and how to judge it.

The file is read into frozen pydantic models with unknown keys forbidden, so a typo such as
``tets_fraction`` fails at once with the file and the key named, instead of being ignored.
"""

from __future__ import annotations

import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "SPEC_FILENAME",
    "DataSpec",
    "DeploySpec",
    "Direction",
    "GatesSpec",
    "MetricLimit",
    "MetricsSpec",
    "ModelSpec",
    "MonitorSpec",
    "PackageSpec",
    "ProjectSpec",
    "RetrainSpec",
    "SpecError",
    "SplitSpec",
    "load_project",
]

SPEC_FILENAME = "mlops.toml"


class SpecError(ValueError):
    """The model project's ``mlops.toml`` is missing or wrong; the message names the file and key."""


class Direction(StrEnum):
    maximize = "maximize"
    minimize = "minimize"


# Metrics the validator knows, by task, with the direction in which they improve.
CLASSIFICATION_METRICS: dict[str, Direction] = {
    "accuracy": Direction.maximize,
    "balanced_accuracy": Direction.maximize,
    "f1": Direction.maximize,
    "precision": Direction.maximize,
    "recall": Direction.maximize,
    "roc_auc": Direction.maximize,
    "average_precision": Direction.maximize,
    "log_loss": Direction.minimize,
    "brier": Direction.minimize,
}
REGRESSION_METRICS: dict[str, Direction] = {
    "r2": Direction.maximize,
    "mae": Direction.minimize,
    "rmse": Direction.minimize,
    "mape": Direction.minimize,
}
KNOWN_METRICS = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectInfo(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    description: str = ""


class SplitSpec(_Strict):
    """How held-out data is chosen: at random by seed and fraction, or the latest rows by a time column."""

    method: Literal["random", "time"] = "random"
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: int = 42
    time_column: str | None = None
    stratify: bool = True

    @model_validator(mode="after")
    def _time_needs_column(self) -> SplitSpec:
        if self.method == "time" and not self.time_column:
            raise ValueError("split.method = 'time' needs split.time_column, e.g. time_column = \"event_date\"")
        return self


class DataSpec(_Strict):
    path: str = Field(description="CSV or Parquet file, or a glob of them, relative to the project folder")
    target: str
    features: list[str] | None = None
    split: SplitSpec = SplitSpec()
    id_column: str | None = Field(
        default=None, description="a row's id: never a feature; de-duplicates rows and joins late labels to batches"
    )
    categorical: list[str] = Field(
        default=[], description="columns always treated as categories (read as text) even when they hold numbers"
    )

    @field_validator("id_column")
    @classmethod
    def _id_column_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a column, e.g. id_column = \"customer_id\"; leave it out if rows have no id")
        return value

    @model_validator(mode="after")
    def _roles_do_not_overlap(self) -> DataSpec:
        if self.id_column is not None and self.id_column == self.target:
            raise ValueError(f"data.id_column and data.target are both {self.target!r}; the id cannot be what is predicted")
        if self.id_column is not None and self.features is not None and self.id_column in self.features:
            raise ValueError(f"data.features lists the id column {self.id_column!r}; an id is never a feature, "
                             "remove it from data.features")
        repeated = sorted({name for name in self.categorical if self.categorical.count(name) > 1})
        if repeated:
            raise ValueError(f"data.categorical lists {', '.join(map(repr, repeated))} more than once")
        for name, role in ((self.target, "target"), (self.id_column, "id_column"), (self.split.time_column, "split.time_column")):
            if name is not None and name in self.categorical:
                raise ValueError(f"data.categorical lists {name!r}, which is the data.{role}, not a feature; remove it")
        if self.features is not None:
            unknown = [name for name in self.categorical if name not in self.features]
            if unknown:
                raise ValueError(f"data.categorical lists {', '.join(map(repr, unknown))}, not in data.features; "
                                 "add it to data.features or remove it from data.categorical")
        return self


class ModelSpec(_Strict):
    """``estimator`` is an import path (``sklearn.ensemble.RandomForestClassifier``) or ``module:function``
    in the project folder returning an estimator or Pipeline (used as given, without our preprocessing)."""

    estimator: str
    task: Literal["classification", "regression"] | None = None
    params: dict[str, Any] = {}
    trusted_types: list[str] = Field(
        default=[], description="types of your own (e.g. 'features.Ratio') that loading a saved model may construct"
    )
    timeout_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="stop a run whose training, packaging and validation (in their own process) take longer"
    )

    @field_validator("estimator")
    @classmethod
    def _looks_like_a_path(cls, value: str) -> str:
        if ":" not in value and "." not in value:
            raise ValueError(
                f"{value!r} is not an import path; use e.g. 'sklearn.linear_model.LogisticRegression' "
                "or 'train:make_model' (a function in the project folder)"
            )
        return value


class MetricsSpec(_Strict):
    primary: str
    direction: Direction | None = None
    others: list[str] = []

    @model_validator(mode="after")
    def _known(self) -> MetricsSpec:
        for name in [self.primary, *self.others]:
            if name not in KNOWN_METRICS:
                raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(KNOWN_METRICS))}")
        return self

    @property
    def all(self) -> list[str]:
        return list(dict.fromkeys([self.primary, *self.others]))

    @property
    def primary_direction(self) -> Direction:
        return self.direction or KNOWN_METRICS[self.primary]


class MetricLimit(_Strict):
    min: float | None = None
    max: float | None = None


class GatesSpec(_Strict):
    limits: dict[str, MetricLimit] = {}
    max_regression: Annotated[float, Field(ge=0.0)] | None = Field(
        default=None, description="largest allowed drop of the primary metric against production"
    )
    must_beat_production: bool = False


class PackageSpec(_Strict):
    keep_raw_data: bool = Field(
        default=False, description="store the whole training table in the reference profile, not only a sample"
    )


# The bot's own settings (its tokens, keys, passwords, the state database's URL) are read from
# variables with these prefixes; a deploy command runs project code, so it may never ask for them.
BOT_SETTING_PREFIXES = ("MLOPS_", "GITHUB_", "SLACK_", "AZURE_DEVOPS_", "MLFLOW_")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DeploySpec(_Strict):
    stage: Literal["production", "candidate"] = "production"
    command: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    env: list[str] = Field(
        default=[], description="names of the bot's environment variables the deploy command also gets, "
                                "e.g. [\"KUBECONFIG\", \"AWS_PROFILE\"]; values are never written here"
    )

    @field_validator("env")
    @classmethod
    def _names_the_command_may_see(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _VARIABLE_NAME.match(name):
                hint = " (list names only; the value comes from the bot's environment)" if "=" in name else ""
                raise ValueError(f"{name!r} is not an environment variable name{hint}; "
                                 "use letters, digits and _, e.g. env = [\"KUBECONFIG\"]")
            if name.upper().startswith(BOT_SETTING_PREFIXES):
                raise ValueError(f"{name!r} is one of the bot's own settings, which hold its tokens and keys; "
                                 f"a deploy command may not see {', '.join(p + '*' for p in BOT_SETTING_PREFIXES)}. "
                                 "Give the deploy tool a variable of its own")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
        return names


class RetrainSpec(_Strict):
    """What a retrain trains on: the project's data, labelled production rows in a window, or both."""

    include_production: bool = Field(default=True, description="add labelled production rows to the training data")
    max_age_days: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="leave out labelled production rows observed longer ago than this"
    )
    max_rows: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="keep at most this many labelled production rows, the newest"
    )
    keep_training_data: bool = Field(default=True, description="keep the project's own data (data.path) in")

    @model_validator(mode="after")
    def _something_to_train_on(self) -> RetrainSpec:
        if not self.keep_training_data and not self.include_production:
            raise ValueError("keep_training_data = false with include_production = false leaves nothing to train on; "
                             "set one of them to true")
        return self


class MonitorSpec(_Strict):
    """Performance monitoring: when a drop on labelled production data is worth a retrain ticket."""

    max_drop: Annotated[float, Field(ge=0.0)] | None = Field(
        default=None, description="largest allowed drop of the primary metric on production data against validation"
    )
    estimated_trigger: bool = Field(
        default=False, description="let the performance estimated before labels arrive open retrain tickets"
    )


class ProjectSpec(_Strict):
    project: ProjectInfo
    data: DataSpec
    model: ModelSpec
    metrics: MetricsSpec
    gates: GatesSpec = GatesSpec()
    package: PackageSpec = PackageSpec()
    deploy: DeploySpec = DeploySpec()
    retrain: RetrainSpec = RetrainSpec()
    monitor: MonitorSpec = MonitorSpec()
    drift: dict[str, Any] = {}

    # Where the file was read from; not part of the TOML.
    root: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _gates_name_known_metrics(self) -> ProjectSpec:
        for name in self.gates.limits:
            if name not in self.metrics.all:
                raise ValueError(
                    f"gates.limits names metric {name!r}, which is not computed; "
                    f"add it to metrics.others or use one of: {', '.join(self.metrics.all)}"
                )
        return self

    @field_validator("drift")
    @classmethod
    def _drift_settings_parse(cls, value: dict[str, Any]) -> dict[str, Any]:
        from pipeline.drift import DriftConfig

        DriftConfig.from_dict(value)  # raises ValueError naming the bad key
        return value

    @property
    def name(self) -> str:
        return self.project.name

    @property
    def performance_max_drop(self) -> float:
        """How far the primary metric on production data may fall below validation before it is a finding:
        ``[monitor] max_drop``, else the gates' ``max_regression``, else 0.05."""
        if self.monitor.max_drop is not None:
            return self.monitor.max_drop
        if self.gates.max_regression is not None:
            return self.gates.max_regression
        return 0.05


def load_project(project_dir: str | Path) -> ProjectSpec:
    """Read and validate ``<project_dir>/mlops.toml``."""
    root = Path(project_dir).expanduser().resolve()
    spec_file = root / SPEC_FILENAME
    if not root.is_dir():
        raise SpecError(f"model project folder {root} does not exist; pass --project DIR or set MLOPS_PROJECT_DIR")
    if not spec_file.is_file():
        raise SpecError(f"{spec_file} not found; a model project needs an {SPEC_FILENAME} (see examples/breast_cancer)")
    try:
        raw = tomllib.loads(spec_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{spec_file}: not valid TOML: {exc}") from exc
    if "root" in raw:
        raise SpecError(f"{spec_file}: unknown key 'root'")
    try:
        return ProjectSpec.model_validate({**raw, "root": root})
    except ValidationError as exc:
        raise SpecError(f"{spec_file}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif error["type"] == "missing":
            problems.append(f"missing key '{key}'")
        else:
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"'{key}': {message}" if error["loc"] else message)
    return "; ".join(problems)
