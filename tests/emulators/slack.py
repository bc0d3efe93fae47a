"""A local emulator of the parts of Slack's Web API the bot uses.

Point the real slack-sdk client at it::

    with SlackEmulator() as slack:
        alerts = slack.state.add_channel("mlops-alerts")
        client = WebClient(token=slack.token, base_url=slack.base_url)
        client.chat_postMessage(channel=alerts.id, text="hello")
        slack.state.transcript(alerts.id)  # the channel as a person reads it

It serves ``http://127.0.0.1:PORT/api/<method>`` for ``auth.test``, ``chat.postMessage``,
``chat.update``, ``chat.postEphemeral``, ``chat.getPermalink``, ``conversations.info``,
``conversations.list``, ``conversations.history``, ``conversations.replies``, ``users.info``,
``reactions.add``, ``usergroups.list``, ``usergroups.users.list`` and the upload that ``files_upload_v2`` performs (``files.getUploadURLExternal``,
a POST of the bytes to the upload URL it returns, here on the emulator, and
``files.completeUploadExternal``). Like Slack, it takes every method as GET or POST, with the
arguments in the query, a form or a JSON body, and the token as ``Authorization: Bearer`` (or a
``token`` argument); it answers errors with HTTP 200 and ``{"ok": false, "error": ...}``, and rate
limits with HTTP 429, ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``.

Buttons: ``state.click(channel, ts, action_id, user)`` is a person clicking a button of a message
(and confirming its dialog): it returns the ``block_actions`` payload Slack would send to the app's
interactivity URL, whose ``response_url`` points back here (``POST /actions/<key>``; what is sent
there is kept in ``state.responses``).

Bodies follow Slack's OpenAPI description (``../shared/refdata/slack/openapi/``);
``slack_schemas()`` loads it, with the methods and error codes it lacks transcribed by hand.

Run it by hand with a small seeded world: ``python -m tests.emulators.slack --port 8081``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import itertools
import json
import math
import mimetypes
import re
import secrets
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .framework import Clock, FaultRule, HttpEmulator, OpenAPISchemas, Request, Response, SlidingWindow, TokenBucket

__all__ = [
    "DEFAULT_SCOPES",
    "METHODS",
    "METHOD_TIERS",
    "Channel",
    "File",
    "Message",
    "ResponsePost",
    "SlackEmulator",
    "SlackState",
    "User",
    "UserGroup",
    "block_problems",
    "slack_schemas",
    "validate_answer",
]

API_PREFIX = "/api"
#: what a bot token of the bot's Slack app is granted by default
DEFAULT_SCOPES = (
    "chat:write", "channels:read", "groups:read", "channels:history", "groups:history",
    "reactions:write", "files:write", "users:read", "usergroups:read",
)
#: Slack refuses longer ``text`` with ``msg_too_long`` (it documents truncating past 40,000 characters)
MAX_TEXT = 40_000
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_ACTIONS = 25  # elements in an actions block
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_FILE_SIZE = 1_000_000_000
#: the Web API methods served
METHODS = (
    "auth.test", "chat.postMessage", "chat.update", "chat.postEphemeral", "chat.getPermalink",
    "conversations.info", "conversations.list", "conversations.history", "conversations.replies",
    "users.info", "reactions.add", "files.getUploadURLExternal", "files.completeUploadExternal",
    "usergroups.list", "usergroups.users.list",
)
#: Each method's rate-limit tier, from its page in Slack's method reference (docs.slack.dev/reference/
#: methods/<method>, "Rate limits"); Slack's OpenAPI description in the refdata does not carry them. The
#: "special" methods are given the tier their documented behaviour comes closest to: chat.postMessage is
#: limited per channel instead (``POST_PER_SECOND``), auth.test and chat.getPermalink as Tier 4.
METHOD_TIERS = {
    "auth.test": 4, "chat.postMessage": 4, "chat.update": 3, "chat.postEphemeral": 4, "chat.getPermalink": 4,
    "conversations.info": 3, "conversations.list": 2, "conversations.history": 3, "conversations.replies": 3,
    "users.info": 4, "reactions.add": 3, "files.getUploadURLExternal": 4, "files.completeUploadExternal": 4,
    "usergroups.list": 2, "usergroups.users.list": 2,
}
#: Slack's "Rate limits" page (docs.slack.dev/apis/web-api/rate-limits): Tier 1 "1+ per minute", Tier 2
#: "20+", Tier 3 "50+", Tier 4 "100+", per method, per app and workspace; the emulator allows the floor.
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
#: The same page: chat.postMessage "generally allows posting one message per second per channel", "short
#: bursts >1 allowed" (how many is not said: the emulator allows ``POST_BURST``).
POST_PER_SECOND = 1.0
POST_BURST = 3
_BLOCK_TYPES = {"section", "divider", "header", "context", "image", "actions", "rich_text", "input", "file",
                "video", "markdown"}
_EMOJI = re.compile(r"^[a-z0-9_+'-]{1,100}(::skin-tone-[2-6])?$")
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_]{1,255}$")


# ---------------------------------------------------------------------------
# The world


@dataclass
class User:
    id: str
    name: str
    real_name: str
    is_bot: bool = False
    bot_id: str | None = None
    updated: int = 0
    deleted: bool = False


@dataclass
class File:
    id: str
    name: str
    title: str
    user: str
    created: int
    size: int  # as declared to files.getUploadURLExternal, then as uploaded
    alt_txt: str | None = None
    content: bytes | None = None  # None until the upload POST arrives
    shared_to: list[str] = field(default_factory=list)  # channel ids
    completed: bool = False

    @property
    def mimetype(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    @property
    def filetype(self) -> str:
        suffix = Path(self.name).suffix.lstrip(".").lower()
        return suffix or "binary"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(width, height) read from a PNG's header."""
        data = self.content or b""
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None


@dataclass
class Edit:
    """An earlier version of a message, kept when ``chat.update`` replaced it."""

    text: str
    blocks: list[dict[str, Any]] | None
    replaced_at: str  # the ts of the edit


@dataclass
class Message:
    ts: str
    channel: str  # the channel's id
    user: str  # the author's user id
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None  # for a reply: its parent's ts
    metadata: dict[str, Any] | None = None
    bot_id: str | None = None
    files: list[File] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)  # oldest first
    reactions: dict[str, list[str]] = field(default_factory=dict)  # name -> user ids
    replies: list[Message] = field(default_factory=list)  # for a parent: its thread, oldest first

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def updated(self) -> int:
        """How many times the message was updated."""
        return len(self.edits)

    @property
    def marker(self) -> str | None:
        """The bot's marker, from the message's metadata (``event_payload.marker``)."""
        payload = (self.metadata or {}).get("event_payload") or {}
        return payload.get("marker") if isinstance(payload, dict) else None


@dataclass
class Ephemeral:
    """A message only ``user`` sees (``chat.postEphemeral``); never in the channel's history."""

    channel: str
    user: str
    author: str
    text: str
    blocks: list[dict[str, Any]] | None
    ts: str
    thread_ts: str | None = None


@dataclass
class UserGroup:
    """A user group (``@ml-leads``): its members are user ids."""

    id: str
    handle: str
    name: str
    created: int
    members: list[str] = field(default_factory=list)
    disabled: bool = False


@dataclass
class ResponsePost:
    """What the app sent to a ``response_url`` of an interaction."""

    key: str
    body: dict[str, Any]


@dataclass
class Channel:
    id: str
    name: str
    created: int
    creator: str
    is_private: bool = False
    is_archived: bool = False
    is_general: bool = False
    topic: str = ""
    purpose: str = ""
    members: set[str] = field(default_factory=set)  # user ids
    messages: list[Message] = field(default_factory=list)  # top-level, oldest first
    index: dict[str, Message] = field(default_factory=dict)  # every message (replies too) by ts


