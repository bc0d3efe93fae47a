"""The packaged model, loaded in a fresh process as `models predict` and the deploy target load it.

Real custom classes in a temporary model project, real skops artifacts and a real child process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from pipeline import load_check
from pipeline.load_check import (
    FreshProcessCheck,
    ModelOutputs,
    check_in_fresh_process,
    checked_positions,
    compare_outputs,
)
from pipeline.loader import Loader, shared_loader
from pipeline.package import MODEL_FILE, ArtifactError, package
from pipeline.spec import load_project
from pipeline.train import train
from tests.conftest import EXAMPLE, process_alive
from tests.standby import wait_until

# A few numeric columns of scikit-learn's breast cancer data, as the bundled example holds it.
_COLUMNS = ["mean_radius", "mean_texture", "mean_smoothness", "worst_concavity", "worst_area"]
_TARGET = "diagnosis"

_FEATURES = '''
import json
import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

OFFSET = 0.0  # changed by train.make_shifted_model, in the training process only
ENVIRONMENT_FILE = {environment_file!r}


class Clip(TransformerMixin, BaseEstimator):
    """Clip each column to the quantiles seen in training."""

    def __init__(self, quantile=0.02):
        self.quantile = quantile

    def fit(self, X, y=None):
        self.low_, self.high_ = np.quantile(np.asarray(X, dtype=float), [self.quantile, 1 - self.quantile], axis=0)
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), self.low_, self.high_)


class Shift(Clip):
    """Clips, then adds a module-level offset: state the saved model does not carry."""

    def transform(self, X):
        return super().transform(X) + OFFSET


class RecordEnvironment(Clip):
    """Clips, and writes the names of the variables its process sees."""

    def transform(self, X):
        with open(ENVIRONMENT_FILE, "w") as handle:
            json.dump(sorted(os.environ), handle)
        return super().transform(X)


FACTOR = 1.0  # rewritten on disk by a test: each check must import this file afresh


class Scale(Clip):
    """Clips, scales by the module's FACTOR, and writes which process it runs in and its parent."""

    def transform(self, X):
        with open(ENVIRONMENT_FILE.replace("environment.json", "processes.jsonl"), "a") as handle:
            handle.write(json.dumps({{"pid": os.getpid(), "parent": os.getppid()}}) + "\\n")
        return super().transform(X) * FACTOR


class SlowToLoad(Clip):
    """Hangs while being loaded (skops restores attributes through __setstate__)."""

    def __setstate__(self, state):
        import time

        time.sleep(300)
        super().__setstate__(state)


def make_local_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    class LocalClip(Clip):
        pass

    return make_pipeline(LocalClip(), LogisticRegression(max_iter=1000))
'''

_TRAIN = '''
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import features
from features import Clip, RecordEnvironment, Scale, Shift, SlowToLoad


def make_model():
    return make_pipeline(Clip(), StandardScaler(), LogisticRegression(max_iter=1000))


def make_shifted_model():
    features.OFFSET = 2.5  # the trainer's process only: a fresh one keeps 0.0
    return make_pipeline(Shift(), StandardScaler(), LogisticRegression(max_iter=1000))


def make_recording_model():
    return make_pipeline(RecordEnvironment(), LogisticRegression(max_iter=1000))


def make_slow_model():
    return make_pipeline(SlowToLoad(), LogisticRegression(max_iter=1000))


def make_scaled_model():
    return make_pipeline(Scale(), LogisticRegression(max_iter=1000))
