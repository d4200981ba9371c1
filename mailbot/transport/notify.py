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

log = logging.getLogger(__name__)

INBOUND = "mailbot_inbound"  # new rows in inbound
OUTBOX = "mailbot_outbox"  # new rows in outbox


def notify(session: Session, channel: str) -> None:
    """Tell listening daemons, when this transaction commits, that ``channel`` has work."""
    session.execute(text(f"NOTIFY {channel}"))


class Listener:
    """A thread that LISTENs and calls ``on_notify(channel)``; reconnects with backoff."""

    def __init__(self, engine: Engine, on_notify: Callable[[str], None],
                 stop: threading.Event) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_notify = on_notify
        self.stop = stop

    def run(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    for channel in (INBOUND, OUTBOX):
                        conn.execute(f"LISTEN {channel}")
                    delay = 1.0
                    while not self.stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.on_notify(note.channel)
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); the 5 s sweep covers it meanwhile", exc)
                self.stop.wait(delay)
                delay = min(delay * 2, 60.0)
