"""Writing incoming messages and their attachments into a request's trail."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ..parsers import ParsedMail
from ..register.models import AttachmentRow, Message, Request


def record_incoming(session: Session, mail: ParsedMail, inbound_id: int | None,
                    request: Request | None, at: datetime) -> Message:
    """The message (its content: the new text, a forwarded mail too; thread ids) and its attachments.

    The bytes of the files stay in the raw mail of ``inbound_id`` (see
    :mod:`mailbot.register.files`); mail with none (typed in by staff) carries no files.
    """
    if inbound_id is None and mail.attachments:
        raise ValueError("files are kept in their raw mail: a message without one has no files")
    message = Message(
        request=request, direction="in", inbound_id=inbound_id,
        message_id=mail.message_id, in_reply_to=mail.in_reply_to[0] if mail.in_reply_to else None,
        kind=mail.kind.value, sender=mail.author, recipients=list(mail.to + mail.cc),
        subject=mail.subject, body=mail.content, sent_at=mail.date, created_at=at,
        attachments=[AttachmentRow(filename=a.filename, original_filename=a.original_name,
                                   content_type=a.content_type, size=a.size, sha256=a.sha256,
                                   inline=a.inline, **_span_columns(a.span))
                     for a in mail.attachments])
    session.add(message)
    return message


def record_follow_up(session: Session, mail: ParsedMail, question: str, request: Request,
                     at: datetime) -> Message:
    """The text of a follow-up request: the new question of a customer's reply, which is itself
    kept on the request it answered (its files stay there too)."""
    message = Message(
        request=request, direction="in", inbound_id=None, message_id=None,
        in_reply_to=mail.message_id, kind=mail.kind.value, sender=mail.author,
        recipients=list(mail.to + mail.cc), subject=mail.subject, body=question,
        sent_at=mail.date, created_at=at, attachments=[])
    session.add(message)
    return message


def _span_columns(span: tuple[int, int, str] | None) -> dict:
    """Where a file's encoded body lies in its raw mail (mailbot.files reads it from there)."""
    if span is None:
        return {}
    start, end, encoding = span
    return {"part_start": start, "part_end": end, "part_encoding": encoding}