'''


def _toml(entry_point: str, trusted: list[str]) -> str:
    return textwrap.dedent(f"""
        [project]
        name = "clipped"

        [data]
        path = "data.csv"
        target = "{_TARGET}"

        [model]
        estimator = "train:{entry_point}"
        trusted_types = {json.dumps(trusted)}

        [metrics]
        primary = "roc_auc"
    """)


@pytest.fixture
def project_modules():
    """The project's modules are imported by name; each test's project must bring its own."""
    names = ("features", "train", "helpers_outside")
    for name in names:
        sys.modules.pop(name, None)
    yield
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def make_project(tmp_path, project_modules):
    def make(entry_point: str = "make_model", trusted: list[str] = ()) -> Path:
        root = tmp_path / "clipped"
        root.mkdir(exist_ok=True)
        (root / "features.py").write_text(_FEATURES.format(environment_file=str(tmp_path / "environment.json")))
        (root / "train.py").write_text(_TRAIN)
        (root / "mlops.toml").write_text(_toml(entry_point, list(trusted)))
        data = pd.read_csv(EXAMPLE / "data" / "train.csv")[[*_COLUMNS, _TARGET]].dropna()  # no imputer here
        data.to_csv(root / "data.csv", index=False)
        return root

    return make


def _trained_artifact(root: Path, folder: Path):
    """Train the project's model as the pipeline does and package it; return it and held-out rows."""
    spec = load_project(root)
    data = pd.read_csv(root / "data.csv")
    x, y = data[_COLUMNS], data[_TARGET]
    x_train, y_train, x_test = x.iloc[:420], y.iloc[:420], x.iloc[420:].reset_index(drop=True)
    trained = train(spec.model, x_train, y_train, seed=0, project_root=root)
    folder.mkdir()
    package(trained, folder, model_name=spec.name, training_features=x_train, training_target=y_train)
    return spec, trained.estimator, x_test


def _check(spec, folder: Path, estimator, rows: pd.DataFrame, **options) -> None:
    check_in_fresh_process(folder, rows, ModelOutputs.of(estimator, rows),
                           trusted_types=tuple(spec.model.trusted_types), project_root=spec.root, **options)


# --- loading as deployed --------------------------------------------------------------------


def test_a_class_of_the_project_not_in_trusted_types_fails_naming_it_and_the_fix(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project(), tmp_path / "artifact")

    with pytest.raises(ArtifactError) as caught:
        _check(spec, tmp_path / "artifact", estimator, rows)

    message = str(caught.value)
    assert "\n" not in message
    assert "cannot be loaded in a fresh process" in message
    assert "model.trusted_types does not list: features.Clip" in message
    assert message.endswith('add them in mlops.toml: model.trusted_types = ["features.Clip"]')


def test_listed_in_trusted_types_it_loads_and_scores_as_in_training(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project(trusted=["features.Clip"]), tmp_path / "artifact")
    assert len(rows) == len(pd.read_csv(spec.root / "data.csv")) - 420

    _check(spec, tmp_path / "artifact", estimator, rows)  # raises on any difference

    # The same through the other entry: the estimator, its outputs computed by the check.
    check_in_fresh_process(tmp_path / "artifact", rows, estimator=estimator, trusted_types=("features.Clip",),
                           project_root=spec.root)


def test_of_more_rows_than_it_scores_the_check_takes_them_evenly_and_names_a_difference_by_its_row(
        make_project, tmp_path, monkeypatch):
    monkeypatch.setattr(load_check, "CHECKED_ROWS_AT_MOST", 20)
    spec, estimator, rows = _trained_artifact(make_project(trusted=["features.Clip"]), tmp_path / "artifact")
    positions = checked_positions(len(rows))
    assert len(rows) > 40 and len(positions) == 20
    assert positions[0] == 0 and positions[-1] == len(rows) - 1 and (np.diff(positions) >= 2).all()
    assert checked_positions(20) is None  # no more rows than it scores: all of them

    # In-process outputs told wrong on one checked row and on one row between two checked ones.
    truth = ModelOutputs.of(estimator, rows)
    checked, skipped = int(positions[7]), int(positions[7]) + 1
    told = truth.predictions.copy()
    for row in (checked, skipped):
        told[row] = "benign" if truth.predictions[row] == "malignant" else "malignant"

    with pytest.raises(ArtifactError) as caught:
        check_in_fresh_process(tmp_path / "artifact", rows, ModelOutputs(told, truth.probabilities),
                               trusted_types=("features.Clip",), project_root=spec.root)

    assert f"held-out row {checked + 1} predicted " in str(caught.value)
    assert "(1 of 20 rows checked differ)" in str(caught.value)


def test_the_fix_names_every_type_to_trust_with_those_already_trusted(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project("make_shifted_model", trusted=["features.Other"]),
                                              tmp_path / "artifact")

    with pytest.raises(ArtifactError, match=r'model\.trusted_types = \["features\.Other", "features\.Shift"\]$'):
        _check(spec, tmp_path / "artifact", estimator, rows)


def test_outputs_that_depend_on_state_not_saved_with_the_model_do_not_match(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project("make_shifted_model", trusted=["features.Shift"]),
                                              tmp_path / "artifact")
    assert sys.modules["features"].OFFSET == 2.5  # set while the estimator was built, in this process only

    with pytest.raises(ArtifactError) as caught:
        _check(spec, tmp_path / "artifact", estimator, rows)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the packaged model scores the held-out rows differently in a fresh process: "
                              "held-out row ")
    assert f"of {len(rows)} rows differ" in message
    assert "keep every setting in the estimator's own parameters and attributes" in message


def test_the_child_process_sees_no_secrets(make_project, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_for_the_model")
    monkeypatch.setenv("MLOPS_STATE_URL", "postgresql://user:password@db/state")
    monkeypatch.setenv("LANG", "C.UTF-8")
    spec, estimator, rows = _trained_artifact(
        make_project("make_recording_model", trusted=["features.RecordEnvironment"]), tmp_path / "artifact")
    expected = ModelOutputs.of(estimator, rows)
    seen_in_training = set(json.loads((tmp_path / "environment.json").read_text()))
    assert {"GITHUB_TOKEN", "MLOPS_STATE_URL"} <= seen_in_training

    check_in_fresh_process(tmp_path / "artifact", rows, expected, trusted_types=("features.RecordEnvironment",),
                           project_root=spec.root)

    seen_in_child = set(json.loads((tmp_path / "environment.json").read_text()))
    assert seen_in_child != seen_in_training, "the child never scored"
    assert not {"GITHUB_TOKEN", "MLOPS_STATE_URL"} & seen_in_child
    assert {"PATH", "PYTHONPATH", "LANG"} <= seen_in_child


def test_a_model_too_slow_to_load_is_stopped_with_a_clear_message(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project("make_slow_model", trusted=["features.SlowToLoad"]),
                                              tmp_path / "artifact")

    with pytest.raises(ArtifactError) as caught:
        _check(spec, tmp_path / "artifact", estimator, rows, timeout_s=3)

    assert str(caught.value).startswith(
        f"loading the packaged model in a fresh process and scoring {len(rows)} held-out rows took longer than 3 s "
        "and was stopped")


def test_a_check_left_unfinished_stops_its_child_and_removes_its_folder(make_project, tmp_path):
    """The pipeline begins the check before validation and finishes it after: validation failing
    first must leave no process and no scratch folder behind. (A new Python process starts at once:
    one forked from a loader only when the check is finished, so none is left to stop.)"""
    spec, _estimator, rows = _trained_artifact(make_project("make_slow_model", trusted=["features.SlowToLoad"]),
                                               tmp_path / "artifact")
    with pytest.raises(RuntimeError, match="validation failed first"):
        with FreshProcessCheck(tmp_path / "artifact", rows, trusted_types=tuple(spec.model.trusted_types),
                               project_root=spec.root, loader=None) as check:
            with pytest.raises(subprocess.TimeoutExpired):
                check.child.wait(1.0)  # loading (slowly) while the caller goes on
            pid = check.child.pid
            assert process_alive(pid)
            raise RuntimeError("validation failed first")
    wait_until(lambda: not process_alive(pid), timeout=30, what="the unfinished check's process to end")
    assert not check.scratch.exists()

    with pytest.raises(RuntimeError, match="validation failed first"):
        with FreshProcessCheck(tmp_path / "artifact", rows, trusted_types=tuple(spec.model.trusted_types),
                               project_root=spec.root) as forked:
            raise RuntimeError("validation failed first")
    assert forked.child is None and not forked.scratch.exists()


def test_a_forked_check_too_slow_is_stopped_and_its_loader_serves_the_next(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project("make_slow_model", trusted=["features.SlowToLoad"]),
                                              tmp_path / "artifact")
    loader = shared_loader()
    check = FreshProcessCheck(tmp_path / "artifact", rows, trusted_types=tuple(spec.model.trusted_types),
                              project_root=spec.root, timeout_s=3)
    with check, pytest.raises(ArtifactError, match="took longer than 3 s and was stopped"):
        check.finish(ModelOutputs.of(estimator, rows))
    pid = check.child.pid
    wait_until(lambda: not process_alive(pid), timeout=30, what="the stopped check's process to end")
    assert shared_loader() is loader and loader.running()


def test_a_check_started_early_scores_as_in_training_when_finished(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project(trusted=["features.Clip"]), tmp_path / "artifact")
    with FreshProcessCheck(tmp_path / "artifact", rows, trusted_types=("features.Clip",),
                           project_root=spec.root) as check:
        expected = ModelOutputs.of(estimator, rows)  # the caller's own work meanwhile
        check.finish(expected)
    assert not check.scratch.exists()


# --- the loader the checks are forked from ------------------------------------------------------


def _processes_that_transformed(tmp_path: Path) -> list[dict[str, int]]:
    """Each process (and its parent) that ran ``Scale.transform`` since the last call, in order."""
    record = tmp_path / "processes.jsonl"
    lines = record.read_text().splitlines() if record.exists() else []
    record.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


def test_checks_are_forked_from_one_loader_and_each_imports_the_project_afresh(make_project, tmp_path):
    """The loader never imports the project: a check sees the project's files as they are now, and
    nothing a previous check imported or changed."""
    root = make_project("make_scaled_model", trusted=["features.Scale"])
    spec, estimator, rows = _trained_artifact(root, tmp_path / "artifact")
    expected = ModelOutputs.of(estimator, rows)
    loader = shared_loader()
    _processes_that_transformed(tmp_path)

    _check(spec, tmp_path / "artifact", estimator, rows)
    [first] = _processes_that_transformed(tmp_path)[1:]  # after the expected outputs, computed here
    _check(spec, tmp_path / "artifact", estimator, rows)
    [second] = _processes_that_transformed(tmp_path)[1:]

    assert shared_loader() is loader and loader.running()
    assert first["parent"] == second["parent"] == loader.process.pid  # forked by the loader, twice
    assert first["pid"] != second["pid"]
    features = root / "features.py"  # a longer literal: a same-size edit could reuse the cached bytecode
    features.write_text(features.read_text().replace("FACTOR = 1.0 ", "FACTOR = 3.25 "))
    with pytest.raises(ArtifactError, match="scores the held-out rows differently in a fresh process"):
        check_in_fresh_process(tmp_path / "artifact", rows, expected, trusted_types=("features.Scale",),
                               project_root=spec.root)


def test_a_killed_loader_is_replaced_and_meanwhile_its_checks_start_a_new_process(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project("make_scaled_model", trusted=["features.Scale"]),
                                              tmp_path / "artifact")
    gone = shared_loader()
    _check(spec, tmp_path / "artifact", estimator, rows)  # its process runs once a check came
    gone.process.kill()
    # Not started again behind the same socket:
    wait_until(lambda: not gone.usable(), timeout=30, what="the killed loader to be found broken")
    _processes_that_transformed(tmp_path)

    # Given the broken loader's address (as a pipeline process is given its parent's): a new Python.
    _check(spec, tmp_path / "artifact", estimator, rows, loader=gone.address)
    assert _processes_that_transformed(tmp_path)[-1]["parent"] == os.getpid()
    # This process's own: a new loader, which forks the check.
    _check(spec, tmp_path / "artifact", estimator, rows)
    replacement = shared_loader()
    assert replacement is not gone and replacement.running()
    assert _processes_that_transformed(tmp_path)[-1]["parent"] == replacement.process.pid


def test_a_loader_that_ends_after_taking_the_check_hands_it_to_a_new_process(make_project, tmp_path):
    """A loader that accepts the check and ends before forking it (killed right then) answers
    nothing: the check is started in a new Python process instead."""
    spec, estimator, rows = _trained_artifact(make_project("make_scaled_model", trusted=["features.Scale"]),
                                              tmp_path / "artifact")
    expected = ModelOutputs.of(estimator, rows)
    _processes_that_transformed(tmp_path)
    address = str(tmp_path / "ends.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(1)

    def accept_and_end() -> None:
        connection, _ = listener.accept()
        connection.close()

    ending = threading.Thread(target=accept_and_end)
    ending.start()
    try:
        with FreshProcessCheck(tmp_path / "artifact", rows, trusted_types=("features.Scale",), project_root=spec.root,
                               loader=address) as check:
            check.finish(expected)
        [checked_in] = _processes_that_transformed(tmp_path)
        assert checked_in["parent"] == os.getpid()
    finally:
        ending.join(timeout=30)
        listener.close()


_WAITING_CALLER = """
import sys
from pathlib import Path
import pandas as pd
from pipeline.load_check import ModelOutputs, check_in_fresh_process

rows = pd.read_csv(sys.argv[2])
check_in_fresh_process(Path(sys.argv[1]), rows, ModelOutputs(rows.iloc[:, 0].to_numpy()),
                       trusted_types=("features.SlowToLoad",), project_root=Path(sys.argv[3]), loader=sys.argv[4])
"""


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def test_a_forked_check_whose_caller_is_killed_ends_too(make_project, tmp_path):
    """A pipeline process past its time limit is killed with everything it started; the check a
    loader forked for it is not among those processes, so it ends itself when its caller is gone."""
    spec, _estimator, rows = _trained_artifact(make_project("make_slow_model", trusted=["features.SlowToLoad"]),
                                               tmp_path / "artifact")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    loader = shared_loader()
    caller = subprocess.Popen(  # waits for its check (300 s: the model is slow to load) until killed
        [sys.executable, "-c", _WAITING_CALLER, str(tmp_path / "artifact"), str(tmp_path / "rows.csv"),
         str(spec.root), loader.address], cwd=Path(__file__).resolve().parent.parent)
    try:
        wait_until(lambda: loader.running() and _children(loader.process.pid), timeout=120,
                   what="the loader to fork the caller's check")
        [check] = _children(loader.process.pid)
        assert process_alive(check) and caller.poll() is None
        caller.kill()
        caller.wait()
        wait_until(lambda: not process_alive(check), timeout=30, what="the check whose caller was killed to end")
        assert loader.running()  # the loader itself goes on
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


def test_a_pipeline_run_in_a_process_of_its_own_has_its_check_forked_by_the_callers_loader(make_project, tmp_path,
                                                                                          embedded_registry):
    """The pipeline's process ends with its run; the caller's loader outlives it, so runs share it."""
    from pipeline.run import run_pipeline

    root = make_project("make_scaled_model", trusted=["features.Scale"])
    loader = shared_loader()

    result = run_pipeline(root, embedded_registry, trigger="test", isolated=True)

    assert result.status == "succeeded", result.error
    parents = {process["parent"] for process in _processes_that_transformed(tmp_path)}
    assert loader.process.pid in parents and shared_loader() is loader


def test_an_idle_loader_process_ends_and_the_next_check_starts_it_again(make_project, tmp_path):
    spec, estimator, rows = _trained_artifact(make_project("make_scaled_model", trusted=["features.Scale"]),
                                              tmp_path / "artifact")
    loader = Loader(idle_s=0.5)
    try:
        assert loader.process is None  # nothing started before a check needs it
        _check(spec, tmp_path / "artifact", estimator, rows, loader=loader.address)
        first = loader.process
        assert first.wait(timeout=60) == 0 and loader.usable()  # idle: ended, the socket kept
        _processes_that_transformed(tmp_path)

        _check(spec, tmp_path / "artifact", estimator, rows, loader=loader.address)

        assert loader.process is not first
        assert _processes_that_transformed(tmp_path)[-1]["parent"] == loader.process.pid
    finally:
        loader.stop()
    assert not loader.folder.exists() and not loader.running()


def test_a_changed_environment_gets_a_new_loader(monkeypatch):
    before = shared_loader()
    monkeypatch.setenv("TZ", "Pacific/Auckland" if os.environ.get("TZ") != "Pacific/Auckland" else "UTC")
    after = shared_loader()
    assert after is not before and after.environment["TZ"] == os.environ["TZ"]
    assert not before.usable() and not Path(before.address).exists()


class MainClip(TransformerMixin, BaseEstimator):
    """Stands for a class written in the training script itself."""

    def fit(self, X, y=None):
        self.columns_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), -1e4, 1e4)


MainClip.__module__ = "__main__"  # what a class defined in `python train_script.py` carries

_HELPERS = '''
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Clip(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.columns_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), -1e4, 1e4)
'''


@pytest.mark.parametrize(("where", "type_name", "reason"), [
    ("training script", "__main__.MainClip",
     "__main__.MainClip was defined in the script that trained the model, which a loader cannot import"),
    ("inside a function", "features.LocalClip",
     "features.LocalClip: features has no top-level 'LocalClip' (a class defined inside a function cannot be loaded)"),
    ("outside the project", "helpers_outside.Clip",
     "helpers_outside.Clip: module 'helpers_outside' cannot be imported "
     "(ModuleNotFoundError: No module named 'helpers_outside')"),
])
def test_a_class_no_fresh_process_can_import_fails_saying_why(make_project, tmp_path, monkeypatch, where,
                                                                type_name, reason):
    root = make_project()
    data = pd.read_csv(root / "data.csv")
    x, y = data[_COLUMNS], data[_TARGET]
    if where == "training script":
        estimator = make_pipeline(MainClip(), LogisticRegression(max_iter=1000))
    elif where == "inside a function":
        monkeypatch.syspath_prepend(str(root))
        import features

        estimator = features.make_local_model()
    else:
        elsewhere = tmp_path / "elsewhere"  # on this process's path only, as a notebook's folder would be
        elsewhere.mkdir()
        (elsewhere / "helpers_outside.py").write_text(_HELPERS)
        monkeypatch.syspath_prepend(str(elsewhere))
        import helpers_outside

        estimator = make_pipeline(helpers_outside.Clip(), LogisticRegression(max_iter=1000))
    estimator.fit(x, y)
    folder = tmp_path / "artifact"
    folder.mkdir()
    skops.io.dump(estimator, folder / MODEL_FILE)
    assert type_name in skops.io.get_untrusted_types(file=folder / MODEL_FILE)

    with pytest.raises(ArtifactError) as caught:
        check_in_fresh_process(folder, x, estimator=estimator, trusted_types=(type_name,), project_root=root)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the packaged model cannot be loaded in a fresh process as `models predict` and the "
                              f"deploy target load it: {reason}; ")
    assert f"define each such class at the top level of a module in the model project folder ({root.resolve()})" \
        in message


def test_a_model_the_deploy_target_cannot_load_is_never_promoted(make_project, embedded_registry):
    from pipeline.run import run_pipeline

    root = make_project()
    registry = embedded_registry

    refused = run_pipeline(root, registry, trigger="test")

    assert refused.status == "failed" and refused.failed_stage == "validate"
    assert refused.error.endswith('add them in mlops.toml: model.trusted_types = ["features.Clip"]')
    assert registry.versions("clipped") == [] and registry.production("clipped") is None

    (root / "mlops.toml").write_text(_toml("make_model", ["features.Clip"]))
    fixed = run_pipeline(root, registry, trigger="test")

    assert fixed.status == "succeeded" and fixed.promoted, fixed.error
    assert registry.production("clipped").version == fixed.version


# --- comparing the outputs ------------------------------------------------------------------


def _outputs(predictions, probabilities=None) -> ModelOutputs:
    return ModelOutputs(np.asarray(predictions), None if probabilities is None else np.asarray(probabilities))


def test_labels_must_match_exactly():
    trained = _outputs(["benign", "malignant", "benign"])
    assert compare_outputs(trained, _outputs(np.array(["benign", "malignant", "benign"], dtype=object))) is None
    assert compare_outputs(trained, _outputs(["benign", "benign", "benign"])) == (
        "held-out row 2 predicted 'benign' after loading, 'malignant' in training (1 of 3 rows differ)")
    assert compare_outputs(_outputs([0, 1, 1]), _outputs([0, 1, 0])) == (
        "held-out row 3 predicted 0 after loading, 1 in training (1 of 3 rows differ)")


def test_probabilities_may_differ_in_their_last_bits_only():
    probabilities = np.array([[0.25, 0.75], [0.999999, 1e-6], [0.5, 0.5]])
    trained = _outputs([1, 0, 0], probabilities)
    # What another summation order gives: a relative change of about 1e-15.
    assert compare_outputs(trained, _outputs([1, 0, 0], probabilities * (1 + 1e-15))) is None
    moved = probabilities.copy()
    moved[1] = [0.999998, 2e-6]
    assert compare_outputs(trained, _outputs([1, 0, 0], moved)) == (
        "held-out row 2 class probabilities [0.999998, 2e-06] after loading, [0.999999, 1e-06] in training "
        "(1 of 3 rows differ)")
    assert compare_outputs(trained, _outputs([1, 0, 0])) == "class probabilities are missing after loading"


def test_regression_values_compare_within_the_tolerance_and_missing_values_match():
    values = np.array([1.5, np.nan, -2e8])
    assert compare_outputs(_outputs(values), _outputs(values * (1 + 1e-12))) is None
    assert compare_outputs(_outputs(values), _outputs(np.array([1.5, np.nan, -2e8 * (1 + 1e-6)]))) == (
        "held-out row 3 predicted -200000200 after loading, -200000000 in training (1 of 3 rows differ)")
    assert compare_outputs(_outputs(values), _outputs(values[:2])) == (
        "predictions have shape (2,) after loading, (3,) in training")
