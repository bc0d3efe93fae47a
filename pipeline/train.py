"""Train: build the estimator the spec names, fit it deterministically, record what produced it."""

from __future__ import annotations

import importlib
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.data import FeatureSchema
from pipeline.spec import ModelSpec

__all__ = [
    "TrainError",
    "TrainedModel",
    "build_estimator",
    "code_version",
    "environment",
    "project_on_path",
    "train",
]

_RECORDED_PACKAGES = ("mlops-bot", "scikit-learn", "numpy", "pandas", "scipy", "skops", "pyarrow")


class TrainError(RuntimeError):
    """The estimator could not be built or fitted; the message says which and why."""


@dataclass(frozen=True)
class TrainedModel:
    estimator: Any
    task: str
    schema: FeatureSchema
    params: dict[str, Any]
    seed: int
    training_rows: int
    code_version: dict[str, Any] | None
    environment: dict[str, str] = field(default_factory=dict)


def train(
    spec: ModelSpec, features: pd.DataFrame, target: pd.Series, *, seed: int, project_root: Path
) -> TrainedModel:
    estimator, task = build_estimator(spec, features, seed=seed, project_root=project_root)
    try:
        estimator.fit(features, target)
    except Exception as exc:  # any failure inside a user's estimator is reported, never raised raw
        raise TrainError(f"{spec.estimator} failed while fitting: {type(exc).__name__}: {exc}") from exc
    return TrainedModel(
        estimator=estimator,
        task=task,
        schema=FeatureSchema.of(features),
        params=_json_safe(_final_step(estimator).get_params(deep=False)),
        seed=seed,
        training_rows=len(features),
        code_version=code_version(project_root),
        environment=environment(),
    )


def build_estimator(spec: ModelSpec, features: pd.DataFrame, *, seed: int, project_root: Path) -> tuple[Any, str]:
    """The estimator, unfitted, and its task. A class path gets our preprocessing in front of it;
    a ``module:function`` entry point is the user's whole pipeline and is used as it is."""
    if ":" in spec.estimator:
        estimator = _call_entry_point(spec, project_root)
    else:
        estimator_class = _import_attribute(spec.estimator)
        try:
            final = estimator_class(**spec.params)
        except TypeError as exc:
            raise TrainError(f"model.params do not suit {spec.estimator}: {exc}") from exc
        estimator = _with_default_preprocessing(final, features)
    if not hasattr(estimator, "fit") or not hasattr(estimator, "predict"):
        raise TrainError(f"{spec.estimator} did not give a scikit-learn estimator (no fit/predict)")
    _seed_everything(estimator, seed)
    return estimator, spec.task or _task_of(estimator, spec.estimator)


def _import_attribute(path: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainError(f"model.estimator {path!r}: module {module_name!r} cannot be imported ({exc})") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise TrainError(f"model.estimator {path!r}: {module_name} has no {attribute!r}") from None


def _call_entry_point(spec: ModelSpec, project_root: Path) -> Any:
    module_name, _, function_name = spec.estimator.partition(":")
    module_file = project_root / (module_name.replace(".", "/") + ".py")
    if not module_file.is_file():
        raise TrainError(f"model.estimator {spec.estimator!r}: {module_file} not found")
    try:
        # Imported under its own name, so classes it defines keep an importable path and a
        # saved model that uses them can be loaded again (with the project folder on the path).
        with project_on_path(project_root):
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise TrainError(f"model.estimator {spec.estimator!r}: importing {module_file} failed: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise TrainError(f"model.estimator {spec.estimator!r}: {module_file.name} has no function {function_name!r}")
    try:
        return function(**spec.params)
    except Exception as exc:
        raise TrainError(f"model.estimator {spec.estimator!r} raised: {type(exc).__name__}: {exc}") from exc


@contextmanager
def project_on_path(project_root: Path) -> Iterator[None]:
    """Let the project's own modules be imported while inside the block."""
    entry = str(project_root)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def _with_default_preprocessing(final_estimator: Any, features: pd.DataFrame) -> Any:
    """Impute and scale numbers, impute and one-hot encode categories, so a plain CSV just works."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    schema = FeatureSchema.of(features)
    numeric = [name for name, _, kind in schema.columns if kind == "numeric"]
    categorical = [name for name, _, kind in schema.columns if kind == "categorical"]
    transformers = []
    if numeric:
        transformers.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("encode", OneHotEncoder(handle_unknown="ignore", min_frequency=5)),
                    ]
                ),
                categorical,
            )
        )
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("model", final_estimator)])


def _seed_everything(estimator: Any, seed: int) -> None:
    """Give every unset ``random_state`` in the estimator (and its steps) the run's seed."""
    unset = {
        name: seed
        for name, value in estimator.get_params(deep=True).items()
        if (name == "random_state" or name.endswith("__random_state")) and value is None
    }
    if unset:
        estimator.set_params(**unset)


def _task_of(estimator: Any, path: str) -> str:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return "classification"
    if is_regressor(estimator):
        return "regression"
    raise TrainError(f"cannot tell whether {path} is a classifier or a regressor; set model.task in mlops.toml")


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value if isinstance(value, (str, int, float, bool, type(None))) else repr(value) for key, value in params.items()}


def code_version(project_root: Path) -> dict[str, Any] | None:
    """The git commit of the project and whether its files have uncommitted changes; None outside git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(project_root), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit, "dirty": bool(changes), "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def environment() -> dict[str, str]:
    recorded = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in _RECORDED_PACKAGES:
        try:
            recorded[package] = version(package)
        except PackageNotFoundError:
            continue
    return recorded
