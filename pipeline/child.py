"""The project's code in a process of its own: the bot's memory, secrets and life stay out of its reach.

A run executes code from the repository (the estimator factory, custom transformers), a fork's too
after ``/ok-to-test``. ``run_in_child`` runs that part of a run (``pipeline.run.build_candidate``)
as ``python -P -m pipeline.child JOB RESULT``:

- in a new session (its own process group), so that it and whatever it starts can be stopped
  together: after ``[model] timeout_seconds``, and after it ends, so nothing of it is left behind;
- with an environment built from an allowlist (``_INHERITED``): enough to start Python and compute
  as this process does, none of its tokens, keys, passwords or service settings. It reads no
  ``.env`` and imports nothing of the bot; it starts in the project folder;
- reporting stage starts and ends (and its log records) as JSON lines on its stdout, which its own
  ``print`` cannot reach (it goes to stderr, forwarded line by line to this process's logging);
- handing back plain JSON (``RESULT``): the candidate's metadata, validation and data summary.

However it ends (an exception, an exit status, a signal such as the OOM killer's SIGKILL, the time
limit), the caller gets ``{"outcome": "failed", "stage", "reason"}`` for the stage that was running,
in one line; nothing here raises for the child's faults.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["child_environment", "hide_from_children", "is_hidden_from_children", "run_in_child"]

log = logging.getLogger(__name__)

# What the child may see of this process's environment: enough to start Python, find the same
# packages and compute as this process does (locale, time zone, thread caps), and nothing else.
_INHERITED = (
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV",
    "SYSTEMROOT",  # Windows cannot start Python without it
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
)
_INHERITED_PREFIXES = ("LC_",)  # LC_ALL, LC_CTYPE, LC_NUMERIC, ...
_FIXED = {"PYTHONUNBUFFERED": "1"}  # the project's prints reach the log as they happen
_STAGES = ("train", "package", "validate")  # the stages the child runs, in order
_TAIL_LINES = 20
_DRAIN_S = 10.0  # after the child ended: how long its last lines may take to arrive
_PRELOADED = (
    "pipeline.data", "pipeline.load_check", "pipeline.package", "pipeline.train", "pipeline.validate",
    "sklearn.base", "sklearn.compose", "sklearn.impute", "sklearn.pipeline", "sklearn.preprocessing",
    "sklearn.metrics", "sklearn.model_selection", "skops.io",
)
_START_S = 300.0  # starting Python and importing the libraries, before the project's time limit counts


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the allowlisted variables of ``environ`` (default: this process's), the
    fixed ones, and ``PYTHONPATH`` leading to this package, so the child runs the same pipeline code."""
    environ = dict(os.environ if environ is None else environ)
    chosen = {name: value for name, value in environ.items()
              if name in _INHERITED or name.startswith(_INHERITED_PREFIXES)}
    source = str(Path(__file__).resolve().parent.parent)
    inherited = [entry for entry in environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return chosen | _FIXED | {"PYTHONPATH": os.pathsep.join(dict.fromkeys([source, *inherited]))}


def run_in_child(job: dict[str, Any], *, on_event: Callable[[dict[str, Any]], None], cwd: Path,
                 timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``pipeline.run.build_candidate(job, emit)`` in a child process; return what it returns.

    ``on_event`` gets the child's stage reports as they come, on this thread. ``timeout_s``
    (``[model] timeout_seconds``) counts from when the child is ready to run the project's code;
    past it, the child's process group is killed. Never raises for the child's faults.
    """
    with tempfile.TemporaryDirectory(prefix="mlops-run-") as folder:
        job_file, result_file = Path(folder) / "job.json", Path(folder) / "result.json"
        job_file.write_text(json.dumps({**job, "log_level": logging.getLogger().getEffectiveLevel(),
                                        "parent_pid": os.getpid()}, default=str), encoding="utf-8")
        # -P: the project folder (the child's working folder) is not put on the import path, so a
        # module of the project's cannot stand in for one of ours.
        command = [sys.executable, "-P", "-m", "pipeline.child", str(job_file), str(result_file)]
        hide_from_children()
        try:
            process = subprocess.Popen(command, cwd=cwd, env=child_environment(), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                       errors="replace", **_own_group())
        except OSError as exc:
            return _failed("train", f"the pipeline process could not be started: {exc.strerror or exc}")
        watch = _Watch(process, on_event)
        try:
            timed_out = watch.until_exit(timeout_s)
        except BaseException:  # Ctrl-C, or the caller's on_event failed: the child (in its own session) goes too
            _kill_group(process)
            process.wait()
            raise
        if timed_out and not watch.ready:
            return _failed("train", f"the pipeline process did not start within {_START_S:g} s")
        if timed_out:
            stage = watch.stage_running()
            return _failed(stage, f"{stage} stopped after {timeout_s:g} s ([model] timeout_seconds = {timeout_s:g})")
        returncode = process.returncode
        if returncode < 0:
            name = _signal_name(-returncode)
            hint = " (out of memory?)" if -returncode == getattr(signal, "SIGKILL", -1) else ""
            return _failed(watch.stage_running(), f"the pipeline process was killed by {name}{hint}")
        if returncode > 0:
            return _failed(watch.stage_running(),
                           f"the pipeline process exited with status {returncode}: {watch.last_line()}")
        return _read_result(result_file, watch)


def _own_group() -> dict[str, Any]:
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


class _Watch:
    """Reads the child's two pipes and waits for its end, delivering everything on the caller's thread
    (so that ``on_event`` and the forwarded log lines run in the caller's logging context)."""

    def __init__(self, process: subprocess.Popen, on_event: Callable[[dict[str, Any]], None]):
        self.process, self.on_event = process, on_event
        self.lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.started: list[str] = []
        self.ended: list[str] = []
        self.ready = False
        for kind, stream in (("out", process.stdout), ("err", process.stderr)):
            threading.Thread(target=self._read, args=(kind, stream), name=f"pipeline-child-{kind}", daemon=True).start()
        threading.Thread(target=self._wait, name="pipeline-child-wait", daemon=True).start()

    def until_exit(self, timeout_s: float | None) -> bool:
        """Deliver the child's lines until it has ended and its pipes are read; True if it ran out of time."""
        deadline, timed_out, exited, open_pipes = time.monotonic() + _START_S, False, False, 2
        counting = False  # the project's time limit, once the child is ready
        while not exited:
            if self.ready and not counting and not timed_out:
                counting = True
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:  # checked first: a child that keeps printing is stopped too
                timed_out, deadline = True, None
                _kill_group(self.process)
                continue
            try:
                kind, line = self.lines.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "exit":
                exited = True
            elif line is None:
                open_pipes -= 1
            else:
                self._deliver(kind, line)
        _kill_group(self.process)  # whatever it started and left running (not yet reaped: its group is its own)
        self.process.wait()
        drain_until = time.monotonic() + _DRAIN_S
        while open_pipes:
            try:
                kind, line = self.lines.get(timeout=max(0.0, drain_until - time.monotonic()))
            except queue.Empty:
                break  # a grandchild of its own session still holds the pipes: what it says is lost
            if line is None:
                open_pipes -= 1
            elif kind != "exit":
                self._deliver(kind, line)
        if not open_pipes:  # both read to the end: nothing reads them any more
            self.process.stdout.close()
            self.process.stderr.close()
        return timed_out

    def stage_running(self) -> str:
        """The stage the child was in: the one started and not ended, else the one after the last ended."""
        unfinished = [name for name in self.started if name not in self.ended]
        if unfinished:
            return unfinished[-1]
        if self.ended and self.ended[-1] in _STAGES[:-1]:
            return _STAGES[_STAGES.index(self.ended[-1]) + 1]
        return self.ended[-1] if self.ended else _STAGES[0]

    def last_line(self) -> str:
        return self.tail[-1][-400:] if self.tail else "(no output)"

    def _read(self, kind: str, stream) -> None:
        try:
            for line in stream:
                self.lines.put((kind, line.rstrip("\r\n")))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put((kind, None))

    def _wait(self) -> None:
        # Wait without reaping, so that the child's process group cannot be a stranger's yet when it is killed.
        if hasattr(os, "waitid"):
            try:
                os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass
        else:
            self.process.wait()
        self.lines.put(("exit", ""))

    def _deliver(self, kind: str, line: str) -> None:
        if kind == "err":
            if line.strip():
                self.tail.append(line.strip())
                log.info("%s", line)
            return
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.info("%s", line)
        elif message.get("ready"):
            self.ready = True
        elif isinstance(message.get("log"), dict):
            _relog(message["log"])
        elif message.get("stage") in _STAGES:
            name, status = message["stage"], message.get("status")
            (self.started if status == "running" else self.ended).append(name)
            self.on_event({"stage": name, "status": status, "detail": str(message.get("detail") or "")})


def _relog(entry: dict[str, Any]) -> None:
    """A log record of the child's, logged here under its logger's name (this process's handlers redact)."""
    level = entry.get("level") if isinstance(entry.get("level"), int) else logging.INFO
    name = entry.get("name") if isinstance(entry.get("name"), str) and entry.get("name") else __name__
    logging.getLogger(name).log(level, "%s", str(entry.get("message", "")))


def _kill_group(process: subprocess.Popen) -> None:
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    elif process.poll() is None:
        process.kill()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _failed(stage: str, reason: str) -> dict[str, Any]:
    return {"outcome": "failed", "stage": stage, "reason": reason}


def _read_result(path: Path, watch: _Watch) -> dict[str, Any]:
    """The child's answer, checked for the shape the parent relies on; anything else fails the run."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _failed(watch.stage_running(), f"the pipeline process ended without a result: {watch.last_line()}")
    outcome = result.get("outcome") if isinstance(result, dict) else None
    fields = {name: result.get(name) if isinstance(result.get(name), dict) else None
              for name in ("data", "validation", "recent")} if outcome else {}
    if outcome == "built" and isinstance(result.get("metadata"), dict) and fields["validation"] is not None:
        return {"outcome": "built", "metadata": result["metadata"], **fields}
    if outcome == "failed" and result.get("stage") in _STAGES:
        return {**_failed(result["stage"], str(result.get("reason") or "")), **fields}
    if outcome == "nothing_new":
        return {"outcome": "nothing_new", "reason": str(result.get("reason") or ""), **fields}
    return _failed(watch.stage_running(), "the pipeline process gave a result this version of mlops-bot cannot read")


# --------------------------------------------------------------------------- the child process

class _Forward(logging.Handler):
    """The child's log records, as JSON lines for the parent to log (and redact) as its own."""

    def __init__(self, send: Callable[[dict[str, Any]], None]):
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.send({"log": {"level": record.levelno, "name": record.name, "message": message}})
        except Exception:  # noqa: BLE001 - a log line must never fail the run
            self.handleError(record)


def _child(argv: Sequence[str] | None = None) -> int:
    job_file, result_file = (Path(argument) for argument in (argv if argv is not None else sys.argv[1:3]))
    # The protocol keeps the pipe that was stdout; stdout itself now goes where stderr goes, so the
    # project's prints are logged by the parent and cannot be taken for a report.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str)
        with lock:
            protocol.write(line + "\n")
            protocol.flush()

    job = json.loads(job_file.read_text(encoding="utf-8"))
    _end_with_parent(job.get("parent_pid"))
    root = logging.getLogger()
    root.handlers[:] = [_Forward(send)]
    root.setLevel(job.get("log_level", logging.WARNING))
    logging.captureWarnings(True)
    # Python and the pipeline's libraries start before the project's time limit counts: it is for the project's work.
    for name in _PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:  # the stage that needs it reports it
            pass
    from pipeline.run import build_candidate

    send({"ready": True})
    result = build_candidate(job, send)
    result_file.write_text(json.dumps(result), encoding="utf-8")
    return 0


_PR_SET_DUMPABLE, _PR_GET_DUMPABLE = 4, 3


def hide_from_children() -> None:
    """Keep this process's memory and starting environment from the processes it starts.

    They run as the same user, and on Linux a same-user process may read ``/proc/<pid>/environ``
    (the tokens this process was started with) and ``/proc/<pid>/mem``; a process that is not
    "dumpable" has those files owned by root. The flag stays off for this process's life and is not
    inherited across exec, so the children themselves are unaffected. The cost: no core dumps, and
    a debugger or profiler must attach as root. Root (CAP_SYS_PTRACE) still reads everything.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0)
    except (OSError, AttributeError):  # no prctl here: nothing to hide with
        return


def is_hidden_from_children() -> bool:
    """Whether ``hide_from_children`` is in force (Linux), for ``doctor`` and the tests."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_DUMPABLE) == 0


def _end_with_parent(parent: int | None) -> None:
    """On Linux, die with the bot (killed, crashed) instead of training on for no one. The signal comes
    when the parent's thread that started this process ends, and that thread waits for this one."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it was gone before the line above
        os._exit(1)


if __name__ == "__main__":
    sys.exit(_child())
