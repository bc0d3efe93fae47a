"""``/drift``: check the latest production data for drift now."""

from __future__ import annotations

import re

from bot.commands.base import CheckDrift, CommandContext, CommandSpec, Reply, Request, code, usage_reply
from integrations.ports import Permission

__all__ = ["SPEC"]


def handle(request: Request, ctx: CommandContext) -> Reply:
    if request.invocation.args:
        problem = f"`/drift` takes no arguments (got {code(request.invocation.args)})."
        return usage_reply(request, SPEC.usage, problem, SPEC.examples[0])
    if ctx.production(request.model) is None:
        return Reply(
            f"@{request.author}, **{request.model}** has no model in production yet, so there is nothing "
            "to check for drift. Type `/retrain` to train one."
        )
    return Reply(
        f"Checking **{request.model}** for drift on the latest production data. I'll reply here with the result.",
        (CheckDrift(),),
    )


SPEC = CommandSpec(
    name="drift",
    pattern=re.compile(r"(?mi)^/drift(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/drift",
    summary="Check the latest production data for drift now.",
    examples=("/drift",),
    permission=Permission.write,
    handler=handle,
)
