"""The pipeline in a child process: the project's code gets none of the bot's secrets, cannot take the
bot down with it, is stopped at its time limit, and trains the same model as in-process."""

from __future__ import annotations

import base64
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from integrations.local import InProcessEngine
from integrations.ports import Target
from integrations.workspace import GitWorkspaces, WorkspaceEngine
from pipeline.run import run_pipeline
from tests.conftest import (
    PROJECT,
    TINY_TOML,
    git,
    open_embedded_registry,
    process_alive,
    tiny_frame,
    write_project,
)

# The bot's secrets, as its settings would find them in its environment and its .env.
FAKE_ENVIRONMENT = {
    "GITHUB_TOKEN": "ghp_fakeGitHubToken0123456789abcdefABCD",
    "SLACK_BOT_TOKEN": "xoxb-fake-slack-token-0123456789",
    "AZURE_DEVOPS_EXT_PAT": "fake-azure-devops-pat-0123456789abcdef",
    "MLOPS_STATE_URL": "postgresql://mlops:fake-database-password-0123@db.example.com/state",
    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token-0123456789",
}
DOTENV_SECRET = "fake-dotenv-webhook-secret-0123456789"
SECRETS = [*FAKE_ENVIRONMENT.values(), "fake-database-password-0123", DOTENV_SECRET]

COLUMNS = """\
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def columns():
    return make_column_transformer((SimpleImputer(), ["x1", "x2"]), (OneHotEncoder(), ["colour"]))
"""

# The project's estimator factory looks everywhere it can for the bot's secrets (kept out of this
# source in base64, so that the project's own files do not hold them) and writes down what it found.
SEARCHING_FACTORY = COLUMNS + """
import base64, json, os, sys
from pathlib import Path

SECRETS = [base64.b64decode(value).decode() for value in {encoded!r}]
REPORT = {report!r}


def places():
    yield "os.environ", "\\n".join(f"{{name}}={{value}}" for name, value in os.environ.items())
    yield "sys.argv", "\\n".join(sys.argv)
    for argument in sys.argv[1:]:
        if Path(argument).is_file():
            yield f"argument {{argument}}", Path(argument).read_bytes().decode("latin-1")
    for path in sorted(Path.cwd().rglob("*")):
        if path.is_file():
            yield f"file {{path.relative_to(Path.cwd())}}", path.read_bytes().decode("latin-1")
    for name in ("environ", "cmdline"):
        yield f"/proc/self/{{name}}", Path(f"/proc/self/{{name}}").read_bytes().decode("latin-1")


def make_model():
    searched, found = [], set()
    for place, text in places():
        searched.append(place)
        found |= {{place for secret in SECRETS if secret in text}}
    bot = sorted(name for name in sys.modules if name == "bot" or name.startswith(("bot.", "dotenv")))
    Path(REPORT).write_text(json.dumps({{"pid": os.getpid(), "searched": searched, "found": sorted(found),
                                         "bot_modules": bot}}))
    return make_pipeline(columns(), LogisticRegression())
"""

PLAIN_FACTORY = COLUMNS + """

def make_model():
    return make_pipeline(columns(), LogisticRegression())
"""

# Training that ends the process the way the OOM killer does.
KILLED_IN_TRAINING = COLUMNS + """
import os, signal


class Doomed(LogisticRegression):
    def fit(self, X, y):
        os.kill(os.getpid(), signal.SIGKILL)


def make_model():
    return make_pipeline(columns(), Doomed())
"""

# Training that never ends, in a project that started a process of its own that would outlive it.
ENDLESS_TRAINING = COLUMNS + """
import json, os, subprocess, time


class Endless(LogisticRegression):
    def fit(self, X, y):
        time.sleep(600)


def make_model():
    helper = subprocess.Popen(["sleep", "600"])
    with open({report!r}, "w") as report:
        json.dump({{"pid": os.getpid(), "group": os.getpgrp(), "helper": helper.pid}}, report)
    return make_pipeline(columns(), Endless())
"""


