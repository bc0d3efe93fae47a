"""The world the reliability tests run in: GitHub (source control), Azure Boards (tickets) and Slack
(chat) emulators set up for one bot, the example project, a scripted scenario, and the audit that
counts every effect in the emulators' state by the bot's markers.

Shared by the fault, crash and secret tests; nothing here is a mock: the bot talks to the
emulators with the real SDK clients, over HTTP on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "breast_cancer"


def _example_module(name: str):
    """A script of the bundled example (``make_batch.py``), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"breast_cancer_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_batch = _example_module("make_batch").make_batch

REPO = "acme/model"
PROJECT_PATH = "models/breast_cancer"
PROJECT_FILES = [f"{PROJECT_PATH}/mlops.toml"]
MODEL = "breast-cancer"
BOT_LOGIN = "mlops-bot[bot]"
AZURE_PROJECT = "proj"
CHANNELS = ("mlops-pipeline", "mlops-alerts", "mlops-digest")
ROLES = {"alice": "admin", "maya": "maintain", "bob": "write", "rita": "read", BOT_LOGIN: "write"}
# eve is no collaborator at all: GitHub answers 404 for her permission

# Every way an emulator can fail, drawn with these weights. A timeout costs the client its whole
# timeout, so it is drawn less often; everything else is cheap.
FAULT_MIX = (*("500", "502", "503", "rate_limit_secondary", "429") * 4, *("rate_limit_primary",) * 2,
             *("lost_response",) * 7, "timeout")
MARKER = re.compile(r"<!-- mlops-bot:(.*?) -->")
HTML_MARKER = re.compile(r"\[mlops-bot:([^\]<>\s]+)\]")


def make_project(root: Path) -> Path:
    """A private copy of the bundled example under ``root/models/breast_cancer``.

    The estimator is swapped for a logistic regression (well inside the example's gates, and ten
    times quicker to fit than the gradient boosting it ships with), so a scenario with many runs
    stays within CI's time.
    """
    target = root / PROJECT_PATH
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (target / "mlops.toml").read_text()
    toml = toml.replace('"sklearn.ensemble.HistGradientBoostingClassifier"', '"sklearn.linear_model.LogisticRegression"')
    toml = re.sub(r"(?m)^max_iter = \d+$", "max_iter = 500", toml)
    toml = re.sub(r"(?m)^learning_rate = .*$", "", toml)
    (target / "mlops.toml").write_text(toml)
    return target


class Remote:
    """The repository's code on the server: a bare repository that the emulator's ``clone_url`` names,
    so the bot's checkouts of a pull request's head or a merge commit find real commits."""

    def __init__(self, checkout: Path, root: Path):
        from tests.conftest import git

        self._git = git
        git(checkout, "init", "-q", "-b", "main")
        git(checkout, "add", ".")
        git(checkout, "commit", "-q", "-m", "the breast cancer model")
        self.bare, self.work = root / "remote.git", root / "work"
        git(root, "clone", "-q", "--bare", str(checkout), str(self.bare))
        git(root, "clone", "-q", str(self.bare), str(self.work))

    def commit(self, message: str, *, ref: str = "refs/heads/main") -> str:
        """A commit on main (a note beside the project, which keeps the same model) pushed to ``ref``."""
        git = self._git
        git(self.work, "fetch", "-q", "origin")
        git(self.work, "checkout", "-q", "--detach", "origin/main")
        (self.work / "NOTES.md").write_text(message + "\n")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", f"+HEAD:{ref}")
        return git(self.work, "rev-parse", "HEAD")


