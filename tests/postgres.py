"""A throwaway PostgreSQL server for the tests, and the ``state_url`` fixture that runs a test on
SQLite and on PostgreSQL.

The server is made once per test session: ``initdb`` into a temporary folder, ``pg_ctl start`` on a
free port, listening only on a unix socket in that folder, trusting local connections. PostgreSQL
refuses to run as root, so as root the cluster belongs to the ``postgres`` user (or ``nobody``).
Each test gets its own schema (``search_path``), which is much quicker than a database per test.

Without PostgreSQL's binaries the PostgreSQL half of each test is skipped, saying why, unless
``REQUIRE_POSTGRES_TESTS=1`` (as ``.ci/run`` sets), which makes it an error. The session's summary
says which databases the state tests ran on; with ``STATE_DATABASES_REPORT=FILE`` it is also
written to FILE (``.ci/run`` prints it).

Loaded as a pytest plugin by ``tests/conftest.py``; ``python -m tests.postgres`` starts a server
and prints its URL until Ctrl-C, for trying things by hand.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.emulators.framework import free_port

_REQUIRE = "REQUIRE_POSTGRES_TESTS"
_REPORT = "STATE_DATABASES_REPORT"
_USER = "mlops"  # the cluster's superuser, trusted on the socket
_ran_on: Counter[str] = Counter()
_skipped_because: list[str] = []


@dataclass(frozen=True)
class PostgresServer:
    root: Path  # data in root/data, the socket in root
    port: int
    version: str

    def url(self, database: str = "postgres", *, schema: str | None = None) -> str:
        """A SQLAlchemy URL on the unix socket; with ``schema``, that schema comes first in search_path."""
        options = f"&options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql+psycopg://{_USER}@/{database}?host={self.root}&port={self.port}{options}"

    def new_schema(self, name: str) -> str:
        """Create an empty schema; the URL of a database that sees only it."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        finally:
            engine.dispose()
        return self.url(schema=name)


def find_binaries() -> Path | None:
    """The newest PostgreSQL's bin folder (Debian keeps them out of PATH), else wherever initdb is."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def start_server(bin_dir: Path) -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="mlops-bot-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root
        owner = _unprivileged_user()
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", owner.pw_name, "--"]
    data, log = root / "data", root / "server.log"
    _run(run_as + [str(bin_dir / "initdb"), "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8",
                   "--no-locale", "--no-sync"])
    port = free_port()  # only a number in the socket's name (listen_addresses=''): a clash is unlikely
    options = (f"-k {root} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=200")
    _run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                   "start"])
    version = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    return PostgresServer(root, port, version)


def stop_server(server: PostgresServer, bin_dir: Path) -> None:
    run_as = ["runuser", "-u", Path(server.root).owner(), "--"] if os.geteuid() == 0 else []
    subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(server.root / "data"), "-m", "immediate", "-w",
                             "stop"], capture_output=True, timeout=60, check=False)
    shutil.rmtree(server.root, ignore_errors=True)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and there is neither a postgres nor a nobody user to run PostgreSQL as")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")



# --- pytest ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server; skips (or fails, with REQUIRE_POSTGRES_TESTS=1) without one."""
    bin_dir = find_binaries()
    if bin_dir is None:
        reason = "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH)"
        _skipped_because.append(reason)
        if os.environ.get(_REQUIRE) == "1":
            pytest.fail(f"{reason}, and {_REQUIRE}=1")
        pytest.skip(reason)
    started = time.monotonic()
    server = start_server(bin_dir)
    print(f"\nPostgreSQL for the tests: {server.version}, started in {time.monotonic() - started:.1f} s")
    yield server
    stop_server(server, bin_dir)


_schemas = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty schema of the session's server, as a SQLAlchemy URL."""
    return postgres_server.new_schema(f"t{next(_schemas)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path: Path) -> str:
    """The URL of an empty state database: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        (tmp_path / "state").mkdir(exist_ok=True)
        url = f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    _ran_on[request.param] += 1
    return url


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _ran_on and not _skipped_because:
        return
    ran = ", ".join(f"{name} ({count} tests)" for name, count in sorted(_ran_on.items())) or "none"
    line = f"state tests ran on: {ran}"
    if _skipped_because and "postgresql" not in _ran_on:
        line += f"; PostgreSQL skipped: {_skipped_because[0]}"
    terminalreporter.write_line(line)
    report = os.environ.get(_REPORT)
    if report:
        Path(report).write_text(line + "\n")


if __name__ == "__main__":
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed")
    import signal

    def _interrupt(*_args):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    server = start_server(binaries)
    print(server.version)
    print(server.url(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(server, binaries)
