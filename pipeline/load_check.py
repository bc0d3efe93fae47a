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

Starting that Python and importing NumPy, pandas, scikit-learn and skops costs more than the check
itself (about 1.5 s of CPU against a few hundred ms), and a pipeline run pays it on every check. So
on Linux the child is forked from a *loader* (``pipeline/loader.py``): a long-lived process, started with the
same minimal environment, that has imported those libraries and nothing else (never the project's
code, never a model) and forks one child per check. The child therefore begins exactly where a new
deploy target is once its libraries are imported: the project's modules are imported afresh, the
model is loaded from the artifact, nothing of the training process is there. Where a loader cannot
be used (no ``fork``, it could not start, it went away), a new Python process is started as before.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd

from pipeline.child import child_environment
from pipeline.loader import LOADER_IDLE_S, shared_loader
from pipeline.package import MODEL_FILE, ArtifactError, UntrustedTypesError, load_model

if TYPE_CHECKING:  # types only: the child process this module runs as needs no registry
    from pipeline.registry_port import ModelVersion, RegistryPort

__all__ = [
    "FreshProcessCheck", "LoaderChoice", "ModelOutputs", "check_in_fresh_process", "check_reference_in_fresh_process",
    "compare_outputs",
]

log = logging.getLogger(__name__)

# Float outputs may differ in their last bits between processes: BLAS and OpenMP split sums by
# thread count, which changes the order of additions (about 1e-16 relative per operation). A
# model that really changed (a lost parameter, another library version, state not saved) moves
# its outputs by far more than this, so the check tells the two apart. Labels compare exactly.
RELATIVE_TOLERANCE = 1e-9
ABSOLUTE_TOLERANCE = 1e-12  # for values near zero, where a relative bound means nothing

DEFAULT_TIMEOUT_S = 600.0

# The check scores at most this many of the rows it is given, evenly spaced over them (all of them
# when there are fewer). Loading a model differently shows on any row it touches (a lost parameter,
# state not saved, another library version), so 10,000 rows find what 40,000 find, and scoring in the
# fresh process is most of the check's time: about 5 µs a row for a gradient-boosted model on 2 cores.
CHECKED_ROWS_AT_MOST = 10_000

# Arrow's IPC file format (Feather), uncompressed: written and read several times quicker than Parquet
# for rows that live a second, and, like it, keeps pandas' dtypes and never runs code when read.
_ROWS_FILE = "rows.arrow"
_OUTPUTS_FILE = "outputs.arrow"
_STATUS_FILE = "status.json"
_STDERR_FILE = "stderr.log"  # a forked child's stderr (a spawned one's is read from its pipe)
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

    def at(self, positions: np.ndarray | None) -> ModelOutputs:
        """The outputs on the rows at ``positions`` (None: all of them)."""
        if positions is None:
            return self
        return ModelOutputs(self.predictions[positions],
                            None if self.probabilities is None else self.probabilities[positions])


def checked_positions(rows: int) -> np.ndarray | None:
    """The positions of the rows a check scores among ``rows``: None for all of them, else
    CHECKED_ROWS_AT_MOST evenly spaced from the first to the last (the held-out rows come shuffled,
    or in time order, which even spacing covers from end to end)."""
    if rows <= CHECKED_ROWS_AT_MOST:
        return None
    return np.linspace(0, rows - 1, CHECKED_ROWS_AT_MOST).round().astype(np.int64)


def _write_outputs(outputs: ModelOutputs, path: Path) -> None:
    """Arrow, not pickle or .npy: labels may be strings, and nothing read back may run code."""
    columns = {f"prediction_{j}": column for j, column in enumerate(_columns(outputs.predictions))}
    if outputs.probabilities is not None:
        columns |= {f"probability_{j}": column for j, column in enumerate(_columns(outputs.probabilities))}
    pd.DataFrame(columns).to_feather(path, compression="uncompressed")


def _read_outputs(path: Path, *, one_dimensional: bool) -> ModelOutputs:
    frame = pd.read_feather(path)
    predictions = np.column_stack([frame[c].to_numpy() for c in frame.columns if c.startswith("prediction_")])
    probability_columns = [c for c in frame.columns if c.startswith("probability_")]
    probabilities = frame[probability_columns].to_numpy(dtype=float) if probability_columns else None
    return ModelOutputs(predictions[:, 0] if one_dimensional else predictions, probabilities)


def _columns(values: np.ndarray) -> list[np.ndarray]:
    return [values] if values.ndim == 1 else [values[:, j] for j in range(values.shape[1])]


