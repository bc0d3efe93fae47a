"""Validate what will be deployed: load the packaged model in a fresh process and score held-out rows.

A model that works in the process that trained it can still fail where it is deployed: a class of
the project's own that ``model.trusted_types`` does not list, a class defined in the training
script or inside a function, a module that was importable only in the trainer's process, or
outputs that depend on state not saved with the model. So before promotion the artifact is loaded
exactly as ``mlops-bot models predict`` and the deploy target load it (``load_model`` with the
project's trusted types and folder) in a new Python process, with a minimal environment, and its
scores on the held-out rows must match the ones computed in-process.

Run as ``python -m pipeline.load_check`` it is that child process; ``check_in_fresh_process`` is
the parent's side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.package import MODEL_FILE, ArtifactError, UntrustedTypesError, load_model

if TYPE_CHECKING:  # types only: the child process this module runs as needs no registry
    from pipeline.registry_port import ModelVersion, RegistryPort

__all__ = ["FreshProcessCheck", "ModelOutputs", "check_in_fresh_process", "check_reference_in_fresh_process", "compare_outputs"]

# Float outputs may differ in their last bits between processes: BLAS and OpenMP split sums by
# thread count, which changes the order of additions (about 1e-16 relative per operation). A
# model that really changed (a lost parameter, another library version, state not saved) moves
# its outputs by far more than this, so the check tells the two apart. Labels compare exactly.
RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-12  # for values near zero, where a relative bound means nothing

DEFAULT_TIMEOUT_S = 600.0

# What the child may see of the parent's environment: enough to start Python, import the project
# and compute as the parent does, and nothing else (no tokens, passwords or service settings).
_INHERITED_VARIABLES = (
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "TZ", "TMPDIR", "TEMP", "TMP",
    "SYSTEMROOT",  # Windows cannot start Python without it
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",  # the same thread caps as the parent
)
_ROWS_FILE = "rows.parquet"
_OUTPUTS_FILE = "outputs.parquet"
_STATUS_FILE = "status.json"
_STDERR_TAIL_CHARS = 400


@dataclass(frozen=True)
class ModelOutputs:
    """What a model says on some rows: predicted labels or values, and class probabilities if any."""

    predictions: np.ndarray
    probabilities: np.ndarray | None = None

    @classmethod
    def of(cls, estimator: Any, features: pd.DataFrame) -> ModelOutputs:
        """Scored the way ``models predict`` scores (one preprocessing pass for both outputs)."""
        from pipeline.validate import model_outputs

        predictions, probabilities = model_outputs(estimator, features, probabilities=True)
        return cls(np.asarray(predictions), None if probabilities is None else np.asarray(probabilities, dtype=float))


def _write_outputs(outputs: ModelOutputs, path: Path) -> None:
    """Parquet, not pickle or .npy: labels may be strings, and nothing read back may run code."""
    columns = {f"prediction_{j}": column for j, column in enumerate(_columns(outputs.predictions))}
    if outputs.probabilities is not None:
        columns |= {f"probability_{j}": column for j, column in enumerate(_columns(outputs.probabilities))}
    pd.DataFrame(columns).to_parquet(path, index=False)


def _read_outputs(path: Path, *, one_dimensional: bool) -> ModelOutputs:
    frame = pd.read_parquet(path)
    predictions = np.column_stack([frame[c].to_numpy() for c in frame.columns if c.startswith("prediction_")])
    probability_columns = [c for c in frame.columns if c.startswith("probability_")]
    probabilities = frame[probability_columns].to_numpy(dtype=float) if probability_columns else None
    return ModelOutputs(predictions[:, 0] if one_dimensional else predictions, probabilities)


def _columns(values: np.ndarray) -> list[np.ndarray]:
    return [values] if values.ndim == 1 else [values[:, j] for j in range(values.shape[1])]


def check_in_fresh_process(
    artifact_dir: Path,
    features: pd.DataFrame,
    expected: ModelOutputs | None = None,
    *,
    estimator: Any = None,
    trusted_types: tuple[str, ...] = (),
    project_root: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Load ``artifact_dir``'s model in a new process, score ``features`` there and compare.

    ``expected`` are the in-process outputs on ``features``; pass ``estimator`` instead to have
    them computed here. Raises ArtifactError, in one line with the reason and the fix, when the
    model cannot be loaded or scored there, when the process runs out of time, or when its scores
    differ from the in-process ones.
    """
    if (expected is None) == (estimator is None):
        raise TypeError("check_in_fresh_process needs exactly one of expected= and estimator=")
    with FreshProcessCheck(artifact_dir, features, trusted_types=trusted_types, project_root=project_root,
                           timeout_s=timeout_s) as check:
        check.finish(expected if expected is not None else ModelOutputs.of(estimator, features))


