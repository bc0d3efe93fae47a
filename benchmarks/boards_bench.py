"""Boards (issue 16): what a drift episode costs on GitHub and on Azure Boards, and how long a
ticked checklist box takes to act.

1. One drift episode on GitHub, run twice in the same process on fresh emulators: with
   MLOPS_GITHUB_PROJECT set (the card walks Todo → In progress → In review → In progress → Done)
   and without. The episode follows tests/test_github_projects.py's ``episode`` fixture: two drifted
   batches open the ticket, `/retrain` keeps a validated candidate (In review), a labelled batch
   arrives, `/retrain` promotes and the ticket is resolved. Counted from the emulator's request log,
   from the first drifted batch to the closed ticket: REST requests by route, GraphQL requests by
   top-level field, and GraphQL points three ways: the emulator's GraphQL budget (GET /rate_limit,
   one point per request), the bot's own count (its observability registry, fed through the
   adapter's ``ReportsApiCalls``), and GitHub's published formula applied to the documents sent
   (connections' ``first``/``last`` summed per level, divided by 100, at least 1 per query; a
   mutation counts 1 against the primary limit). The board's cost is the difference of the two runs.
2. The same episode on Azure Boards (Agile process, Bug; tests/test_azure_boards_states.py's
   ``episode``): the work item walks New → Active → Resolved → Active → Closed; requests by route.
3. A ticked box to its effect on GitHub, N times (``--ticks``): a writer (bob) ticks "Retrain now"
   in the ticket's body on the emulator, and the time runs from that edit until the bot's reply is
   on the ticket and until the box is unticked in a new revision of the body. The bot runs as
   `mlops-bot run`/`serve` do (scheduler.Runner, real clock; the pipeline in-process, as in tests).
   - webhook: the `issues` edited delivery is POSTed, signed, to /webhooks/github on a uvicorn
     server the moment the body is saved (the timing includes signing and the POST); polling is
     set to an hour, so the delivery is the only way in. The reply acknowledges the tick and
     the retrain it starts.
   - poll: no webhook secret, so the poll reads the body (GitHub does not say who edited it: the
     reply says so and unticks; nothing is run). The poll interval is set explicitly
     (``--poll-interval``); the edit-to-effect figure includes the wait for the next poll, and the
     time from the poll's read of the body (its GET, in the emulator's log) to the effect is
     printed beside it.
   Between ticks the bot is left to finish (its outbox empty); that wait is not timed.

Prints the CPU count, the load average before and after, and the threads of this process (the
bot's scheduler, outbox and web server, the emulators' handlers: everything runs in one process).
Loopback only; the emulators validate every answer against the services' descriptions in
../shared/refdata (and every GraphQL document against GitHub's schema), which must be beside the
clone. About two minutes with the defaults on a 2-core machine.

    .venv/bin/python benchmarks/boards_bench.py [--ticks 30] [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", tempfile.mkdtemp(prefix="boards-bench-ado-cache-"))
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
for _name in ("NO_PROXY", "no_proxy"):  # loopback only, whatever proxy the environment names
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost"]))
for _name in list(os.environ):  # the bot sees only the settings set here (as tests/conftest.py does)
    if _name.startswith(("MLOPS_", "GITHUB_", "SLACK_", "AZURE_DEVOPS_")) and _name != "AZURE_DEVOPS_CACHE_DIR":
        del os.environ[_name]

import requests  # noqa: E402

from bot import checklist  # noqa: E402
from bot.app import build  # noqa: E402
from bot.settings import Settings  # noqa: E402
from common import quantile  # noqa: E402  (benchmarks/common.py)
from integrations.ports import Target  # noqa: E402
from tests.conftest import (  # noqa: E402
    PROJECT,
    FakeClock,
    keep_candidates,
    run_pipelines_in_process,
    seed_embedded_mlflow,
    settle,
    tiny_repository,
    write_drifted_batch,
)
from tests.emulators.azure_devops import AzureDevOpsEmulator, azure_devops_schemas  # noqa: E402
from tests.emulators.fixtures import REFDATA, refdata_missing_reason  # noqa: E402
from tests.emulators.framework import free_port  # noqa: E402
from tests.emulators.github import GitHubEmulator, github_graphql_schema, github_schemas  # noqa: E402
from tests.test_checklist import REPO, bot_comments, edit_as, issue_body, open_episode, tick  # noqa: E402

PROJECT_URL = "https://github.com/orgs/acme/projects/3"
SECRET = "bench-secret"
GRAPHQL = "/graphql"


def app_factory(root: Path) -> tuple[Path, Callable]:
    """The tiny model's repository under ``root`` and a builder of the bot over it, as the tests'
    ``make_app`` fixture builds it: a fake clock, quiet output, the pipeline in-process."""
    repo = tiny_repository(root / "repo")
    clock = FakeClock()

    def make(**overrides):
        values = {"project_dir": repo / PROJECT, "data_dir": root / "state", "drift_cooldown_s": 0} | overrides
        seed_embedded_mlflow(values["data_dir"])
        return run_pipelines_in_process(build(Settings(_env_file=None, **values), clock=clock, out=io.StringIO()))

    return repo, make


# --- 1 and 2: one drift episode, counted ----------------------------------------------------------


def walk_episode(app, repo: Path, comment: Callable[[int, str], None], ticket: Callable[[], int]) -> int:
    """The episode of the boards' end-to-end tests, from the first drifted batch to the resolution;
    returns the ticket's number."""

    def retrain(*, candidate: bool) -> None:
        keep_candidates(repo, candidate)
        comment(ticket(), "/retrain")
        settle(app, rounds=60)

    def batch(name: str, seed: int, *, labelled: bool) -> None:
        write_drifted_batch(app, name, seed, labelled=labelled)
        settle(app, rounds=60)

    batch("b1.csv", 1, labelled=True)
    batch("b2.csv", 2, labelled=False)
    retrain(candidate=True)  # validated, kept as a candidate: In review
    batch("b3.csv", 3, labelled=True)  # something new to learn from
    number = ticket()
    retrain(candidate=False)  # promoted, measured, resolved
    settle(app, rounds=60)
    dead = [(e.key, e.last_error) for e in app.store.effects(status="dead")]
    if dead:
        raise RuntimeError(f"effects given up: {dead}")
    return number


