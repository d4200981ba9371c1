"""Clock-driven jobs (APScheduler 3).

- ``sweep`` (5 s): wake the processor and the sender, so mail stored by
  ``mailbot ingest`` and due outbox retries are picked up;
- ``workflow-timers`` (1 min): time-based workflow steps (closing quiet ОП1
  requests; ОП2 reminders of unconfirmed files and of files asked of customers).
  With several daemons on one database only the leader runs the clock jobs (the
  daemon holding the clock's lease, :mod:`mailbot.leases`; a new leader runs them
  at once), and a transaction-level advisory lock keeps two passes apart even
  so. A failed run is reported once (a database outage to the daemon's shared
  health) and the next run is the retry;
- ``sla-clock`` (1 min): the SLA clock's ladder steps and the supervisors'
  digests (:class:`SlaClock`), under an advisory lock of its own, with the same
  retries.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from .sla.deadlines import Deadlines
from .supervision import Retry
from .workflow.actions import Workflow
from .workflow.digest import digest_slot, send_digests
from .workflow.ladder import Taken, take_steps
from .workflow.timers import close_quiet_requests, remind_unconfirmed

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

CLOCK_JOBS = ("workflow-timers", "sla-clock")
TIMERS_LOCK = 7201003
SLA_LOCK = 7201004


def make_scheduler(daemon: "Daemon") -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=daemon.config.timezone)
    scheduler.add_job(daemon.wake, "interval", seconds=5, id="sweep", coalesce=True,
                      max_instances=1)
    retry = Retry("workflow timers", daemon.health)

    def timers() -> None:
        if not daemon.leader():
            return
        try:
            run_timers(daemon)
        except Exception as error:
            retry.failed(error)
        else:
            retry.succeeded()

    scheduler.add_job(timers, "interval", minutes=1, id=CLOCK_JOBS[0], coalesce=True,
                      max_instances=1)
    sla_retry = Retry("SLA clock", daemon.health)
    clock = SlaClock(daemon)

    def sla_clock() -> None:
        if not daemon.leader():
            clock.last_pass = None  # another daemon keeps the clock: read everything when back
            return
        try:
            clock.run()
        except Exception as error:
            sla_retry.failed(error)
        else:
            sla_retry.succeeded()

    scheduler.add_job(sla_clock, "interval", minutes=1, id=CLOCK_JOBS[1], coalesce=True,
                      max_instances=1)
    return scheduler


def clock_jobs(scheduler: AsyncIOScheduler) -> list[Job]:
    """The jobs only the leader runs (the daemon holding the clock's lease, mailbot.leases)."""
    return [scheduler.get_job(job_id) for job_id in CLOCK_JOBS]


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


# ---------------------------------------------------------------- the SLA clock (issue 18)

FULL_SCAN_EVERY = timedelta(minutes=15)  # a pass reads every running clock at least this often
WINDOW_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True)
class SlaRun:
    """What one pass of the SLA clock did: the ladder steps taken and the digests sent
    (None: no digest slot was due, or another pass had taken care of it)."""

    steps: list[Taken]
    digests: int | None


class SlaClock:
    """The SLA clock's passes in one daemon (the ``sla-clock`` job), one transaction each under
    an advisory lock: one daemon at a time takes the ladder steps and the digest slot.

    A pass reads the cycles whose last step comes after its previous pass (less a margin):
    those before are done with. The first pass, one after a gap (the lock was elsewhere, the
    database was down) and one every ``FULL_SCAN_EVERY`` read every running clock, so that
    nothing is missed (a deadline moved into the past by a level change, a changed config).
    """

    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.last_pass: datetime | None = None
        self.last_full: datetime | None = None

    def run(self) -> SlaRun:
        daemon, config = self.daemon, self.daemon.config
        now = daemon.clock.now()
        since = self._since(now)
        with daemon.sessions.begin() as session:
            if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SLA_LOCK}):
                self.last_pass = None  # another daemon keeps the clock: read everything next time
                return SlaRun([], None)
            flow = Workflow(session, config, now)
            due = Deadlines(session, config.sla, flow.calendar, now).due_steps(since)
            steps = take_steps(flow, due)
            slot = digest_slot(config, flow.calendar, now)
            digests = send_digests(session, config, flow.calendar, now, slot) if slot else None
        self.last_pass = now
        if since is None:
            self.last_full = now
        for step in steps:
            log.info("SLA %s %s %s: told %s", step.number, step.clock, step.step,
                     ", ".join(step.to) or "nobody")
        if digests:
            log.info("SLA digests sent: %d", digests)
        if steps or digests:
            daemon.wake()
        return SlaRun(steps, digests)

    def _since(self, now: datetime) -> datetime | None:
        """Where this pass may start reading (None: read everything)."""
        if self.last_pass is None or self.last_full is None or now - self.last_full >= FULL_SCAN_EVERY \
                or not timedelta() <= now - self.last_pass <= FULL_SCAN_EVERY:
            return None
        return self.last_pass - WINDOW_MARGIN


def run_sla(daemon: "Daemon") -> SlaRun:
    """One full pass of the SLA clock at ``daemon.clock.now()`` (as a freshly started daemon)."""
    return SlaClock(daemon).run()