class FreshProcessCheck:
    """``check_in_fresh_process`` started now and finished later: the child loads the model and
    scores the rows while the caller goes on (validation scores production on the same rows), so
    its start-up (a new Python, its imports, the load) takes no wall time where a second core is
    free. Used as a context manager: leaving it unfinished (the caller failed first) stops the child.
    """

    def __init__(self, artifact_dir: Path, features: pd.DataFrame, *, trusted_types: tuple[str, ...] = (),
                 project_root: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._rows, self._timeout_s = len(features), timeout_s
        self._folder = tempfile.TemporaryDirectory(prefix="mlops-load-check-")
        self._scratch = Path(self._folder.name)
        try:
            features.reset_index(drop=True).to_parquet(self._scratch / _ROWS_FILE, index=False)
        except Exception as exc:  # pyarrow refuses some mixed object columns
            self._folder.cleanup()
            raise ArtifactError("the held-out rows cannot be written for the fresh-process check: "
                                f"{_one_line(exc)}") from exc
        command = [
            sys.executable, "-m", "pipeline.load_check", "--artifact", str(Path(artifact_dir).resolve()),
            "--project-root", str(Path(project_root).resolve()), "--folder", str(self._scratch),
            *[argument for name in trusted_types for argument in ("--trusted", name)],
        ]
        self._started = time.monotonic()
        # The child starts in the scratch folder, so `python -m` puts nothing of ours on its path.
        self._child = subprocess.Popen(command, cwd=self._scratch, env=_child_environment(), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> FreshProcessCheck:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._child.poll() is None:
            self._child.kill()
        self._child.communicate()
        self._folder.cleanup()

    def finish(self, expected: ModelOutputs) -> None:
        """Wait for the child (within the time left of ``timeout_s``) and compare its scores with
        ``expected``; raises ArtifactError as ``check_in_fresh_process`` does."""
        left = max(0.0, self._timeout_s - (time.monotonic() - self._started))
        try:
            _out, stderr = self._child.communicate(timeout=left)
        except subprocess.TimeoutExpired as exc:
            raise ArtifactError(
                f"loading the packaged model in a fresh process and scoring {self._rows} held-out rows took "
                f"longer than {self._timeout_s:g} s and was stopped; a model this slow to load would not serve "
                "either: look for slow or blocking code in the project's own classes"
            ) from exc
        status = _read_status(self._scratch / _STATUS_FILE)
        if status is None:
            raise ArtifactError(
                f"the fresh process that loads the packaged model ended with status {self._child.returncode} before "
                f"reporting: {_tail(stderr)}"
            )
        if not status["ok"]:
            raise ArtifactError(_failure_message(status))
        loaded = _read_outputs(self._scratch / _OUTPUTS_FILE, one_dimensional=np.ndim(expected.predictions) == 1)
        mismatch = compare_outputs(expected, loaded)
        if mismatch:
            raise ArtifactError(
                f"the packaged model scores the held-out rows differently in a fresh process: {mismatch}; the model "
                "depends on something not saved with it (a module-level variable, a global setting, the "
                "environment): keep every setting in the estimator's own parameters and attributes"
            )


def check_reference_in_fresh_process(
    registry: RegistryPort,
    reference: str,
    features: pd.DataFrame,
    expected: ModelOutputs | None = None,
    *,
    estimator: Any = None,
    project_root: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ModelVersion:
    """``check_in_fresh_process`` for a published version named by ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>``, resolved through ``registry`` (MLflow, embedded or a server), with
    the trusted types recorded in its metadata. Returns the version checked.

    A malformed or unknown reference raises ``RegistryError`` in one line naming the accepted shapes
    or what exists; a failed check raises ``ArtifactError`` as ``check_in_fresh_process`` does.
    """
    version = registry.version_for_uri(reference)
    check_in_fresh_process(version.path, features, expected, estimator=estimator,
                           trusted_types=tuple(version.metadata.get("trusted_types", [])),
                           project_root=project_root, timeout_s=timeout_s)
    return version


def compare_outputs(expected: ModelOutputs, loaded: ModelOutputs) -> str | None:
    """The first difference between in-process and fresh-process outputs, in words; None if they match.

    Labels (anything not floating point) must be equal; floats, i.e. probabilities and regression
    values, within RELATIVE_TOLERANCE (see there why not exactly).
    """
    want, got = np.asarray(expected.predictions), np.asarray(loaded.predictions)
    if want.shape != got.shape:
        return f"predictions have shape {got.shape} after loading, {want.shape} in training"
    if np.issubdtype(want.dtype, np.floating) and np.issubdtype(got.dtype, np.floating):
        same = np.isclose(got, want, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE, equal_nan=True)
    else:
        same = np.asarray(want, dtype=object) == np.asarray(got, dtype=object)
    difference = _first_difference(same, want, got, what="predicted")
    if difference:
        return difference
    if (expected.probabilities is None) != (loaded.probabilities is None):
        return "class probabilities are " + ("missing after loading" if loaded.probabilities is None
                                             else "given after loading but not in training")
    if expected.probabilities is None:
        return None
    want, got = np.asarray(expected.probabilities, dtype=float), np.asarray(loaded.probabilities, dtype=float)
    if want.shape != got.shape:
        return f"class probabilities have shape {got.shape} after loading, {want.shape} in training"
    same = np.isclose(got, want, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE, equal_nan=True)
    return _first_difference(same, want, got, what="class probabilities")


def _first_difference(same: np.ndarray, want: np.ndarray, got: np.ndarray, *, what: str) -> str | None:
    if same.size == 0:
        return None
    rows_differing = ~same.reshape(len(same), -1).all(axis=1)
    if not rows_differing.any():
        return None
    row = int(rows_differing.nonzero()[0][0])
    return (f"held-out row {row + 1} {what} {_shown(got[row])} after loading, {_shown(want[row])} in training "
            f"({int(rows_differing.sum())} of {len(rows_differing)} rows differ)")


def _shown(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    if isinstance(value, float | np.floating):
        return f"{float(value):.12g}"
    return repr(value.item() if isinstance(value, np.generic) else value)


def _child_environment() -> dict[str, str]:
    """A minimal environment: what starting Python and importing the project need, no secrets."""
    environment = {name: os.environ[name] for name in _INHERITED_VARIABLES if name in os.environ}
    # The folder holding this package, so the child imports the same pipeline code even when it is
    # run from a source checkout rather than an installed package.
    source = str(Path(__file__).resolve().parent.parent)
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([source, *inherited]))
    return environment


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _failure_message(status: dict[str, Any]) -> str:
    prefix = "the packaged model cannot be loaded in a fresh process as `models predict` and the deploy target load it"
    if status["stage"] == "untrusted":
        return (f"{prefix}: it holds types that model.trusted_types does not list: {', '.join(status['types'])}; "
                f"add them in mlops.toml: {status['setting']}")
    if status["stage"] == "load":
        return f"{prefix}: {status['message']}"
    return (f"the packaged model was loaded in a fresh process but failed to score the held-out rows: "
            f"{status['message']}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _tail(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    return lines[-1][-_STDERR_TAIL_CHARS:]


# --------------------------------------------------------------------------- the child process

def _child(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.load_check",
                                     description="Load a packaged model as a deploy target would and score rows.")
    parser.add_argument("--artifact", type=Path, required=True, help="the model version's folder")
    parser.add_argument("--project-root", type=Path, required=True, help="the model project folder")
    parser.add_argument("--folder", type=Path, required=True, help=f"holds {_ROWS_FILE}; receives the outputs")
    parser.add_argument("--trusted", action="append", default=[], help="a type of the project's own (repeatable)")
    args = parser.parse_args(argv)
    status_path = args.folder / _STATUS_FILE
    try:
        model = load_model(args.artifact, extra_trusted=tuple(args.trusted), project_root=args.project_root)
    except UntrustedTypesError as exc:
        return _report(status_path, stage="untrusted", types=list(exc.types), setting=exc.setting)
    except ArtifactError as exc:
        # The staging folder's path means nothing to the reader; the reason after it does.
        model_file = f"{args.artifact / MODEL_FILE}: "
        reason = str(exc).removeprefix(model_file + "cannot be loaded: ").removeprefix(model_file)
        return _report(status_path, stage="load", message=reason)
    rows = pd.read_parquet(args.folder / _ROWS_FILE)
    try:
        outputs = ModelOutputs.of(model, rows)
    except Exception as exc:  # whatever the model raises is the finding
        return _report(status_path, stage="score", message=f"{type(exc).__name__}: {_one_line(exc)}")
    _write_outputs(outputs, args.folder / _OUTPUTS_FILE)
    return _report(status_path, stage="scored")


def _report(path: Path, *, stage: str, **details: Any) -> int:
    ok = stage == "scored"
    path.write_text(json.dumps({"ok": ok, "stage": stage, **details}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_child())