LoaderChoice = str | None | Literal["shared"]
"""Where a check's child comes from: ``"shared"``, forked from this process's loader
(``shared_loader``, started on first use); a loader's address, forked from that one (a pipeline run
in a process of its own is given its parent's); None, a new Python process."""


def check_in_fresh_process(
    artifact_dir: Path,
    features: pd.DataFrame,
    expected: ModelOutputs | None = None,
    *,
    estimator: Any = None,
    trusted_types: tuple[str, ...] = (),
    project_root: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    loader: LoaderChoice = "shared",
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
                           timeout_s=timeout_s, loader=loader) as check:
        check.finish(expected if expected is not None else ModelOutputs.of(estimator, features))


class FreshProcessCheck:
    """``check_in_fresh_process`` begun now and finished later. A new Python process starts at once,
    so that its start-up (Python, its imports) overlaps the caller's own work (validation scores the
    candidate and production meanwhile). A child forked from a loader starts when the check is
    finished instead: its start costs nothing, and scoring beside the caller's own predictions
    oversubscribes the cores (OpenMP threads of both on the same cores: on 2 cores, 1.7 to 2.6 s for
    the two together, 0.6 s one after the other). Used as a context manager: leaving it unfinished
    (the caller failed first) stops the child, if one started.
    """

    def __init__(self, artifact_dir: Path, features: pd.DataFrame, *, trusted_types: tuple[str, ...] = (),
                 project_root: Path, timeout_s: float = DEFAULT_TIMEOUT_S, loader: LoaderChoice = "shared") -> None:
        self._positions = checked_positions(len(features))
        checked = features if self._positions is None else features.iloc[self._positions]
        self._rows, self._timeout_s = len(checked), timeout_s
        self._folder = tempfile.TemporaryDirectory(prefix="mlops-load-check-")
        self.scratch = Path(self._folder.name)
        try:
            checked.reset_index(drop=True).to_feather(self.scratch / _ROWS_FILE, compression="uncompressed")
        except Exception as exc:  # pyarrow refuses some mixed object columns
            self._folder.cleanup()
            raise ArtifactError("the held-out rows cannot be written for the fresh-process check: "
                                f"{_one_line(exc)}") from exc
        self._arguments = [
            "--artifact", str(Path(artifact_dir).resolve()), "--project-root", str(Path(project_root).resolve()),
            "--folder", str(self.scratch), *[argument for name in trusted_types for argument in ("--trusted", name)],
        ]
        self._started = time.monotonic()
        if loader == "shared":
            shared = shared_loader()
            loader = shared.address if shared is not None else None
        self._loader = loader
        self.child: _CheckChild | None = None if loader else self._spawned()

    def _forked(self, address: str) -> _CheckChild | None:
        try:
            return _ForkedChild(address, self._arguments, self.scratch, self._timeout_s)
        except OSError as exc:  # the loader is gone (its owner stopped it, or it broke)
            log.debug("the model loader at %s cannot be reached (%s): starting a new process", address, exc)
            return None

    def _spawned(self) -> _CheckChild:
        return _SpawnedChild(self._arguments, self.scratch)

    def __enter__(self) -> FreshProcessCheck:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.child is not None:
            self.child.stop()
        self._folder.cleanup()

    def finish(self, expected: ModelOutputs) -> None:
        """Wait for the child (within the time left of ``timeout_s``) and compare its scores with
        ``expected`` (the in-process outputs on all the rows given at the start); raises
        ArtifactError as ``check_in_fresh_process`` does."""
        if self.child is None:
            self.child = self._forked(self._loader) or self._spawned()
        try:
            returncode = self.child.wait(self._time_left())
            if returncode is None:  # the loader went away before it forked the check: a new process does it
                self.child = self._spawned()
                returncode = self.child.wait(self._time_left())
        except subprocess.TimeoutExpired as exc:
            raise ArtifactError(
                f"loading the packaged model in a fresh process and scoring {self._rows} held-out rows took "
                f"longer than {self._timeout_s:g} s and was stopped; a model this slow to load would not serve "
                "either: look for slow or blocking code in the project's own classes"
            ) from exc
        status = _read_status(self.scratch / _STATUS_FILE)
        if status is None:
            raise ArtifactError(
                f"the fresh process that loads the packaged model ended with status {returncode} before "
                f"reporting: {_tail(self.child.stderr())}"
            )
        if not status["ok"]:
            raise ArtifactError(_failure_message(status))
        loaded = _read_outputs(self.scratch / _OUTPUTS_FILE, one_dimensional=np.ndim(expected.predictions) == 1)
        mismatch = compare_outputs(expected.at(self._positions), loaded, row_numbers=self._positions)
        if mismatch:
            raise ArtifactError(
                f"the packaged model scores the held-out rows differently in a fresh process: {mismatch}; the model "
                "depends on something not saved with it (a module-level variable, a global setting, the "
                "environment): keep every setting in the estimator's own parameters and attributes"
            )

    def _time_left(self) -> float:
        return max(0.0, self._timeout_s - (time.monotonic() - self._started))


