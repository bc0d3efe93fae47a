"""The slash-commands people type in comments: one module per command, each exporting ``SPEC``.

Adding a command is adding its module and naming it in ``_MODULES``; its help, permission and
handler come with it, and ``/help`` lists it. ``parse`` finds the commands in a comment, ``respond``
checks the author's permission and runs the handler. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from bot.commands import deploy, drift, help, ok_to_test, retrain, rollback, status, validate
from bot.commands.base import (
    Action,
    CheckDrift,
    CommandContext,
    CommandSpec,
    Invocation,
    Parsed,
    Promote,
    Reply,
    Request,
    Rollback,
    RunPipeline,
    parse,
    refusal,
    unknown_reply,
)
from integrations.ports import Permission

__all__ = [
    "REGISTRY",
    "Action",
    "CheckDrift",
    "CommandContext",
    "CommandSpec",
    "Invocation",
    "Parsed",
    "Promote",
    "Reply",
    "Request",
    "Rollback",
    "RunPipeline",
    "check_overrides",
    "help_text",
    "parse",
    "refusal",
    "required_permission",
    "respond",
    "unknown_reply",
]

log = logging.getLogger(__name__)

_MODULES = (retrain, validate, ok_to_test, deploy, rollback, drift, status, help)  # the order /help lists them in
_LEVELS = tuple(level for level in Permission if level > Permission.none)


def _build_registry(specs: Iterable[CommandSpec]) -> Mapping[str, CommandSpec]:
    registry: dict[str, CommandSpec] = {}
    for spec in specs:
        if not isinstance(spec, CommandSpec):
            raise ValueError(f"{spec!r} is not a CommandSpec")
        if spec.name in registry:
            raise ValueError(f"two commands are named /{spec.name}")
        registry[spec.name] = spec
    return MappingProxyType(registry)


REGISTRY: Mapping[str, CommandSpec] = _build_registry(module.SPEC for module in _MODULES)


def check_overrides(overrides: Mapping[str, str | Permission] | None) -> dict[str, Permission]:
    """Permission overrides such as ``{"deploy": "admin"}``, checked; a bad name or level is a ValueError."""
    checked: dict[str, Permission] = {}
    allowed = ", ".join(level.name for level in _LEVELS)
    for key, value in (overrides or {}).items():
        name = str(key).strip().lstrip("/").lower()
        if name not in REGISTRY:
            raise ValueError(f"permission override for unknown command {key!r}; commands are: {', '.join(REGISTRY)}")
        level = value if isinstance(value, Permission) else Permission.__members__.get(str(value).strip().lower())
        if level is None or level not in _LEVELS:
            raise ValueError(f"permission override for /{name}: {value!r} is not a level; use one of {allowed}")
        checked[name] = level
    return checked


def required_permission(name: str, overrides: Mapping[str, str | Permission] | None = None) -> Permission:
    """The minimum level for ``/name``: its override if there is one, else the command's default."""
    spec = REGISTRY.get(name.lstrip("/").lower())
    if spec is None:
        raise ValueError(f"unknown command {name!r}; commands are: {', '.join(REGISTRY)}")
    return check_overrides(overrides).get(spec.name, spec.permission)


def respond(request: Request, ctx: CommandContext, *,
            overrides: Mapping[str, str | Permission] | None = None) -> Reply:
    """The answer to one invocation: a refusal if the author's level is too low, else the handler's reply.

    A handler that fails is logged and answered with a short apology; only bad ``overrides`` (a
    configuration error, best caught at start-up with ``check_overrides``) raise.
    """
    spec = REGISTRY.get(request.invocation.name.lower())
    if spec is None:
        return unknown_reply([f"/{request.invocation.name}"])
    required = required_permission(spec.name, overrides)
    if request.permission < required:
        return refusal(spec, request, required)
    handler = spec.handler
    if spec is help.SPEC:  # /help describes this deployment's permissions, so it needs the overrides
        handler = functools.partial(help.handle, overrides=overrides)
    try:
        reply = handler(request, ctx)
        if not isinstance(reply, Reply):
            raise TypeError(f"the /{spec.name} handler returned {type(reply).__name__}, not a Reply")
    except Exception:
        log.exception("/%s failed for @%s on %s", spec.name, request.author, request.target)
        return Reply(
            f"@{request.author}, sorry: `/{spec.name}` failed on my side and nothing was done. "
            "Try again later, or type `/help`."
        )
    return reply


def help_text(overrides: Mapping[str, str | Permission] | None = None, *, in_chat: bool = False) -> str:
    """The ``/help`` answer: a Markdown table of every command, with this deployment's permissions.

    ``in_chat``: asked in chat, where commands are typed after the slash command (`/mlops retrain`)."""
    levels = check_overrides(overrides)
    rows = [
        "Type `/mlops` and a command in a channel the bot is in, or click the buttons on its messages."
        if in_chat else "Type a command at the start of its own line in a comment on a pull request or ticket.",
        "",
        "| Command | What it does | Who may use it | Examples |",
        "| --- | --- | --- | --- |",
    ]
    for spec in REGISTRY.values():
        level = levels.get(spec.name, spec.permission)
        who = level.name if level == Permission.admin else f"{level.name} or higher"
        examples = ", ".join(f"`{example}`" for example in spec.examples)
        cells = [f"`{spec.usage}`", spec.summary, who, examples]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)
