"""The mlops-bot command: exit codes, --json output, clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import tiny_frame


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_project):
    """Invoke the CLI in a clean folder, with the tiny project configured and nothing else."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLOPS_DATA_DIR", "MLOPS_PROJECT_DIR", "MLOPS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(tiny_project))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_help_does_not_import_heavy_libraries():
    probe = (
        "import sys\nfrom bot.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = {'sklearn', 'pandas', 'scipy', 'skops', 'matplotlib', 'github', 'slack_sdk', 'azure'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), code, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "Commands:" in done.stdout
    assert done.stderr.strip() == "[] 0"


@pytest.mark.parametrize("command", [[], ["pipeline"], ["pipeline", "run"], ["models"], ["models", "list"],
                                     ["models", "show"], ["models", "promote"], ["models", "rollback"], ["models", "predict"]])
def test_every_command_has_help(run, command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_run_then_list_show_promote_rollback(run, tmp_path):
    first = run("pipeline", "run", "--reason", "first", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["version"] == 1
    assert run("pipeline", "run").exit_code == 0

    listed = json.loads(run("models", "list", "--json").output)
    assert [(v["version"], v["stage"]) for v in listed] == [(1, "archived"), (2, "production")]
    newest = listed[1]["metadata"]
    assert set(newest["metrics"]) == {"roc_auc", "accuracy"}
    assert newest["data"]["fingerprint"].startswith("sha256:")
    assert "code_version" in newest and newest["environment"]["python"]
    assert [p["version"] for p in listed[0]["history"]] == [1]

    rolled = run("models", "rollback", "--reason", "bad numbers", "--json")
    assert rolled.exit_code == 0 and json.loads(rolled.output)["stage"] == "production"
    shown = json.loads(run("models", "show", "1", "--json").output)
    assert shown["stage"] == "production"
    assert [p["reason"] for p in shown["history"]][-1] == "bad numbers"
    assert run("models", "promote", "2").output.strip() == "tiny v2 is in production"

    card = run("models", "show", "2")
    assert "# Model card: tiny v2" in card.output


def test_a_retrain_on_a_runner_stops_when_nothing_is_new_and_learns_from_labelled_batches(run, tiny_project,
                                                                                           tmp_path, monkeypatch):
    """``pipeline run --require-new-data`` is what a workflow runs for the bot's ``/retrain``."""
    from tests.conftest import git

    git(tiny_project, "init", "-q", "-b", "main")  # the same code is the same commit
    git(tiny_project, "add", ".")
    git(tiny_project, "commit", "-q", "-m", "the tiny model")
    assert run("pipeline", "run").exit_code == 0
    same = run("pipeline", "run", "--require-new-data", "--json")
    assert same.exit_code == 0, same.output  # nothing to learn is an answer, not a failure
    said = json.loads(same.output)
    assert said["status"] == "not_promoted" and said["version"] is None
    assert said["nothing_new"].startswith("nothing new to learn from: no labelled production data since v1")
    assert [s["kind"] for s in said["data"]["sources"]] == ["training"]
    assert "not retrained: nothing new to learn from" in run("pipeline", "run", "--require-new-data").output

    batches = tmp_path / "shared" / "batches"  # where the runner sees the bot's production batches
    batches.mkdir(parents=True)
    monkeypatch.setenv("MLOPS_MONITOR_DIR", str(batches))
    tiny_frame(120, seed=9, x1_shift=1.0).to_csv(batches / "batch-1.csv", index=False)
    learned = json.loads(run("pipeline", "run", "--require-new-data", "--json").output)
    assert learned["nothing_new"] is None and learned["version"] == 2
    assert [s["kind"] for s in learned["data"]["sources"]] == ["training", "batch"]
    assert learned["data"]["rows"] == 400 + 120


def test_predict_writes_predictions(run, tmp_path):
    run("pipeline", "run")
    tiny_frame(20, seed=5).drop(columns=["label"]).to_csv(tmp_path / "in.csv", index=False)
    result = run("models", "predict", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet"))
    assert result.exit_code == 0, result.output
    import pandas as pd

    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["prediction", "probability_no", "probability_yes"] and len(out) == 20


@pytest.mark.parametrize(
    ("prepare", "args", "message"),
    [
        (None, ["models", "show", "9"], "error: model tiny has no version 9; versions: 1"),
        (None, ["models", "rollback"], "error: cannot roll back tiny: v1 is in production, no earlier version was in production before it"),
        ("in.csv", ["models", "predict", "--input", "in.csv"], "error: input is missing 1 column(s) the model needs: colour"),
        (None, ["models", "predict", "--input", "nope.csv"], "error: nope.csv: file not found"),
        ("empty.csv", ["models", "predict", "--input", "empty.csv"], "error: the input has no rows to score"),
    ],
)
def test_failed_operations_exit_1_with_one_line(run, tmp_path, prepare, args, message):
    run("pipeline", "run")
    if prepare == "in.csv":
        tiny_frame(5).drop(columns=["colour"]).to_csv(tmp_path / "in.csv", index=False)
    elif prepare == "empty.csv":
        (tmp_path / "empty.csv").write_text("x1,x2,colour\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message]


def test_failed_run_exits_1_and_names_the_stage(run, tiny_project):
    (tiny_project / "data.csv").unlink()
    result = CliRunner().invoke(cli, ["pipeline", "run"])
    assert result.exit_code == 1
    assert "FAILED in train: no data file matches data.path = 'data.csv'" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MLOPS_LOG_LEVEL", "LOUD", "settings error: MLOPS_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'; e.g. MLOPS_LOG_LEVEL=DEBUG"),
    ],
)
def test_bad_settings_exit_2_with_the_variable_named(run, monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 2
    assert result.output.strip() == expected


def test_settings_from_env_file(run, tmp_path, monkeypatch):
    (tmp_path / "custom.env").write_text(f"MLOPS_DATA_DIR={tmp_path / 'elsewhere'}\n")
    result = run("--env-file", str(tmp_path / "custom.env"), "pipeline", "run")
    assert result.exit_code == 0
    assert (tmp_path / "elsewhere" / "mlflow" / "mlflow.db").is_file()  # the embedded registry, where .env said
    missing = CliRunner().invoke(cli, ["--env-file", "nope.env", "models", "list"])
    assert missing.exit_code == 2 and "env file nope.env not found" in missing.output


def test_usage_error_exits_2(run):
    assert CliRunner().invoke(cli, ["models", "show", "abc"]).exit_code == 2
    assert CliRunner().invoke(cli, ["nonsense"]).exit_code == 2


def test_a_version_is_spelled_the_same_way_everywhere(run, tmp_path):
    run("pipeline", "run")
    run("pipeline", "run")
    shown = {spelling: json.loads(run("models", "show", spelling, "--json").output)["version"]
             for spelling in ("1", "v1", "tiny:v1", "tiny:1", "production", "tiny:production")}
    assert shown == {"1": 1, "v1": 1, "tiny:v1": 1, "tiny:1": 1, "production": 2, "tiny:production": 2}
    assert run("models", "promote", "v1").output.strip() == "tiny v1 is in production"
    tiny_frame(5, seed=3).drop(columns=["label"]).to_csv(tmp_path / "in.csv", index=False)
    scored = CliRunner().invoke(cli, ["models", "predict", "v2", "--input", "in.csv", "--output", "out.csv"])
    assert scored.exit_code == 0 and "from tiny v2" in scored.output
    tiny_frame(40, seed=4).to_csv(tmp_path / "batch.csv", index=False)
    for reference, version in (("v1", "v2"), ("tiny:v2", "production")):
        checked = run("drift", "check", "--reference", reference, "--current", "batch.csv", "--version", version,
                      "--json")
        assert checked.exit_code == 0, checked.output
        assert json.loads(checked.output)["features"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "show", "v"], "'v' is not a model version; write 3, v3, name:v3 or production"),
        (["drift", "check", "--reference", "v1", "--current", "b.csv", "--model", "v1"],
         "--model names a model; for the version 'v1' use --version v1"),
        (["models", "list", "--project", "nowhere"], "error: model project folder nowhere does not exist; pass --project DIR"),
        (["status", "--project", "."], "error: . has no mlops.toml; pass --project with the model project's folder"),
    ],
)
def test_bad_references_and_projects_exit_2_with_one_line(run, args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_project_is_taken_by_every_command_that_reads_models(run, tmp_path, tiny_project, monkeypatch):
    monkeypatch.delenv("MLOPS_PROJECT_DIR")  # the default is now the bundled example, not tiny
    assert run("pipeline", "run", "--project", str(tiny_project)).exit_code == 0
    listed = json.loads(run("models", "list", "--project", str(tiny_project), "--json").output)
    assert [(v["model"], v["version"]) for v in listed] == [("tiny", 1)]
    shown = json.loads(run("models", "show", "v1", "--project", str(tiny_project), "--json").output)
    assert shown["model"] == "tiny"
    traced = run("trace", "v1", "--project", str(tiny_project), "--json")
    # stdout only: stderr says that no git repository holds the project
    assert traced.exit_code == 0 and json.loads(traced.stdout)["from"] == {"kind": "model", "id": "tiny:v1"}


def test_trace_prints_a_tree_from_the_reference_outward():
    from bot.cli import _lineage_tree
    from bot.store import Link

    def link(src: str, relation: str, dst: str) -> Link:
        (src_kind, src_id), (dst_kind, dst_id) = src.split(":", 1), dst.split(":", 1)
        return Link(src_kind=src_kind, src_id=src_id, relation=relation, dst_kind=dst_kind, dst_id=dst_id,
                    created_at=datetime(2026, 12, 3, tzinfo=UTC))

    sha = "e83da5beeb98c27507a85983dc594c87c014ccbc"
    links = [link("model:churn:v2", "produced_by", "run:run-1"), link("ticket:7", "closed_by", "model:churn:v2"),
             link("run:run-1", "built_from", f"commit:acme/churn@{sha}"), link("run:run-1", "for_ticket", "ticket:7")]
    assert _lineage_tree(("model", "churn:v2"), links) == [
        "model:churn:v2",
        "├── produced_by → run:run-1",
        "│   └── built_from → commit:e83da5beeb98",  # the repository is the deployment's own
        "└── ← closed_by ticket:7",  # reached from the model first: shown once, under it
    ]


def test_stage_progress_shows_the_running_stage_with_elapsed_time_and_stays_quiet_when_off():
    import io
    from types import SimpleNamespace

    from bot.cli import _StageProgress

    def at(*statuses):
        return SimpleNamespace(stages=[SimpleNamespace(name=n, status=s) for n, s in statuses])

    moments = iter([0.0, 0.0, 65.0, 65.0, 65.0, 66.0])
    out = io.StringIO()
    progress = _StageProgress(enabled=True, stream=out, tick_s=3600)
    progress._now = lambda: next(moments)
    with progress:
        progress.update(at(("train", "running")))
        progress.update(at(("train", "running")))  # no change: nothing drawn
        progress.update(at(("train", "done"), ("package", "running")))
    assert out.getvalue().split("\r\x1b[K") == ["", "  train ... 0s", "  train ... 65s\n", "  package ... 0s",
                                                "  package ... 1s\n"]
    quiet = io.StringIO()
    with _StageProgress(enabled=False, stream=quiet) as off:
        off.update(at(("train", "running")))
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(("args", "exit_code"), [(["models", "list"], 0), (["models", "list", "--json"], 0),
                                                 (["models", "show", "v1"], 1), (["events", "list"], 0),
                                                 (["trace", "v1"], 1), (["models", "predict", "--input", "x.csv"], 1)])
def test_read_only_commands_create_nothing(run, tmp_path, args, exit_code):
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code, result.output
    assert result.output.strip() == "[]" if "--json" in args else "nothing here yet: no mlops-bot data folder" in result.output
    assert sorted(tmp_path.rglob("*")) == before  # no .mlops, no registry, no state database
