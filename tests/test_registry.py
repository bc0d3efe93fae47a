"""The registry port beyond the port tests of tests/test_mlflow_registry.py, on the bot's default
registry (the embedded MLflow store): a publish that fails part-way, and abandoned staging folders.
Concurrent writers and a publish killed part-way are in tests/test_mlflow_concurrency.py."""

from __future__ import annotations

import json
import os
import time

import pytest

from pipeline.registry_port import RegistryError, Stage


def test_a_publish_refused_after_its_files_were_uploaded_puts_the_staged_folder_back_and_can_be_repeated(
        embedded_registry, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    registry = embedded_registry
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    (staging / "metadata.json").write_text('{"mine": true}')
    create_model_version = MlflowClient.create_model_version

    def refused(self, *args, **kwargs):
        raise MlflowException("the registry refused the version")

    monkeypatch.setattr(MlflowClient, "create_model_version", refused)
    with pytest.raises(RegistryError, match="the registry refused the version"):
        registry.publish("churn", staging, {"auc": 0.9}, run_id="run-1")
    assert registry.versions("churn") == []
    assert (staging / "model.bin").read_bytes() == b"weights"
    assert (staging / "metadata.json").read_text() == '{"mine": true}'  # the publish's own is taken back

    # Repeated (the bot retries a run with its run id): one version, and the first attempt's MLflow run.
    monkeypatch.setattr(MlflowClient, "create_model_version", create_model_version)
    published = registry.publish("churn", staging, {"auc": 0.9}, run_id="run-1")
    assert (published.version, published.stage) == (1, Stage.CANDIDATE)
    assert json.loads((published.path / "metadata.json").read_text()) == {"auc": 0.9, "model": "churn", "version": 1}
    assert [run.run_id for run in registry.runs("churn")] == ["run-1"]
    assert not staging.exists()  # consumed


def test_staging_folders_abandoned_for_an_hour_are_removed_and_fresh_ones_kept(embedded_registry):
    stale, fresh = embedded_registry.staging_dir(), embedded_registry.staging_dir()
    two_hours_ago = time.time() - 2 * 60 * 60
    os.utime(stale, (two_hours_ago, two_hours_ago))
    newest = embedded_registry.staging_dir()
    assert not stale.exists()
    assert fresh.is_dir() and newest.is_dir() and newest != fresh
