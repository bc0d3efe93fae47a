"""The loader: a process fresh-process checks are forked from, so that each does not start Python anew.

See pipeline/load_check.py for the check and why it runs in a new process. ``Loader`` starts
``python -P -m pipeline.load_check --serve``, which imports the libraries a model needs to load
(never the project's code, never a model) and forks one child per check; this module holds only the
owner's side, so the bot's process can start one without importing NumPy or pandas.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pipeline.child import child_environment, hide_from_children

__all__ = ["LOADER_IDLE_S", "Loader", "shared_loader", "stop_shared_loader"]

log = logging.getLogger(__name__)

LOADER_IDLE_S = 900.0  # a loader nobody asked for this long exits (it holds ~150 MB); the next check starts one


class Loader:
    """A process that has imported the libraries a model needs to load, forking one child per check.

    It listens on a Unix socket in a private folder (``address``): whoever can reach that folder may
    ask it to load a model, as whoever could run ``python -m pipeline.load_check``. It runs with
    ``child_environment()`` as it was when it started (``environment``), and ends when its owner
    does (its stdin closes), on ``stop()``, or after ``idle_s`` without a check.
    """

    def __init__(self, *, idle_s: float = LOADER_IDLE_S) -> None:
        self.environment = child_environment()
        self.folder = Path(tempfile.mkdtemp(prefix="mlops-loader-"))  # mode 0700: this user only
        self.address = str(self.folder / "loader.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.address)
            # Listening before the loader runs: a check connects at once and is served once the
            # loader's imports are done, so starting one never makes a check wait longer than spawning.
            listener.listen(64)
            hide_from_children()
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "pipeline.load_check", "--serve", str(listener.fileno()),
                 "--idle", str(idle_s)],
                cwd=self.folder, env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(listener.fileno(),))
        except OSError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        finally:
            listener.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the loader's signal to end
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_shared: Loader | None = None
_shared_lock = threading.Lock()


def shared_loader() -> Loader | None:
    """This process's loader, started (or started again) if need be; None where checks cannot be
    forked from one (not Linux, or it cannot start): they start a new process.

    Started again when it ended (idle, killed) or when the environment a check would get has changed
    since it started: a check sees the environment of its own time, as a new process would."""
    global _shared
    if not sys.platform.startswith("linux"):  # forking after these imports is dependable only there
        return None
    with _shared_lock:
        if _shared is not None and (not _shared.alive() or _shared.environment != child_environment()):
            _shared.stop()
            _shared = None
        if _shared is None:
            try:
                _shared = Loader()
            except OSError as exc:
                log.warning("the model loader for fresh-process checks could not start (%s): each check "
                            "starts a new Python process instead", exc)
                return None
        return _shared


def stop_shared_loader() -> None:
    """Stop this process's loader, if it has one (also done at exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


atexit.register(stop_shared_loader)
