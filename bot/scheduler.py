"""APScheduler wiring only: each job calls the same BotApp function a command would.

Jobs never overlap themselves (``max_instances=1``, missed runs coalesced); SIGTERM or Ctrl-C lets
the effect in flight finish and then stops the scheduler.
"""

from __future__ import annotations

import logging
import signal
import threading

from bot.app import BotApp

__all__ = ["run_forever"]

log = logging.getLogger("mlops_bot.scheduler")


def run_forever(app: BotApp) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    settings = app.settings
    stopping = threading.Event()
    scheduler = BlockingScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 60})

    def guarded(name, job):
        def run() -> None:
            if stopping.is_set():
                return
            try:
                job()
            except Exception:  # a failing job is logged and tried again at its next time
                log.exception("%s job failed", name)
        return run

    scheduler.add_job(guarded("poll", app.poll), IntervalTrigger(seconds=settings.poll_interval_s), id="poll",
                      next_run_time=_now())
    scheduler.add_job(guarded("deliver", lambda: app.deliver(should_stop=stopping.is_set)),
                      IntervalTrigger(seconds=settings.deliver_interval_s), id="deliver", next_run_time=_now())
    scheduler.add_job(guarded("monitor", app.monitor), IntervalTrigger(seconds=settings.monitor_interval_s),
                      id="monitor", next_run_time=_now())
    scheduler.add_job(guarded("digest", app.digest), CronTrigger.from_crontab(settings.digest_cron), id="digest")

    def stop(signum, _frame) -> None:
        log.info("received %s: finishing the effect in flight, then stopping", signal.Signals(signum).name)
        stopping.set()
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("mlops-bot running: poll every %gs, deliver every %gs, drift check every %gs, digest at '%s'",
             settings.poll_interval_s, settings.deliver_interval_s, settings.monitor_interval_s, settings.digest_cron)
    scheduler.start()
    log.info("mlops-bot stopped")


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