@dataclass
class GitHubCost:
    rest: Counter = field(default_factory=Counter)  # route -> requests
    graphql: Counter = field(default_factory=Counter)  # top-level fields -> requests
    budget_points: int = 0  # the emulator's GraphQL budget spent (GET /rate_limit)
    bot_points: int = 0  # the same, as the bot's metrics saw it (limit - remaining, GraphQL resource)
    formula_points: int = 0  # GitHub's published formula over the documents sent
    bot_requests: int = 0  # every request the bot's metrics counted (REST and GraphQL)
    statuses: list[str] = field(default_factory=list)


def graphql_points(document: str) -> int:
    """What GitHub's primary limit charges a document: for a query, the requests needed to fill each
    connection (its ``first``/``last``, a variable counted as 100, multiplied down the nesting),
    summed, divided by 100, rounded, at least 1; a mutation, 1."""
    from graphql import FieldNode, FragmentDefinitionNode, FragmentSpreadNode, IntValueNode, parse

    parsed = parse(document)
    fragments = {d.name.value: d for d in parsed.definitions if isinstance(d, FragmentDefinitionNode)}

    def requests_for(selections, multiplier: int) -> int:
        total = 0
        for node in selections:
            if isinstance(node, FragmentSpreadNode):
                total += requests_for(fragments[node.name.value].selection_set.selections, multiplier)
                continue
            inner = multiplier
            arguments = node.arguments if isinstance(node, FieldNode) else ()  # an inline fragment has none
            sizes = [a.value for a in arguments if a.name.value in ("first", "last")]
            if sizes:
                total += multiplier  # one request fills this connection for each parent
                inner = multiplier * (int(sizes[0].value) if isinstance(sizes[0], IntValueNode) else 100)
            if node.selection_set is not None:
                total += requests_for(node.selection_set.selections, inner)
        return total

    operations = [d for d in parsed.definitions if not isinstance(d, FragmentDefinitionNode)]
    return sum(1 if op.operation.value == "mutation" else max(1, round(requests_for(op.selection_set.selections, 1) / 100))
               for op in operations)


