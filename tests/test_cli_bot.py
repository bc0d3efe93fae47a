"""The bot's commands end to end through the CLI, on embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import (
    PROJECT,
    open_embedded_registry,
    seed_embedded_mlflow,
    tiny_frame,
)


@pytest.fixture
def bot(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # No MLOPS_ setting of the developer's reaches here: conftest's autouse fixture removed them.
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(repo / PROJECT))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_DRIFT_COOLDOWN_S", "0")
    seed_embedded_mlflow(tmp_path / "state")

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, list(args), input=input)

    return invoke


def write_batch(tmp_path, name: str, shift: float, *, labels: bool = False) -> None:
    frame = tiny_frame(300, seed=11, x1_shift=shift)
    if not labels:
        frame = frame.drop(columns=["label"])
    (tmp_path / "state" / "batches").mkdir(parents=True, exist_ok=True)
    frame.to_csv(tmp_path / "state" / "batches" / name, index=False)


def test_the_whole_loop_from_the_command_line(bot, tmp_path):
    first = bot("run", "--once", "--json")
    assert first.exit_code == 0, first.output
    status = json.loads(bot("status", "--json").output)
    assert status["production"]["version"] == 1 and status["open_tickets"] == []

    write_batch(tmp_path, "b1.csv", shift=1.5, labels=True)  # labelled: the retrain learns from it
    assert bot("run", "--once").exit_code == 0
    tickets = json.loads(bot("board", "list", "--json").output)
    assert len(tickets) == 1 and tickets[0]["state"] == "open"
    ticket = tickets[0]["id"]

    answered = bot("console", "--on", f"ticket:{ticket}", input="/status\n/retrain new data\n:quit\n")
    assert answered.exit_code == 0, answered.output
    assert "Retraining **tiny**" in answered.output
    log = (tmp_path / "state" / "logs" / "console.log").read_text()  # the log goes to a file, not between messages
    assert " INFO " in log and " INFO " not in answered.output
    shown = json.loads(bot("board", "show", str(ticket), "--json").output)
    assert shown["state"] == "closed"
    assert any("Closing this ticket" in c["body"] for c in shown["comments"])

    traced = json.loads(bot("trace", f"ticket:{ticket}", "--json").output)
    assert {"from": f"ticket:{ticket}", "relation": "closed_by", "to": "model:tiny:v2"} in traced["links"]
    back = json.loads(bot("trace", "v2", "--json").output)
    assert any(link["to"] == f"ticket:{ticket}" for link in back["links"])
    # v1's run (the first model) and v2's (the retrain) were built from one commit: one object, one name.
    built = [link for link in back["links"] if link["relation"] == "built_from"]
    assert len(built) == 2 and len({link["to"] for link in built}) == 1
    sha = built[0]["to"].rpartition("@")[2]
    tree = bot("trace", f"commit:{sha[:12]}")  # as the tree prints it
    assert tree.exit_code == 0, tree.output
    assert tree.output.splitlines()[0] == f"commit:{sha[:12]}" and tree.output.count("← built_from") == 2

    events = json.loads(bot("events", "list", "--json").output)
    assert {"command", "drift_found", "run_finished"} <= {e["kind"] for e in events}
    assert all(effect["status"] == "done" for e in events for effect in e["effects"])


def test_board_comment_runs_the_command(bot, tmp_path):
    bot("run", "--once")
    write_batch(tmp_path, "b1.csv", shift=3.0)
    bot("run", "--once")
    result = bot("board", "comment", "1", "/drift")
    assert result.exit_code == 0
    assert "Drift check of **tiny** v1" in json.dumps(json.loads(bot("board", "show", "1", "--json").output))
    missing = bot("board", "show", "42")
    assert missing.exit_code == 1 and "there is no ticket:42" in missing.output


def test_doctor_reports_problems_with_fixes(bot, repo, tmp_path, monkeypatch):
    healthy = bot("doctor")
    assert healthy.exit_code == 0 and "all checks passed" in healthy.output, healthy.output
    (repo / PROJECT / "data.csv").unlink()
    broken = bot("doctor")
    assert broken.exit_code == 1
    assert "✗ training data: no data file matches" in broken.output and "fix: check data.path" in broken.output


def test_doctor_lists_the_repositorys_model_projects_and_names_one_it_cannot_read(bot, repo):
    other = repo / "models" / "fraud"
    other.mkdir(parents=True)
    (other / "mlops.toml").write_text((repo / PROJECT / "mlops.toml").read_text().replace("[project]", "[projekt]"))

    result = bot("doctor")

    assert result.exit_code == 1 and "Traceback" not in result.output
    served = next(line for line in result.output.splitlines() if line.startswith("✓ model projects in "))
    assert served.endswith(f"({PROJECT}) served")  # models/fraud is not among them: it cannot be read
    broken = next(line for line in result.output.splitlines() if line.startswith("✗ model project models/fraud: "))
    assert broken.endswith("/repo/models/fraud/mlops.toml: missing key 'project'; unknown key 'projekt'")
    assert "fix: fix that folder's mlops.toml" in result.output and "1 problem(s) found" in result.output


def test_doctor_names_damaged_state_and_registry_and_unfit_metrics(bot, repo, tmp_path):
    # Each in a process of its own, as people run them: an index left open here would be written
    # back over the damage when it is closed.
    subprocess.run([sys.executable, "-m", "bot", "pipeline", "run"], cwd=tmp_path, capture_output=True, check=True)
    (tmp_path / "state" / "state.db").write_bytes(b"not a database " * 100)
    (tmp_path / "state" / "mlflow" / "mlflow.db").write_bytes(b"not a database " * 100)  # the embedded registry
    toml = repo / PROJECT / "mlops.toml"
    toml.write_text(toml.read_text().replace('primary = "roc_auc"', 'primary = "r2"'))
    result = subprocess.run([sys.executable, "-m", "bot", "doctor"], cwd=tmp_path, capture_output=True, text=True)
    result.output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    assert any(line.startswith("✗ metrics suit the model's task: ") and "r2" in line for line in lines)
    state = lines.index(next(line for line in lines if line.startswith("✗ state database: ")))
    assert "file is not a database" in lines[state] and "damaged or not mlops-bot's" in lines[state + 1]
    assert any(line.startswith("✗ model registry: ") for line in lines), result.output
    assert "3 problem(s) found" in result.output


def test_drift_check_command(bot, tmp_path):
    bot("run", "--once")
    write_batch(tmp_path, "b1.csv", shift=3.0)
    batch = str(tmp_path / "state" / "batches" / "b1.csv")
    plain = bot("drift", "check", "--reference", "v1", "--current", batch, "--report-dir", str(tmp_path / "r"))
    assert plain.exit_code == 0 and "x1" in plain.output
    assert (tmp_path / "r" / "report.png").is_file()
    failing = bot("drift", "check", "--reference", "v1", "--current", batch, "--fail-on-drift", "--json")
    assert failing.exit_code == 3 and json.loads(failing.output)["drifted"] is True
    bad = bot("drift", "check", "--reference", "v1", "--current", str(tmp_path / "nope.csv"))
    assert bad.exit_code == 1 and bad.output.startswith("error: ")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("MLOPS_POLL_INTERVAL_S=soon", "settings error: MLOPS_POLL_INTERVAL_S: Input should be a valid number"),
        ("MLOPS_DRIFT_MIN_SEVERITY=huge", "settings error: MLOPS_DRIFT_MIN_SEVERITY: Input should be 'low', 'medium' or 'high'"),
        ('MLOPS_TICKET_PATTERNS=["#\\\\d+"]', "must have exactly one group"),
    ],
)
def test_a_settings_file_with_bad_values(bot, tmp_path, line, message):
    (tmp_path / ".env").write_text(line + "\n")
    result = bot("status")
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_locked_state_database_is_reported(bot, tmp_path):
    bot("run", "--once")
    holder = sqlite3.connect(tmp_path / "state" / "state.db", timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = bot("run", "--once")
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1
    assert "is locked by another process" in result.output


def test_a_state_database_from_a_newer_bot_is_refused(bot, tmp_path):
    bot("run", "--once")
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        conn.execute("update schema_info set value = '99' where name = 'schema_version'")
    result = bot("status")
    assert result.exit_code == 1 and "upgrade mlops-bot" in result.output


def test_sigterm_stops_the_running_bot_cleanly(repo, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
           "MLOPS_PROJECT_DIR": str(repo / PROJECT), "MLOPS_DATA_DIR": str(tmp_path / "state")}
    registry = open_embedded_registry(tmp_path / "state")  # the bot's (seeded before it starts), read while it writes
    process = subprocess.Popen([sys.executable, "-m", "bot", "run"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not registry.versions("tiny"):
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "finishing the effect in flight" in err and "mlops-bot stopped" in err


def test_console_refuses_a_ticket_or_change_that_does_not_exist(bot):
    bot("run", "--once")
    missing_ticket = bot("console", "--on", "ticket:9", input=":quit\n")
    assert missing_ticket.exit_code == 1 and "there is no ticket:9" in missing_ticket.output
    missing_change = bot("console", "--on", "change:99", input=":quit\n")
    assert missing_change.exit_code == 1 and "there is no change 99" in missing_change.output
    moved = bot("console", "--on", "change:1", input=":on ticket:5\n:quit\n")
    assert moved.exit_code == 0 and "there is no ticket:5" in moved.output


def test_run_outside_a_git_repository_says_merges_are_not_watched(bot, tiny_project, monkeypatch, caplog):
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(tiny_project))  # tmp_path/tiny: no repository holds it
    assert bot("run", "--once").exit_code == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"no git repository holds {tiny_project}: merged changes will not be watched" in w for w in warned)


def test_run_in_a_git_repository_does_not_warn_about_it(bot, caplog):
    assert bot("run", "--once").exit_code == 0
    assert not any("no git repository" in r.getMessage() for r in caplog.records)


def test_board_tick_ticks_a_box_of_the_checklist_as_the_console_user(bot, tmp_path):
    assert bot("run", "--once").exit_code == 0
    write_batch(tmp_path, "b1.csv", shift=1.5, labels=True)  # labelled: the retrain learns from it
    assert bot("run", "--once").exit_code == 0
    [ticket] = [t["id"] for t in json.loads(bot("board", "list", "--json").output)]
    unknown = bot("board", "tick", str(ticket), "Deploy v9")
    assert unknown.exit_code == 1 and len(unknown.output.strip().splitlines()) == 1
    assert "no box 'Deploy v9'" in unknown.output and "“Retrain now” (retrain)" in unknown.output
    missing = bot("board", "tick", "42", "Retrain now")
    assert (missing.exit_code, missing.output.strip()) == (
        1, "error: there is no ticket:42; see `mlops-bot board list --all`")

    ticked = bot("board", "tick", str(ticket), "retrain now")  # the start of its label, in any case
    assert ticked.exit_code == 0, ticked.output
    bot("run", "--once")
    shown = json.loads(bot("board", "show", str(ticket), "--json").output)
    assert shown["state"] == "closed", shown  # retrained on the labelled rows, measured gone
    assert any("ticked" in c["body"] and "Retrain now" in c["body"] for c in shown["comments"]), shown["comments"]
    runs = json.loads(bot("events", "list", "--json").output)
    assert sum(1 for e in runs if e["kind"] == "checklist_ticked") == 1
