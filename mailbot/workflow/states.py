"""The one state machine for a request's status."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..models import Event, Message, Request
from ..status import Status


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
                  at: datetime, message: Message | None = None, **details: Any) -> Event:
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
    return record(session, request, "status", actor=actor, at=at, message=message,
                  from_status=current.value, to_status=target.value, **details)


def record(session: Session, request: Request | None, kind: str, *, actor: str, at: datetime,
           message: Message | None = None, from_status: str | None = None,
           to_status: str | None = None, **details: Any) -> Event:
    """Write one audit event."""
    event = Event(request=request, at=at, actor=actor, kind=kind, from_status=from_status,
                  to_status=to_status, message=message, details=details)
    session.add(event)
    return event
