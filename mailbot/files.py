"""The file store: every decoded file once, by the SHA-256 of its bytes.

Files are kept as soon as they are decoded, each in a transaction of its own
(a parsing process's connection, or an autocommit connection of the
processor), never in the long transaction of a batch: a file is content, it is
the same whichever message refers to it, and a lock on it held for a batch
would make a parsing process wait for the batch that waits for it.
``attachments`` rows refer to the bytes by ``sha256``. A file that no
attachment refers to (its message was quarantined) stays; a retry refers to it
again.
"""
from __future__ import annotations

from collections.abc import Iterable

import psycopg

from .parsers import Attachment

_KEEP = "INSERT INTO files (sha256, size, data) VALUES (%s, %s, %b) ON CONFLICT (sha256) DO NOTHING"


def keep(cursor: psycopg.Cursor, attachments: Iterable[Attachment]) -> tuple[Attachment, ...]:
    """Store the bytes the store does not hold yet; the attachments without their bytes."""
    attachments = tuple(attachments)
    rows = {a.sha256: (a.sha256, a.size, a.data) for a in attachments if a.data is not None}
    if rows:
        cursor.executemany(_KEEP, list(rows.values()))
    return tuple(a.kept() for a in attachments)


def read(cursor: psycopg.Cursor, sha256: str) -> bytes:
    """The bytes of one stored file (``cursor`` should receive in binary: db.binary_cursor)."""
    row = cursor.execute("SELECT data FROM files WHERE sha256 = %s", (sha256,)).fetchone()
    if row is None:
        raise LookupError(f"no stored file {sha256}")
    return row[0]
