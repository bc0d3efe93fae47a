"""Delivers the effects the bot owes, exactly once, even when the bot is killed at any moment.

The store writes each effect with the event that caused it; this module hands due effects to
their handlers, one lane at a time in order, and records what happened:

* done: the result is stored; follow-up events the delivery produced are ingested first, so a
  crash between the two repeats the delivery, which then finds itself already done.
* failed in a way worth retrying: tried again later with exponential back-off and jitter.
* failed for good, or too many times: dead, and its lane moves on.
* refused for want of a permission (``PermissionRefused``): blocked, not failed. A person can grant
  it, so the effect is kept at the head of its lane and tried again every ``blocked_retry_s``
  (one attempt per blocked effect per interval, none counted against its attempts); the first
  refusal of an episode of a (service, permission) is logged once, as an error naming the
  permission, and handed to ``on_blocked`` (a chat alert); ``blocked()`` lists what waits, for
  ``status`` and the metrics. When one of them gets through, the permission is granted: the others
  waiting for it are made due at once. ``resume_blocked`` does the same when ``doctor`` sees it.

Before every first attempt the effect is marked "outcome unknown" in the store, and the mark is
cleared only once its result is stored. So an effect whose delivery may have happened (a timeout,
a lost response, the process killed mid-call) is never simply repeated: the handler is asked
first whether it already happened, by the hidden marker the bot puts in everything it writes.
Marks and results are written a round at a time (one effect per lane), in one transaction per
round; ``Outbox.deliver_due`` says why that keeps every promise above.

A leader among several bots delivers with its ``fence`` (``bot/leader.py``): every outcome is stored
only while its lease stands. One paused past its lease (SIGSTOP, a long stall) that wakes up
mid-delivery is refused (``LostLease``): it stops at once, and leaves the effects it tried marked
"outcome unknown", so the bot that leads now looks for them, by marker, before repeating them, and
finds what the paused one did outside after all.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.events import Event
from bot.logs import log_context
from bot.store import BlockedEffect, EffectRow, LostLease, Store, WorkFence, blocked_by, utc_now
# The adapters raise the ports' own PermanentError (404, 422, refused credentials): it is the one
# that sends an effect dead at once; its PermissionRefused blocks the effect instead.
from integrations.ports import PermanentError, PermissionRefused, StillRunning, TransientError

__all__ = ["Blocked", "BlockedEffect", "Delivered", "DeliveryReport", "EffectHandler", "Outbox", "PermanentError"]

_log = logging.getLogger("mlops_bot.outbox")
# Beyond this many doublings every delay is capped anyway; stopping here keeps the number finite.
_MAX_DOUBLINGS = 32
_MAX_ERROR_CHARS = 1000
BLOCKED_RETRY_S = 600.0  # how often an effect refused for want of a permission is tried again


@dataclass(frozen=True)
class Delivered:
    result: dict[str, Any]
    events: tuple[Event, ...] = ()  # follow-ups (e.g. a pipeline run finished) the dispatcher must ingest


class EffectHandler(Protocol):
    def deliver(self, effect: EffectRow) -> Delivered:
        """Do the effect; raise TransientError (retry) or PermanentError (give up) when it fails."""

    def find_done(self, effect: EffectRow) -> Delivered | None:
        """If the effect already happened (its marker is found), what ``deliver`` would have returned."""


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    recovered: int = 0  # found already done by an attempt whose outcome was unknown
    blocked: int = 0  # refused for want of a permission: kept, tried again later


@dataclass(frozen=True)
class Blocked:
    """What ``on_blocked`` hears when a service starts refusing the bot a permission (once per episode)."""

    service: str  # the service that refused: "github", "slack", ...
    permission: str  # what to grant, in its words: "issues=write", "chat:write"
    message: str  # what it said, and how to grant it
    effect_key: str  # the first effect it refused
    effect_kind: str
    since: datetime
    retry_s: float  # how often the blocked effects are tried again


class _StoppedAfterLooking(Exception):
    """Stopping, or no longer leading, by the time the look for an earlier attempt came back empty:
    the write is left to whoever delivers next, who looks again first. (A leader paused during the
    look wakes up here: writing then could repeat what the bot that took over did meanwhile.)"""


class _RefusedWhileLooking(Exception):
    """A refusal while looking for an effect whose outcome is unknown: it may still have happened."""

    def __init__(self, refusal: PermissionRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class Outbox:
    def __init__(self, store: Store, handlers: Mapping[str, EffectHandler], *, ingest: Callable[[Event], None],
                 clock: Callable[[], datetime] = utc_now, max_attempts: int = 10, base_delay_s: float = 2.0,
                 max_delay_s: float = 900.0, jitter: Callable[[], float] = random.random,
                 blocked_retry_s: float = BLOCKED_RETRY_S, on_blocked: Callable[[Blocked], None] | None = None) -> None:
        self._store = store
        self._blocked_retry_s = blocked_retry_s
        self._on_blocked = on_blocked
        self._handlers = handlers
        self._ingest = ingest
        self._clock = clock
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._jitter = jitter

    def deliver_due(self, *, limit: int = 100, should_stop: Callable[[], bool] = lambda: False,
                    fence: WorkFence | None = None) -> DeliveryReport:
        """Deliver due effects until none is due, ``limit`` were handled, or ``should_stop()``.

        ``should_stop`` is asked between effects, so a stopping bot finishes the one in flight.
        With ``fence``, every outcome is stored only while that lease stands; when it no longer
        does, delivering stops at once, nothing more is stored, and ``LostLease`` is raised for the
        caller to stop leading.

        Deliveries go in rounds, the head of each lane per round, and the store is written once
        per round, not several times per effect. The transaction that starts a round records the
        one before it (its completions) and marks each effect of the new round before any is
        tried, as ``begin_attempt`` would. So every effect of a round may be left uncompleted until
        the round ends: a crash leaves it with its outcome unknown, and the next delivery looks for
        it before repeating it. A lane still never moves on before its effect is done, as the
        next round is chosen only once the last one is recorded. What the deliveries write to the
        store themselves (links, state) waits for that transaction too (``Store.deferred_writes``),
        so a completion is never stored without them.

        An effect whose delivery produced follow-up events is completed at once after they are
        ingested, as before: repeating it after a crash would run it again, and not every handler
        can look for what it did.
        """
        outcomes: Counter[str] = Counter()
        handled = 0
        completed: dict[int, dict[str, Any]] = {}  # done in the round before, not yet stored
        untried: set[int] = set()  # marked for the round before, never tried: the mark goes
        unrecorded: list[str] = []  # keys of the effects tried whose outcome is not stored yet
        try:
            with self._store.deferred_writes():
                try:
                    while handled < limit and not should_stop():
                        due = self._store.next_round(limit=limit - handled, results=completed, untried=untried,
                                                     fence=fence)
                        completed, untried = {}, {effect.id for effect in due if not effect.outcome_unknown}
                        unrecorded = []
                        for effect in due:  # one per lane: the next of each lane comes with the next round
                            # Asked before the first too: a leader paused while the round began (in
                            # next_round) wakes up here, and must not start a delivery it may no longer make.
                            if should_stop():
                                break
                            untried.discard(effect.id)
                            unrecorded.append(effect.key)
                            try:
                                with log_context(event=effect.cause, effect=effect.key,
                                                 run=effect.payload.get("run_id")):
                                    outcome = self._deliver(effect, completed, fence, should_stop)
                            except _StoppedAfterLooking:
                                unrecorded.remove(effect.key)  # untouched: still pending, its outcome unknown
                                break
                            if effect.id not in completed:
                                unrecorded.remove(effect.key)  # stored at once
                            outcomes[outcome] += 1
                            handled += 1
                        if not due:
                            break
                except LostLease:
                    raise  # nothing more may be stored under this lease
                except BaseException:
                    # Failing half-way: what was done is stored.
                    self._store.finish_attempts(completed, untried, fence=fence)
                    raise
                # Also when stopping: what was done is stored.
                self._store.finish_attempts(completed, untried, fence=fence)
        except LostLease as lost:
            # Left pending and marked "outcome unknown": the new leader looks for each before repeating it.
            _log.warning("lost the lease while delivering: %s left for the new leader (%s)",
                         f"effect(s) {', '.join(unrecorded)}" if unrecorded else "no effect", lost)
            raise
        return DeliveryReport(**outcomes)

    def blocked(self) -> list[BlockedEffect]:
        """The effects waiting for a permission to be granted, oldest first (``status``, ``doctor``)."""
        return self._store.blocked_effects()

    def resume_blocked(self, *, service: str | None = None, permission: str | None = None) -> int:
        """Try the blocked effects (of ``service``, or for ``permission``) at the next delivery
        rather than at the end of their interval: the permission is seen granted. Returns how many."""
        return self._store.unblock(service=service, permission=permission)

    def _deliver(self, effect: EffectRow, completed: dict[int, dict[str, Any]], fence: WorkFence | None,
                 should_stop: Callable[[], bool]) -> str:
        """Deliver one effect and record the outcome; returns the DeliveryReport field to count it in.

        A plain success is left in ``completed`` for the round to store; anything else is stored now.
        """
        handler = self._handlers.get(effect.kind)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            return self._give_up(effect, f"no handler for effect kind {effect.kind!r} (known: {known})",
                                 why="no handler for its kind", outcome_unknown=False, fence=fence)
        try:
            delivered, recovered = self._attempt(handler, effect, should_stop)
        except _RefusedWhileLooking as looking:
            return self._block(effect, looking.refusal, outcome_unknown=True, fence=fence)
        except PermissionRefused as error:  # the write was refused, so it did not happen
            return self._block(effect, error, outcome_unknown=False, fence=fence)
        except PermanentError as error:
            return self._give_up(effect, _describe(error), why=type(error).__name__, outcome_unknown=False,
                                 fence=fence)
        except StillRunning as error:
            self._store.check_later(effect.id, _describe(error),
                                    at=self._clock() + timedelta(seconds=error.retry_after or 30.0), fence=fence)
            return "retried"
        except TransientError as error:
            return self._retry(effect, error, outcome_unknown=error.outcome_unknown, retry_after=error.retry_after,
                               fence=fence)
        except Exception as error:  # a bug or a surprising answer, possibly after the write happened
            return self._retry(effect, error, outcome_unknown=True, retry_after=None, fence=fence)
        try:
            for event in delivered.events:
                self._ingest(event)
        except Exception as error:  # the effect happened; the next attempt finds it and ingests again
            return self._retry(effect, error, outcome_unknown=True, retry_after=None, fence=fence)
        if delivered.events:
            self._store.complete(effect.id, delivered.result, fence=fence)
        else:
            completed[effect.id] = delivered.result
        outcome = "recovered" if recovered else "delivered"
        granted = blocked_by(effect)
        if granted is not None:  # it waited for a permission, which is granted now: so do the others waiting
            others = self._store.unblock(service=granted[0], permission=granted[1], excluding=(effect.id,))
            _log.info("effect %s (%s) %s: %s grants %s now%s", effect.key, effect.kind, outcome, *granted,
                      f"; {others} more blocked effect(s) resume" if others else "")
        else:
            _log.info("effect %s (%s) %s", effect.key, effect.kind, outcome)
        return outcome

    def _attempt(self, handler: EffectHandler, effect: EffectRow,
                 should_stop: Callable[[], bool]) -> tuple[Delivered, bool]:
        """What delivering gave, and whether it was found already done instead of delivered."""
        if effect.outcome_unknown:
            try:
                found = handler.find_done(effect)
            except TransientError as error:
                # Nothing was learnt: the earlier attempt may still have happened.
                raise TransientError(str(error), outcome_unknown=True, retry_after=error.retry_after) from error
            except PermissionRefused as error:  # nor here
                raise _RefusedWhileLooking(error) from error
            if found is not None:
                return found, True
            # Asked again between the look (a request) and the write: what the look found may be stale.
            if should_stop():
                raise _StoppedAfterLooking(effect.key)
        return handler.deliver(effect), False

    def _retry(self, effect: EffectRow, error: Exception, *, outcome_unknown: bool, retry_after: float | None,
               fence: WorkFence | None) -> str:
        attempts = effect.attempts + 1
        # An earlier attempt that may have happened still may, later (a leader paused past its lease
        # wakes up and writes; a request that timed out is served after all): this attempt failing
        # says nothing of that one, so every repeat looks for it first.
        outcome_unknown = outcome_unknown or effect.outcome_unknown
        if attempts >= self._max_attempts:
            return self._give_up(effect, f"{_describe(error)} (gave up after {attempts} attempts)",
                                 why=f"{type(error).__name__}, attempt {attempts} of {self._max_attempts}",
                                 outcome_unknown=outcome_unknown, fence=fence)
        delay = self._backoff_s(effect.attempts)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._store.retry_later(effect.id, _describe(error), at=self._clock() + timedelta(seconds=delay),
                                outcome_unknown=outcome_unknown, fence=fence)
        # Only key, kind and the error's type: messages and payloads may quote what was written.
        _log.warning("effect %s (%s) failed (%s), attempt %d; retrying in %.1f s",
                     effect.key, effect.kind, type(error).__name__, attempts, delay)
        return "retried"

    def _block(self, effect: EffectRow, error: PermissionRefused, *, outcome_unknown: bool,
               fence: WorkFence | None) -> str:
        """Park the effect until the permission is granted: tried again in ``blocked_retry_s``, its
        attempts untouched. The first refusal of an episode is logged (once) and told ``on_blocked``."""
        outcome_unknown = outcome_unknown or effect.outcome_unknown  # as in _retry
        service, permission = error.service, " ".join(error.permission.split()) or "unnamed"
        message = str(error)[:_MAX_ERROR_CHARS]
        ongoing = self._store.blocked_effects(service=service, permission=permission)  # this one too, if it waited
        now = self._clock()
        self._store.block(effect.id, service=service, permission=permission, message=message,
                          at=now + timedelta(seconds=self._blocked_retry_s), outcome_unknown=outcome_unknown,
                          fence=fence)
        if ongoing:
            _log.debug("effect %s (%s) still blocked: %s refuses %s", effect.key, effect.kind, service, permission)
            return "blocked"
        _log.error("%s refuses the bot %s: effect %s (%s) and any other that needs it wait, tried again every "
                   "%s, until it is granted. %s", service, permission, effect.key, effect.kind,
                   _duration(self._blocked_retry_s), message)
        if self._on_blocked is not None:
            try:
                self._on_blocked(Blocked(service, permission, message, effect.key, effect.kind, now,
                                         self._blocked_retry_s))
            except Exception as problem:  # noqa: BLE001 - telling must not stop the deliveries
                _log.warning("could not tell about %s refusing %s (%s)", service, permission, type(problem).__name__)
        return "blocked"

    def _give_up(self, effect: EffectRow, error: str, *, why: str, outcome_unknown: bool,
                 fence: WorkFence | None) -> str:
        """Mark the effect dead with ``error`` (kept in the store); ``why`` is the short form for the log."""
        self._store.give_up(effect.id, error, outcome_unknown=outcome_unknown, fence=fence)
        _log.error("effect %s (%s) dead (%s)%s", effect.key, effect.kind, why,
                   "; it may have happened" if outcome_unknown else "")
        return "dead"

    def _backoff_s(self, failures: int) -> float:
        """base * 2**failures, capped, then spread over half to all of it so retries do not bunch up."""
        delay = min(self._base_delay_s * 2 ** min(failures, _MAX_DOUBLINGS), self._max_delay_s)
        return delay * (0.5 + self._jitter() / 2)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
