"""End to end: from a webhook delivery to its effects reaching GitHub, at a paced rate.

`mlops-bot serve`'s web app runs on uvicorn on a free loopback port with the bot's jobs beside it
(the scheduler's outbox thread), against the GitHub emulator. A sender posts signed
`issue_comment` deliveries (each a new `/status` comment) at a fixed rate, open loop: each is sent
at its scheduled time whether or not the earlier ones were answered. Each delivery is timed from
the moment its POST starts to the moment the emulator logged

* the 👀 reaction on the comment (the acknowledgement), and
* the reply comment (the answer, found by the hidden marker naming the comment),

and the p50, p99 and max of each are printed for each rate (default 10 and 100 events per second).
The emulator's request log stamps each request with the wall clock when it was answered, so
nothing polls the bot. Loopback only; the figures include the emulator's own time.

    python benchmarks/e2e_bench.py [--rates 10,100] [--seconds 15]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402

from bot.app import build  # noqa: E402
from bot.settings import Settings  # noqa: E402
from common import quantile  # noqa: E402  (benchmarks/common.py)
from tests.emulators.framework import free_port  # noqa: E402
from tests.emulators.github import GitHubEmulator  # noqa: E402

SECRET = "bench-secret"
_MARKER = re.compile(r"mlops-bot:cmd:github:[^:]+/[^:]+:(\d+):")



class Bench:
    def __init__(self, emulator: GitHubEmulator, root: Path):
        import uvicorn

        from bot.scheduler import Runner
        from bot.webhooks import create_app

        self.emulator, self.repo = emulator, "acme/e2e"
        emulator.state.add_repo(self.repo)
        emulator.state.add_collaborator(self.repo, "bob", "write")
        project = root / "project"
        shutil.copytree(REPO_ROOT / "examples" / "breast_cancer", project)
        # Polling far apart: the webhook is the only way in, as in a deployment that uses them. The
        # per-poll-cycle request budget is lifted (where there is one): with polls an hour apart it
        # would end the run after its first thousand requests, which measures the budget, not latency.
        budget = {"github_cycle_budget": 0} if "github_cycle_budget" in Settings.model_fields else {}
        settings = Settings(_env_file=None, project_dir=project, data_dir=root / "data",
                            github_repository=self.repo, github_token=emulator.token,
                            github_api_url=emulator.base_url, github_webhook_secret=SECRET,
                            poll_interval_s=3600, monitor_interval_s=3600, **budget)
        self.app = build(settings, out=None)
        self.app.run_once()  # the first model, so /status has something to say
        self.runner = Runner(self.app)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.app, wake=self.runner.wake), host="127.0.0.1",
                                                    port=self.port, log_level="warning", access_log=False))
        threading.Thread(target=self.server.run, daemon=True).start()
        self.runner.start()
        while not self.server.started:
            time.sleep(0.05)
        self.number = emulator.state.open_issue(self.repo, "End to end", "", "bob")
        self.deliveries = 0
        self._local = threading.local()

    def stop(self) -> None:
        self.server.should_exit = True
        self.runner.stop()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.trust_env = False  # loopback only, never a proxy
        return self._local.session

    def _send(self, n: int, due: float) -> tuple[int, float, int]:
        """Post delivery ``n`` at ``due`` (time.time()); returns (comment id, sent at, status)."""
        comment_id = self.emulator.state.add_comment(self.repo, self.number, "bob", "/status")
        comment = self.emulator.state.comment(comment_id)
        stamp = comment.created_at.isoformat()
        payload = {"action": "created", "repository": {"full_name": self.repo},
                   "issue": {"number": self.number, "title": "End to end"},
                   "comment": {"id": comment_id, "body": comment.body, "user": {"login": "bob", "type": "User"},
                               "created_at": stamp, "updated_at": stamp,
                               "html_url": f"https://github.com/{self.repo}/issues/{self.number}"
                                           f"#issuecomment-{comment_id}"}}
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        sent = time.time()
        response = self._session().post(f"http://127.0.0.1:{self.port}/webhooks/github", data=body, timeout=30,
                                        headers={"X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": f"e2e-{n}",
                                                 "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
        return comment_id, sent, response.status_code

    def run(self, rate: float, seconds: float) -> dict[str, list[float] | int]:
        count = max(1, int(rate * seconds))
        start = time.time() + 0.5
        first = self.deliveries
        self.deliveries += count
        # Enough senders that a slow answer never holds back the next scheduled delivery.
        with ThreadPoolExecutor(max_workers=max(4, min(64, int(rate)))) as pool:
            futures = [pool.submit(self._send, first + i, start + i / rate) for i in range(count)]
            sent = [future.result() for future in futures]
        refused = sum(1 for _id, _at, status in sent if status != 202)
        sent_at = {comment_id: at for comment_id, at, status in sent if status == 202}
        reacted: dict[int, float] = {}
        replied: dict[int, float] = {}
        deadline = time.time() + 120
        react_path = re.compile(rf"/repos/{self.repo}/issues/comments/(\d+)/reactions")
        reply_path = f"/repos/{self.repo}/issues/{self.number}/comments"
        while time.time() < deadline and (len(reacted) < len(sent_at) or len(replied) < len(sent_at)):
            time.sleep(0.2)
            for entry in self.emulator.log.entries:
                if entry.method != "POST" or entry.status is None or entry.status >= 300:
                    continue
                match = react_path.fullmatch(entry.path)
                if match and int(match[1]) in sent_at:
                    reacted.setdefault(int(match[1]), entry.timestamp.timestamp())
                elif entry.path == reply_path and isinstance(entry.body, dict):
                    found = _MARKER.search(str(entry.body.get("body", "")))
                    if found and int(found[1]) in sent_at:
                        replied.setdefault(int(found[1]), entry.timestamp.timestamp())
        return {
            "sent": count, "refused": refused, "span": max(sent_at.values(), default=start) - start,
            "ack": [reacted[c] - sent_at[c] for c in sent_at if c in reacted],
            "reply": [replied[c] - sent_at[c] for c in sent_at if c in replied],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,100", help="events per second, comma-separated (default 10,100)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each rate is sustained (default 15)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator(rate_limit=10_000_000) as emulator:
        bench = Bench(emulator, Path(tmp))
        try:
            for rate in (float(r) for r in args.rates.split(",")):
                result = bench.run(rate, args.seconds)
                achieved = result["sent"] / result["span"] if result["span"] > 0 else float("nan")
                print(f"{rate:g} events/s for {args.seconds:g} s: {result['sent']} deliveries "
                      f"(sent at {achieved:.1f}/s, {result['refused']} refused)")
                for name, values in (("webhook -> 👀 reaction", result["ack"]), ("webhook -> reply", result["reply"])):
                    if not values:
                        print(f"  {name}: none arrived")
                        continue
                    ms = sorted(v * 1000 for v in values)
                    print(f"  {name}: {len(ms)}/{result['sent']} arrived; p50 {statistics.median(ms):.1f} ms, "
                          f"p99 {quantile(ms, 99):.1f} ms, max {ms[-1]:.1f} ms")
            metrics = bench.app.observability.exposition().decode()
            wanted = ("mlops_bot_events_handled_total{", "mlops_bot_effects_delivered_total{",
                      "mlops_bot_effects_failed_total{", "mlops_bot_outbox_pending_effects ")
            print("metrics at the end:")
            for line in metrics.splitlines():
                if line.startswith(wanted):
                    print("  " + line)
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
