"""SMTP delivery of ``outbox`` rows with aiosmtplib: in order, with retries and backoff.

Rows are claimed for this process (:mod:`.claims`): a daemon that dies leaves
its claims to the next claim of any daemon, at once. A thread composes the
claimed mail (files spliced in) while earlier mail is on the wire, and up to
``smtp.connections`` connections send it, mail to the same recipients always
over the same one (in order). Each mail is marked sent as the server's 250
comes in (:class:`_Marks`), so a crash repeats at most the mail in flight on
each connection (same Message-ID).

What the server says decides what happens:

- a 4xx answer is temporary: the row is tried again after ``smtp.retry_base``
  seconds, doubling, up to ``smtp.max_attempts``;
- a 5xx answer to the message is permanent: the row fails with the server's words;
- a 5xx answer to a recipient (RCPT) is permanent for that recipient: the
  mail goes to the others, and the address is recorded as undeliverable
  (``undeliverable_addresses``; the workflow then sends it no automatic mail);
  ``on_refused`` (the daemon's workflow hook) tells the request's staff;
- the server accepting a mail for an address recorded as undeliverable (a
  staff answer, tried all the same) clears the mark: ``on_delivered``;
- no connection at all (refused, timed out, a 4xx greeting) is the server's
  outage, not the mail's: the claimed rows are put off in one statement with one
  WARNING, the sender tries to connect again after a short backoff, and once a
  connection succeeds every row put off by the outage is due at once.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import aiosmtplib
from aiosmtplib.email import parse_address, quote_address
from sqlalchemy import Connection, Engine, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .. import metrics
from ..clock import Clock
from ..config import OAuth2Config, SmtpConfig
from ..outbox import splice, wire_address
from ..parsers.addresses import is_valid_address
from ..register import files
from ..register.db import binary_cursor
from ..register.models import Outbox, UndeliverableAddress
from ..supervision import Backoff, database_outage, one_line
from . import oauth
from .claims import Claimed, ClaimOwner, bring_forward, claim, put_off

log = logging.getLogger(__name__)

UNREACHABLE = "SMTP server unreachable: "  # last_error of the rows an outage put off
CRLF = b"\r\n"
COMPOSE_AHEAD_BYTES = 32 * 1024 * 1024  # composed mail waiting for its connection, at most
RefusalHook = Callable[[Session, int, dict[str, str]], None]
DeliveryHook = Callable[[Session, int, list[str]], None]


@dataclass(frozen=True)
class _Stop:
    """Why sending stopped: the server could not be reached, or it refused our login."""

    reason: str
    login: bool = False


class SmtpSender:
    """Sends due outbox rows; ``send_due`` returns how many went out.

    ``on_refused(session, outbox_id, refused)`` is called, in the transaction
    that records it, when recipients of a mail were refused for good
    (``refused``: address -> the server's words); ``on_delivered(session,
    outbox_id, addresses)`` when the server accepted a mail for addresses
    recorded as undeliverable.
    """

    def __init__(self, config: SmtpConfig, sessions: sessionmaker[Session], clock: Clock,
                 batch: int = 50, on_refused: RefusalHook | None = None,
                 on_delivered: DeliveryHook | None = None,
                 oauth2: OAuth2Config | None = None) -> None:
        self.config = config
        self.oauth2 = oauth2  # where tokens come from when config.auth is "oauth2"
        self.sessions = sessions
        self.clock = clock
        self.batch = batch
        self.on_refused = on_refused
        self.on_delivered = on_delivered
        self.owner = ClaimOwner(sessions.kw["bind"])
        self._outage = Backoff(first=1.0, cap=5.0)
        self._login = Backoff(first=30.0, cap=300.0)  # a refused login is retried slowly
        self._down_since: float | None = None  # monotonic time the server was found unreachable
        self._next_try = 0.0  # while it is unreachable: when to try again (monotonic)
        self._checked_backlog = False  # rows put off by an earlier outage (or process) released
        self._more = False  # this pass made more rows due (a released backlog, a staff notice)
        self._unrecorded: dict[int, dict] = {}  # sent, but the database was gone: id -> the record
        self._marks: _Marks | None = None  # the sent marks of the call under way
        self._stopped: _Stop | None = None  # why this call stopped sending (the server is gone)
        self._done: set[int] = set()  # the claimed rows this call has dealt with
        self._hurry = False  # live mail was queued: the batch under way yields to it (hurry)

    def close(self) -> None:
        """Let our claims go (another daemon may take them over)."""
        if self._unrecorded:
            log.warning("%d sent mail(s) could not be marked sent (database unavailable): they "
                        "will go out once more", len(self._unrecorded))
        self.owner.close()

    @property
    def reachable(self) -> bool:
        """False while the server is found unreachable (until a connection succeeds again)."""
        return self._down_since is None

    def hurry(self) -> None:
        """Live mail was queued (it is due earlier than a backlog's): the batch under way stops
        at its next mail and the rest of it is claimed again behind the live mail (call it
        from the sender's event loop)."""
        self._hurry = True

    def wait_time(self) -> float | None:
        """Seconds until the next connection attempt while the server is unreachable, else None."""
        return max(self._next_try - time.monotonic(), 0.0) if self._down_since is not None else None

    @staticmethod
    def wire(conn: Connection, outbox_id: int) -> bytes:
        """The bytes to send: the stored text with its files spliced in (read just before
        sending), every line ended by CRLF (the files' lines are)."""
        with binary_cursor(conn) as cursor:
            raw = _crlf(cursor.execute("SELECT raw FROM outbox WHERE id = %s", (outbox_id,)).fetchone()[0])
            placeholders, wanted = [], []
            for placeholder, sha256, inbound_id, start, end, encoding in cursor.execute(
                    "SELECT o.placeholder, a.sha256, m.inbound_id, a.part_start, a.part_end, "
                    "a.part_encoding FROM outbox_files o "
                    "JOIN attachments a ON a.id = o.attachment_id JOIN messages m ON m.id = a.message_id "
                    "WHERE o.outbox_id = %s ORDER BY o.id", (outbox_id,)).fetchall():
                placeholders.append(placeholder)
                wanted.append((sha256, inbound_id, (start, end, encoding) if encoding else None))
            return splice(raw, zip(placeholders, files.read_many(cursor, wanted)))

    async def send_due(self) -> int:
        """Send every due row; how many went out.

        One database connection, in autocommit, claims the rows and records the results; a
        thread composes the claimed mail, in order, ahead of sending (:class:`_Composer`);
        up to ``smtp.connections`` SMTP connections send it (:meth:`_lanes`), each opened
        once per call (again if the server drops it). While the server is unreachable,
        nothing is claimed before the next attempt is due.
        """
        if self._down_since is not None and time.monotonic() < self._next_try:
            return 0
        owner = self.owner.ensure()
        clients: list[aiosmtplib.SMTP] = []
        engine = self.sessions.kw["bind"]
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SET synchronous_commit = off")  # see _mark
            for outbox_id, values in list(self._unrecorded.items()):  # before they are claimed
                _mark(conn, outbox_id, **values)
                del self._unrecorded[outbox_id]
            self._marks = marks = _Marks(engine, self._unrecorded, self.clock)
            sent = 0
            try:
                while claimed := claim(conn, owner, self.clock.now(), self.batch):
                    self._more = self._hurry = False
                    composer = _Composer(engine, claimed, asyncio.get_running_loop())
                    try:
                        sent += await self._lanes(conn, clients, claimed, composer)
                    finally:
                        composer.stop()
                    await asyncio.to_thread(marks.written)
                    if self._stopped is not None:  # the server is gone: the rest waits
                        self._unreachable(conn, [c for c in claimed if c.id not in self._done],
                                          self._stopped.reason, login=self._stopped.login)
                        break
                    if len(claimed) < self.batch and not self._more and not self._hurry:
                        break
            finally:
                with suppress(SQLAlchemyError):  # a broken connection is dropped by the pool
                    conn.exec_driver_sql("RESET synchronous_commit")
                await asyncio.gather(*(_quit(smtp) for smtp in clients))
                marks.close()
        return sent

    async def _lanes(self, conn: Connection, clients: list[aiosmtplib.SMTP], claimed: list[Claimed],
                     composer: _Composer) -> int:
        """Send ``claimed`` over the open ``clients`` (opened here, up to ``smtp.connections``).

        Each mail goes over the connection its recipients pick, so mail to one address keeps
        its order. A connection the server refuses beyond the first only means fewer of them.
        """
        self._stopped, self._done = None, set()
        wanted = min(self.config.connections, len({_lane_key(item) for item in claimed}))
        while len(clients) < wanted:
            smtp, stop = await self._open()
            if smtp is None:
                if not clients:
                    self._stopped = stop
                    return 0
                log.debug("SMTP server took %d connection(s), not %d (%s)", len(clients), wanted,
                          stop.reason)
                break
            clients.append(smtp)
            self._reachable(conn)
        lanes: list[list[Claimed]] = [[] for _ in clients]
        for item in claimed:
            lanes[_lane_key(item) % len(clients)].append(item)
        counts = await asyncio.gather(*(self._lane(conn, clients, n, items, composer)
                                        for n, items in enumerate(lanes) if items))
        return sum(counts)

    async def _lane(self, conn: Connection, clients: list[aiosmtplib.SMTP], n: int,
                    items: list[Claimed], composer: _Composer) -> int:
        """One connection's share, in order; its connection is opened again when it was dropped."""
        sent = 0
        for item in items:
            if self._stopped is not None or self._hurry:
                break  # the server is gone, or live mail goes first (the rest stays ours)
            if not clients[n].is_connected:
                smtp, stop = await self._open()
                if smtp is None:
                    self._stopped = stop
                    break
                clients[n] = smtp
            try:
                sent += await self._send_one(conn, clients[n], item, composer)
            except Exception as exc:
                if database_outage(exc):
                    raise
                self._broken(conn, clients[n], item, exc)
            self._done.add(item.id)
        return sent

    async def _open(self) -> tuple[aiosmtplib.SMTP | None, _Stop | None]:
        """A connected (and logged-in) client, or None and why there is none."""
        smtp = client(self.config)
        try:
            await smtp.connect()
            await authenticate(smtp, self.config, self.oauth2)
        except (aiosmtplib.SMTPAuthenticationError, oauth.AuthRefused, oauth.TokenError) as exc:
            smtp.close()
            return None, _Stop(f"cannot log in: {one_line(exc)}", login=True)
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            return None, _Stop(f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            return None, _Stop(f"{type(exc).__name__}: {exc}")
        return smtp, None

    def _unreachable(self, conn: Connection, waiting: list[Claimed], reason: str,
                     login: bool = False) -> None:
        """No connection: the rows wait for the next attempt (one UPDATE, one WARNING per
        outage; an ERROR, and slower attempts, when the server refused our login)."""
        delay = self._login.next() if login else self._outage.next()
        self._next_try = time.monotonic() + delay
        put_off(conn, [item.id for item in waiting], self.clock.now() + timedelta(seconds=delay),
                UNREACHABLE + reason)
        if self._down_since is None:
            self._down_since = time.monotonic()
            metrics.SMTP_UP.set(0)
            log.log(logging.ERROR if login else logging.WARNING,
                    "SMTP server %s:%d unreachable (%s): outgoing mail waits, trying again "
                    "every %s", self.config.host, self.config.port, reason,
                    "few minutes" if login else "few seconds")
        else:
            log.debug("SMTP server still unreachable (%s); %d mail(s) put off", reason, len(waiting))

    def _reachable(self, conn: Connection) -> None:
        """A connection succeeded: after an outage, the mail it put off is due now."""
        if self._down_since is None and self._checked_backlog:
            return
        released = bring_forward(conn, self.clock.now(), UNREACHABLE)
        self._more = self._more or released > 0
        metrics.SMTP_UP.set(1)
        if self._down_since is not None:
            log.info("SMTP server available again (after %.0f s): %d waiting mail(s) go out now",
                     time.monotonic() - self._down_since, released)
        self._down_since, self._checked_backlog = None, True
        self._outage.reset()
        self._login.reset()

    async def _send_one(self, conn: Connection, smtp: aiosmtplib.SMTP, item: Claimed,
                        composer: _Composer) -> int:
        try:  # composed in the composer's thread while earlier mail was on the wire
            data = await composer.take(item.id)
        except LookupError as exc:  # a file it carries cannot be read: it can never be sent
            self._failed(conn, item, f"cannot compose: {exc}", permanent=True)
            return 0
        refused = _known_refusals(item)
        recipients = [r for r in item.recipients if r not in refused]
        if not recipients:
            self._settled(item, delivered=[], refused=refused, later={})
            return 0
        try:
            wire = {wire_address(r): r for r in recipients}  # IDN domains as IDNA
            utf8 = [] if all(map(str.isascii, wire)) else ["SMTPUTF8"]  # RFC 6531
            answers = await _transmit(smtp, item.mail_from, list(wire), data, utf8)
            errors = {wire.get(r, r): e for r, e in answers.items()}
        except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient: nothing was sent
            errors = {wire.get(e.recipient, e.recipient): e for e in exc.recipients}
        except aiosmtplib.SMTPResponseException as exc:
            self._failed(conn, item, f"{exc.code} {exc.message}", permanent=500 <= exc.code < 600)
            await _reset(smtp)
            return 0
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._failed(conn, item, f"{type(exc).__name__}: {exc}", permanent=False)
            smtp.close()
            return 0
        if not errors and not refused:
            self._sent(conn, item)
            self._reached(item, recipients)
            return 1
        refused |= {r: f"{e.code} {e.message}" for r, e in errors.items() if e.code >= 500}
        later = {r: f"{e.code} {e.message}" for r, e in errors.items() if e.code < 500}
        delivered = [r for r in recipients if r not in errors]
        self._settled(item, delivered=delivered, refused=refused, later=later)
        self._reached(item, delivered)
        return 1 if delivered else 0

    def _reached(self, item: Claimed, delivered: list[str]) -> None:
        """Recipients recorded as undeliverable were accepted now: their marks go (the hook)."""
        marked = [r.lower() for r in delivered if r.lower() in item.undeliverable]
        if marked and self.on_delivered is not None:
            with self.sessions.begin() as session:
                self.on_delivered(session, item.id, marked)
            self._more = True  # it may have queued mail

    def _broken(self, conn: Connection, smtp: aiosmtplib.SMTP, item: Claimed,
                error: Exception) -> None:
        """An unexpected error with one mail (a bug, most likely): it is retried like a
        temporary failure, and the other mail goes on over a fresh connection."""
        log.error("outbox %d: cannot send: %s", item.id, one_line(error), exc_info=error)
        smtp.close()
        self._failed(conn, item, f"cannot send: {one_line(error)}", permanent=False)

    def _sent(self, conn: Connection, item: Claimed) -> None:
        """Mark the row sent (:class:`_Marks`: at once, without waiting for the statement)."""
        metrics.OUTGOING_SENT.inc()
        self._marks.add(item)

    def _settled(self, item: Claimed, *, delivered: list[str], refused: dict[str, str],
                 later: dict[str, str]) -> None:
        """Record a mail some of whose recipients were refused, in one transaction: the row
        (sent or failed; pending for the ``later`` ones, refused with a 4xx), the refused
        addresses as undeliverable, and what the hook records for staff."""
        now = self.clock.now()
        notes = [f"{r}: {reply}" for r, reply in (refused | later).items()]
        if delivered:
            notes.append(f"sent to {', '.join(delivered)}")
        error = "; ".join(notes)
        values: dict = {"attempts": item.attempts + 1, "last_error": error[:2000], "claimed_by": None}
        if later and item.attempts + 1 < self.config.max_attempts:
            values |= {"recipients": list(later), "next_attempt_at": now + self._retry_delay(item)}
            metrics.OUTGOING_RETRIED.inc()
            log.warning("outbox %d: %s; retry %d for %s", item.id, error, item.attempts + 1, list(later))
        elif delivered:
            values |= {"status": "sent", "sent_at": now}
            metrics.OUTGOING_SENT.inc()
            log.warning("outbox %d: %s", item.id, error)
        else:
            values |= {"status": "failed"}
            metrics.OUTGOING_FAILED.inc()
            log.error("outbox %d to %s failed for good: %s", item.id, item.recipients, error)
        with self.sessions.begin() as session:
            session.execute(update(Outbox).where(Outbox.id == item.id).values(**values))
            if refused:
                session.execute(insert(UndeliverableAddress).values(
                    [{"address": r.lower(), "reply": reply[:2000], "refused_at": now,
                      "outbox_id": item.id} for r, reply in refused.items()])
                    .on_conflict_do_nothing())
                if self.on_refused is not None:
                    self.on_refused(session, item.id, refused)
                    self._more = True  # it may have queued a notice for staff

    def _retry_delay(self, item: Claimed) -> timedelta:
        return timedelta(seconds=self.config.retry_base * 2 ** item.attempts)

    def _failed(self, conn: Connection, item: Claimed, error: str, *, permanent: bool) -> None:
        attempts = item.attempts + 1
        if permanent or attempts >= self.config.max_attempts:
            metrics.OUTGOING_FAILED.inc()
            log.error("outbox %d to %s failed for good: %s", item.id, item.recipients, error)
            _mark(conn, item.id, status="failed", attempts=attempts, last_error=error)
            return
        delay = self._retry_delay(item)
        metrics.OUTGOING_RETRIED.inc()
        log.warning("outbox %d: %s; retry %d in %s", item.id, error, attempts, delay)
        _mark(conn, item.id, attempts=attempts, last_error=error,
              next_attempt_at=self.clock.now() + delay)


def client(config: SmtpConfig) -> aiosmtplib.SMTP:
    """A client for the configured server, not connected yet (:func:`authenticate` logs in)."""
    return aiosmtplib.SMTP(hostname=config.host, port=config.port, use_tls=config.ssl,
                           start_tls=config.starttls or None, timeout=config.timeout)


async def authenticate(smtp: aiosmtplib.SMTP, config: SmtpConfig,
                       oauth2: OAuth2Config | None = None) -> None:
    """Log in on a connected client: by OAuth2 (a refused token is replaced once, then
    :class:`~.oauth.AuthRefused`), by password when a username is set, else not at all."""
    if config.auth == "oauth2":
        source = oauth.token_source(oauth2 or OAuth2Config())
        await oauth.login_with_retry_async(
            source, lambda token: _oauth_auth(smtp, config, token, source.config.mechanism),
            (aiosmtplib.SMTPAuthenticationError,), f"SMTP server {config.host}")
    elif config.username:
        await smtp.login(config.username, config.password)


async def _oauth_auth(smtp: aiosmtplib.SMTP, config: SmtpConfig, token: str, mechanism: str) -> None:
    """AUTH XOAUTH2 / OAUTHBEARER with an initial response; a refusal is SMTPAuthenticationError."""
    if smtp.last_ehlo_response is None:
        await smtp.ehlo()
    if mechanism.lower() not in smtp.server_auth_methods:
        offered = ", ".join(smtp.server_auth_methods).upper() or "none"
        raise aiosmtplib.SMTPException(f"the server offers no AUTH {mechanism} (it offers: {offered})")
    initial = base64.b64encode(oauth.sasl_response(mechanism, config.username, token,
                                                   config.host, config.port))
    response = await smtp.execute_command(b"AUTH", mechanism.encode(), initial)
    if response.code == 334:  # the error challenge (RFC 7628 §3.2.2): an empty line ends it
        response = await smtp.execute_command(b"")
    if response.code != 235:
        raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)


def _known_refusals(item: Claimed) -> dict[str, str]:
    """The recipients of ``item`` no SMTP command can carry as they are (malformed).

    An address recorded as undeliverable is offered all the same: the workflow
    sends it no automatic mail, so this is a staff answer (or mail queued before
    the mark), and the server accepting it now clears the mark.
    """
    return {recipient: "malformed address, not offered to the server"
            for recipient in item.recipients if not _plain_address(recipient)}


def _plain_address(address: str) -> bool:
    """Whether ``address`` is one plain mailbox that RCPT TO carries as it is (an IDN domain
    as IDNA, a UTF-8 local part with SMTPUTF8).

    aiosmtplib sends what :func:`email.utils.parseaddr` makes of a string,
    which can be another address than the one written (``bad<x@evil>…``).
    """
    wire = wire_address(address)
    try:
        return is_valid_address(address) and parse_address(wire) == wire
    except ValueError:
        return False


class _Marks:
    """Sent marks, written by a thread of their own as each 250 comes in: the marks that came
    in while one UPDATE was on its way go together in the next one (a connection of its own,
    autocommit, see :func:`_mark`).

    The sender does not wait for them, and a mark waits for nothing but the statement before
    it: a crash of the daemon repeats the mail of that moment, the one in flight on each
    connection (same Message-ID). When the database is gone, the records wait in memory
    (``unrecorded``), are written first thing once it is back, and the error reaches the
    sender with its next mark (or :meth:`close`).
    """

    def __init__(self, engine: Engine, unrecorded: dict[int, dict], clock: Clock) -> None:
        self.engine = engine
        self.unrecorded = unrecorded
        self.clock = clock
        self.pending: dict[int, dict] = {}
        self.writing = False  # a statement is on its way
        self.closed = False
        self.error: SQLAlchemyError | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="smtp-marks", daemon=True)
        self.thread.start()

    def add(self, item: Claimed) -> None:
        values = {"status": "sent", "sent_at": self.clock.now(), "attempts": item.attempts + 1,
                  "last_error": None}
        with self.cond:
            if self.error is not None:
                self.unrecorded[item.id] = values
                raise self.error
            self.pending[item.id] = values
            self.cond.notify_all()

    def written(self) -> None:
        """Wait until every mark added is written (before claiming again: a row sent and not
        yet marked is still ours to claim); raises the database's error if it was gone."""
        with self.cond:
            self.cond.wait_for(lambda: not self.pending and not self.writing
                               or self.error is not None)
            if self.error is not None:
                raise self.error

    def close(self) -> None:
        """Write what is left and stop; raises the database's error if it was gone."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        marks: dict[int, dict] = {}
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("SET synchronous_commit = off")
                while marks := self._next():
                    _mark_sent(conn, marks)
                    with self.cond:
                        self.writing = False
                        self.cond.notify_all()
        except SQLAlchemyError as exc:
            with self.cond:
                self.error = exc
                self.writing = False
                self.cond.notify_all()
                self.unrecorded.update(marks)
                self.unrecorded.update(self.pending)
                self.pending = {}

    def _next(self) -> dict[int, dict]:
        """The marks to write now (waiting for one); empty once closed and written."""
        with self.cond:
            self.cond.wait_for(lambda: self.pending or self.closed)
            marks, self.pending = self.pending, {}
            self.writing = bool(marks)
            return marks


def _mark_sent(conn: Connection, marks: dict[int, dict]) -> None:
    """Rows sent, in one statement."""
    conn.execute(text(
        "UPDATE outbox o SET status = 'sent', sent_at = m.sent_at, attempts = m.attempts, "
        "last_error = NULL, claimed_by = NULL FROM unnest(:ids, :at, :attempts) "
        "AS m(id, sent_at, attempts) WHERE o.id = m.id"),
        {"ids": list(marks), "at": [v["sent_at"] for v in marks.values()],
         "attempts": [v["attempts"] for v in marks.values()]})


class _Composer:
    """Composes claimed mail (:meth:`SmtpSender.wire`) in a thread of its own, in claim order,
    while earlier mail is on the wire; at most COMPOSE_AHEAD_BYTES composed and not yet taken
    (but always the next one)."""

    def __init__(self, engine: Engine, claimed: list[Claimed], loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self.futures: dict[int, asyncio.Future] = {item.id: loop.create_future() for item in claimed}
        self.held = 0
        self.stopped = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="smtp-compose", daemon=True)
        self.thread.start()

    async def take(self, outbox_id: int) -> bytes:
        """The mail's bytes (or what composing it raised)."""
        data = await self.futures[outbox_id]
        with self.cond:
            self.held -= len(data)
            self.cond.notify()
        return data

    def stop(self) -> None:
        """Compose nothing more (what is under way finishes in its thread); mail composed and
        not taken is dropped, with what composing it raised (called on the loop)."""
        with self.cond:
            self.stopped = True
            self.cond.notify()
        for future in self.futures.values():
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: a failure nobody took is not logged as lost

    def _run(self) -> None:
        with self.engine.connect() as conn:
            for outbox_id, future in self.futures.items():
                with self.cond:
                    self.cond.wait_for(lambda: self.stopped or self.held < COMPOSE_AHEAD_BYTES)
                    if self.stopped:
                        return
                try:
                    data = SmtpSender.wire(conn, outbox_id)
                except Exception as exc:  # the lane that takes it decides (cannot compose, a bug)
                    self._hand(future, exc)
                    if database_outage(exc):  # the rest would fail the same way
                        return
                    continue
                with self.cond:
                    self.held += len(data)
                self._hand(future, data)

    def _hand(self, future: asyncio.Future, result: bytes | Exception) -> None:
        def settle() -> None:
            if future.done():
                return
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop has closed: nobody waits for it
            self.stop()


def _lane_key(item: Claimed) -> int:
    """Which connection a mail goes over: the same for the same recipients (their order kept)."""
    return zlib.crc32(",".join(sorted(r.lower() for r in item.recipients)).encode())


def _crlf(raw: bytes) -> bytes:
    """The stored text with every line ended by CRLF (:mod:`mailbot.outbox` writes it so)."""
    if raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r"):
        return raw
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)


