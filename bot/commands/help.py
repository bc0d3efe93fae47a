"""``/help``: the list of commands, generated from the registry so it cannot go stale."""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.commands.base import CommandContext, CommandSpec, Reply, Request
from integrations.ports import Permission

__all__ = ["SPEC"]


def handle(request: Request, ctx: CommandContext, overrides: Mapping[str, str] | None = None) -> Reply:
    # ``respond`` passes this deployment's permission overrides, so the list shows who may really
    # run what. Arguments are ignored: whatever was asked, the answer is the list.
    from bot.commands import help_text

    return Reply(help_text(overrides, in_chat=request.target.kind == "chat"))


SPEC = CommandSpec(
    name="help",
    pattern=re.compile(r"(?mi)^/help(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/help",
    summary="Show this list of commands.",
    examples=("/help",),
    permission=Permission.read,
    handler=handle,
    about_a_project=False,
)
