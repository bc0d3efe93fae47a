"""The bot's checkouts of a remote repository: one commit each, reused, pruned, the token kept out of sight."""

from __future__ import annotations

import base64
import logging
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from integrations.ports import PermanentError
from integrations.workspace import GitWorkspaces, WorkspaceEngine
from tests.conftest import PROJECT, git

TOKEN = "ghs_s3cr3tT0kenValue0123456789abcdefXYZ"


@pytest.fixture
def bare(repo, tmp_path):
    """A bare copy of the test repository with three more commits on main; returns (path, [shas])."""
    path = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(path))
    shas = [git(repo, "rev-parse", "HEAD")]
    for n in range(3):
        (repo / "NOTES.md").write_text(f"note {n}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"note {n}")
        git(repo, "push", "-q", str(path), "HEAD:refs/heads/main")
        shas.append(git(repo, "rev-parse", "HEAD"))
    return path, shas


class Recorder:
    """subprocess.run, recording every argv and environment it was given."""

    def __init__(self):
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), dict(kwargs.get("env") or {})))
        return subprocess.run(argv, **kwargs)


def test_one_checkout_per_commit_reused_and_pruned(bare, tmp_path):
    path, shas = bare
    run = Recorder()
    workspaces = GitWorkspaces(tmp_path / "ws", lambda: path.as_uri(), keep=2, run=run)
    first = workspaces.checkout(shas[0])
    assert (first / PROJECT / "mlops.toml").is_file() and git(first, "rev-parse", "HEAD") == shas[0]
    fetches = len(run.calls)
    assert workspaces.checkout(shas[0]) == first and len(run.calls) == fetches  # reused: no git at all
    for sha in shas[1:]:
        assert (workspaces.checkout(sha) / "NOTES.md").is_file()
    kept = sorted(p.name for p in (tmp_path / "ws").iterdir())
    assert kept == sorted(shas[-2:])  # the two most recently used; older ones removed


def test_a_half_made_checkout_is_cleared_and_bad_commits_never_reach_git(bare, tmp_path):
    path, shas = bare
    run = Recorder()
    workspaces = GitWorkspaces(tmp_path / "ws", lambda: path.as_uri(), run=run)
    (tmp_path / "ws" / ".partial-crashed").mkdir(parents=True)
    (tmp_path / "ws" / shas[1]).mkdir()  # killed before it was finished: no marker, so fetched again
    assert git(workspaces.checkout(shas[1]), "rev-parse", "HEAD") == shas[1]
    assert not (tmp_path / "ws" / ".partial-crashed").exists()
    calls = len(run.calls)
    for bad in ("--upload-pack=touch /tmp/pwned", "main", "HEAD~1", ""):
        with pytest.raises(PermanentError, match="not a commit id"):
            workspaces.checkout(bad)
    assert len(run.calls) == calls
    with pytest.raises(PermanentError, match="git fetch"):
        workspaces.checkout("0" * 40)  # no such commit: permanent, and nothing left behind
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == [shas[1]]


class _GitServer(BaseHTTPRequestHandler):
    """An HTTPS remote stand-in that records what git sends and refuses it."""

    seen: list[dict[str, str]] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def git_server(no_proxy_for_loopback):
    _GitServer.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_token_goes_in_a_header_never_in_argv_logs_or_errors(git_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    port = git_server.server_address[1]
    url = f"http://127.0.0.1:{port}/acme/model.git"
    run = Recorder()
    workspaces = GitWorkspaces(tmp_path / "ws", lambda: url, token=lambda: TOKEN, run=run)
    with pytest.raises(PermanentError) as failed:
        workspaces.checkout("a" * 40)
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert _GitServer.seen and _GitServer.seen[0]["authorization"] == f"Basic {basic}"
    assert "/acme/model.git/info/refs" in _GitServer.seen[0]["path"]
    for argv, env in run.calls:
        assert not any(TOKEN in arg or basic in arg for arg in argv)
        if "fetch" in argv:  # scoped to the remote's origin, so a redirect elsewhere does not get it
            assert env["GIT_CONFIG_KEY_0"] == f"http.http://127.0.0.1:{port}/.extraheader"
    for text in (str(failed.value), caplog.text):
        assert TOKEN not in text and basic not in text
    assert f"127.0.0.1:{port}" in str(failed.value)


def test_credentials_in_a_remote_url_are_scrubbed_from_errors(git_server, tmp_path):
    port = git_server.server_address[1]
    url = f"http://someone:{TOKEN}@127.0.0.1:{port}/acme/model.git"
    workspaces = GitWorkspaces(tmp_path / "ws", lambda: url)
    with pytest.raises(PermanentError) as failed:
        workspaces.checkout("b" * 40)
    assert TOKEN not in str(failed.value) and "***@127.0.0.1" in str(failed.value)


def test_a_commit_that_cannot_be_fetched_is_a_failed_run_at_the_checkout_stage(bare, tmp_path, embedded_registry):
    from integrations.local import InProcessEngine

    path, shas = bare
    registry = embedded_registry
    engine = WorkspaceEngine(InProcessEngine(registry, {"tiny": tmp_path / "nowhere"}),
                             GitWorkspaces(tmp_path / "ws", lambda: path.as_uri()), project_path=PROJECT)
    missing = engine.start("tiny", run_id="run-x", trigger="merge", reason="",
                           context={"origin": {"commit": "c" * 40}})
    assert missing.status == "failed" and missing.result["failed_stage"] == "checkout"
    assert engine.status("run-x") is None  # nothing was recorded: asked again, it tries again
    done = engine.start("tiny", run_id="run-y", trigger="merge", reason="", context={"origin": {"commit": shas[2]}})
    assert done.status == "succeeded" and done.result["version"] == 1
    assert engine.start("tiny", run_id="run-y", trigger="merge", reason="",
                        context={"origin": {"commit": shas[2]}}).result["version"] == 1  # not run twice
    assert len(registry.versions("tiny")) == 1
