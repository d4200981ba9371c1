"""Writing incoming messages and their attachments into a request's trail."""
from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from ..models import AttachmentRow, Message, Request
from ..parsers import ParsedMail


def record_incoming(session: Session, mail: ParsedMail, inbound_id: int,
                    request: Request | None) -> Message:
    """The message (new text, thread ids) and every attachment, decoded."""
    message = Message(
        request_id=request.id if request else None, direction="in", inbound_id=inbound_id,
        message_id=mail.message_id, in_reply_to=mail.in_reply_to[0] if mail.in_reply_to else None,
        kind=mail.kind.value, sender=mail.from_addr, recipients=list(mail.to + mail.cc),
        subject=mail.subject, body=mail.new_text or mail.text, sent_at=mail.date)
    session.add(message)
    session.flush()
    session.add_all(
        AttachmentRow(message_id=message.id, filename=a.filename, content_type=a.content_type,
                      size=a.size, sha256=hashlib.sha256(a.data).hexdigest(), inline=a.inline,
                      data=a.data)
        for a in mail.attachments)
    return message
