"""Secrets: a whole scenario with known fake tokens and secrets in the settings, failures included
(a fifth of the calls fail, webhooks arrive with bad signatures, a setting is wrong), then every
place a secret could leak is searched: each log line (caplog in this process, and ``mlops-bot
run``'s and ``mlops-bot doctor``'s output), everything in the emulators (comments, issues,
statuses, work items, messages, and every request body the bot sent), and every byte under the
bot's data folder (the state database, reports, registry, checkouts). None may hold any secret,
nor its base64 or URL-encoded form.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, is_dataclass
from pathlib import Path

from starlette.testclient import TestClient

from tests.reliability.world import Driver, chatter, quick_retries, signed_headers

GITHUB_TOKEN = "ghp_R3liab1l1tyFakeT0kenAbCdEfGhIjKlMnOp12"
SLACK_BOT_TOKEN = "xoxb-1111111111-2222222222-R3liab1l1tyFakeSlackTok"
SLACK_SIGNING_SECRET = "5ec2e75ign1ngS3cretR3liab1l1ty0ne"
AZURE_PAT = "azpatr3liab1l1tyfake0123456789abcdefghijklmnopqrstuv"  # 52 characters, as Azure's are
GITHUB_WEBHOOK_SECRET = "gh-hook-S3cret-R3liab1l1ty-7f3a"
AZURE_WEBHOOK_SECRET = "az-hook-S3cret-R3liab1l1ty-9c1d"
SECRETS = [GITHUB_TOKEN, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, AZURE_PAT, GITHUB_WEBHOOK_SECRET, AZURE_WEBHOOK_SECRET]


def _forms(secret: str) -> list[str]:
    """The secret as it could show up: itself, URL-encoded, in basic authentication's base64."""
    forms = {secret, urllib.parse.quote(secret, safe="")}
    for credentials in (f":{secret}", f"user:{secret}", f"anyone:{secret}", secret):
        forms.add(base64.b64encode(credentials.encode()).decode())
    forms.add(secret[8:-4])  # a recognisable middle part: a secret shown cut short is still shown
    return sorted(forms)


