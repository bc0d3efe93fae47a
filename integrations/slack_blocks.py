"""Slack messages as the bot writes them: Block Kit from the lifecycle's Markdown, the buttons under a
message, and mentions of who may do what.

Messages are Block Kit built from the plain text the lifecycle writes: Markdown ``**bold**`` becomes
Slack's ``*bold*``, a Markdown table a monospace block, links ``<url|label>``; the ``text`` field
carries a short plain fallback for notifications. Nothing is ever longer than Slack takes (no
``msg_too_long``). Buttons (``ChatAction``: retrain, deploy, roll back) each sit behind a
confirmation dialog; a click comes back as a ``block_actions`` payload, read by
``integrations/slack_payloads.py``. Nothing here talks to Slack: ``integrations/slack.py`` sends
what these build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from integrations.ports import ChatAction, Permission

__all__ = ["ACTION_PREFIX", "BLOCK_LIMIT", "FALLBACK_LIMIT", "GROUP_ID", "SECTION_LIMIT", "USER_ID", "buttons",
           "holders", "render"]

SECTION_LIMIT = 3000  # characters in one section block's text
BLOCK_LIMIT = 50  # blocks in one message
FALLBACK_LIMIT = 3000  # characters of the notification text (Slack advises at most 4,000)
#: a user's and a user group's ids, as Slack writes them (``U…``/``W…``, ``S…``)
USER_ID = re.compile(r"^[UW][A-Z0-9_]{2,}$")
GROUP_ID = re.compile(r"^S[A-Z0-9]{6,}$")
#: the prefix of the bot's buttons' action ids (``mlops:retrain``)
ACTION_PREFIX = "mlops:"


def holders(levels: Mapping[str, str], required: Permission) -> list[str]:
    """Who ``levels`` lets do what needs ``required``, in Slack's syntax (``<@U…>``,
    ``<!subteam^S…>``, ``@handle``), for a refusal that says who may."""
    found = []
    for key, level in levels.items():
        if Permission[level] < required:
            continue
        if key == "*":
            found.append("everyone")
        elif GROUP_ID.match(key):
            found.append(f"<!subteam^{key}>")
        elif USER_ID.match(key):
            found.append(f"<@{key}>")
        else:
            found.append("@" + key.lstrip("@"))
    return found


_BUTTONS = {  # command -> (label, style, dialog title, dialog text, confirm)
    "retrain": ("Retrain", "primary", "Retrain {model}?",
                "Train a new version of *{model}* on the latest data, and deploy it if it passes the validation "
                "gates.", "Retrain"),
    "deploy": ("Deploy v{version}", "primary", "Deploy {model} v{version}?",
               "Put *{model} v{version}* in production, in place of the current version.", "Deploy"),
    "rollback": ("Roll back", "danger", "Roll back {model}?",
                 "Take *{model} v{version}* out of production and put the previous version back.", "Roll back"),
}


def buttons(actions: Sequence[ChatAction]) -> dict[str, Any]:
    """An actions block with a button per action, each behind a confirmation dialog. The button's
    ``value`` carries the action as JSON; its ``action_id`` is ``mlops:<command>``."""
    elements = []
    for action in actions:
        label, style, title, text, confirm = _BUTTONS[action.command]
        model = action.model[:60]
        values = {"model": model, "version": action.version if action.version is not None else "?"}
        elements.append({
            "type": "button", "action_id": f"{ACTION_PREFIX}{action.command}", "style": style,
            "text": {"type": "plain_text", "text": label.format(**values)[:75]},
            "value": json.dumps({"command": action.command, "model": action.model, "version": action.version}),
            "confirm": {
                "title": {"type": "plain_text", "text": title.format(**values)[:100]},
                "text": {"type": "mrkdwn", "text": text.format(**{**values, "model": _escape(model)})[:300]},
                "confirm": {"type": "plain_text", "text": confirm},
                "deny": {"type": "plain_text", "text": "Cancel"},
                **({"style": "danger"} if style == "danger" else {}),
            },
        })
    return {"type": "actions", "block_id": "mlops-actions", "elements": elements}


# ---------------------------------------------------------------------------
# Block Kit from the lifecycle's Markdown

_SLACK_SYNTAX = re.compile(r"<(?:[@#!][^<>\s]+|(?:https?|mailto):[^<>\s]+)>")  # kept as written
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.I | re.S)
_DETAILS = re.compile(r"</?details[^>]*>", re.I)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_FENCE = re.compile(r"^\s*```")
_FENCE_COST = len("```\n\n```")


def render(text: str, *, mention: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Block Kit for a message written in Markdown, and its plain fallback ``text``.

    A first line of the form ``status · where · metric`` becomes a bold headline over its details;
    ``**bold**`` becomes ``*bold*``, ``[label](url)`` ``<url|label>``, headings bold lines, list
    items bullets, and a Markdown table an aligned monospace block. The result fits Slack's limits:
    sections of at most 3,000 characters, at most 50 blocks (the rest cut with a note), and a
    fallback of at most 3,000 characters.
    """
    segments = _segments(_headline(text))
    if mention:
        segments.insert(0, ("text", mention))
    chunks = _pack(segments, SECTION_LIMIT) or ["(no text)"]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in chunks]
    if len(blocks) > BLOCK_LIMIT:
        cut = sum(len(c) for c in chunks[BLOCK_LIMIT - 1:])
        blocks = blocks[: BLOCK_LIMIT - 1] + [{"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"_… {cut:,} more characters not shown: the message was too long for Slack_"}]}]
    fallback = "\n".join(chunks)
    if len(fallback) > FALLBACK_LIMIT:
        fallback = fallback[: FALLBACK_LIMIT - 1].rstrip() + "…"
    return fallback, blocks


def _headline(text: str) -> str:
    first, newline, rest = text.strip().partition("\n")
    if " · " not in first or first.lstrip().startswith(("|", "```", "#")):
        return text.strip()
    head, _, details = first.partition(" · ")
    head = head if "**" in head else f"**{head.strip()}**"
    return f"{head}\n{details.strip()}{newline}{rest}"


def _segments(text: str) -> list[tuple[str, str]]:
    """The text as ("text", mrkdwn) and ("code", monospace) runs, in order."""
    text = _HTML_COMMENT.sub("", text)
    text = _SUMMARY.sub(lambda m: f"**{m.group(1).strip()}**", text)
    text = _DETAILS.sub("", text)
    lines = text.splitlines()
    out: list[tuple[str, str]] = []
    plain: list[str] = []

    def flush() -> None:
        joined = re.sub(r"\n{3,}", "\n\n", "\n".join(plain)).strip("\n")
        if joined.strip():
            out.append(("text", joined))
        plain.clear()

    k = 0
    while k < len(lines):
        line = lines[k]
        if _FENCE.match(line):
            end = k + 1
            while end < len(lines) and not _FENCE.match(lines[end]):
                end += 1
            flush()
            out.append(("code", _escape("\n".join(lines[k + 1:end]))))
            k = end + 1
            continue
        if _TABLE_ROW.match(line) and k + 1 < len(lines) and _TABLE_RULE.match(lines[k + 1]):
            end = k + 2
            while end < len(lines) and _TABLE_ROW.match(lines[end]):
                end += 1
            flush()
            out.append(("code", _escape(_table(lines[k:end]))))
            k = end
            continue
        plain.append(_line(line))
        k += 1
    flush()
    return out


def _line(line: str) -> str:
    if heading := _HEADING.match(line):
        return f"*{_inline(heading.group(1).replace('**', '').replace('__', ''))}*"
    if bullet := _BULLET.match(line):
        return f"{bullet.group(1)}• {_inline(bullet.group(2))}"
    return _inline(line)


def _inline(text: str) -> str:
    """One line of Markdown as mrkdwn. Code spans and Slack's own syntax (``<@U123>``, ``<!here>``,
    ``<https://x|y>``) are set aside first, so emphasis around them still converts."""
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return f"\x02{len(kept) - 1}\x03"

    text = text.replace("\x02", "").replace("\x03", "")
    text = _CODE_SPAN.sub(lambda span: keep(f"`{_escape(span.group(2))}`"), text)
    text = _SLACK_SYNTAX.sub(lambda token: keep(token.group(0)), text)
    return re.sub(r"\x02(\d+)\x03", lambda k: kept[int(k.group(1))], _links(text))


def _links(text: str) -> str:
    out, position = [], 0
    for link in _LINK.finditer(text):
        out.append(_emphasis(_escape(text[position:link.start()])))
        label = _emphasis(_escape(link.group(1))).replace("|", "¦")
        out.append(f"<{link.group(2)}|{label}>")
        position = link.end()
    out.append(_emphasis(_escape(text[position:])))
    return "".join(out)


def _emphasis(text: str) -> str:
    text = _BOLD.sub(lambda m: "\x01" + (m.group(1) or m.group(2)) + "\x01", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    return text.replace("\x01", "*")


def _escape(text: str) -> str:
    """Slack's three control characters, as its formatting rules ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    cells = re.split(r"(?<!\\)\|", inner)
    return [_plain(cell.strip().replace("\\|", "|")) for cell in cells]


def _plain(cell: str) -> str:
    cell = _LINK.sub(r"\1", cell)
    return cell.replace("**", "").replace("__", "").replace("`", "")


def _table(lines: list[str]) -> str:
    """A Markdown table as aligned monospace columns (numbers right-aligned where the rule says)."""
    header, rule, body = _cells(lines[0]), [c.strip() for c in _cells(lines[1])], [_cells(x) for x in lines[2:]]
    rows = [header, *body]
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    right = [k < len(rule) and rule[k].endswith(":") and not rule[k].startswith(":") for k in range(width)]
    widths = [max(len(row[k]) for row in rows) for k in range(width)]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()

    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])])


def _pack(segments: list[tuple[str, str]], limit: int) -> list[str]:
    """Segments joined into as few texts of at most ``limit`` characters as they fit in, split
    between lines (code re-fenced on both sides of a split)."""
    chunks: list[str] = []
    current = ""

    def add(piece: str) -> None:
        nonlocal current
        joined = f"{current}\n{piece}" if current else piece
        if len(joined) <= limit:
            current = joined
        else:
            if current:
                chunks.append(current)
            current = piece

    for kind, content in segments:
        if kind == "code":
            for part in _split(content, limit - _FENCE_COST):
                add(f"```\n{part}\n```")
        else:
            for part in _split(content, limit):
                add(part)
    if current:
        chunks.append(current)
    return chunks


def _split(text: str, limit: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a single line too long: cut at a space where there is one
            cut = line.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:cut])
            line = line[cut:].lstrip(" ")
        joined = f"{current}\n{line}" if current else line
        if len(joined) <= limit:
            current = joined
        else:
            parts.append(current)
            current = line
    if current.strip():
        parts.append(current)
    return parts
