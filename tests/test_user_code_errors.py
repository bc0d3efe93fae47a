"""Errors in the user's own code name the stage, the file and line, and the exception; mistakes in
mlops.toml (and a missing project folder) are usage errors found before any training."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bot.cli import cli
from pipeline.run import run_pipeline
from tests.conftest import TINY_TOML, seed_embedded_mlflow, tiny_frame, write_project


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """The CLI installs its log handler on the root logger; leave the root logger as the test found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def registry(embedded_registry):
    return embedded_registry


def _line_of(source: str, text: str) -> int:
    """The 1-based line of ``source`` that holds ``text``: where the error must be reported."""
    return next(number for number, line in enumerate(source.splitlines(), start=1) if text in line)


def _project(root: Path, files: dict[str, str], *, toml: str = TINY_TOML, frame: pd.DataFrame | None = None,
             estimator: str = "factory:make_model") -> Path:
    toml = toml.replace('"sklearn.linear_model.LogisticRegression"', f'"{estimator}"')
    write_project(root, toml, tiny_frame() if frame is None else frame)
    for name, source in files.items():
        (root / name).write_text(source)
    return root


# A stateless transformer that checks it was fitted: it fails the first time the pipeline uses it.
CHECKING_CLIP = textwrap.dedent("""\
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.utils.validation import check_is_fitted


    class Clip(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            check_is_fitted(self)
            return X.clip(-3, 3)
""")

# A stateless transformer that works, but as the last step of a Pipeline makes scikit-learn take
# that Pipeline for unfitted: it fits, then refuses to predict, from inside scikit-learn.
STATELESS_CLIP = textwrap.dedent("""\
    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin


    class Clip(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return np.clip(X, -3, 3)
""")

CLIPPED_FACTORY = textwrap.dedent("""\
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from features import Clip


    def make_model():
        numbers = make_pipeline(SimpleImputer(), Clip())
        columns = make_column_transformer((numbers, ["x1", "x2"]), (OneHotEncoder(), ["colour"]))
        return make_pipeline(columns, LogisticRegression())
""")


# --- errors in the user's code -------------------------------------------------------------------


def test_a_custom_transformer_failing_in_training_is_named_with_its_file_and_line(tmp_path, registry, clock):
    project = _project(tmp_path / "p", {"features.py": CHECKING_CLIP, "factory.py": CLIPPED_FACTORY})

    result = run_pipeline(project, registry, clock=clock)

    assert (result.status, result.failed_stage) == ("failed", "train")
    line = _line_of(CHECKING_CLIP, "check_is_fitted(self)")
    assert result.error.startswith(f"features.py:{line} (Clip.transform): NotFittedError: This Clip instance is not fitted")
    assert "\n" not in result.error


def test_a_stateless_transformer_scikit_learn_takes_for_unfitted_fails_in_training_with_the_fix(
        tmp_path, registry, clock):
    project = _project(tmp_path / "p", {"features.py": STATELESS_CLIP, "factory.py": CLIPPED_FACTORY})

    result = run_pipeline(project, registry, clock=clock)

    # Fitting worked; the model could not predict. That is training's failure, not packaging's.
    assert (result.failed_stage, result.stage("package").status) == ("train", "skipped")
    line = _line_of(STATELESS_CLIP, "def fit")
    assert result.error.startswith(f"features.py:{line} (Clip.fit): NotFittedError: scikit-learn takes Clip for unfitted")
    assert "def __sklearn_is_fitted__(self): return True" in result.error

    # The advice works: with it (and the class trusted for loading) the same project trains and deploys.
    fixed = STATELESS_CLIP + "\n    def __sklearn_is_fitted__(self):\n        return True\n"
    (project / "features.py").write_text(fixed)
    del sys.modules["features"], sys.modules["factory"]
    toml = project / "mlops.toml"
    toml.write_text(toml.read_text().replace('estimator = "factory:make_model"',
                                             'estimator = "factory:make_model"\ntrusted_types = ["features.Clip"]'))
    assert run_pipeline(project, registry, clock=clock).status == "succeeded"


FACTORY_IMPORTS = "from sklearn.linear_model import LogisticRegression\n"


