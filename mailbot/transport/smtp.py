"""SMTP delivery of ``outbox`` rows with aiosmtplib: in order, with retries and backoff.

A row is claimed with a short lease (``FOR UPDATE SKIP LOCKED`` then a later
``next_attempt_at``), so several daemons share the work and a crash mid-send
means the row is tried again after the lease, never dropped. A 5xx answer is
permanent: the row is marked failed with the server's words.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

import aiosmtplib
from sqlalchemy import Connection, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .. import files
from ..clock import Clock
from ..config import SmtpConfig
from ..db import binary_cursor
from ..models import Outbox
from ..outbox import splice

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Claimed:
    id: int
    mail_from: str
    recipients: list[str]
    attempts: int


class SmtpSender:
    """Sends due outbox rows; ``send_due`` returns how many went out."""

    def __init__(self, config: SmtpConfig, sessions: sessionmaker[Session], clock: Clock,
                 batch: int = 50) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.batch = batch

    def claim(self) -> list[Claimed]:
        """Lease up to ``batch`` due rows, oldest first."""
        now = self.clock.now()
        with self.sessions.begin() as session:
            rows = session.scalars(
                select(Outbox).where(Outbox.status == "pending", Outbox.next_attempt_at <= now)
                .order_by(Outbox.id).limit(self.batch).with_for_update(skip_locked=True)).all()
            for row in rows:
                row.next_attempt_at = now + LEASE
            return [Claimed(r.id, r.mail_from, list(r.recipients), r.attempts) for r in rows]

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
        one database connection, in autocommit, to read each mail and record what became of it."""
        sent, smtp = 0, None
        with self.sessions.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SET synchronous_commit = off")  # see _mark
            try:
                while claimed := self.claim():
                    for item in claimed:
                        if smtp is None or not smtp.is_connected:
                            smtp = await self._connect(conn, item)
                            if smtp is None:
                                continue
                        sent += await self._send_one(conn, smtp, item)
                    if len(claimed) < self.batch:
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

    async def _connect(self, conn: Connection, item: Claimed) -> aiosmtplib.SMTP | None:
        """A connected (and logged-in) client; None, with ``item`` put off, when the server fails."""
        smtp = aiosmtplib.SMTP(hostname=self.config.host, port=self.config.port,
                               use_tls=self.config.ssl, start_tls=self.config.starttls or None,
                               username=self.config.username or None,
                               password=self.config.password or None, timeout=self.config.timeout)
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as exc:
            self._failed(conn, item, f"{exc.code} {exc.message}", permanent=False)
            return None
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._failed(conn, item, f"{type(exc).__name__}: {exc}", permanent=False)
            return None
        return smtp

    async def _send_one(self, conn: Connection, smtp: aiosmtplib.SMTP, item: Claimed) -> int:
        try:  # in a thread: reading files back parses mail again (mailbot.files), the loop goes on
            data = await asyncio.to_thread(self.wire, conn, item.id)
        except LookupError as exc:  # a file it carries cannot be read: it can never be sent
            self._failed(conn, item, f"cannot compose: {exc}", permanent=True)
            return 0
        try:
            await smtp.sendmail(item.mail_from, item.recipients, data)
        except aiosmtplib.SMTPResponseException as exc:
            self._failed(conn, item, f"{exc.code} {exc.message}", permanent=500 <= exc.code < 600)
            await _reset(smtp)
            return 0
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._failed(conn, item, f"{type(exc).__name__}: {exc}", permanent=False)
            smtp.close()
            return 0
        _mark(conn, item.id, status="sent", sent_at=self.clock.now(), attempts=item.attempts + 1,
              last_error=None)
        return 1

    def _failed(self, conn: Connection, item: Claimed, error: str, *, permanent: bool) -> None:
        attempts = item.attempts + 1
        if permanent or attempts >= self.config.max_attempts:
            log.error("outbox %d to %s failed for good: %s", item.id, item.recipients, error)
            _mark(conn, item.id, status="failed", attempts=attempts, last_error=error)
            return
        delay = timedelta(seconds=self.config.retry_base * 2 ** (attempts - 1))
        log.warning("outbox %d: %s; retry %d in %s", item.id, error, attempts, delay)
        _mark(conn, item.id, attempts=attempts, last_error=error,
              next_attempt_at=self.clock.now() + delay)


def _mark(conn: Connection, outbox_id: int, **values) -> None:
    """Record what became of a row.

    The record does not wait for the disk (``synchronous_commit = off``): a crash
    that loses it means the mail goes out once more after its lease, just as after
    a crash between sending and recording. At least once, never lost.
    """
    conn.execute(update(Outbox).where(Outbox.id == outbox_id).values(**values))


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """After a refused message the connection goes on with the next one (RSET)."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
