"""Storing raw messages in ``inbound``: the one place intake commits bytes."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..register.models import Inbound
from .notify import INBOUND, notify

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class RawMail:
    """One message as it came off the wire."""

    raw: bytes
    source: str  # 'imap:<account>/<folder>' or 'ingest'
    uid: int | None = None
    mailbox: str = "support"  # the role of the mailbox: 'support' or 'tp2' (ОП4)


def dedup_key(raw: bytes) -> str:
    """``mid:<Message-ID>`` when the message has one, else ``sha256:<hex of the bytes>``."""
    head = _HEADER_END.split(raw, 1)[0]
    match = _MESSAGE_ID.search(head)
    if match:
        value = re.sub(rb"\s+", b"", match.group(1)).strip(b"<>")
        if value:
            return "mid:" + value.decode("ascii", "replace")[:900]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def store(session: Session, mails: list[RawMail]) -> dict[int, bytes]:
    """Insert the messages not seen before; the new rows' bytes by id. The caller commits."""
    if not mails:
        return {}
    rows = {}
    for mail in mails:  # one row per key, even when a batch repeats a message
        rows.setdefault(dedup_key(mail.raw), mail)
    statement = (
        insert(Inbound)
        .values([{"dedup_key": key, "source": m.source, "uid": m.uid, "raw": m.raw,
                  "size": len(m.raw), "mailbox": m.mailbox} for key, m in rows.items()])
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(Inbound.id, Inbound.dedup_key)
    )
    new = {row.id: rows[row.dedup_key].raw for row in session.execute(statement)}
    if new:
        notify(session, INBOUND)
    return new


_HEADER_LINE = re.compile(rb"^(?:From |[!-9;-~]+:)")


def looks_like_mail(raw: bytes) -> bool:
    """True when ``raw`` starts like an RFC 5322 message (or an mbox 'From ' line)."""
    return bool(raw.strip()) and bool(_HEADER_LINE.match(raw.lstrip(b"\r\n")))
