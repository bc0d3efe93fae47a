"""How many requests the registry makes to a real `mlflow server`, read from the server's access log.

Upper bounds, so that reading the same thing twice within one operation does not come back
unnoticed: a registered model's aliases asked for again, a version read back that was just made,
the artifacts of a version downloaded again when the publisher's staged copy is at hand. Each bound
is what the operation needs today; what stays on purpose is named beside it. The time such
requests take belongs to benchmarks/mlflow_bench.py, not here.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from integrations.mlflow_registry import MlflowRegistry
from tests.conftest import TINY_TOML, tiny_frame, write_project
from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (session fixture)


def _requests(server: MlflowServer, action) -> Counter[str]:
    """The requests ``action`` made, by endpoint ("GET mlflow/model-versions/get"; an artifact file
    counts under "mlflow-artifacts/artifacts/<file>"). The server writes each access line just after
    its response, and one worker answers in order: once a health check sent afterwards is in the log,
    so is every request before it."""
    mark = server.mark()
    action()
    with urllib.request.urlopen(server.url + "/health", timeout=10) as answer:
        assert answer.status == 200
    deadline = time.monotonic() + 30
    while "/health" not in "".join(server.log.read_text(errors="replace").splitlines()[mark:]):
        assert time.monotonic() < deadline, "the server never logged the health check"
        time.sleep(0.05)
    counted: Counter[str] = Counter()
    for line in server.requests_since(mark):
        method, path, _status = line.split()
        endpoint = path.split("/api/", 1)[-1].split("/", 1)[-1]  # without "/api/2.0/"
        if endpoint.startswith("mlflow-artifacts/artifacts/"):
            endpoint = "mlflow-artifacts/artifacts/<file>"
        counted[f"{method} {endpoint}"] += 1
    return counted


def _reads(counted: Counter[str], endpoint: str) -> int:
    return counted[f"GET {endpoint}"]


def test_one_publish_and_promote_reads_nothing_twice(mlflow_server, tmp_path):  # noqa: F811
    model = f"count-{uuid.uuid4().hex[:8]}"
    first = MlflowRegistry(mlflow_server.url, data_dir=tmp_path / "first")
    staging = first.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    first.publish(model, staging, {"auc": 0.8}, run_id="count-first")  # the model and its experiment exist

    registry = MlflowRegistry(mlflow_server.url, data_dir=tmp_path / "bot")
    registry.aliases(model)  # the client made (MLflow imported) before counting

    def publish_and_promote() -> None:
        staging = registry.staging_dir()
        (staging / "model.bin").write_bytes(b"weights")
        version = registry.publish(model, staging, {"auc": 0.9}, run_id="count-publish")
        promoted = registry.promote(model, version.version, reason="count", run_id="count-publish")
        assert (version.version, version.aliases) == (2, ("candidate",))
        assert (promoted.version, promoted.aliases, promoted.metadata["auc"]) == (2, ("production",), 0.9)
        assert promoted.path.joinpath("model.bin").read_bytes() == b"weights"

    counted = _requests(mlflow_server, publish_and_promote)
    assert registry.production(model).aliases == ("production",) and registry.candidate(model) is None
    # Versions listed once by publish (the run's earlier version, the next number), once before its
    # candidate alias moves (the moves recorded so far) and once by promote (the version promoted, the
    # moves recorded so far); never one read back: the version published is neither read nor downloaded.
    assert _reads(counted, "mlflow/model-versions/search") <= 3, counted
    assert _reads(counted, "mlflow/model-versions/get") == 0, counted
    assert _reads(counted, "mlflow-artifacts/artifacts/<file>") == 0, counted
    assert _reads(counted, "mlflow-artifacts/artifacts") == 0, counted
    # The registered model: once on this registry's first publish to it (made or adopted?), once per
    # alias move (the alias's holder), once more before promote deletes the candidate alias (a newer
    # candidate may hold it by then), and once per alias or tag write and the delete for MLflow's own
    # client, which checks that the name is not a prompt's (2 alias moves, 2 move tags, 1 delete).
    assert _reads(counted, "mlflow/registered-models/get") <= 1 + 3 + 5, counted
    assert sum(counted.values()) <= 32, counted


def test_a_pipeline_run_downloads_nothing_it_published_and_reads_nothing_twice(mlflow_server, tmp_path):  # noqa: F811
    from pipeline.run import run_pipeline

    model = f"count-{uuid.uuid4().hex[:8]}"
    project = write_project(tmp_path / "project", TINY_TOML.replace('name = "tiny"', f'name = "{model}"'),
                            tiny_frame(300))
    registry = MlflowRegistry(mlflow_server.url, data_dir=tmp_path / "bot")
    first = run_pipeline(project, registry, trigger="count", run_id="count-run-1")
    assert (first.status, first.version) == ("succeeded", 1), first.to_dict()

    results = []
    counted = _requests(mlflow_server, lambda: results.append(
        run_pipeline(project, registry, trigger="count", run_id="count-run-2")))
    assert results[0].version == 2 and results[0].status in ("succeeded", "not_promoted"), results[0].to_dict()
    # Production (v1, published by this registry) is read from the copy its publish left in the data dir.
    assert _reads(counted, "mlflow-artifacts/artifacts/<file>") == 0, counted
    assert _reads(counted, "mlflow-artifacts/artifacts") == 0, counted
    # find-by-run-id before training and again in publish (exactly once), the moves before each alias move.
    assert _reads(counted, "mlflow/model-versions/search") <= 4, counted
    assert _reads(counted, "mlflow/model-versions/get") == 0, counted
    assert sum(counted.values()) <= 43, counted
    assert Path(registry.production(model).path).joinpath("model.skops").is_file()


def test_a_rollback_reads_the_aliases_and_the_versions_once(mlflow_server, tmp_path):  # noqa: F811
    model = f"count-{uuid.uuid4().hex[:8]}"
    registry = MlflowRegistry(mlflow_server.url, data_dir=tmp_path / "bot")
    for number in (1, 2):
        staging = registry.staging_dir()
        (staging / "model.bin").write_bytes(b"weights %d" % number)
        version = registry.publish(model, staging, {"auc": 0.8 + number / 100}, run_id=f"count-{number}")
        registry.promote(model, version.version, reason="count", run_id=f"count-{number}")

    restored = []
    counted = _requests(mlflow_server, lambda: restored.append(registry.rollback(model, reason="count")))

    assert (restored[0].version, restored[0].aliases, restored[0].metadata["auc"]) == (1, ("production",), 0.81)
    assert registry.production(model).version == 1
    assert [move.action for move in registry.alias_history(model, "production")] == ["promote", "promote", "rollback"]
    # The versions listed once (the moves so far, the version restored), none read one by one.
    assert _reads(counted, "mlflow/model-versions/search") == 1, counted
    assert _reads(counted, "mlflow/model-versions/get") == 0, counted
    # The aliases once, and once for each of MLflow's own checks before the alias and the tag writes.
    assert _reads(counted, "mlflow/registered-models/get") <= 1 + 2, counted
    assert sum(counted.values()) <= 6, counted