def _leaks(where: str, text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [f"{where}: {secret[:6]}... as {form[:10]}..." for secret in SECRETS for form in _forms(secret)
            if form.encode() in data]


def _plain(value) -> str:
    """Any emulator object as text: dataclasses as dicts, the rest with repr."""
    if is_dataclass(value):
        return json.dumps(asdict(value), default=str)
    return repr(value)


def test_no_secret_reaches_a_log_a_message_a_ticket_a_report_or_the_database(world, caplog, report):
    from bot.app import build
    from bot.settings import Settings
    from bot.webhooks import create_app

    world.github.add_token(GITHUB_TOKEN, "mlops-bot[bot]", scopes=("repo", "workflow"))
    world.slack.add_token(SLACK_BOT_TOKEN, "mlops-bot")
    world.azure.add_pat(AZURE_PAT, "mlops-bot@example.com")
    state_url = f"sqlite:///{world.data_dir / 'state.db'}"
    secrets = {"github_token": GITHUB_TOKEN, "slack_bot_token": SLACK_BOT_TOKEN,
               "slack_signing_secret": SLACK_SIGNING_SECRET, "azure_devops_pat": AZURE_PAT,
               "github_webhook_secret": GITHUB_WEBHOOK_SECRET, "azure_devops_webhook_secret": AZURE_WEBHOOK_SECRET}
    leaks: list[str] = []
    caplog.set_level(logging.DEBUG)
    phases = {"start": time.monotonic()}

    # 1. The bot in this process, every call failing now and then, webhooks good and bad.
    app = build(Settings(**world.settings_values(state_url, **secrets)), out=None)
    quick_retries(app)
    driver = Driver(app, seen_all=lambda: not world.unseen(state_url))
    web = TestClient(create_app(app), raise_server_exceptions=False)
    try:
        driver.settle()
        world.fail_a_fifth(seed=50)
        pull = world.open_pull("Tune it")
        issue = world.open_issue("Drift?")
        for n in range(12):
            author, body = chatter(__import__("random").Random(n))
            comment_id = world.comment(pull if n % 2 else issue, author, body)
            raw, headers = world.webhook_for(comment_id, GITHUB_WEBHOOK_SECRET)
            web.post("/webhooks/github", content=raw, headers=headers)
            web.post("/webhooks/github", content=raw, headers=signed_headers(raw, "wrong", event="issue_comment",
                                                                           delivery="x"))
        web.post("/webhooks/azure-devops", content=b"{}", headers={"Authorization": "Basic " + base64.b64encode(
            b"u:wrong").decode()})
        web.post("/webhooks/azure-devops", content=b"not json", headers={"Authorization": "Basic " + base64.b64encode(
            f"u:{AZURE_WEBHOOK_SECRET}".encode()).decode()})
        web.post("/webhooks/slack/commands", content=b"text=status", headers={"X-Slack-Signature": "v0=bad",
                                                                             "X-Slack-Request-Timestamp": "1"})
        world.comment(issue, "bob", "/retrain with secrets around")
        world.merge(pull)
        world.batch("b1.csv", shift=2.5, seed=1)
        driver.settle()
    finally:
        web.close()
        app.store.close()
    try:  # a wrong setting: the message names the variable, never the values around it
        Settings(**world.settings_values(state_url, **secrets) | {"azure_devops_project": None})
    except ValueError as error:
        leaks += _leaks("settings error", str(error))

    phases["in process"] = time.monotonic()
    # 2. ``mlops-bot run`` and ``mlops-bot doctor``, settings from the environment, with failures.
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "GITHUB_", "SLACK_", "AZURE_DEVOPS_"))}
    env = keep | world.env(state_url, GITHUB_TOKEN=GITHUB_TOKEN, SLACK_BOT_TOKEN=SLACK_BOT_TOKEN,
                           SLACK_SIGNING_SECRET=SLACK_SIGNING_SECRET, AZURE_DEVOPS_EXT_PAT=AZURE_PAT,
                           GITHUB_WEBHOOK_SECRET=GITHUB_WEBHOOK_SECRET, AZURE_DEVOPS_WEBHOOK_SECRET=AZURE_WEBHOOK_SECRET,
                           MLOPS_POLL_INTERVAL_S="0.5", MLOPS_DELIVER_INTERVAL_S="0.3", MLOPS_MONITOR_INTERVAL_S="1",
                           MLOPS_LOG_LEVEL="DEBUG")
    script = Path(sys.executable).with_name("mlops-bot")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot"]
    world.comment(issue, "rita", "/deploy 1")
    world.comment(pull, "bob", "/drift")
    world.batch("b2.csv", shift=3.0, seed=2)
    world.fail_a_fifth(seed=51, rate=0.05)  # fewer: this bot backs off the usual way, from 2 s up
    run = subprocess.Popen([*command, "run"], cwd=world.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 40  # caught up, or long enough to have met failures and logged them
    while time.monotonic() < deadline and (world.unseen(state_url) or _pending(state_url)):
        time.sleep(0.5)
    from tests.reliability.world import read_store

    waiting = world.unseen(state_url) + [e["key"] for e in read_store(state_url)[1] if e["status"] == "pending"]
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    phases["mlops-bot run"] = time.monotonic()
    leaks += _leaks("mlops-bot run output", output)
    world.heal()
    world.github.faults.add(r"GET .*", "500", times=None)  # doctor meets a failing GitHub too
    doctor = subprocess.run([*command, "doctor"], cwd=world.root, env=env, capture_output=True, timeout=120)
    leaks += _leaks("mlops-bot doctor output", doctor.stdout + doctor.stderr)
    bad = subprocess.run([*command, "run", "--once"], cwd=world.root, timeout=120, capture_output=True,
                         env=env | {"MLOPS_DRIFT_MIN_SEVERITY": "catastrophic"})
    leaks += _leaks("settings error output", bad.stdout + bad.stderr)
    assert bad.returncode == 2

    phases["doctor"] = time.monotonic()
    # 3. Every log line of this process, and the exceptions logged with them.
    for record in caplog.records:
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        leaks += _leaks(f"log line {record.name}", text + repr(record.__dict__))

    # 4. Everything in the emulators, and every request the bot sent them.
    gh, slack, azure = world.github.state, world.slack.state, world.azure.state
    for repo in gh.repos.values():
        for thing in [*repo.issues.values(), *repo.comments.values(), *repo.statuses]:
            leaks += _leaks(f"github {type(thing).__name__}", _plain(thing))
    for channel in slack.channels.values():
        for message in channel.index.values():
            leaks += _leaks("slack message", _plain(message))
    leaks += _leaks("slack ephemeral", repr(slack.ephemerals))
    for item in azure.work_items.values():
        leaks += _leaks(f"work item {item.id}", _plain(item))
    for emulator in (world.github, world.slack, world.azure):
        for entry in emulator.log.entries:
            leaks += _leaks(f"{emulator.service} request body", json.dumps(entry.body, default=str))

    # 5. Every byte the bot keeps: the state database, reports, registry, checkouts.
    files = [path for path in world.data_dir.rglob("*") if path.is_file()]
    for path in files:
        leaks += _leaks(f"file {path.relative_to(world.data_dir)}", path.read_bytes())

    reports = [p for p in files if "reports" in p.parts]
    report(f"{len(SECRETS)} secrets searched for in {len(caplog.records)} log records, "
           f"{len(output.splitlines())} lines of `mlops-bot run`, {len(files)} files ({len(reports)} reports), "
           f"{sum(len(e.log) for e in (world.github, world.slack, world.azure))} requests, "
           f"faults injected {sum(world.faults_fired.values())}: leaks: {len(leaks)}; still waiting {waiting[:4]}; "
           + ", ".join(f"{name} {phases[name] - before:.0f} s" for before, name in zip(phases.values(), list(phases)[1:])))
    assert not leaks, sorted(set(leaks))[:30]
    assert reports and files and caplog.records and output  # the search had something to search
    assert run.returncode == 0, output[-3000:]


def _pending(state_url: str) -> bool:
    from tests.reliability.world import read_store

    try:
        _events, effects = read_store(state_url)
    except Exception:  # noqa: BLE001 - being written by the bot right now
        return True
    return any(e["status"] == "pending" for e in effects)
