"""Which daemon is processing which stored mail, and sending which outbox row.

Stored mail (:func:`claim_inbound`): a batch is claimed ``FOR UPDATE SKIP LOCKED``
(several daemons share the pending rows), less the mail tied to earlier pending
mail that another daemon's batch holds: a reply waits while its original is being
processed elsewhere (by ``inbound.thread_keys``, :func:`.store.thread_keys`).

Outgoing mail:

A sender holds a session-level advisory lock on a key of its own, on a
connection of its own (:class:`ClaimOwner`), and writes that key into
``outbox.claimed_by`` when it claims rows. The lock lives as long as the
process and its connection: when a daemon dies (even ``kill -9``) the server
drops the lock at once, and any sender's next claim takes the dead daemon's
rows over, without waiting for a lease. Several daemons share one database:
rows claimed by a live daemon are left to it, and ``FOR UPDATE SKIP LOCKED``
keeps two claims from taking the same row.

Every statement that settles a row (sent, failed, put off) clears its claim.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import psycopg
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from ..register.db import CONNECT_TIMEOUT, engine_conninfo
from ..register.models import Inbound

log = logging.getLogger(__name__)

LOCK_SPACE = 7202  # first key of the owners' two-key advisory locks: (LOCK_SPACE, owner key)


_TIED_EARLIER = text("""
    SELECT id, thread_keys FROM inbound
    WHERE status = 'pending' AND id < :last AND id <> ALL(:mine) AND thread_keys && CAST(:keys AS text[])
    ORDER BY id""")


def claim_inbound(session: Session, limit: int,
                  among: Collection[int] = ()) -> tuple[list[Inbound], int]:
    """Up to ``limit`` pending rows to process now, oldest first (``among``: of these ids
    only, live mail going before a backlog), locked until the transaction ends; and how many
    more were claimed but must wait.

    A row waits when it shares a thread key with an earlier pending row that is not ours
    (another daemon's batch holds it: rows nobody holds come first in ours), or with a row
    that waits: a reply is not processed before its original, nor a sender's second mail
    before his first, when two daemons share the work. The rows that wait stay locked by
    this transaction (skipped by the others) and come in a later batch.
    """
    query = select(Inbound).where(Inbound.status == "pending")
    if among:
        query = query.where(Inbound.id.in_(sorted(among)))
    claimed = session.scalars(query.order_by(Inbound.id).limit(limit).with_for_update(skip_locked=True)).all()
    keys = sorted({key for row in claimed for key in row.thread_keys})
    if not keys:
        return claimed, 0
    earlier = session.execute(_TIED_EARLIER, {"last": claimed[-1].id, "keys": keys,
                                              "mine": [row.id for row in claimed]}).all()
    if not earlier:
        return claimed, 0
    ready, tied, before = [], set(), iter(earlier)
    held = next(before, None)
    for row in claimed:
        while held is not None and held.id < row.id:
            tied.update(held.thread_keys)
            held = next(before, None)
        if tied.intersection(row.thread_keys):
            tied.update(row.thread_keys)
        else:
            ready.append(row)
    return ready, len(claimed) - len(ready)


class ClaimOwner:
    """The advisory lock that makes this process the owner of its claims (one connection)."""

    def __init__(self, engine: Engine) -> None:
        self.conninfo = engine_conninfo(engine)
        self.key: int | None = None
        self._conn: psycopg.Connection | None = None

    def ensure(self) -> int:
        """Our key, its lock held; after a lost connection the lock is taken again.

        Raises ``psycopg.OperationalError`` while the database is unreachable.
        """
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return self.key
            except psycopg.Error:
                self.close()
        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        key = self.key or _new_key()
        while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, key)).fetchone()[0]:
            key = _new_key()  # held by another process: a key is one process's
        self._conn, self.key = conn, key
        return key

    def close(self) -> None:
        """Let the lock go (our unfinished claims are then anybody's)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _new_key() -> int:
    return secrets.randbelow(2**31 - 1) + 1


@dataclass(frozen=True)
class Claimed:
    id: int
    mail_from: str
    recipients: list[str]
    attempts: int
    undeliverable: dict[str, str]  # recipients recorded as undeliverable (lower case) -> why


_CLAIM = text("""
    WITH live AS (
        SELECT objid::bigint AS key FROM pg_locks
        WHERE locktype = 'advisory' AND classid = :space AND objsubid = 2 AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
    due AS (
        SELECT id FROM outbox
        WHERE status = 'pending' AND next_attempt_at <= :now
          AND (claimed_by IS NULL OR claimed_by = :me OR claimed_by NOT IN (SELECT key FROM live))
        ORDER BY next_attempt_at, id LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    UPDATE outbox o SET claimed_by = :me FROM due
    WHERE o.id = due.id AND :me IN (SELECT key FROM live)
    RETURNING o.id, o.mail_from, o.recipients, o.attempts,
        (SELECT json_object_agg(u.address, u.reply) FROM undeliverable_addresses u
         WHERE u.address = ANY(SELECT lower(r) FROM unnest(o.recipients) AS r)),
        o.next_attempt_at""")


def claim(conn: Connection, owner: int, now: datetime, limit: int) -> list[Claimed]:
    """Claim up to ``limit`` due rows for ``owner``, longest due first (then oldest; the live
    mail of a backlog is due earlier: :class:`mailbot.outbox.Queue`): unclaimed ones, ours, and
    those of daemons whose lock is gone. Nothing when our own lock is not held."""
    rows = conn.execute(_CLAIM, {"space": LOCK_SPACE, "me": owner, "now": now, "limit": limit}).all()
    return [Claimed(r[0], r[1], list(r[2]), r[3], r[4] or {})
            for r in sorted(rows, key=lambda r: (r[5], r[0]))]


def put_off(conn: Connection, ids: list[int], until: datetime, reason: str) -> None:
    """Give claimed rows back unsent, due again at ``until`` (one statement)."""
    conn.execute(text("UPDATE outbox SET next_attempt_at = :until, last_error = :reason, "
                      "claimed_by = NULL WHERE id = ANY(:ids)"),
                 {"until": until, "reason": reason, "ids": ids})


def bring_forward(conn: Connection, now: datetime, reason_prefix: str) -> int:
    """Make every row put off for ``reason_prefix`` due now; how many are waiting."""
    return conn.execute(text(
        "UPDATE outbox SET next_attempt_at = least(next_attempt_at, :now) "
        "WHERE status = 'pending' AND starts_with(last_error, :prefix)"),
        {"now": now, "prefix": reason_prefix}).rowcount