def check_reference_in_fresh_process(
    registry: RegistryPort,
    reference: str,
    features: pd.DataFrame,
    expected: ModelOutputs | None = None,
    *,
    estimator: Any = None,
    project_root: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    loader: LoaderChoice = "shared",
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
                           project_root=project_root, timeout_s=timeout_s, loader=loader)
    return version


class _CheckChild(Protocol):
    """The process a check runs in, however it was started."""

    @property
    def pid(self) -> int | None:
        """Its process id; None while a loader has not forked it yet."""

    def wait(self, timeout_s: float) -> int | None:
        """Its exit status once it ended (negative: killed by that signal); None if it never started
        (a loader that went away first). Raises ``subprocess.TimeoutExpired`` past ``timeout_s``."""

    def stop(self) -> None:
        """Kill it if it still runs (idempotent)."""

    def stderr(self) -> str:
        """What it wrote to its stderr (read once it ended)."""


class _SpawnedChild:
    """A new Python process: ``python -m pipeline.load_check``."""

    def __init__(self, arguments: list[str], scratch: Path) -> None:
        self._stderr = ""
        # The child starts in the scratch folder, so `python -m` puts nothing of ours on its path.
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.load_check", *arguments], cwd=scratch,
                                        env=child_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)

    def wait(self, timeout_s: float) -> int | None:
        _out, self._stderr = self.process.communicate(timeout=timeout_s)
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def stderr(self) -> str:
        return self._stderr

    @property
    def pid(self) -> int | None:
        return self.process.pid


