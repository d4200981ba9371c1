"""Writing incoming messages and their attachments into a request's trail."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from .. import files
from ..db import binary_cursor
from ..models import AttachmentRow, Message, Request
from ..parsers import ParsedMail


def record_incoming(session: Session, mail: ParsedMail, inbound_id: int | None,
                    request: Request | None, at: datetime) -> Message:
    """The message (new text, thread ids) and its attachments, whose bytes are in the file store.

    The processor hands over mail whose files are kept already; files a caller
    still holds (a test, a request typed in by staff) are kept here, in the
    caller's transaction.
    """
    if any(a.data is not None for a in mail.attachments):
        with binary_cursor(session) as cursor:
            files.keep(cursor, mail.attachments)
    message = Message(
        request=request, direction="in", inbound_id=inbound_id,
        message_id=mail.message_id, in_reply_to=mail.in_reply_to[0] if mail.in_reply_to else None,
        kind=mail.kind.value, sender=mail.from_addr, recipients=list(mail.to + mail.cc),
        subject=mail.subject, body=mail.new_text or mail.text, sent_at=mail.date, created_at=at,
        attachments=[AttachmentRow(filename=a.filename, content_type=a.content_type, size=a.size,
                                   sha256=a.sha256, inline=a.inline)
                     for a in mail.attachments])
    session.add(message)
    return message
