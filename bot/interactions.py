"""Clicks on the bot's Slack buttons (``POST /webhooks/slack/interactions``).

A drift alert carries *Retrain*, a validated candidate *Deploy*, a deployment *Roll back*, each
behind a confirmation dialog. A click is checked like a slash command: Slack's signature over
the body (``SLACK_SIGNING_SECRET``, five-minute window), then the clicking user's level from
``MLOPS_SLACK_PERMISSIONS`` (users, user groups, ``*``) against the command's. An allowed click
becomes the command ``/retrain``, ``/deploy N`` or ``/rollback``, stored as an event through the
same dispatcher as ``/mlops`` and comments, and answered in the clicked message's thread. A
refused one gets an ephemeral answer saying who may, and nothing is stored.

Once: the event's key is the click's ``trigger_id`` (the same when Slack sends it again), and a
second click on the same button of the same message within ``DOUBLE_CLICK_S`` seconds (a double
click, or two people at once) is answered "already on it" instead of being done twice.

Slack wants an answer within three seconds: the click is stored and answered at once; the work
is the outbox's, and ephemeral answers are sent after the response.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response

from bot.events import CommandGiven
from integrations.ports import Comment, MessageRef, PermanentError, Target, TransientError, Whispers
from integrations.slack_payloads import ButtonClick, NotAClick, parse_click

if TYPE_CHECKING:
    from bot.lifecycle import Lifecycle

__all__ = ["DOUBLE_CLICK_S", "SLACK_WINDOW_S", "Interactions", "verify_slack_request"]

log = logging.getLogger("mlops_bot.interactions")

SLACK_WINDOW_S = 300  # Slack's advice: refuse requests signed more than five minutes away (replays)
DOUBLE_CLICK_S = 60.0  # the same button of the same message clicked again this soon is the same request
_LABELS = {"retrain": "Retrain", "deploy": "Deploy", "rollback": "Roll back"}


def verify_slack_request(secret: str, *, timestamp: str, signature: str, body: bytes, now: float) -> str | None:
    """None when ``body`` was signed by Slack with ``secret`` within the window; else what is wrong."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > SLACK_WINDOW_S:
        return "missing or stale X-Slack-Request-Timestamp (more than 5 minutes off)"
    expected = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return "bad or missing X-Slack-Signature; check SLACK_SIGNING_SECRET"
    return None


