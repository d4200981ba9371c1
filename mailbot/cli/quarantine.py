"""Operator actions on quarantined mail. Nothing here deletes a message."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ..register.models import Inbound, Quarantine


def retry(session: Session, item: Quarantine, now: datetime) -> None:
    """Send the stored message through the chain again (after a fix)."""
    item.resolved_at, item.resolution = now, "retried"
    session.get(Inbound, item.inbound_id).status = "pending"


def drop(session: Session, item: Quarantine, now: datetime) -> None:
    """Mark it as looked at and not to be processed; the raw bytes stay in ``inbound``."""
    item.resolved_at, item.resolution = now, "dropped"
