"""APScheduler wiring only: each job calls the same BotApp function a command would.

Polling, the drift check and the digest are APScheduler jobs that never overlap themselves
(``max_instances=1``, missed runs coalesced). The digest job runs at its cron times, in local time,
and once at start, where ``BotApp.digest`` posts only if a cron time passed since the last digest.
The outbox has its own thread: it delivers every ``MLOPS_DELIVER_INTERVAL_S`` and at once when a
job or a webhook wakes it, so an acknowledgement does not wait for the next tick. Stopping lets the effect in flight finish.

On a shared PostgreSQL database several bots may run. By default each is a worker
(``bot/workers.py``): every worker keeps the jobs scheduled, but runs a poll or a drift check only in
the intervals it claims, and its deliverer takes lanes of the outbox beside the others. With
MLOPS_WORK_SHARING=leader only the leader works (``bot/leader.py``): the others keep their jobs
scheduled but skip them, and deliver nothing, until they take the lease over, when they poll and
check drift at once. Either way every job and every effect asks first whether this bot may still
work, and the outbox stores what it did under the bot's fence: a bot the store finds without its
lease or claims (``LostLease``: it was paused past them) stops at once. On SQLite the bot always leads.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

from bot.app import BotApp
from bot.leader import LEASE_NAME, Leadership, leadership_for
from bot.settings import cron_trigger
from bot.store import LostLease, WorkFence

__all__ = ["AnotherBotLeads", "Runner", "digest_due", "local_timezone", "run_forever", "run_once"]

log = logging.getLogger("mlops_bot.scheduler")


class Runner:
    """The bot's jobs in background threads: start, wake the deliverer, stop."""

    def __init__(self, app: BotApp, *, leadership: Leadership | None = None):
        from apscheduler.schedulers.background import BackgroundScheduler

        self.app = app
        self.leadership = leadership or leadership_for(app.store, takeover_s=app.settings.takeover_s,
                                                       sharing=app.settings.work_sharing)
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._scheduler = BackgroundScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 60}, timezone=UTC)
        self._deliverer = threading.Thread(target=self._deliver_loop, name="outbox", daemon=True)

    def start(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        settings, now = self.app.settings, datetime.now(UTC)
        self._scheduler.add_job(self._fenced_job("poll", self.app.poll, every_s=settings.poll_interval_s),
                                IntervalTrigger(seconds=settings.poll_interval_s), id="poll", next_run_time=now)
        self._scheduler.add_job(self._job("monitor", self.app.monitor, every_s=settings.monitor_interval_s),
                                IntervalTrigger(seconds=settings.monitor_interval_s), id="monitor", next_run_time=now)
        # At its cron times, and at start: a time missed while the bot was down still gets its digest.
        # Workers sharing the work may each run it: the digest is one effect per due time, stored once.
        self._scheduler.add_job(self._job("digest", self.app.digest),
                                cron_trigger(settings.digest_cron, timezone=local_timezone()),
                                id="digest", next_run_time=now)
        self._deliverer.start()
        self._scheduler.start()
        self.leadership.start(self._leadership_changed)
        log.info("mlops-bot running: poll every %gs, drift check every %gs, deliveries every %gs and on demand, "
                 "digest at '%s' (%s time)", settings.poll_interval_s, settings.monitor_interval_s,
                 settings.deliver_interval_s, settings.digest_cron, local_timezone())

    def wake(self) -> None:
        """Deliver now: something new was stored."""
        self._wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        self._scheduler.shutdown(wait=True)
        self._deliverer.join()
        self.leadership.stop()  # after the effect in flight: then a standby may take over
        log.info("mlops-bot stopped")

    def _should_stop(self) -> bool:
        """Asked between effects: stopping, or no longer leading (another bot may have taken over)."""
        return self.stopping.is_set() or not self.leadership.leading()

    def _leadership_changed(self, leading: bool) -> None:
        if not leading or self.stopping.is_set():
            return
        # Taken over: look for what happened while nobody led, and deliver what the last leader left.
        now = datetime.now(UTC)
        for job in ("poll", "monitor", "digest"):
            try:
                self._scheduler.modify_job(job, next_run_time=now)
            except Exception:  # shutting down: nothing left to run
                log.debug("could not reschedule %s", job, exc_info=True)
        self.wake()

    def _job(self, name: str, job, *, every_s: float | None = None):
        """``job`` at its times, while this bot works; with ``every_s``, only in the intervals this bot
        claims (workers sharing the work run each interval once between them; a leader runs all)."""
        def run() -> None:
            if self._should_stop():
                return
            if every_s is not None and not self.leadership.may_run(name, every_s):
                return
            try:
                job()
            except Exception:  # a failing job is logged and tried again at its next time
                log.exception("%s job failed", name)
            self.wake()
        return run

    def _fenced_job(self, name: str, job, *, every_s: float | None = None):
        """``_job`` for a job that stores its progress under the leader's fence (``job(fence=...)``)."""
        return self._job(name, lambda: self._under_fence(lambda fence: job(fence=fence)), every_s=every_s)

    def _under_fence(self, work: Callable[[WorkFence | None], object]) -> None:
        """``work(fence)`` with the term it stores under, taken before asking whether this bot still
        leads, whatever happens to the lead meanwhile: if it passes, the store refuses the rest
        (``LostLease``; the outbox says which effects it left for the new leader) and this bot stands by."""
        fence = self.leadership.fence()
        if self._should_stop():
            return
        try:
            work(fence)
        except LostLease:
            if fence is not None:
                self.leadership.lost(fence)

    def _deliver_loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(timeout=self.app.settings.deliver_interval_s)
            self._wake.clear()
            try:
                self._under_fence(lambda fence: self.app.deliver(should_stop=self._should_stop, fence=fence))
            except Exception:
                log.exception("delivering the outbox failed; trying again shortly")


def local_timezone() -> tzinfo:
    """The zone cron times are read in (MLOPS_DIGEST_CRON is local time): the system's, or TZ's."""
    from tzlocal import get_localzone

    return get_localzone()


def digest_due(cron: str, *, since: datetime, now: datetime) -> datetime | None:
    """The first time ``cron`` (local time) names after ``since``, if it is not after ``now``; else None."""
    trigger = cron_trigger(cron, timezone=local_timezone())
    # The trigger gives the first fire time at or after the instant it is handed: hand it the next one.
    due = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
    return due if due is not None and due <= now else None


class AnotherBotLeads(RuntimeError):
    """``run --once`` found another bot leading the shared state database: it did nothing."""


def run_once(app: BotApp) -> dict[str, int]:
    """``mlops-bot run --once``: every job once, as the leader or as one more worker.

    On a shared database it joins the workers for the run, or (MLOPS_WORK_SHARING=leader) leads for
    the run or does nothing if another bot leads; so a cron job beside running bots never delivers an
    effect at the same time as they do.
    """
    leadership = leadership_for(app.store, takeover_s=app.settings.takeover_s, sharing=app.settings.work_sharing)
    if not leadership.step():
        workers = app.store.live_workers() if app.store.shared else []
        if workers:
            raise AnotherBotLeads(f"{len(workers)} worker(s) share the work of state database {app.store.label} "
                                  "(MLOPS_WORK_SHARING=lanes); run with the same MLOPS_WORK_SHARING, so this run "
                                  "works beside them; nothing was done")
        lease = app.store.lease(LEASE_NAME)
        holder = f" ({lease.holder})" if lease is not None else ""
        raise AnotherBotLeads(f"another mlops-bot leads state database {app.store.label}{holder}; "
                              "it does this work already, so nothing was done")
    leadership.start(lambda leading: None)  # keeps the lease renewed while the jobs run
    fence = leadership.fence()
    try:
        return app.run_once(fence=fence)
    except LostLease as lost:  # paused past the lease: the bot that took it over finishes the work
        if fence is not None:
            leadership.lost(fence)
        raise AnotherBotLeads(f"another mlops-bot took over state database {app.store.label} during the run "
                              f"({lost}); it finishes the work, so this run stopped") from None
    finally:
        leadership.stop()


def run_forever(app: BotApp) -> None:
    """``mlops-bot run``: the jobs until SIGTERM or Ctrl-C."""
    runner = Runner(app)
    done = threading.Event()

    def stop(signum, _frame) -> None:
        log.info("received %s: finishing the effect in flight, then stopping", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    done.wait()
    runner.stop()
