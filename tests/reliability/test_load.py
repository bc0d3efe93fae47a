"""Load: ``mlops-bot serve`` (real uvicorn, a free loopback port, settings from the environment) under
a sustained stream of valid signed GitHub deliveries, about 100 a second for 30 seconds.

30 s, not 60: the reliability suite runs in CI's normal ``pytest -q`` on a 2-core machine, and a
minute here would push it past its ~6-minute budget. ``RELIABILITY_LOAD_S=60`` runs the full minute.

Every delivery answered 202 must be in the store exactly once (and a repeated delivery id is
answered as a duplicate, storing nothing), and the server's memory must stay flat: its RSS, sampled
every half second, may grow by at most 30 MB after a 10 s warm-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.emulators.framework import free_port
from tests.reliability.world import read_store, signed_headers

SECRET = "load-webhook-secret"
RATE = 100  # deliveries a second
DURATION_S = float(os.environ.get("RELIABILITY_LOAD_S", "30"))
WARM_UP_S = 10.0
SENDERS = 4
MAX_GROWTH_MB = 30.0



def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _delivery(n: int) -> tuple[bytes, dict[str, str]]:
    number = 1 + n % 40
    body = "/help" if n % 20 == 0 else f"load comment {n}: looks fine to me"
    payload = {
        "action": "created", "repository": {"full_name": "acme/model"}, "sender": {"login": "bob"},
        "issue": {"number": number, "pull_request": {"url": f"https://api.github.com/repos/acme/model/pulls/{number}"}},
        "comment": {"id": 10_000_000 + n, "body": body, "user": {"login": "bob"},
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                    "html_url": f"https://github.com/acme/model/pull/{number}#issuecomment-{10_000_000 + n}"},
    }
    raw = json.dumps(payload).encode()
    return raw, signed_headers(raw, SECRET, event="issue_comment", delivery=f"load-{n}")


def test_a_sustained_stream_of_deliveries_loses_none_and_memory_stays_flat(repo, tmp_path, report):
    from tests.conftest import PROJECT

    port = free_port()
    data = tmp_path / "state"
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "GITHUB_", "SLACK_", "AZURE_DEVOPS_"))}
    env = keep | {"MLOPS_PROJECT_DIR": str(repo / PROJECT), "MLOPS_DATA_DIR": str(data),
                  "GITHUB_WEBHOOK_SECRET": SECRET, "MLOPS_POLL_INTERVAL_S": "5", "MLOPS_DELIVER_INTERVAL_S": "1",
                  "MLOPS_LOG_LEVEL": "WARNING", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    script = Path(sys.executable).with_name("mlops-bot")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot"]
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    statuses: Counter[str] = Counter()
    accepted: list[str] = []
    latencies: list[float] = []
    samples: list[tuple[float, float]] = []
    lock = threading.Lock()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                try:
                    if probe.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
            time.sleep(3)  # the first model trains in the background: let it start before the stream does

        total = int(RATE * DURATION_S)
        started = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                samples.append((time.monotonic() - started, _rss_mb(server.pid)))
                stop_sampling.wait(0.5)

        def send(first: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                for n in range(first, total, SENDERS):
                    due = started + n / RATE
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    body, headers = _delivery(n)
                    sent = time.monotonic()
                    try:
                        response = client.post("/webhooks/github", content=body, headers=headers)
                    except httpx.TransportError as exc:
                        with lock:
                            statuses[type(exc).__name__] += 1
                        continue
                    with lock:
                        latencies.append(time.monotonic() - sent)
                        answer = response.json()
                        statuses[f"{response.status_code} {answer.get('status', '')}"] += 1
                        if response.status_code == 202 and answer.get("status") == "accepted":
                            accepted.append(answer["event"])
                    if n % 500 == 7:  # GitHub redelivers now and then: the same delivery id again
                        again = client.post("/webhooks/github", content=body, headers=headers)
                        with lock:
                            statuses[f"redelivered {again.status_code} {again.json().get('status', '')}"] += 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        senders = [threading.Thread(target=send, args=(i,)) for i in range(SENDERS)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        elapsed = time.monotonic() - started
        time.sleep(1)
        stop_sampling.set()
        sampler.join()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    events, _effects = read_store(f"sqlite:///{data / 'state.db'}")
    # the bot's own answers (on embedded defaults, comments in the local store) are events of their own
    stored = Counter(e["key"] for e in events if e["key"].startswith("github:comment:"))
    lost = [key for key in accepted if stored[key] != 1]
    doubled = [key for key, n in stored.items() if n > 1]
    extra = set(stored) - set(accepted)
    warm = [rss for t, rss in samples if t >= WARM_UP_S]
    baseline = warm[0] if warm else float("nan")
    growth = max(warm) - baseline if warm else float("nan")
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    report(f"{len(accepted)} deliveries accepted in {elapsed:.0f} s ({len(accepted) / elapsed:.0f}/s), "
           f"answers {dict(statuses)}, latency p50 {p50:.0f} ms p99 {p99:.0f} ms, lost: {len(lost)}, "
           f"doubled: {len(doubled)}; RSS {samples[0][1]:.0f} MB at start, {baseline:.0f} MB after warm-up, "
           f"max {max(r for _, r in samples):.0f} MB, growth after warm-up {growth:.1f} MB")
    total = int(RATE * DURATION_S)
    assert len(accepted) == total, statuses  # every delivery was answered 202 and stored
    assert not lost and not doubled and not extra
    assert all(k.startswith("redelivered 200 duplicate") for k in statuses if k.startswith("redelivered"))
    assert elapsed < DURATION_S * 1.25, f"the stream fell behind: {elapsed:.1f} s for {DURATION_S:.0f} s of deliveries"
    assert growth < MAX_GROWTH_MB, samples


# --- a busy episode within the services' limits ------------------------------------------------------

BUSY_COMMENTS = 50  # each answered with a reply and a reaction: 100 writes, past GitHub's 80 a minute


def test_a_busy_episode_within_the_services_limits_does_everything_once_and_meets_no_limit(world, tmp_path, report):
    """The bot on GitHub (code and tickets) and Slack, both emulators enforcing their documented
    limits (GitHub's secondary limits, Slack's tiers and one message a second per channel): a merge
    and a storm of commands make far more writes in a minute than GitHub allows, and the adapters'
    pacing must keep every answer under the limits: no 403/429 for a limit, every effect exactly once.

    The emulators' clocks stand still and the adapters pace on them, so their waits cost no wall
    time (the pacing itself is what is tested, not how long it takes: benchmarks would print that).
    """
    from bot.app import build
    from bot.settings import Settings
    from integrations.github import ContentPacer, GitHubAuth, GitHubClient, GitHubIssues, GitHubSource, connect
    from integrations.slack import SlackChat, SlackPacer
    from integrations.slack import connect as connect_slack
    from tests.conftest import run_pipelines_in_process
    from tests.reliability.world import BOT_LOGIN, REPO, Driver, audit, quick_retries

    world.tickets = "github"
    for emulator in (world.github, world.slack):
        emulator.clock.freeze()
    world.github.secondary_limits = True
    world.slack.tier_limits = True
    state_url = f"sqlite:///{tmp_path / 'busy.db'}"
    settings = Settings(**world.settings_values(state_url))
    gh = connect(GitHubAuth(token=world.github.token), base_url=world.github.base_url, timeout=5, retry=None)
    github = GitHubClient(gh, REPO, bot_login=BOT_LOGIN, reserve=settings.github_rate_limit_reserve,
                          cycle_budget=settings.github_cycle_budget, cycle_s=settings.poll_interval_s,
                          pacer=ContentPacer(monotonic=world.github.clock.seconds, sleep=world.github.clock.sleep))
    chat = SlackChat(connect_slack(world.slack.token, base_url=world.slack.base_url, timeout=5, rate_limit_retries=0),
                     pacer=SlackPacer(monotonic=world.slack.clock.seconds, sleep=world.slack.clock.sleep))
    app = run_pipelines_in_process(build(settings, scm=GitHubSource(github), tracker=GitHubIssues(github), chat=chat,
                                         out=None))
    quick_retries(app)
    driver = Driver(app, seen_all=lambda: not world.unseen(state_url))
    github_started, slack_started = world.github.clock.seconds(), world.slack.clock.seconds()
    try:
        driver.settle()  # the first look and the first model
        pulls = [world.open_pull(f"Change {n}") for n in range(3)]
        world.merge(pulls[0])  # a run: its report on the pull request, a status, a Slack thread
        for n in range(BUSY_COMMENTS):
            world.comment(pulls[n % len(pulls)], ("bob", "alice", "rita")[n % 3], "/status" if n % 2 else "/help")
        driver.settle()
    finally:
        app.store.close()

    result = audit(world, state_url, app.settings.data_dir)
    limited_github = world.github.secondary_limited
    limited_slack = sum(world.slack.rate_limited.values())
    github_writes = len(world.github.log.writes())
    report(f"{result.line()}; GitHub {github_writes} writes over {world.github.clock.seconds() - github_started:.0f} "
           f"emulated s, secondary-limit answers {limited_github}; Slack {len(world.slack.log)} calls over "
           f"{world.slack.clock.seconds() - slack_started:.0f} emulated s, 429s {limited_slack}")
    result.assert_clean()
    assert github_writes > 80  # busy enough that unpaced it would have met the minute's limit
    assert limited_github == 0 and limited_slack == 0
    assert not world.github.faults.fired and not world.slack.faults.fired
