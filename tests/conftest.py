from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent

# azure-devops reads its cache folder when first imported: keep the tests' cache out of ~.
os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", tempfile.mkdtemp(prefix="mlops-bot-tests-ado-cache-"))
EXAMPLE = REPO / "examples" / "breast_cancer"
# As the bot sets it before its first use of MLflow (integrations/mlflow_registry.py); read when MLflow is
# first imported, which in a test session may be a test's own import: the same quiet either way.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@pytest.fixture(autouse=True)
def _forget_project_modules(tmp_path_factory):
    """Model projects' own modules (train, features, ...) are imported by name from each test's
    folder: whatever a test imported from a temporary folder is forgotten after it, so that a later
    test's module of the same name is read from its own folder, not found in sys.modules."""
    yield
    temporary = str(tmp_path_factory.getbasetemp())
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(temporary):
            del sys.modules[name]


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch):
    """Tests see only the settings they set: a developer's own GITHUB_TOKEN must not leak in."""
    for name in list(os.environ):
        # AZURE_DEVOPS_CACHE_DIR is the SDK's, not ours, and it is read when the SDK is first imported,
        # inside some test: without it the discovery cache would be ~'s, shared with every other run.
        if name.startswith(("MLOPS_", "GITHUB_", "SLACK_", "AZURE_DEVOPS_")) and name != "AZURE_DEVOPS_CACHE_DIR":
            monkeypatch.delenv(name)
    for name in _MLFLOW_SETTINGS:  # the bot's own MLflow settings (MLflow's tuning variables stay)
        monkeypatch.delenv(name, raising=False)


_MLFLOW_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_WEBHOOK_SECRET")


class FakeClock:
    """Time that moves only when told to, one second per reading by default."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC), step: timedelta = timedelta(seconds=1)):
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A private copy of the bundled example, so a test may change it."""
    target = tmp_path / "breast_cancer"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def write_project(root: Path, toml: str, frame: pd.DataFrame | None = None, *, data_name: str = "data.csv") -> Path:
    """A model project folder with the given mlops.toml and (optionally) data file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlops.toml").write_text(textwrap.dedent(toml))
    if frame is not None:
        path = root / data_name
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    return root


def tiny_frame(rows: int = 400, seed: int = 0, *, x1_shift: float = 0.0) -> pd.DataFrame:
    """A small, learnable classification table with a categorical column and missing values.

    ``x1_shift`` moves x1 before the labels are drawn: covariate shift, labels still true to P(y|x).
    """
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows) + x1_shift
    x2 = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    logit = 2.0 * x1 - 1.5 * x2 + np.where(colour == "red", 1.0, -0.5)
    label = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "label": label})
    frame.loc[rng.random(rows) < 0.05, "x2"] = np.nan
    return frame


TINY_TOML = """
    [project]
    name = "tiny"

    [data]
    path = "data.csv"
    target = "label"

    [model]
    estimator = "sklearn.linear_model.LogisticRegression"

    [metrics]
    primary = "roc_auc"
    others = ["accuracy"]

    [gates]
    max_regression = 0.02
"""


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "tiny", TINY_TOML, tiny_frame())


# --- the bot on embedded defaults ------------------------------------------------------------

PROJECT = "models/tiny"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.email=dev@example.com", "-c", "user.name=dev", *args],
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tiny_repository(tmp_path / "repo")


def tiny_repository(root: Path) -> Path:
    """A git repository at ``root`` holding the tiny model project, committed (tests and benchmarks)."""
    project = root / PROJECT
    project.mkdir(parents=True)
    (project / "mlops.toml").write_text(textwrap.dedent(TINY_TOML))
    tiny_frame().to_csv(project / "data.csv", index=False)
    (root / "README.md").write_text("a repository\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "the tiny model")
    return root


def run_pipelines_in_process(app, in_process: bool = True):
    """Run ``app``'s pipelines in the test's own process (fast) instead of the bot's child process."""
    from integrations.local import InProcessEngine
    from integrations.workspace import WorkspaceEngine

    for lifecycle in app.lifecycles:
        engine = lifecycle.engine
        engine = engine.engine if isinstance(engine, WorkspaceEngine) else engine
        if isinstance(engine, InProcessEngine):
            engine.isolated = not in_process
    return app


@pytest.fixture
def make_app(repo: Path, tmp_path: Path, monkeypatch):
    """Build the bot on embedded defaults over ``repo``, with a fake clock, quiet output and the pipeline in-process."""
    from bot.app import build
    from bot.settings import Settings

    monkeypatch.chdir(tmp_path)
    clock = FakeClock()
    apps = []

    def make(*, isolated: bool = False, **overrides):
        values = {"project_dir": repo / PROJECT, "data_dir": tmp_path / "state", "drift_cooldown_s": 0} | overrides
        if not values.get("mlflow_tracking_uri"):
            seed_embedded_mlflow(values["data_dir"])
        out = io.StringIO()
        app = build(Settings(**values), clock=clock, out=out)
        app.out = out
        # The bot runs its pipeline in a child process; tests run it in theirs, for speed, unless they
        # ask for the bot's way (isolated=True).
        run_pipelines_in_process(app, not isolated)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.store.close()




