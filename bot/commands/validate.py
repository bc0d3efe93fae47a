"""``/validate``: train and validate a new version without deploying it."""

from __future__ import annotations

import re

from bot.commands.base import CommandContext, CommandSpec, Reply, Request, RunPipeline, code, usage_reply
from integrations.ports import Permission

__all__ = ["SPEC"]


def handle(request: Request, ctx: CommandContext) -> Reply:
    if request.invocation.args:
        problem = f"`/validate` takes no arguments (got {code(request.invocation.args)})."
        return usage_reply(request, SPEC.usage, problem, SPEC.examples[0])
    return Reply(
        f"Training and validating **{request.model}** without deploying it. I'll reply here with the result.",
        (RunPipeline(reason=f"/validate by @{request.author}", promote=False),),
    )


SPEC = CommandSpec(
    name="validate",
    pattern=re.compile(r"(?mi)^/validate(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/validate",
    summary="Train and validate a new version without deploying it.",
    examples=("/validate",),
    permission=Permission.write,
    handler=handle,
)
