"""Several bots that all work, sharing the outbox by lane (``MLOPS_WORK_SHARING=lanes``, PostgreSQL).

Where ``bot/leader.py`` lets one bot lead while the others stand by, here every bot is a worker:
each registers a row in the state database (``workers``) and renews it, as a leader renews its
lease. Its outbox rounds claim lanes, the outbox's units of order (a change's comments, a ticket,
a chat thread, a model's pipeline), and deliver only the heads of the lanes they hold, so lanes run
in parallel on different workers while each lane keeps its order. A lane with nothing due is
released at the end of the round, so the next burst of work goes to whichever worker asks first. An
effect that takes minutes (an in-process pipeline run) is delivered in a round of its own, so its
worker holds no other lane meanwhile: one in-process run at a time per worker, the rest to the others.

A worker killed holds its lanes until its row runs out (0.7 of ``MLOPS_TAKEOVER_S``); then any other
worker claims them, with the lane's next token, and looks for the effect it was delivering by its
marker before repeating it, as after any crash. A worker paused past its row (SIGSTOP, a long stall)
stops working on its own clock first, as a leader does: every write that records its work carries
its ``ClaimFence`` (its name and each lane's token), which the store checks in the writing
transaction; refused (``LostClaim``), it forgets its lanes and joins again under a new name.

Scheduled jobs (polls, drift checks, the digest) run on every worker's timer, but each interval of
a job is claimed (``job_claims``): the first worker to ask runs it, the others skip it. So a job runs
once per interval across the workers, and keeps running when any of them dies.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from bot.leader import LeaseTiming
from bot.store import ClaimFence, Store

__all__ = ["LONG_KINDS", "LaneWorker"]

# Effects that may take minutes to deliver: an in-process pipeline run. Each is a round of its own, so
# the worker delivering one holds no other lane meanwhile (another worker takes them). A run on GitHub
# Actions or Azure Pipelines is only started in its round, which ends at once.
LONG_KINDS = frozenset({"pipeline.run"})

_log = logging.getLogger("mlops_bot.workers")


def _new_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LaneWorker:
    """One of several workers on a shared state database (the ``Leadership`` of ``bot/leader.py``:
    ``leading()`` means this worker may work now)."""

    def __init__(self, store: Store, *, takeover_s: float, lanes_per_round: int = 10,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        timing = LeaseTiming(takeover_s)  # as a leader's lease
        self._ttl_s, self._renew_every_s, self._trusted_s = timing.ttl_s, timing.renew_every_s, timing.trusted_s
        self._lanes_per_round = lanes_per_round
        self._monotonic = monotonic
        self._state_lock = threading.Lock()
        self._fence: ClaimFence | None = None  # while registered
        self._deadline = 0.0  # on our own clock: work until then unless renewed
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[bool], None] = lambda working: None
        self._waiting_for: str | None = None  # the leader we last said we wait for

    @property
    def holder(self) -> str | None:
        with self._state_lock:
            return None if self._fence is None else self._fence.holder

    def start(self, on_change: Callable[[bool], None]) -> None:
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._thread.start()

    def leading(self) -> bool:
        with self._state_lock:
            return self._fence is not None and self._monotonic() < self._deadline

    def fence(self) -> ClaimFence:
        """The worker's claims; when it is not registered, a name no row has, which the store refuses."""
        with self._state_lock:
            return self._fence if self._fence is not None else ClaimFence("(not registered)")

    def may_run(self, job: str, every_s: float) -> bool:
        """Whether this worker runs ``job`` now: it works, and it is the first to claim the interval."""
        holder = self.holder
        return holder is not None and self.leading() and self._store.claim_job(job, holder, every_s=every_s)

    def lost(self, fence: ClaimFence) -> None:
        """The store refused a write of ``fence``: this worker's row ran out or a lane was taken. It
        forgets its lanes; the next step joins again, under a new name."""
        with self._state_lock:
            if self._fence is not fence:
                return  # an earlier registration's fence: this worker has moved on since
            self._fence = None
        _log.warning("worker %s stopped working: the store refused its write, as its row ran out or another "
                     "worker took one of its lanes; joining again", fence.holder)
        self._changed(False)

    def step(self) -> bool:
        """Join if not registered, else renew; whether this worker may work now."""
        was = self.leading()
        asked = self._monotonic()
        fence = self._current()
        try:
            if fence is None:
                self._join(asked)
            elif self._store.renew_worker(fence.holder, ttl_s=self._ttl_s):
                with self._state_lock:
                    if self._fence is fence:
                        self._deadline = asked + self._trusted_s
            else:
                self._drop(fence, "its row ran out before it was renewed")
        except Exception as error:  # the database unreachable: keep trying; the deadline still holds
            _log.warning("the worker's row cannot be renewed (%s: %s); trying again", type(error).__name__, error)
        now = self.leading()
        if was and not now and (fence := self._current()) is not None:
            self._drop(fence, f"its row could not be renewed within {self._trusted_s:.1f} s")
        if now != was:
            self._changed(now)
        return now

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._state_lock:
            fence, self._fence = self._fence, None
        if fence is not None:
            try:
                self._store.leave_workers(fence.holder)
                _log.info("worker %s left: its lanes are free for the others at once", fence.holder)
            except Exception as error:  # its row then simply runs out
                _log.warning("could not leave (%s); its lanes pass on when its row runs out", error)

    def _join(self, asked: float) -> None:
        leader = self._store.live_leader()
        if leader is not None:  # working beside a bot that leads alone could deliver an effect twice
            if leader != self._waiting_for:
                self._waiting_for = leader
                _log.error("%s leads this state database alone (MLOPS_WORK_SHARING=leader): this bot waits instead "
                           "of working beside it; give every bot on one database the same MLOPS_WORK_SHARING", leader)
            return
        self._waiting_for = None
        fence = ClaimFence(_new_name(), lanes_per_round=self._lanes_per_round, solo_kinds=LONG_KINDS)
        self._store.join_workers(fence.holder, ttl_s=self._ttl_s)
        with self._state_lock:
            self._fence = fence
            self._deadline = asked + self._trusted_s
        _log.info("working as %s beside any other worker on the state database", fence.holder)

    def _drop(self, fence: ClaimFence, why: str) -> None:
        with self._state_lock:
            if self._fence is not fence:
                return
            self._fence = None
        _log.warning("worker %s stopped working: %s; joining again", fence.holder, why)

    def _current(self) -> ClaimFence | None:
        with self._state_lock:
            return self._fence

    def _changed(self, working: bool) -> None:
        try:
            self._on_change(working)
        except Exception:  # noqa: BLE001 - working on must not fail for it
            _log.exception("reacting to a change of the worker's state failed")

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.step()
            self._stopping.wait(self._renew_every_s if self.leading() else self._renew_every_s / 3)
