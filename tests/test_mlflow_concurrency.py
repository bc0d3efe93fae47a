"""Several OS processes writing to one embedded MLflow store (SQLite) at the same time.

The bot, a ``mlops-bot`` command typed meanwhile and a second bot on the same data folder all open
the same ``MLOPS_DATA_DIR/mlflow/mlflow.db``. These tests start real processes (multiprocessing,
spawn: nothing inherited but the arguments) that publish versions of one model and move its
production alias at once, then read the store back: the version numbers, the run ids, the alias and
its history must be as if the writers had taken turns, and no writer may have seen SQLite's
"database is locked". A writer killed with SIGKILL in the middle of a publish is repeated with the
same run id and must leave one version, not two.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from pathlib import Path

import pytest

from integrations.mlflow_registry import (
    TAG_RUN_ID,
    MlflowRegistry,
    embedded_tracking_uri,
)

MODEL = "churn"
WRITERS = 4
PUBLISHES_EACH = 3
# Generous limits that only turn a hung child into a failure instead of a hung test run; nothing is timed.
_JOIN_LIMIT_S = 600
_MARKER_LIMIT_S = 300


def _registry(data_dir: Path) -> MlflowRegistry:
    return MlflowRegistry(embedded_tracking_uri(data_dir), data_dir=data_dir)


def _staged(registry: MlflowRegistry, label: str) -> Path:
    staging = registry.staging_dir()
    (staging / "model.bin").write_text(label)
    return staging


def _write_concurrently(data_dir: Path, writer: int, go, results) -> None:
    """One writer process: publish and promote PUBLISHES_EACH versions; every outcome reported, none raised."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    outcomes: list[dict] = []
    try:
        registry = _registry(data_dir)
        registry.aliases(MODEL)  # MLflow imported and the store opened before the start, so all contend
    except Exception:  # noqa: BLE001  (reported to the parent, which fails the test with it)
        results.put({"writer": writer, "outcomes": [], "setup_error": traceback.format_exc()})
        return
    go.wait()
    for n in range(PUBLISHES_EACH):
        run_id = f"run-w{writer}-n{n}"
        outcome: dict = {"run_id": run_id, "version": None, "promoted": False, "error": None}
        try:
            published = registry.publish(MODEL, _staged(registry, run_id), {"writer": writer, "n": n}, run_id=run_id)
            outcome["version"] = published.version
            registry.promote(MODEL, published.version, reason=f"writer {writer} promotes its publish {n}",
                             run_id=run_id, trigger="test")
            outcome["promoted"] = True
        except Exception as exc:  # noqa: BLE001  (reported to the parent, which fails the test with it)
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        outcomes.append(outcome)
    results.put({"writer": writer, "outcomes": outcomes, "setup_error": None})


def _run_writers(data_dir: Path, count: int) -> list[dict]:
    spawn = multiprocessing.get_context("spawn")
    go, results = spawn.Event(), spawn.Queue()
    workers = [spawn.Process(target=_write_concurrently, args=(data_dir, w, go, results)) for w in range(count)]
    for process in workers:
        process.start()
    go.set()  # each waits for it after opening the store, so the publishes overlap
    reports = [results.get(timeout=_JOIN_LIMIT_S) for _ in workers]
    for process in workers:
        process.join(timeout=_JOIN_LIMIT_S)
    assert [p.exitcode for p in workers] == [0] * count
    return sorted(reports, key=lambda r: r["writer"])