@pytest.mark.parametrize(
    ("source", "marker", "expected"),
    [
        (FACTORY_IMPORTS + "\n\ndef make_model():\n    raise ValueError('no model today')\n",
         "raise ValueError", " (make_model): ValueError: no model today"),
        ("from featurs import Clip\n" + FACTORY_IMPORTS + "\n\ndef make_model():\n    return LogisticRegression()\n",
         "from featurs", ": ModuleNotFoundError: No module named 'featurs'"),
        (FACTORY_IMPORTS + "\n\ndef make_model(:\n    return LogisticRegression()\n",
         "def make_model(:", ": SyntaxError: "),
    ],
    ids=["raises", "imports-a-missing-module", "syntax-error"],
)
def test_an_estimator_factory_that_fails_is_named_with_its_file_and_line(tmp_path, registry, clock, source, marker,
                                                                         expected):
    project = _project(tmp_path / "p", {"train.py": source}, estimator="train:make_model")

    result = run_pipeline(project, registry, clock=clock)

    assert result.failed_stage == "train"
    assert result.error.startswith(f"train.py:{_line_of(source, marker)}{expected}"), result.error


PICKY_MODEL = textwrap.dedent("""\
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder


    class Picky(LogisticRegression):
        def predict_proba(self, X):
            raise RuntimeError("probabilities are not ready")


    def make_model():
        columns = make_column_transformer((SimpleImputer(), ["x1", "x2"]), (OneHotEncoder(), ["colour"]))
        return make_pipeline(columns, Picky())
""")


def test_user_code_failing_in_a_later_stage_names_that_stage(tmp_path, registry, clock):
    # It fits and predicts labels; packaging is the first to ask for probabilities.
    project = _project(tmp_path / "p", {"picky.py": PICKY_MODEL}, estimator="picky:make_model")

    result = run_pipeline(project, registry, clock=clock)

    assert (result.failed_stage, result.stage("train").status) == ("package", "succeeded")
    line = _line_of(PICKY_MODEL, "raise RuntimeError")
    assert result.error == f"picky.py:{line} (Picky.predict_proba): RuntimeError: probabilities are not ready"


@pytest.fixture
def cli_in(tmp_path, monkeypatch):
    """Run ``mlops-bot`` in a clean folder with its data there; returns (invoke, data folder)."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "bot-data"
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data))
    seed_embedded_mlflow(data)

    def invoke(*args: str, **env: str):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke, data


def test_the_cli_reports_user_code_errors_in_one_line_and_the_traceback_only_at_debug(tmp_path, cli_in):
    invoke, _ = cli_in
    project = _project(tmp_path / "p", {"features.py": CHECKING_CLIP, "factory.py": CLIPPED_FACTORY})
    line = _line_of(CHECKING_CLIP, "check_is_fitted(self)")

    quiet = invoke("pipeline", "run", "--project", str(project))

    assert quiet.exit_code == 1
    failure = [text for text in quiet.stderr.splitlines() if "FAILED" in text]
    assert len(failure) == 1 and f"FAILED in train: features.py:{line} (Clip.transform): NotFittedError:" in failure[0]
    assert "Traceback" not in quiet.output

    del sys.modules["features"], sys.modules["factory"]
    loud = invoke("pipeline", "run", "--project", str(project), MLOPS_LOG_LEVEL="DEBUG")

    assert loud.exit_code == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert f'{project / "features.py"}", line {line}, in transform' in loud.stderr


# --- configuration errors: usage, exit 2, before any training -------------------------------------


def regression_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numbers to predict from a numeric and a categorical column, with missing values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.normal(size=rows),
                          "colour": rng.choice(["red", "green", "blue"], size=rows)})
    frame["label"] = 2 * frame.x1 - frame.x2 + (frame.colour == "red") + rng.normal(scale=0.1, size=rows)
    frame.loc[rng.random(rows) < 0.05, "x2"] = np.nan
    return frame


REGRESSION_FACTORY = textwrap.dedent("""\
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder


    def make_model():
        columns = make_column_transformer((SimpleImputer(), ["x1", "x2"]), (OneHotEncoder(), ["colour"]))
        return make_pipeline(columns, Ridge())