def graphql_used(gh: GitHubEmulator) -> int:
    """The GraphQL points the bot's token has spent this window, as GitHub's free GET /rate_limit says."""
    answer = requests.get(f"{gh.base_url}/rate_limit", headers={"Authorization": f"token {gh.token}"}, timeout=5,
                          proxies={"http": "", "https": ""})
    answer.raise_for_status()
    return int(answer.json()["resources"]["graphql"]["used"])


def github_episode(root: Path, schemas, graphql_schema, *, board: bool) -> GitHubCost:
    gh = GitHubEmulator(rate_limit=1_000_000, schemas=schemas, graphql_schema=graphql_schema, scopes=("repo", "project"))
    with gh:
        gh.state.add_repo(REPO)
        for login in ("bob", "mlops-bot[bot]"):
            gh.state.add_collaborator(REPO, login, "write")
        if board:
            gh.graphql.add_project("acme", 3, fields={"Model": None, "Severity": ["low", "medium", "high"],
                                                      "Version": None, "Reason": None})
        repo, make = app_factory(root)
        app = make(github_repository=REPO, github_token=gh.token, github_api_url=gh.base_url, project_paths=[PROJECT],
                   github_project=PROJECT_URL if board else None)
        app.run_once()  # the first model
        used = graphql_used(gh)  # before the mark: this GET /rate_limit is the benchmark's, not the bot's
        start, documents = len(gh.log), len(gh.graphql.documents)
        metrics = app.observability.registry
        counted_before = _bot_requests(metrics)
        number = walk_episode(app, repo, lambda n, text: gh.state.add_comment(REPO, n, "bob", text),
                              lambda: next(i.number for i in gh.state.issues(REPO) if "mlops-bot" in i.labels))
        entries = gh.log.entries[start:]
        if gh.state.issue(REPO, number).state != "closed":
            raise RuntimeError("the episode did not end with the ticket closed")
        cost = GitHubCost()
        cost.rest = Counter(e.route for e in entries if e.path != GRAPHQL)
        cost.graphql = Counter(e.query.get("fields", "") for e in entries if e.path == GRAPHQL)
        cost.budget_points = graphql_used(gh) - used  # GET /rate_limit itself is free
        cost.formula_points = sum(graphql_points(d) for d in gh.graphql.documents[documents:])
        cost.bot_requests = _bot_requests(metrics) - counted_before
        if board:
            limit = metrics.get_sample_value("mlops_bot_github_rate_limit_limit", {"resource": "graphql"})
            remaining = metrics.get_sample_value("mlops_bot_github_rate_limit_remaining", {"resource": "graphql"})
            cost.bot_points = int(limit - remaining) - used  # spent in the window, less what came before
            card = gh.graphql.card("acme", 3, REPO, number)
            cost.statuses = [value for name, value, _who in card.history if name == "Status"]
        app.store.close()
    _check_clean("GitHub", gh)
    return cost


def _bot_requests(registry) -> int:
    """Every GitHub request the bot's metrics counted (``mlops_bot_api_requests``, all statuses)."""
    return int(sum(sample.value for metric in registry.collect() if metric.name == "mlops_bot_api_requests"
                   for sample in metric.samples
                   if sample.name.endswith("_total") and sample.labels.get("service") == "github"))


def azure_episode(root: Path, schemas) -> tuple[Counter, list[str]]:
    ado = AzureDevOpsEmulator(schemas=schemas)
    with ado:
        ado.state.add_project("agile", process="Agile")
        repo, make = app_factory(root)
        app = make(azure_devops_org_url=ado.base_url, azure_devops_pat=ado.pat, azure_devops_project="agile",
                   azure_process="Agile", azure_work_item_type="Bug")
        app.run_once()  # the first model
        start = len(ado.log)

        def ticket() -> int:
            [found] = app.tracker.tickets()  # one work item for the whole episode
            return found.id

        number = walk_episode(app, repo, lambda n, text: app.scm.add_comment(Target("ticket", app.scm.repo, n), text),
                              ticket)
        routes = Counter(e.route for e in ado.log.entries[start:])
        walk = [state for state, _who in ado.state.work_item(number).state_history]
        app.store.close()
    _check_clean("Azure DevOps", ado)
    return routes, walk