@pytest.fixture(autouse=True)
def _no_mlflow_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.mark.parametrize("store", ["created first", "fresh"])
def test_concurrent_writers_number_versions_without_gaps_and_record_every_promote(tmp_path: Path, store: str):
    data_dir = tmp_path / "data"
    if store == "created first":
        _registry(data_dir).models()  # the store made and migrated before the writers come
    # "fresh": the writers find no database and make it at the same time (a bot and a command on first start)

    reports = _run_writers(data_dir, WRITERS)

    assert [r["setup_error"] for r in reports] == [None] * WRITERS
    outcomes = [o for r in reports for o in r["outcomes"]]
    errors = [f"{o['run_id']}: {o['error']}" for o in outcomes if o["error"]]
    assert errors == [], "writers failed (a 'database is locked' among them is the store not waiting its turn)"
    total = WRITERS * PUBLISHES_EACH
    assert sorted(o["version"] for o in outcomes) == list(range(1, total + 1))

    registry = _registry(data_dir)
    versions = registry.versions(MODEL)
    assert [v.version for v in versions] == list(range(1, total + 1))
    for outcome in outcomes:
        found = registry.find_by_run_id(MODEL, outcome["run_id"])
        assert found is not None and found.version == outcome["version"]
        assert found.metadata["version"] == outcome["version"]
    # Exactly one version per run id, counted in MLflow itself (find_by_run_id returns the first only).
    from mlflow import MlflowClient

    client = MlflowClient(registry.tracking_uri, registry.registry_uri)
    tagged = [mv.tags[TAG_RUN_ID] for mv in client.search_model_versions(f"name = '{MODEL}'")]
    assert sorted(tagged) == sorted(o["run_id"] for o in outcomes)
    # metadata.json inside each version names that version, even where the predicted number was taken.
    for version in versions:
        assert (version.path / "model.bin").read_text() == version.run_id

    production = registry.aliases(MODEL)[registry.production_alias]
    assert production in {v.version for v in versions}
    history = registry.alias_history(MODEL, registry.production_alias)
    assert sorted(move.run_id for move in history) == sorted(o["run_id"] for o in outcomes if o["promoted"])
    assert len(history) == total


def _publish_until_killed(data_dir: Path, run_id: str, stop_after: str, marker: Path) -> None:
    """Publish, but stop for good right after MLflow's ``stop_after`` call returns: the parent kills us there."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    real = getattr(MlflowClient, stop_after)

    def call_then_wait_to_be_killed(self, *args, **kwargs):
        answer = real(self, *args, **kwargs)
        marker.write_text(stop_after)
        while True:  # SIGKILL ends this; nothing after the call is done
            time.sleep(1)
        return answer

    setattr(MlflowClient, stop_after, call_then_wait_to_be_killed)  # this child process only
    registry = _registry(data_dir)
    registry.publish(MODEL, _staged(registry, run_id), {"killed": True}, run_id=run_id)


@pytest.mark.parametrize("stop_after", ["log_artifacts", "create_model_version", "set_registered_model_alias"])
def test_a_writer_killed_mid_publish_leaves_one_version_once_repeated(tmp_path: Path, stop_after: str):
    data_dir = tmp_path / "data"
    registry = _registry(data_dir)
    registry.publish(MODEL, _staged(registry, "run-before"), {}, run_id="run-before")
    marker = tmp_path / "stopped"
    child = multiprocessing.get_context("spawn").Process(
        target=_publish_until_killed, args=(data_dir, "run-killed", stop_after, marker))
    child.start()
    deadline = time.monotonic() + _MARKER_LIMIT_S
    while not marker.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the child never got as far as {stop_after} (exit code {child.exitcode})"
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL

    repeated = registry.publish(MODEL, _staged(registry, "run-killed"), {"killed": True}, run_id="run-killed")

    assert repeated.version == 2
    assert [(v.version, v.run_id) for v in registry.versions(MODEL)] == [(1, "run-before"), (2, "run-killed")]
    assert registry.find_by_run_id(MODEL, "run-killed").version == 2
    assert registry.candidate(MODEL).version == 2  # the candidate alias moved once the publish was repeated
    assert (repeated.path / "model.bin").read_text() == "run-killed"
    # One MLflow run for the bot's run, however far the killed publish got.
    from mlflow import MlflowClient

    client = MlflowClient(registry.tracking_uri, registry.registry_uri)
    experiment = client.get_experiment_by_name(f"mlops-bot/{MODEL}")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{TAG_RUN_ID} = 'run-killed'")
    assert len(runs) == 1
    # A publish of another run after the repair takes the next number.
    assert registry.publish(MODEL, _staged(registry, "run-after"), {}, run_id="run-after").version == 3
