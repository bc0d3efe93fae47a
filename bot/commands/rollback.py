"""``/rollback [reason]``: put the previous production version back."""

from __future__ import annotations

import re

from bot.commands.base import CommandContext, CommandSpec, Reply, Request, Rollback, code
from integrations.ports import Permission

__all__ = ["SPEC"]


def handle(request: Request, ctx: CommandContext) -> Reply:
    previous = ctx.previous_production(request.model)
    if previous is None:
        return Reply(
            f"@{request.author}, there is nothing to roll back to: **{request.model}** has no earlier "
            "production version."
        )
    reason = request.invocation.args or f"/rollback by @{request.author}"
    current = ctx.production(request.model)
    start = f"from v{current['version']} " if current else ""
    return Reply(
        f"Rolling **{request.model}** back {start}to v{previous} (reason: {code(reason, limit=120)}). "
        "I'll reply here when it is done.",
        (Rollback(reason=reason),),
    )


SPEC = CommandSpec(
    name="rollback",
    pattern=re.compile(r"(?mi)^/rollback(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/rollback [reason]",
    summary="Put the previous production version back.",
    examples=("/rollback", "/rollback error rate doubled after v4"),
    permission=Permission.maintain,
    handler=handle,
)
