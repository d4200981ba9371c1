"""Register upkeep from the command line: staff and the known-error database."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .models import Incident, Staff
from .parsers.addresses import is_valid_address

TIERS = ("tp1", "tp2")


class AdminError(ValueError):
    """The change cannot be made as given; the message says why."""


def add_staff(session: Session, *, login: str, full_name: str, email: str, tier: str,
              department: str = "", qualification: str = "", years: int = 0,
              supervisor: str | None = None) -> Staff:
    """Add a staff member, or update the one with this login."""
    if tier not in TIERS:
        raise AdminError(f"tier must be tp1 or tp2, got {tier!r}")
    if not is_valid_address(email.strip().lower()):
        raise AdminError(f"not one plain e-mail address: {email!r}")
    boss = None
    if supervisor:
        boss = session.scalar(select(Staff).where(Staff.login == supervisor))
        if boss is None:
            raise AdminError(f"no staff member {supervisor!r} to be the supervisor")
    staff = session.scalar(select(Staff).where(Staff.login == login)) or Staff(login=login)
    staff.full_name, staff.email, staff.tier = full_name, email.strip().lower(), tier
    staff.department, staff.qualification, staff.experience_years = department, qualification, years
    staff.supervisor_id, staff.active = boss.id if boss else None, True
    session.add(staff)
    session.flush()
    return staff


def set_staff_active(session: Session, login: str, active: bool) -> Staff:
    staff = session.scalar(select(Staff).where(Staff.login == login))
    if staff is None:
        raise AdminError(f"no staff member {login!r}")
    staff.active = active
    return staff


def staff_table(session: Session) -> str:
    rows = session.scalars(select(Staff).order_by(Staff.tier, Staff.login)).all()
    return "\n".join(
        f"{s.login:<14} {s.tier} {'active ' if s.active else 'retired'} {s.experience_years:>2} y  "
        f"{s.email:<30} {s.full_name} — {s.department or '-'}" for s in rows) or "no staff"


def add_incident(session: Session, *, title: str, symptoms: str = "", solution: str = "",
                 prefix: str = "INC", number: str | None = None, now: datetime) -> Incident:
    """A new known error; numbered ``INC-000001`` upwards unless a number is given."""
    if not title.strip():
        raise AdminError("an incident needs a title")
    if number is None:
        session.execute(text("SELECT pg_advisory_xact_lock(7201002)"))
        taken = session.scalars(select(Incident.number)).all()
        suffixes = [int(m.group(1)) for n in taken if (m := re.search(r"(\d+)$", n))]
        number = f"{prefix}-{max(suffixes, default=0) + 1:06d}"
    incident = Incident(number=number, title=title.strip(), symptoms=symptoms, solution=solution,
                        created_at=now, updated_at=now)
    session.add(incident)
    session.flush()
    return incident


def incident_table(session: Session) -> str:
    rows = session.scalars(select(Incident).order_by(Incident.number)).all()
    return "\n".join(f"[{i.number}] {i.status:<11} {i.title}" for i in rows) or "no incidents"
