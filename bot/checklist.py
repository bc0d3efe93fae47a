"""The live checklist in a retrain ticket's body (after Renovate's dependency dashboard).

The bot owns one marked section of the body: the episode's report, a status line and the boxes
people tick to act ("Retrain now", "Deploy v3 (validated: ...)", "Roll back to v2"). Everything
outside the markers is the people's, and the bot never rewrites it (``splice``). ``read`` finds
which of the bot's boxes are ticked, and the section's revision: the bot numbers each section it
writes, so a tick is "box X of revision N", the same whoever reports it (a webhook, a redelivery, a
poll) and however many people ticked it; that is what makes a tick act once.

Where HTML comments survive (GitHub, the local board) the markers and each box's action id are
hidden comments; where the service's sanitiser strips them (Azure Boards), they are visible text
(``visible=True``): a start line, an end line, and "· action deploy-v3" after each box. Azure keeps
a checkbox as the text "[ ]" / "[x]" (its sanitiser drops ``<input type="checkbox">``'s
attributes), so people tick by typing the x.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Box", "Reading", "boxes", "command_for", "html_to_text", "read", "render", "splice", "tick"]

# The markers' fixed words: no colon after "mlops-bot", so a tracker's ``<!-- mlops-bot:key -->``
# search never takes a checklist marker for the ticket's key.
_HIDDEN_BEGIN = "<!-- mlops-bot checklist, revision {revision}: the bot rewrites this section; tick the boxes only -->"
_HIDDEN_END = "<!-- mlops-bot checklist end -->"
_VISIBLE_BEGIN = "▼ mlops-bot checklist, revision {revision} (the bot rewrites what is between these lines: tick the boxes only)"
_VISIBLE_END = "▲ mlops-bot checklist end"

_BEGIN = re.compile(r"<!-- mlops-bot checklist, revision (\d+)\b[^>]*?-->")
_END = re.compile(r"<!-- mlops-bot checklist end -->")
_BOX = re.compile(r"^\s*[-*]\s+\[(?P<mark>[ xX])\]\s+(?P<label>.*?)\s*<!-- mlops-bot action=(?P<action>[\w.-]+) -->\s*$",
                  re.MULTILINE)
# Visible markers, in text or inside the HTML a tracker stores: the tag around the line (a
# paragraph or list item) goes with it, and the arrow may come back as an entity.
_TAG_OPEN = r"(?:<(?:p|div|li)\b[^>]*>)?[^<>\n]{0,16}"
_TAG_CLOSE = r"[^<\n]*(?:</(?:p|div|li)>)?"
_VISIBLE_BEGIN_RE = re.compile(_TAG_OPEN + r"mlops-bot checklist, revision (\d+)\b" + _TAG_CLOSE)
_VISIBLE_END_RE = re.compile(_TAG_OPEN + r"mlops-bot checklist end" + _TAG_CLOSE)
_VISIBLE_BOX = re.compile(r"^\s*(?:[-*]\s+)?\[(?P<mark>[ xX])\]\s+(?P<label>.*?)\s*· action (?P<action>[\w.-]+)\s*$",
                          re.MULTILINE)
_VISIBLE_BOX_HTML = re.compile(r"<(?P<tag>li|p)\b[^>]*>\s*\[[ xX]\][^<]*· action [\w.-]+\s*</(?P=tag)>")
_ACTION = re.compile(r"(?P<verb>retrain|deploy|rollback)(?:-v(?P<version>\d+))?")


@dataclass(frozen=True)
class Box:
    """One box the bot offers: ``action`` is its stable id (``retrain``, ``deploy-v3``,
    ``rollback-v2``), the same in every revision while the box means the same thing."""

    action: str
    label: str


@dataclass(frozen=True)
class Reading:
    """What a body says about the bot's section.

    ``intact``: one start marker before one end marker, as the bot writes them (no section at all
    is not intact either; ``problem`` then says what is wrong). Ticks are read only from an
    intact section: a section edited out of shape is rebuilt from the bot's state, not obeyed.
    """

    intact: bool
    revision: int | None
    ticked: tuple[str, ...]  # the action ids of ticked boxes, in order, each once
    problem: str = ""


def boxes(*, candidate: tuple[int, str] | None = None, previous: int | None = None) -> tuple[Box, ...]:
    """The boxes of an open episode: always "Retrain now"; "Deploy vN (note)" while a validated
    candidate waits (``candidate``: its version and what validation measured); "Roll back to vP"
    when there is an earlier production version to go back to."""
    found = [Box("retrain", "Retrain now")]
    if candidate is not None:
        version, note = candidate
        found.append(Box(f"deploy-v{version}", f"Deploy v{version}" + (f" ({note})" if note else "")))
    if previous is not None:
        found.append(Box(f"rollback-v{previous}", f"Roll back to v{previous}"))
    return tuple(found)


def command_for(action: str) -> str | None:
    """The typed command a box stands for (``deploy-v3`` → ``/deploy 3``); None for an id the bot
    never writes."""
    match = _ACTION.fullmatch(action)
    if match is None or (match["verb"] == "retrain") != (match["version"] is None):
        return None
    if match["verb"] == "deploy":
        return f"/deploy {match['version']}"
    return f"/{match['verb']}"


def render(report: str, status: str, offered: Sequence[Box], revision: int, *, visible: bool = False) -> str:
    """The bot's section, as Markdown: start marker, the report, the status line, the boxes, end marker."""
    if visible:
        begin, end = _VISIBLE_BEGIN.format(revision=revision), _VISIBLE_END
        lines = [f"- [ ] {box.label} · action {box.action}" for box in offered]
    else:
        begin, end = _HIDDEN_BEGIN.format(revision=revision), _HIDDEN_END
        lines = [f"- [ ] {box.label} <!-- mlops-bot action={box.action} -->" for box in offered]
    parts = [begin, report.strip(), f"**Status:** {status.strip()}", "\n".join(lines), end]
    return "\n\n".join(part for part in parts if part)


