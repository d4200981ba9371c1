"""Clock-driven jobs (APScheduler 3).

- ``sweep`` (5 s): wake the processor and the sender, so mail stored by
  ``mailbot ingest`` and due outbox retries are picked up;
- ``workflow-timers`` (1 min): time-based workflow steps (closing quiet ОП1
  requests; ОП2 reminders of unconfirmed files and of files asked of customers). With several daemons on one database, a transaction-level
  advisory lock lets one of them run the timers at a time. A failed run is
  reported once (a database outage to the daemon's shared health) and the
  next run is the retry.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from .supervision import Retry
from .workflow.actions import Workflow
from .workflow.timers import close_quiet_requests, remind_unconfirmed

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

TIMERS_LOCK = 7201003


def make_scheduler(daemon: "Daemon") -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=daemon.config.timezone)
    scheduler.add_job(daemon.wake, "interval", seconds=5, id="sweep", coalesce=True,
                      max_instances=1)
    retry = Retry("workflow timers", daemon.health)

    def timers() -> None:
        try:
            run_timers(daemon)
        except Exception as error:
            retry.failed(error)
        else:
            retry.succeeded()

    scheduler.add_job(timers, "interval", minutes=1, id="workflow-timers", coalesce=True,
                      max_instances=1)
    return scheduler


def run_timers(daemon: "Daemon") -> list[str]:
    """One pass of the workflow timers; the request numbers they touched."""
    with daemon.sessions.begin() as session:
        if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": TIMERS_LOCK}):
            return []
        flow = Workflow(session, daemon.config, daemon.clock.now())
        closed = close_quiet_requests(flow)
        reminded = remind_unconfirmed(flow)
    if closed:
        log.info("closed after the quiet period: %s", ", ".join(closed))
    if reminded:
        log.info("ОП2 reminders (files unconfirmed or awaited): %s", ", ".join(reminded))
    if closed or reminded:
        daemon.wake()
    return closed + reminded
