"""Register upkeep from the command line: staff."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..parsers.addresses import is_valid_address
from ..register.models import Staff

TIERS = ("tp1", "tp2")


class AdminError(ValueError):
    """The change cannot be made as given; the message says why."""


def add_staff(session: Session, *, login: str, full_name: str, email: str, tier: str,
              department: str = "", qualification: str = "", years: int = 0,
              supervisor: str | None = None) -> Staff:
    """Add a staff member, or update the one with this login."""
    if tier not in TIERS:
        raise AdminError(f"tier must be tp1 or tp2, got {tier!r}")
    staff = session.scalar(select(Staff).where(Staff.login == login)) or Staff(login=login)
    staff.email = _email(session, staff, email)
    staff.full_name, staff.tier = full_name, tier
    staff.department, staff.qualification, staff.experience_years = department, qualification, years
    staff.active = True
    session.add(staff)
    session.flush()
    _set_supervisor(session, staff, supervisor)
    return staff


def edit_staff(session: Session, login: str, *, full_name: str | None = None,
               email: str | None = None, tier: str | None = None, department: str | None = None,
               qualification: str | None = None, years: int | None = None,
               supervisor: str | None = None, no_supervisor: bool = False) -> Staff:
    """Change what is given of a staff member's record (``no_supervisor``: nobody above them)."""
    staff = _find(session, login)
    if tier is not None and tier not in TIERS:
        raise AdminError(f"tier must be tp1 or tp2, got {tier!r}")
    if email is not None:
        staff.email = _email(session, staff, email)
    for field, value in (("full_name", full_name), ("tier", tier), ("department", department),
                         ("qualification", qualification), ("experience_years", years)):
        if value is not None:
            setattr(staff, field, value)
    if no_supervisor:
        staff.supervisor_id = None
    elif supervisor is not None:
        _set_supervisor(session, staff, supervisor)
    session.flush()
    return staff


def _find(session: Session, login: str) -> Staff:
    staff = session.scalar(select(Staff).where(Staff.login == login))
    if staff is None:
        raise AdminError(f"no staff member {login!r}")
    return staff


def _email(session: Session, staff: Staff, email: str) -> str:
    """``email`` checked: one plain address that no other staff member has."""
    address = email.strip().lower()
    if not is_valid_address(address):
        raise AdminError(f"not one plain e-mail address: {email!r}")
    other = session.scalar(select(Staff).where(Staff.email == address))
    if other is not None and other is not staff:
        raise AdminError(f"{address} is already the address of {other.login}")
    return address


def _set_supervisor(session: Session, staff: Staff, login: str | None) -> None:
    """Put ``staff`` under the staff member ``login`` (None: nobody), refusing a loop."""
    if not login:
        staff.supervisor_id = None
        return
    boss = session.scalar(select(Staff).where(Staff.login == login))
    if boss is None:
        raise AdminError(f"no staff member {login!r} to be the supervisor")
    above, seen = boss, set()
    while above is not None and above.id not in seen:
        if above.id == staff.id:
            raise AdminError(f"{login} cannot supervise {staff.login}: "
                             f"{staff.login} is above {login} already")
        seen.add(above.id)
        above = session.get(Staff, above.supervisor_id) if above.supervisor_id else None
    staff.supervisor_id = boss.id


def set_staff_active(session: Session, login: str, active: bool) -> Staff:
    staff = _find(session, login)
    staff.active = active
    return staff