class SlackState:
    """The emulator's world: users, channels and their messages, files. Tests set it up and read
    it back through these helpers; the emulator's handlers change it. Every method takes the lock."""

    def __init__(self, clock: Clock, lock: Any, *, team_id: str, team: str, bot_name: str = "mlops-bot") -> None:
        self.clock = clock
        self.lock = lock
        self.team_id = team_id
        self.team = team
        self.users: dict[str, User] = {}  # id -> user
        self.channels: dict[str, Channel] = {}  # id -> channel
        self.files: dict[str, File] = {}  # id -> file
        self.ephemerals: list[Ephemeral] = []
        self.usergroups: dict[str, UserGroup] = {}  # id -> group
        self.responses: list[ResponsePost] = []
        self.response_base: Callable[[], str] = lambda: ""  # the emulator's URL, for response_url
        self._ids = itertools.count(0x1A2B3C)
        self._last_ts = 0
        #: the bot user whose token the emulator hands out by default
        self.bot = self.add_user(bot_name, bot=True)

    # -- identities and time

    def new_id(self, prefix: str) -> str:
        """A Slack-like id: ``C0001A2B3C``, ``U0001A2B3D``, ..."""
        return f"{prefix}{next(self._ids):09X}"

    def new_ts(self) -> str:
        """A message timestamp, ``1767225600.000001``: the emulator's clock, unique and increasing."""
        with self.lock:
            micros = max(self.clock.timestamp() * 1_000_000, self._last_ts + 1)
            self._last_ts = micros
            return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    # -- setting up the world

    def add_user(self, name: str, *, id: str | None = None, real_name: str | None = None,  # noqa: A002
                 bot: bool = False) -> User:
        """The user ``name`` (created on first use)."""
        with self.lock:
            found = self.find_user(name) if id is None else self.users.get(id)
            if found is not None:
                return found
            user = User(id or self.new_id("U"), name, real_name or name, bot, self.new_id("B") if bot else None,
                        self.clock.timestamp())
            self.users[user.id] = user
            return user

    def add_channel(
        self,
        name: str,
        *,
        id: str | None = None,  # noqa: A002
        member: bool = True,
        private: bool = False,
        archived: bool = False,
        members: Iterable[str] = (),
        topic: str = "",
        purpose: str = "",
        creator: str | None = None,
    ) -> Channel:
        """A channel; ``member`` says whether the bot is in it, ``members`` names other users in it.

        Private channels get legacy ``G`` ids unless ``id`` is given."""
        with self.lock:
            name = name.lstrip("#")
            if (found := self.find_channel(name)) is not None:
                return found
            creator_id = self.add_user(creator).id if creator else self.bot.id
            channel = Channel(id or self.new_id("G" if private else "C"), name, self.clock.timestamp(), creator_id,
                              private, archived, name == "general", topic, purpose)
            for login in members:
                channel.members.add(self.add_user(login).id)
            if member:
                channel.members.add(self.bot.id)
            self.channels[channel.id] = channel
            return channel

    def add_usergroup(self, handle: str, *, members: Iterable[str] = (), name: str | None = None,
                      id: str | None = None, disabled: bool = False) -> UserGroup:  # noqa: A002
        """A user group ``@handle`` whose ``members`` are user names (created if new) or ids."""
        with self.lock:
            handle = handle.lstrip("@")
            group = next((g for g in self.usergroups.values() if g.handle == handle), None)
            if group is None:
                group = UserGroup(id or self.new_id("S"), handle, name or handle, self.clock.timestamp())
                self.usergroups[group.id] = group
            group.members = [self.add_user(m).id if m not in self.users else m for m in members]
            group.disabled = disabled
            return group

    def click(self, channel: str, ts: str, action_id: str, user: str = "alice") -> dict[str, Any]:
        """``user`` clicks the button ``action_id`` of the message ``ts`` (and confirms its
        dialog): the ``block_actions`` payload Slack sends to the app. KeyError when the message
        shows no such button, as a person could not click it."""
        with self.lock:
            c = self.channel(channel)
            message = self.message(c.id, ts)
            clicker = self.add_user(user)
            for block in message.blocks or ():
                for element in block.get("elements") or () if block.get("type") == "actions" else ():
                    if element.get("action_id") == action_id:
                        action_ts = self.new_ts()
                        key = secrets.token_hex(8)
                        return {
                            "type": "block_actions",
                            "user": {"id": clicker.id, "username": clicker.name, "name": clicker.name,
                                     "team_id": self.team_id},
                            "api_app_id": "A0EMULATED", "token": "legacy-verification-token",
                            "container": {"type": "message", "message_ts": message.ts, "channel_id": c.id,
                                          "is_ephemeral": False},
                            "trigger_id": f"{action_ts.replace('.', '')}.{self.team_id}.{key}",
                            "team": {"id": self.team_id, "domain": "emulated"},
                            "enterprise": None, "is_enterprise_install": False,
                            "channel": {"id": c.id, "name": c.name},
                            "message": {"type": "message", "user": message.user, "ts": message.ts,
                                        "text": message.text, "blocks": copy.deepcopy(message.blocks),
                                        **({"thread_ts": message.thread_ts} if message.thread_ts else {})},
                            "state": {"values": {}},
                            "response_url": f"{self.response_base()}/actions/{self.team_id}/{key}",
                            "actions": [{"type": element.get("type", "button"), "action_id": action_id,
                                         "block_id": block.get("block_id", ""),
                                         "text": copy.deepcopy(element.get("text")),
                                         "value": element.get("value", ""), "action_ts": action_ts,
                                         **({"style": element["style"]} if element.get("style") else {})}],
                        }
            raise KeyError(f"message {ts} in {channel} has no button {action_id!r}")

    def set_member(self, channel: str, user: str | None = None, *, member: bool = True) -> None:
        """Invites ``user`` (the bot when None) into ``channel``, or removes it with ``member=False``."""
        with self.lock:
            c = self.channel(channel)
            user_id = self.user(user).id if user else self.bot.id
            if member:
                c.members.add(user_id)
            else:
                c.members.discard(user_id)

    def archive(self, channel: str, archived: bool = True) -> None:
        with self.lock:
            self.channel(channel).is_archived = archived

    def remove_channel(self, channel: str) -> None:
        """Deletes the channel, as if an admin had."""
        with self.lock:
            del self.channels[self.channel(channel).id]

    def post(self, channel: str, text: str, user: str = "alice", *, thread_ts: str | None = None,
             blocks: list[dict[str, Any]] | None = None, metadata: dict[str, Any] | None = None) -> Message:
        """A message written by someone (``user``'s name), at the top or into a thread."""
        with self.lock:
            c = self.channel(channel)
            author = self.add_user(user)
            c.members.add(author.id)
            return self._append(c, Message(self.new_ts(), c.id, author.id, text, blocks, None, metadata,
                                           author.bot_id), thread_ts)

    def _append(self, channel: Channel, message: Message, thread_ts: str | None) -> Message:
        if thread_ts is not None:
            parent = channel.index[thread_ts]
            if parent.is_reply:  # a reply to a reply goes into the same thread
                parent = channel.index[parent.thread_ts or ""]
            message.thread_ts = parent.ts
            parent.replies.append(message)
        else:
            channel.messages.append(message)
        channel.index[message.ts] = message
        return message

    # -- reading the world back

    def find_user(self, key: str) -> User | None:
        """By id, or by name (``@`` allowed)."""
        with self.lock:
            if key in self.users:
                return self.users[key]
            name = key.lstrip("@").lower()
            return next((u for u in self.users.values() if u.name.lower() == name), None)

    def user(self, key: str) -> User:
        found = self.find_user(key)
        if found is None:
            raise KeyError(f"no user {key!r} in the emulator")
        return found

    def find_channel(self, key: str) -> Channel | None:
        """By id, or by name (``#`` allowed)."""
        with self.lock:
            if key in self.channels:
                return self.channels[key]
            name = key.lstrip("#").lower()
            return next((c for c in self.channels.values() if c.name.lower() == name), None)

    def channel(self, key: str) -> Channel:
        found = self.find_channel(key)
        if found is None:
            raise KeyError(f"no channel {key!r} in the emulator")
        return found

    def messages(self, channel: str) -> list[Message]:
        """The channel's top-level messages, oldest first; each carries its ``replies``, earlier
        versions (``edits``), ``files``, ``metadata`` and ``reactions``."""
        with self.lock:
            return list(self.channel(channel).messages)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """A thread: its parent, then the replies, oldest first."""
        with self.lock:
            parent = self.message(channel, ts)
            return [parent, *parent.replies]

    def message(self, channel: str, ts: str) -> Message:
        with self.lock:
            try:
                return self.channel(channel).index[ts]
            except KeyError:
                raise KeyError(f"no message {ts} in {channel}") from None

    def file(self, file_id: str) -> File:
        with self.lock:
            return self.files[file_id]

    def ephemeral(self, channel: str | None = None) -> list[Ephemeral]:
        with self.lock:
            wanted = self.channel(channel).id if channel else None
            return [e for e in self.ephemerals if wanted is None or e.channel == wanted]

    def transcript(self, channel: str) -> str:
        """The channel as a person reads it: one line per message, replies indented under their
        parent, ``(edited)`` on updated messages, files as ``[file name "title"]``."""
        with self.lock:
            lines = []
            for message in self.channel(channel).messages:
                lines.append(self._line(message))
                lines.extend("    ↳ " + self._line(reply) for reply in message.replies)
            return "\n".join(lines)

    def _line(self, message: Message) -> str:
        author = self.users[message.user].name if message.user in self.users else message.user
        text = " ".join(message.text.split())
        parts = [f"{author}: {text}".rstrip()]
        parts += [f'[file {f.name} "{f.title}"]' for f in message.files]
        if message.edits:
            parts.append("(edited)")
        if message.reactions:
            parts.append(" ".join(f":{name}:" for name in message.reactions))
        return " ".join(parts)


# ---------------------------------------------------------------------------
# Requests


@dataclass
class _Fail(Exception):
    """Ends a handler with Slack's error answer (HTTP 200, ``ok: false``)."""

    error: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Identity:
    token: str
    user: User
    scopes: tuple[str, ...]


