"""Leases: what only one of several daemons on a database may do at a time.

Watching an IMAP folder and running the clock jobs are leased: a lease is a
session-level advisory lock ``(LEASE_SPACE, key of its name)`` held on one
connection of the daemon's own (:class:`Leases`, a worker thread). A daemon that
dies, even by ``kill -9``, closes that connection and PostgreSQL drops its locks at
once; the others try the free leases every ``HEARTBEAT`` seconds, so one of them
takes a dead daemon's folders over within a second or two. A connection that is
half open (the daemon's host froze, the network broke) is found dead by TCP
keepalives on both ends within about 11 seconds: the server then drops the locks,
and the daemon, whose heartbeat fails, stops what it held.

Every daemon also holds a shared lock ``(LEASE_SPACE, 0)``: the number of its
holders is the number of live daemons, and a daemon takes a free lease at once only
while it holds fewer than its share of them (the others after ``SPARE_BEATS``
heartbeats), so that the folders spread over the daemons.

Two daemons watching one folder for a moment (a partition's overlap) store nothing
twice: ``inbound`` is unique on the Message-ID (:mod:`.transport.store`).
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterable

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine

from .register.db import engine_conninfo
from .supervision import Backoff, DatabaseHealth, Retry

log = logging.getLogger(__name__)

LEASE_SPACE = 7203  # first key of the leases' two-key advisory locks; (LEASE_SPACE, 0) counts daemons
CLOCK = "clock"  # the lease of the clock jobs (workflow timers, SLA clock, digests)
HEARTBEAT = 1.0  # seconds between two looks at the leases
SPARE_BEATS = 3  # heartbeats a free lease waits for a daemon below its share before anyone takes it
# the server probes an idle lease connection after 5 s, then every 2 s, 3 times; the client
# gives up on a heartbeat that is not acknowledged within 10 s
_SERVER_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
_CLIENT_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                      "keepalives_count": 3, "tcp_user_timeout": 10_000, "connect_timeout": 10}


def lease_key(name: str) -> int:
    """The lock key of a lease (stable across processes and versions; never 0)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % (2**31 - 1) + 1


class Leases:
    """The leases this daemon wants, and which of them it holds (thread-safe reads).

    :meth:`run` is the worker: it keeps the connection, takes free leases and checks
    every heartbeat that the connection (and so every lock on it) is alive.
    ``on_taken(name)`` is called (from the worker) when a lease is taken.
    """

    def __init__(self, engine: Engine, names: Iterable[str], stop: threading.Event,
                 health: DatabaseHealth, on_taken: Callable[[str], None] = lambda name: None,
                 label: str = "mailbot") -> None:
        self.conninfo = _lease_conninfo(
            engine_conninfo(engine), label)
        self.names = list(dict.fromkeys(names))
        self.stop = stop
        self.on_taken = on_taken
        self.retry = Retry("lease connection", health, Backoff(1.0, 5.0))
        self._held: set[str] = set()
        self._free_beats: dict[str, int] = {}
        self._mutex = threading.Lock()

    def holds(self, name: str) -> bool:
        with self._mutex:
            return name in self._held

    def held(self) -> list[str]:
        with self._mutex:
            return [name for name in self.names if name in self._held]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute("SELECT pg_advisory_lock_shared(%s, 0)", (LEASE_SPACE,))
                    self.retry.succeeded()
                    while not self.stop.is_set():
                        self.beat(conn)
                        self.stop.wait(HEARTBEAT)
            except Exception as exc:
                self._lose_all(exc)
                if self.stop.is_set():
                    return
                self.stop.wait(self.retry.failed(exc))
            else:
                self._lose_all(None)  # closing the connection let every lock go

    def beat(self, conn: psycopg.Connection) -> None:
        """One heartbeat: the connection answers (our locks live), and free leases are tried."""
        members = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND classid = %s AND objid = 0 AND objsubid = 2 AND granted "
                               "AND database = (SELECT oid FROM pg_database "
                               "WHERE datname = current_database())", (LEASE_SPACE,)).fetchone()[0]
        share = math.ceil(len(self.names) / max(members, 1))
        for name in self.names:
            if self.holds(name):
                continue
            beats = self._free_beats.get(name, 0)
            if len(self.held()) >= share and beats < SPARE_BEATS:
                self._free_beats[name] = beats + 1  # a daemon below its share may take it first
                continue
            if conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                            (LEASE_SPACE, lease_key(name))).fetchone()[0]:
                with self._mutex:
                    self._held.add(name)
                self._free_beats.pop(name, None)
                log.info("lease taken: %s", name)
                self.on_taken(name)
            else:
                self._free_beats.pop(name, None)  # another daemon holds it

    def _lose_all(self, error: BaseException | None) -> None:
        with self._mutex:
            lost, self._held = sorted(self._held), set()
        self._free_beats.clear()
        if lost and not self.stop.is_set():
            log.warning("leases lost with their connection (%s): %s",
                        type(error).__name__ if error else "closed", ", ".join(lost))


def _lease_conninfo(url: str, label: str) -> str:
    """The database URL with keepalives on both ends and a name in ``pg_stat_activity``."""
    options = conninfo_to_dict(url).get("options") or ""
    return make_conninfo(url, **_CLIENT_KEEPALIVES, application_name=f"{label} leases",
                         options=f"{options} {_SERVER_KEEPALIVES}".strip())