def write_batch(folder: Path, name: str, *, shift: float, seed: int, rows: int = 400, labels: bool = False) -> Path:
    """A production batch from the example's own ``make_batch`` (shifted by ``shift`` std devs);
    ``labels``: with the true diagnosis, so a retrain has something to learn from it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    partial = folder / f".{name}.partial"
    make_batch(rows, shift, seed, labels=labels, id_prefix=Path(name).stem).to_csv(partial, index=False,
                                                                                    float_format="%.6g")
    partial.rename(path)  # appears whole: the monitor never reads half a file
    return path


@dataclass
class World:
    """The three emulators, set up for the bot, and what the scenario did to them."""

    github: Any
    slack: Any
    azure: Any
    root: Path  # the tmp folder: project, data, batches
    project_dir: Path = field(init=False)
    data_dir: Path = field(init=False)
    batches_dir: Path = field(init=False)
    work_items: dict[str, int] = field(default_factory=dict)
    facts: Facts = field(init=False)
    tickets: str = "azure"  # where retrain tickets live: "azure" (work items) or "github" (issues)

    def __post_init__(self) -> None:
        self.project_dir = make_project(self.root / "checkout")
        self.remote = Remote(self.root / "checkout", self.root)
        self.data_dir = self.root / "state"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        from tests.conftest import seed_embedded_mlflow

        seed_embedded_mlflow(self.data_dir)  # the bots' registry, without paying MLflow's migrations
        self.batches_dir = self.root / "batches"
        self.facts = Facts()
        gh = self.github.state
        gh.add_repo(REPO, clone_url=self.remote.bare)
        for login, role in ROLES.items():
            gh.add_collaborator(REPO, login, role)
        for name in CHANNELS:
            self.slack.state.add_channel(name)
        self.azure.state.add_project(AZURE_PROJECT)
        self.work_items["fixed"] = self.azure.state.add_work_item(AZURE_PROJECT, "Improve recall")
        self.work_items["mentioned"] = self.azure.state.add_work_item(AZURE_PROJECT, "Related work")
        for emulator in (self.github, self.slack, self.azure):
            emulator.faults.timeout_hold = 1.1  # past GitHub's 1 s client timeout; a dropped answer for the others

    # --- settings ------------------------------------------------------------------------------

    def settings_values(self, state_url: str, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Settings``: GitHub for code, Azure Boards (or, with ``tickets =
        "github"``, GitHub issues) for tickets, Slack for chat."""
        values = {
            "project_dir": self.project_dir, "data_dir": self.data_dir, "state_url": state_url,
            "monitor_dir": self.batches_dir, "project_paths": [PROJECT_PATH], "drift_cooldown_s": 0,
            "github_repository": REPO, "github_token": self.github.token, "github_api_url": self.github.base_url,
            "github_timeout_s": 1,
            "slack_bot_token": self.slack.token, "slack_api_url": self.slack.base_url,
            "azure_devops_org_url": self.azure.base_url, "azure_devops_pat": self.azure.pat,
            "azure_devops_project": AZURE_PROJECT,
        } | overrides
        if self.tickets == "github":
            values = {name: value for name, value in values.items() if not name.startswith("azure_devops_")}
        return values

    def env(self, state_url: str, **extra: str) -> dict[str, str]:
        """The same settings as environment variables, for ``mlops-bot run`` in a subprocess."""
        return {
            "MLOPS_PROJECT_DIR": str(self.project_dir), "MLOPS_DATA_DIR": str(self.data_dir),
            "MLOPS_STATE_URL": state_url, "MLOPS_MONITOR_DIR": str(self.batches_dir),
            "MLOPS_PROJECT_PATHS": json.dumps([PROJECT_PATH]), "MLOPS_DRIFT_COOLDOWN_S": "0",
            "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": self.github.token, "GITHUB_API_URL": self.github.base_url,
            "MLOPS_GITHUB_TIMEOUT_S": "1",
            "SLACK_BOT_TOKEN": self.slack.token, "MLOPS_SLACK_API_URL": self.slack.base_url,
            "AZURE_DEVOPS_ORG_URL": self.azure.base_url, "AZURE_DEVOPS_EXT_PAT": self.azure.pat,
            "AZURE_DEVOPS_PROJECT": AZURE_PROJECT,
        } | extra

    def fail_a_fifth(self, *, seed: int, rate: float = 0.2) -> None:
        """About ``rate`` of every request to every emulator fails, in every way they can."""
        for offset, emulator in enumerate((self.github, self.slack, self.azure)):
            emulator.faults.random(rate, FAULT_MIX, seed=seed + offset, retry_after=1)

    def lose_ticket_openings(self, times: int = 1) -> None:
        """The next ``times`` writes that open a ticket land, and their answers are lost."""
        if self.tickets == "github":
            self.github.faults.add("issues/create", "lost_response", times=times)
        else:
            self.azure.faults.add("Work Items_Create", "lost_response", times=times)

    def close_ticket(self, number: int) -> None:
        """A person closes a retrain ticket (no webhook tells the bot)."""
        if self.tickets == "github":
            self.github.state.close_issue(REPO, number, by="alice")
        else:
            with self.azure.state.lock:
                self.azure.state.work_items[number].fields["System.State"] = "Closed"

    def retrain_tickets(self) -> list[tuple[int, str, str]]:
        """(number, state, body or description) of every ticket that carries the retrain marker."""
        marker = f"retrain:{MODEL}"
        if self.tickets == "github":
            return [(i.number, i.state, i.body or "") for i in self.github.state.issues(REPO)
                    if marker in MARKER.findall(i.body or "")]
        items = [self.azure.state.work_items[n] for n in sorted(self.azure.state.work_items)]
        return [(i.id, "closed" if i.fields["System.State"] in ("Closed", "Removed", "Done") else "open",
                 str(i.fields.get("System.Description") or ""))
                for i in items if marker in HTML_MARKER.findall(str(i.fields.get("System.Description") or ""))]

    def heal(self) -> None:
        for emulator in (self.github, self.slack, self.azure):
            emulator.faults.clear()

    @property
    def faults_fired(self) -> Counter[str]:
        return Counter(f"{e.service}:{fault.kind}" for e in (self.github, self.slack, self.azure)
                       for fault in e.faults.fired)

    # --- what people do ------------------------------------------------------------------------

    def open_pull(self, title: str, *, author: str = "bob", touches_project: bool = True, body: str = "") -> int:
        files = PROJECT_FILES if touches_project else ["README.md"]
        branch = f"{author}-change-{len(self.facts.targets) + 1}"
        head = self.remote.commit(title, ref=f"refs/heads/{branch}")
        number = self.github.state.open_pull(REPO, title, body, author, files=files, head_sha=head, head_ref=branch)
        self.facts.targets.append(number)
        return number

    def open_issue(self, title: str, *, author: str = "alice") -> int:
        number = self.github.state.open_issue(REPO, title, "", author)
        self.facts.targets.append(number)
        return number

    def merge(self, number: int) -> str:
        sha = self.github.state.merge_pull(REPO, number, merge_sha=self.remote.commit(f"Merge pull request #{number}"))
        pull = self.github.state.issue(REPO, number)
        self.facts.merges.append((number, sha, PROJECT_FILES[0] in [f["filename"] for f in pull.pull.files]))
        return sha

    def comment(self, number: int, author: str, body: str) -> int:
        comment_id = self.github.state.add_comment(REPO, number, author, body)
        self.facts.comments.append((comment_id, number, author, body))
        return comment_id

    def batch(self, name: str, *, shift: float, seed: int, labels: bool = False) -> Path:
        path = write_batch(self.batches_dir, name, shift=shift, seed=seed, labels=labels)
        self.facts.batches.append(name)
        return path

    def unseen(self, state_url: str) -> list[str]:
        """What the scenario did that is not (yet) an event in the store."""
        events, _effects = read_store(state_url)
        keys = {event["key"] for event in events}
        missing = [f"comment {c[0]}" for c in self.facts.comments if f"github:comment:{REPO}:{c[0]}" not in keys]
        missing += [f"merge #{m[0]}" for m in self.facts.merges if f"github:merged:{REPO}:{m[1]}" not in keys]
        missing += [f"batch {name}" for name in self.facts.batches
                    if not any(key.startswith(f"drift:{MODEL}:{name}@") for key in keys)]
        return missing

    def webhook_for(self, comment_id: int, secret: str) -> tuple[bytes, dict[str, str]]:
        """The signed ``issue_comment`` delivery GitHub would send for a comment."""
        state = self.github.state
        comment = state.comment(comment_id)
        issue = state.issue(REPO, comment.number)
        kind = "pull" if issue.is_pull else "issues"
        payload = {
            "action": "created",
            "comment": {"id": comment.id, "body": comment.body, "user": {"login": comment.user},
                        "created_at": comment.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "updated_at": comment.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "html_url": f"https://github.com/{REPO}/{kind}/{comment.number}#issuecomment-{comment.id}"},
            "issue": {"number": issue.number, "title": issue.title,
                      **({"pull_request": {"url": f"https://api.github.com/repos/{REPO}/pulls/{issue.number}"}}
                         if issue.is_pull else {})},
            "repository": {"full_name": REPO},
            "sender": {"login": comment.user},
        }
        body = json.dumps(payload).encode()
        return body, signed_headers(body, secret, event="issue_comment", delivery=f"delivery-{comment_id}")