def _check_clean(name: str, emulator) -> None:
    """A benchmark of wrong answers measures nothing: fail as the tests' fixtures do."""
    problems = [*emulator.errors, *emulator.violations]
    if problems:
        raise RuntimeError(f"the {name} emulator failed or answered outside the description: {problems[:5]}")


# --- 3: a ticked box to its effect ----------------------------------------------------------------


@dataclass
class Ticks:
    reply: list[float] = field(default_factory=list)  # edit -> the bot's reply on the ticket
    unticked: list[float] = field(default_factory=list)  # edit -> the box unticked in a new revision
    from_read: list[float] = field(default_factory=list)  # the poll's read of the body -> both done
    threads: int = 0


def tick_latency(root: Path, schemas, *, ticks: int, webhook: bool, poll_interval_s: float) -> Ticks:
    import uvicorn

    from bot.scheduler import Runner
    from bot.webhooks import create_app

    gh = GitHubEmulator(rate_limit=1_000_000, schemas=schemas)
    measured = Ticks()
    with gh:
        repo, make = app_factory(root)
        # v1 in production, the drift ticket open with its checklist, v2 kept as a candidate
        setup = open_episode(gh, make, repo, **({"github_webhook_secret": SECRET} if webhook else {}))
        number = setup.ticket
        setup.store.close()
        # The same bot, on the real clock, run by the scheduler as `mlops-bot run` runs it.
        settings = setup.settings.model_copy(update={
            "poll_interval_s": 3600.0 if webhook else poll_interval_s, "monitor_interval_s": 3600.0})
        app = run_pipelines_in_process(build(settings, out=io.StringIO()))
        app.gh, app.ticket = gh, number  # what tests/test_checklist.py's helpers read
        runner = Runner(app)
        server = None
        if webhook:
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(create_app(app, wake=runner.wake), host="127.0.0.1", port=port,
                                                   log_level="warning", access_log=False))
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.01)
        runner.start()
        session = requests.Session()
        session.trust_env = False  # loopback only, never a proxy
        try:
            _wait_idle(app)
            for n in range(ticks):
                body = issue_body(app)
                revision = checklist.read(body).revision
                replies = len(bot_comments(app))
                log_mark = len(gh.log)
                start = time.perf_counter()
                payload = edit_as(app, "bob", tick(body, "Retrain now"))
                if webhook:
                    raw = json.dumps(payload).encode()
                    answer = session.post(f"http://127.0.0.1:{port}/webhooks/github", data=raw, timeout=10, headers={
                        "X-GitHub-Event": "issues", "X-GitHub-Delivery": f"tick-{n}", "Content-Type": "application/json",
                        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()})
                    if answer.status_code != 202:
                        raise RuntimeError(f"delivery {n} answered {answer.status_code}: {answer.text}")
                reply_at = unticked_at = None
                while reply_at is None or unticked_at is None:
                    now, wall = time.perf_counter(), time.time()
                    if now - start > 30:
                        raise RuntimeError(f"tick {n}: no reply or untick after 30 s")
                    if reply_at is None and len(bot_comments(app)) > replies:
                        reply_at = now
                    if unticked_at is None:
                        reading = checklist.read(issue_body(app))
                        if reading.revision > revision and not reading.ticked:
                            unticked_at = now
                    done_wall = wall
                    time.sleep(0.001)
                measured.reply.append(reply_at - start)
                measured.unticked.append(unticked_at - start)
                if not webhook:
                    measured.from_read.append(done_wall - _first_body_read(gh, log_mark, number))
                measured.threads = max(measured.threads, threading.active_count())
                _wait_idle(app)  # the retrain the tick started (webhook) runs to its end, untimed
        finally:
            if server is not None:
                server.should_exit = True
            runner.stop()
        app.store.close()
    _check_clean("GitHub", gh)
    return measured


