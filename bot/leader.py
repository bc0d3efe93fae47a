"""Which of several bots on one state database does the work: the one holding the lease.

Bots sharing a PostgreSQL state database take a lease, one row in the ``leases`` table with a
holder, a term and an expiry. The holder leads: it runs the jobs and delivers the outbox, and
renews the lease well before it expires. The others stand by, looking at the lease often; when
the leader dies its lease runs out and one of them takes it, with the next term, and carries on
from the stored cursors and outbox (an effect the dead leader had begun is looked for by its
marker before it is repeated, as after any crash). A leader stopped cleanly ends its lease at
once, so a standby takes over without waiting.

Why a lease row and not a session advisory lock: an advisory lock lives as long as its database
session, and a session outlives a host that vanished (power, network) until TCP keepalives give up,
minutes to hours later, so the takeover time would be the network stack's, not ours. A lease
expires at a time we set, on the database's clock (hosts' clocks need not agree), works through
connection poolers that do not keep sessions, and shows who leads, since when, in which term.

Timing, from ``takeover_s`` (``MLOPS_TAKEOVER_S``): the lease lasts 0.7 of it and is renewed every
third of that; a standby looks every tenth. A leader that dies mid-term is replaced at the latest
0.7 + 0.1 of ``takeover_s`` later. A leader that cannot renew (the database unreachable, the
process paused) stops leading on its own clock before its lease can expire, so two bots never
both believe they lead; each job and each effect asks ``leading()`` first.

Asking first is not enough for a process paused (SIGSTOP, a long stall) between the asking and the
writing: it wakes up believing what it last saw. So what records a leader's progress in the store
(an effect done, retried or dead) carries the leader's ``fence()``, its holder and term, and the
store checks it in the transaction that writes, by the database's clock; a leader it refuses
(``LostLease``) has lost the lease and says so with ``lost()``. What the paused leader did outside
(a comment posted after all) is found by its marker by the next leader, which looks for every
effect whose attempt was begun before repeating it.

On SQLite, one file on one host, the bot leads alone, as it always has (``SoleLeader``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.store import Fence, Lease, Store, WorkFence

__all__ = ["LEASE_NAME", "LeaseLeader", "LeaseTiming", "Leadership", "SoleLeader", "leadership_for"]

LEASE_NAME = "mlops-bot"
_LOOKS_PER_TAKEOVER = 10  # how often a standby looks, in takeover_s
_NO_TERM = 0  # terms start at 1


@dataclass(frozen=True)
class LeaseTiming:
    """From MLOPS_TAKEOVER_S: how long a lease (or a worker's row, bot/workers.py) lasts unrenewed, how
    often its holder renews it, and how long after asking the holder may work on its own clock."""

    takeover_s: float

    @property
    def ttl_s(self) -> float:
        return self.takeover_s * 0.7

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    @property
    def trusted_s(self) -> float:
        """A holder gives up a tenth of the lease before it could expire, whatever its clock says."""
        return self.ttl_s * 0.9

_log = logging.getLogger("mlops_bot.leader")


class Leadership(Protocol):
    def start(self, on_change: Callable[[bool], None]) -> None:
        """Begin taking part; ``on_change(leading)`` is called when this bot starts or stops leading."""

    def step(self) -> bool:
        """Look at the lead once, now (take it if free); whether this bot leads."""

    def leading(self) -> bool:
        """Whether this bot may do the work now."""

    def fence(self) -> WorkFence | None:
        """The token the store checks before recording this leader's work; None when no other bot
        can lead (SQLite), so none is needed."""

    def may_run(self, job: str, every_s: float) -> bool:
        """Whether this bot runs the scheduled ``job`` (due every ``every_s`` seconds) now: a leader
        runs every job; workers sharing the work run each interval of a job once between them."""

    def lost(self, fence: WorkFence) -> None:
        """The store refused a write fenced by ``fence``: that lease is gone, so stop leading in it."""

    def stop(self) -> None:
        """Stop taking part; a leader hands its lease back."""


class SoleLeader:
    """The only bot on its database (SQLite): it always leads."""

    def start(self, on_change: Callable[[bool], None]) -> None:
        pass

    def step(self) -> bool:
        return True

    def leading(self) -> bool:
        return True

    def fence(self) -> Fence | None:
        return None  # nobody else can take over: nothing to fence against

    def may_run(self, job: str, every_s: float) -> bool:
        return True

    def lost(self, fence: Fence) -> None:
        pass

    def stop(self) -> None:
        pass


class LeaseLeader:
    """Leads while it holds the lease ``name`` in ``store``; a thread takes, renews and watches it."""

    def __init__(self, store: Store, *, takeover_s: float, name: str = LEASE_NAME, holder: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store, self.name = store, name
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        timing = LeaseTiming(takeover_s)
        self._ttl_s, self._renew_every_s, self._trusted_s = timing.ttl_s, timing.renew_every_s, timing.trusted_s
        self._look_every_s = takeover_s / _LOOKS_PER_TAKEOVER
        self._monotonic = monotonic
        self._term: int | None = None
        self._deadline = 0.0  # on our own clock: lead until then unless renewed
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[bool], None] = lambda leading: None
        self._waiting_for: str | None = None  # the holder we last said we wait for

    @property
    def term(self) -> int | None:
        return self._term

    def start(self, on_change: Callable[[bool], None]) -> None:
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="leader", daemon=True)
        self._thread.start()

    def leading(self) -> bool:
        with self._state_lock:
            return self._term is not None and self._monotonic() < self._deadline

    def fence(self) -> Fence:
        """The term this bot holds; when it holds none, term 0, which no lease ever had, so the store
        refuses whatever is written under it (never None: that would write unfenced)."""
        with self._state_lock:
            return Fence(self.name, self.holder, self._term if self._term is not None else _NO_TERM)

    def may_run(self, job: str, every_s: float) -> bool:
        return self.leading()

    def lost(self, fence: Fence) -> None:
        with self._state_lock:
            if fence.holder != self.holder or self._term != fence.term:
                return  # an older term's fence: this bot has moved on since
            was = self._monotonic() < self._deadline
            self._term = None  # the next step looks at the lease afresh, as a standby
        _log.warning("no longer leading (term %d): the store refused a write, as another bot took the lease "
                     "or it ran out; standing by", fence.term)
        if was:
            try:
                self._on_change(False)
            except Exception:  # noqa: BLE001 - standing by must not fail for it
                _log.exception("reacting to a change of leader failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._state_lock:
            term, self._term = self._term, None
        if term is not None:
            try:
                self._store.release_lease(self.name, self.holder, term)
                _log.info("handed the lead back (term %d): a standby may take over at once", term)
            except Exception as error:  # the lease then simply runs out
                _log.warning("could not hand the lead back (%s); it passes when the lease runs out", error)

    def step(self) -> bool:
        """One look at the lease: take it if free, renew it if ours; whether this bot leads now."""
        was = self.leading()
        asked = self._monotonic()
        try:
            if self._term is None:
                workers = self._store.live_workers()
                if workers:  # leading beside workers could deliver an effect twice
                    self._wait_for_workers(workers)
                    return False
                lease = self._store.take_lease(self.name, self.holder, ttl_s=self._ttl_s)
                self._took(lease, asked)
            else:
                lease = self._store.renew_lease(self.name, self.holder, self._term, ttl_s=self._ttl_s)
                if lease is None:
                    self._lost("another bot took the lease")
                else:
                    self._renewed(asked)
        except Exception as error:  # the database unreachable: keep trying; the deadline still holds
            _log.warning("the lease cannot be checked (%s: %s); trying again", type(error).__name__, error)
        now = self.leading()
        if was and not now and self._term is not None:
            self._lost(f"the lease could not be renewed within {self._trusted_s:.1f} s")
        if now != was:
            try:
                self._on_change(now)
            except Exception:
                _log.exception("reacting to a change of leader failed")
        return now

    def _run(self) -> None:
        while not self._stopping.is_set():
            leading = self.step()
            self._stopping.wait(self._renew_every_s if leading else self._look_every_s)

    def _took(self, lease: Lease, asked: float) -> None:
        if not lease.held_by(self.holder):
            if lease.holder != self._waiting_for:
                self._waiting_for = lease.holder
                _log.info("standing by: %s leads (term %d); taking over within %.1f s if it stops renewing",
                          lease.holder, lease.term, (lease.expires_at - lease.now).total_seconds() + self._look_every_s)
            return
        with self._state_lock:
            self._term = lease.term
            self._deadline = asked + self._trusted_s
        self._waiting_for = None
        _log.info("now leading (term %d, as %s)", lease.term, self.holder)

    def _wait_for_workers(self, workers: list[str]) -> None:
        if workers[0] != self._waiting_for:
            self._waiting_for = workers[0]
            _log.error("%d worker(s) share the work of this state database (MLOPS_WORK_SHARING=lanes), e.g. %s: "
                       "this bot stands by instead of leading beside them; give every bot on one database the same "
                       "MLOPS_WORK_SHARING", len(workers), workers[0])

    def _renewed(self, asked: float) -> None:
        with self._state_lock:
            # From when we asked: the database's expiry is at least that far from then.
            self._deadline = asked + self._trusted_s

    def _lost(self, why: str) -> None:
        with self._state_lock:
            term, self._term = self._term, None
        if term is not None:
            _log.warning("no longer leading (term %d): %s; standing by", term, why)


def leadership_for(store: Store, *, takeover_s: float, sharing: str) -> Leadership:
    """How this bot takes part (``sharing``: MLOPS_WORK_SHARING): on a database bots can share, as a
    worker beside the others (``lanes``) or by a lease (``leader``); alone on SQLite."""
    if sharing == "lanes" and store.shared:
        from bot.workers import LaneWorker

        return LaneWorker(store, takeover_s=takeover_s)
    return LeaseLeader(store, takeover_s=takeover_s) if store.shared else SoleLeader()
