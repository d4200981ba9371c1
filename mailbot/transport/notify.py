"""PostgreSQL LISTEN/NOTIFY: other processes wake the daemon at once.

``mailbot ingest`` (an MTA pipe) and the CLI commands that queue mail write
rows from their own processes; their transaction sends a notification with
the commit, and the daemon's listener wakes the processor or the sender
instead of leaving the work to the next 5-second sweep.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ..register.db import CONNECT_TIMEOUT, engine_conninfo
from ..supervision import Backoff, DatabaseHealth, Retry

log = logging.getLogger(__name__)

INBOUND = "mailbot_inbound"  # new rows in inbound
OUTBOX = "mailbot_outbox"  # new rows in outbox


def notify(session: Session, channel: str) -> None:
    """Tell listening daemons, when this transaction commits, that ``channel`` has work."""
    session.execute(text(f"NOTIFY {channel}"))


class Listener:
    """A thread that LISTENs and calls ``on_notify(channel)``; reconnects with backoff.

    While it is down the 5-second sweep covers for it; a lost connection is a
    database outage, reported to ``health`` (logged once for all workers).
    """

    def __init__(self, engine: Engine, on_notify: Callable[[str], None],
                 stop: threading.Event, health: DatabaseHealth) -> None:
        self.conninfo = engine_conninfo(engine)
        self.on_notify = on_notify
        self.stop = stop
        self.health = health
        self.retry = Retry("LISTEN connection", self.health, Backoff(1.0, 5.0))

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                    for channel in (INBOUND, OUTBOX):
                        conn.execute(f"LISTEN {channel}")
                    self.health.restored()
                    self.retry.succeeded()
                    while not self.stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.on_notify(note.channel)
            except Exception as exc:
                if self.stop.is_set():
                    return
                self.stop.wait(self.retry.failed(exc))