def _project(root: Path, factory: str, *, model_table: str = "") -> Path:
    toml = TINY_TOML.replace('estimator = "sklearn.linear_model.LogisticRegression"',
                             'estimator = "train:make_model"' + model_table)
    write_project(root, toml, tiny_frame())
    (root / "train.py").write_text(factory)
    return root


def _searching(root: Path, report: Path) -> Path:
    encoded = [base64.b64encode(secret.encode()).decode() for secret in SECRETS]
    return _project(root, SEARCHING_FACTORY.format(encoded=encoded, report=str(report)))


@pytest.fixture
def bots_secrets(tmp_path, monkeypatch):
    """The bot's fake secrets in this process's environment and in a .env in its working folder."""
    for name, value in FAKE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"MLOPS_GITHUB_WEBHOOK_SECRET={DOTENV_SECRET}\n")


def _start(engine, project: str, run_id: str, context: dict | None = None):
    return engine.start(project, run_id=run_id, trigger="manual", reason="test", context=context or {})


def test_the_projects_code_finds_none_of_the_bots_secrets(tmp_path, bots_secrets, clock, embedded_registry):
    report = tmp_path / "found.json"
    project = _searching(tmp_path / "p", report)
    registry = embedded_registry

    handle = _start(InProcessEngine(registry, {"tiny": project}, clock=clock), "tiny", "run-isolated")

    assert handle.status == "succeeded", handle.result["reasons"]
    seen = json.loads(report.read_text())
    assert seen["found"] == [] and seen["bot_modules"] == []
    assert seen["pid"] != os.getpid()  # the engine's default: a process of its own
    # It did look: in its environment, its arguments and the job file they name, its folder, /proc.
    assert {"os.environ", "sys.argv", "file mlops.toml", "file data.csv", "/proc/self/environ"} <= set(seen["searched"])
    assert any(place.startswith("argument ") and place.endswith("job.json") for place in seen["searched"])

    # Nor can it read them from the bot's process: /proc/<bot>/environ and mem are root's now
    # (this test runs as root, who reads them anyway: the flag is what can be checked here).
    from pipeline.child import is_hidden_from_children

    assert is_hidden_from_children() == sys.platform.startswith("linux")

    # The same search, run in the bot's own process, finds them: the test can tell.
    in_process = InProcessEngine(registry, {"tiny": project}, clock=clock, isolated=False)
    assert _start(in_process, "tiny", "run-in-process").status == "succeeded"
    seen = json.loads(report.read_text())
    assert "os.environ" in seen["found"] and "file .env" in seen["found"]


def test_a_forks_commit_runs_in_a_child_without_the_checkout_token(tmp_path, bots_secrets, repo, clock):
    """A pull request's head (a fork's code after /ok-to-test) runs in its checkout, in a child process."""
    report = tmp_path / "found.json"
    _searching(repo / PROJECT, report)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a factory that looks for secrets")
    commit = git(repo, "rev-parse", "HEAD")
    registry = open_embedded_registry(tmp_path / "registry", clock=clock)
    workspaces = GitWorkspaces(tmp_path / "workspaces", lambda: repo.as_uri(),
                               token=lambda: FAKE_ENVIRONMENT["GITHUB_TOKEN"])
    engine = WorkspaceEngine(InProcessEngine(registry, {"tiny": tmp_path / "elsewhere"}, clock=clock), workspaces,
                             project_path=PROJECT)

    handle = _start(engine, "tiny", "run-fork", {"origin": {"commit": commit}})

    assert handle.status in {"succeeded", "not_promoted"}, handle.result["reasons"]
    seen = json.loads(report.read_text())
    assert seen["found"] == [] and seen["pid"] != os.getpid()
    assert "file train.py" in seen["searched"]  # it ran in the checkout


