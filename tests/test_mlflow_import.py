"""The bot's old folder registry imported into MLflow when MLflow is first opened: once, crash or not."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import open_registry
from bot.settings import Settings
from integrations.mlflow_import import import_folder_registry, import_note
from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri
from pipeline.registry_port import RegistryError, RunRecord
from tests.conftest import FakeClock, seed_embedded_mlflow
from tests.old_folder_registry import OldFolderRegistry


@pytest.fixture(autouse=True)
def _no_mlflow_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def _settings(tiny_project: Path, data_dir: Path, *, embedded: bool = False) -> Settings:
    """Settings naming the embedded store explicitly, or (``embedded=True``) leaving it the default."""
    seed_embedded_mlflow(data_dir)
    uri = None if embedded else embedded_tracking_uri(data_dir)
    return Settings(project_dir=tiny_project, data_dir=data_dir, mlflow_tracking_uri=uri)


def _folder_registry(settings: Settings) -> tuple[dict[int, tuple], list[tuple]]:
    """Three versions of tiny in the old folder format, each its own run; v1, v2, v3 promoted in turn,
    then rolled back to v2. Returns each version's (created_at, model.bin) and the production periods
    (version, started_by, started_at, reason)."""
    old = OldFolderRegistry(settings.registry_dir, clock=FakeClock(step=timedelta(minutes=1)))
    published, periods = {}, []
    for n in (1, 2, 3):
        weights = f"weights {n}".encode()
        version, created_at = old.publish("tiny", {"model.bin": weights}, {"metrics": {"roc_auc": 0.8 + n / 100}},
                                          run_id=f"run-old-{n}")
        published[version] = (created_at, weights)
        old.record_run(RunRecord(run_id=f"run-old-{n}", model="tiny", status="succeeded", trigger="merge",
                                 reason=f"change {n}", started_at=created_at - timedelta(seconds=30),
                                 finished_at=created_at, version=n))
        started = old.put_in_production("tiny", n, reason=f"ship v{n}", run_id=f"run-old-{n}", trigger="merge")
        periods.append((n, "promote", started, f"ship v{n}"))
    started = old.put_in_production("tiny", 2, reason="v3 misbehaves", trigger="command", started_by="rollback")
    periods.append((2, "rollback", started, "v3 misbehaves"))
    old.close()
    return published, periods


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (nanoseconds)."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _imported(uri: str) -> list[tuple[int, str]]:
    """Every version of tiny in MLflow and the bot's run id it carries."""
    versions = _client(uri).search_model_versions("name = 'tiny'")
    return sorted((int(v.version), v.tags["mlops_run_id"]) for v in versions)


def test_the_folder_registry_is_imported_once_with_production_and_its_history(tiny_project, tmp_path, monkeypatch,
                                                                               caplog):
    settings = _settings(tiny_project, tmp_path / "state", embedded=True)  # the default: nothing set
    before, periods = _folder_registry(settings)
    old_files = _files(settings.registry_dir)

    registry = open_registry(settings)
    assert isinstance(registry, MlflowRegistry)
    uri = registry.tracking_uri
    assert uri == embedded_tracking_uri(settings.data_dir)
    assert _imported(uri) == [(1, "run-old-1"), (2, "run-old-2"), (3, "run-old-3")]
    assert registry.aliases("tiny") == {"production": 2}
    for version in registry.versions("tiny"):  # the artifacts and the time each was first published
        assert ((version.path / "model.bin").read_bytes(), version.created_at) == (before[version.version][1],
                                                                                  before[version.version][0])
    assert [(p.version, p.started_by, p.started_at, p.reason) for p in registry.history("tiny")] == periods
    assert registry.rollback("tiny", reason="check the stack").version == 1  # v2's rollback popped v3: v1 is under it
    assert registry.get_run("run-old-3").reason == "change 3"
    assert sum("imported 3 version(s) of tiny" in r.getMessage() for r in caplog.records) == 1
    assert "can be removed" in import_note(settings.data_dir)
    assert _files(settings.registry_dir) == old_files  # the old folder is read, not a byte or a file changed

    # Opened again (each command opens it): nothing imported, and MLflow is not even asked.
    def asked(*args, **kwargs):
        raise AssertionError("MLflow asked again")

    monkeypatch.setattr(MlflowRegistry, "find_by_run_id", asked)
    assert import_folder_registry(settings.registry_dir, registry, data_dir=settings.data_dir) is None
    open_registry(settings)
    assert len(_imported(uri)) == 3