def _first_body_read(gh: GitHubEmulator, mark: int, number: int) -> float:
    """When the poll read the ticket's body after the edit (the emulator's log, wall clock)."""
    for entry in gh.log.entries[mark:]:
        if entry.method == "GET" and entry.path == f"/repos/{REPO}/issues/{number}":
            return entry.timestamp.timestamp()
    raise RuntimeError("the poll never read the ticket's body")


def _wait_idle(app, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while app.store.effects(status="pending"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"effects still pending: {[e.key for e in app.store.effects(status='pending')]}")
        time.sleep(0.05)


# --- the report -----------------------------------------------------------------------------------


def _routes(counts: Counter) -> str:
    return ", ".join(f"{route} {n}" for route, n in sorted(counts.items())) or "none"


def _spread(values: list[float]) -> str:
    return (f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {quantile(values, 99) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30, help="ticks per path (default 30)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="MLOPS_POLL_INTERVAL_S of the poll path, seconds (default 1.0)")
    args = parser.parse_args()
    if args.ticks < 1 or args.poll_interval <= 0:
        parser.error("--ticks must be at least 1 and --poll-interval above 0")
    missing = refdata_missing_reason()
    if missing:
        sys.exit(f"boards_bench: {missing} (the GitHub emulator answers GraphQL only with GitHub's schema)")
    refdata = REFDATA.resolve()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min) at the start", flush=True)
    schemas, graphql_schema = github_schemas(refdata), github_graphql_schema(refdata)
    with tempfile.TemporaryDirectory(prefix="boards-bench-") as tmp:
        root = Path(tmp)
        with_board = github_episode(root / "gh-board", schemas, graphql_schema, board=True)
        without = github_episode(root / "gh-plain", schemas, graphql_schema, board=False)
        print("1. one drift episode on GitHub (2 drifted batches, /retrain kept as a candidate, a labelled batch, "
              "/retrain promoted, resolved):")
        print(f"   card's Status: {' → '.join(with_board.statuses)}")
        for name, cost in (("with MLOPS_GITHUB_PROJECT", with_board), ("without a project", without)):
            print(f"   {name}: {sum(cost.rest.values())} REST + {sum(cost.graphql.values())} GraphQL requests "
                  f"({cost.bot_requests} counted by the bot's metrics); GraphQL points: {cost.budget_points} "
                  f"(emulator budget), {cost.bot_points} (bot's rate-limit gauge), {cost.formula_points} "
                  f"(GitHub's formula)")
        rest_diff = with_board.rest - without.rest
        rest_less = without.rest - with_board.rest
        print(f"   the board's cost: REST {sum(with_board.rest.values()) - sum(without.rest.values()):+d} "
              f"(more: {_routes(rest_diff)}; fewer: {_routes(rest_less)}), GraphQL "
              f"+{sum(with_board.graphql.values())} requests = +{with_board.budget_points} points")
        print(f"   GraphQL by top-level field: {_routes(with_board.graphql)}")
        print(f"   REST by route, with the project: {_routes(with_board.rest)}")
        routes, walk = azure_episode(root / "ado", azure_devops_schemas(refdata))
        print("2. the same episode on Azure Boards (Agile, Bug):")
        print(f"   work item's state: {' → '.join(walk)}")
        print(f"   {sum(routes.values())} requests: {_routes(routes)}")
        print(f"3. a ticked “Retrain now” to its effect on GitHub, {args.ticks} ticks per path:", flush=True)
        webhook = tick_latency(root / "tick-webhook", schemas, ticks=args.ticks, webhook=True,
                               poll_interval_s=args.poll_interval)
        print(f"   webhook (issues edited → /webhooks/github, polling hourly): reply {_spread(webhook.reply)}; "
              f"unticked {_spread(webhook.unticked)} (N={len(webhook.reply)})")
        poll = tick_latency(root / "tick-poll", schemas, ticks=args.ticks, webhook=False,
                            poll_interval_s=args.poll_interval)
        print(f"   poll every {args.poll_interval:g} s (no webhook secret): reply {_spread(poll.reply)}; unticked "
              f"{_spread(poll.unticked)}; from the poll's read of the body to both: {_spread(poll.from_read)} "
              f"(N={len(poll.reply)})")
        print(f"threads in this process (bot, web server, emulators): up to {max(webhook.threads, poll.threads)}; "
              f"load average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
