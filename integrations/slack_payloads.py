"""What Slack sends to the app's interactivity URL, read into plain values.

A click on one of the bot's buttons (``integrations.slack_blocks.buttons``) arrives as a form whose
``payload`` field is a ``block_actions`` JSON object; ``parse_click`` reads the click out of it, or
says why it is not one (another kind of interaction, another app's button, a value the bot did not
write). Nothing here talks to Slack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from integrations.slack_blocks import ACTION_PREFIX

__all__ = ["COMMANDS", "ButtonClick", "NotAClick", "parse_click"]

#: the commands a button may give
COMMANDS = ("retrain", "deploy", "rollback")


class NotAClick(ValueError):
    """The payload is not a click on one of the bot's buttons; the message says what it is."""


@dataclass(frozen=True)
class ButtonClick:
    """A person clicked one of the bot's buttons (and confirmed its dialog)."""

    command: str  # retrain | deploy | rollback
    model: str
    version: int | None
    user_id: str
    user_name: str
    channel: str  # the channel's id
    message_ts: str  # the message the button is under
    thread_ts: str | None  # the thread that message is in, when it is a reply
    trigger_id: str
    action_ts: str
    response_url: str

    @property
    def identity(self) -> str:
        """The click's own identity: the same when Slack sends it again, new for another click."""
        return self.trigger_id or f"{self.user_id}:{self.action_ts}"

    @property
    def thread(self) -> str:
        """The thread answers go to: the message's own, or the one it sits in."""
        return self.thread_ts or self.message_ts


def parse_click(form_payload: str) -> ButtonClick:
    """The click in an interactivity request's ``payload`` field; ``NotAClick`` (a ValueError) when
    it is something else, and ValueError when it is not JSON."""
    try:
        payload: Any = json.loads(form_payload)
    except ValueError:
        raise ValueError("the payload field is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("the payload field is not a JSON object")
    kind = payload.get("type")
    if kind != "block_actions":
        raise NotAClick(f"a {kind or 'typeless'} interaction; the bot only answers clicks on its buttons")
    actions = [a for a in payload.get("actions") or () if isinstance(a, dict)
               and str(a.get("action_id", "")).startswith(ACTION_PREFIX)]
    if not actions:
        raise NotAClick("no button of the bot was clicked")
    action = actions[0]
    try:
        value = json.loads(action.get("value") or "")
    except ValueError:
        raise NotAClick("the button's value is not the bot's") from None
    if not isinstance(value, dict) or value.get("command") not in COMMANDS or \
            value.get("command") != action["action_id"].removeprefix(ACTION_PREFIX):
        raise NotAClick("the button's value is not the bot's")
    version = value.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise NotAClick("the button's version is not a number")
    user = payload.get("user") or {}
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    message_ts = container.get("message_ts") or message.get("ts")
    if not user.get("id") or not channel or not message_ts:
        raise ValueError("a click without its user, channel or message")
    thread = message.get("thread_ts")
    return ButtonClick(
        command=value["command"], model=str(value.get("model") or ""), version=version,
        user_id=str(user["id"]), user_name=str(user.get("username") or user.get("name") or ""),
        channel=str(channel), message_ts=str(message_ts),
        thread_ts=str(thread) if thread and thread != message_ts else None,
        trigger_id=str(payload.get("trigger_id") or ""), action_ts=str(action.get("action_ts") or ""),
        response_url=str(payload.get("response_url") or ""),
    )
