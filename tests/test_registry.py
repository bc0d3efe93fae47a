"""The model registry, against real folders and a real SQLite index."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline.registry import ModelRegistry, RegistryError, RunRecord, Stage

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


class SteppingClock:
    """A clock that moves one minute forward each time it is read."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", clock=SteppingClock())


def _publish(registry: ModelRegistry, model: str = "churn", **metadata) -> int:
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    return registry.publish(model, staging, metadata, run_id="run-1").version


def _published_folders(registry: ModelRegistry) -> list[str]:
    models = registry.root / "models"
    return sorted(str(path.relative_to(models)) for path in models.glob("*/*"))


# -- publishing -------------------------------------------------------------------


def test_publish_numbers_versions_per_model_and_writes_metadata(registry: ModelRegistry) -> None:
    assert [_publish(registry, auc=auc) for auc in (0.80, 0.81, 0.82)] == [1, 2, 3]
    assert _publish(registry, "fraud") == 1

    third = registry.get("churn", 3)
    assert third.stage is Stage.CANDIDATE
    assert third.path == registry.root / "models" / "churn" / "v3"
    assert (third.path / "model.bin").read_bytes() == b"weights"
    on_disk = json.loads((third.path / "metadata.json").read_text())
    assert on_disk == {"auc": 0.82, "model": "churn", "version": 3}
    assert third.metadata == on_disk
    assert third.created_at == START + timedelta(minutes=3)
    assert third.created_at.tzinfo is not None
    assert [(v.model, v.version) for v in registry.versions()] == [
        ("churn", 1), ("churn", 2), ("churn", 3), ("fraud", 1),
    ]
    assert [v.version for v in registry.versions("fraud")] == [1]
    assert registry.models() == ["churn", "fraud"]
    assert list((registry.root / ".staging").iterdir()) == []


def test_published_version_is_the_same_when_read_back(registry: ModelRegistry) -> None:
    staging = registry.staging_dir()
    published = registry.publish("churn", staging, {"auc": 0.9}, run_id="run-7")
    assert registry.get("churn", 1) == published
    assert published.to_dict() == {
        "model": "churn",
        "version": 1,
        "stage": "candidate",
        "path": str(registry.root / "models" / "churn" / "v1"),
        "created_at": "2024-01-01T00:01:00.000000+00:00",
        "run_id": "run-7",
        "metadata": {"auc": 0.9, "model": "churn", "version": 1},
    }


def test_finalize_writes_files_that_know_the_version(registry: ModelRegistry) -> None:
    def write_card(folder: Path, metadata: dict) -> None:
        (folder / "README.md").write_text(f"# {metadata['model']} v{metadata['version']}")
        metadata["changed"] = "by finalize"  # must not leak into the index

    _publish(registry)
    staging = registry.staging_dir()
    published = registry.publish(
        "churn", staging, {"auc": 0.9}, run_id="run-2", finalize=write_card
    )
    assert (published.path / "README.md").read_text() == "# churn v2"
    assert registry.get("churn", 2).metadata == {"auc": 0.9, "model": "churn", "version": 2}
    assert published.metadata == registry.get("churn", 2).metadata