@dataclass
class _Call:
    """One Web API call: its method, arguments (query, form or JSON merged) and caller."""

    method: str
    args: dict[str, Any]
    identity: _Identity

    def get(self, name: str, default: Any = None) -> Any:
        value = self.args.get(name)
        return default if value in (None, "") else value

    def flag(self, name: str) -> bool:
        value = self.args.get(name)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes")
        return bool(value)

    def number(self, name: str, default: int, *, low: int = 1, high: int = 1000) -> int:
        try:
            value = int(self.args.get(name) or default)
        except (TypeError, ValueError):
            raise _Fail("invalid_arguments") from None
        return default if value == 0 else min(max(value, low), high)

    def json_arg(self, name: str) -> Any:
        """An argument that is JSON: sent as a structure (JSON bodies) or as a string (forms)."""
        value = self.args.get(name)
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except ValueError:
                raise _Fail("invalid_arguments" if name == "files" else f"invalid_{name}") from None
        return value

    def need(self, scope: str) -> None:
        if scope not in self.identity.scopes:
            raise _Fail("missing_scope", {"needed": scope, "provided": ",".join(self.identity.scopes)})


def _ts_key(ts: Any) -> tuple[int, int]:
    """A message timestamp as (seconds, microseconds), for comparing; bad input is ``invalid_ts``."""
    text = str(ts)
    seconds, _, fraction = text.partition(".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        raise _Fail("invalid_ts_latest")
    return int(seconds), int((fraction + "000000")[:6])


def _cursor(prefix: str, value: str) -> str:
    return base64.b64encode(f"{prefix}:{value}".encode()).decode()


def _uncursor(cursor: str | None, prefix: str) -> str | None:
    if not cursor:
        return None
    try:
        kind, _, value = base64.b64decode(cursor, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise _Fail("invalid_cursor") from None
    if kind != prefix or not value:
        raise _Fail("invalid_cursor")
    return value


def _text_problems(text: Any, where: str, *, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")) -> list[str]:
    if not isinstance(text, dict) or text.get("type") not in kinds:
        return [f"must provide an object with type in {list(kinds)} [json-pointer:{where}]"]
    value = text.get("text")
    if not isinstance(value, str) or not value:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(value) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def block_problems(blocks: Any) -> list[str]:
    """What Slack would refuse in ``blocks`` (``invalid_blocks``), in its own words: the limits on
    block count, section, field, header and context texts, buttons and their confirmation dialogs,
    repeated action ids, and unknown block types."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    for k, block in enumerate(blocks):
        where = f"/blocks/{k}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _BLOCK_TYPES:
            problems.append(f"unsupported type: {kind} [json-pointer:{where}/type]")
            continue
        if len(str(block.get("block_id", ""))) > 255:
            problems.append(f"must be less than 256 characters [json-pointer:{where}/block_id]")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"must provide either text or fields [json-pointer:{where}]")
            if "text" in block:
                problems += _text_problems(block["text"], f"{where}/text", limit=MAX_SECTION_TEXT)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                problems.append(f"no more than 10 items allowed [json-pointer:{where}/fields]")
            else:
                for j, item in enumerate(fields):
                    problems += _text_problems(item, f"{where}/fields/{j}", limit=MAX_FIELD_TEXT)
        elif kind == "header":
            problems += _text_problems(block.get("text"), f"{where}/text", limit=MAX_HEADER_TEXT, kinds=("plain_text",))
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"must have between 1 and 10 items [json-pointer:{where}/elements]")
            else:
                for j, item in enumerate(elements):
                    if isinstance(item, dict) and item.get("type") == "image":
                        continue
                    problems += _text_problems(item, f"{where}/elements/{j}", limit=MAX_SECTION_TEXT)
        elif kind == "image":
            if not (block.get("image_url") or block.get("slack_file")) or not block.get("alt_text"):
                problems.append(f"must provide image_url and alt_text [json-pointer:{where}]")
        elif kind == "actions":
            problems += _actions_problems(block, where)
    action_ids = [e.get("action_id") for b in blocks if isinstance(b, dict) and b.get("type") == "actions"
                  for e in b.get("elements") or () if isinstance(e, dict) and e.get("action_id")]
    if len(action_ids) != len(set(action_ids)):
        problems.append("action_id must be unique in the message [json-pointer:/blocks]")
    return problems


def _actions_problems(block: dict[str, Any], where: str) -> list[str]:
    """An actions block of buttons, with their confirmation dialogs, as Slack checks them."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS:
        return [f"must have between 1 and {MAX_ACTIONS} items [json-pointer:{where}/elements]"]
    problems = []
    for j, element in enumerate(elements):
        at = f"{where}/elements/{j}"
        if not isinstance(element, dict) or element.get("type") != "button":
            problems.append(f"unsupported type: {element.get('type') if isinstance(element, dict) else None} "
                            f"[json-pointer:{at}/type]")
            continue
        problems += _text_problems(element.get("text"), f"{at}/text", limit=MAX_BUTTON_TEXT, kinds=("plain_text",))
        if len(str(element.get("action_id", ""))) > 255:
            problems.append(f"must be less than 256 characters [json-pointer:{at}/action_id]")
        if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
            problems.append(f"must be less than {MAX_BUTTON_VALUE + 1} characters [json-pointer:{at}/value]")
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"must be one of primary, danger [json-pointer:{at}/style]")
        confirm = element.get("confirm")
        if confirm is not None:
            if not isinstance(confirm, dict):
                problems.append(f"must be an object [json-pointer:{at}/confirm]")
                continue
            for name, limit, kinds in (("title", 100, ("plain_text",)), ("text", 300, ("plain_text", "mrkdwn")),
                                       ("confirm", 30, ("plain_text",)), ("deny", 30, ("plain_text",))):
                problems += _text_problems(confirm.get(name), f"{at}/confirm/{name}", limit=limit, kinds=kinds)
            if confirm.get("style") not in (None, "primary", "danger"):
                problems.append(f"must be one of primary, danger [json-pointer:{at}/confirm/style]")
    return problems


# ---------------------------------------------------------------------------
# The emulator


class SlackEmulator(HttpEmulator):
    """Slack's Web API for slack-sdk, at ``base_url`` (``http://127.0.0.1:PORT/api/``).

    ``token`` is a bot token of the bot user ``bot_name`` with ``scopes``; add more with
    ``add_token``. ``rate_limit(method, per_minute)`` makes a method answer 429 past that many
    calls a minute (per token, on the emulator's clock); ``faults`` (``"429"`` and the two
    ``rate_limit_*`` kinds all give Slack's 429) script the rest, as in the GitHub emulator.

    With ``tier_limits``, every method is limited as Slack documents it: its tier's calls per minute
    (``METHOD_TIERS``, ``TIER_PER_MINUTE``) in any 60 s of the emulator's clock, and
    chat.postMessage to ``POST_PER_SECOND`` per channel with bursts of ``POST_BURST``, per token.
    Past a limit the answer is HTTP 429 with ``Retry-After`` and ``{"ok": false, "error":
    "ratelimited"}``, and nothing is applied; ``rate_limited`` counts those answers by method.
    """

    service = "slack"

    #: routes that are not Web API methods, so Slack's description has none of them
    UNDESCRIBED_ROUTES = {
        "POST /upload/v1/{key}": "the upload URL files.getUploadURLExternal hands out (a file host, not the API)",
        "GET /files-pri/{file_id}/{name}": "a file's url_private download (a file host, not the API)",
        "POST /actions/{team}/{key}": "an interaction's response_url (Slack's webhook for answers, not the API)",
    }

    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",
        bot_name: str = "mlops-bot",
        scopes: Sequence[str] = DEFAULT_SCOPES,
        team: str = "Emulated Workspace",
        team_id: str = "T0EMULATED",
        max_text: int = MAX_TEXT,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        schemas: OpenAPISchemas | None = None,
        tier_limits: bool = False,
    ) -> None:
        super().__init__(host=host, port=port, prefix="", clock=clock, schemas=schemas)
        self.state = SlackState(self.clock, self.lock, team_id=team_id, team=team, bot_name=bot_name)
        self.tier_limits = tier_limits
        self.rate_limited: dict[str, int] = {}  # method -> 429s answered by a limit (not scripted faults)
        self._tier_windows: dict[tuple[str, str], SlidingWindow] = {}  # (token, method)
        self._channel_buckets: dict[tuple[str, str], TokenBucket] = {}  # (token, channel) for chat.postMessage
        self.token = token
        self.max_text = max_text
        self.bot = self.state.bot
        self._tokens: dict[str, _Identity] = {}
        self._revoked: set[str] = set()
        self._limits: dict[str, int] = {}  # method -> calls a minute
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}  # (token, method) -> (minute, calls)
        self._uploads: dict[str, str] = {}  # upload key -> file id
        self.add_token(token, bot_name, scopes=scopes)
        self.state.response_base = lambda: self.url
        handlers: dict[str, Callable[[_Call], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "conversations.info": self._conversation_info,
            "conversations.list": self._conversation_list,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "users.info": self._user_info,
            "reactions.add": self._react,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "usergroups.list": self._usergroups,
            "usergroups.users.list": self._usergroup_users,
        }
        for method in METHODS:
            for verb in ("GET", "POST"):  # Slack takes either; slack-sdk always POSTs
                self.route(verb, f"{API_PREFIX}/{method}", self._api(method, handlers[method]), name=method)
        self.route("POST", "/upload/v1/{key}", self._receive_upload, name="upload")
        self.route("GET", "/files-pri/{file_id}/{name}", self._download, name="files.download")
        self.route("POST", "/actions/{team}/{key}", self._response_url, name="response_url")

    # -- configuration

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api/``: what ``WebClient(base_url=...)`` is given."""
        return f"{self.url}{API_PREFIX}/"

    @property
    def team_id(self) -> str:
        return self.state.team_id

    def add_token(self, token: str, user: str, *, scopes: Sequence[str] = DEFAULT_SCOPES, bot: bool = False) -> User:
        """A token acting as ``user`` (created, as a bot user with ``bot``, if new)."""
        with self.lock:
            found = self.state.add_user(user, bot=bot)
            self._tokens[token] = _Identity(token, found, tuple(scopes))
            self._revoked.discard(token)
            return found

    def set_scopes(self, token: str, scopes: Sequence[str]) -> None:
        """The scopes ``token`` holds from now on: an admin adding a scope to the app (and reinstalling
        it, which Slack needs) or taking one away. Calls needing a scope it lacks answer
        ``missing_scope`` with ``needed`` and ``provided``."""
        with self.lock:
            identity = self._tokens[token]
            identity.scopes = tuple(scopes)

    def revoke_token(self, token: str) -> None:
        """Later calls with ``token`` answer ``token_revoked``."""
        with self.lock:
            self._revoked.add(token)

    def rate_limit(self, method: str, per_minute: int | None) -> None:
        """Answer ``method`` with 429 past ``per_minute`` calls a minute per token (None: no limit)."""
        with self.lock:
            if per_minute is None:
                self._limits.pop(method, None)
            else:
                self._limits[method] = per_minute
            self._windows.clear()

    def calls(self, method: str) -> list[dict[str, Any]]:
        """The arguments of every call of ``method`` so far (answered or not), oldest first,
        whether they came as JSON or as a form."""
        found = []
        for entry in self.log.filter(route=method):
            body = entry.body
            if isinstance(body, str):
                body = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
            found.append({**entry.query, **(body if isinstance(body, dict) else {})})
        return found

    # -- the pipeline

    def not_found(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        return Response(404, {"ok": False, "error": "unknown_method", "req_method": name})

    def fault_response(self, rule: FaultRule, request: Request) -> Response:
        if rule.kind in ("rate_limit_primary", "rate_limit_secondary", "429"):
            return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(rule.retry_after)})
        errors = {500: "internal_error", 502: "internal_error", 503: "service_unavailable"}
        return Response(int(rule.kind), {"ok": False, "error": errors[int(rule.kind)]})

    def finalize(self, request: Request, response: Response) -> Response:
        headers = {"X-Slack-Req-Id": secrets.token_hex(16), "X-Slack-Backend": "r"}
        identity = request.identity
        if isinstance(identity, _Identity) and request.route is not None and request.route.name in METHODS:
            headers["X-OAuth-Scopes"] = ",".join(identity.scopes)
            headers["X-Accepted-OAuth-Scopes"] = _ACCEPTED_SCOPES.get(request.route.name, "")
        response.headers = {**headers, **response.headers}
        return response

    def identity_name(self, request: Request) -> str | None:
        identity = request.identity
        return identity.user.name if isinstance(identity, _Identity) else None

    def refuses(self, response: Response) -> bool:
        # Slack refuses a call with HTTP 200 and ok=false (not_authed, invalid_arguments, ...)
        return response.status == 400 or (response.status == 200 and _is_error_answer(response.body))

    def request_problems(self, request: Request) -> list[str]:
        """A Web API call's arguments (query, form or JSON, as Slack takes them all) against the
        method's parameters in the description, wherever it lists them (form or query): an
        argument it does not list, a required one missing, a value of the wrong type."""
        route = request.route
        assert route is not None and self.schemas is not None
        if route.key in self.UNDESCRIBED_ROUTES:
            return []
        if route.name not in METHODS:
            return [f"the route {route.key} is not in the description (nor in UNDESCRIBED_ROUTES)"]
        try:
            args = _arguments(request)
        except _Fail as failure:
            return [f"body: {failure.error}"]
        return method_arguments_problems(self.schemas, route.name, args,
                                         authorized=(request.header("authorization") or "").lower().startswith("bearer "))

    def _check_schema(self, request: Request, response: Response) -> None:
        # Slack answers errors with HTTP 200 and ok=false, checked against the method's "default"
        # response; the framework's check (by HTTP status) would use the success schema for them.
        # A 429 or 5xx (a limit, an injected fault) carries the same error body, checked the same way.
        if self.schemas is None:
            return
        if request.route is None:  # an unknown method: Slack's error shape, with no method to name codes
            errors = [] if _is_error_answer(response.body) else [f"(root): not {{ok: false, error}}: {response.body!r:.80}"]
        elif request.route.name not in METHODS:
            return
        elif not isinstance(response.body, dict):
            errors = [f"(root): a Web API answer is a JSON object, got {response.body!r:.80}"]
        else:
            errors = validate_answer(self.schemas, request.route.name, response.body)
        self.violations.extend(f"{request.method} {request.path} -> {response.status}: {e}" for e in errors)

    def _api(self, method: str, handler: Callable[[_Call], dict[str, Any]]) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            try:
                args = _arguments(request)
                identity = self._authenticate(request, args)
                request.identity = identity
                limited = self._over_limit(method, identity) or self._over_tier(method, identity, args)
                if limited is not None:
                    self.rate_limited[method] = self.rate_limited.get(method, 0) + 1
                    return limited
                body = handler(_Call(method, args, identity))
            except _Fail as failure:
                return Response(200, {"ok": False, "error": failure.error, **failure.extra},
                                charged=isinstance(request.identity, _Identity))
            return Response(200, {"ok": True, **body}, charged=True)

        return serve

    def _authenticate(self, request: Request, args: dict[str, Any]) -> _Identity:
        header = request.header("authorization") or ""
        scheme, _, credential = header.strip().partition(" ")
        token = credential.strip() if scheme.lower() == "bearer" else ""
        token = token or str(args.pop("token", "") or "")
        args.pop("token", None)
        if not token:
            raise _Fail("not_authed")
        if token in self._revoked:
            raise _Fail("token_revoked")
        identity = self._tokens.get(token)
        if identity is None:
            raise _Fail("invalid_auth")
        return identity

    def _over_limit(self, method: str, identity: _Identity) -> Response | None:
        limit = self._limits.get(method)
        if limit is None:
            return None
        now = self.clock.timestamp()
        minute = now // 60
        key = (identity.token, method)
        window, calls = self._windows.get(key, (minute, 0))
        if window != minute:
            window, calls = minute, 0
        if calls >= limit:
            wait = max(1, (minute + 1) * 60 - now)
            return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(wait)})
        self._windows[key] = (window, calls + 1)
        return None

    def _over_tier(self, method: str, identity: _Identity, args: dict[str, Any]) -> Response | None:
        """Slack's documented limits (with ``tier_limits``): the 429 to answer, or None."""
        if not self.tier_limits:
            return None
        now = self.clock.seconds()
        if method == "chat.postMessage":
            key = (identity.token, str(args.get("channel", "")))
            bucket = self._channel_buckets.setdefault(key, TokenBucket(POST_BURST, POST_PER_SECOND))
            wait = bucket.take(now)
        else:
            per_minute = TIER_PER_MINUTE[METHOD_TIERS.get(method, 2)]
            window = self._tier_windows.setdefault((identity.token, method), SlidingWindow(per_minute, 60))
            wait = window.take(now)
        if wait == 0:
            return None
        return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(max(1, math.ceil(wait)))})

    # -- helpers

    def _channel(self, call: _Call, *, names: bool = False, arg: str = "channel") -> Channel:
        """The channel an argument names; by id only, except where Slack also takes names."""
        key = str(call.get(arg, "")).strip()
        found = self.state.channels.get(key)
        if found is None and names and key:
            name = key.lstrip("#").lower()
            found = next((c for c in self.state.channels.values() if c.name.lower() == name), None)
        if found is None or (found.is_private and call.identity.user.id not in found.members):
            raise _Fail("channel_not_found")
        return found

    def _member(self, call: _Call, channel: Channel) -> None:
        if call.identity.user.id not in channel.members:
            raise _Fail("not_in_channel")

    def _need_read(self, call: _Call, channel: Channel, what: str) -> None:
        call.need(f"{'groups' if channel.is_private else 'channels'}:{what}")

    def _message_arg(self, call: _Call, channel: Channel, arg: str) -> Message:
        ts = str(call.get(arg, ""))
        message = channel.index.get(ts)
        if message is None:
            raise _Fail("message_not_found")
        return message

    def _content(self, call: _Call, *, required: bool = True) -> tuple[str | None, list[dict[str, Any]] | None]:
        """``text`` and ``blocks`` of a message, checked as Slack checks them."""
        text = call.args.get("text")
        text = None if text is None else str(text)
        blocks = call.json_arg("blocks")
        if blocks is not None:
            problems = block_problems(blocks)
            if problems:
                raise _Fail("invalid_blocks", {
                    "errors": problems, "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]}})
        if required and not text and not blocks and not call.get("attachments"):
            raise _Fail("no_text")
        if text is not None and len(text) > self.max_text:
            raise _Fail("msg_too_long")
        return text, blocks

    def _metadata(self, call: _Call) -> dict[str, Any] | None:
        metadata = call.json_arg("metadata")
        if metadata is None or metadata == {}:
            return metadata
        if (not isinstance(metadata, dict) or not _EVENT_TYPE.match(str(metadata.get("event_type", "")))
                or not isinstance(metadata.get("event_payload", {}), dict)):
            raise _Fail("invalid_metadata_format")
        return {"event_type": metadata["event_type"], "event_payload": metadata.get("event_payload", {})}

    # -- JSON bodies

    def web(self, path: str) -> str:
        return self.url + path

    def _conversation_json(self, channel: Channel, viewer: _Identity, *, num_members: bool = False) -> dict[str, Any]:
        def about(value: str) -> dict[str, Any]:
            return {"value": value, "creator": channel.creator if value else "", "last_set": channel.created if value else 0}

        body: dict[str, Any] = {
            "id": channel.id,
            "name": channel.name,
            "is_channel": not channel.is_private,
            "is_group": channel.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": channel.is_private,
            "created": channel.created,
            "is_archived": channel.is_archived,
            "is_general": channel.is_general,
            "unlinked": 0,
            "name_normalized": channel.name.lower(),
            "is_shared": False,
            "is_org_shared": False,
            "is_pending_ext_shared": False,
            "pending_shared": [],
            "parent_conversation": None,
            "creator": channel.creator,
            "is_ext_shared": False,
            "shared_team_ids": [self.team_id],
            "pending_connected_team_ids": [],
            "is_member": viewer.user.id in channel.members,
            "topic": about(channel.topic),
            "purpose": about(channel.purpose),
            "previous_names": [],
        }
        if num_members:
            body["num_members"] = len(channel.members)
        return body

    def _file_json(self, f: File) -> dict[str, Any]:
        channels = [self.state.channels[c] for c in f.shared_to if c in self.state.channels]
        quoted = urllib.parse.quote(f.name)
        body: dict[str, Any] = {
            "id": f.id,
            "created": f.created,
            "timestamp": f.created,
            "name": f.name,
            "title": f.title,
            "mimetype": f.mimetype,
            "filetype": f.filetype,
            "pretty_type": f.filetype.upper(),
            "user": f.user,
            "user_team": self.team_id,
            "editable": False,
            "size": f.size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": any(not c.is_private for c in channels),
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": self.web(f"/files-pri/{f.id}/{quoted}"),
            "url_private_download": self.web(f"/files-pri/{f.id}/download/{quoted}"),
            "permalink": self.web(f"/files/{f.user}/{f.id}/{quoted}"),
            "has_rich_preview": False,
            "comments_count": 0,
            "is_starred": False,
            "channels": [c.id for c in channels if not c.is_private and c.id.startswith("C")],
            "groups": [c.id for c in channels if c.is_private and c.id.startswith("G")],
            "ims": [],
        }
        if (size := f.image_size) is not None:
            body["original_w"], body["original_h"] = size
        return body

    def _message_json(self, m: Message, *, metadata: bool = False, extended: bool = False) -> dict[str, Any]:
        """A message as Slack's ``objs_message`` allows it; ``extended`` adds what conversations.*
        also carry (``edited``, ``metadata`` when asked for)."""
        body: dict[str, Any] = {"type": "message", "text": m.text, "ts": m.ts, "user": m.user, "team": self.team_id}
        if m.bot_id:
            body["bot_id"] = m.bot_id
        if m.blocks is not None:
            body["blocks"] = copy.deepcopy(m.blocks)
        if m.replies:
            users = list(dict.fromkeys(r.user for r in m.replies))
            body.update(thread_ts=m.ts, reply_count=len(m.replies), reply_users=users,
                        reply_users_count=len(users), latest_reply=m.replies[-1].ts, subscribed=False)
            if extended:
                body["is_locked"] = False
        elif m.is_reply:
            parent = self.state.channels[m.channel].index[m.thread_ts or ""]
            body.update(thread_ts=m.thread_ts, parent_user_id=parent.user)
        if m.files:
            body.update(files=[self._file_json(f) for f in m.files], upload=True, display_as_bot=False)
        if m.reactions:
            body["reactions"] = [{"name": name, "users": list(users), "count": len(users)}
                                 for name, users in m.reactions.items()]
        if extended:
            if m.edits:
                body["edited"] = {"user": m.user, "ts": m.edits[-1].replaced_at}
            if metadata and m.metadata:
                body["metadata"] = copy.deepcopy(m.metadata)
        return body

    def _user_json(self, user: User) -> dict[str, Any]:
        profile = {
            "real_name": user.real_name, "display_name": user.name, "avatar_hash": "g0000000000",
            "real_name_normalized": user.real_name, "display_name_normalized": user.name, "title": "",
            "phone": "", "skype": "", "status_text": "", "status_emoji": "", "fields": None, "team": self.team_id,
            "image_72": self.web(f"/avatars/{user.id}_72.png"),
        }
        if user.bot_id:
            profile["bot_id"] = user.bot_id
        return {
            "id": user.id, "team_id": self.team_id, "name": user.name, "deleted": user.deleted,
            "color": "9f69e7", "real_name": user.real_name, "tz": "Europe/London", "tz_label": "Greenwich Mean Time",
            "tz_offset": 0, "profile": profile, "is_admin": False, "is_owner": False, "is_primary_owner": False,
            "is_restricted": False, "is_ultra_restricted": False, "is_bot": user.is_bot, "is_app_user": False,
            "updated": user.updated,
        }

    # -- the methods

    def _auth_test(self, call: _Call) -> dict[str, Any]:
        user = call.identity.user
        body = {"url": self.web("/"), "team": self.state.team, "user": user.name, "team_id": self.team_id,
                "user_id": user.id, "is_enterprise_install": False}
        if user.bot_id:
            body["bot_id"] = user.bot_id
        return body

    def _post_message(self, call: _Call) -> dict[str, Any]:
        call.need("chat:write")
        channel = self._channel(call, names=True)
        if channel.is_archived:
            raise _Fail("is_archived")
        if call.identity.user.id not in channel.members and "chat:write.public" not in call.identity.scopes:
            raise _Fail("not_in_channel")
        text, blocks = self._content(call)
        metadata = self._metadata(call) or None
        thread_ts = call.get("thread_ts")
        if thread_ts is not None and str(thread_ts) not in channel.index:
            raise _Fail("thread_not_found")
        user = call.identity.user
        message = Message(self.state.new_ts(), channel.id, user.id, text or "", blocks, None, metadata, user.bot_id)
        self.state._append(channel, message, None if thread_ts is None else str(thread_ts))
        return {"channel": channel.id, "ts": message.ts, "message": self._message_json(message)}

    def _update(self, call: _Call) -> dict[str, Any]:
        call.need("chat:write")
        channel = self._channel(call)
        message = self._message_arg(call, channel, "ts")
        if message.user != call.identity.user.id:
            raise _Fail("cant_update_message")
        if channel.is_archived:
            raise _Fail("is_archived")
        text, blocks = self._content(call, required=False)
        if text is None and blocks is None and "metadata" not in call.args and not call.get("attachments"):
            raise _Fail("no_text")
        message.edits.append(Edit(message.text, copy.deepcopy(message.blocks), self.state.new_ts()))
        if text is not None:  # what is left out is kept, as Slack does
            message.text = text
        if blocks is not None:
            message.blocks = blocks or None
        if "metadata" in call.args:
            message.metadata = self._metadata(call) or None
        answer = {"text": message.text, "type": "message", "user": message.user, "team": self.team_id,
                  "edited": {"user": message.user, "ts": message.edits[-1].replaced_at}}
        if message.bot_id:
            answer["bot_id"] = message.bot_id
        return {"channel": channel.id, "ts": message.ts, "text": message.text, "message": answer}

    def _post_ephemeral(self, call: _Call) -> dict[str, Any]:
        call.need("chat:write")
        channel = self._channel(call, names=True)
        if channel.is_archived:
            raise _Fail("is_archived")
        self._member(call, channel)
        user = self.state.find_user(str(call.get("user", "")))
        if user is None or user.id not in channel.members:
            raise _Fail("user_not_in_channel")
        text, blocks = self._content(call)
        thread_ts = call.get("thread_ts")
        ephemeral = Ephemeral(channel.id, user.id, call.identity.user.id, text or "", blocks, self.state.new_ts(),
                              None if thread_ts is None else str(thread_ts))
        self.state.ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.ts}

    def _permalink(self, call: _Call) -> dict[str, Any]:
        channel = self._channel(call)
        message = self._message_arg(call, channel, "message_ts")
        link = self.web(f"/archives/{channel.id}/p{message.ts.replace('.', '')}")
        if message.is_reply:
            link += "?" + urllib.parse.urlencode({"thread_ts": message.thread_ts, "cid": channel.id})
        return {"channel": channel.id, "permalink": link}

    def _conversation_info(self, call: _Call) -> dict[str, Any]:
        channel = self._channel(call)
        self._need_read(call, channel, "read")
        return {"channel": self._conversation_json(channel, call.identity, num_members=call.flag("include_num_members"))}

    def _conversation_list(self, call: _Call) -> dict[str, Any]:
        types = {t.strip() for t in str(call.get("types", "public_channel")).split(",") if t.strip()}
        if "public_channel" in types:
            call.need("channels:read")
        if "private_channel" in types:
            call.need("groups:read")
        viewer = call.identity.user.id
        found = [
            c for c in self.state.channels.values()
            if (("private_channel" in types) if c.is_private else ("public_channel" in types))
            and (not c.is_private or viewer in c.members)
            and not (call.flag("exclude_archived") and c.is_archived)
        ]
        found.sort(key=lambda c: (c.created, c.id))
        start = int(_uncursor(call.get("cursor"), "offset") or 0)
        limit = call.number("limit", 100, high=1000)
        page = found[start:start + limit]
        more = start + limit < len(found)
        return {"channels": [self._conversation_json(c, call.identity) for c in page],
                "response_metadata": {"next_cursor": _cursor("offset", str(start + limit)) if more else ""}}

    def _window(self, call: _Call, messages: Sequence[Message]) -> list[Message]:
        """The messages between ``oldest`` and ``latest`` (``inclusive`` at both ends when asked)."""
        oldest = _ts_key(call.get("oldest", "0"))
        latest = _ts_key(call.get("latest")) if call.get("latest") is not None else None
        inclusive = call.flag("inclusive")

        def inside(m: Message) -> bool:
            key = _ts_key(m.ts)
            if key < oldest or (key == oldest and not inclusive and oldest != (0, 0)):
                return False
            return latest is None or key < latest or (key == latest and inclusive)

        return [m for m in messages if inside(m)]

    def _history(self, call: _Call) -> dict[str, Any]:
        channel = self._channel(call)
        self._need_read(call, channel, "history")
        self._member(call, channel)
        newest_first = self._window(call, list(reversed(channel.messages)))
        after = _uncursor(call.get("cursor"), "next_ts")
        if after is not None:
            newest_first = [m for m in newest_first if _ts_key(m.ts) <= _ts_key(after)]
        limit = call.number("limit", 100, high=999)
        page, rest = newest_first[:limit], newest_first[limit:]
        metadata = call.flag("include_all_metadata")
        return {
            "messages": [self._message_json(m, metadata=metadata, extended=True) for m in page],
            "has_more": bool(rest),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": _cursor("next_ts", rest[0].ts) if rest else ""},
        }

    def _replies(self, call: _Call) -> dict[str, Any]:
        channel = self._channel(call)
        self._need_read(call, channel, "history")
        self._member(call, channel)
        message = channel.index.get(str(call.get("ts", "")))
        if message is None:
            raise _Fail("thread_not_found")
        replies = [] if message.is_reply else self._window(call, message.replies)
        after = _uncursor(call.get("cursor"), "next_ts")
        limit = call.number("limit", 1000, high=1000)
        if after is None:  # the first page starts with the parent
            page, rest = [message, *replies[: limit - 1]], replies[limit - 1:]
        else:
            replies = [m for m in replies if _ts_key(m.ts) >= _ts_key(after)]
            page, rest = replies[:limit], replies[limit:]
        metadata = call.flag("include_all_metadata")
        return {
            "messages": [self._message_json(m, metadata=metadata, extended=True) for m in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": _cursor("next_ts", rest[0].ts) if rest else ""},
        }

    def _user_info(self, call: _Call) -> dict[str, Any]:
        call.need("users:read")
        user = self.state.users.get(str(call.get("user", "")))
        if user is None:
            raise _Fail("user_not_found")
        return {"user": self._user_json(user)}

    def _usergroup_json(self, group: UserGroup, *, users: bool, count: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": group.id, "team_id": self.team_id, "is_usergroup": True, "is_subteam": True,
            "name": group.name, "description": "", "handle": group.handle, "is_external": False,
            "date_create": group.created, "date_update": group.created, "date_delete": 0,
            "auto_type": None, "created_by": self.state.bot.id, "updated_by": self.state.bot.id,
            "deleted_by": None, "prefs": {"channels": [], "groups": []},
        }
        if users:
            body["users"] = list(group.members)
        if count:
            body["user_count"] = len(group.members)
        return body

    def _usergroups(self, call: _Call) -> dict[str, Any]:
        call.need("usergroups:read")
        shown = [g for g in self.state.usergroups.values() if call.flag("include_disabled") or not g.disabled]
        return {"usergroups": [self._usergroup_json(g, users=call.flag("include_users"), count=call.flag("include_count"))
                               for g in sorted(shown, key=lambda g: g.id)]}

    def _usergroup_users(self, call: _Call) -> dict[str, Any]:
        call.need("usergroups:read")
        group = self.state.usergroups.get(str(call.get("usergroup", "")))
        if group is None:
            raise _Fail("no_such_subteam")
        if group.disabled and not call.flag("include_disabled"):
            raise _Fail("no_such_subteam")  # a disabled group is not shown without include_disabled
        return {"users": list(group.members)}

    def _response_url(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return Response(400, b"invalid_payload", content_type="text/plain")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks") or body.get("delete_original")):
            return Response(400, b"no_text", content_type="text/plain")
        with self.lock:
            self.state.responses.append(ResponsePost(request.params["key"], body))
        return Response(200, b"ok", content_type="text/plain")

    def _react(self, call: _Call) -> dict[str, Any]:
        call.need("reactions:write")
        channel = self._channel(call)
        if not call.get("timestamp"):
            raise _Fail("no_item_specified")
        message = self._message_arg(call, channel, "timestamp")
        name = str(call.get("name", "")).strip(":")
        if not _EMOJI.match(name):
            raise _Fail("invalid_name")
        users = message.reactions.setdefault(name, [])
        if call.identity.user.id in users:
            raise _Fail("already_reacted")
        users.append(call.identity.user.id)
        return {}

    def _upload_url(self, call: _Call) -> dict[str, Any]:
        call.need("files:write")
        name = str(call.get("filename", "")).strip()
        try:
            length = int(call.get("length", 0))
        except (TypeError, ValueError):
            length = 0
        if not name or not 0 < length <= MAX_FILE_SIZE:
            raise _Fail("invalid_arguments")
        f = File(self.state.new_id("F"), name, name, call.identity.user.id, self.clock.timestamp(), length,
                 call.get("alt_txt"))
        self.state.files[f.id] = f
        key = secrets.token_urlsafe(18)
        self._uploads[key] = f.id
        return {"upload_url": self.web(f"/upload/v1/{key}"), "file_id": f.id}

    def _receive_upload(self, request: Request) -> Response:
        """The upload URL: takes the raw bytes (as ``files_upload_v2`` sends them) or a form's ``file``."""
        file_id = self._uploads.get(request.params["key"])
        if file_id is None:
            return Response(404, b"Not Found", content_type="text/plain; charset=utf-8")
        data = request.body
        if (request.header("content-type") or "").startswith("multipart/form-data"):
            data = _multipart_file(request) or b""
        f = self.state.files[file_id]
        f.content, f.size = data, len(data)
        return Response(200, f"OK - {len(data)}".encode(), content_type="text/plain; charset=utf-8")

    def _complete_upload(self, call: _Call) -> dict[str, Any]:
        call.need("files:write")
        wanted = call.json_arg("files")
        if not isinstance(wanted, list) or not wanted or not all(isinstance(w, dict) and w.get("id") for w in wanted):
            raise _Fail("invalid_arguments")
        files = []
        for item in wanted:
            f = self.state.files.get(str(item["id"]))
            if f is None or f.user != call.identity.user.id or f.completed:
                raise _Fail("file_not_found")
            if f.content is None:
                raise _Fail("file_upload_not_found")  # the bytes never reached the upload URL
            files.append((f, item.get("title")))
        targets = []
        channel_ids = [c for c in str(call.get("channels", "")).split(",") if c]
        if call.get("channel_id"):
            channel_ids.insert(0, str(call.get("channel_id")))
        thread_ts = call.get("thread_ts")
        for channel_id in channel_ids:
            channel = self._channel(_Call(call.method, {"channel": channel_id}, call.identity))
            self._member(call, channel)
            if thread_ts is not None and str(thread_ts) not in channel.index:
                raise _Fail("invalid_thread_ts")
            targets.append(channel)
        for f, title in files:
            f.title, f.completed = str(title or f.title), True
        user = call.identity.user
        for channel in targets:  # Slack shares asynchronously; here the share is there at once
            for f, _ in files:
                f.shared_to.append(channel.id)
            message = Message(self.state.new_ts(), channel.id, user.id, str(call.get("initial_comment", "")), None,
                              None, None, user.bot_id, [f for f, _ in files])
            self.state._append(channel, message, None if thread_ts is None else str(thread_ts))
        return {"files": [{"id": f.id, "title": f.title} for f, _ in files]}

    def _download(self, request: Request) -> Response:
        header = request.header("authorization") or ""
        identity = self._tokens.get(header.partition(" ")[2].strip())
        f = self.state.files.get(request.params["file_id"])
        if identity is None or f is None or f.content is None:
            return Response(404, b"Not Found", content_type="text/plain; charset=utf-8")
        request.identity = identity
        return Response(200, f.content, content_type=f.mimetype)


#: the scope each method lists in X-Accepted-OAuth-Scopes
_ACCEPTED_SCOPES = {
    "chat.postMessage": "chat:write", "chat.update": "chat:write", "chat.postEphemeral": "chat:write",
    "conversations.info": "channels:read,groups:read", "conversations.list": "channels:read,groups:read",
    "conversations.history": "channels:history,groups:history",
    "conversations.replies": "channels:history,groups:history", "users.info": "users:read",
    "reactions.add": "reactions:write", "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write", "usergroups.list": "usergroups:read",
    "usergroups.users.list": "usergroups:read",
}


def _arguments(request: Request) -> dict[str, Any]:
    """A call's arguments: the query, then a JSON body or a form (Slack takes all three)."""
    args: dict[str, Any] = dict(request.query)
    if not request.body:
        return args
    kind = (request.header("content-type") or "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = request.json()
        except ValueError:
            raise _Fail("invalid_json") from None
        if not isinstance(body, dict):
            raise _Fail("json_not_object")
        body.pop("token", None)  # with JSON, Slack takes the token only from the Authorization header
        args.update(body)
    elif kind == "application/x-www-form-urlencoded" or not kind:
        try:
            args.update(urllib.parse.parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            raise _Fail("invalid_form_data") from None
    elif kind == "multipart/form-data":
        args.update({k: v for k, v in _multipart(request).items() if isinstance(v, str)})
    else:
        raise _Fail("invalid_post_type")
    return args


def _multipart(request: Request) -> dict[str, str | bytes]:
    import email.parser
    import email.policy

    head = f"Content-Type: {request.header('content-type')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    parts: dict[str, str | bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        parts[str(name)] = payload if part.get_filename() else payload.decode("utf-8", "replace")
    return parts


def _multipart_file(request: Request) -> bytes | None:
    found = [v for v in _multipart(request).values() if isinstance(v, bytes)]
    return found[0] if found else None


# ---------------------------------------------------------------------------
# Schemas

#: Error codes Slack answers that the 2021 description's per-method enums lack (they date from
#: later changes, or the description never listed them); transcribed from Slack's method pages.
ERRORS_SINCE_2021: dict[str, tuple[str, ...]] = {
    "chat.postMessage": ("missing_scope", "invalid_blocks", "invalid_metadata_format", "thread_not_found",
                         "token_revoked", "invalid_arguments"),
    "chat.update": ("missing_scope", "invalid_blocks", "invalid_metadata_format", "is_archived", "invalid_arguments"),
    "chat.postEphemeral": ("missing_scope", "invalid_blocks", "not_in_channel", "invalid_arguments"),
    "chat.getPermalink": ("missing_scope",),
    "conversations.info": ("token_revoked",),
    "auth.test": (),
    "users.info": ("missing_scope", "token_revoked"),
    "reactions.add": ("missing_scope", "channel_not_found", "token_revoked", "invalid_arguments"),
}
_USERGROUP = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "team_id", "is_usergroup", "name", "handle", "date_create", "date_update", "date_delete",
                 "created_by", "updated_by", "prefs"],
    "properties": {
        "id": {"type": "string", "pattern": "^S[A-Z0-9]{2,}$"}, "team_id": {"$ref": "#/definitions/defs_team"},
        "is_usergroup": {"type": "boolean"}, "is_subteam": {"type": "boolean"}, "name": {"type": "string"},
        "description": {"type": "string"}, "handle": {"type": "string"}, "is_external": {"type": "boolean"},
        "date_create": {"type": "integer"}, "date_update": {"type": "integer"}, "date_delete": {"type": "integer"},
        "auto_type": {"type": ["string", "null"]}, "created_by": {"$ref": "#/definitions/defs_user_id"},
        "updated_by": {"$ref": "#/definitions/defs_user_id"}, "deleted_by": {"type": ["string", "null"]},
        "prefs": {"type": "object", "properties": {"channels": {"type": "array"}, "groups": {"type": "array"}}},
        "users": {"type": "array", "items": {"$ref": "#/definitions/defs_user_id"}},
        "user_count": {"type": "integer"},
    },
}
#: Fields an error answer may carry besides ok and error (missing_scope's, invalid_blocks')
_ERROR_FIELDS = {
    "needed": {"type": "string"},
    "provided": {"type": "string"},
    "errors": {"type": "array", "items": {"type": "string"}},
    "warning": {"type": "string"},
    "response_metadata": {"type": "object", "properties": {"messages": {"type": "array", "items": {"type": "string"}},
                                                           "warnings": {"type": "array", "items": {"type": "string"}}}},
}
_COMMON_ERRORS = ["not_authed", "invalid_auth", "token_revoked", "account_inactive", "missing_scope",
                  "invalid_arguments", "invalid_arg_name", "invalid_form_data", "invalid_post_type", "invalid_json",
                  "json_not_object", "request_timeout", "fatal_error", "internal_error", "ratelimited",
                  "service_unavailable"]


def _error_schema(*codes: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["ok", "error"],
        "properties": {"ok": {"$ref": "#/definitions/defs_ok_false"},
                       "error": {"type": "string", "enum": [*codes, *_COMMON_ERRORS]}, **_ERROR_FIELDS},
    }


def _cursor_metadata() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["next_cursor"],
            "properties": {"next_cursor": {"type": "string"}}}


def _operation(operation_id: str, verb: str, success: dict[str, Any], *errors: str) -> dict[str, Any]:
    return {verb: {
        "operationId": operation_id,
        "responses": {"200": {"description": "transcribed", "schema": success},
                      "default": {"description": "transcribed", "schema": _error_schema(*errors)}},
    }}


_MESSAGES = {"type": "array", "items": {"$ref": "#/definitions/emulator_conversation_message"}}
#: Methods the 2021 description lacks, transcribed from Slack's method pages, with ``$ref``s into
#: its definitions. conversations.* messages are ``objs_message`` plus what Slack added since
#: (``metadata``, ``edited``, ``is_locked``): see ``slack_schemas``.
SUPPLEMENTARY_PATHS: dict[str, Any] = {
    "/conversations.history": _operation("conversations_history", "get", {
        "type": "object", "additionalProperties": False, "required": ["ok", "messages", "has_more"],
        "properties": {
            "ok": {"$ref": "#/definitions/defs_ok_true"}, "messages": _MESSAGES, "has_more": {"type": "boolean"},
            "pin_count": {"type": "integer"}, "channel_actions_ts": {"type": ["integer", "null"]},
            "channel_actions_count": {"type": "integer"}, "latest": {"type": "string"},
            "response_metadata": _cursor_metadata(),
        },
    }, "channel_not_found", "not_in_channel", "invalid_cursor", "invalid_ts_latest", "invalid_ts_oldest"),
    "/conversations.replies": _operation("conversations_replies", "get", {
        "type": "object", "additionalProperties": False, "required": ["ok", "messages", "has_more"],
        "properties": {
            "ok": {"$ref": "#/definitions/defs_ok_true"}, "messages": {**_MESSAGES, "minItems": 1},
            "has_more": {"type": "boolean"}, "response_metadata": _cursor_metadata(),
        },
    }, "channel_not_found", "not_in_channel", "thread_not_found", "invalid_cursor", "invalid_ts_latest",
        "invalid_ts_oldest"),
    "/conversations.list": _operation("conversations_list", "get", {
        "type": "object", "additionalProperties": False, "required": ["ok", "channels"],
        "properties": {
            "ok": {"$ref": "#/definitions/defs_ok_true"},
            "channels": {"type": "array", "items": {"$ref": "#/definitions/objs_conversation"}},
            "response_metadata": _cursor_metadata(),
        },
    }, "invalid_cursor", "invalid_limit", "invalid_types"),
    "/files.getUploadURLExternal": _operation("files_getUploadURLExternal", "post", {
        "type": "object", "additionalProperties": False, "required": ["ok", "upload_url", "file_id"],
        "properties": {
            "ok": {"$ref": "#/definitions/defs_ok_true"}, "upload_url": {"type": "string", "format": "uri"},
            "file_id": {"$ref": "#/definitions/defs_file_id"},
        },
    }),
    "/files.completeUploadExternal": _operation("files_completeUploadExternal", "post", {
        "type": "object", "additionalProperties": False, "required": ["ok", "files"],
        "properties": {
            "ok": {"$ref": "#/definitions/defs_ok_true"},
            "files": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["id", "title"],
                "properties": {"id": {"$ref": "#/definitions/defs_file_id"}, "title": {"type": "string"}},
            }},
        },
    }, "file_not_found", "file_upload_not_found", "channel_not_found", "not_in_channel", "invalid_thread_ts"),
    # usergroups.*: from Slack's method pages (scope usergroups:read; a group the workspace lacks is
    # no_such_subteam, as is a disabled one without include_disabled).
    "/usergroups.list": _operation("usergroups_list", "get", {
        "type": "object", "additionalProperties": False, "required": ["ok", "usergroups"],
        "properties": {"ok": {"$ref": "#/definitions/defs_ok_true"}, "usergroups": {"type": "array", "items": _USERGROUP}},
    }, "plan_upgrade_required", "missing_scope"),
    "/usergroups.users.list": _operation("usergroups_users_list", "get", {
        "type": "object", "additionalProperties": False, "required": ["ok", "users"],
        "properties": {"ok": {"$ref": "#/definitions/defs_ok_true"},
                       "users": {"type": "array", "items": {"$ref": "#/definitions/defs_user_id"}}},
    }, "no_such_subteam", "plan_upgrade_required", "missing_scope"),
}


