"""The one way to send mail: compose it and write it to ``outbox`` (and the trail).

Nothing here talks to a server. The row is written in the caller's transaction,
with its Message-ID fixed at creation, so a reply is never lost or sent for a
change that was rolled back. ``transport/smtp.py`` delivers the rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from sqlalchemy.orm import Session

from .config import Config
from .models import Message, Outbox
from .render import Rendered

LOOP_HEADER = "X-Loop"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Outgoing:
    """What to send; ``automatic`` mail carries RFC 3834 headers (acks, notices)."""

    kind: str  # ack, relay, notify, ...
    to: tuple[str, ...]
    content: Rendered
    request_id: int | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    automatic: bool = True
    from_name: str | None = None
    reply_to: str | None = None
    attachments: tuple[OutgoingAttachment, ...] = field(default=())
    extra_headers: tuple[tuple[str, str], ...] = ()


def clean_header(value: str) -> str:
    """A header value built from user input never carries CR/LF or other controls."""
    return " ".join(_CONTROL.sub(" ", value).split())


def compose(config: Config, mail: Outgoing, now: datetime) -> EmailMessage:
    """The complete MIME message for ``mail``, from the support address."""
    support = config.support
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(clean_header(mail.from_name or support.name), addr_spec=support.address)
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = clean_header(mail.content.subject)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=support.address.rpartition("@")[2] or "localhost")
    if mail.reply_to:
        msg["Reply-To"] = mail.reply_to
    if mail.in_reply_to:
        msg["In-Reply-To"] = f"<{mail.in_reply_to}>"
    references = [r for r in mail.references if r] or ([mail.in_reply_to] if mail.in_reply_to else [])
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references[-20:])
    msg[LOOP_HEADER] = support.address
    if mail.automatic:
        msg["Auto-Submitted"] = "auto-replied" if mail.in_reply_to else "auto-generated"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = "bulk"
    for name, value in mail.extra_headers:
        msg[name] = clean_header(value)
    msg.set_content(mail.content.text)
    if mail.content.html:
        msg.add_alternative(mail.content.html, subtype="html")
    for item in mail.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        msg.add_attachment(item.data, maintype=maintype or "application",
                           subtype=subtype or "octet-stream", filename=item.filename)
    return msg


def enqueue(session: Session, config: Config, mail: Outgoing, now: datetime) -> Message:
    """Write ``mail`` to the outbox and the request's trail; the caller commits."""
    msg = compose(config, mail, now)
    message_id = msg["Message-ID"].strip("<>")
    row = Outbox(message_id=message_id, kind=mail.kind, request_id=mail.request_id,
                 mail_from=config.support.address, recipients=list(mail.to),
                 raw=msg.as_bytes(), next_attempt_at=now, created_at=now)
    session.add(row)
    session.flush()
    trail = Message(request_id=mail.request_id, direction="out", outbox_id=row.id,
                    message_id=message_id, in_reply_to=mail.in_reply_to, kind=mail.kind,
                    sender=config.support.address, recipients=list(mail.to),
                    subject=msg["Subject"], body=mail.content.text, sent_at=now,
                    created_at=now)
    session.add(trail)
    session.flush()
    return trail
