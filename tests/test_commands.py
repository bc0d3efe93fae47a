"""The slash-commands: parsing, permissions, each handler's branches, the registry and /help."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from bot import commands
from bot.commands import (
    REGISTRY,
    CheckDrift,
    CommandSpec,
    Invocation,
    Promote,
    Reply,
    Request,
    Rollback,
    RunPipeline,
    check_overrides,
    help_text,
    parse,
    refusal,
    required_permission,
    respond,
    unknown_reply,
)
from integrations.ports import Permission, Target, Ticket

MODEL = "churn"
PR = Target("change", "acme/churn", 7)


@dataclass
class FakeContext:
    """The read-only state the handlers see, as plain data; ``calls`` records what was asked."""

    production_: dict | None = None
    versions_: list[dict] = field(default_factory=list)
    previous: int | None = None
    ticket: Ticket | None = None
    runs: list[dict] = field(default_factory=list)
    drift: dict | None = None
    episode: dict | None = None
    performance_: dict | None = None
    calls: list[str] = field(default_factory=list)

    def production(self, model: str) -> dict | None:
        self.calls.append(f"production {model}")
        return self.production_

    def versions(self, model: str) -> list[dict]:
        self.calls.append(f"versions {model}")
        return self.versions_

    def previous_production(self, model: str) -> int | None:
        self.calls.append(f"previous_production {model}")
        return self.previous

    def open_ticket(self, model: str) -> Ticket | None:
        self.calls.append(f"open_ticket {model}")
        return self.ticket

    def recent_runs(self, model: str, limit: int = 5) -> list[dict]:
        self.calls.append(f"recent_runs {model} {limit}")
        return self.runs[:limit]

    def last_drift(self, model: str) -> dict | None:
        self.calls.append(f"last_drift {model}")
        return self.drift

    def drift_episode(self, model: str) -> dict | None:
        return self.episode

    def performance(self, model: str) -> dict | None:
        return self.performance_


class ClockedContext(FakeContext):
    def now(self) -> datetime:
        return datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


def version(n: int, stage: str, passed: bool, auc: float) -> dict:
    return {"version": n, "stage": stage, "passed": passed, "metrics": {"roc_auc": auc},
            "created_at": f"2026-01-0{n}T12:00:00+00:00"}


def live_context(**changes) -> FakeContext:
    """v1 archived, v2 failed validation, v3 in production, v4 a candidate that passed."""
    values = dict(
        production_={"version": 3, "metrics": {"roc_auc": 0.95, "accuracy": 0.9}, "primary_metric": "roc_auc",
                     "created_at": "2026-01-03T12:00:00+00:00", "run_id": "run-3"},
        versions_=[version(1, "archived", True, 0.90), version(2, "candidate", False, 0.91),
                   version(3, "production", True, 0.95), version(4, "candidate", True, 0.96)],
        previous=1,
    )
    values.update(changes)
    return FakeContext(**values)


def request(line: str, permission: Permission = Permission.admin, author: str = "bob") -> Request:
    parsed = parse(line)
    assert len(parsed.invocations) == 1, parsed
    return Request(parsed.invocations[0], PR, author, MODEL, permission)


def run(line: str, ctx: FakeContext | None = None, **kwargs) -> Reply:
    return respond(request(line, **kwargs), ctx if ctx is not None else live_context())


# --- parsing ---------------------------------------------------------------------------------

FENCE = "```"


@pytest.mark.parametrize(
    ("body", "invocations", "unknown"),
    [
        ("/retrain", [("retrain", "")], []),
        ("/retrain because data moved", [("retrain", "because data moved")], []),
        ("/retrain   spaced out \t", [("retrain", "spaced out")], []),
        ("> /retrain", [], []),
        (">/retrain", [], []),
        ("> > /retrain", [], []),
        ("text\n/retrain\nmore", [("retrain", "")], []),
        (f"{FENCE}\n/retrain\n{FENCE}", [], []),
        (f"{FENCE}bash\n/retrain\n{FENCE}\n/status", [("status", "")], []),
        ("~~~\n/retrain\n~~~", [], []),
        ("````\n```\n/retrain\n````\n/drift", [("drift", "")], []),  # a shorter fence does not close
        (f"{FENCE}\n/retrain", [], []),  # an unclosed fence runs to the end
        ("```/retrain```\n/status", [("status", "")], []),  # inline code, not a fence
        ("  /retrain", [], []),
        ("\t/retrain", [], []),
        ("/RETRAIN", [("retrain", "")], []),
        ("/Deploy V4", [("deploy", "V4")], []),
        ("/usr/bin/python is broken", [], []),
        ("/path/to", [], []),
        ("/retrain, please", [], []),
        ("/retrian", [], ["/retrian"]),
        ("/retrian\n/Retrian now", [], ["/retrian"]),
        ("/retrain-now", [], ["/retrain-now"]),
        ("<!-- /retrain -->", [], []),
        ("<!--\n/retrain\n-->\n/status", [("status", "")], []),
        ("/status <!-- mlops-bot:abc -->", [("status", "")], []),
        ("<!-- a --> /retrain", [], []),
        ("/retrain\r\n", [("retrain", "")], []),
        ("hello\r\n/deploy 3\r\n/status\r\n", [("deploy", "3"), ("status", "")], []),
        ("\ufeff/status", [("status", "")], []),
        ("/retrain\n/retrain", [("retrain", "")], []),  # the same command twice counts once
        ("see /retrain", [], []),
        ("", [], []),
    ],
)
def test_parse(body, invocations, unknown):
    parsed = parse(body)
    assert [(i.name, i.args) for i in parsed.invocations] == invocations
    assert list(parsed.unknown) == unknown
    assert parsed.dropped == 0


def test_parse_keeps_the_line():
    assert parse("intro\n/Deploy 4 --force\r\n").invocations == (Invocation("deploy", "4 --force", "/Deploy 4 --force"),)


def test_parse_limit_drops_the_rest():
    body = "/status\n/retrain\n/drift\n/validate\n/help"
    parsed = parse(body, limit=3)
    assert [i.name for i in parsed.invocations] == ["status", "retrain", "drift"]
    assert parsed.dropped == 2
    assert parse(body, limit=5).dropped == 0
    assert parse(body, limit=0).dropped == 5
    with pytest.raises(ValueError, match="limit"):
        parse(body, limit=-1)


# --- permissions -----------------------------------------------------------------------------

DEFAULTS = {"retrain": "write", "validate": "write", "ok-to-test": "write", "drift": "write", "deploy": "maintain",
            "rollback": "maintain", "status": "read", "help": "read"}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
@pytest.mark.parametrize("level", list(Permission))
def test_permission_table(name, level):
    required = Permission[DEFAULTS[name]]
    assert required_permission(name) == required
    ctx = live_context()
    req = request(f"/{name}", permission=level)
    reply = respond(req, ctx)
    if level < required:
        assert reply == refusal(REGISTRY[name], req, required)
        assert f"`/{name}` needs **{required.name}** permission" in reply.text
        assert reply.actions == ()
        assert ctx.calls == []  # refused before anything was looked at
    else:
        assert reply == REGISTRY[name].handler(req, live_context())
        assert "needs **" not in reply.text


@pytest.mark.parametrize(
    ("required", "have", "text"),
    [
        (Permission.maintain, Permission.write,
         "@bob, `/deploy` needs **maintain** permission or higher (you have **write**). "
         "Ask someone with maintain or admin access to run it."),
        (Permission.admin, Permission.maintain,
         "@bob, `/deploy` needs **admin** permission (you have **maintain**). Ask someone with admin access to run it."),
        (Permission.read, Permission.none,
         "@bob, `/deploy` needs **read** permission or higher (you have no access here). "
         "Ask someone with read, triage, write, maintain or admin access to run it."),
    ],
)
def test_refusal_text(required, have, text):
    assert refusal(REGISTRY["deploy"], request("/deploy", have), required) == Reply(text)


@pytest.mark.parametrize(
    ("name", "overrides", "level"),
    [
        ("status", {"status": "write"}, Permission.write),
        ("deploy", {"deploy": "admin"}, Permission.admin),
        ("deploy", {"/Deploy": "ADMIN"}, Permission.admin),
        ("deploy", {"status": "write"}, Permission.maintain),
        ("retrain", {"retrain": Permission.maintain}, Permission.maintain),
        ("/Retrain", None, Permission.write),
    ],
)
def test_overrides(name, overrides, level):
    assert required_permission(name, overrides) == level


def test_override_applies_in_respond():
    ctx = live_context()
    assert run("/status", ctx, permission=Permission.read).text.startswith("Status of **churn**")
    reply = respond(request("/status", Permission.read), ctx, overrides={"status": "write"})
    assert reply.text == ("@bob, `/status` needs **write** permission or higher (you have **read**). "
                          "Ask someone with write, maintain or admin access to run it.")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"deploy": "boss"}, "/deploy: 'boss' is not a level; use one of read, triage, write, maintain, admin"),
        ({"deploy": "none"}, "/deploy: 'none' is not a level"),
        ({"deploy": Permission.none}, "/deploy"),
        ({"deplyo": "admin"}, "unknown command 'deplyo'"),
    ],
)
def test_bad_override(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        required_permission("status", overrides)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_overrides(overrides)


def test_required_permission_of_unknown_command():
    with pytest.raises(ValueError, match="unknown command '/nope'"):
        required_permission("/nope")


# --- handlers --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "text", "actions"),
    [
        ("/retrain", "Retraining **churn** (reason: `/retrain by @bob`). I'll reply here with the result.",
         (RunPipeline("/retrain by @bob", promote=True),)),
        ("/retrain data moved", "Retraining **churn** (reason: `data moved`). I'll reply here with the result.",
         (RunPipeline("data moved", promote=True),)),
        ("/retrain use `rm` -- now", "Retraining **churn** (reason: `use 'rm' -- now`). I'll reply here with the result.",
         (RunPipeline("use `rm` -- now", promote=True),)),
        ("/validate", "Training and validating **churn** without deploying it. I'll reply here with the result.",
         (RunPipeline("/validate by @bob", promote=False),)),
        ("/validate now", "@bob, `/validate` takes no arguments (got `now`). Usage: `/validate`, for example "
         "`/validate`. Type `/help` for all commands.", ()),
        ("/drift", "Checking **churn** for drift on the latest production data. I'll reply here with the result.",
         (CheckDrift(),)),
        ("/drift age", "@bob, `/drift` takes no arguments (got `age`). Usage: `/drift`, for example `/drift`. "
         "Type `/help` for all commands.", ()),
        ("/rollback", "Rolling **churn** back from v3 to v1 (reason: `/rollback by @bob`). "
         "I'll reply here when it is done.", (Rollback("/rollback by @bob"),)),
        ("/rollback latency doubled", "Rolling **churn** back from v3 to v1 (reason: `latency doubled`). "
         "I'll reply here when it is done.", (Rollback("latency doubled"),)),
        ("/status please", "@bob, `/status` takes no arguments (got `please`). Usage: `/status`, for example "
         "`/status`. Type `/help` for all commands.", ()),
    ],
)
def test_simple_handlers(line, text, actions):
    assert run(line) == Reply(text, actions)


def test_rollback_with_nothing_to_restore():
    assert run("/rollback", live_context(previous=None)) == Reply(
        "@bob, there is nothing to roll back to: **churn** has no earlier production version.")


def test_rollback_without_production():
    assert run("/rollback", live_context(production_=None)).text.startswith("Rolling **churn** back to v1 ")


def test_drift_without_production():
    assert run("/drift", FakeContext()) == Reply(
        "@bob, **churn** has no model in production yet, so there is nothing to check for drift. "
        "Type `/retrain` to train one.")


DEPLOY_USAGE = "Usage: `/deploy [version] [--force]`, for example `/deploy 4`. Type `/help` for all commands."


@pytest.mark.parametrize(
    ("line", "ctx", "text", "actions"),
    [
        ("/deploy", live_context(), "Deploying v4 of **churn**, replacing v3. I'll reply here when it is live.",
         (Promote(4, "/deploy by @bob"),)),
        ("/deploy 4", live_context(), "Deploying v4 of **churn**, replacing v3. I'll reply here when it is live.",
         (Promote(4, "/deploy by @bob"),)),
        ("/deploy v4", live_context(), "Deploying v4 of **churn**, replacing v3. I'll reply here when it is live.",
         (Promote(4, "/deploy by @bob"),)),
        ("/deploy 1", live_context(), "Deploying v1 of **churn**, replacing v3. I'll reply here when it is live.",
         (Promote(1, "/deploy by @bob"),)),
        ("/deploy 3", live_context(), "@bob, v3 of **churn** is already in production.", ()),
        ("/deploy 9", live_context(), "@bob, **churn** has no v9. Available: v1 (archived, passed), "
         "v2 (candidate, did not pass), v3 (production), v4 (candidate, passed).", ()),
        ("/deploy 1", FakeContext(), "@bob, **churn** has no v1. It has no versions yet. Type `/retrain` to train one.",
         ()),
        ("/deploy 2", live_context(), "@bob, v2 of **churn** did not pass validation (roc_auc 0.9100; production v3 "
         "has 0.9500), so I won't deploy it. If you are sure, type `/deploy 2 --force`.", ()),
        ("/deploy 2 --force", live_context(), "Deploying v2 of **churn**, replacing v3. I'll reply here when it is live.",
         (Promote(2, "/deploy by @bob (--force: validation did not pass)"),)),
        ("/deploy --FORCE v2", live_context(),
         "Deploying v2 of **churn**, replacing v3. I'll reply here when it is live.",
         (Promote(2, "/deploy by @bob (--force: validation did not pass)"),)),
        ("/deploy", live_context(versions_=[version(1, "candidate", True, 0.9)], production_=None),
         "Deploying v1 of **churn**. I'll reply here when it is live.", (Promote(1, "/deploy by @bob"),)),
        ("/deploy", live_context(versions_=[*live_context().versions_, version(5, "candidate", False, 0.97)]),
         "Deploying v4 of **churn**, replacing v3. I'll reply here when it is live.", (Promote(4, "/deploy by @bob"),)),
        ("/deploy", live_context(versions_=[version(2, "candidate", True, 0.9), version(3, "production", True, 0.95)]),
         "@bob, **churn** has no candidate newer than production v3 that passed validation. "
         "Type `/retrain` to train one, or `/deploy <version>` to pick one.", ()),
        ("/deploy", FakeContext(), "@bob, **churn** has no candidate that passed validation. "
         "Type `/retrain` to train one, or `/deploy <version>` to pick one.", ()),
        ("/deploy abc", live_context(), f"@bob, I could not read `abc` as a version number. {DEPLOY_USAGE}", ()),
        ("/deploy -3", live_context(), f"@bob, I could not read `-3` as a version number. {DEPLOY_USAGE}", ()),
        ("/deploy 3.5", live_context(), f"@bob, I could not read `3.5` as a version number. {DEPLOY_USAGE}", ()),
        ("/deploy 4 5", live_context(), f"@bob, I could not read `5` as a version number. {DEPLOY_USAGE}", ()),
        ("/deploy " + "9" * 5000, live_context(),
         f"@bob, I could not read `{'9' * 59}…` as a version number. {DEPLOY_USAGE}", ()),
        ("/deploy --force", live_context(), f"@bob, `--force` needs the version to force. {DEPLOY_USAGE}", ()),
    ],
)
def test_deploy(line, ctx, text, actions):
    assert run(line, ctx) == Reply(text, actions)


STATUS_FULL = """\
Status of **churn**