_STRING, _BOOLEAN, _INTEGER = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
_TOKEN = ({"type": "string"}, True)  # Bearer in the Authorization header, or a token argument
#: The arguments of the methods ``SUPPLEMENTARY_PATHS`` adds, and those Slack added since 2021 to
#: the methods the description has (``metadata``, ...), transcribed from Slack's method pages:
#: name -> (schema of the form value, required).
PARAMETERS_SINCE_2021: dict[str, dict[str, tuple[dict[str, Any], bool]]] = {
    "chat.postMessage": {"metadata": (_STRING, False), "markdown_text": (_STRING, False)},
    "chat.update": {"metadata": (_STRING, False), "file_ids": (_STRING, False), "reply_broadcast": (_BOOLEAN, False)},
    "chat.postEphemeral": {},
    "conversations.history": {
        "token": _TOKEN, "channel": (_STRING, True), "cursor": (_STRING, False), "inclusive": (_BOOLEAN, False),
        "include_all_metadata": (_BOOLEAN, False), "latest": (_STRING, False), "limit": (_INTEGER, False),
        "oldest": (_STRING, False)},
    "conversations.replies": {
        "token": _TOKEN, "channel": (_STRING, True), "ts": (_STRING, True), "cursor": (_STRING, False),
        "inclusive": (_BOOLEAN, False), "include_all_metadata": (_BOOLEAN, False), "latest": (_STRING, False),
        "limit": (_INTEGER, False), "oldest": (_STRING, False)},
    "conversations.list": {
        "token": _TOKEN, "cursor": (_STRING, False), "exclude_archived": (_BOOLEAN, False),
        "limit": (_INTEGER, False), "team_id": (_STRING, False), "types": (_STRING, False)},
    "files.getUploadURLExternal": {
        "token": _TOKEN, "filename": (_STRING, True), "length": (_INTEGER, True), "alt_txt": (_STRING, False),
        "snippet_type": (_STRING, False)},
    "files.completeUploadExternal": {
        "token": _TOKEN, "files": (_STRING, True), "channel_id": (_STRING, False), "channels": (_STRING, False),
        "initial_comment": (_STRING, False), "thread_ts": (_STRING, False)},
    "usergroups.list": {
        "token": _TOKEN, "include_count": (_BOOLEAN, False), "include_disabled": (_BOOLEAN, False),
        "include_users": (_BOOLEAN, False), "team_id": (_STRING, False)},
    "usergroups.users.list": {
        "token": _TOKEN, "usergroup": (_STRING, True), "include_disabled": (_BOOLEAN, False),
        "team_id": (_STRING, False)},
}


