"""Storing raw messages in ``inbound``: the one place intake commits bytes."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import getaddresses

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..register.models import Inbound
from .notify import INBOUND, notify

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_THREAD_HEADER = re.compile(rb"^(from|in-reply-to|references|subject):[ \t]*((?:.*)(?:\r?\n[ \t].*)*)",
                            re.IGNORECASE | re.MULTILINE)
_MSG_ID = re.compile(r"<([^<>\s]+)>")
# a request number's year and serial (ТП-2026-000123), whatever the prefix and the dashes
_NUMBER = re.compile(r"(?<![0-9])([0-9]{4})\s*[-\u2010-\u2015\u2212]\s*([0-9]{1,6})(?![0-9])")


@dataclass(frozen=True)
class RawMail:
    """One message as it came off the wire."""

    raw: bytes
    source: str  # 'imap:<account>/<folder>' or 'ingest'
    uid: int | None = None
    mailbox: str = "support"  # the role of the mailbox: 'support' or 'tp2' (ОП4)


def _head(raw: bytes) -> bytes:
    """The header block (the whole mail when it has no blank line), without copying the body."""
    end = _HEADER_END.search(raw)
    return raw[:end.start()] if end else raw


def dedup_key(raw: bytes) -> str:
    """``mid:<Message-ID>`` when the message has one, else ``sha256:<hex of the bytes>``."""
    match = _MESSAGE_ID.search(_head(raw))
    if match:
        value = re.sub(rb"\s+", b"", match.group(1)).strip(b"<>")
        if value:
            return "mid:" + value.decode("ascii", "replace")[:900]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def thread_keys(raw: bytes, key: str) -> list[str]:
    """What ties a mail to other mail, read from its headers without parsing it (cheaply):
    its sender (``from:``), its own and the referenced Message-IDs (``mid:``, as in
    :func:`dedup_key`) and the request numbers of its subject (``num:``). Two pending mails
    that share a key are processed in the order they were stored, by one daemon at a time
    (:func:`mailbot.transport.claims.claim_inbound`). Generous on purpose: a false tie only
    costs a little parallelism."""
    keys = {key} if key.startswith("mid:") else set()
    for name, value in _THREAD_HEADER.findall(_head(raw)):
        text = re.sub(r"\r?\n[ \t]", " ", value.decode("utf-8", "replace"))
        name = name.lower()
        if name == b"from":
            keys.update(f"from:{address.lower()}" for _, address in getaddresses([text]) if "@" in address)
        elif name == b"subject":
            keys.update(f"num:{year}-{int(serial)}" for year, serial in _NUMBER.findall(_decoded(text)))
        else:
            keys.update(f"mid:{mid[:900]}" for mid in _MSG_ID.findall(text))
    return sorted(keys)


def _decoded(header: str) -> str:
    try:
        return str(make_header(decode_header(header)))
    except Exception:  # a broken encoded word: the raw text is as good as it gets here
        return header


# libpq keeps the output buffer it grew to send a mail for as long as the connection lives: a
# connection that stored a bigger mail is closed after its transaction instead of being pooled
BIG_MAIL = 2 * 1024 * 1024


_INSERT = (insert(Inbound.__table__).on_conflict_do_nothing(index_elements=["dedup_key"])
           .returning(Inbound.id, Inbound.dedup_key))


def store(session: Session, mails: list[RawMail]) -> dict[int, bytes]:
    """Insert the messages not seen before; the new rows' bytes by id. The caller commits."""
    if not mails:
        return {}
    rows = {}
    for mail in mails:  # one row per key, even when a batch repeats a message
        rows.setdefault(dedup_key(mail.raw), mail)
    values = [{"dedup_key": key, "source": m.source, "uid": m.uid, "raw": m.raw, "size": len(m.raw),
               "mailbox": m.mailbox, "thread_keys": thread_keys(m.raw, key)} for key, m in rows.items()]
    # one statement compiled once (SQLAlchemy's "insertmanyvalues" sends the rows in one
    # multi-row INSERT); a statement of the batch's own VALUES was compiled for every batch
    new = {row.id: rows[row.dedup_key].raw
           for row in session.connection().execute(_INSERT, values)}
    if any(len(mail.raw) > BIG_MAIL for mail in rows.values()):
        session.connection().detach()  # closed after the transaction, not pooled (see BIG_MAIL)
    if new:
        notify(session, INBOUND)
    return new


_HEADER_LINE = re.compile(rb"^(?:From |[!-9;-~]+:)")


def looks_like_mail(raw: bytes) -> bool:
    """True when ``raw`` starts like an RFC 5322 message (or an mbox 'From ' line)."""
    return bool(raw.strip()) and bool(_HEADER_LINE.match(raw.lstrip(b"\r\n")))
