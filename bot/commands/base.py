"""What every command shares: its spec, the parsed comment, the request, the reply and the actions.

A command is one module holding one ``CommandSpec`` (after Prow's plugins): an anchored pattern,
its help (usage, summary, examples), the permission it needs and a pure handler. The handler reads
state through the narrow, read-only ``CommandContext`` and answers with a ``Reply``: the text to post
now and the actions the dispatcher should turn into real work. Nothing here does I/O.

``parse`` finds the commands in a comment body the way a reader of the rendered comment would:
only at the start of a line, never in quoted lines, fenced code or HTML comments.
"""

from __future__ import annotations

import difflib
import re
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from integrations.ports import Permission, Target, Ticket

__all__ = [
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
    "TellsTime",
    "code",
    "format_metric",
    "format_time",
    "parse",
    "refusal",
    "unknown_reply",
    "usage_reply",
]

_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# A command-like token: "/word" at the very start of a line, then whitespace or the end of the line.
_TOKEN = re.compile(r"/([A-Za-z][A-Za-z0-9_-]*)(?=[ \t]|$)")
_FENCE_OPEN = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MAX_UNKNOWN_SHOWN = 5


@dataclass(frozen=True)
class Invocation:
    """One command found in a comment: its canonical (lower-case) name, its arguments, its line."""

    name: str
    args: str
    line: str


@dataclass(frozen=True)
class Parsed:
    invocations: tuple[Invocation, ...]  # known commands, in order, at most ``limit``
    unknown: tuple[str, ...]  # line-start "/word"s that are not commands, as typed, once each
    dropped: int  # known commands beyond the limit, not run


@dataclass(frozen=True)
class Request:
    invocation: Invocation
    target: Target  # where it was typed
    author: str
    model: str  # the model project the bot manages for that target
    permission: Permission  # the author's level


class CommandContext(Protocol):
    """A read-only view of the bot's state; the dispatcher supplies it.

    One that also knows the time is a ``TellsTime`` too: ``/status`` then shows ages ("2 days ago")
    next to the timestamps. Handlers never read the clock themselves.
    """

    def production(self, model: str) -> dict | None:
        """{"version": int, "metrics": {name: float}, "primary_metric": str, "created_at": iso, "run_id": str}."""

    def versions(self, model: str) -> list[dict]:
        """[{"version", "stage", "passed", "metrics", "created_at"}], oldest first."""

    def previous_production(self, model: str) -> int | None:
        """The version ``/rollback`` would restore."""

    def open_ticket(self, model: str) -> Ticket | None:
        ...

    def recent_runs(self, model: str, limit: int = 5) -> list[dict]:
        """[{"run_id", "status", "version", "trigger", "started_at"}], newest first."""

    def last_drift(self, model: str) -> dict | None:
        """{"drifted": bool, "severity": str, "checked_at": iso, "batch": str, "features": [names]}."""

    def drift_episode(self, model: str) -> dict | None:
        """The retrain episode's state: ``ticket_id``, and ``seen_again`` (with ``until``) for a held finding."""

    def performance(self, model: str) -> dict | None:
        """The production model on production data: ``window`` and per-batch entries (see bot/monitor.py)."""


@runtime_checkable
class TellsTime(Protocol):
    """A ``CommandContext`` that knows the time, so answers can say how long ago things were."""

    @abstractmethod
    def now(self) -> datetime:
        """The bot's clock (timezone-aware)."""


# The actions a command asks for; the dispatcher turns them into real work and links the result back.
@dataclass(frozen=True)
class RunPipeline:
    reason: str
    promote: bool  # /retrain deploys a version that passes the gates; /validate never does


@dataclass(frozen=True)
class Promote:
    version: int
    reason: str


@dataclass(frozen=True)
class Rollback:
    reason: str


@dataclass(frozen=True)
class CheckDrift:
    pass


Action = RunPipeline | Promote | Rollback | CheckDrift


@dataclass(frozen=True)
class Reply:
    text: str  # Markdown, short: an acknowledgement for long work, or the result itself
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class CommandSpec:
    """One command. Construction fails without its help, so ``/help`` can never go stale."""

    name: str
    pattern: re.Pattern[str]  # anchored to a line start; the arguments, if any, in group "args"
    usage: str
    summary: str
    examples: tuple[str, ...]
    permission: Permission  # the default minimum level
    handler: Callable[[Request, CommandContext], Reply]
    # False for a command that concerns no model project in particular (/help, /ok-to-test): where the
    # bot serves several, it needs no project named (bot/routing.py).
    about_a_project: bool = True

    def __post_init__(self) -> None:
        where = f"command spec {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"{where}: the name must be lower-case letters, digits, '-' or '_'")
        if not isinstance(self.usage, str) or not self.usage.startswith(f"/{self.name}"):
            raise ValueError(f"{where}: usage is required and must start with '/{self.name}'")
        if not isinstance(self.summary, str) or not self.summary.strip() or "\n" in self.summary:
            raise ValueError(f"{where}: a one-line summary is required")
        object.__setattr__(self, "examples", tuple(self.examples or ()))
        if not self.examples:
            raise ValueError(f"{where}: at least one example is required")
        for example in self.examples:
            if not isinstance(example, str) or not self.pattern.match(example):
                raise ValueError(f"{where}: example {example!r} does not match the command's pattern")
        if "args" not in self.pattern.groupindex or not self.pattern.match(f"/{self.name}"):
            raise ValueError(f"{where}: the pattern must match '/{self.name}' and name its arguments (?P<args>...)")
        if not isinstance(self.permission, Permission) or self.permission < Permission.read:
            raise ValueError(f"{where}: the permission must be a Permission of read or higher")
        if not callable(self.handler):
            raise ValueError(f"{where}: the handler must be callable")


