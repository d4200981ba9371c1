"""Bounces (RFC 3464), read receipts (RFC 8098) and refusals of mail we sent.

They never create requests. A bounce marks the outgoing mail and its delivery
record failed and alerts staff (the customer did not get our answer); a delay
notice is only recorded. A read receipt confirms or fails the delivery record of
the mail it is about (ОП2 files, :meth:`Op2.read_receipt`). A refusal is our own
SMTP server's permanent "no" to some recipients while we sent (:func:`apply_refusal`).
A permanent failure in a bounce marks the address undeliverable, as a refusal does
(:mod:`.undeliverable`): only addresses the bounced mail was sent to, since a bounce is as
forgeable as any mail.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from ..parsers import ParsedMail
from ..register.models import Delivery, Message, Outbox, Request
from .actions import Workflow
from .op2 import Op2
from .states import record
from .undeliverable import mark

log = logging.getLogger(__name__)


def apply_report(flow: Workflow, mail: ParsedMail, message: Message) -> None:
    report = mail.dsn or mail.mdn
    original = report.original_message_id if report else None
    outbox = flow.session.scalar(select(Outbox).where(Outbox.message_id == original)) \
        if original else None
    if outbox is None:
        log.info("%s about mail we do not know (%s): kept, nothing to update",
                 mail.kind.value, original or "no Message-ID")
        return
    request = flow.session.get(Request, outbox.request_id) if outbox.request_id else None
    message.request = request
    if mail.dsn:
        _bounce(flow, mail, message, outbox, request)
    else:
        _receipt(flow, mail, message, outbox, request)


def _bounce(flow: Workflow, mail: ParsedMail, message: Message, outbox: Outbox,
            request: Request | None) -> None:
    failed = [r for r in mail.dsn.recipients
              if (r.action or "").lower() == "failed" or r.permanent
              or ((r.action or "").lower() != "delayed" and not r.status)]
    summary = "; ".join(f"{r.address}: {r.status or '?'} {r.diagnostic or ''}".strip()
                        for r in (failed or mail.dsn.recipients)) or mail.kind_reason
    if not failed:
        record(flow.session, request, "delivery_delayed", actor="mailer-daemon", at=flow.now,
               message=message, outbox=outbox.message_id, details=summary)
        return
    outbox.status, outbox.last_error = "failed", f"bounced: {summary}"[:2000]
    record(flow.session, request, "bounced", actor="mailer-daemon", at=flow.now,
           message=message, outbox=outbox.message_id, details=summary)
    ours = {r.lower() for r in outbox.recipients}  # a bounce names only addresses we wrote to
    for failure in failed:
        if failure.address.lower() in ours and (
                failure.permanent or (failure.action or "").lower() == "failed"):
            mark(flow, failure.address, f"{failure.status or '?'} {failure.diagnostic or ''}".strip(),
                 source="dsn", outbox_id=outbox.id, request=request)
    undelivered = Op2(flow).failed(request, _waiting(flow, outbox), summary, by="mailer-daemon",
                                   message=message)
    if request is not None:
        flow.notify_staff(request, "staff_bounce", summary=summary, kind=outbox.kind,
                          recipients=outbox.recipients, deliveries=undelivered)


def _receipt(flow: Workflow, mail: ParsedMail, message: Message, outbox: Outbox,
             request: Request | None) -> None:
    record(flow.session, request, "read_receipt", actor=mail.from_addr or "unknown", at=flow.now,
           message=message, outbox=outbox.message_id, disposition=mail.mdn.disposition)
    if request is not None:
        Op2(flow).read_receipt(request, outbox, mail, message)


def _waiting(flow: Workflow, outbox: Outbox, recipients: list[str] | None = None) -> list[Delivery]:
    """The deliveries of ``outbox`` (to ``recipients``) still waiting for a confirmation."""
    query = select(Delivery).where(Delivery.outbox_id == outbox.id, Delivery.status == "sent")
    if recipients is not None:
        query = query.where(Delivery.recipient.in_(recipients))
    return list(flow.session.scalars(query.order_by(Delivery.id)))


def apply_refusal(flow: Workflow, outbox_id: int, refused: dict[str, str]) -> None:
    """Our SMTP server refused recipients of a mail for good (or they are known to be refused).

    The sender has marked the row; here the delivery records of those
    recipients fail, the request's timeline gets a ``refused`` event, and the
    request's staff are told, as for a bounce, when the mail was meant for the
    customer. Staff mail that was refused is not reported by more staff mail,
    so a refused staff address cannot start a loop.
    """
    outbox = flow.session.get(Outbox, outbox_id)
    request = flow.session.get(Request, outbox.request_id) if outbox.request_id else None
    summary = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
    record(flow.session, request, "refused", actor="smtp", at=flow.now,
           outbox=outbox.message_id, details=summary)
    undelivered = Op2(flow).failed(request, _waiting(flow, outbox, list(refused)), summary,
                                   by="smtp", message=None)
    if request is not None and not outbox.kind.startswith("staff_"):
        flow.notify_staff(request, "staff_bounce", summary=summary, kind=outbox.kind,
                          recipients=list(refused), deliveries=undelivered)