def test_a_run_killed_like_by_the_oom_killer_fails_at_its_stage_and_the_bot_carries_on(make_app, repo):
    project = repo / PROJECT
    _project(project, KILLED_IN_TRAINING)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a model whose training dies")
    app = make_app(isolated=True)

    app.run_once()

    [killed] = app.registry.runs("tiny")
    assert (killed.status, killed.failed_stage) == ("failed", "train")
    assert killed.error == "the pipeline process was killed by SIGKILL (out of memory?)"
    assert app.registry.production("tiny") is None

    (project / "train.py").write_text(PLAIN_FACTORY)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Train a model that lives")
    app.run_once()

    latest = app.registry.runs("tiny")[0]
    assert (latest.trigger, latest.status) == ("merge", "succeeded"), latest.error
    assert app.registry.production("tiny").version == 1
    change = app.scm.merged_changes(None)[0][-1]
    replies = [c.body for c in app.scm.comments_on(Target("change", app.scm.repo, change.number)) if c.by_bot]
    assert replies and "v1" in replies[0]


def _alive_in_group(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == group and fields[0] not in {"Z", "X"}:
                members.append(int(entry.name))
    return members


def test_a_run_past_model_timeout_seconds_is_stopped_with_all_it_started(tmp_path, clock):
    report = tmp_path / "started.json"
    project = _project(tmp_path / "p", ENDLESS_TRAINING.format(report=str(report)),
                       model_table="\ntimeout_seconds = 2")
    registry = open_embedded_registry(tmp_path / "registry", clock=clock)

    result = run_pipeline(project, registry, clock=clock, isolated=True)

    assert (result.status, result.failed_stage) == ("failed", "train")
    assert result.error == "train stopped after 2 s ([model] timeout_seconds = 2)"
    assert [stage.status for stage in result.stages] == ["failed", "skipped", "skipped", "skipped"]
    started = json.loads(report.read_text())
    assert started["group"] == started["pid"] != os.getpgrp()  # a process group of its own ...
    assert _alive_in_group(started["group"]) == [] and not process_alive(started["helper"])  # ... stopped whole
    assert registry.get_run(result.run_id).error == result.error


def _resident_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_the_parents_memory_stays_flat_across_isolated_runs(tmp_path, clock):
    project = _project(tmp_path / "p", PLAIN_FACTORY)
    registry = open_embedded_registry(tmp_path / "registry", clock=clock)

    assert run_pipeline(project, registry, clock=clock, isolated=True).status == "succeeded"
    after_first = _resident_kb()
    for _ in range(4):
        assert run_pipeline(project, registry, clock=clock, isolated=True).status in {"succeeded", "not_promoted"}

    growth_mb = (_resident_kb() - after_first) / 1024
    assert growth_mb < 20, f"resident memory grew by {growth_mb:.1f} MB over four more runs"


def test_isolated_and_in_process_runs_train_the_same_model(tmp_path, clock):
    project = _project(tmp_path / "p", PLAIN_FACTORY)
    results, published = [], []
    for isolated in (True, False):
        registry = open_embedded_registry(tmp_path / f"registry-{isolated}", clock=clock)
        result = run_pipeline(project, registry, clock=clock, isolated=isolated, reason="same")
        assert result.status == "succeeded", result.error
        results.append(result)
        published.append(registry.production("tiny").metadata)

    isolated, in_process = results
    assert isolated.validation == in_process.validation
    assert isolated.data == in_process.data and isolated.data["fingerprint"].startswith("sha256:")
    assert [(s.name, s.status, s.detail) for s in isolated.stages] == [
        (s.name, s.status, s.detail) for s in in_process.stages]
    for key in ("metrics", "data", "validation", "schema"):
        assert published[0].get(key) == published[1].get(key), key
    # The calibration curve's thresholds are the model's raw probabilities: two processes may round
    # their last bit differently (SIMD reductions depend on where arrays happen to sit in memory), so
    # they are the same to 12 significant digits, not bit for bit.
    assert same_numbers(published[0]["calibration"], published[1]["calibration"])


def same_numbers(a, b, *, rel_tol: float = 1e-12) -> bool:
    """Whether two JSON-like values are equal, their floats to ``rel_tol``."""
    import math

    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_numbers(a[k], b[k], rel_tol=rel_tol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_numbers(x, y, rel_tol=rel_tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-15)
    return a == b
