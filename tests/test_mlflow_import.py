"""The bot's old folder registry imported into MLflow when MLflow is first opened: once, crash or not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import open_registry
from bot.settings import Settings
from integrations.mlflow_import import import_folder_registry, import_note
from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri
from pipeline.registry import ModelRegistry, RunRecord
from tests.conftest import FakeClock


@pytest.fixture(autouse=True)
def _no_mlflow_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def _settings(tiny_project: Path, data_dir: Path) -> Settings:
    return Settings(project_dir=tiny_project, data_dir=data_dir, mlflow_tracking_uri=embedded_tracking_uri(data_dir))


def _folder_registry(settings: Settings) -> ModelRegistry:
    """Three versions of tiny, each its own run; v1, v2, v3 promoted in turn, then rolled back to v2."""
    old = ModelRegistry(settings.registry_dir, clock=FakeClock(step=timedelta(minutes=1)))
    for n in (1, 2, 3):
        staging = old.staging_dir()
        (staging / "model.bin").write_bytes(f"weights {n}".encode())
        published = old.publish("tiny", staging, {"metrics": {"roc_auc": 0.8 + n / 100}}, run_id=f"run-old-{n}",
                                candidate=False)
        old.record_run(RunRecord(run_id=f"run-old-{n}", model="tiny", status="succeeded", trigger="merge",
                                 reason=f"change {n}", started_at=published.created_at - timedelta(seconds=30),
                                 finished_at=published.created_at, version=n))
        old.promote("tiny", n, reason=f"ship v{n}", run_id=f"run-old-{n}", trigger="merge")
    old.rollback("tiny", reason="v3 misbehaves", trigger="command")
    return old


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _imported(uri: str) -> list[tuple[int, str]]:
    """Every version of tiny in MLflow and the bot's run id it carries."""
    versions = _client(uri).search_model_versions("name = 'tiny'")
    return sorted((int(v.version), v.tags["mlops_run_id"]) for v in versions)


def test_the_folder_registry_is_imported_once_with_production_and_its_history(tiny_project, tmp_path, monkeypatch,
                                                                               caplog):
    settings = _settings(tiny_project, tmp_path / "state")
    old = _folder_registry(settings)
    before = {v.version: (v.created_at, (v.path / "model.bin").read_bytes()) for v in old.versions("tiny")}
    periods = [(p.version, p.started_by, p.started_at, p.reason) for p in old.history("tiny")]
    old.close()

    registry = open_registry(settings)
    assert isinstance(registry, MlflowRegistry)
    uri = registry.tracking_uri
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
    assert (settings.registry_dir / "index.sqlite").is_file()  # the old folder is left where it was

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
    _folder_registry(settings).close()
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