def read(body: str, *, visible: bool = False) -> Reading:
    """The section's revision and ticked boxes; ``visible``: the markers are text (Azure Boards),
    and ``body`` may be the HTML the tracker stores."""
    text = html_to_text(body) if visible and "<" in body else body
    begin_re, end_re, box_re = ((_VISIBLE_BEGIN_RE, _VISIBLE_END_RE, _VISIBLE_BOX) if visible
                                else (_BEGIN, _END, _BOX))
    begins, ends = list(begin_re.finditer(text)), list(end_re.finditer(text))
    if not begins and not ends:
        return Reading(False, None, (), "the body has no checklist section")
    if len(begins) != 1 or len(ends) != 1:
        return Reading(False, None, (), f"the body has {len(begins)} checklist start and {len(ends)} end markers, "
                                        "not one of each")
    if ends[0].start() < begins[0].end():
        return Reading(False, None, (), "the checklist's end marker comes before its start")
    inside = text[begins[0].end():ends[0].start()]
    ticked = [m["action"] for m in box_re.finditer(inside) if m["mark"] in "xX"]
    return Reading(True, int(begins[0].group(1)), tuple(dict.fromkeys(ticked)))


def splice(body: str, section: str, *, visible: bool = False) -> str:
    """``body`` with the bot's section replaced by ``section``; the rest kept as it is.

    A body without an intact section (none yet, a marker deleted or doubled, the end moved above
    the start) keeps all of its text except the markers and the bot's box lines left in it, and
    gets the new section at the top: a person's words are never dropped to repair the shape.
    """
    begin_re, end_re = (_VISIBLE_BEGIN_RE, _VISIBLE_END_RE) if visible else (_BEGIN, _END)
    begins, ends = list(begin_re.finditer(body)), list(end_re.finditer(body))
    if len(begins) == 1 and len(ends) == 1 and begins[0].end() <= ends[0].start():
        return body[:begins[0].start()] + section + body[ends[0].end():]
    rest = end_re.sub("", begin_re.sub("", body))
    if visible:
        rest = _VISIBLE_BOX_HTML.sub("", _VISIBLE_BOX.sub("", rest))
    else:
        rest = _BOX.sub("", rest)
    rest = re.sub(r"\n{3,}", "\n\n", rest).strip()
    return f"{section}\n\n{rest}" if rest else section


def tick(body: str, box: str) -> str:
    """``body`` (Markdown, hidden markers) with the bot's box ``box`` ticked, as a person ticks it in
    a web page: ``box`` is its action id (``deploy-v3``) or the start of its label ("Deploy v3"),
    in any case. For ``mlops-bot board``, where a person at the console has no page to click in.
    A box that is not there is a ValueError naming those that are."""
    wanted = box.strip().lower()
    found = [m for m in _BOX.finditer(body) if m["action"].lower() == wanted or m["label"].lower().startswith(wanted)]
    if not wanted or not found:
        offered = ", ".join(f"“{m['label']}” ({m['action']})" for m in _BOX.finditer(body)) or "none"
        raise ValueError(f"no box {box!r} in the ticket's checklist; its boxes: {offered}")
    line = found[0]
    start = line.start("mark")
    return body[:start] + "x" + body[start + 1:]


def html_to_text(markup: str) -> str:
    """Rich text as lines of plain text: block ends become line breaks, list items "- ", tags go."""
    text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|li|h[1-6]|ul|ol)>", "\n", markup)
    text = re.sub(r"(?i)<li\b[^>]*>", "- ", text)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text)
