"""Helpers for the SLA clock's tests: Moscow time, a team with supervisors, one pass of the clock."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mailbot.cli.admin import edit_staff
from mailbot.config import with_overrides
from mailbot.daemon import Daemon
from mailbot.scheduler import SlaRun, run_sla
from tests.mailflow import Desk

MSK = ZoneInfo("Europe/Moscow")
CUSTOMER = "ivanov@zavod.example"
TP1, TP2 = "tp1@tecon.example", "tp2@tecon.example"
WORKER, BOSS, CHIEF = "sidorov@tecon.example", "boss@tecon.example", "chief@tecon.example"
HEADS = "head-of-support@tecon.example"


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MSK)


def configure(desk: Desk, **sla) -> None:
    """``[sla]`` settings for the test; digests (test_sla_digest.py) only when asked for."""
    desk.config = with_overrides(desk.config, sla={"digest_times": (), **sla})


def team(desk: Desk, years: int = 7) -> None:
    """sidorov (may handle every level) → boss → chief; the bosses are not on the rota."""
    configure(desk)
    for login in ("chief", "boss"):
        desk.add_staff(login, years=20, department="Руководство")
    desk.add_staff("sidorov", years=years)
    with desk.sessions.begin() as session:
        edit_staff(session, "boss", supervisor="chief")
        edit_staff(session, "sidorov", supervisor="boss")


def tick(desk: Desk, moment: datetime | None = None) -> SlaRun:
    """One pass of the SLA clock at ``moment`` (the scheduler's job), then mail goes out."""
    if moment is not None:
        desk.clock.set(moment)
    result = run_sla(Daemon(desk.config, desk.sessions, desk.clock))
    desk.run()
    return result
