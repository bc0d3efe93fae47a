"""``/ok-to-test``: let commands run the code of a pull request from a fork, as it is now.

Commands that run a pull request's code (``/validate``, ``/retrain``) run nothing from a fork until
someone with this command's permission has read the change and typed ``/ok-to-test`` on it. The
allowance is for the head commit at that moment: a new push needs a new ``/ok-to-test``. The
dispatcher (``bot/fork_guard.py``) records the head commit; the handler only answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.commands.base import CommandContext, CommandSpec, Reply, Request
from integrations.ports import Permission

__all__ = ["SPEC", "AllowHead"]


@dataclass(frozen=True)
class AllowHead:
    """The action: allow running the pull request's current head commit."""

    by: str


def handle(request: Request, ctx: CommandContext) -> Reply:
    if request.target.kind != "change":
        return Reply(f"@{request.author}, `/ok-to-test` is for pull requests: it lets commands run the code "
                     "of a pull request from a fork.")
    return Reply(
        f"Thanks @{request.author}: commands on this pull request may now run its code as it is now. "
        "A new push needs a new `/ok-to-test`.",
        (AllowHead(by=request.author),),
    )


SPEC = CommandSpec(
    name="ok-to-test",
    pattern=re.compile(r"(?mi)^/ok-to-test(?:[ \t]+(?P<args>.*?))?[ \t]*$"),
    usage="/ok-to-test",
    summary="Allow commands to run this fork's pull request code, as of its latest commit.",
    examples=("/ok-to-test",),
    permission=Permission.write,
    handler=handle,
    about_a_project=False,
)
