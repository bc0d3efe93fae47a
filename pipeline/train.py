"""Train: build the estimator the spec names, fit it deterministically, record what produced it."""

from __future__ import annotations

import importlib
import inspect
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
from pipeline.spec import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    SPEC_FILENAME,
    ModelSpec,
    ProjectSpec,
    SpecError,
)

__all__ = [
    "TrainError",
    "TrainedModel",
    "build_estimator",
    "check_metrics_suit_task",
    "code_version",
    "describe_user_error",
    "environment",
    "project_on_path",
    "train",
]

_RECORDED_PACKAGES = ("mlops-bot", "scikit-learn", "numpy", "pandas", "scipy", "skops", "pyarrow")
# Rows a freshly fitted model must predict before training counts as done: enough to run every step
# of its pipeline once, few enough to cost nothing next to the fit.
_ROWS_PREDICTED_AFTER_FIT = 5
_PIPELINE_SOURCE = Path(__file__).resolve().parent
_METRICS_BY_TASK = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
_KIND_OF_MODEL = {"classification": "classifier", "regression": "regressor"}


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
    _check_it_predicts(estimator, features, spec, project_root)
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


def _check_it_predicts(estimator: Any, features: pd.DataFrame, spec: ModelSpec, project_root: Path) -> None:
    """A model that fitted but cannot predict failed in training, and is reported there, not later.

    The usual case: a stateless transformer of the project's own ends a scikit-learn Pipeline. It
    sets no fitted attribute, so scikit-learn takes the Pipeline around it for unfitted and refuses
    to predict, from inside scikit-learn: no frame of the user's code is there to point at.
    """
    from sklearn.exceptions import NotFittedError

    try:
        estimator.predict(features.head(_ROWS_PREDICTED_AFTER_FIT))
    except Exception as exc:
        unfitted = _unfitted_part_of_the_project(estimator, project_root) if isinstance(exc, NotFittedError) else None
        if unfitted is not None:
            where, name = unfitted
            raise TrainError(
                f"{where}: NotFittedError: scikit-learn takes {name} for unfitted after fit (it sets no attribute "
                f"ending in '_'), so the pipeline around it refuses to predict; if {name} has nothing to learn, "
                f"add `def __sklearn_is_fitted__(self): return True` to it"
            ) from exc
        raise TrainError(f"{spec.estimator} fitted but cannot predict: {type(exc).__name__}: {_one_line(exc)}") from exc


