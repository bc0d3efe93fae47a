"""A real `mlflow server` for the tests, and a loopback receiver for the webhooks it sends.

One server per test session: SQLite backend and an artifact folder under pytest's temporary
folder, a free loopback port, one worker, no job runner (it would start eight more processes).
It is stopped at the end with SIGTERM to its process group: `mlflow server` is a CLI process and
the uvicorn worker it spawns, and stopping only the first would leave the second running.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_READY_TIMEOUT_S = 120
_STOP_TIMEOUT_S = 20


@dataclass
class MlflowServer:
    url: str
    log: Path
    process: subprocess.Popen

    def mark(self) -> int:
        """Where the access log is now; ``requests_since(mark)`` lists what came after."""
        return len(self.log.read_text(errors="replace").splitlines())

    def requests_since(self, mark: int) -> list[str]:
        """The requests answered since ``mark``, as "METHOD /path STATUS" (health checks left out)."""
        time.sleep(0.3)  # uvicorn writes the access line just after the response
        lines = self.log.read_text(errors="replace").splitlines()[mark:]
        found = (_ACCESS.search(line) for line in lines)
        return [f"{m['method']} {m['path']} {m['status']}" for m in found if m and m["path"] != "/health"]


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>[^ ?]+)\S* HTTP/[\d.]+" (?P<status>\d{3})')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_executable() -> str:
    beside = Path(sys.executable).with_name("mlflow")
    found = str(beside) if beside.is_file() else shutil.which("mlflow")
    if found is None:
        pytest.fail("the `mlflow` command (MLflow's server) is not installed: install the test extra, "
                    "pip install -e '.[test]'", pytrace=False)
    return found


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> MlflowServer:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",     # else a job runner and 7 huey workers start too
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",    # default: https receivers only
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",        # default: loopback receivers refused (SSRF guard)
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",                   # default: the webhook list is cached 60 s
        # Webhook secrets are stored encrypted with this Fernet key; unset, each server process makes
        # its own, and secrets stored before a restart can no longer be read.
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    command = [_mlflow_executable(), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, log)
        yield MlflowServer(url, log, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            hint = (" (is this mlflow-skinny? the server needs the full mlflow: pip install -e '.[test]')"
                    if "No module named" in tail else "")
            pytest.fail(f"mlflow server exited with {process.returncode}{hint}:\n{tail}", pytrace=False)
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server not ready after {_READY_TIMEOUT_S} s:\n"
                        f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
        time.sleep(0.1)


class WebhookReceiver:
    """A loopback endpoint standing in for the bot's POST /webhooks/mlflow; keeps each delivery as sent."""

    def __init__(self) -> None:
        self.deliveries: list[dict] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._arrived:
                    receiver.deliveries.append({"headers": dict(self.headers.items()), "body": body})
                    receiver._arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/mlflow"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 30) -> list[dict]:
        """The deliveries ``predicate`` accepts, once there is at least one (or the timeout passed)."""
        with self._arrived:
            self._arrived.wait_for(lambda: any(predicate(d) for d in self.deliveries), timeout)
            return [d for d in self.deliveries if predicate(d)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def webhook_receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
