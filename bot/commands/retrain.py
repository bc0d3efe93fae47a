"""``/retrain [reason]``: train a new version and deploy it if it passes the validation gates."""

from __future__ import annotations

import re

from bot.commands.base import CommandContext, CommandSpec, Reply, Request, RunPipeline, code
from integrations.ports import Permission

__all__ = ["SPEC"]


def handle(request: Request, ctx: CommandContext) -> Reply:
    reason = request.invocation.args or f"/retrain by @{request.author}"
    return Reply(
        f"Retraining **{request.model}** (reason: {code(reason, limit=120)}). I'll reply here with the result.",
        (RunPipeline(reason=reason, promote=True),),
    )


SPEC = CommandSpec(
    name="retrain",
    pattern=re.compile(r"(?mi)^/retrain(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/retrain [reason]",
    summary="Train a new version and deploy it if it passes the validation gates.",
    examples=("/retrain", "/retrain new labels from March"),
    permission=Permission.write,
    handler=handle,
)
