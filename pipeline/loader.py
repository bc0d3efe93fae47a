"""The loader: a process fresh-process checks are forked from, so that each does not start Python anew.

See pipeline/load_check.py for the check and why it runs in a new process. ``Loader`` runs
``python -P -m pipeline.load_check --serve`` when a check connects to its socket (as a service
manager starts a socket-activated service); that process imports the libraries a model needs to
load (never the project's code, never a model) and forks one child per check. This module holds only
the owner's side, so the bot's process can have one without importing NumPy or pandas.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
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

LOADER_IDLE_S = 600.0  # a loader nobody asked for this long exits (it holds ~220 MB); the next check starts one


class Loader:
    """A Unix socket fresh-process checks connect to, and the process behind it that has imported the
    libraries a model needs to load and forks one child per check.

    The socket (``address``, in a private folder: whoever can reach it may ask for a model to be
    loaded, as whoever could run ``python -m pipeline.load_check``) stays the same for the owner's
    life; the process behind it is started when a check connects and none runs (its start-up, about
    1.5 s of CPU, is paid only when a check needs it), and ends after ``idle_s`` without a check (the
    next check starts it again) or when its owner ends (its stdin closes). Killed or failed, it is
    not started again: the loader is broken (``usable()`` is False) and its socket closed. It runs
    with ``child_environment()`` as it was when the socket was made (``environment``).
    """

    def __init__(self, *, idle_s: float = LOADER_IDLE_S) -> None:
        self.environment, self._idle_s = child_environment(), idle_s
        self.folder = Path(tempfile.mkdtemp(prefix="mlops-loader-"))  # mode 0700: this user only
        self.address = str(self.folder / "loader.sock")
        self.process: subprocess.Popen | None = None
        self.broken = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(self.address)
            self._listener.listen(64)
        except OSError:
            self._listener.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self._wake_read, self._wake_write = os.pipe()  # stop() wakes the watcher through it
        self._stopped = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="model-loader", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        """Start the loader process whenever a check waits and none runs."""
        while not self._stopped.is_set():
            process = self.process
            if process is not None and process.wait() != 0 and not self._stopped.is_set():
                return self._break(f"ended with status {process.returncode}")
            ready, _, _ = select.select([self._listener, self._wake_read], [], [])
            if self._listener in ready and not self._stopped.is_set():
                try:
                    self.process = self._start()
                except OSError as exc:
                    return self._break(f"could not start ({exc})")

    def _break(self, why: str) -> None:
        """Killed, failed (its imports?) or not startable: not started again and again for the checks
        that wait. Closing the socket ends their wait (each starts a new Python process instead), and
        shared_loader() makes a new loader for the next run."""
        log.warning("the model loader for fresh-process checks %s; checks start a new Python process until "
                    "a new loader is made", why)
        self._listener.close()
        self.broken = True

    def _start(self) -> subprocess.Popen:
        hide_from_children()
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "pipeline.load_check", "--serve", str(self._listener.fileno()),
             "--idle", str(self._idle_s)],
            cwd=self.folder, env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(self._listener.fileno(),))

    def running(self) -> bool:
        """Whether the loader process runs now (it starts when a check connects)."""
        return self.process is not None and self.process.poll() is None

    def usable(self) -> bool:
        """Neither stopped nor broken (its process killed or failed): checks can connect."""
        return not self.broken and not self._stopped.is_set()

    def stop(self) -> None:
        self._stopped.set()
        os.write(self._wake_write, b"x")
        process = self.process
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()  # the loader's signal to end
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._watcher.join(timeout=10)
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        shutil.rmtree(self.folder, ignore_errors=True)


_shared: Loader | None = None
_shared_lock = threading.Lock()


def shared_loader() -> Loader | None:
    """This process's loader, started (or started again) if need be; None where checks cannot be
    forked from one (not Linux, or it cannot start): they start a new process.

    Made again when the last one broke (its process was killed or failed) or when the environment a
    check would get has changed since it was made: a check sees the environment of its own time, as
    a new process would."""
    global _shared
    if not sys.platform.startswith("linux"):  # forking after these imports is dependable only there
        return None
    with _shared_lock:
        if _shared is not None and (not _shared.usable() or _shared.environment != child_environment()):
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