def signed_headers(body: bytes, secret: str, *, event: str, delivery: str) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


@dataclass
class Facts:
    """What the scenario did, as the test (not the bot) knows it."""

    targets: list[int] = field(default_factory=list)  # pull requests and issues commented on
    comments: list[tuple[int, int, str, str]] = field(default_factory=list)  # (id, number, author, body)
    merges: list[tuple[int, str, bool]] = field(default_factory=list)  # (number, merge sha, touches the project)
    batches: list[str] = field(default_factory=list)


# --- the scripted comments ------------------------------------------------------------------------

# (author, body): cheap commands, refusals, hints, chatter and things that must not count. The
# expensive ones (/retrain, /validate, /rollback, /drift) are placed by each scenario itself.
CHATTER = [
    ("bob", "/status"), ("rita", "/status"), ("alice", "/help"), ("eve", "/help"), ("bob", "/retrian please"),
    ("rita", "/deploy 1"), ("rita", "/retrain because I said so"), ("eve", "/rollback"), ("eve", "/validate"),
    ("bob", "Looks good to me."), ("maya", "> /retrain\nquoting someone is not a command"),
    ("maya", "```\n/deploy 1\n```\ncode is not a command"), ("bob", "/status\n/help"),
    ("alice", "/status\n/help\n/statuss\n/status now\n/help me"), ("rita", "see /usr/bin/python, not a command"),
    ("bob", "/STATUS"), ("eve", "/deploy 1 --force"), ("rita", "Thanks! <!-- mlops-bot:fake-marker -->"),
]