def parse(body: str, *, limit: int = 3) -> Parsed:
    """The commands in a comment body: known ones (at most ``limit``), unknown ones, and how many were dropped.

    Only lines starting with "/" count. Lines in fenced code blocks (``` or ~~~), quoted lines
    ("> /retrain") and HTML comments (the bot's own markers) never do; "/usr/bin/python" is a path,
    not a command. Names are case-insensitive. A command repeated word for word counts once.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    specs = _registry()
    found: list[Invocation] = []
    seen: set[tuple[str, str]] = set()
    unknown: dict[str, str] = {}
    dropped = 0
    for line in _command_lines(body):
        token = _TOKEN.match(line)
        if token is None:
            continue
        name = token.group(1).lower()
        spec = specs.get(name)
        matched = spec.pattern.match(line) if spec is not None else None
        if matched is None:
            unknown.setdefault(name, f"/{token.group(1)}")
            continue
        invocation = Invocation(name=name, args=(matched.group("args") or "").strip(), line=line)
        if (invocation.name, invocation.args) in seen:
            continue
        seen.add((invocation.name, invocation.args))
        if len(found) < limit:
            found.append(invocation)
        else:
            dropped += 1
    return Parsed(invocations=tuple(found), unknown=tuple(unknown.values()), dropped=dropped)


def _command_lines(body: str) -> list[str]:
    """The lines a reader sees as plain text starting with "/", with inline HTML comments removed."""
    lines: list[str] = []
    fence: tuple[str, int] | None = None  # the open fence's character and length
    in_comment = False
    for line in _LINE_BREAK.split(body.removeprefix("\ufeff")):
        if fence is not None:
            closing = _FENCE_CLOSE.fullmatch(line)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= fence[1]:
                fence = None
            continue
        if in_comment:
            end = line.find("-->")
            if end >= 0:
                _, in_comment = _strip_html_comments(line[end + 3:])
            continue
        opening = _FENCE_OPEN.fullmatch(line)
        # A backtick fence's info string holds no backtick (CommonMark), so "```x```" is inline code.
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            fence = (opening.group(1)[0], len(opening.group(1)))
            continue
        visible, in_comment = _strip_html_comments(line)
        if visible.startswith("/"):
            lines.append(visible.rstrip())
    return lines


def _strip_html_comments(text: str) -> tuple[str, bool]:
    """The text without its ``<!-- ... -->`` parts, and whether a comment is still open at its end."""
    kept: list[str] = []
    while True:
        start = text.find("<!--")
        if start < 0:
            kept.append(text)
            return "".join(kept), False
        kept.append(text[:start])
        end = text.find("-->", start + 4)
        if end < 0:
            return "".join(kept), True
        text = text[end + 3:]


def refusal(spec: CommandSpec, request: Request, required: Permission) -> Reply:
    """A polite no: who may run the command, what the author has. No actions."""
    allowed = [level.name for level in Permission if level >= required]
    who = allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
    needs = f"**{required.name}** permission" + (" or higher" if len(allowed) > 1 else "")
    has = "no access here" if request.permission <= Permission.none else f"**{request.permission.name}**"
    return Reply(
        f"@{request.author}, `/{spec.name}` needs {needs} (you have {has}). "
        f"Ask someone with {who} access to run it."
    )


def unknown_reply(names: Sequence[str]) -> Reply:
    """A short hint for "/words" that are not commands, with the closest command where there is one."""
    known = list(_registry())
    shown = [_plain_name(name) for name in names[:_MAX_UNKNOWN_SHOWN]]
    hints = []
    for name in shown:
        close = difflib.get_close_matches(name.lstrip("/").lower(), known, n=1)
        hints.append((name, f"/{close[0]}" if close else None))
    more = len(names) - len(shown)
    if len(hints) == 1:
        name, guess = hints[0]
        text = f"`{name}` is not a command I know."
        if guess:
            text += f" Did you mean `{guess}`?"
    else:
        parts = [f"`{name}`" + (f" (did you mean `{guess}`?)" if guess else "") for name, guess in hints]
        if more > 0:
            parts.append(f"and {more} more")
        text = f"These are not commands I know: {', '.join(parts)}."
    return Reply(f"{text} Type `/help` for the list.")


def usage_reply(request: Request, usage: str, problem: str, example: str) -> Reply:
    """The answer to arguments that do not parse: what was wrong, how to write it, where to read more."""
    return Reply(
        f"@{request.author}, {problem} Usage: `{usage}`, for example `{example}`. "
        "Type `/help` for all commands."
    )


def code(text: Any, *, limit: int = 60) -> str:
    """``text`` as a short inline code span that the user's own backticks or line breaks cannot break."""
    plain = " ".join(str(text).replace("`", "'").split())
    if len(plain) > limit:
        plain = plain[: limit - 1] + "…"
    return f"`{plain}`"


def format_metric(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else str(value)
    return f"{value:.4f}"


def format_time(value: Any, now: datetime | None = None) -> str:
    """An ISO timestamp as "2026-01-03 14:00 UTC", with its age when ``now`` is known."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value) if value else "unknown time"
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%d %H:%M UTC")
    if now is not None:
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
        text += f" ({_age((now - moment).total_seconds())})"
    return text


def _age(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def _plain_name(name: str) -> str:
    return " ".join(str(name).replace("`", "'").split())[:40]


def _registry() -> Mapping[str, CommandSpec]:
    # The registry is built from the command modules, which import this one; look it up at call time.
    from bot.commands import REGISTRY

    return REGISTRY
