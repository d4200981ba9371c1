"""Operator actions on quarantined mail. Nothing here deletes a message."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..register.models import Inbound, Quarantine


def open_items(session: Session) -> list[tuple[Quarantine, Inbound]]:
    rows = session.execute(
        select(Quarantine, Inbound).join(Inbound, Inbound.id == Quarantine.inbound_id)
        .where(Quarantine.resolved_at.is_(None)).order_by(Quarantine.id))
    return [(item, inbound) for item, inbound in rows]


def get(session: Session, quarantine_id: int) -> tuple[Quarantine, Inbound] | None:
    row = session.execute(select(Quarantine, Inbound).join(Inbound, Inbound.id == Quarantine.inbound_id)
                          .where(Quarantine.id == quarantine_id)).first()
    return tuple(row) if row else None


def retry(session: Session, item: Quarantine, now: datetime) -> None:
    """Send the stored message through the chain again (after a fix)."""
    item.resolved_at, item.resolution = now, "retried"
    session.get(Inbound, item.inbound_id).status = "pending"


def drop(session: Session, item: Quarantine, now: datetime) -> None:
    """Mark it as looked at and not to be processed; the raw bytes stay in ``inbound``."""
    item.resolved_at, item.resolution = now, "dropped"
