"""APScheduler wiring only: each job calls the same BotApp function a command would.

Polling, the drift check and the digest are APScheduler jobs that never overlap themselves
(``max_instances=1``, missed runs coalesced). The outbox has its own thread: it delivers every
``MLOPS_DELIVER_INTERVAL_S`` and at once when a job or a webhook wakes it, so an acknowledgement
does not wait for the next tick. Stopping lets the effect in flight finish.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from bot.app import BotApp

__all__ = ["Runner", "run_forever"]

log = logging.getLogger("mlops_bot.scheduler")


class Runner:
    """The bot's jobs in background threads: start, wake the deliverer, stop."""

    def __init__(self, app: BotApp):
        from apscheduler.schedulers.background import BackgroundScheduler

        self.app = app
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._scheduler = BackgroundScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 60}, timezone=UTC)
        self._deliverer = threading.Thread(target=self._deliver_loop, name="outbox", daemon=True)

    def start(self) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        settings, now = self.app.settings, datetime.now(UTC)
        self._scheduler.add_job(self._job("poll", self.app.poll), IntervalTrigger(seconds=settings.poll_interval_s),
                                id="poll", next_run_time=now)
        self._scheduler.add_job(self._job("monitor", self.app.monitor),
                                IntervalTrigger(seconds=settings.monitor_interval_s), id="monitor", next_run_time=now)
        self._scheduler.add_job(self._job("digest", self.app.digest), CronTrigger.from_crontab(settings.digest_cron),
                                id="digest")
        self._deliverer.start()
        self._scheduler.start()
        log.info("mlops-bot running: poll every %gs, drift check every %gs, deliveries every %gs and on demand, "
                 "digest at '%s'", settings.poll_interval_s, settings.monitor_interval_s,
                 settings.deliver_interval_s, settings.digest_cron)

    def wake(self) -> None:
        """Deliver now: something new was stored."""
        self._wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        self._scheduler.shutdown(wait=True)
        self._deliverer.join()
        log.info("mlops-bot stopped")

    def _job(self, name: str, job):
        def run() -> None:
            if self.stopping.is_set():
                return
            try:
                job()
            except Exception:  # a failing job is logged and tried again at its next time
                log.exception("%s job failed", name)
            self.wake()
        return run

    def _deliver_loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(timeout=self.app.settings.deliver_interval_s)
            self._wake.clear()
            try:
                self.app.deliver(should_stop=self.stopping.is_set)
            except Exception:
                log.exception("delivering the outbox failed; trying again shortly")


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