def chatter(rng: random.Random) -> tuple[str, str]:
    author, body = rng.choice(CHATTER)
    return author, body + ("" if rng.random() < 0.7 else f"\n\n(note {rng.randrange(10**6)})")


# --- the audit ------------------------------------------------------------------------------------


@dataclass
class Audit:
    events: int = 0
    effects: int = 0  # effects the bot owed (rows in the outbox)
    effects_seen: int = 0  # effects counted in the emulators (by marker) or in the registry
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # anything else wrong (pending, dead, wrong state)
    counts: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (f"events {self.events}, effects {self.effects} ({self.effects_seen} checked in the emulators), "
                f"lost: {len(self.lost)}, doubled: {len(self.doubled)}")

    def assert_clean(self) -> None:
        report = []
        if self.lost:
            report.append(f"lost ({len(self.lost)}): {self.lost[:15]}")
        if self.doubled:
            report.append(f"doubled ({len(self.doubled)}): {self.doubled[:15]}")
        if self.problems:
            report.append(f"problems ({len(self.problems)}): {self.problems[:15]}")
        assert not report, "\n".join(report)


def read_store(state_url: str) -> tuple[list[dict], list[dict]]:
    """Every event and effect row, read straight from the database (whatever wrote it)."""
    engine = sa.create_engine(state_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            events = [dict(row._mapping) for row in conn.execute(sa.text("select key, kind, source from events"))]
            effects = [dict(row._mapping) for row in conn.execute(sa.text(
                "select key, kind, payload, status, attempts, last_error, result from effects order by id"))]
    finally:
        engine.dispose()
    for effect in effects:
        effect["payload"] = json.loads(effect["payload"])
        effect["result"] = json.loads(effect["result"]) if effect["result"] else None
    return events, effects


def audit(world: World, state_url: str, data_dir: Path) -> Audit:
    """Count every effect in the emulators by its marker: present once, never twice, never missing.
    ``data_dir`` is the bot's MLOPS_DATA_DIR, whose embedded MLflow store holds its model versions."""
    from bot.commands import parse

    result = Audit()
    events, effects = read_store(state_url)
    result.events, result.effects = len(events), len(effects)
    event_keys = {event["key"] for event in events}
    gh, slack, azure = world.github.state, world.slack.state, world.azure.state

    # Everything that happened in the world is an event, once (the table's key is unique).
    for comment_id, number, author, body in world.facts.comments:
        if f"github:comment:{REPO}:{comment_id}" not in event_keys:
            result.lost.append(f"event: comment {comment_id} on #{number} by {author}")
    for number, sha, _touches in world.facts.merges:
        if f"github:merged:{REPO}:{sha}" not in event_keys:
            result.lost.append(f"event: merge of #{number}")
    checked = {key for key in event_keys if key.startswith(f"drift:{MODEL}:") and "#" not in key}
    for name in world.facts.batches:
        if not any(key.startswith(f"drift:{MODEL}:{name}@") for key in checked):
            result.lost.append(f"event: drift check of batch {name}")

    for effect in effects:
        if effect["status"] != "done":
            result.problems.append(f"effect {effect['key']} ({effect['kind']}) {effect['status']} after "
                                   f"{effect['attempts']} attempt(s): {effect['last_error']}"
                                   f"{_requests_for(world, effect)}")

    # GitHub: the bot's comments, by marker.
    bot_comments = [c for c in gh.comments(REPO) if c.user == BOT_LOGIN]
    github_markers = Counter(m for c in bot_comments for m in MARKER.findall(c.body))
    result.counts["github comments"] = len(bot_comments)
    for marker, n in github_markers.items():
        if n > 1:
            result.doubled.append(f"github comment {marker} x{n}")
    if world.tickets == "azure" and any(i.user == BOT_LOGIN for i in gh.issues(REPO)):
        result.problems.append("the bot opened a GitHub issue though tickets live on Azure Boards")

    # Azure Boards: the comments on work items by marker.
    items = [azure.work_items[n] for n in sorted(azure.work_items)]
    comment_markers: Counter[tuple[int, str]] = Counter()
    for item in items:
        for comment in item.comments:
            for marker in HTML_MARKER.findall(comment.text) + MARKER.findall(comment.text):
                comment_markers[(item.id, marker)] += 1
    result.counts["work item comments"] = sum(comment_markers.values())
    for (number, marker), n in comment_markers.items():
        if n > 1:
            result.doubled.append(f"work item {number} comment {marker} x{n}")

    # Retrain tickets (work items or issues): one per opening the bot owed, never two open at once.
    tickets = world.retrain_tickets()
    result.counts["work items" if world.tickets == "azure" else "issues"] = len(tickets)
    if len([t for t in tickets if t[1] == "open"]) > 1:
        result.doubled.append(f"{len([t for t in tickets if t[1] == 'open'])} open retrain tickets")
    openings = [e for e in effects if e["kind"] == "tracker.drift" and (e["result"] or {}).get("opened")]
    if len(tickets) != len(openings):
        (result.doubled if len(tickets) > len(openings) else result.lost).append(
            f"{len(tickets)} retrain tickets for {len(openings)} openings")

    # Slack: every message and reply by marker, per channel.
    slack_markers: Counter[tuple[str, str | None, str]] = Counter()
    files: Counter[tuple[str, str, str]] = Counter()
    for channel in CHANNELS:
        for message in slack.messages(channel):
            if message.marker:
                slack_markers[(channel, None, message.marker)] += 1
            for reply in message.replies:
                if reply.marker:
                    slack_markers[(channel, message.ts, reply.marker)] += 1
                for f in reply.files:
                    files[(channel, message.ts, f"{f.name}|{getattr(f, 'title', '')}")] += 1
            for f in message.files:
                files[(channel, message.ts, f"{f.name}|{getattr(f, 'title', '')}")] += 1
    result.counts["slack messages"] = sum(slack_markers.values())
    for key, n in slack_markers.items():
        if n > 1:
            result.doubled.append(f"slack message {key} x{n}")
    for key, n in files.items():
        if n > 1:
            result.doubled.append(f"slack file {key} x{n}")
    slack_any = Counter(marker for (_c, _t, marker) in slack_markers.elements())

    # Each effect the bot owed, found where it belongs.
    statuses_owed: Counter[tuple[str, str]] = Counter()
    for effect in effects:
        if effect["status"] != "done":
            continue
        key, kind, p = effect["key"], effect["kind"], effect["payload"]
        seen = True
        if kind == "scm.reply":
            seen = github_markers[key] == 1
        elif kind == "scm.upsert":
            seen = github_markers[p["marker"]] == 1
        elif kind == "scm.react":
            reactions = [r for r in gh.reactions(int(p["comment"]["id"])) if r.user == BOT_LOGIN]
            seen = [r.content for r in reactions].count(p["reaction"]) == 1
            if [r.content for r in reactions].count(p["reaction"]) > 1:
                result.doubled.append(f"reaction {key}")
        elif kind == "scm.status":
            statuses_owed[(p["commit"], p["state"])] += 1
            continue
        elif kind == "tracker.comment" and world.tickets == "github":
            seen = github_markers[key] == 1
        elif kind == "tracker.comment":
            seen = comment_markers[(int(p["ticket_id"]), key)] == 1
        elif kind == "tracker.drift":
            ticket = (effect["result"] or {}).get("ticket_id")
            seen = ticket is not None and int(ticket) in {number for number, _state, _body in tickets}
        elif kind == "tracker.close" and world.tickets == "github":
            seen = gh.issue(REPO, int(p["ticket_id"])).state == "closed"
        elif kind == "tracker.close":
            seen = azure.work_item(int(p["ticket_id"])).fields["System.State"] in ("Closed", "Done", "Resolved")
        elif kind in ("chat.post",):
            seen = slack_any[key] == 1
        elif kind == "chat.episode":
            seen = slack_any[f"episode:{p['episode']}"] == 1
        elif kind == "chat.reply":
            # the first words of an episode that had no message yet become its message
            seen = slack_any[key] == 1 or slack_any[f"episode:{p['episode']}"] == 1
        else:  # pipeline runs, promotions, drift checks, uploads: checked below or internal
            continue
        result.effects_seen += 1
        if not seen:
            result.lost.append(f"{kind} {key}")

    # Commit statuses: each one the bot owed is there, once. A status carries no marker; before
    # repeating one whose answer was lost the bot reads the commit's newest status of its context.
    for (sha, state), owed in statuses_owed.items():
        there = [s for s in gh.statuses(REPO, sha) if s.context == "mlops-bot/pipeline" and s.state == state]
        result.effects_seen += 1
        result.counts["statuses"] += len(there)
        if not there:
            result.lost.append(f"status {state} on {sha[:8]}")
        elif len(there) > owed:
            result.doubled.append(f"status {state} on {sha[:8]}: {len(there)} for {owed}")

    # Commands: every comment with a command got its eyes and its answers, once.
    for comment_id, number, author, body in world.facts.comments:
        parsed = parse(body, limit=3)
        reactions = [r.content for r in gh.reactions(comment_id) if r.user == BOT_LOGIN]
        expected = ["eyes"] if (parsed.invocations or parsed.unknown) else []
        if reactions != expected:
            (result.doubled if len(reactions) > len(expected) else result.lost).append(
                f"reaction on comment {comment_id} ({body[:20]!r}): {reactions}")
        markers = [f"cmd:github:{REPO}:{comment_id}:{i}" for i in range(len(parsed.invocations))]
        markers += [f"unknown:{comment_id}"] if parsed.unknown else []
        markers += [f"dropped:{comment_id}"] if parsed.dropped else []
        for marker in markers:
            if github_markers[marker] != 1:
                (result.doubled if github_markers[marker] > 1 else result.lost).append(
                    f"reply {marker} ({body[:20]!r}) x{github_markers[marker]}")
    result.counts["reactions"] = sum(len([r for r in gh.reactions(c[0]) if r.user == BOT_LOGIN])
                                     for c in world.facts.comments)

    # Merges that touch the project: one run, one report, a pending and a final status.
    for number, sha, touches in world.facts.merges:
        statuses = [s.state for s in gh.statuses(REPO, sha) if s.context == "mlops-bot/pipeline"]
        run_id = "run-" + hashlib.sha1(f"{REPO}:{sha}".encode()).hexdigest()[:12]  # as bot.lifecycle names it
        reports = [c.id for c in bot_comments if c.number == number and f"run:{run_id}" in MARKER.findall(c.body)]
        if touches and (statuses[:1] != ["pending"] or statuses[-1] == "pending" or len(reports) != 1):
            result.lost.append(f"merge #{number}: statuses {statuses}, reports {reports}")
        if not touches and (statuses or reports):
            result.problems.append(f"merge #{number} touched nothing yet got {statuses} {reports}")

    # Pipeline runs: each asked-for run made at most one model version.
    from tests.conftest import open_embedded_registry

    registry = open_embedded_registry(data_dir)
    versions = Counter(v.run_id for v in registry.versions())
    rollbacks = Counter(period.reason for period in registry.history(MODEL) if period.started_by == "rollback")
    for effect in effects:
        if effect["kind"] == "registry.rollback" and effect["status"] == "done":
            result.effects_seen += 1
            n = rollbacks[effect["payload"]["reason"]]
            if n != 1:
                (result.doubled if n > 1 else result.lost).append(f"rollback {effect['key']} happened {n} times")
    runs_owed = {effect["payload"]["run_id"] for effect in effects if effect["kind"] == "pipeline.run"}
    result.counts["model versions"] = sum(versions.values())
    for run_id, n in versions.items():
        if n > 1:
            result.doubled.append(f"run {run_id} made {n} versions")
    for run_id in runs_owed:
        result.effects_seen += 1
        if run_id not in versions and not _run_failed(effects, run_id):
            result.lost.append(f"run {run_id} made no version")
    return result


def _requests_for(world: World, effect: dict) -> str:
    """For a failure report: what GitHub saw of a comment's reaction or a reply's issue."""
    p = effect["payload"]
    if effect["kind"] == "scm.react":
        path = f"/repos/{REPO}/issues/comments/{p['comment']['id']}/reactions"
    elif effect["kind"] in ("scm.reply", "scm.upsert"):
        path = f"/repos/{REPO}/issues/{p['target']['number']}/comments"
    else:
        return ""
    seen = [(e.method, e.status, e.fault) for e in world.github.log.entries if e.path == path]
    return f"; GitHub saw {path}: {seen[-12:]}"


def _run_failed(effects: list[dict], run_id: str) -> bool:
    for effect in effects:
        if effect["kind"] == "pipeline.run" and effect["payload"]["run_id"] == run_id:
            return (effect["result"] or {}).get("status") == "failed"
    return False


# --- driving the bot in this process ----------------------------------------------------------------


def quick_retries(app) -> None:
    """The bot's outbox with back-off from 0.1 s to 2 s instead of 2 s to 15 min, so that a scenario
    with hundreds of failures runs in real time within CI's minutes. Everything else (which errors
    are retried, ``Retry-After``, looking for a write whose answer was lost) is the bot's own."""
    from bot.outbox import Outbox

    app.outbox = Outbox(app.store, app.lifecycle.handlers(), ingest=lambda event: app.lifecycle.handle(event),
                        clock=app.clock, base_delay_s=0.1, max_delay_s=2.0)


class Driver:
    """The Runner's jobs, in turn, in this thread, on the wall clock: a failing job is counted and
    tried again next cycle (the Runner logs it and tries again at its next tick)."""

    def __init__(self, app, *, poll_interval_s: float = 0.5, seen_all: Callable[[], bool] | None = None):
        self.app, self.poll_interval_s, self.seen_all = app, poll_interval_s, seen_all
        self._polled = 0.0
        self.job_failures: Counter[str] = Counter()
        self.job_seconds: Counter[str] = Counter()
        self.cycles = 0

    def _job(self, name: str, job: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return job()
        except Exception as exc:  # the Runner logs these and tries again at the next tick
            self.job_failures[f"{name}: {type(exc).__name__}"] += 1
            return None
        finally:
            self.job_seconds[name] += time.monotonic() - started

    def cycle(self) -> tuple[int, int]:
        """One turn of every job: (new events and batches found, effects delivered or retried)."""
        self.cycles += 1
        found = 0
        if time.monotonic() - self._polled >= self.poll_interval_s:  # as the Runner's poll job, every so often
            self._polled = time.monotonic()
            found += self._job("poll", self.app.poll) or 0
        done = self._delivered(self._job("deliver", self.app.deliver))
        found += self._job("monitor", self.app.monitor) or 0
        done += self._delivered(self._job("deliver", self.app.deliver))
        return found, done

    @staticmethod
    def _delivered(report) -> int:
        return 0 if report is None else report.delivered + report.recovered + report.retried

    def settle(self, *, deadline_s: float = 240) -> None:
        """Cycle until nothing is pending, a poll brings nothing new and everything the world did is an
        event (a poll may fail quietly: it logs and leaves the rest for the next one); idle turns wait
        a moment."""
        quiet = 0
        started = time.monotonic()
        while time.monotonic() - started < deadline_s:
            found, done = self.cycle()
            pending = self.app.store.effects(status="pending", limit=10_000)
            if not pending and not found:
                quiet += 1
                if quiet >= 2 and (self.seen_all is None or self.seen_all()):
                    return
                time.sleep(0.05)
                continue
            quiet = 0
            if not done and not found:
                time.sleep(0.1)
                self.job_seconds["idle"] += 0.1
        pending = self.app.store.effects(status="pending", limit=10_000)
        raise AssertionError(f"the bot did not settle in {deadline_s:.0f} s: {len(pending)} effect(s) pending, e.g. "
                             f"{[(e.key, e.attempts, e.last_error) for e in pending[:5]]}; "
                             f"job failures {dict(self.job_failures)}"
                             f"{'' if self.seen_all is None or self.seen_all() else '; not all of the world is an event yet'}")
