"""The daemon: IMAP watchers feed ``inbound``; the processor and the sender follow.

Threads do the blocking work (imapclient, SQLAlchemy); one asyncio loop wakes
the processor as soon as a watcher has committed mail and the sender as soon
as the processor has written outbox rows. A scheduler sweep catches anything
stored by other processes (``mailbot ingest``) and outbox retries.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from .clock import Clock
from .config import Config
from .parsing import ParsingStopped
from .processor import BatchResult, Processor
from .scheduler import make_scheduler
from .transport.imap import FolderSync, ImapWatcher, connect
from .transport.notify import INBOUND, Listener
from .transport.smtp import SmtpSender

log = logging.getLogger(__name__)

STOP_GRACE = 2.0  # seconds the processor and the sender have to finish what they are doing on stop
WATCHERS_JOIN = 2.0  # seconds, all together, for the IMAP watchers to leave (a FETCH is not waited for)


class Daemon:
    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.processor = Processor(config, sessions, clock)
        self.sender = SmtpSender(config.smtp, sessions, clock)
        self.stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbound = asyncio.Event()
        self._outbound = asyncio.Event()
        self._work: asyncio.Future | None = None  # the processor's and the sender's loops

    def folder_syncs(self) -> list[FolderSync]:
        return [FolderSync(self.config.imap, folder, self.sessions, self._stored,
                           self.processor.expect)
                for folder in self.config.imap.folders]

    def _stored(self, new: dict[int, bytes]) -> None:
        """Called from a watcher thread after a commit: parse the new mail, wake the processor."""
        if not new:
            return
        self.processor.parse_ahead(new)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbound.set)

    async def run_once(self) -> BatchResult:
        """Everything pending: fetch every folder while processing what is stored, then send."""
        self._loop = asyncio.get_running_loop()
        self.processor.warm_up(workers=False)
        fetch = asyncio.gather(*(asyncio.to_thread(self._sync_folder, s) for s in self.folder_syncs()))
        total = BatchResult()
        try:
            while not fetch.done():
                await self._wait(self._inbound, 0.2)
                total += await asyncio.to_thread(self.processor.run_pending)
            await fetch
            total += await asyncio.to_thread(self.processor.run_pending)
        finally:
            await asyncio.to_thread(self.processor.close)
        await self.sender.send_due()
        return total

    def _sync_folder(self, sync: FolderSync) -> int:
        client = connect(self.config.imap)
        try:
            return sync.sync(client)
        finally:
            client.logout()

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.processor.warm_up(workers=True)
        watchers = [threading.Thread(target=ImapWatcher(s, self.stopping).run, daemon=True,
                                     name=f"imap:{s.folder}") for s in self.folder_syncs()]
        listener = Listener(self.sessions.kw["bind"], self._notified, self.stopping)
        watchers.append(threading.Thread(target=listener.run, daemon=True, name="listen"))
        for thread in watchers:
            thread.start()
        scheduler = make_scheduler(self)
        scheduler.start()
        self._inbound.set()
        self._outbound.set()
        self._work = asyncio.gather(self._process_loop(), self._send_loop())
        try:
            await self._work
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
        finally:
            self.stopping.set()
            scheduler.shutdown(wait=False)
            deadline = time.monotonic() + WATCHERS_JOIN
            for thread in watchers:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self.processor.close()

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
        """Stop within seconds, whatever is under way (called in the event loop, on a signal).

        A parse under way is abandoned (its batch rolls back, its mail stays pending); the
        processor and the sender get STOP_GRACE seconds to finish their step, then are
        cancelled (an outbox row being sent is leased: it is sent again later).
        """
        self.stopping.set()
        self.processor.stop_parsing()
        self.wake()
        if self._loop is not None:
            self._loop.call_later(STOP_GRACE, self._cancel_work)

    def _cancel_work(self) -> None:
        """Cancel the loops, and again each second: a cancelled send may wait in its cleanup
        (QUIT to a server that no longer answers)."""
        if self._work is not None and not self._work.done():
            self._work.cancel()
            self._loop.call_later(1.0, self._cancel_work)

    async def _process_loop(self) -> None:
        while not self.stopping.is_set():
            await self._wait(self._inbound)
            try:
                result = await asyncio.to_thread(self.processor.run_pending)
            except Exception as exc:
                if isinstance(exc, ParsingStopped) and self.stopping.is_set():
                    break  # the batch was rolled back, its mail stays pending
                log.exception("processing failed; retrying shortly")
                await asyncio.sleep(1.0)
                continue
            if result.processed:
                self._outbound.set()

    async def _send_loop(self) -> None:
        while not self.stopping.is_set():
            await self._wait(self._outbound)
            try:
                await self.sender.send_due()
            except Exception:
                log.exception("sending failed; retrying shortly")
                await asyncio.sleep(1.0)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        event.clear()