# --- the embedded MLflow store, without paying its migrations in every test ----------------------
#
# A fresh embedded store spends seconds in MLflow's schema migrations; a copy of a migrated one opens
# at once. One migrated store is made per test session, on first need, and copied into each data
# dir before the bot (or a test) opens it. Only speed: a store not seeded is migrated as usual.

_mlflow_template: Path | None = None


def _migrated_mlflow_store() -> Path:
    """The session's migrated embedded store (``mlflow.db``), made on first call."""
    global _mlflow_template
    if _mlflow_template is None:
        import atexit

        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="mlops-bot-tests-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments()         # the tracking store: migrates the database
        client.search_registered_models()   # the registry store: checks the same schema
        _mlflow_template = folder / "mlflow.db"
    return _mlflow_template


def seed_embedded_mlflow(data_dir: Path) -> Path:
    """Copy the migrated store to ``data_dir/mlflow/mlflow.db`` (where the bot's embedded default
    keeps it) unless a store is there already; returns its path."""
    import sqlite3

    target = Path(data_dir).expanduser().resolve() / "mlflow" / "mlflow.db"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(".mlflow.db.partial")
        # SQLite's backup API: a consistent copy even while MLflow's engine holds the template open.
        source, copy = sqlite3.connect(_migrated_mlflow_store()), sqlite3.connect(partial)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        os.replace(partial, target)  # a bot starting meanwhile sees no store or a whole one
    return target


@pytest.fixture(scope="session")
def embedded_mlflow_template() -> Path:
    """The session's one migrated embedded MLflow store (``seed_embedded_mlflow`` copies it)."""
    return _migrated_mlflow_store()


def open_embedded_registry(data_dir: Path, *, clock=None):
    """The registry the bot opens with MLFLOW_TRACKING_URI unset: MLflow on the embedded store in
    ``data_dir`` (seeded first), with ``clock`` if given."""
    from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri

    seed_embedded_mlflow(data_dir)
    options = {"clock": clock} if clock is not None else {}
    return MlflowRegistry(embedded_tracking_uri(data_dir), data_dir=data_dir, **options)


@pytest.fixture
def embedded_registry(tmp_path: Path, clock: FakeClock):
    """An embedded MLflow registry of the test's own (data dir ``tmp_path/registry``), on the test's clock."""
    registry = open_embedded_registry(tmp_path / "registry", clock=clock)
    yield registry
    registry.close()


def settle(app, rounds: int = 30) -> None:
    """Run the bot until its outbox is empty, moving its clock past every back-off."""
    for _ in range(rounds):
        app.run_once()
        if not app.store.effects(status="pending"):
            return
        app.clock.now += timedelta(minutes=30)
    raise AssertionError(f"effects still pending: {[e.key for e in app.store.effects(status='pending')]}")


#: appended to the tiny project's mlops.toml: its runs keep a validated model as a candidate for /deploy
CANDIDATE_STAGE = '\n[deploy]\nstage = "candidate"\n'


def write_drifted_batch(app, name: str, seed: int, *, labelled: bool) -> None:
    """A production batch of the tiny model with x1 shifted (drift), 300 rows, with or without its
    labels, in the bot's monitoring folder for its next drift check."""
    app.settings.batches_dir.mkdir(parents=True, exist_ok=True)
    frame = tiny_frame(300, seed=seed, x1_shift=1.5)
    (frame if labelled else frame.drop(columns=["label"])).to_csv(app.settings.batches_dir / name, index=False)


def keep_candidates(repo: Path, keep: bool) -> None:
    """Whether the tiny project's next runs keep a validated model as a candidate (or promote it)."""
    toml = repo / PROJECT / "mlops.toml"
    text = toml.read_text().replace(CANDIDATE_STAGE, "")
    toml.write_text(text + CANDIDATE_STAGE if keep else text)


# --- the emulators of outside services ---------------------------------------------------------

from tests.emulators.fixtures import (  # noqa: E402,F401
    REQUIRE_REFDATA,
    azure_devops_emulator,
    github_emulator,
    no_proxy_for_loopback,
    refdata_missing_reason,
    slack_emulator,
)


@pytest.fixture
def ado(azure_devops_emulator):  # noqa: F811
    """The Azure DevOps emulator with a project ``proj`` holding the repository ``model`` and the
    pipeline ``train`` (test files that need another layout define their own ``ado``)."""
    state = azure_devops_emulator.state
    state.add_project("proj")
    state.add_repo("proj", "model")
    state.add_pipeline("proj", "train")
    return azure_devops_emulator


def pytest_sessionstart(session) -> None:
    # CI (REQUIRE_REFDATA=1, set by .ci/run) must not pass with the reference checks silently off.
    reason = refdata_missing_reason()
    if reason and os.environ.get(REQUIRE_REFDATA) == "1":
        pytest.exit(f"{REQUIRE_REFDATA}=1 but {reason}", returncode=1)


def pytest_report_header(config) -> str | None:
    reason = refdata_missing_reason()
    return f"reference data: {reason}" if reason else None

# --- PostgreSQL: a throwaway server, and state tests on SQLite and PostgreSQL -------------------

from tests.postgres import (  # noqa: E402,F401
    postgres_server,
    postgres_url,
    pytest_terminal_summary,
    state_url,
)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}