def test_publish_whose_finalize_fails_changes_nothing(registry: ModelRegistry) -> None:
    def fail(folder: Path, metadata: dict) -> None:
        raise OSError("disk full")

    staging = registry.staging_dir()
    with pytest.raises(OSError, match="disk full"):
        registry.publish("churn", staging, {}, run_id="run-1", finalize=fail)
    assert registry.versions() == []
    assert _published_folders(registry) == []
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("name", ["", "-churn", "churn/v1", "../escape", "a" * 65, "churn\n"])
def test_publish_refuses_bad_model_names(registry: ModelRegistry, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.publish(name, registry.staging_dir(), {}, run_id="run-1")
    assert registry.versions() == []


def test_publish_refuses_a_name_differing_only_in_case(registry: ModelRegistry) -> None:
    _publish(registry, "churn")
    with pytest.raises(RegistryError, match="differs from existing model churn only in case"):
        _publish(registry, "Churn")


def test_publish_of_a_missing_staging_folder_changes_nothing(registry: ModelRegistry) -> None:
    _publish(registry)
    with pytest.raises(RegistryError, match="staging folder .* does not exist"):
        registry.publish("churn", registry.root / ".staging" / "gone", {}, run_id="run-2")
    assert [v.version for v in registry.versions()] == [1]
    assert _published_folders(registry) == ["churn/v1"]


def test_publish_with_unserialisable_metadata_changes_nothing(registry: ModelRegistry) -> None:
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    with pytest.raises(RegistryError, match="metadata for churn is not JSON-serialisable"):
        registry.publish("churn", staging, {"threshold": object()}, run_id="run-1")
    assert registry.versions() == []
    assert _published_folders(registry) == []
    assert sorted(p.name for p in staging.iterdir()) == ["model.bin"]


def test_publish_failing_after_the_rename_puts_everything_back(tmp_path: Path) -> None:
    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    root = tmp_path / "registry"
    ModelRegistry(root, clock=SteppingClock())
    registry = ModelRegistry(root, clock=broken_clock)
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    (staging / "metadata.json").write_text('{"mine": true}')

    with pytest.raises(RuntimeError, match="clock broke"):
        registry.publish("churn", staging, {"auc": 0.9}, run_id="run-1")

    assert registry.versions() == []
    assert list((root / "models").iterdir()) == []
    assert (staging / "model.bin").read_bytes() == b"weights"
    assert (staging / "metadata.json").read_text() == '{"mine": true}'
    # The registry still works, and the staged folder can be published after all.
    assert ModelRegistry(root, clock=SteppingClock()).publish(
        "churn", staging, {}, run_id="run-1"
    ).version == 1


def _publish_five(root: Path, worker: int, go) -> None:
    registry = ModelRegistry(root)
    go.wait(timeout=30)  # all workers publish at once, so they really contend
    for n in range(5):
        staging = registry.staging_dir()
        (staging / "worker.txt").write_text(f"{worker}-{n}")
        registry.publish("churn", staging, {"worker": worker, "n": n}, run_id=f"run-{worker}")


def test_concurrent_publishers_never_share_a_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    workers = [spawn.Process(target=_publish_five, args=(root, w, go)) for w in range(4)]
    for process in workers:
        process.start()
    time.sleep(0.5)  # let the workers start up and open the registry
    go.set()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]

    versions = ModelRegistry(root).versions("churn")
    assert [v.version for v in versions] == list(range(1, 21))
    published = {(v.metadata["worker"], v.metadata["n"]) for v in versions}
    assert published == {(w, n) for w in range(4) for n in range(5)}
    for v in versions:
        assert json.loads((v.path / "metadata.json").read_text())["version"] == v.version
        assert (v.path / "worker.txt").read_text() == f"{v.metadata['worker']}-{v.metadata['n']}"


def _publish_but_hang_after_rename(root: Path) -> None:
    real_rename = os.rename

    def rename_then_hang(source, destination):
        real_rename(source, destination)
        time.sleep(60)

    os.rename = rename_then_hang  # only in this child process
    registry = ModelRegistry(root)
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    registry.publish("churn", staging, {}, run_id="run-killed")


