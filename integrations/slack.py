"""Slack through slack-sdk: the Chat port, one thread per episode.

An episode (a run, a drift alert) is one top-level message, posted once and then updated in
place (``chat.update``) as its status moves; its steps and details go into the message's thread,
and the drift report's chart is uploaded there (``files_upload_v2``). Messages are Block Kit
built from the plain text the lifecycle writes (``integrations/slack_blocks.py``): Markdown
``**bold**`` becomes Slack's ``*bold*``, a Markdown table a monospace block, links ``<url|label>``;
the ``text`` field carries a short plain fallback for notifications. Nothing is ever longer than
Slack takes (no ``msg_too_long``).

Markers: each message the bot posts carries its marker in Slack's message metadata
(``{"event_type": "mlops_bot", "event_payload": {"marker": ...}}``), never in its text;
``find_message`` reads it back with ``conversations.history`` / ``conversations.replies``
(``include_all_metadata``), so a post whose answer was lost is found instead of posted twice.

Buttons: ``post`` and ``update`` take ``actions`` (``ChatAction``: retrain, deploy, roll back),
shown as an actions block of buttons (``integrations/slack_blocks.py``), each with a confirmation
dialog; a click comes back to ``mlops-bot serve`` as a ``block_actions`` payload
(``integrations/slack_payloads.py``).

Permissions: ``permission(user, levels)`` reads a mapping of Slack users (ids or names), user
groups (``S…`` ids or ``@handles``) and ``*`` to levels; group members are asked of Slack
(``usergroups.users.list``) and remembered for ``GROUP_CACHE_S`` seconds.

Retries: ``connect`` gives the ``WebClient`` the SDK's own retry handlers, narrowed where they
would repeat a write that may have been applied: rate limits (429) are waited out when Slack asks
for a short wait; a dropped connection is retried for reads, and for writes only when the request
never reached Slack. What is left becomes the ports' errors: ``TransientError`` (with
``retry_after``, or ``outcome_unknown`` for a write whose answer was lost) or ``PermanentError``
saying how to fix it; ``PermissionRefused`` when what is missing is for a person to grant: a scope
(``missing_scope``, naming the scope ``needed``), or the bot's place in a channel (``not_in_channel``,
and ``channel_not_found``, which is what a private channel the bot is not in looks like). The
token is never logged nor put in a message.
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    Jitter,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)

from integrations.api_calls import ApiCalls
from integrations.ports import (
    ApiCallObserver,
    ChatAction,
    MessageRef,
    PermanentError,
    Permission,
    PermissionRefused,
    ReportsApiCalls,
    ResolvesPermissions,
    ShowsActions,
    TransientError,
    UploadsFiles,
    Whispers,
)
from integrations.slack_blocks import BLOCK_LIMIT, GROUP_ID, USER_ID, buttons, render

__all__ = ["EVENT_TYPE", "SlackChat", "SlackPacer", "answer_by_response_url", "connect", "routes"]

log = logging.getLogger("mlops_bot.slack")

#: the message metadata event type that carries the bot's markers
EVENT_TYPE = "mlops_bot"
#: the logical channel whose new messages mention ``mention_group``
ALERTS_CHANNEL = "mlops-alerts"
SEARCH_LIMIT = 1000  # messages find_message reads back, newest first
_NO_CHANNELS: Mapping[str, str] = MappingProxyType({})
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
GROUP_CACHE_S = 300.0  # how long a user group's members are remembered
GROUP_RETRY_S = 30.0  # after a failed lookup, how long until Slack is asked again
GROUP_LOOKUP_TIMEOUT_S = 1.0  # a person waits (Slack wants an answer in 3 s): at most two lookups
#: methods safe to repeat after a dropped connection
_READS = frozenset({"auth.test", "conversations.history", "conversations.replies", "conversations.info",
                    "conversations.list", "chat.getPermalink", "users.info"})
#: Each method's rate-limit tier, from its page in Slack's method reference (docs.slack.dev/reference/methods/
#: <method>, "Rate limits"), and each tier's calls a minute from Slack's "Rate limits" page
#: (docs.slack.dev/apis/web-api/rate-limits: Tier 1 "1+", Tier 2 "20+", Tier 3 "50+", Tier 4 "100+" per
#: minute, per method and workspace). The bot paces at the floor each tier guarantees.
METHOD_TIERS = {
    "auth.test": 4, "chat.update": 3, "chat.postEphemeral": 4, "chat.getPermalink": 4, "conversations.info": 3,
    "conversations.list": 2, "conversations.history": 3, "conversations.replies": 3, "users.info": 4,
    "reactions.add": 3, "files.getUploadURLExternal": 4, "files.completeUploadExternal": 4, "usergroups.list": 2,
    "usergroups.users.list": 2,
}
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
#: chat.postMessage is limited per channel: "generally one message per second per channel"; bursts are
#: allowed but their size is not said, so the bot does not count on them.
POST_SPACING_S = 1.0
#: the longest the pacer makes a caller wait; a longer wait is the outbox's (a TransientError with retry_after)
MAX_PACING_WAIT_S = 10.0
_TOKEN_FIX = ("set the bot token to the Slack app's Bot User OAuth Token (xoxb-…), from api.slack.com/apps → "
              "your app → OAuth & Permissions")


# ---------------------------------------------------------------------------
# The client


def connect(
    token: str,
    *,
    base_url: str = WebClient.BASE_URL,
    timeout: float = 15,
    rate_limit_retries: int = 2,
    max_rate_limit_wait: float = 30,
    connection_retries: int = 2,
    backoff: float = 0.5,
) -> WebClient:
    """A ``WebClient`` with the SDK's retry handlers for rate limits and dropped connections.

    A 429 is waited out (``Retry-After`` seconds) up to ``rate_limit_retries`` times when Slack
    asks for at most ``max_rate_limit_wait`` seconds; a longer wait is left to the caller. A
    dropped connection is retried ``connection_retries`` times (backing off from ``backoff``
    seconds), for a write only when the request never reached Slack.
    """
    if not token:
        raise PermanentError(f"Slack needs a bot token: {_TOKEN_FIX}")
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,  # type: ignore[arg-type] - urllib takes float seconds
        retry_handlers=[
            _CountingHandler(),  # first: the SDK asks the handlers in order until one retries
            _ConnectionRetry(max_retry_count=connection_retries,
                             interval_calculator=BackoffRetryIntervalCalculator(backoff, _ScaledJitter())),
            _RateLimitRetry(max_retry_count=rate_limit_retries, max_wait=max_rate_limit_wait),
        ],
    )


class _CountingHandler(RetryHandler):
    """Never retries; the SDK consults the handlers about every answer and every failed try, in
    order until one retries, so the first one sees each request once and counts it.

    ``_can_retry`` is what slack-sdk's documentation says a custom handler implements (the Web
    Client page, "RetryHandler": "implements required methods (internals of can_retry ...)", with a
    ``MyRetryHandler._can_retry`` example); ``can_retry`` asks it while the attempt count is below
    ``max_retry_count``, so that is set beyond any count.
    """

    def __init__(self) -> None:
        super().__init__(max_retry_count=2**62)
        self.calls = ApiCalls("slack")

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if response is not None:
            self.calls.answered(response.status_code)
        else:
            self.calls.failed()
        return False


class _ScaledJitter(Jitter):
    """Up to twice the back-off (the SDK's own jitter adds up to a whole second, whatever the back-off)."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random())


class _ConnectionRetry(ConnectionErrorRetryHandler):
    """The SDK's retry of dropped connections, except for a write that may have been applied.

    urllib raises ``URLError`` when it could not send the request (connection refused, name not
    found) and the bare ``RemoteDisconnected`` / ``ConnectionResetError`` when the connection
    dropped while waiting for the answer: then Slack may have posted the message already, and the
    SDK's own handler would post it a second time.
    """

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        return _method_of(request.url) in _READS or isinstance(error, urllib.error.URLError)


class _RateLimitRetry(RateLimitErrorRetryHandler):
    """The SDK's wait on 429 and ``Retry-After``, for waits up to ``max_wait`` seconds."""

    def __init__(self, *, max_retry_count: int, max_wait: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        return _retry_after(response.headers if response is not None else None) <= self.max_wait


def _method_of(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _retry_after(headers: Mapping[str, Any] | None) -> float:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                break
    return 60.0


# ---------------------------------------------------------------------------
# Pacing


class SlackPacer:
    """Keeps the bot's calls within Slack's published limits, so that they are not answered 429.

    Each method gets its tier's calls a minute (``METHOD_TIERS``; an unlisted method Tier 2, "most
    methods"): a burst of a quarter of them, then evenly spaced, so that no 60 s hold more than the
    tier allows. chat.postMessage gets one message a second per channel. ``wait(method, channel)``
    takes the next free slot and sleeps until it, or, when that is more than ``max_wait_s`` away,
    raises ``TransientError`` with ``retry_after`` and takes nothing. Thread-safe: concurrent callers
    get successive slots. ``monotonic`` and ``sleep`` are the time it paces on (a test passes a clock
    it controls).
    """

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 max_wait_s: float = MAX_PACING_WAIT_S, paced: bool = True) -> None:
        self._monotonic, self._sleep, self.max_wait_s, self.paced = monotonic, sleep, max_wait_s, paced
        self._next: dict[str, float] = {}  # method (or chat.postMessage:channel) -> when its budget is whole again
        self._lock = threading.Lock()

    @classmethod
    def for_api(cls, base_url: str) -> SlackPacer:
        """Paced against Slack itself (``slack.com``), whose limits these are; not against another
        server speaking its API (an emulator, a proxy with limits of its own)."""
        host = (urlsplit(base_url).hostname or "").lower()
        return cls(paced=host == "slack.com" or host.endswith(".slack.com"))

    @staticmethod
    def _budget(method: str) -> tuple[float, int]:
        """(seconds between calls, calls allowed at once) for ``method``: a burst of B and then one per
        interval I keeps any minute within the tier's N calls when B + 60 / I <= N."""
        if method == "chat.postMessage":
            return POST_SPACING_S, 1
        per_minute = TIER_PER_MINUTE[METHOD_TIERS.get(method, 2)]
        burst = max(1, per_minute // 4)
        return 60.0 / (per_minute - burst) if per_minute > burst else 60.0, burst

    def wait(self, method: str, channel: str | None = None) -> None:
        if not self.paced:
            return
        interval, burst = self._budget(method)
        key = f"{method}:{channel or ''}" if method == "chat.postMessage" else method
        with self._lock:  # the generic cell rate algorithm: one number per key
            now = self._monotonic()
            full = max(self._next.get(key, now), now)
            at = max(now, full - (burst - 1) * interval)
            if at - now > self.max_wait_s:
                raise TransientError(f"Slack's limit on {method} is reached; waiting {at - now:.0f} s",
                                     retry_after=at - now)
            self._next[key] = full + interval
        if at > now:
            self._sleep(at - now)


# ---------------------------------------------------------------------------
# The adapter


class _Refused(PermanentError):
    """Slack refused a call: what is wrong and how to fix it, apart, for ``diagnose``."""

    def __init__(self, problem: str, fix: str, *, error: str = "") -> None:
        super().__init__(f"{problem}; {fix}" if fix else problem)
        self.problem, self.fix, self.error = problem, fix, error


class _PermissionRefused(_Refused, PermissionRefused):
    """A refusal a person lifts by granting something: a scope, or the bot's place in a channel."""

    def __init__(self, problem: str, fix: str, *, error: str, permission: str) -> None:
        PermissionRefused.__init__(self, f"{problem}; {fix}", service="slack", permission=permission)
        self.problem, self.fix, self.error = problem, fix, error


class SlackChat(ShowsActions, UploadsFiles, Whispers, ResolvesPermissions, ReportsApiCalls):
    """The Chat port on Slack.

    ``channels`` maps the bot's logical channel names (``mlops-pipeline``, ``mlops-alerts``,
    ``mlops-digest``) to channel ids (``C0123ABCD``) or names (``#ml-alerts``); unmapped names are
    used as they are. Names are looked up once (``conversations.list``) and remembered.
    ``mention_group`` is mentioned at the top of new messages in ``mlops-alerts``: a user group id
    (``S0123ABCD``), ``here``/``channel``, or a handle (``@ml-oncall``).
    """

    name = "slack"
    api_service = "slack"
    shows_actions = True  # post and update take ``actions``: buttons

    def __init__(self, client: WebClient, *, channels: Mapping[str, str] = _NO_CHANNELS,
                 mention_group: str | None = None, monotonic: Callable[[], float] = time.monotonic,
                 pacer: SlackPacer | None = None) -> None:
        self.client = client
        self.pacer = pacer or SlackPacer.for_api(client.base_url)
        self.channels = dict(channels)
        self.mention_group = mention_group
        self._ids: dict[str, str] = {}  # channel name (lower case, no #) -> id
        self._bot: str | None = None  # the bot user's name, for the fixes suggested
        self._monotonic = monotonic
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}  # group id or @handle -> (fetched, members)
        self._groups_lock = threading.Lock()
        self._lookup: WebClient | None = None

    # -- what its requests are (ReportsApiCalls)

    def _counting_handler(self) -> _CountingHandler:
        """The client's counting retry handler (``connect`` puts one first); one is put first if it has none."""
        for handler in self.client.retry_handlers:
            if isinstance(handler, _CountingHandler):
                return handler
        handler = _CountingHandler()
        self.client.retry_handlers.insert(0, handler)
        return handler

    def report_api_calls(self, observer: ApiCallObserver) -> None:
        self._counting_handler().calls.observe(observer)

    def readiness(self) -> None:
        """``auth.test``: answered for any valid token, and tier 4 (100+ a minute)."""
        self.client.auth_test()

    # -- the Chat port

    def post(self, channel: str, text: str, *, marker: str, blocks: list[dict] | None = None,
             actions: Sequence[ChatAction] = ()) -> MessageRef:
        """A new top-level message in ``channel`` carrying ``marker`` (and ``actions`` as buttons);
        returns its (channel id, ts)."""
        target = self._target(channel)
        mention = self._mention() if channel == ALERTS_CHANNEL or target == self._target(ALERTS_CHANNEL) else None
        fallback, rendered = self._content(text, blocks, mention, actions)
        answer = self._call("chat.postMessage", write=True, where=_shown(target),
                            channel=self._ids.get(target.lower(), target), text=fallback, blocks=rendered,
                            metadata=_metadata(marker), unfurl_links=False, unfurl_media=False,
                            link_names=bool(mention and mention.startswith("@")) or None)
        if not _CHANNEL_ID.match(target):
            self._ids[target.lower()] = answer["channel"]
        return MessageRef(answer["channel"], answer["ts"])

    def update(self, message: MessageRef, text: str, *, blocks: list[dict] | None = None,
               actions: Sequence[ChatAction] = ()) -> None:
        """Replaces the message's text and blocks (buttons included: none unless ``actions``) in
        place; its marker (metadata) stays."""
        channel = self._channel_id(message.channel)
        mention = None
        if message.thread is None and self.mention_group and channel == self._alerts_id():
            mention = self._mention()
        fallback, rendered = self._content(text, blocks, mention, actions)
        self._call("chat.update", write=True, where=_shown(channel), channel=channel, ts=message.id,
                   text=fallback, blocks=rendered,
                   link_names=bool(mention and mention.startswith("@")) or None)

    def reply(self, parent: MessageRef, text: str, *, marker: str) -> MessageRef:
        """A message in ``parent``'s thread carrying ``marker``."""
        channel = self._channel_id(parent.channel)
        thread = parent.thread or parent.id
        fallback, rendered = self._content(text, None, None)
        answer = self._call("chat.postMessage", write=True, where=_shown(channel), channel=channel, thread_ts=thread,
                            text=fallback, blocks=rendered, metadata=_metadata(marker), unfurl_links=False,
                            unfurl_media=False)
        return MessageRef(answer["channel"], answer["ts"], thread=thread)

    def find_message(self, channel: str, marker: str, *, thread: str | None = None) -> MessageRef | None:
        """The bot's message carrying ``marker``: at the top of ``channel`` (the newest
        ``SEARCH_LIMIT`` messages), or in the thread of ``thread``."""
        channel_id = self._channel_id(channel)
        if thread is None:
            found = self._pages("conversations.history", "messages", channel=channel_id, include_all_metadata=True)
        else:
            found = self._pages("conversations.replies", "messages", channel=channel_id, ts=thread,
                                include_all_metadata=True)
        try:
            for seen, message in enumerate(found):
                if _marker_of(message) == marker:
                    ts, parent = message["ts"], message.get("thread_ts")
                    return MessageRef(channel_id, ts, thread=parent if parent and parent != ts else None)
                if seen + 1 >= SEARCH_LIMIT:
                    break
        except _Refused as refused:
            if refused.error == "thread_not_found":  # the parent is gone, and its thread with it
                return None
            raise
        return None

    # -- more than the port

    def upload(self, parent: MessageRef, path: str | Path, title: str) -> None:
        """Uploads a file (the drift chart) into ``parent``'s thread; a file of the same name and
        title already there is not uploaded again, so repeating after a lost answer is safe."""
        path = Path(path)
        if not path.is_file():
            raise PermanentError(f"no file to upload at {path}")
        channel = self._channel_id(parent.channel)
        thread = parent.thread or parent.id
        for message in self._pages("conversations.replies", "messages", channel=channel, ts=thread):
            if any(f.get("name") == path.name and f.get("title") == title for f in message.get("files") or ()):
                return
        for step in ("files.getUploadURLExternal", "files.completeUploadExternal"):  # what files_upload_v2 calls
            self.pacer.wait(step)
        try:
            self.client.files_upload_v2(channel=channel, thread_ts=thread, file=str(path), filename=path.name,
                                        title=title)
        except Exception as exc:
            translated = self._translate(exc, "files_upload_v2", write=True, where=_shown(channel))
            if translated is exc:
                raise
            raise translated from exc

    def whisper(self, channel: str, user: str, text: str, *, thread: str | None = None) -> None:
        """A message only ``user`` sees in ``channel`` (``chat.postEphemeral``): a refusal, a hint."""
        channel_id = self._channel_id(channel)
        fallback, rendered = render(text)
        self._call("chat.postEphemeral", write=True, where=_shown(channel_id), channel=channel_id, user=user,
                   text=fallback, blocks=rendered, thread_ts=thread)

    def permission(self, user: str, levels: Mapping[str, str]) -> Permission:
        """``user``'s level from ``levels``, which maps Slack user ids or names, user groups (``S…``
        ids or ``@handles``) and ``*`` to level names. The entries naming the user, directly or
        through a group, count and the highest wins; with none, ``*`` (default read) applies.
        Groups are checked for user ids only, and grant nothing while Slack cannot be asked."""
        named = [levels[user]] if user in levels else []
        if USER_ID.match(user):
            named += [level for key, level in levels.items() if _is_group(key) and user in self.group_members(key)]
        if not named:
            return Permission[levels.get("*", "read")]
        return max(Permission[level] for level in named)

    def group_members(self, group: str) -> frozenset[str]:
        """The user ids in a user group (``S…`` id or ``@handle``), remembered for ``GROUP_CACHE_S``
        seconds. When Slack cannot say, the last known members (or none), and a warning."""
        now = self._monotonic()
        with self._groups_lock:
            known = self._groups.get(group)
        if known is not None and now - known[0] < GROUP_CACHE_S:
            return known[1]
        try:
            group_id = group if GROUP_ID.match(group) else self._group_id(group.lstrip("@"))
            members = frozenset(self._lookup_call("usergroups.users.list", usergroup=group_id)["users"] or ())
        except (PermanentError, TransientError) as exc:
            members = known[1] if known is not None else frozenset()
            log.warning("Slack user group %s: members unknown (%s); %s until Slack answers", group, exc,
                        "its last known members count" if known is not None else "it grants no permission")
            with self._groups_lock:  # ask again in GROUP_RETRY_S, not at every click meanwhile
                self._groups[group] = (now - GROUP_CACHE_S + GROUP_RETRY_S, members)
            return members
        with self._groups_lock:
            self._groups[group] = (now, members)
        return members

    def _group_id(self, handle: str) -> str:
        for found in self._lookup_call("usergroups.list").get("usergroups") or ():
            if str(found.get("handle", "")).lower() == handle.lower():
                return str(found["id"])
        raise _Refused(f"no Slack user group @{handle}", "check the handle in the permissions, or use its id (S…)",
                       error="no_such_subteam")

    def _lookup_call(self, method: str, **arguments: Any) -> Any:
        """One read for a person waiting on an answer: no retry, at most ``GROUP_LOOKUP_TIMEOUT_S``."""
        if self._lookup is None:
            self._lookup = WebClient(token=self.client.token, base_url=self.client.base_url,
                                     timeout=GROUP_LOOKUP_TIMEOUT_S,  # type: ignore[arg-type]
                                     retry_handlers=[self._counting_handler()])  # counted, never retried
        function = getattr(self._lookup, method.replace(".", "_"))
        try:
            self.pacer.wait(method)
            return function(**arguments)
        except Exception as exc:
            translated = self._translate(exc, method, write=False, where="")
            if translated is exc:
                raise
            raise translated from exc

    def permalink(self, message: MessageRef) -> str:
        """A link to the message, for tickets and pull requests."""
        channel = self._channel_id(message.channel)
        return self._call("chat.getPermalink", write=False, where=_shown(channel), channel=channel,
                          message_ts=message.id)["permalink"]

    def react(self, message: MessageRef, name: str) -> None:
        """Adds the reaction ``name`` (``eyes``, ``white_check_mark``); idempotent."""
        channel = self._channel_id(message.channel)
        try:
            self._call("reactions.add", write=True, where=_shown(channel), channel=channel, timestamp=message.id,
                       name=name.strip(":"))
        except _Refused as refused:
            if refused.error != "already_reacted":
                raise

    def diagnose(self, channels: Iterable[str],
                 permissions: Mapping[str, str] | None = None) -> list[tuple[str, str | None, str]]:
        """What ``mlops-bot doctor`` reports: (what was checked, the problem or None, the fix):
        the token, its scopes, for each channel that it exists and the bot is in it, and for each
        user group in ``permissions`` that Slack can say who is in it."""
        groups = [key for key in (permissions or {}) if _is_group(key)]
        try:
            auth = self._call("auth.test", write=False, where="")
        except _Refused as refused:
            return [("Slack bot token", refused.problem, refused.fix)]
        except TransientError as exc:
            return [(f"Slack at {self.client.base_url}", str(exc), "check the network and the Slack API URL")]
        self._bot = auth.get("user") or self._bot
        checks: list[tuple[str, str | None, str]] = [(f"Slack workspace {auth.get('team')} as @{self._bot}", None, "")]
        headers = {k.lower(): v for k, v in (auth.headers or {}).items()}
        granted: set[str] | None = None  # a user token does not say its scopes
        if "x-oauth-scopes" in headers:  # bot tokens say their scopes on every answer
            granted = {s.strip() for s in str(headers["x-oauth-scopes"]).split(",") if s.strip()}
            # Said, not judged: doctor's permission checks name each missing scope once, with its use.
            checks.append((f"Slack token scopes ({', '.join(sorted(granted)) or 'none'})", None, ""))
        # A lookup whose scope is missing would only repeat that one problem for every channel or group.
        if granted is None or "channels:read" in granted:
            checks.extend(self._check_channel(name) for name in channels)
        if granted is None or "usergroups:read" in granted:
            checks.extend(self._check_group(group) for group in groups)
        return checks

    def _check_group(self, group: str) -> tuple[str, str | None, str]:
        label = f"Slack user group {group} (in MLOPS_SLACK_PERMISSIONS)"
        try:
            group_id = group if GROUP_ID.match(group) else self._group_id(group.lstrip("@"))
            members = self._lookup_call("usergroups.users.list", usergroup=group_id)["users"] or ()
        except _Refused as refused:
            return label, refused.problem, refused.fix
        except (PermanentError, TransientError) as exc:
            return label, str(exc), ("add the usergroups:read scope and reinstall the app, or check the group's id "
                                     "or handle")
        return f"{label}: {len(members)} member(s)", None, ""

    def _check_channel(self, name: str) -> tuple[str, str | None, str]:
        target = self._target(name)
        label = f"Slack channel {_shown(target)}" + (f" (for {name})" if target != name else "")
        try:
            info = self._call("conversations.info", write=False, where=_shown(target),
                              channel=self._channel_id(name))["channel"]
        except _Refused as refused:
            return label, refused.problem, refused.fix
        except TransientError as exc:
            return label, str(exc), "check the network and try again"
        shown = f"#{info.get('name', target)}"
        if info.get("is_archived"):
            return label, f"{shown} is archived", f"unarchive it, or map {name} to another channel"
        if not info.get("is_member"):
            return label, f"@{self._bot_name()} is not in {shown}", \
                f"invite the bot with /invite @{self._bot_name()} in {shown}"
        return label, None, ""

    # -- channels

    def _target(self, channel: str) -> str:
        """The channel a logical name stands for: an id, or a name without ``#``."""
        return self.channels.get(channel, channel).strip().lstrip("#")

    def _channel_id(self, channel: str) -> str:
        target = self._target(channel)
        if _CHANNEL_ID.match(target):
            return target
        if target.lower() in self._ids:
            return self._ids[target.lower()]
        for found in self._listed_channels():
            self._ids.setdefault(str(found.get("name", "")).lower(), found["id"])
            if target.lower() == str(found.get("name", "")).lower():
                return found["id"]
        mapped = f" ({channel} is mapped to it)" if target != channel else ""
        raise _PermissionRefused(
            f"Slack channel #{target} not found{mapped}, or it is private and the bot is not in it",
            f"create #{target} and invite the bot with /invite @{self._bot_name()}, or map {channel} to an existing "
            f"channel's id (channel details → About → Channel ID)", error="channel_not_found",
            permission=f"membership of #{target}")

    def _listed_channels(self) -> Iterator[dict[str, Any]]:
        """Channels the bot can see (archived ones too, so that posting says so); private ones
        when the token has ``groups:read``."""
        try:
            yield from self._pages("conversations.list", "channels", types="public_channel,private_channel")
        except _Refused as refused:
            if refused.error != "missing_scope":
                raise
            yield from self._pages("conversations.list", "channels", types="public_channel")

    def _alerts_id(self) -> str | None:
        try:
            return self._channel_id(ALERTS_CHANNEL)
        except PermanentError:
            return None

    def _mention(self) -> str | None:
        group = (self.mention_group or "").strip()
        if not group:
            return None
        if group.startswith("<"):
            return group
        if group.lstrip("@!").lower() in ("here", "channel", "everyone"):
            return f"<!{group.lstrip('@!').lower()}>"
        if re.fullmatch(r"S[A-Z0-9]{6,}", group):
            return f"<!subteam^{group}>"
        return "@" + group.lstrip("@")  # a user group's handle, linked by Slack with link_names

    def _bot_name(self) -> str:
        if self._bot is None:
            try:
                self._bot = str(self.client.auth_test().get("user") or "") or None
            except (SlackClientError, OSError, http.client.HTTPException):
                pass
        return self._bot or "mlops-bot"

    # -- calls

    def _content(self, text: str, blocks: list[dict] | None, mention: str | None,
                 actions: Sequence[ChatAction] = ()) -> tuple[str, list[dict]]:
        fallback, rendered = render(text, mention=mention)
        rendered = rendered if blocks is None else list(blocks)
        if actions:
            rendered = rendered[: BLOCK_LIMIT - 1] + [buttons(actions)]
        return fallback, rendered

    def _call(self, method: str, *, write: bool, where: str, **arguments: Any) -> Any:
        """One Web API call through the SDK's method for it, paced to Slack's limits, its failures as
        the ports' errors."""
        function = getattr(self.client, method.replace(".", "_"))
        self.pacer.wait(method, arguments.get("channel"))
        try:
            return function(**{k: v for k, v in arguments.items() if v is not None})
        except Exception as exc:
            translated = self._translate(exc, method, write=write, where=where)
            if translated is exc:
                raise
            raise translated from exc

    def _pages(self, method: str, key: str, **arguments: Any) -> Iterator[dict[str, Any]]:
        """The items under ``key`` of every page of a cursor-paginated method."""
        cursor = None
        while True:
            answer = self._call(method, write=False, where=_shown(str(arguments.get("channel", ""))),
                                limit=200, cursor=cursor, **arguments)
            yield from answer.get(key) or ()
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return

    def _translate(self, exc: Exception, method: str, *, write: bool, where: str) -> Exception:
        """slack-sdk's and urllib's exceptions as the ports' two kinds of failure."""
        if isinstance(exc, SlackApiError):
            response = exc.response
            status = getattr(response, "status_code", 200)
            data = response.data if isinstance(getattr(response, "data", None), dict) else {}
            error = str(data.get("error") or "")
            if status == 429 or error in ("ratelimited", "rate_limited"):
                wait = _retry_after(getattr(response, "headers", None))
                return TransientError(f"Slack rate limit on {method}; retry after {wait:g} s", retry_after=wait)
            if status >= 500 or error in ("internal_error", "fatal_error", "service_unavailable", "request_timeout"):
                return TransientError(f"Slack answered {status} ({error or 'no error code'}) to {method}",
                                      outcome_unknown=write)
            return self._refusal(method, error or f"HTTP {status}", data, where)
        if isinstance(exc, urllib.error.HTTPError):  # the upload step of files_upload_v2
            if exc.code >= 500 or exc.code == 429:
                return TransientError(f"Slack's upload answered {exc.code}", outcome_unknown=write,
                                      retry_after=_retry_after(dict(exc.headers or {})) if exc.code == 429 else None)
            return PermanentError(f"Slack's upload refused the file ({exc.code})")
        if isinstance(exc, urllib.error.URLError):  # never sent: nothing was applied
            return TransientError(f"Slack could not be reached for {method}: {exc.reason}")
        if isinstance(exc, (OSError, http.client.HTTPException)):  # timeout, dropped connection
            return TransientError(f"Slack did not answer {method}: {type(exc).__name__}", outcome_unknown=write)
        if isinstance(exc, SlackClientError):  # refused by the SDK before sending (a file too big, ...)
            return PermanentError(f"Slack {method}: {exc}")
        return exc

    def _refusal(self, method: str, error: str, data: Mapping[str, Any], where: str) -> _Refused:
        where = where or "the channel"
        if error in ("invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"):
            return _Refused(f"Slack refused the bot token ({error})", _TOKEN_FIX, error=error)
        if error == "missing_scope":
            needed = str(data.get("needed") or "a scope")
            return _PermissionRefused(
                f"the Slack app lacks the scope {needed} for {method}",
                f"add {needed} under OAuth & Permissions → Bot Token Scopes on api.slack.com/apps, then reinstall the "
                "app to the workspace", error=error, permission=needed)
        bot = self._bot_name() if error in ("channel_not_found", "not_in_channel") else ""
        if error == "not_in_channel":
            return _PermissionRefused(f"the bot is not in {where}", f"invite the bot with /invite @{bot} in {where}",
                                      error=error, permission=f"membership of {where}")
        if error == "channel_not_found":
            return _PermissionRefused(f"Slack channel {where} not found, or it is private and the bot is not in it",
                                      f"check the channel mapping, or invite the bot with /invite @{bot}",
                                      error=error, permission=f"membership of {where}")
        problems = {
            "is_archived": (f"Slack channel {where} is archived",
                            "unarchive it, or map the bot's channel to another one"),
            "msg_too_long": (f"Slack refused the message in {where} as too long",
                             "this is a bug in the Slack adapter's rendering: please report it"),
            "invalid_blocks": (f"Slack refused the message's blocks: {'; '.join(data.get('errors') or [])}",
                               "fix the blocks given to the Slack adapter"),
            "message_not_found": (f"the message to change in {where} no longer exists",
                                  "it was deleted; the bot posts a new one for the next episode"),
            "cant_update_message": (f"the message in {where} was not posted with this token",
                                    "keep the same Slack app and token for the bot"),
            "thread_not_found": (f"the thread in {where} no longer exists", "it was deleted"),
        }
        problem, fix = problems.get(error, (f"Slack refused {method} ({error})",
                                            f"see https://api.slack.com/methods/{method}"))
        return _Refused(problem, fix, error=error)


def answer_by_response_url(response_url: str, text: str) -> None:
    """Answer a click privately through its ``response_url`` (no token needed: the URL is the
    permission, for 30 minutes); failures are logged, as the click itself was answered already."""
    from slack_sdk.webhook import WebhookClient

    fallback, blocks = render(text)
    try:
        answer = WebhookClient(response_url, timeout=5).send(
            text=fallback, blocks=blocks, response_type="ephemeral", replace_original=False)
        if answer.status_code != 200:
            log.warning("response_url refused the ephemeral answer (%s)", answer.status_code)
    except OSError as exc:
        log.warning("response_url could not be reached: %s", type(exc).__name__)


def routes(channels: Mapping[str, str], per_project: Mapping[str, Mapping[str, str]],
           project: str | None) -> dict[str, str]:
    """The channel of each kind of message for ``project``: its own entries in ``per_project``
    over the workspace-wide ``channels``."""
    return {**channels, **(per_project.get(project, {}) if project else {})}


def _is_group(key: str) -> bool:
    return key.startswith("@") or bool(GROUP_ID.match(key))


def _shown(channel: str) -> str:
    return channel if _CHANNEL_ID.match(channel) or not channel else f"#{channel}"


def _metadata(marker: str) -> dict[str, Any]:
    return {"event_type": EVENT_TYPE, "event_payload": {"marker": marker}}


def _marker_of(message: Mapping[str, Any]) -> str | None:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != EVENT_TYPE:
        return None
    payload = metadata.get("event_payload") or {}
    return payload.get("marker") if isinstance(payload, dict) else None
