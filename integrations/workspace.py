"""The bot's own checkouts of a remote repository, one folder per commit, and the engine that runs there.

``GitWorkspaces`` fetches exactly one commit (``git fetch --depth 1``) into
``<root>/<commit>`` and reuses it while it is among the ``keep`` most recently used; older ones are
removed, so the disk does not fill up with old commits. A half-made checkout (the bot killed
part-way) lives in a ``.partial-*`` folder and is cleared on the next checkout.

The token never reaches git's argv, a log line or an error message: it goes to git in its
environment as ``http.<origin>/.extraheader`` (``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/
``GIT_CONFIG_VALUE_0``), scoped to the remote's scheme, host and port, and git's stderr is scrubbed
of it (and of any ``user:password@`` in a URL) before it is quoted.

``WorkspaceEngine`` wraps the in-process engine: a run whose origin names a commit (a merged pull
request, or a command on a pull request) runs the project at ``project_path`` inside that commit's
checkout; any other run (the first model, a command on a ticket) runs the project folder the bot
was given, as before. Either way the wrapped engine's ``isolated`` holds: by default the
checkout's code (a fork's too, after ``/ok-to-test``) runs in a child process that gets none of the
bot's secrets, not the token above nor any other (pipeline/child.py).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from integrations.ports import PermanentError, RunHandle, TransientError

__all__ = ["GitWorkspaces", "WorkspaceEngine"]

log = logging.getLogger("mlops_bot.workspace")

_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_REF = re.compile(r"refs/[A-Za-z0-9._/-]+")
_DONE = ".mlops-workspace"  # written last: a folder without it is not a finished checkout
_TRANSIENT = re.compile(
    r"(?i)could not resolve host|timed out|failed to connect|connection (reset|refused)|early eof|"
    r"returned error: 5\d\d|rpc failed|unexpected disconnect|ssl|the remote end hung up")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class GitWorkspaces:
    """Checkouts of one remote repository under ``root``, one per commit, the newest ``keep`` kept."""

    def __init__(self, root: Path, remote: Callable[[], str], *, token: Callable[[], str | None] = lambda: None,
                 keep: int = 3, timeout_s: float = 600.0,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run):
        self.root, self.remote, self.token, self.keep, self.timeout_s = Path(root), remote, token, keep, timeout_s
        self._run = run

    def checkout(self, commit: str, *, refs: Sequence[str] = ()) -> Path:
        """The folder holding the repository at ``commit``, fetched if not there yet.

        ``refs`` are tried when the commit cannot be fetched by its id (``refs/pull/7/head`` for a
        pull request's head); what they point to must be ``commit``, or the fetch is refused.
        Raises ``TransientError`` (the network, the service) or ``PermanentError`` (no such commit,
        refused credentials).
        """
        commit = commit.strip().lower()
        if not _COMMIT.fullmatch(commit):
            raise PermanentError(f"not a commit id: {commit[:80]!r}")
        target = self.root / commit
        if (target / _DONE).is_file():
            os.utime(target)  # most recently used: kept by ``prune``
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        self._clear_partials()
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
        try:
            self._fetch(partial, commit, refs)
            self._git(partial, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit)
            (partial / _DONE).write_text(commit + "\n")
            if target.exists():
                shutil.rmtree(target)
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self.prune(keep_also=target)
        return target

    def prune(self, *, keep_also: Path | None = None) -> list[Path]:
        """Remove all but the ``keep`` most recently used checkouts; returns what was removed."""
        if not self.root.is_dir():
            return []
        done = [path for path in self.root.iterdir() if path.is_dir() and not path.name.startswith(".")]
        done.sort(key=lambda path: path.stat().st_mtime, reverse=True)
        removed = [path for path in done[max(self.keep, 1):] if path != keep_also]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    # --- git, with the token kept out of sight ---------------------------------------------------

    def _fetch(self, folder: Path, commit: str, refs: Sequence[str]) -> None:
        url = self.remote()
        self._git(folder, "init", "-q")
        try:
            self._git(folder, "fetch", "-q", "--depth", "1", "--no-tags", "--", url, commit, remote=url)
            return
        except PermanentError:
            if not refs:
                raise
        for ref in refs:  # e.g. a fork's head, which GitHub also serves as refs/pull/N/head
            if not _REF.fullmatch(ref):
                continue
            self._git(folder, "fetch", "-q", "--depth", "1", "--no-tags", "--", url, ref, remote=url)
            fetched = self._git(folder, "rev-parse", "FETCH_HEAD").strip()
            if fetched == commit:
                return
            raise PermanentError(f"{ref} is now at {fetched[:12]}, not {commit[:12]}: the change moved on")

    def _git(self, folder: Path, *args: str, remote: str | None = None) -> str:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_CONFIG_")}
        env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never"})
        secrets: list[str] = []
        token = self.token() if remote and remote.startswith(("http://", "https://")) else None
        if token:
            # GitHub takes any token (personal or an App installation's) as the password of x-access-token.
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            secrets += [token, basic]
            parts = urllib.parse.urlsplit(remote)
            env.update({"GIT_CONFIG_COUNT": "1",
                        "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraheader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        started = time.monotonic()
        try:
            done = self._run(["git", "-C", str(folder), *args], capture_output=True, text=True, env=env,
                             timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise TransientError(f"git {args[0]} took longer than {self.timeout_s:.0f} s") from None
        except OSError as exc:
            raise PermanentError(f"git could not be run: {exc.strerror or exc}") from None
        if done.returncode == 0:
            log.debug("git %s done in %.1f s", args[0], time.monotonic() - started)
            return done.stdout
        detail = _scrub(" ".join((done.stderr or "").split())[-500:], secrets)
        where = f" from {_scrub(remote, secrets)}" if remote else ""
        message = f"git {args[0]}{where} failed: {detail or f'exit code {done.returncode}'}"
        raise (TransientError if _TRANSIENT.search(detail) else PermanentError)(message)

    def _clear_partials(self) -> None:
        for path in self.root.glob(".partial-*"):
            shutil.rmtree(path, ignore_errors=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _USERINFO.sub("***@", text)


class WorkspaceEngine:
    """The in-process pipeline, run on the code of the commit a run is for."""

    name = "local"

    def __init__(self, engine: Any, workspaces: GitWorkspaces, *, project_path: str = ""):
        self.engine, self.workspaces = engine, workspaces
        self.project_path = project_path.strip("/")

    def start(self, project: str, *, run_id: str, trigger: str, reason: str, context: dict[str, Any],
              promote: bool = True) -> RunHandle:
        from integrations.local import InProcessEngine

        origin = context.get("origin") or {}
        commit = origin.get("commit")
        if not commit:
            return self.engine.start(project, run_id=run_id, trigger=trigger, reason=reason, context=context,
                                     promote=promote)
        finished = self.engine.status(run_id)
        if finished is not None and finished.status != "running":
            return finished  # asked again after a restart: the run already happened
        if project not in self.engine.projects:
            raise KeyError(f"no model project named {project!r}; known: {', '.join(self.engine.projects)}")
        refs = (origin["head_ref"],) if origin.get("head_ref") else ()  # a pull request's head, by name too
        try:
            root = self.workspaces.checkout(commit, refs=refs)
        except PermanentError as exc:
            return RunHandle(run_id, "failed", result={
                "run_id": run_id, "model": project, "status": "failed", "trigger": trigger, "reason": reason,
                "failed_stage": "checkout", "error": str(exc), "version": None, "promoted": False,
                "validation": None, "stages": [], "reasons": [str(exc)],
            })
        folder = root / self.project_path if self.project_path else root
        at_commit = InProcessEngine(self.engine.registry, {project: folder}, clock=self.engine.clock,
                                    production_data=self.engine.production_data,
                                    isolated=self.engine.isolated)
        return at_commit.start(project, run_id=run_id, trigger=trigger, reason=reason, context=context,
                               promote=promote)

    def status(self, run_id: str) -> RunHandle | None:
        return self.engine.status(run_id)
