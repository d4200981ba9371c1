"""SMTP delivery of ``outbox`` rows with aiosmtplib: in order, with retries and backoff.

Rows are claimed for this process (:mod:`.claims`): a daemon that dies leaves
its claims to the next claim of any daemon, at once. Each mail is marked sent
right after the server's 250, so a crash repeats at most the one mail in flight.

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
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta

import aiosmtplib
from aiosmtplib.email import parse_address
from sqlalchemy import Connection, update
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
RefusalHook = Callable[[Session, int, dict[str, str]], None]
DeliveryHook = Callable[[Session, int, list[str]], None]


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

    def wait_time(self) -> float | None:
        """Seconds until the next connection attempt while the server is unreachable, else None."""
        return max(self._next_try - time.monotonic(), 0.0) if self._down_since is not None else None

    @staticmethod
    def wire(conn: Connection, outbox_id: int) -> bytes:
        """The bytes to send: the stored text with its files spliced in (read just before sending)."""
        with binary_cursor(conn) as cursor:
            raw = cursor.execute("SELECT raw FROM outbox WHERE id = %s", (outbox_id,)).fetchone()[0]
            placeholders, wanted = [], []
            for placeholder, sha256, inbound_id in cursor.execute(
                    "SELECT o.placeholder, a.sha256, m.inbound_id FROM outbox_files o "
                    "JOIN attachments a ON a.id = o.attachment_id JOIN messages m ON m.id = a.message_id "
                    "WHERE o.outbox_id = %s ORDER BY o.id", (outbox_id,)).fetchall():
                placeholders.append(placeholder)
                wanted.append((sha256, inbound_id))
            return splice(raw, zip(placeholders, files.read_many(cursor, wanted)))

    async def send_due(self) -> int:
        """Send every due row: one SMTP connection (opened again if the server drops it) and
        one database connection, in autocommit, to claim the rows and record each result.

        While the server is unreachable, nothing is claimed before the next attempt is due.
        """
        if self._down_since is not None and time.monotonic() < self._next_try:
            return 0
        owner = self.owner.ensure()
        sent, smtp = 0, None
        with self.sessions.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SET synchronous_commit = off")  # see _mark
            try:
                for outbox_id, values in list(self._unrecorded.items()):  # before they are claimed
                    _mark(conn, outbox_id, **values)
                    del self._unrecorded[outbox_id]
                while claimed := claim(conn, owner, self.clock.now(), self.batch):
                    self._more = False
                    for n, item in enumerate(claimed):
                        if smtp is None or not smtp.is_connected:
                            smtp = await self._connect(conn, claimed[n:])
                            if smtp is None:
                                return sent
                            self._reachable(conn)
                        try:
                            sent += await self._send_one(conn, smtp, item)
                        except Exception as exc:
                            if database_outage(exc):
                                raise
                            self._broken(conn, smtp, item, exc)
                    if len(claimed) < self.batch and not self._more:
                        break
            finally:
                with suppress(SQLAlchemyError):  # a broken connection is dropped by the pool
                    conn.exec_driver_sql("RESET synchronous_commit")
                if smtp is not None and smtp.is_connected:
                    try:
                        await smtp.quit()
                    except (aiosmtplib.SMTPException, OSError):
                        smtp.close()
        return sent

    async def _connect(self, conn: Connection, waiting: list[Claimed]) -> aiosmtplib.SMTP | None:
        """A connected (and logged-in) client; None, with ``waiting`` put off, when there is none."""
        smtp = client(self.config)
        try:
            await smtp.connect()
            await authenticate(smtp, self.config, self.oauth2)
        except (aiosmtplib.SMTPAuthenticationError, oauth.AuthRefused, oauth.TokenError) as exc:
            smtp.close()
            self._unreachable(conn, waiting, f"cannot log in: {one_line(exc)}", login=True)
            return None
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            self._unreachable(conn, waiting, f"{exc.code} {exc.message}")
            return None
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            self._unreachable(conn, waiting, f"{type(exc).__name__}: {exc}")
            return None
        return smtp

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

    async def _send_one(self, conn: Connection, smtp: aiosmtplib.SMTP, item: Claimed) -> int:
        refused = _known_refusals(item)
        recipients = [r for r in item.recipients if r not in refused]
        if not recipients:
            self._settled(item, delivered=[], refused=refused, later={})
            return 0
        try:  # in a thread: reading files back parses mail again (mailbot.register.files), the loop goes on
            data = await asyncio.to_thread(self.wire, conn, item.id)
        except LookupError as exc:  # a file it carries cannot be read: it can never be sent
            self._failed(conn, item, f"cannot compose: {exc}", permanent=True)
            return 0
        try:
            wire = {wire_address(r): r for r in recipients}  # IDN domains as IDNA
            utf8 = [] if all(map(str.isascii, wire)) else ["SMTPUTF8"]  # RFC 6531
            answers, _ = await smtp.sendmail(item.mail_from, list(wire), data, mail_options=utf8)
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
        """Mark the row sent, right after the server's 250. When the database is gone, the
        record waits in memory and is written first thing once it is back (not sent again)."""
        values = {"status": "sent", "sent_at": self.clock.now(), "attempts": item.attempts + 1,
                  "last_error": None}
        metrics.OUTGOING_SENT.inc()
        try:
            _mark(conn, item.id, **values)
        except SQLAlchemyError:
            self._unrecorded[item.id] = values
            raise

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
