"""Where the bytes of a file are, and reading them back.

A file that came in by mail stays in its raw message (``inbound.raw``): it is
not stored a second time, decoded. ``attachments`` rows say which file of the
message it is (its SHA-256), and reading it parses that message again, as the
intake did, and takes the file with that hash. Storing every file twice had
the intake write 70 % more bytes than the raw mail alone.

Databases from version 5 hold the files of the mail stored then in the file
store, the ``files`` table, once per content; reading looks there first.

Reading a file back parses mail anyone could have sent, so it is bounded like the
intake: the parse runs in a worker process (:func:`mailbot.parsing.parse_keeping_files`)
under READ_TIMEOUT, twice the default ``limits.parse_timeout`` (the message passed the
intake's deadline once, so only a machine under heavy load should take longer). A parse
that passes it raises LookupError, as an unreadable file does: the SMTP sender marks that
mail failed with the reason instead of waiting on it.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

import psycopg

from ..parsers import ParseOptions
from ..parsing import DEFAULT_TIMEOUT, ParseAborted, parse_keeping_files

# the limits were checked when the mail came in; reading a file back never refuses it
_READ_OPTIONS = replace(ParseOptions(), max_message_bytes=sys.maxsize,
                        max_attachment_bytes=sys.maxsize, max_attachments=sys.maxsize)

READ_TIMEOUT = 2 * DEFAULT_TIMEOUT  # seconds to parse one stored mail again for its files
Wanted = tuple[str, int | None]  # a file's sha256 and the inbound mail it came in (None: none)


def read(cursor: psycopg.Cursor, sha256: str, inbound_id: int | None) -> bytes:
    """The bytes of one file (``cursor`` should receive in binary: db.binary_cursor)."""
    return read_many(cursor, [(sha256, inbound_id)])[0]


def read_many(cursor: psycopg.Cursor, wanted: Sequence[Wanted]) -> list[bytes]:
    """The bytes of these files, in order; each mail they came in is parsed once.

    Raises LookupError naming the file when it cannot be found.
    """
    if not wanted:
        return []
    stored = dict(cursor.execute("SELECT sha256, data FROM files WHERE sha256 = ANY(%s)",
                                 (list({sha256 for sha256, _ in wanted}),)).fetchall())
    in_mail: dict[int, dict[str, bytes]] = {}
    found = []
    for sha256, inbound_id in wanted:
        if sha256 not in stored:
            if inbound_id is None:
                raise LookupError(f"file {sha256} is not in the file store")
            if inbound_id not in in_mail:
                in_mail[inbound_id] = _files_in_mail(cursor, inbound_id)
            if sha256 not in in_mail[inbound_id]:
                raise LookupError(f"inbound {inbound_id} holds no file {sha256}")
        found.append(stored[sha256] if sha256 in stored else in_mail[inbound_id][sha256])
    return found


def _files_in_mail(cursor: psycopg.Cursor, inbound_id: int) -> dict[str, bytes]:
    """The files of one stored mail, by sha256, decoded as the intake decoded them."""
    row = cursor.execute("SELECT raw FROM inbound WHERE id = %s", (inbound_id,)).fetchone()
    if row is None:
        raise LookupError(f"inbound {inbound_id} does not exist")
    try:
        mail = parse_keeping_files(row[0], _READ_OPTIONS, READ_TIMEOUT)
    except ParseAborted as exc:
        raise LookupError(f"the files of inbound {inbound_id} cannot be read: {exc}") from None
    return {a.sha256: a.data for a in mail.attachments}
