"""The intake chain for stored mail: parse → rules → workflow, or quarantine.

Pending ``inbound`` rows are claimed with ``FOR UPDATE SKIP LOCKED`` (several
daemons share the work) and processed in batches, one transaction per batch.
A batch is first written optimistically, in one flush at its end (the reads of
:mod:`mailbot.register.lookup` see what earlier messages of the batch created). If that
attempt fails (a message fails in the workflow, or the flush does), it is
rolled back and the batch runs again with a savepoint per message: the failing
message is quarantined with the stage and the error, and the rest of the batch
goes on.

Mail is parsed in worker processes (:mod:`mailbot.parsing`), as soon as
the watcher has stored it when it runs in the daemon, each parse under the
deadline ``limits.parse_timeout``: a message whose parse passes it is
quarantined at the stage "parse" and the rest of its batch goes on; the files
it carries stay in the raw mail (:mod:`mailbot.register.files`). When the daemon stops
mid-batch (the parsing processes stopped), the batch is rolled back and its
mail stays pending. A batch waits for its mail to be
parsed, reads what the whole batch will ask of the register
(:meth:`Lookup.prepare`), then runs the rules and the workflow message by
message, in order.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from . import metrics
from .clock import Clock
from .config import Config
from .outbox import Queue
from .parsers import MailTooLarge, ParsedMail, ParseOptions
from .parsing import ParseAborted, ParsePool, ParsingStopped, stop_reading
from .register.db import binary_cursor
from .register.lookup import Lookup
from .register.models import Inbound, Quarantine
from .render import environment, load_templates
from .rules import Context, decide, searched_problems
from .sla.calendar import make_calendar
from .supervision import database_outage, lock_conflict, one_line
from .transport.claims import claim_inbound
from .workflow.intake import Intake
from .workflow.states import Journal

log = logging.getLogger(__name__)

BATCH_BYTES = 64 * 1024 * 1024  # raw mail held in memory per batch (at least one message)
READ_SLICE = 2 * 1024 * 1024  # a raw mail bigger than this is read in slices of this size
READ_AHEAD_BATCHES = 2  # batches parsed ahead of the one in the workflow (within AHEAD_BYTES)
WAIT_FOR_OTHERS = 0.1  # seconds: a batch whose mail all waits for another daemon's batch
FRESH_MAILS = 10  # a commit of at most this many new mails is live mail: it goes before a backlog
FRESH_HEAD_START = timedelta(minutes=1)  # its outgoing mail is due this much earlier (claims order)


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
                 batch: int = 100, parse_workers: int | None = None,
                 on_committed: Callable[[bool], None] | None = None) -> None:
        self.config = config
        self.on_committed = on_committed  # called after a batch that processed mail, with ``live``
        self.sessions = sessions
        self.clock = clock
        self.batch = batch
        self.options = parse_options(config)
        self.parsing = ParsePool(self.options, parse_workers, config.limits.parse_timeout)
        self._quarantined: list[str] = []  # the stages of the batch's quarantined messages
        self._fresh: set[int] = set()  # live mail stored since the last batch (inbound ids)
        self._fresh_lock = threading.Lock()

    def warm_up(self, everything: bool = True) -> None:
        """Build the calendar and the templates' environment; ``everything``: also start the
        parsing processes and compile every template.

        The daemon does it all at start, so that its first mail does not wait. A single run
        (:meth:`Daemon.run_once`) builds only the first two, while its first mail is fetched:
        it compiles the templates it uses when it first uses them, and starts the parsing
        processes once a folder has mail for them.
        """
        make_calendar(self.config.sla, self.config.timezone).is_working_time(self.clock.now())
        environment()
        if everything:
            self.parsing.start()
            load_templates()

    def expect(self, count: int) -> None:
        """``count`` new messages are about to be fetched: enough of them start the parsing
        processes now, so that they are up when the mail is stored (thread-safe)."""
        self.parsing.expect(count)

    def close(self) -> None:
        """Stop the parsing processes (started again when needed)."""
        self.parsing.close()

    def stop_parsing(self) -> None:
        """Stop the parsing processes for good, at once, from any thread: parses under way and
        any later one fail with ParsingStopped (the daemon is stopping); the one that reads
        files back for the sender too."""
        self.parsing.stop()
        stop_reading()

    def parse_ahead(self, stored: dict[int, bytes]) -> None:
        """Mail just stored (by ``inbound`` id) starts parsing now; its batch takes the result.

        A commit of a few mails is live mail (a backlog is fetched in bigger ones): it is
        parsed and processed in a batch of its own before the rest of a backlog (:meth:`_claim`).
        """
        live = 0 < len(stored) <= FRESH_MAILS
        if live:
            with self._fresh_lock:
                self._fresh.update(stored)
        self.parsing.ahead(stored, first=live)  # live mail is parsed before a backlog's

    def run_pending(self) -> BatchResult:
        total = BatchResult()
        while True:
            try:
                result, more = self._run_batch()
            except Exception as exc:
                if not lock_conflict(exc):
                    raise
                # a deadlock with another daemon's batch: rolled back whole, its mail pending
                log.info("batch rolled back after a conflict with another transaction, again: %s",
                         one_line(exc))
                result, more = BatchResult(), True
            total += result
            if not more:
                return total

    def run_batch(self) -> BatchResult:
        return self._run_batch()[0]

    def _run_batch(self) -> tuple[BatchResult, bool]:
        """One batch; also whether more may be pending (the batch was full or cut by size)."""
        started = time.perf_counter()
        with self.sessions.begin() as session:
            claimed, waiting, live = self._claim(session)
            rows = _within_bytes(claimed, BATCH_BYTES)
            parsed = [_Once(call) for call in self._parsers(session, [row.id for row in rows], live)]
            if rows and not live:
                self._read_ahead(session, after=rows[-1].id)
            lookup = Lookup(session, self.config.timezone)  # its caches serve the whole batch
            # the batch's outgoing mail and audit events, written after each flush
            after_flush = _AfterFlush(Queue(session, FRESH_HEAD_START if live else timedelta()),
                                      Journal(session))
            try:
                mails = [mail for mail in map(_Once.result, parsed) if mail]
                lookup.prepare(mails, self.clock.now(), searched_problems(mails, self.config))
                try:
                    with session.begin_nested():
                        result, handled = self._apply(session, rows, parsed, lookup, after_flush,
                                                      careful=False, yields=not live)
                except ParsingStopped:
                    raise
                except Exception as exc:  # rolled back: again, a savepoint per message
                    if database_outage(exc):  # not the mail's fault: the batch waits for it
                        raise
                    log.info("batch of %d written one message at a time: %s", len(rows), exc)
                    after_flush.discard()
                    result, handled = self._apply(session, rows, parsed, lookup, after_flush,
                                                  careful=True)
            finally:
                lookup.close()
                after_flush.close()
        if handled < len(rows):  # cut short for live mail: the rest stays pending, parsed
            left = zip(rows[handled:], parsed[handled:])
            self.parsing.put_back({row.id: once.parsed for row, once in left if once.parsed})
        if rows:  # committed
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.MAIL_PROCESSED.inc(result.processed)
            for stage in self._quarantined:
                metrics.MAIL_QUARANTINED.labels(stage).inc()
            if result.processed and self.on_committed is not None:
                self.on_committed(live)  # its outgoing mail can go now, not after the backlog
        if waiting and not rows:  # all tied to mail another daemon is processing
            time.sleep(WAIT_FOR_OTHERS)
        return result, (live or len(claimed) + waiting == self.batch or handled < len(claimed)
                        or waiting > 0)

    def _claim(self, session: Session) -> tuple[list[Inbound], int, bool]:
        """The live mail stored since the last batch when any of it can go now (none of it
        tied to older pending mail), else the oldest pending mail; how many wait; whether
        the batch is live mail."""
        with self._fresh_lock:
            fresh, self._fresh = self._fresh, set()
        if fresh:
            claimed, waiting = claim_inbound(session, self.batch, among=fresh)
            if claimed:
                return claimed, waiting, True
        return *claim_inbound(session, self.batch), False

    def _apply(self, session: Session, rows: list[Inbound], parsed: list[_Once],
               lookup: Lookup, after_flush: _AfterFlush, *,
               careful: bool, yields: bool = False) -> tuple[BatchResult, int]:
        """Each message through the chain, in order; also how many rows it went through.

        Optimistic (``careful=False``): the whole batch is flushed once, at the
        end; a message that fails in the workflow (or the flush) raises, and the
        caller rolls the batch back and runs it carefully. Careful: a savepoint
        and a flush per message, so a failure is quarantined with its message
        alone. A message that fails to parse or in the rules has written nothing
        and is quarantined either way. The batch's outgoing mail and audit events
        (``after_flush``) are written after each flush and dropped with a failed
        message. ``yields`` (a backlog's batch, optimistic): live mail stored meanwhile
        cuts it short, the rest of it waits for a later batch (:meth:`_live_waiting`).
        """
        done, quarantined = [], 0
        self._quarantined = []
        for handled, (row, parse) in enumerate(zip(rows, parsed)):
            if yields and handled and self._live_waiting():
                break
            try:
                if careful:
                    with session.begin_nested():
                        line = self.process(session, row, parse, lookup)
                        _flush(session, after_flush)
                    done.append(line)
                else:
                    done.append(self.process(session, row, parse, lookup))
            except StageError as exc:
                if (not careful and exc.stage == "workflow") or lock_conflict(exc.error):
                    raise  # a conflict with another daemon's batch is no fault of this mail
                if careful:
                    after_flush.discard()  # this message's mail and events, rolled back with it
                self.quarantine(session, row, exc.stage, exc.error)
                quarantined += 1
        else:
            handled = len(rows)
        if not careful:
            _flush(session, after_flush)
        for line in done:
            log.info("%s", line)
        return BatchResult(len(done), quarantined), handled

    def _live_waiting(self) -> bool:
        """Whether live mail was stored since this batch was claimed."""
        with self._fresh_lock:
            return bool(self._fresh)

    def process(self, session: Session, row: Inbound, parsed: Callable[[], ParsedMail],
                lookup: Lookup) -> str:
        """One message through the chain; what was decided, in a line for the log.

        Raises :class:`StageError` naming the failing stage. ``parsed`` returns
        the parsed message (see :meth:`_parsers`). Nothing is flushed here: the
        caller decides when.
        """
        now = self.clock.now()
        try:
            mail = parsed()
        except ParsingStopped:
            raise  # the daemon is stopping: the batch is rolled back, its mail stays pending
        except Exception as exc:  # a deadline passed, or the parser broke its promise not to raise
            raise StageError("parse", exc) from exc
        started = time.perf_counter()
        try:
            verdict = decide(mail, Context(self.config, lookup, now, row.mailbox))
        except Exception as exc:
            raise StageError("rules", exc) from exc
        try:
            Intake(session, self.config, now, lookup).apply(row.id, mail, verdict)
            row.status, row.processed_at = "processed", now
        except Exception as exc:
            raise StageError("workflow", exc) from exc
        metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
        return f"inbound {row.id} from {mail.from_addr}: {'; '.join(verdict.reasons)}"

    def _parsers(self, session: Session, ids: list[int], live: bool) -> list[Callable[[], ParsedMail]]:
        """For each row, a call that returns its ParsedMail (parsed ahead, in workers, or here)."""
        return self.parsing.parsers(ids, partial(_read_raw, session), urgent=live)

    def _read_ahead(self, session: Session, after: int) -> None:
        """The workers start on the next batches while this one goes through the workflow."""
        pending = session.execute(
            select(Inbound.id, Inbound.size).where(Inbound.status == "pending", Inbound.id > after)
            .order_by(Inbound.id).limit(READ_AHEAD_BATCHES * self.batch)).all()
        wanted = self.parsing.wanted([(row.id, row.size) for row in pending])
        if wanted:
            self.parsing.ahead(_read_raw(session, wanted))

    def quarantine(self, session: Session, row: Inbound, stage: str, error: BaseException) -> None:
        """Keep the raw message with the reason; an operator can retry it later."""
        reason = _describe(error)
        log.warning("inbound %d quarantined at %s: %s", row.id, stage, reason)
        self._quarantined.append(stage)
        row.status, row.processed_at = "quarantined", self.clock.now()
        existing = session.scalar(select(Quarantine).where(Quarantine.inbound_id == row.id))
        if existing is None:
            session.add(Quarantine(inbound_id=row.id, stage=stage, error=reason))
        else:
            existing.stage, existing.error = stage, reason
            existing.resolved_at = existing.resolution = None
        session.flush()


class _Once:
    """A message's parse, done (or failed) once: a careful second pass reuses it."""

    def __init__(self, parse: Callable[[], ParsedMail]) -> None:
        self._parse: Callable[[], ParsedMail] | None = parse
        self._mail: ParsedMail | None = None
        self._error: BaseException | None = None

    @property
    def parsed(self) -> ParsedMail | None:
        """The parsed mail once parsed, else None."""
        return self._mail

    def result(self) -> ParsedMail | None:
        """The parsed mail, or None when parsing failed."""
        try:
            return self()
        except Exception:
            return None

    def __call__(self) -> ParsedMail:
        if self._parse is not None:
            parse, self._parse = self._parse, None
            started = time.perf_counter()
            try:
                self._mail = parse()
            except Exception as exc:
                self._error = exc
            metrics.PARSE_SECONDS.observe(time.perf_counter() - started)
        if self._error is not None:
            raise self._error
        return self._mail


class _AfterFlush:
    """What a batch writes after each flush, once its rows have ids: its outgoing mail
    (:class:`~mailbot.outbox.Queue`), then its audit events (:class:`Journal`)."""

    def __init__(self, *parts: Queue | Journal) -> None:
        self.parts = parts

    def write(self) -> None:
        for part in self.parts:
            part.write()

    def discard(self) -> None:
        for part in self.parts:
            part.discard()

    def close(self) -> None:
        for part in self.parts:
            part.close()


def _flush(session: Session, after_flush: _AfterFlush) -> None:
    """The batch's rows, then what waits for their ids; a failure is the workflow's."""
    try:
        session.flush()
        after_flush.write()
    except Exception as exc:
        raise StageError("workflow", exc) from exc


def _within_bytes(rows: list[Inbound], budget: int) -> list[Inbound]:
    """The first rows whose raw sizes add up to at most ``budget`` (always at least one)."""
    total = 0
    for count, row in enumerate(rows):
        total += row.size
        if total > budget and count:
            return rows[:count]
    return rows



def _read_raw(session: Session, ids: list[int]) -> dict[int, bytes]:
    """The raw bytes of these inbound rows in one query, received in binary (not as hex text);
    a big mail in slices (:func:`_read_big`)."""
    if not ids:
        return {}
    with binary_cursor(session) as cursor:
        cursor.execute("SELECT id, CASE WHEN size <= %s THEN raw END FROM inbound WHERE id = ANY(%s)",
                       (READ_SLICE, ids))
        raws = dict(cursor.fetchall())
        for inbound_id in [key for key, raw in raws.items() if raw is None]:
            raws[inbound_id] = _read_big(cursor, inbound_id)
        return {key: raw for key, raw in raws.items() if raw is not None}


def _read_big(cursor: psycopg.Cursor, inbound_id: int) -> bytearray | None:
    """A big mail's raw bytes, READ_SLICE at a time into one buffer (None: the row is gone):
    read whole, libpq's input buffer (kept by the connection) and its result would each
    hold another copy of it."""
    raw = bytearray()
    while True:
        row = cursor.execute("SELECT substring(raw FROM %s FOR %s) FROM inbound WHERE id = %s",
                             (len(raw) + 1, READ_SLICE, inbound_id)).fetchone()
        if row is None:
            return None
        raw += row[0]
        if len(row[0]) < READ_SLICE:
            return raw


def _describe(error: BaseException) -> str:
    if isinstance(error, MailTooLarge):
        return f"too large: {error}"
    if isinstance(error, ParseAborted):
        return str(error)
    tail = traceback.format_exception_only(type(error), error)[-1].strip()
    return tail[:2000]
