"""Where the bytes of a file are, and reading them back.

A file that came in by mail stays in its raw message (``inbound.raw``): it is
not stored a second time, decoded. ``attachments`` rows say which file of the
message it is (its SHA-256) and, from version 17, where its encoded body lies
in the raw mail (``part_start``, ``part_end``, ``part_encoding``: the parser's
span). Reading it takes that slice from the database and decodes it, and the
result counts only when its SHA-256 is the file's; otherwise (a file with no
span: from winmail.dat, a nested message, stored earlier) the message is parsed
again, as the intake did, and the file with that hash taken. Storing every file
twice had the intake write 70 % more bytes than the raw mail alone; parsing the
whole mail for each file sent cost 16.7 ms a mail in the benchmark.

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

import binascii
import hashlib
import quopri
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
Span = tuple[int, int, str]  # where a file's encoded body lies in its raw mail, and its encoding
# a file's sha256, the inbound mail it came in (None: none) and, when known, its span there
Wanted = tuple[str, int | None] | tuple[str, int | None, Span | None]


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
                                 (list({item[0] for item in wanted}),)).fetchall())
    in_mail: dict[int, dict[str, bytes]] = {}
    found = []
    for sha256, inbound_id, *span in wanted:
        if sha256 not in stored and inbound_id is not None and span and span[0]:
            data = _from_span(cursor, inbound_id, span[0], sha256)
            if data is not None:
                found.append(data)
                continue
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


def _from_span(cursor: psycopg.Cursor, inbound_id: int, span: Span, sha256: str) -> bytes | None:
    """The file decoded from its slice of the raw mail; None when that is not the file."""
    start, end, encoding = span
    row = cursor.execute("SELECT substring(raw FROM %s FOR %s) FROM inbound WHERE id = %s",
                         (start + 1, end - start, inbound_id)).fetchone()
    if row is None:
        return None
    encoded = bytes(row[0])
    try:  # as the parser decoded it (parsers/mime.py, _payload_bytes)
        data = (binascii.a2b_base64(encoded) if encoding == "base64"
                else quopri.decodestring(encoded) if encoding == "quoted-printable" else encoded)
    except (ValueError, binascii.Error):
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None