""")


def _regressor_with_classification_metrics(root: Path, how: str) -> Path:
    """A regression project whose mlops.toml asks for roc_auc and accuracy; the task known ``how``."""
    if how == "class":
        return _project(root, {}, frame=regression_frame(), estimator="sklearn.linear_model.Ridge")
    if how == "factory":
        return _project(root, {"train.py": REGRESSION_FACTORY}, frame=regression_frame(), estimator="train:make_model")
    # Declared: the estimator's kind cannot be told from a factory that is never called for it.
    toml = TINY_TOML.replace("[metrics]", '[metrics]').replace(
        '"sklearn.linear_model.LogisticRegression"', '"sklearn.linear_model.Ridge"\ntask = "regression"')
    return _project(root, {}, toml=toml, frame=regression_frame())


@pytest.mark.parametrize(("how", "known_by"), [
    ("class", "sklearn.linear_model.Ridge is a regressor"),
    ("factory", "train:make_model returns a regressor"),
    ("declared", "model.task = 'regression'"),
])
def test_a_metric_that_does_not_fit_the_task_fails_before_training(tmp_path, registry, clock, how, known_by):
    project = _regressor_with_classification_metrics(tmp_path / "p", how)

    result = run_pipeline(project, registry, clock=clock)

    assert (result.status, result.failed_stage) == ("failed", "train")
    assert result.stage("train").started_at is None  # no data was read and nothing was fitted
    assert result.error == (
        f"{project / 'mlops.toml'}: metrics.primary = 'roc_auc', metrics.others 'accuracy' do not fit a regression "
        f"model ({known_by}); metrics that fit a regressor: mae, mape, r2, rmse"
    )


def test_metrics_that_fit_the_task_train_as_before(tmp_path, registry, clock):
    project = _regressor_with_classification_metrics(tmp_path / "p", "factory")
    toml = project / "mlops.toml"
    toml.write_text(toml.read_text().replace('primary = "roc_auc"', 'primary = "r2"')
                    .replace('others = ["accuracy"]', 'others = ["mae"]'))

    result = run_pipeline(project, registry, clock=clock)

    assert result.status == "succeeded", result.error
    assert set(result.validation["metrics"]) == {"r2", "mae"}


@pytest.mark.parametrize("mistake", ["missing-folder", "unknown-key", "metric-for-another-task"])
def test_configuration_errors_are_one_line_and_exit_2_and_leave_nothing_behind(tmp_path, cli_in, mistake):
    invoke, data = cli_in
    project = tmp_path / "p"
    if mistake == "unknown-key":
        _project(project, {}, estimator="sklearn.linear_model.LogisticRegression")
        toml = project / "mlops.toml"
        toml.write_text(toml.read_text().replace('target = "label"', 'target = "label"\ntets_fraction = 0.3'))
        expected = f"error: {toml}: unknown key 'data.tets_fraction'"
    elif mistake == "metric-for-another-task":
        _regressor_with_classification_metrics(project, "factory")
        expected = (f"error: {project / 'mlops.toml'}: metrics.primary = 'roc_auc', metrics.others 'accuracy' do not "
                    "fit a regression model (train:make_model returns a regressor); metrics that fit a regressor: "
                    "mae, mape, r2, rmse")
    else:
        expected = f"error: model project folder {project} does not exist; pass --project DIR or set MLOPS_PROJECT_DIR"

    result = invoke("pipeline", "run", "--project", str(project))

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [expected]
    # No run recorded, nothing made: the data folder holds only the empty store the fixture put there.
    assert sorted(path.relative_to(data).as_posix() for path in data.rglob("*")) == ["mlflow", "mlflow/mlflow.db"]


def test_a_failure_of_the_work_stays_exit_1_with_the_stage_named(tmp_path, cli_in):
    invoke, _ = cli_in
    project = _project(tmp_path / "p", {}, estimator="sklearn.linear_model.LogisticRegression")
    (project / "data.csv").unlink()

    result = invoke("pipeline", "run", "--project", str(project))

    assert result.exit_code == 1
    assert "FAILED in train: no data file matches data.path = 'data.csv'" in result.stderr
