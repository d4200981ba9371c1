"""Clock-driven jobs (APScheduler 3).

- ``sweep`` (5 s): wake the processor and the sender, so mail stored by
  ``mailbot ingest`` and due outbox retries are picked up;
- ``workflow-timers`` (1 min): time-based workflow steps (closing quiet ОП1
  requests). With several daemons on one database, a transaction-level
  advisory lock lets one of them run the timers at a time. A failed run is
  reported once (a database outage to the daemon's shared health) and the
  next run is the retry;
- ``sla-clock`` (1 min): the SLA clock's ladder steps and the supervisors'
  digests (:func:`run_sla`), under an advisory lock of its own, with the same
  retries.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from .deadlines import Deadlines
from .supervision import Retry
from .workflow.actions import Workflow
from .workflow.digest import digest_slot, send_digests
from .workflow.ladder import Taken, take_steps
from .workflow.timers import close_quiet_requests

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

TIMERS_LOCK = 7201003
SLA_LOCK = 7201004


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
    sla_retry = Retry("SLA clock", daemon.health)

    def sla_clock() -> None:
        try:
            run_sla(daemon)
        except Exception as error:
            sla_retry.failed(error)
        else:
            sla_retry.succeeded()

    scheduler.add_job(sla_clock, "interval", minutes=1, id="sla-clock", coalesce=True,
                      max_instances=1)
    return scheduler


def run_timers(daemon: "Daemon") -> list[str]:
    """One pass of the workflow timers; the request numbers they touched."""
    with daemon.sessions.begin() as session:
        if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": TIMERS_LOCK}):
            return []
        flow = Workflow(session, daemon.config, daemon.clock.now())
        closed = close_quiet_requests(flow)
    if closed:
        log.info("closed after the quiet period: %s", ", ".join(closed))
        daemon.wake()
    return closed


# ---------------------------------------------------------------- the SLA clock (issue 18)

@dataclass(frozen=True)
class SlaRun:
    """What one pass of the SLA clock did: the ladder steps taken and the digests sent
    (None: no digest slot was due, or another pass had taken care of it)."""

    steps: list[Taken]
    digests: int | None


def run_sla(daemon: "Daemon") -> SlaRun:
    """One pass of the SLA clock at ``daemon.clock.now()``: every ladder step due and the digest
    slot, in one transaction under an advisory lock (one daemon at a time does it)."""
    now = daemon.clock.now()
    config = daemon.config
    with daemon.sessions.begin() as session:
        if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SLA_LOCK}):
            return SlaRun([], None)
        flow = Workflow(session, config, now)
        steps = take_steps(flow, Deadlines(session, config.sla, flow.calendar, now).due_steps())
        slot = digest_slot(config, flow.calendar, now)
        digests = send_digests(session, config, flow.calendar, now, slot) if slot else None
    for step in steps:
        log.info("SLA %s %s %s: told %s", step.number, step.clock, step.step,
                 ", ".join(step.to) or "nobody")
    if digests:
        log.info("SLA digests sent: %d", digests)
    if steps or digests:
        daemon.wake()
    return SlaRun(steps, digests)