def _unfitted_part_of_the_project(estimator: Any, project_root: Path) -> tuple[str, str] | None:
    """Where the first step of the fitted model that is a class of the project's own and that
    scikit-learn takes for unfitted is defined (``features.py:8 (Clip.fit)``), and its class name."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    root = Path(project_root).resolve()
    for part in _fitted_parts(estimator):
        cls = type(part)
        # Its own fit, where state would be set; the class line when fit is inherited.
        defined = cls.__dict__.get("fit")
        pointed_at = defined if inspect.isfunction(defined) else cls
        try:
            source_file = inspect.getsourcefile(cls)
            line = inspect.getsourcelines(pointed_at)[1]
        except (OSError, TypeError):
            continue
        relative = _project_file(source_file, root) if source_file else None
        if relative is None:
            continue
        try:
            check_is_fitted(part)
        except NotFittedError:
            return f"{relative}:{line} ({pointed_at.__qualname__})", cls.__name__
        except TypeError:  # not an estimator scikit-learn can judge
            continue
    return None


def _fitted_parts(estimator: Any) -> Iterator[Any]:
    """The estimator and, depth first, the fitted steps inside it (Pipeline steps, ColumnTransformer
    and FeatureUnion parts, the fitted inner estimator of a wrapper)."""
    yield estimator
    for attribute in ("steps", "transformers_", "transformer_list"):
        for entry in getattr(estimator, attribute, None) or ():
            if isinstance(entry, tuple) and len(entry) >= 2 and hasattr(entry[1], "fit"):
                yield from _fitted_parts(entry[1])
    for attribute in ("estimator_", "regressor_", "transformer_"):
        inner = getattr(estimator, attribute, None)
        if inner is not None and hasattr(inner, "fit"):
            yield from _fitted_parts(inner)


def describe_user_error(exc: BaseException, project_root: Path) -> str | None:
    """``features.py:12 (Clip.transform): NotFittedError: ...``, in one line, when ``exc`` or an
    exception it was raised from came out of the project's own code: the innermost frame in a file
    under the project folder, its function, and that exception. None when no project code was involved."""
    root = Path(project_root).resolve()
    for error in _chain(exc):
        if isinstance(error, SyntaxError) and error.filename:
            relative = _project_file(error.filename, root)
            if relative is not None:
                return f"{relative}:{error.lineno}: SyntaxError: {error.msg}"
        where = _innermost_project_frame(error, root)
        if where is not None:
            return f"{where}: {type(error).__name__}: {_one_line(error)}"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then the ones it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _innermost_project_frame(exc: BaseException, root: Path) -> str | None:
    found = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        relative = _project_file(code.co_filename, root)
        if relative is not None:
            function = getattr(code, "co_qualname", code.co_name)
            found = f"{relative}:{tb.tb_lineno}" + ("" if function == "<module>" else f" ({function})")
        tb = tb.tb_next
    return found


def _project_file(filename: str, root: Path) -> str | None:
    """``filename`` relative to the project folder when it is the project's own code: not a library
    installed in a virtualenv inside the folder, not this package."""
    if not filename or filename.startswith("<"):
        return None
    path = Path(filename).resolve()
    if not path.is_relative_to(root) or path.is_relative_to(_PIPELINE_SOURCE):
        return None
    relative = path.relative_to(root)
    if {"site-packages", "dist-packages"} & set(relative.parts):
        return None
    return relative.as_posix()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_metrics_suit_task(spec: ProjectSpec) -> str | None:
    """The model's task as far as it is known before training, with the project's metrics checked against it.

    The task is ``model.task`` when declared, else what the estimator class is (built from
    ``model.params``, not fitted), else what the project's ``module:function`` returns. Raises
    SpecError naming mlops.toml, the key and the metrics that fit when a metric does not suit the
    task, so a regressor with ``primary = "roc_auc"`` fails before any training. Returns None when
    the task cannot be told yet (the estimator cannot be built: training reports why, in its stage).
    """
    model = spec.model
    if model.task is not None:
        task, known_by = model.task, f"model.task = {model.task!r}"
    else:
        try:
            task = _task_before_fitting(model, spec.root)
        except Exception:  # noqa: BLE001 - whatever building it raises, the train stage meets again and reports
            return None
        known_by = f"{model.estimator} {'returns' if ':' in model.estimator else 'is'} a {_KIND_OF_MODEL[task]}"
    fitting = _METRICS_BY_TASK[task]
    wrong = [f"metrics.primary = {spec.metrics.primary!r}"] if spec.metrics.primary not in fitting else []
    wrong += [f"metrics.others {name!r}" for name in spec.metrics.others if name not in fitting]
    if wrong:
        raise SpecError(
            f"{spec.root / SPEC_FILENAME}: {', '.join(wrong)} do{'es' if len(wrong) == 1 else ''} not fit a "
            f"{task} model ({known_by}); metrics that fit a {_KIND_OF_MODEL[task]}: {', '.join(sorted(fitting))}"
        )
    return task


def _task_before_fitting(model: ModelSpec, project_root: Path) -> str:
    if ":" in model.estimator:
        estimator = _call_entry_point(model, project_root)
    else:
        estimator = _construct(_import_attribute(model.estimator), model)
    return _task_of(estimator, model.estimator)


def build_estimator(spec: ModelSpec, features: pd.DataFrame, *, seed: int, project_root: Path) -> tuple[Any, str]:
    """The estimator, unfitted, and its task. A class path gets our preprocessing in front of it;
    a ``module:function`` entry point is the user's whole pipeline and is used as it is."""
    if ":" in spec.estimator:
        estimator = _call_entry_point(spec, project_root)
    else:
        estimator = _with_default_preprocessing(_construct(_import_attribute(spec.estimator), spec), features)
    if not hasattr(estimator, "fit") or not hasattr(estimator, "predict"):
        raise TrainError(f"{spec.estimator} did not give a scikit-learn estimator (no fit/predict)")
    _seed_everything(estimator, seed)
    return estimator, spec.task or _task_of(estimator, spec.estimator)


def _construct(estimator_class: Any, spec: ModelSpec) -> Any:
    try:
        return estimator_class(**spec.params)
    except TypeError as exc:
        raise TrainError(f"model.params do not suit {spec.estimator}: {exc}") from exc


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