def slack_schemas(refdata: Path) -> OpenAPISchemas:
    """Slack's Web API description from ``refdata`` (``../shared/refdata``), with three additions
    written down here: the methods it lacks (``SUPPLEMENTARY_PATHS``), the error codes its enums
    lack (``ERRORS_SINCE_2021``), and ``objs_conversation`` / ``objs_user`` as the ``anyOf`` their
    variants mean (the description gives them as ``items`` on an object, which checks nothing)."""
    path = Path(refdata) / "slack" / "openapi" / "web_openapi_v2.subset.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    definitions = document["definitions"]
    for name in ("objs_conversation", "objs_user"):
        definitions[name] = {"anyOf": definitions[name]["items"]}
    message = copy.deepcopy(definitions["objs_message"])
    message["properties"].update({
        "metadata": {"type": "object", "additionalProperties": False, "required": ["event_type", "event_payload"],
                     "properties": {"event_type": {"type": "string"}, "event_payload": {"type": "object"}}},
        "edited": {"type": "object", "additionalProperties": False, "required": ["user", "ts"],
                   "properties": {"user": {"$ref": "#/definitions/defs_user_id"}, "ts": {"$ref": "#/definitions/defs_ts"}}},
        "is_locked": {"type": "boolean"},
    })
    definitions["emulator_conversation_message"] = message
    for template, operations in document["paths"].items():
        for operation in operations.values():
            schema = operation.get("responses", {}).get("default", {}).get("schema")
            if schema is None:
                continue
            codes = schema["properties"]["error"].setdefault("enum", [])
            codes.extend(c for c in ERRORS_SINCE_2021.get(template.lstrip("/"), ()) if c not in codes)
            codes.extend(c for c in ("ratelimited", "fatal_error", "internal_error", "service_unavailable")
                         if c not in codes)
            for name, field_schema in _ERROR_FIELDS.items():
                schema["properties"].setdefault(name, field_schema)
    extra = copy.deepcopy(SUPPLEMENTARY_PATHS)
    for method, parameters in PARAMETERS_SINCE_2021.items():
        for operation in (document["paths"].get(f"/{method}") or extra[f"/{method}"]).values():
            listed = operation.setdefault("parameters", [])
            known = {p.get("name") for p in listed}
            listed.extend({"name": name, "in": "formData", "required": required, **schema}
                          for name, (schema, required) in parameters.items() if name not in known)
    return OpenAPISchemas(document, extra_paths=extra)


