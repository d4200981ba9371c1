"""The ОП2 records (regulation §3): files sent to customers, and files asked of them.

A delivery (``deliveries``) is written with each mail that carries files to a
customer (:mod:`mailbot.outbox`); it waits in ``sent`` until it is confirmed,
fails or is waived, and says how, when, by whom and from which message. A file
request (``file_requests``) waits until the customer's files arrive or the
request closes. This module only reads and changes these rows; the steps that
also write mail are in :mod:`mailbot.workflow.op2`.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from ..outbox import Queue
from ..register.models import Delivery, FileRequest, Message, Request


class DeliveryUnconfirmed(ValueError):
    """A request with unconfirmed files may close only by a staff override with a reason."""


def unsettled(session: Session, request: Request) -> list[Delivery]:
    """The request's deliveries that hold up its closing, oldest first.

    Those waiting for a confirmation (``sent``), and failed ones that no later
    confirmed delivery made good (the files were sent again and arrived). The
    batch's mail with files, still queued, counts as waiting too (as records
    not in the session).
    """
    holding: list[Delivery] = []
    for row in _of_request(session, Delivery, request):
        if row.status == "confirmed":
            holding = [d for d in holding if d.status != "failed"]
        elif row.status in ("sent", "failed"):
            holding.append(row)
    queue = Queue.of(session)
    queued = [Delivery(recipient=address, files=[f.filename for f in q.mail.files], status="sent",
                       reminders=0, created_at=q.at)
              for q in (queue.of_request(request) if queue else ()) if q.mail.receipt
              for address in q.mail.to]
    return holding + queued


def stored(deliveries: list[Delivery]) -> list[Delivery]:
    """Those of ``deliveries`` that are rows (not the batch's queued mail)."""
    return [d for d in deliveries if not inspect(d).transient]


def waiting_file_requests(session: Session, request: Request) -> list[FileRequest]:
    """The request's file requests still waiting for the customer's files, oldest first."""
    return [row for row in _of_request(session, FileRequest, request) if row.status == "waiting"]


def _of_request(session: Session, model: type[Delivery] | type[FileRequest],
                request: Request) -> list:
    """Every row of ``model`` of the request, as the session has them, oldest first.

    Read without flushing (the processor writes a batch in one flush): the
    rows' state is the session's, with those added since the last flush.
    """
    added = [row for row in session.new if isinstance(row, model) and row.request is request]
    if request.id is None:
        return added
    with session.no_autoflush:
        rows = session.scalars(select(model).where(model.request_id == request.id)
                               .order_by(model.id)).all()
    return [row for row in rows if row not in session.deleted] + added


def confirm(delivery: Delivery, how: str, *, at: datetime, by: str, message: Message | None,
            note: str | None = None) -> None:
    """``how``: 'mdn', 'reply' or 'staff'; ``note``: how, in words (a staff member's)."""
    delivery.status, delivery.confirmed_by, delivery.confirmed_at = "confirmed", how, at
    _settle(delivery, at=at, by=by, message=message, note=note)


def fail(delivery: Delivery, failure: str, *, at: datetime, by: str,
         message: Message | None) -> None:
    delivery.status, delivery.failure = "failed", failure[:2000]
    _settle(delivery, at=at, by=by, message=message)


def waive(delivery: Delivery, reason: str, *, at: datetime, by: str,
          message: Message | None) -> None:
    """Closed by a staff override: the reason is the delivery's note."""
    delivery.status = "waived"
    _settle(delivery, at=at, by=by, message=message, note=reason)


def _settle(delivery: Delivery, *, at: datetime, by: str, message: Message | None,
            note: str | None = None) -> None:
    delivery.settled_at, delivery.settled_by, delivery.settled_message = at, by, message
    if note is not None:
        delivery.note = note
