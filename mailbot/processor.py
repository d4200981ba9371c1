"""The intake chain for stored mail: parse → rules → workflow, or quarantine.

Pending ``inbound`` rows are claimed with ``FOR UPDATE SKIP LOCKED`` (several
daemons share the work) and processed in batches, one transaction per batch
and a savepoint per message: a message that fails at any stage is quarantined
with the stage and the error, and the rest of the batch goes on.

Parsing is CPU-bound Python and needs no database, so a batch of several
messages is parsed in worker processes (``parse_workers``) while this process
runs the rules and the workflow on the messages already parsed, in order. A
lone message (the usual case in the daemon) is parsed here: no hand-off delay.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .clock import Clock
from .config import Config
from .db import read_blob
from .lookup import Lookup
from .models import Inbound, Quarantine
from .parsers import MailTooLarge, ParsedMail, ParseOptions, parse_mail
from .rules import Context, decide
from .workflow.intake import Intake

log = logging.getLogger(__name__)

PARALLEL_MIN = 4  # smaller batches are parsed in this process
BATCH_BYTES = 64 * 1024 * 1024  # raw mail held in memory per batch (at least one message)


def default_parse_workers() -> int:
    """One parsing process per spare CPU (this process runs the workflow), at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(4, cpus - 1))


@dataclass(frozen=True)
class BatchResult:
    processed: int = 0
    quarantined: int = 0

    def __add__(self, other: "BatchResult") -> "BatchResult":
        return BatchResult(self.processed + other.processed, self.quarantined + other.quarantined)


class StageError(Exception):
    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage, self.error = stage, error


def parse_options(config: Config) -> ParseOptions:
    limits, support = config.limits, config.support
    return ParseOptions(request_prefix=support.request_prefix,
                        incident_prefix=support.incident_prefix,
                        max_attachment_bytes=limits.max_attachment_bytes,
                        max_attachments=limits.max_attachments,
                        max_message_bytes=limits.max_message_bytes,
                        own_addresses=config.own_addresses)


class Processor:
    """Processes stored mail; ``run_pending`` returns what it did."""

    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock,
                 batch: int = 100, parse_workers: int | None = None) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.batch = batch
        self.options = parse_options(config)
        self.parse_workers = default_parse_workers() if parse_workers is None else parse_workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the parsing processes (started again when needed)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def run_pending(self) -> BatchResult:
        total = BatchResult()
        while True:
            result, more = self._run_batch()
            total += result
            if not more:
                return total

    def run_batch(self) -> BatchResult:
        return self._run_batch()[0]

    def _run_batch(self) -> tuple[BatchResult, bool]:
        """One batch; also whether more may be pending (the batch was full or cut by size)."""
        processed = quarantined = 0
        with self.sessions.begin() as session:
            claimed = session.scalars(
                select(Inbound).where(Inbound.status == "pending").order_by(Inbound.id)
                .limit(self.batch).with_for_update(skip_locked=True)).all()
            rows = _within_bytes(claimed, BATCH_BYTES)
            raws = _read_raw(session, [row.id for row in rows])
            lookup = Lookup(session, self.config.timezone)  # its caches serve the whole batch
            for row, parsed in zip(rows, self._parsers([raws[row.id] for row in rows])):
                try:
                    with session.begin_nested():
                        self.process(session, row, parsed, lookup)
                    processed += 1
                except StageError as exc:
                    self.quarantine(session, row, exc.stage, exc.error)
                    quarantined += 1
        return BatchResult(processed, quarantined), len(claimed) == self.batch or len(rows) < len(claimed)

    def process(self, session: Session, row: Inbound,
                parsed: Callable[[], ParsedMail] | None = None,
                lookup: Lookup | None = None) -> None:
        """One message through the chain; raises :class:`StageError` naming the failing stage.

        ``parsed`` returns the message parsed elsewhere (see :meth:`_parsers`).
        """
        now = self.clock.now()
        try:
            mail = (parsed() if parsed is not None
                    else parse_mail(read_blob(session, Inbound.raw, row.id), self.options))
        except Exception as exc:  # the parser promises not to raise; quarantine if it does
            raise StageError("parse", exc) from exc
        lookup = lookup or Lookup(session, self.config.timezone)
        try:
            verdict = decide(mail, Context(self.config, lookup, now))
        except Exception as exc:
            raise StageError("rules", exc) from exc
        try:
            Intake(session, self.config, now, lookup).apply(row.id, mail, verdict)
            row.status, row.processed_at = "processed", now
            session.flush()
        except Exception as exc:
            raise StageError("workflow", exc) from exc
        log.info("inbound %d from %s: %s", row.id, mail.from_addr, "; ".join(verdict.reasons))

    # ------------------------------------------------------------ parsing in other processes

    def _parsers(self, raws: list[bytes]) -> list[Callable[[], ParsedMail]]:
        """For each message, a call that returns its ParsedMail; worker processes start on them now."""
        inline = [partial(parse_mail, raw, self.options) for raw in raws]
        if len(raws) < PARALLEL_MIN or self.parse_workers < 1:
            return inline
        try:
            pool = self._parse_pool()
            futures = [pool.submit(parse_mail, raw, self.options) for raw in raws]
        except (BrokenProcessPool, RuntimeError, OSError) as exc:
            self._pool_failed(exc)
            return inline
        return [partial(self._result, future, fallback) for future, fallback in zip(futures, inline)]

    def _result(self, future: Future, fallback: Callable[[], ParsedMail]) -> ParsedMail:
        try:
            return future.result()
        except BrokenProcessPool as exc:  # a worker died: parse here, start a new pool next batch
            self._pool_failed(exc)
            return fallback()

    def _parse_pool(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                # spawn, not fork: the daemon has threads (IMAP watchers, asyncio) holding locks
                self._pool = ProcessPoolExecutor(self.parse_workers,
                                                 mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def _pool_failed(self, exc: BaseException) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            log.warning("parsing processes failed (%s); parsing in the daemon process", exc)
            pool.shutdown(wait=False, cancel_futures=True)

    def quarantine(self, session: Session, row: Inbound, stage: str, error: BaseException) -> None:
        """Keep the raw message with the reason; an operator can retry it later."""
        reason = _describe(error)
        log.warning("inbound %d quarantined at %s: %s", row.id, stage, reason)
        row.status, row.processed_at = "quarantined", self.clock.now()
        existing = session.scalar(select(Quarantine).where(Quarantine.inbound_id == row.id))
        if existing is None:
            session.add(Quarantine(inbound_id=row.id, stage=stage, error=reason))
        else:
            existing.stage, existing.error = stage, reason
            existing.resolved_at = existing.resolution = None
        session.flush()


def _within_bytes(rows: list[Inbound], budget: int) -> list[Inbound]:
    """The first rows whose raw sizes add up to at most ``budget`` (always at least one)."""
    total = 0
    for count, row in enumerate(rows):
        total += row.size
        if total > budget and count:
            return rows[:count]
    return rows


def _read_raw(session: Session, ids: list[int]) -> dict[int, bytes]:
    """The raw bytes of these inbound rows in one query, received in binary (not as hex text)."""
    if not ids:
        return {}
    with session.connection().connection.dbapi_connection.cursor(binary=True) as cursor:
        cursor.execute("SELECT id, raw FROM inbound WHERE id = ANY(%s)", (ids,))
        return dict(cursor.fetchall())


def _describe(error: BaseException) -> str:
    if isinstance(error, MailTooLarge):
        return f"too large: {error}"
    tail = traceback.format_exception_only(type(error), error)[-1].strip()
    return tail[:2000]