class Interactions:
    """The clicks of one bot: ``handle`` takes a verified request's ``payload`` field."""

    def __init__(self, bot, *, wake: Callable[[], None] = lambda: None) -> None:
        self.bot, self.wake = bot, wake
        self._lock = threading.Lock()  # one click at a time: "already on it" must see the one before

    def handle(self, payload: str) -> Response:
        try:
            click = parse_click(payload)
        except NotAClick as exc:
            return JSONResponse({"status": "ignored", "reason": str(exc)})
        except ValueError as exc:
            return JSONResponse({"error": f"not an interaction payload: {exc}"}, status_code=400)
        refused = self._refusal(click)
        if refused:
            return self._whisper(click, refused)
        with self._lock:
            return self._accept(click)

    # -- checks

    def _refusal(self, click: ButtonClick) -> str | None:
        """Why the click is not done, in words for the person who clicked; None to go ahead."""
        from bot.commands import REGISTRY, Request, parse, required_permission
        from bot.commands.base import refusal
        from integrations.slack_blocks import holders

        settings = self.bot.settings
        lifecycle = self._lifecycle(click)
        if lifecycle is None:
            served = ", ".join(f"**{name}**" for name in self.bot.router.lifecycles)
            return f"This button is for **{click.model}**, and this bot looks after {served}: nothing was done."
        model = lifecycle.project.name
        invocation = parse(self._command(click), limit=1).invocations[0]
        target = self._target(click)
        author = self._author(click)
        permission = lifecycle.permission(target, author)
        required = required_permission(invocation.name, settings.command_permissions)
        if permission < required:
            request = Request(invocation=invocation, target=target, author=author, model=model, permission=permission)
            text = refusal(REGISTRY[invocation.name], request, required).text.removeprefix(f"@{author}, ").replace(
                f"`/{invocation.name}`", f"**{_LABELS[click.command]}** (`/{invocation.name}`)", 1)
            who = holders(settings.slack_permissions, required)
            return text + (f" In Slack, {_join(who)} may." if who else
                           " In Slack, nobody may yet: MLOPS_SLACK_PERMISSIONS gives no one that level.")
        if click.command == "rollback" and click.version is not None:
            production = self.bot.registry.production(model)
            if production is None or production.version != click.version:
                now = f"v{production.version} is" if production else "no version is"
                return (f"**{model} v{click.version}** is no longer in production ({now}), so this button rolls "
                        "nothing back. Use the latest deployment's button, or `/mlops rollback`.")
        return None

    # -- doing it, once

    def _accept(self, click: ButtonClick) -> Response:
        store, lifecycle = self.bot.store, self._lifecycle(click)
        now = self.bot.clock()
        button = f"{click.channel}:{click.message_ts}:{click.command}:{click.version}"
        last = store.get_state("slack_clicks", button) or {}
        if last.get("click") and last["click"] != click.identity and \
                (now - datetime.fromisoformat(last["at"])).total_seconds() < DOUBLE_CLICK_S:
            return self._whisper(click, f"Already on it: <@{last['user']}> clicked **{_LABELS[click.command]}** a "
                                        "moment ago. The answer comes in this message's thread.")
        target = self._target(click)
        lifecycle.host_in_thread(target, MessageRef(click.channel, click.thread))
        comment = Comment(id=f"click:{click.identity}", target=target, author=self._author(click),
                          body=self._command(click), created_at=now)
        new = lifecycle.handle(CommandGiven("slack", comment), source="slack")
        if new:
            store.put_state("slack_clicks", button, {"at": now.isoformat(), "click": click.identity,
                                                     "user": click.user_id})
            self.wake()
        return Response(status_code=200)  # Slack reads nothing more; the answer comes in the thread

    def _lifecycle(self, click: ButtonClick) -> Lifecycle | None:
        """The model project the button is for (its message names it); None for one not served here."""
        if not click.model:
            return self.bot.lifecycle
        return self.bot.router.lifecycles.get(click.model)

    def _whisper(self, click: ButtonClick, text: str) -> Response:
        """A 200 at once, and ``text`` to the clicking user alone once it is sent."""
        return Response(status_code=200, background=BackgroundTask(self._send_ephemeral, click, text))

    def _send_ephemeral(self, click: ButtonClick, text: str) -> None:
        """``chat.postEphemeral``; the click's ``response_url`` when that cannot be used."""
        chat = self.bot.chat
        if isinstance(chat, Whispers):
            try:
                chat.whisper(click.channel, click.user_id, text, thread=click.thread_ts)
                return
            except (PermanentError, TransientError) as exc:
                log.info("ephemeral answer to a click through chat.postEphemeral failed (%s); using response_url",
                         exc)
        if not click.response_url:
            log.warning("no way to answer %s's click ephemerally: %s", click.user_id, text)
            return
        self.bot.answer_by_response_url(click.response_url, text)

    # -- the click as a command

    @staticmethod
    def _command(click: ButtonClick) -> str:
        return f"/deploy {click.version}" if click.command == "deploy" and click.version is not None \
            else f"/{click.command}"

    @staticmethod
    def _target(click: ButtonClick) -> Target:
        """Where the command counts as typed: the clicked message's thread, one per message."""
        number = int(hashlib.sha1(f"{click.channel}:{click.thread}".encode()).hexdigest()[:8], 16)
        return Target("chat", click.channel, number)

    def _author(self, click: ButtonClick) -> str:
        """The user id, or the user name when MLOPS_SLACK_PERMISSIONS names the user by name only
        (as for slash commands)."""
        levels = self.bot.settings.slack_permissions
        if click.user_id not in levels and click.user_name and click.user_name in levels:
            return click.user_name
        return click.user_id


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
