"""Slack: messages per episode over a full lifecycle, and slash-command acknowledgement latency.

1. A full lifecycle on embedded defaults with chat on the Slack emulator: the first model, a merge
   and its run, two drifted batches, the retrain ticket, `/retrain`, the ticket closed. Counted from
   the emulator: new top-level messages per episode (goal: at most one), the rest being updates and
   thread replies.
2. `/mlops status` sent N times to `mlops-bot serve`'s app on a real HTTP server (uvicorn), each
   timed from the POST to its ephemeral answer (goal: p99 under 300 ms).
3. N clicks on a deployment's *Roll back* button (POST /webhooks/slack/interactions) by people the
   permissions (users, a user group, ``*``) do not allow, each timed to its 200 (Slack's limit: 3 s).

    python benchmarks/slack_bench.py [--requests 300]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402

from bot.app import build  # noqa: E402
from common import git, quantile, settle  # noqa: E402  (benchmarks/common.py)
from bot.settings import Settings  # noqa: E402
from integrations.ports import Target  # noqa: E402
from tests.emulators.framework import free_port  # noqa: E402
from tests.emulators.slack import SlackEmulator  # noqa: E402

SIGNING_SECRET = "bench-signing-secret"
CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")


def lifecycle(emulator, root: Path) -> dict[str, tuple[int, int, int]]:
    """(top-level messages, updates in place, thread replies) per channel after a whole lifecycle."""
    repo = root / "repo"
    shutil.copytree(REPO_ROOT / "examples" / "breast_cancer", repo / "model")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "the model")
    settings = Settings(project_dir=repo / "model", data_dir=root / "state", slack_bot_token=emulator.token,
                        slack_api_url=emulator.base_url, drift_cooldown_s=0)
    app = build(settings, out=None)
    settle(app)  # the first model
    (repo / "model" / "notes.md").write_text("tuned\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Tune the model")
    settle(app)  # a merge and its run
    for n in (1, 2):
        subprocess.run([sys.executable, str(repo / "model" / "make_batch.py"), "--shift", "2", "--seed", str(n),
                        "--output", str(settings.batches_dir / f"batch-{n}.csv")], check=True, capture_output=True)
        settle(app)
    ticket = app.tracker.tickets(state="open")[0]
    app.scm.add_comment(Target("ticket", app.scm.repo, ticket.id), "/retrain")
    settle(app)
    counts = {}
    for channel in CHANNELS:
        messages = emulator.state.messages(channel)
        counts[channel] = (len(messages), sum(m.updated for m in messages), sum(len(m.replies) for m in messages))
    app.store.close()
    return counts



def slash_latency(emulator, app_settings_root: Path, count: int) -> tuple[list[float], list[float]]:
    """Acknowledgement times of ``/mlops status``, then of refused button clicks."""
    import uvicorn

    from bot.webhooks import create_app

    repo = app_settings_root / "repo"
    settings = Settings(project_dir=repo / "model", data_dir=app_settings_root / "state",
                        slack_bot_token=emulator.token, slack_api_url=emulator.base_url,
                        slack_signing_secret=SIGNING_SECRET,
                        slack_permissions={"*": "read", "@ml-leads": "admin", "U_MAYA": "maintain"})
    emulator.state.add_usergroup("ml-leads", members=["carol"])
    app = build(settings, out=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.05)
    session = requests.Session()
    session.trust_env = False  # loopback only, never a proxy
    latencies = []
    try:
        for n in range(count):
            body = urllib.parse.urlencode({"command": "/mlops", "text": "status", "user_id": f"U{n}",
                                           "channel_id": "C1", "trigger_id": f"t{n}"}).encode()
            stamp = str(int(time.time()))
            signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body,
                                         hashlib.sha256).hexdigest()
            start = time.perf_counter()
            answer = session.post(f"http://127.0.0.1:{port}/webhooks/slack/commands", data=body, timeout=10, headers={
                "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded"})
            latencies.append(time.perf_counter() - start)
            assert answer.status_code == 200 and answer.json()["response_type"] == "ephemeral", answer.text
        deployment = [m for m in emulator.state.messages("mlops-pipeline")
                      if any(b["type"] == "actions" for b in m.blocks or ())][-1]
        clicks = []
        for n in range(count):
            payload = emulator.state.click("mlops-pipeline", deployment.ts, "mlops:rollback", f"person-{n % 20}")
            body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
            stamp = str(int(time.time()))
            signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body,
                                         hashlib.sha256).hexdigest()
            start = time.perf_counter()
            answer = session.post(f"http://127.0.0.1:{port}/webhooks/slack/interactions", data=body, timeout=10,
                                  headers={"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
                                           "Content-Type": "application/x-www-form-urlencoded"})
            clicks.append(time.perf_counter() - start)
            assert answer.status_code == 200, answer.text
    finally:
        server.should_exit = True
        serving.join(timeout=30)  # let the ephemeral answers sent after each response finish
    return latencies, clicks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SlackEmulator() as emulator:
        for channel in CHANNELS:
            emulator.state.add_channel(channel)
        root = Path(tmp)
        counts = lifecycle(emulator, root)
        episodes = {"mlops-pipeline": "the first model, the merge", "mlops-alerts": "the drift episode, its /retrain and close",
                    "mlops-digest": "the day"}
        expected = {"mlops-pipeline": 2, "mlops-alerts": 1, "mlops-digest": 1}
        print("full lifecycle (first model, merge + run, 2 drifted batches, ticket, /retrain, ticket closed):")
        for channel, (top, updates, replies) in counts.items():
            print(f"  #{channel}: {top} top-level message(s) ({episodes[channel]}), {updates} update(s) in place, "
                  f"{replies} thread replies (goal: at most one per episode: "
                  f"{'met' if top <= expected[channel] else 'NOT met'})")
        latencies, clicks = slash_latency(emulator, root, args.requests)
        p50, p99 = statistics.median(latencies) * 1000, quantile(latencies, 99) * 1000
        print(f"/mlops status acknowledged over {len(latencies)} requests: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"(goal p99 < 300 ms: {'met' if p99 < 300 else 'NOT met'})")
        p50, p99 = statistics.median(clicks) * 1000, quantile(clicks, 99) * 1000
        print(f"Roll back clicks answered over {len(clicks)} requests: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"(Slack's limit 3 s; goal p99 < 300 ms: {'met' if p99 < 300 else 'NOT met'})")


if __name__ == "__main__":
    main()
