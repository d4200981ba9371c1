"""Clock-driven jobs (APScheduler 3): sweeps now; the SLA clock and digests join here."""
from __future__ import annotations

from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

if TYPE_CHECKING:
    from .daemon import Daemon


def make_scheduler(daemon: "Daemon") -> AsyncIOScheduler:
    """Jobs of one daemon. The sweep picks up mail stored by ``mailbot ingest`` and due retries."""
    scheduler = AsyncIOScheduler(timezone=daemon.config.timezone)
    scheduler.add_job(daemon.wake, "interval", seconds=5, id="sweep", coalesce=True,
                      max_instances=1)
    return scheduler