def test_an_import_killed_part_way_is_finished_by_the_next_open_without_a_second_copy(tiny_project, tmp_path,
                                                                                     monkeypatch):
    settings = _settings(tiny_project, tmp_path / "state")
    _folder_registry(settings)
    publish = MlflowRegistry.publish
    published = []

    def killed_after_two(self, *args, **kwargs):
        if len(published) == 2:
            raise KeyboardInterrupt("killed between v2 and v3")
        published.append(args[0])
        return publish(self, *args, **kwargs)

    monkeypatch.setattr(MlflowRegistry, "publish", killed_after_two)
    registry = MlflowRegistry(settings.mlflow_tracking_uri, data_dir=settings.data_dir)
    with pytest.raises(KeyboardInterrupt):
        import_folder_registry(settings.registry_dir, registry, data_dir=settings.data_dir)
    assert len(_imported(registry.tracking_uri)) == 2 and import_note(settings.data_dir) is None
    monkeypatch.setattr(MlflowRegistry, "publish", publish)

    reopened = open_registry(settings)
    assert _imported(reopened.tracking_uri) == [(1, "run-old-1"), (2, "run-old-2"), (3, "run-old-3")]
    assert reopened.aliases("tiny") == {"production": 2}
    assert [(p.version, p.started_by) for p in reopened.history("tiny")] == [
        (1, "promote"), (2, "promote"), (3, "promote"), (2, "rollback")]


def test_no_folder_registry_means_nothing_to_import_and_nothing_created(tiny_project, tmp_path):
    settings = _settings(tiny_project, tmp_path / "state")
    registry = MlflowRegistry(settings.mlflow_tracking_uri, data_dir=settings.data_dir)
    assert import_folder_registry(settings.registry_dir, registry, data_dir=settings.data_dir) is None
    assert not settings.registry_dir.exists() and import_note(settings.data_dir) is None


def test_of_several_candidates_in_an_old_registry_only_the_newest_becomes_the_candidate(tiny_project, tmp_path):
    """Registries written before a model had one candidate kept every unpromoted version a candidate."""
    settings = _settings(tiny_project, tmp_path / "state", embedded=True)
    old = OldFolderRegistry(settings.registry_dir, clock=FakeClock())
    for n in (1, 2, 3):
        old.publish("tiny", {"model.bin": b"w"}, {}, run_id=f"run-old-{n}", stage="candidate")
    old.put_in_production("tiny", 1, reason="ship", trigger="merge")
    old.close()

    registry = open_registry(settings)
    assert registry.aliases("tiny") == {"production": 1, "candidate": 3}


def test_an_old_registry_of_a_newer_schema_is_refused_in_one_line_and_left_alone(tiny_project, tmp_path, caplog):
    settings = _settings(tiny_project, tmp_path / "state", embedded=True)
    old = OldFolderRegistry(settings.registry_dir, clock=FakeClock())
    old.publish("tiny", {"model.bin": b"w"}, {}, run_id="run-old-1")
    old.close()
    conn = sqlite3.connect(settings.registry_dir / "index.sqlite")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    old_files = _files(settings.registry_dir)

    registry = MlflowRegistry(embedded_tracking_uri(settings.data_dir), data_dir=settings.data_dir)
    with pytest.raises(RegistryError, match=r"schema version 2, newer than the 1 this mlops-bot imports; import it "
                                            r"with the mlops-bot that wrote it$"):
        import_folder_registry(settings.registry_dir, registry, data_dir=settings.data_dir)
    # Opening the bot's registry says so in the log and carries on with MLflow as it is.
    assert open_registry(settings).versions() == []
    assert "is not imported into MLflow yet" in caplog.text and "schema version 2" in caplog.text
    assert _files(settings.registry_dir) == old_files and import_note(settings.data_dir) is None


def test_what_an_old_registry_left_in_its_write_ahead_log_is_imported_too(tiny_project, tmp_path):
    """A bot stopped without closing its index (killed) left its last writes in index.sqlite-wal."""
    settings = _settings(tiny_project, tmp_path / "state", embedded=True)
    old = OldFolderRegistry(settings.registry_dir, clock=FakeClock())  # kept open: nothing checkpointed
    old.publish("tiny", {"model.bin": b"w"}, {}, run_id="run-old-1")
    old.put_in_production("tiny", 1, reason="ship", trigger="merge")
    assert (settings.registry_dir / "index.sqlite-wal").stat().st_size > 0
    try:
        registry = open_registry(settings)
        assert _imported(registry.tracking_uri) == [(1, "run-old-1")]
        assert registry.aliases("tiny") == {"production": 1}
    finally:
        old.close()