- Production: **v3**, roc_auc 0.9500, since 2026-01-03 12:00 UTC (2 days ago)
- Retrain ticket: [ticket:12](https://t/12) Retrain churn: drift
- Last drift check: 2026-01-05 13:30 UTC (30 minutes ago) on `b-17.csv`: **drift** (severity high) in `age`, `income`

Recent runs:

| Run | Status | Version | Trigger | Started |
| --- | --- | --- | --- | --- |
| `run-5` | running | – | command | 2026-01-05 13:00 UTC |
| `run-4` | succeeded | v4 | drift\\|manual | 2026-01-04 10:00 UTC |"""

STATUS_EMPTY = """\
Status of **churn**

- No model in production yet. Type `/retrain` to train one.
- Retrain ticket: none open
- Last drift check: none yet. Type `/drift` to run one.

No pipeline runs yet."""


def test_status_full():
    ctx = ClockedContext(**vars(live_context(
        ticket=Ticket(12, "retrain:churn", "Retrain churn: drift", "open", url="https://t/12"),
        drift={"drifted": True, "severity": "high", "checked_at": "2026-01-05T13:30:00+00:00", "batch": "b-17.csv",
               "features": ["age", "income"]},
        runs=[{"run_id": "run-5", "status": "running", "version": None, "trigger": "command",
               "started_at": "2026-01-05T13:00:00+00:00"},
              {"run_id": "run-4", "status": "succeeded", "version": 4, "trigger": "drift|manual",
               "started_at": "2026-01-04T10:00:00"}],
    )))
    assert run("/status", ctx) == Reply(STATUS_FULL)
    assert "recent_runs churn 5" in ctx.calls


def test_status_with_nothing_yet():
    assert run("/status", FakeContext()) == Reply(STATUS_EMPTY)


def test_status_without_a_clock_and_without_drift():
    ctx = live_context(drift={"drifted": False, "severity": "none", "checked_at": "2026-01-05T13:30:00Z",
                              "batch": "b-18.csv", "features": []},
                       ticket=Ticket(3, "retrain:churn", "Retrain churn", "open"))
    lines = run("/status", ctx).text.splitlines()
    assert lines[2:5] == [
        "- Production: **v3**, roc_auc 0.9500, since 2026-01-03 12:00 UTC",
        "- Retrain ticket: ticket:3 Retrain churn",
        "- Last drift check: 2026-01-05 13:30 UTC on `b-18.csv`: no drift",
    ]


def test_status_shows_performance_on_production_data_measured_and_estimated():
    performance = {
        "window": {"rows": 800, "version": 3, "metrics": {"roc_auc": 0.91}, "validated": {"roc_auc": 0.95}},
        "last_batch": "b-18.csv",
        "batches": {"b-18.csv": {"measured": {"rows": 400, "metrics": {"roc_auc": 0.9}},
                                 "estimated": {"roc_auc": 0.93}, "estimate_error": {"roc_auc": 0.03},
                                 "finding": {"problems": ["roc_auc on batch b-18.csv 0.90, validated 0.95: a drop "
                                                          "of 0.05, more than the 0.01 allowed"]}}},
    }
    lines = run("/status", live_context(performance_=performance)).text.splitlines()
    assert "- Performance of v3 on 800 labelled production rows: roc_auc 0.9100 (validated 0.9500)" in lines
    assert ("- Newest batch b-18.csv: measured roc_auc 0.9000; estimated roc_auc 0.9300; estimate off by "
            "roc_auc 0.0300") in lines
    assert any(line.startswith("- ⚠️ roc_auc on batch b-18.csv 0.90") for line in lines)


def test_help_handler_uses_overrides():
    req = request("/help", Permission.read)
    assert respond(req, FakeContext()) == Reply(help_text())
    with_overrides = respond(req, FakeContext(), overrides={"deploy": "admin"})
    assert with_overrides == Reply(help_text({"deploy": "admin"}))
    assert "| `/deploy [version] [--force]` | Deploy a version; without one, the newest candidate that passed " \
           "validation. | admin | `/deploy`, `/deploy 4`, `/deploy 4 --force` |" in with_overrides.text


# --- unknown commands and failures -----------------------------------------------------------

@pytest.mark.parametrize(
    ("names", "text"),
    [
        (["/retrian"], "`/retrian` is not a command I know. Did you mean `/retrain`? Type `/help` for the list."),
        (["/Stauts"], "`/Stauts` is not a command I know. Did you mean `/status`? Type `/help` for the list."),
        (["/shrug"], "`/shrug` is not a command I know. Type `/help` for the list."),
        (["/retrian", "/shrug"], "These are not commands I know: `/retrian` (did you mean `/retrain`?), `/shrug`. "
         "Type `/help` for the list."),
        ([f"/x{i}" for i in range(7)], "These are not commands I know: `/x0`, `/x1`, `/x2`, `/x3`, `/x4`, "
         "and 2 more. Type `/help` for the list."),
    ],
)
def test_unknown_reply(names, text):
    assert unknown_reply(names) == Reply(text)


def test_respond_to_an_unknown_name():
    req = Request(Invocation("nope", "", "/nope"), PR, "bob", MODEL, Permission.admin)
    assert respond(req, FakeContext()) == unknown_reply(["/nope"])


class BrokenContext(FakeContext):
    def production(self, model: str) -> dict | None:
        raise RuntimeError("database is locked")


@pytest.mark.parametrize("line", ["/deploy", "/status", "/rollback", "/drift"])
def test_a_failing_handler_becomes_a_reply(line, caplog):
    with caplog.at_level(logging.ERROR, logger="bot.commands"):
        reply = run(line, BrokenContext(**vars(live_context())))
    name = line[1:]
    assert reply == Reply(f"@bob, sorry: `/{name}` failed on my side and nothing was done. "
                          "Try again later, or type `/help`.")
    assert "database is locked" in caplog.text


def test_a_handler_returning_garbage_becomes_a_reply(monkeypatch):
    spec = replace(REGISTRY["status"], handler=lambda request, ctx: "not a reply")
    monkeypatch.setattr(commands, "REGISTRY", dict(REGISTRY, status=spec))
    reply = respond(request("/status"), FakeContext())
    assert reply == Reply("@bob, sorry: `/status` failed on my side and nothing was done. "
                          "Try again later, or type `/help`.")


# --- the registry ----------------------------------------------------------------------------

def test_registry_holds_the_eight_commands_with_their_help():
    assert list(REGISTRY) == ["retrain", "validate", "ok-to-test", "deploy", "rollback", "drift", "status", "help"]
    text = help_text()
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.usage.startswith(f"/{name}") and spec.summary and spec.examples
        assert spec.permission == Permission[DEFAULTS[name]]
        for example in spec.examples:
            assert [i.name for i in parse(example).invocations] == [name]
        assert f"| `{spec.usage}` | {spec.summary} |" in text
    assert text.count("\n| `/") == 8


def test_help_lists_who_may_use_each_command():
    rows = {line.split(" | ")[0]: line.split(" | ")[2] for line in help_text({"status": "write"}).splitlines()
            if line.startswith("| `/")}
    assert rows == {
        "| `/retrain [reason]`": "write or higher",
        "| `/validate`": "write or higher",
        "| `/ok-to-test`": "write or higher",
        "| `/deploy [version] [--force]`": "maintain or higher",
        "| `/rollback [reason]`": "maintain or higher",
        "| `/drift`": "write or higher",
        "| `/status`": "write or higher",
        "| `/help`": "read or higher",
    }


def _spec(**changes) -> CommandSpec:
    values = dict(name="hold", pattern=re.compile(r"(?mi)^/hold(?:[ \t]+(?P<args>.*?))?[ \t]*$"), usage="/hold",
                  summary="Hold the change.", examples=("/hold",), permission=Permission.write,
                  handler=lambda request, ctx: Reply("held"))
    values.update(changes)
    return CommandSpec(**values)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"usage": ""}, "usage is required"),
        ({"summary": ""}, "summary is required"),
        ({"summary": "two\nlines"}, "summary is required"),
        ({"examples": ()}, "at least one example"),
        ({"examples": ("/other",)}, "does not match"),
        ({"name": "Hold"}, "the name must be"),
        ({"pattern": re.compile(r"(?mi)^/hold$")}, "(?P<args>"),
        ({"permission": Permission.none}, "read or higher"),
        ({"handler": None}, "callable"),
    ],
)
def test_a_spec_missing_its_help_is_rejected(changes, message):
    assert _spec().examples == ("/hold",)
    with pytest.raises(ValueError, match=re.escape(message)):
        _spec(**changes)


@pytest.mark.parametrize(
    ("body", "target", "allows"),
    [
        ("/ok-to-test", PR, True),
        ("/OK-to-test looks safe", PR, True),
        ("> /ok-to-test", PR, False),  # quoted: not a command
        ("/ok-to-test", Target("ticket", "acme/churn", 3), False),  # only pull requests have code to allow
    ],
)
def test_ok_to_test_allows_only_on_pull_requests(body, target, allows):
    from bot.commands.ok_to_test import AllowHead

    parsed = parse(body)
    if not parsed.invocations:
        assert not allows
        return
    req = Request(invocation=parsed.invocations[0], target=target, author="maya", model=MODEL,
                  permission=Permission.maintain)
    reply = respond(req, live_context())
    assert reply.actions == ((AllowHead(by="maya"),) if allows else ())
    assert ("Thanks @maya" in reply.text) is allows
