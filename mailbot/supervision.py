"""Keeping the daemon's workers alive: retries with backoff, one log line per outage, a watchdog.

Every worker (an IMAP watcher, the LISTEN listener, the processor, the sender,
the timers) catches its own exceptions, reports them to its :class:`Retry`
and tries again after a capped exponential backoff. An outage of the database
is shared by all of them: :class:`DatabaseHealth` logs one WARNING when it
goes and one INFO when it is back, whichever worker notices. A worker that
dies anyway is started again by the :class:`Watchdog`; one that keeps dying
makes the daemon give up (:class:`GiveUp`), and ``mailbot run`` then exits
with EX_TEMPFAIL so that systemd starts a fresh process.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

# A worker that dies this often within the window is broken beyond a retry: a fresh
# process (new connections, new parsing workers, systemd's RestartSec=10) is the next step.
MAX_DEATHS = 5
DEATH_WINDOW = 60.0  # seconds
WATCH_INTERVAL = 0.5  # seconds between the watchdog's looks at its workers


INVALIDATED = "8s2b"  # SQLAlchemy's code for "Can't reconnect until invalid transaction is rolled back"


def database_outage(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, says the
    database cannot be reached (rather than a bug or bad data)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError,
                              psycopg.OperationalError, psycopg.InterfaceError)):
            return True
        if isinstance(error, sa_exc.PendingRollbackError) and error.code == INVALIDATED:
            return True  # a statement after the connection was lost, in the same transaction
        error = error.__cause__ or error.__context__
    return False


class PoolResetNoise(logging.Filter):
    """Drops SQLAlchemy's traceback for a connection it could not roll back on its way back to
    the pool because the database is gone: the outage itself is logged once (one line per
    outage), and the pool drops that connection anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.name.startswith("sqlalchemy.pool") and database_outage(error))


def lock_conflict(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, is PostgreSQL
    undoing a transaction that met another one (a deadlock, a serialization failure):
    neither an outage nor the data's fault; the transaction may simply run again."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(getattr(error, "orig", error), psycopg.errors.TransactionRollback):
            return True
        error = error.__cause__ or error.__context__
    return False


def one_line(error: BaseException) -> str:
    """The first line of an error's message (SQLAlchemy's carry the SQL and a link after it)."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


class DatabaseHealth:
    """Whether the database is reachable, shared by every worker of a daemon (thread-safe).

    :meth:`lost` is called with the error a worker got, :meth:`restored` when a
    connection succeeds again; each change is logged once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.down_since: float | None = None

    def lost(self, error: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = self._clock()
        log.warning("database unavailable: %s; the workers retry every few seconds",
                    one_line(error))

    def restored(self) -> None:
        if self.down_since is None:  # the usual case: no lock taken
            return
        with self._lock:
            if self.down_since is None:
                return
            down, self.down_since = self._clock() - self.down_since, None
        log.info("database available again (after %.0f s)", down)


class Backoff:
    """Capped exponential delays: ``first``, twice that, … up to ``cap`` seconds."""

    def __init__(self, first: float = 0.5, cap: float = 5.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Retry:
    """One worker's failures: each logged once, then a delay before it tries again.

    A database outage goes to the shared :class:`DatabaseHealth` (no traceback);
    any other error is logged with its traceback the first time and at DEBUG
    while it repeats. :meth:`succeeded` resets the backoff.
    """

    def __init__(self, name: str, health: DatabaseHealth, backoff: Backoff | None = None) -> None:
        self.name = name
        self.health = health
        self.backoff = backoff or Backoff()
        self._last: str | None = None

    def failed(self, error: BaseException) -> float:
        """Report ``error``; the seconds to wait before trying again."""
        delay = self.backoff.next()
        if database_outage(error):
            self.health.lost(error)
            self._last = None
        elif repr(error) != self._last:
            self._last = repr(error)
            log.error("%s failed, retrying in %.1f s: %s", self.name, delay, one_line(error),
                      exc_info=error)
        else:
            log.debug("%s failed again, retrying in %.1f s: %s", self.name, delay, one_line(error))
        return delay

    def succeeded(self) -> None:
        self.backoff.reset()
        self._last = None


class GiveUp(Exception):
    """The daemon cannot go on (a worker keeps dying); the message says which and why."""


@dataclass
class _Worker:
    name: str
    start: Callable[[], Any]  # returns a started Thread or Task
    running: Any = None
    error: str = "it returned"  # why it stopped last
    deaths: deque[float] = field(default_factory=deque)


class Watchdog:
    """Runs the daemon's workers, threads and asyncio tasks, and starts again one that dies.

    :meth:`run` returns when ``stopping`` is set, and raises :class:`GiveUp`
    when a worker died :data:`MAX_DEATHS` times within :data:`DEATH_WINDOW`.
    """

    def __init__(self, stopping: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self.stopping = stopping
        self.clock = clock
        self.workers: list[_Worker] = []

    def thread(self, name: str, target: Callable[[], None]) -> None:
        def main() -> None:
            try:
                target()
            except BaseException as error:  # logged here; the watchdog starts it again
                self._died(worker, error)

        def start() -> threading.Thread:
            thread = threading.Thread(target=main, daemon=True, name=name)
            thread.start()
            return thread

        worker = _Worker(name, start)
        self.workers.append(worker)

    def task(self, name: str, coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            try:
                await coroutine()
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # logged here; the watchdog starts it again
                self._died(worker, error)

        worker = _Worker(name, lambda: asyncio.create_task(main(), name=name))
        self.workers.append(worker)

    def _died(self, worker: _Worker, error: BaseException) -> None:
        worker.error = one_line(error)
        log.error("worker %s died: %s", worker.name, worker.error, exc_info=error)

    async def run(self) -> None:
        for worker in self.workers:
            worker.running = worker.start()
        while not self.stopping.is_set():
            await asyncio.sleep(WATCH_INTERVAL)
            for worker in self.workers:
                if not self.stopping.is_set() and _dead(worker.running):
                    self._restart(worker)

    def _restart(self, worker: _Worker) -> None:
        now = self.clock()
        worker.deaths.append(now)
        while worker.deaths[0] < now - DEATH_WINDOW:
            worker.deaths.popleft()
        if len(worker.deaths) >= MAX_DEATHS:
            raise GiveUp(f"worker {worker.name} died {len(worker.deaths)} times within "
                         f"{DEATH_WINDOW:.0f} s, last: {worker.error}")
        log.warning("worker %s stopped (%s); starting it again", worker.name, worker.error)
        worker.error = "it returned"
        worker.running = worker.start()

    def cancel_tasks(self) -> bool:
        """Cancel the asyncio workers still running; whether there were any."""
        running = [w.running for w in self.workers
                   if isinstance(w.running, asyncio.Task) and not w.running.done()]
        for task in running:
            task.cancel()
        return bool(running)

    async def join(self, timeout: float = 2.0) -> None:
        """Wait for the workers to finish after a stop: the tasks (cancelled if need be, see
        :meth:`cancel_tasks`), then the threads for at most ``timeout`` seconds in all."""
        tasks = [w.running for w in self.workers if isinstance(w.running, asyncio.Task)]
        await asyncio.gather(*tasks, return_exceptions=True)
        deadline = self.clock() + timeout
        for worker in self.workers:
            if isinstance(worker.running, threading.Thread):
                await asyncio.to_thread(worker.running.join, max(0.0, deadline - self.clock()))


def _dead(running: Any) -> bool:
    if isinstance(running, asyncio.Task):
        return running.done()
    return not running.is_alive()
