"""``/status``: the production model, the open retrain ticket, the last drift check and recent runs."""

from __future__ import annotations

import re
from datetime import datetime

from bot.commands.base import (
    CommandContext,
    CommandSpec,
    Reply,
    Request,
    TellsTime,
    code,
    format_metric,
    format_time,
    usage_reply,
)
from bot.messages import batch_name, held_alert_text, performance_lines, ticket_link
from integrations.ports import Permission, Ticket

__all__ = ["SPEC"]

_RUNS = 5
_FEATURES = 5


def handle(request: Request, ctx: CommandContext) -> Reply:
    if request.invocation.args:
        problem = f"`/status` takes no arguments (got {code(request.invocation.args)})."
        return usage_reply(request, SPEC.usage, problem, SPEC.examples[0])
    model = request.model
    now = _now(ctx)
    ticket = ctx.open_ticket(model)
    lines = [
        f"Status of **{model}**",
        "",
        f"- {_production(ctx.production(model), now)}",
        f"- {_ticket(ticket)}",
        *([f"- {held}"] if ticket is not None and (held := _held(ctx, model, ticket)) else []),
        f"- {_drift(ctx.last_drift(model), now)}",
        *[f"- {line[0].upper()}{line[1:]}" for line in performance_lines(ctx.performance(model))],
        "",
        *_runs(ctx.recent_runs(model, limit=_RUNS)),
    ]
    return Reply("\n".join(lines))


def _production(production: dict | None, now: datetime | None) -> str:
    if production is None:
        return "No model in production yet. Type `/retrain` to train one."
    metric = production.get("primary_metric") or "primary metric"
    value = (production.get("metrics") or {}).get(metric)
    return (f"Production: **v{production['version']}**, {metric} {format_metric(value)}, "
            f"since {format_time(production.get('created_at'), now)}")


def _ticket(ticket: Ticket | None) -> str:
    if ticket is None:
        return "Retrain ticket: none open"
    return f"Retrain ticket: {ticket_link(ticket.id, ticket.url)} {ticket.title}"


def _held(ctx: CommandContext, model: str, ticket: Ticket) -> str | None:
    """The finding the cooldown held back from chat, if the ticket's episode has one."""
    state = ctx.drift_episode(model)
    held = (state or {}).get("seen_again") or {}
    if (state or {}).get("ticket_id") != ticket.id or not held.get("until"):
        return None
    return f"Alerts held: {held_alert_text(held)}"


def _drift(drift: dict | None, now: datetime | None) -> str:
    if drift is None:
        return "Last drift check: none yet. Type `/drift` to run one."
    when = format_time(drift.get("checked_at"), now)
    batch = f" on {code(batch_name(drift['batch']))}" if drift.get("batch") else ""
    if not drift.get("drifted"):
        return f"Last drift check: {when}{batch}: no drift"
    features = list(drift.get("features") or ())
    named = ", ".join(code(name, limit=40) for name in features[:_FEATURES])
    if len(features) > _FEATURES:
        named += f" and {len(features) - _FEATURES} more"
    where = f" in {named}" if named else ""
    return f"Last drift check: {when}{batch}: **drift** (severity {drift.get('severity', 'unknown')}){where}"


def _runs(runs: list[dict]) -> list[str]:
    if not runs:
        return ["No pipeline runs yet."]
    rows = ["Recent runs:", "", "| Run | Status | Version | Trigger | Started |", "| --- | --- | --- | --- | --- |"]
    for run in runs[:_RUNS]:
        version = f"v{run['version']}" if run.get("version") is not None else "–"
        cells = [code(run.get("run_id", "?")), run.get("status", "?"), version, run.get("trigger", ""),
                 format_time(run.get("started_at"))]
        rows.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return rows


def _now(ctx: CommandContext) -> datetime | None:
    return ctx.now() if isinstance(ctx, TellsTime) else None


SPEC = CommandSpec(
    name="status",
    pattern=re.compile(r"(?mi)^/status(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/status",
    summary="Show the production model, the open retrain ticket, the last drift check and recent runs.",
    examples=("/status",),
    permission=Permission.read,
    handler=handle,
)
