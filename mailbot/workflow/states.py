"""The one state machine for a request's status."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..register.db import insert_rows
from ..register.models import Event, Message, Request
from ..register.status import Status

S = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.NEW: frozenset({S.OPEN, S.AWAITING_CONTACT_INFO, S.REJECTED}),
    S.AWAITING_CONTACT_INFO: frozenset({S.OPEN, S.REJECTED, S.CLOSED}),
    S.OPEN: frozenset({S.AWAITING_CUSTOMER, S.ESCALATED_OP4, S.RESOLVED, S.CLOSED}),
    S.AWAITING_CUSTOMER: frozenset({S.OPEN, S.ESCALATED_OP4, S.RESOLVED, S.CLOSED}),
    S.ESCALATED_OP4: frozenset({S.OPEN, S.AWAITING_CUSTOMER, S.RESOLVED, S.CLOSED}),
    S.RESOLVED: frozenset({S.OPEN, S.CLOSED}),
    S.CLOSED: frozenset({S.OPEN}),
    S.REJECTED: frozenset({S.OPEN}),
}


class TransitionError(ValueError):
    """A status change the regulation's life cycle does not allow."""


def can_change(current: str, target: Status) -> bool:
    return target in TRANSITIONS[Status(current)]


def change_status(session: Session, request: Request, target: Status, *, actor: str,
                  at: datetime, message: Message | None = None, **details: Any) -> None:
    """Move ``request`` to ``target`` and record who did it, when, from which message."""
    current = Status(request.status)
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"{request.number}: {current.value} → {target.value} is not allowed")
    request.status = target.value
    request.updated_at = at
    if target is S.RESOLVED:
        request.resolved_at = at
    elif target is S.CLOSED:
        request.closed_at = at
    elif target is S.OPEN and current in (S.CLOSED, S.RESOLVED):
        request.closed_at = None
    record(session, request, "status", actor=actor, at=at, message=message,
           from_status=current.value, to_status=target.value, **details)


def record(session: Session, request: Request | None, kind: str, *, actor: str, at: datetime,
           message: Message | None = None, from_status: str | None = None,
           to_status: str | None = None, **details: Any) -> None:
    """Write one audit event (into the session's :class:`Journal` when it has one)."""
    event = {"request": request, "message": message, "at": at, "actor": actor, "kind": kind,
             "from_status": from_status, "to_status": to_status, "details": details}
    journal = Journal.of(session)
    if journal is not None:
        journal.events.append(event)
    else:
        session.add(Event(**event))


class Journal:
    """A batch's audit events, written in one statement after its flush.

    The intake writes several events per message; as ORM objects they cost a
    good part of a batch's flush. While a journal is open on a session,
    :func:`record` collects the events here; :meth:`write` inserts them once
    the flush has given their requests and messages ids, and :meth:`discard`
    drops them with a rolled-back attempt. The caller (the processor) calls
    them next to its flushes and rollbacks; everywhere else events are ORM
    objects, written with the session's other rows.
    """

    KEY = "mailbot.journal"

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[dict[str, Any]] = []
        session.info[self.KEY] = self

    @classmethod
    def of(cls, session: Session) -> "Journal | None":
        """The journal open on ``session``, if any."""
        return session.info.get(cls.KEY)

    def write(self) -> None:
        """Insert the events recorded since the last write (after a flush, in its transaction)."""
        rows = [{**{k: v for k, v in event.items() if k not in ("request", "message")},
                 "request_id": event["request"].id if event["request"] is not None else None,
                 "message_id": event["message"].id if event["message"] is not None else None}
                for event in self.events]
        self.events.clear()
        insert_rows(self.session.connection(), Event.__table__, rows)

    def discard(self) -> None:
        """Forget the events of an attempt that was rolled back."""
        self.events.clear()

    def close(self) -> None:
        """Events are ORM objects again (any left belong to an attempt that failed)."""
        self.session.info.pop(self.KEY, None)
        self.events.clear()