def test_a_publish_killed_midway_leaves_no_visible_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    ModelRegistry(root)
    orphan = root / "models" / "churn" / "v1"
    child = multiprocessing.get_context("spawn").Process(
        target=_publish_but_hang_after_rename, args=(root,)
    )
    child.start()
    deadline = time.monotonic() + 20
    while not orphan.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert orphan.exists(), "the child never got as far as renaming its folder"
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=10)
    assert child.exitcode == -signal.SIGKILL

    # Before any clean-up: the folder is there, but the index does not know it.
    with sqlite3.connect(root / "index.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 0
    assert (orphan / "model.bin").exists()

    registry = ModelRegistry(root)
    assert registry.versions() == []
    assert not orphan.exists()
    assert _publish(registry) == 1


def test_new_registry_removes_orphans_and_stale_staging_only(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    registry = ModelRegistry(root)
    _publish(registry)
    orphan = root / "models" / "churn" / "v2"
    orphan.mkdir()
    stale, fresh = registry.staging_dir(), registry.staging_dir()
    two_hours_ago = time.time() - 2 * 60 * 60
    os.utime(stale, (two_hours_ago, two_hours_ago))

    ModelRegistry(root)

    assert _published_folders(registry) == ["churn/v1"]
    assert not stale.exists()
    assert fresh.exists()


# -- reading ------------------------------------------------------------------------


def test_unknown_model_and_version_errors_say_what_exists(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no model named 'churn'; models: none published yet"):
        registry.get("churn", 1)
    _publish(registry)
    _publish(registry)
    with pytest.raises(RegistryError, match="model churn has no version 4; versions: 1, 2"):
        registry.get("churn", 4)
    with pytest.raises(RegistryError, match="no model named 'fraud'; models: churn"):
        registry.promote("fraud", 1, reason="typo")
    with pytest.raises(RegistryError, match="no model named 'fraud'"):
        registry.rollback("fraud", reason="typo")
    with pytest.raises(RegistryError, match="no run with id 'nope'"):
        registry.get_run("nope")
    assert registry.production("fraud") is None
    assert registry.history("fraud") == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    ModelRegistry(root)
    with sqlite3.connect(root / "index.sqlite") as conn:
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(RegistryError, match="schema version 2.*upgrade mlops-bot"):
        ModelRegistry(root)


def test_index_uses_wal_and_schema_version_1(registry: ModelRegistry) -> None:
    with sqlite3.connect(registry.root / "index.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


# -- production -----------------------------------------------------------------------


def test_promote_archives_the_previous_production_and_records_why(registry: ModelRegistry) -> None:
    for _ in range(2):
        _publish(registry)
    assert registry.production("churn") is None

    first = registry.promote("churn", 1, reason="first model", run_id="run-1", trigger="pr-merged")
    assert first.stage is Stage.PRODUCTION
    second = registry.promote("churn", 2, reason="better auc", run_id="run-2", trigger="scheduled")

    assert second.stage is Stage.PRODUCTION
    assert registry.production("churn") == registry.get("churn", 2)
    assert registry.get("churn", 1).stage is Stage.ARCHIVED
    history = registry.history("churn")
    assert [(h.version, h.reason, h.run_id, h.trigger, h.ended_reason) for h in history] == [
        (1, "first model", "run-1", "pr-merged", "better auc"),
        (2, "better auc", "run-2", "scheduled", None),
    ]
    assert history[0].ended_at == history[1].started_at
    assert history[1].ended_at is None
    assert history[0].started_at < history[1].started_at


def test_promoting_the_current_production_is_a_no_op(registry: ModelRegistry) -> None:
    _publish(registry)
    registry.promote("churn", 1, reason="first")
    again = registry.promote("churn", 1, reason="again")
    assert again.stage is Stage.PRODUCTION
    assert [h.reason for h in registry.history("churn")] == ["first"]


def test_an_archived_version_can_be_promoted_again(registry: ModelRegistry) -> None:
    for _ in range(2):
        _publish(registry)
    registry.promote("churn", 1, reason="first")
    registry.promote("churn", 2, reason="second")
    registry.promote("churn", 1, reason="manual deploy of v1")
    assert registry.production("churn").version == 1
    assert registry.get("churn", 2).stage is Stage.ARCHIVED
    assert [h.version for h in registry.history("churn")] == [1, 2, 1]


def test_rollback_walks_back_through_production_history(registry: ModelRegistry) -> None:
    for _ in range(4):
        _publish(registry)
    # v4 is never promoted, so "version - 1" would be the wrong answer below.
    registry.promote("churn", 3, reason="three")
    registry.promote("churn", 1, reason="one")
    registry.promote("churn", 2, reason="two")

    assert registry.rollback("churn", reason="latency up").version == 1
    assert registry.get("churn", 2).stage is Stage.ARCHIVED
    assert registry.rollback("churn", reason="still bad", trigger="drift").version == 3
    assert registry.production("churn").version == 3
    with pytest.raises(RegistryError, match="cannot roll back churn: v3 is in production, no earlier"):
        registry.rollback("churn", reason="again")

    history = registry.history("churn")
    assert [(h.version, h.started_by, h.reason, h.trigger) for h in history] == [
        (3, "promote", "three", "manual"),
        (1, "promote", "one", "manual"),
        (2, "promote", "two", "manual"),
        (1, "rollback", "latency up", "manual"),
        (3, "rollback", "still bad", "drift"),
    ]
    assert [h.ended_reason for h in history] == ["one", "two", "latency up", "still bad", None]


def test_rollback_after_three_promotions(registry: ModelRegistry) -> None:
    for version in range(1, 4):
        _publish(registry)
        registry.promote("churn", version, reason=f"v{version}")
    assert registry.rollback("churn", reason="r").version == 2
    assert registry.rollback("churn", reason="r").version == 1
    assert [v.stage for v in registry.versions("churn")] == [
        Stage.PRODUCTION, Stage.ARCHIVED, Stage.ARCHIVED,
    ]


def test_rollback_with_nothing_in_production_is_refused(registry: ModelRegistry) -> None:
    _publish(registry)
    with pytest.raises(RegistryError, match="cannot roll back churn: no version is in production"):
        registry.rollback("churn", reason="r")


def test_describe_includes_only_that_versions_production_periods(registry: ModelRegistry) -> None:
    for _ in range(2):
        _publish(registry)
    registry.promote("churn", 1, reason="first", run_id="run-1")
    registry.promote("churn", 2, reason="second")
    described = registry.describe("churn", 1)
    assert described["stage"] == "archived"
    assert described["history"] == [
        {
            "model": "churn",
            "version": 1,
            "started_at": "2024-01-01T00:03:00.000000+00:00",
            "ended_at": "2024-01-01T00:04:00.000000+00:00",
            "reason": "first",
            "run_id": "run-1",
            "trigger": "manual",
            "ended_reason": "second",
            "started_by": "promote",
        }
    ]
    json.dumps(described)  # must be JSON-safe
    assert "history" not in registry.get("churn", 1).to_dict()


# -- runs ---------------------------------------------------------------------------------


def _run(run_id: str, minute: int, model: str = "churn", **changes) -> RunRecord:
    fields = dict(
        run_id=run_id,
        model=model,
        status="running",
        trigger="pr-merged",
        reason="PR #7",
        started_at=START + timedelta(minutes=minute),
    )
    return RunRecord(**(fields | changes))


def test_runs_are_upserted_and_listed_newest_first(registry: ModelRegistry) -> None:
    registry.record_run(_run("a", 1))
    registry.record_run(_run("b", 3, model="fraud"))
    registry.record_run(_run("c", 2))
    finished = _run(
        "a", 1,
        status="failed",
        finished_at=START + timedelta(minutes=5),
        failed_stage="validate",
        error="auc below 0.7",
        stages=[{"name": "train", "status": "succeeded", "started_at": "t0",
                 "finished_at": "t1", "duration_s": 1.5}],
        details={"auc": 0.61},
    )
    registry.record_run(finished)

    assert [r.run_id for r in registry.runs()] == ["b", "c", "a"]
    assert [r.run_id for r in registry.runs("churn")] == ["c", "a"]
    assert [r.run_id for r in registry.runs(limit=1)] == ["b"]
    assert registry.get_run("a") == finished
    assert registry.get_run("a").to_dict()["finished_at"] == "2024-01-01T00:05:00.000000+00:00"


def test_record_run_refuses_an_unknown_status(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="status 'done'; expected one of running, succeeded"):
        registry.record_run(_run("a", 1, status="done"))
    assert registry.runs() == []


def test_a_registry_written_with_several_candidates_keeps_only_the_newest(registry: ModelRegistry) -> None:
    for model in ("churn", "churn", "churn", "fraud"):
        _publish(registry, model)
    registry.promote("churn", 1, reason="ship")
    registry.close()
    # Before the candidate was one version, every version never promoted stayed a candidate.
    with sqlite3.connect(registry.root / "index.sqlite") as conn:
        conn.execute("UPDATE versions SET stage = 'candidate' WHERE stage = 'archived'")
    reopened = ModelRegistry(registry.root, clock=SteppingClock())
    assert [(v.model, v.version, v.stage) for v in reopened.versions()] == [
        ("churn", 1, Stage.PRODUCTION), ("churn", 2, Stage.ARCHIVED), ("churn", 3, Stage.CANDIDATE),
        ("fraud", 1, Stage.CANDIDATE)]
    assert reopened.candidate("churn").version == 3
    reopened.close()
