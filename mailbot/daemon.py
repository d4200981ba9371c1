"""The daemon: IMAP watchers feed ``inbound``; the processor and the sender follow.

Threads do the blocking work (imapclient, SQLAlchemy); one asyncio loop wakes
the processor as soon as a watcher has committed mail and the sender as soon
as the processor has written outbox rows. A scheduler sweep catches anything
stored by other processes (``mailbot ingest``) and outbox retries.

Every worker retries on its own after any error (:mod:`.supervision`); the
watchdog starts again a worker that dies, and gives up (``GiveUp``, the
process exits non-zero) when one keeps dying. The board and the monitoring
endpoints (``sites``, :mod:`.web.serve`), when enabled, are workers too,
served on the same loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from .clock import Clock
from .config import Config
from .leases import CLOCK, Leases
from .parsing import ParsingStopped
from .processor import BatchResult, Processor
from .supervision import DatabaseHealth, Retry, Watchdog
from .transport.imap import FolderSync, ImapWatcher, connect
from .transport.notify import INBOUND, Listener
from .transport.smtp import SmtpSender
from .workflow.actions import Workflow
from .workflow.reports import apply_refusal
from .workflow.undeliverable import delivered

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from .web.serve import Site

log = logging.getLogger(__name__)

STOP_GRACE = 2.0  # seconds the processor and the sender have to finish what they are doing on stop
WORKERS_JOIN = 2.0  # seconds, all together, for the worker threads to leave (a FETCH is not waited for)


class Daemon:
    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.processor = Processor(config, sessions, clock, on_committed=self._committed)
        self.sender = SmtpSender(config.smtp, sessions, clock, on_refused=self._refused,
                                 on_delivered=self._delivered, oauth2=config.oauth2)
        self.health = DatabaseHealth()
        self.watchers: list[ImapWatcher] = []
        self.leases: Leases | None = None  # the folders' and the clock's, while it runs
        self.sites: Sequence[Site] = ()  # bound web sites to serve (mailbot.web.serve.sites)
        self.stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbound = asyncio.Event()
        self._outbound = asyncio.Event()
        self._stopped = asyncio.Event()
        self._watchdog: Watchdog | None = None

    def folder_syncs(self) -> list[FolderSync]:
        """A sync per folder of every mailbox: the support address's and ТП2's (``[imap.tp2]``)."""
        return [FolderSync(account, folder, self.sessions, self._stored, self.processor.expect,
                           role=role, oauth2=self.config.oauth2)
                for role, account in self.config.imap.mailboxes() for folder in account.folders]

    def _stored(self, new: dict[int, bytes]) -> None:
        """Called from a watcher thread after a commit: parse the new mail, wake the processor."""
        if not new:
            return
        self.processor.parse_ahead(new)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbound.set)

    def _committed(self, live: bool) -> None:
        """Called from the processor's thread after a batch that queued mail: the sender goes
        now; after live mail, the sender's batch under way yields to it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_sender, live)

    def _wake_sender(self, live: bool) -> None:
        if live:
            self.sender.hurry()
        self._outbound.set()

    async def run_once(self) -> BatchResult:
        """Everything pending: fetch every folder while processing what is stored, then send.

        The calendar and the templates' environment are made while the first mail is fetched
        (:meth:`Processor.warm_up`, in a thread of its own that the run does not wait for when
        no mail needs them).
        """
        threading.Thread(target=self.processor.warm_up, args=(False,), name="warm-up",
                         daemon=True).start()
        self._loop = asyncio.get_running_loop()
        fetch = asyncio.gather(*(asyncio.to_thread(self._sync_folder, s) for s in self.folder_syncs()))
        total = BatchResult()
        try:
            while not await self._wait_for_mail(fetch):
                total += await asyncio.to_thread(self.processor.run_pending)
            await fetch
            total += await asyncio.to_thread(self.processor.run_pending)
        finally:
            await asyncio.to_thread(self.processor.close)
        try:
            await self.sender.send_due()
        finally:
            self.sender.close()
        return total

    def _refused(self, session: Session, outbox_id: int, refused: dict[str, str]) -> None:
        """The sender's hook: recipients of a mail were refused for good (its transaction)."""
        apply_refusal(Workflow(session, self.config, self.clock.now()), outbox_id, refused)

    def _delivered(self, session: Session, outbox_id: int, addresses: list[str]) -> None:
        """The sender's hook: mail to addresses marked undeliverable was accepted (a new
        transaction): the marks go (issue 16 §5)."""
        delivered(Workflow(session, self.config, self.clock.now()), outbox_id, addresses)

    def _sync_folder(self, sync: FolderSync) -> int:
        client = connect(sync.config, sync.oauth2)
        try:
            return sync.sync(client)
        finally:
            client.logout()

    async def run_forever(self) -> None:
        """Run the workers until :meth:`stop`; raises ``GiveUp`` when one keeps dying."""
        from .scheduler import make_scheduler  # APScheduler: not for a single run (run --once)

        self._loop = asyncio.get_running_loop()
        self.processor.warm_up()
        engine = self.sessions.kw["bind"]
        event.listen(engine, "connect", self._connected)
        scheduler = make_scheduler(self)
        watchdog = self._supervise(scheduler)
        scheduler.start()
        self._watchdog = watchdog
        self.wake()
        try:
            await watchdog.run()
        finally:
            self.stop()
            scheduler.shutdown(wait=False)
            await watchdog.join(WORKERS_JOIN)
            event.remove(engine, "connect", self._connected)
            self.processor.close()
            self.sender.close()

    def _supervise(self, scheduler: AsyncIOScheduler) -> Watchdog:
        watchdog = Watchdog(self.stopping)
        syncs = self.folder_syncs()
        self.leases = Leases(self.sessions.kw["bind"], [CLOCK, *(s.name for s in syncs)],
                             self.stopping, self.health, partial(_lease_taken, scheduler),
                             label=f"mailbot run {os.getpid()}")
        watchdog.thread("leases", self.leases.run)
        self.watchers = [ImapWatcher(sync, self.stopping, self.health,
                                     partial(self.leases.holds, sync.name)) for sync in syncs]
        for watcher in self.watchers:
            watchdog.thread(f"imap:{watcher.sync.role}:{watcher.sync.folder}", watcher.run)
        listener = Listener(self.sessions.kw["bind"], self._notified, self.stopping, self.health)
        watchdog.thread("listen", listener.run)
        watchdog.task("processor", self._process_loop)
        watchdog.task("sender", self._send_loop)
        for site in self.sites:
            watchdog.task(site.name, site.serve)
        return watchdog

    def leader(self) -> bool:
        """Whether this daemon runs the clock jobs (it holds the clock's lease)."""
        return self.leases is not None and self.leases.holds(CLOCK)

    def _connected(self, _dbapi_connection, _record) -> None:
        """A new database connection succeeded: if the database was down, it is back."""
        self.health.restored()

    def _notified(self, channel: str) -> None:
        """Another process stored mail or queued outgoing mail (called from the listener)."""
        if self._loop is not None:
            event = self._inbound if channel == INBOUND else self._outbound
            self._loop.call_soon_threadsafe(event.set)

    def wake(self) -> None:
        """Make the processor and the sender look for work now (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbound.set)
            self._loop.call_soon_threadsafe(self._outbound.set)

    def stop(self) -> None:
        """Stop within seconds, whatever is under way (thread-safe; on a signal, or on giving up).

        A parse under way is abandoned (its batch rolls back, its mail stays pending); the
        processor and the sender get STOP_GRACE seconds to finish their step, then are
        cancelled (a mail being sent stays claimed by this daemon: the next one takes it over
        at once and sends it).
        """
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.processor.stop_parsing()
        for site in self.sites:
            site.stop()
        self.wake()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._loop.call_soon_threadsafe(self._loop.call_later, STOP_GRACE, self._cancel_work)

    def _cancel_work(self) -> None:
        """Cancel the processor's and the sender's loops, and again each second: a cancelled send
        may wait in its cleanup (QUIT to a server that no longer answers)."""
        if self._watchdog is not None and self._watchdog.cancel_tasks():
            self._loop.call_later(1.0, self._cancel_work)

    async def _process_loop(self) -> None:
        retry = Retry("processor", self.health)
        while not self.stopping.is_set():
            await self._wait(self._inbound)
            try:
                await asyncio.to_thread(self.processor.run_pending)
            except Exception as error:
                if isinstance(error, ParsingStopped) and self.stopping.is_set():
                    break  # the batch was rolled back, its mail stays pending
                await self._pause(retry.failed(error))
                self._inbound.set()
                continue
            retry.succeeded()

    async def _send_loop(self) -> None:
        retry = Retry("sender", self.health)
        while not self.stopping.is_set():
            await self._wait(self._outbound, self.sender.wait_time())
            try:
                await self.sender.send_due()
            except Exception as error:
                await self._pause(retry.failed(error))
                self._outbound.set()
                continue
            retry.succeeded()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before a retry, or less when the daemon is asked to stop."""
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _wait_for_mail(self, fetch: asyncio.Future) -> bool:
        """Until mail is stored or the fetch is over (:meth:`run_once`); whether it is over
        (what it stored last is left to the caller's last batch)."""
        stored = asyncio.ensure_future(self._inbound.wait())
        await asyncio.wait({stored, fetch}, return_when=asyncio.FIRST_COMPLETED)
        stored.cancel()
        self._inbound.clear()
        return fetch.done()

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        event.clear()


def _lease_taken(scheduler: AsyncIOScheduler, name: str) -> None:
    """A new leader runs the clock jobs now, not at the next minute (called by the lease worker)."""
    from .scheduler import clock_jobs

    if name == CLOCK:
        for job in clock_jobs(scheduler):
            job.modify(next_run_time=datetime.now(timezone.utc))