class _ForkedChild:
    """A child forked by a loader. The loader's child says its pid, then its exit status, on the
    connection; it holds the connection until it ends, so the end of the stream is the child's end."""

    def __init__(self, address: str, arguments: list[str], scratch: Path, timeout_s: float) -> None:
        self._scratch, self._pid, self._returncode = scratch, None, None
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._connection.connect(address)
            request = {"arguments": arguments, "folder": str(scratch), "timeout_s": timeout_s}
            self._connection.sendall(json.dumps(request).encode() + b"\n")
        except OSError:
            self._connection.close()
            raise
        self._received, self._ended = b"", False

    def wait(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while not self._ended:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired("pipeline.load_check (forked)", timeout_s)
            self._connection.settimeout(left)
            try:
                chunk = self._connection.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            self._ended = not chunk
            self._received += chunk
            *lines, self._received = self._received.split(b"\n")
            for line in lines:
                message = json.loads(line)
                self._pid = message.get("pid", self._pid)
                self._returncode = message.get("exit", self._returncode)
        self._connection.close()
        if self._pid is None:
            return None
        # It ended without saying how: killed (by a signal, or the OOM killer) or it exited abruptly.
        return self._returncode if self._returncode is not None else -signal.SIGKILL

    def stop(self) -> None:
        if not self._ended and self._pid is not None:
            # Still connected, so still running: the pid is the child's, not one reused since.
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._ended = True
        self._connection.close()

    def stderr(self) -> str:
        try:
            return (self._scratch / _STDERR_FILE).read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self._pid


def compare_outputs(expected: ModelOutputs, loaded: ModelOutputs, *,
                    row_numbers: np.ndarray | None = None) -> str | None:
    """The first difference between in-process and fresh-process outputs, in words; None if they match.

    Labels (anything not floating point) must be equal; floats, i.e. probabilities and regression
    values, within RELATIVE_TOLERANCE (see there why not exactly). ``row_numbers``: the position of
    each compared row among the rows the caller knows (a check's sample), for the message.
    """
    want, got = np.asarray(expected.predictions), np.asarray(loaded.predictions)
    if want.shape != got.shape:
        return f"predictions have shape {got.shape} after loading, {want.shape} in training"
    if np.issubdtype(want.dtype, np.floating) and np.issubdtype(got.dtype, np.floating):
        same = np.isclose(got, want, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE, equal_nan=True)
    else:
        same = np.asarray(want, dtype=object) == np.asarray(got, dtype=object)
    difference = _first_difference(same, want, got, what="predicted", row_numbers=row_numbers)
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
    return _first_difference(same, want, got, what="class probabilities", row_numbers=row_numbers)


def _first_difference(same: np.ndarray, want: np.ndarray, got: np.ndarray, *, what: str,
                      row_numbers: np.ndarray | None) -> str | None:
    if same.size == 0:
        return None
    rows_differing = ~same.reshape(len(same), -1).all(axis=1)
    if not rows_differing.any():
        return None
    row = int(rows_differing.nonzero()[0][0])
    number = row if row_numbers is None else int(row_numbers[row])
    checked = f"{len(rows_differing)} rows" if row_numbers is None else f"{len(rows_differing)} rows checked"
    return (f"held-out row {number + 1} {what} {_shown(got[row])} after loading, {_shown(want[row])} in training "
            f"({int(rows_differing.sum())} of {checked} differ)")


def _shown(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    if isinstance(value, float | np.floating):
        return f"{float(value):.12g}"
    return repr(value.item() if isinstance(value, np.generic) else value)


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
    rows = pd.read_feather(args.folder / _ROWS_FILE)
    try:
        outputs = ModelOutputs.of(model, rows)
    except Exception as exc:  # whatever the model raises is the finding
        return _report(status_path, stage="score", message=f"{type(exc).__name__}: {_one_line(exc)}")
    _write_outputs(outputs, args.folder / _OUTPUTS_FILE)
    return _report(status_path, stage="scored")


# The loader imports these and nothing else: the libraries a deploy target imports to load and score
# a model, and this module's own. Each fork finds them imported; anything else it imports itself.
_LOADER_PRELOADED = (
    "numpy", "pandas", "pyarrow.feather", "sklearn.base", "sklearn.compose", "sklearn.ensemble", "sklearn.impute",
    "sklearn.linear_model", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.tree", "skops.io",
    "pipeline.package", "pipeline.validate",
)


def _serve(argv: Sequence[str]) -> int:
    """The loader: import the libraries, then fork one child per connection until the owner's pipe
    closes or nobody asked for ``--idle`` seconds. Single-threaded, and it never runs a model or an
    OpenMP region itself, so forking it is safe."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.load_check --serve")
    parser.add_argument("--serve", type=int, required=True, help="the listening socket's file descriptor")
    parser.add_argument("--idle", type=float, default=LOADER_IDLE_S)
    args = parser.parse_args(argv)
    for name in _LOADER_PRELOADED:
        importlib.import_module(name)
    listener = socket.socket(fileno=args.serve)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped by the system
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [], args.idle)
        if not ready:
            return 0  # idle
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            return 0  # the owner ended
        if listener in ready:
            connection, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                os._exit(_forked_check(connection))
            connection.close()


def _forked_check(connection: socket.socket) -> int:
    """A child of the loader: read its request, then do what ``python -m pipeline.load_check`` does."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the project's code may wait for processes of its own
    code = 70
    try:
        with connection.makefile("rb") as reader:
            request = json.loads(reader.readline())
        folder = Path(request["folder"])
        os.chdir(folder)
        os.dup2(os.open(os.devnull, os.O_RDWR), 0)
        os.dup2(os.open(os.devnull, os.O_RDWR), 1)
        os.dup2(os.open(folder / _STDERR_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
        connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        # A check nobody waits for ends: its caller was killed (a pipeline process past its time
        # limit, with everything it started) or stopped waiting; and none outlives its time limit.
        threading.Thread(target=_end_with_the_caller, args=(connection,), daemon=True).start()
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout_s"]) + 5.0)  # SIGALRM ends the process
        code = _child(request["arguments"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
    try:
        sys.stderr.flush()
        connection.sendall(json.dumps({"exit": code}).encode() + b"\n")
    except OSError:
        pass
    return code


def _end_with_the_caller(connection: socket.socket) -> None:
    """Wait for the caller's side of the connection to close (it sends nothing after its request, and
    keeps the connection open until this process has ended), then end this process."""
    try:
        while connection.recv(4096):
            pass
    except OSError:
        pass
    os._exit(1)


def _report(path: Path, *, stage: str, **details: Any) -> int:
    ok = stage == "scored"
    path.write_text(json.dumps({"ok": ok, "stage": stage, **details}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]) if "--serve" in sys.argv[1:2] else _child())