def _is_error_answer(body: Any) -> bool:
    return isinstance(body, dict) and body.get("ok") is False and isinstance(body.get("error"), str)


def method_arguments_problems(schemas: OpenAPISchemas, method: str, args: dict[str, Any], *,
                              authorized: bool = False) -> list[str]:
    """Errors of a call's arguments against the parameters the description gives ``method``
    (``token`` is satisfied by a Bearer ``Authorization`` header). A JSON body's arrays and
    objects stand for the JSON strings a form would carry (``blocks``, ``attachments``,
    ``metadata``), and its booleans and numbers for their text."""
    template = f"/{method}"
    verb = next((v for v in ("get", "post") if schemas.operation(v, template) is not None), None)
    if verb is None:
        return [f"the method {method} is not in the description"]
    described = {name: spec for (where, name), spec in schemas.request_parameters(verb, template).items()
                 if where in ("query", "formData", "header")}
    problems = [f"argument {name}: not a parameter of {method}" for name in args if name not in described]
    for name, (pointer, required, schema) in described.items():
        if name not in args:
            if required and not (name == "token" and authorized):
                problems.append(f"argument {name}: required but missing [schema {pointer}]")
            continue
        value = args[name]
        if schema.get("type") == "string" and not isinstance(value, str):
            value = json.dumps(value) if isinstance(value, (list, dict)) else json.dumps(value).strip('"')
        elif isinstance(value, str) and schema.get("type") in ("boolean", "integer", "number"):
            value = {"true": True, "false": False, "1": True, "0": False}.get(value.lower(), value) \
                if schema["type"] == "boolean" else _number(value)
        problems.extend(schemas.validate_value(value, pointer, schema, f"argument {name}"))
    return problems


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def validate_answer(schemas: OpenAPISchemas, method: str, body: Any) -> list[str]:
    """Errors of a Web API answer (HTTP 200) against the description: ``ok: true`` against the
    method's success schema, ``ok: false`` against its error schema. [] for undescribed methods."""
    template = f"/{method}"
    verb = next((v for v in ("get", "post") if schemas.operation(v, template) is not None), None)
    if verb is None:
        return []
    code = "200" if isinstance(body, dict) and body.get("ok") is True else "default"
    pointer = "#/paths/" + template.replace("~", "~0").replace("/", "~1") + f"/{verb}/responses/{code}/schema"
    return schemas.validate(body, pointer)


# ---------------------------------------------------------------------------
# Running by hand


def seed(emulator: SlackEmulator) -> None:
    """A small world: the bot's three channels, people, and a thread."""
    state = emulator.state
    pipeline = state.add_channel("mlops-pipeline", members=["alice", "bob"], topic="Model runs")
    state.add_channel("mlops-alerts", members=["alice"], topic="Drift and failures")
    state.add_channel("mlops-digest", member=False)
    state.add_channel("ml-private", private=True, member=False, members=["alice"])
    hello = state.post(pipeline.id, "Who broke the forest?", "alice")
    state.post(pipeline.id, "not me", "bob", thread_ts=hello.ts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local Slack emulator until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default="xoxb-test-token")
    args = parser.parse_args(argv)
    emulator = SlackEmulator(host=args.host, port=args.port, token=args.token)
    seed(emulator)
    emulator.start()
    print(f"Slack emulator at {emulator.base_url} (token {args.token!r}); Ctrl-C to stop", flush=True)
    emulator.serve_until_interrupted()


if __name__ == "__main__":
    main()

