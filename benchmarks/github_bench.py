"""GitHub API cost and webhook latency, counted from the GitHub emulator's request log.

1. Idle cycle: what one poll costs a repository when nothing happened (goal: 0 rate-limit units,
   at most 2 requests).
2. 100 repositories, one new `/status` command each: requests per event, polls included, and the
   wall time of the cycle (goal: at most 4 requests per event including the reply and reaction).
3. Webhook to acknowledgement: 500 signed `issue_comment` deliveries to `mlops-bot serve`'s app on a
   real HTTP server (uvicorn), each timed from the POST to the 👀 reaction reaching the emulator
   (goal: p99 under 250 ms).

Runs on loopback only, against tests/emulators/github.py (the same emulator the tests use).

    python benchmarks/github_bench.py [--repos 100] [--deliveries 500]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
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


def project(root: Path) -> Path:
    target = root / "project"
    shutil.copytree(REPO_ROOT / "examples" / "breast_cancer", target)
    return target


def app_for(emulator, repo: str, root: Path, project_dir: Path, registry_root: Path, **extra):
    settings = Settings(project_dir=project_dir, data_dir=registry_root, state_url=f"sqlite:///{root / (repo.replace('/', '_') + '.db')}",
                        github_repository=repo, github_token=emulator.token, github_api_url=emulator.base_url,
                        github_webhook_secret=SECRET, **extra)
    return build(settings, out=None)


def idle_cycle(emulator, root, project_dir) -> tuple[int, int]:
    emulator.state.add_repo("acme/idle")
    app = app_for(emulator, "acme/idle", root, project_dir, root / "shared")
    app.run_once()  # first look, and the first model trained
    app.poll()  # settles the cursors
    emulator.log.clear()
    app.poll()
    requests_made = emulator.log.count()
    return requests_made, emulator.log.charged()


def many_repositories(emulator, root, project_dir, count: int) -> tuple[float, float, int]:
    apps = []
    for n in range(count):
        repo = f"acme/repo-{n:03d}"
        emulator.state.add_repo(repo)
        emulator.state.add_collaborator(repo, "bob", "write")
        app = app_for(emulator, repo, root, project_dir, root / "shared")
        app.poll()  # first look
        apps.append((repo, app))
    for repo, _app in apps:
        number = emulator.state.open_issue(repo, "Question", "", "bob")
        emulator.state.add_comment(repo, number, "bob", "/status")
    emulator.log.clear()
    start = time.perf_counter()
    for _repo, app in apps:
        app.poll()
        app.deliver()
    elapsed = time.perf_counter() - start
    polls = emulator.log.count(path=r".*/(issues/comments|pulls)")
    replies = sum(1 for repo, _ in apps for c in emulator.state.comments(repo) if c.user == emulator.login)
    assert replies == count, f"{replies} replies for {count} commands"
    return emulator.log.count() / count, (emulator.log.count() - polls) / count, elapsed, emulator.log.charged()



def webhook_latency(emulator, root, project_dir, deliveries: int) -> list[float]:
    import uvicorn

    from bot.scheduler import Runner
    from bot.webhooks import create_app

    repo = "acme/hooks"
    emulator.state.add_repo(repo)
    emulator.state.add_collaborator(repo, "bob", "write")
    # Polling far apart: the webhook is the only way in, as in a deployment that uses them.
    app = app_for(emulator, repo, root, project_dir, root / "shared", poll_interval_s=3600, monitor_interval_s=3600)
    app.run_once()
    runner = Runner(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app, wake=runner.wake), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    runner.start()
    while not server.started:
        time.sleep(0.05)
    number = emulator.state.open_issue(repo, "Hooks", "", "bob")
    session = requests.Session()
    session.trust_env = False  # loopback only, never a proxy
    latencies = []
    try:
        for n in range(deliveries):
            comment_id = emulator.state.add_comment(repo, number, "bob", "/status")
            comment = emulator.state.comment(comment_id)
            payload = {"action": "created", "repository": {"full_name": repo},
                       "issue": {"number": number, "title": "Hooks"},
                       "comment": {"id": comment_id, "body": comment.body, "user": {"login": "bob", "type": "User"},
                                   "created_at": comment.created_at.isoformat(), "updated_at": comment.created_at.isoformat(),
                                   "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{comment_id}"}}
            body = json.dumps(payload).encode()
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            start = time.perf_counter()
            response = session.post(f"http://127.0.0.1:{port}/webhooks/github", data=body, timeout=10, headers={
                "X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": f"bench-{n}", "X-Hub-Signature-256": signature,
                "Content-Type": "application/json"})
            assert response.status_code == 202, response.text
            while not emulator.state.reactions(comment_id):
                if time.perf_counter() - start > 10:
                    raise AssertionError(f"no reaction to delivery {n} after 10 s")
                time.sleep(0.001)
            latencies.append(time.perf_counter() - start)
    finally:
        server.should_exit = True
        runner.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--deliveries", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator(rate_limit=1_000_000) as emulator:
        root = Path(tmp)
        project_dir = project(root)
        idle_requests, idle_units = idle_cycle(emulator, root, project_dir)
        print(f"idle poll cycle, one repository: {idle_requests} requests, {idle_units} rate-limit units "
              f"(goal: 0 units, <= 2 requests: {'met' if idle_units == 0 and idle_requests <= 2 else 'NOT met'})")
        per_event, own, elapsed, charged = many_repositories(emulator, root, project_dir, args.repos)
        print(f"{args.repos} repositories, one /status each: {per_event:.2f} requests per event with the cycle's two "
              f"polls, {own:.2f} for the event itself (reaction and reply: a read-level command needs no "
              f"permission lookup); {charged} charged in all; "
              f"cycle {elapsed:.2f} s (goal <= 4 per event: {'met' if per_event <= 4 else 'NOT met'} with the polls, "
              f"{'met' if own <= 4 else 'NOT met'} without)")
        latencies = webhook_latency(emulator, root, project_dir, args.deliveries)
        p50, p99 = statistics.median(latencies) * 1000, quantile(latencies, 99) * 1000
        print(f"webhook to 👀 reaction over {len(latencies)} deliveries: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms (goal p99 < 250 ms: {'met' if p99 < 250 else 'NOT met'})")


if __name__ == "__main__":
    main()