async def _transmit(smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], data: bytes,
                    options: list[str]) -> dict[str, aiosmtplib.SMTPResponse]:
    """``smtp.sendmail`` for mail with CRLF line ends only (:meth:`SmtpSender.wire`): the
    recipients refused (not all: then SMTPRecipientsRefused), as sendmail answers.

    aiosmtplib rewrites every line end of a message with a regular expression, twice (its
    SIZE and its DATA), and parses every address with the email package's parser: for mail
    with files, more time than the rest of sending. Here the message goes as it is,
    dot-stuffed by a plain byte replace, and each address is quoted once (:func:`_mail`).
    """
    encoding = "utf-8" if options else "ascii"  # SMTPUTF8
    size = [f"SIZE={len(data) + (0 if data.endswith(CRLF) else 2)}"] \
        if smtp.supports_extension("size") else []
    try:
        await _mail(smtp, sender, size + options, encoding)
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        errors = []
        for recipient in recipients:
            try:
                await _rcpt(smtp, recipient, encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                errors.append(exc)
                refused[exc.recipient] = aiosmtplib.SMTPResponse(exc.code, exc.message)
        if len(errors) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(errors)
        answer = await smtp.execute_command(b"DATA")
        if answer.code != 354:
            raise aiosmtplib.SMTPDataError(answer.code, answer.message)
        stuffed = (b"." if data.startswith(b".") else b"") + data.replace(b"\r\n.", b"\r\n..")
        try:  # written and answered without a turn of the loop in between (see read_response)
            smtp.protocol.write(stuffed + (b"" if stuffed.endswith(CRLF) else CRLF) + b".\r\n")
            answer = await smtp.protocol.read_response(timeout=smtp.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            smtp.close()
            raise
        if answer.code != 250:
            raise aiosmtplib.SMTPDataError(answer.code, answer.message)
        return refused
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with suppress(ConnectionError, aiosmtplib.SMTPException):
            await smtp.rset()  # the envelope is reset, as sendmail does
        raise


async def _mail(smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str) -> None:
    """``smtp.mail``, the address quoted once per address (:func:`_quoted`)."""
    if smtp.is_ehlo_or_helo_needed:  # the server greeted first, as smtp.mail does
        await smtp.mail(sender, options=options, encoding=encoding)
        return
    answer = await smtp.execute_command(b"MAIL", b"FROM:" + _quoted(sender).encode(encoding),
                                        *(option.encode("ascii") for option in options))
    if answer.code != 250:
        raise aiosmtplib.SMTPSenderRefused(answer.code, answer.message, sender)


async def _rcpt(smtp: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    """``smtp.rcpt`` (after :func:`_mail`), the address quoted once per address."""
    answer = await smtp.execute_command(b"RCPT", b"TO:" + _quoted(recipient).encode(encoding))
    if answer.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(answer.code, answer.message, recipient)


@lru_cache(maxsize=4096)
def _quoted(address: str) -> str:
    """``<address>`` as aiosmtplib writes it (it parses the address again for every mail)."""
    return quote_address(address)


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    if smtp.is_connected:
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()


def _mark(conn: Connection, outbox_id: int, **values) -> None:
    """Record what became of a row, and end our claim on it.

    Committed at once, without waiting for the disk (``synchronous_commit =
    off``): the server has the record as soon as the statement returns, so a
    crash of the daemon loses nothing. Only a crash of the database server (or
    its machine) within a fraction of a second could lose the last records,
    and the mail they record would go out once more (same Message-ID).
    """
    conn.execute(update(Outbox).where(Outbox.id == outbox_id).values(claimed_by=None, **values))


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """After a refused message the connection goes on with the next one (RSET)."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
