"""`mailbot report sla` and the supervisors in the staff register (issue 18)."""
from __future__ import annotations

import csv
import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from mailbot.cli.main import main
from mailbot.config import load_config, with_overrides
from mailbot.register import db
from mailbot.register.models import Escalation, Request, Staff
from mailbot.sla.report import format_csv, format_table, sla_report

MSK = ZoneInfo("Europe/Moscow")


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MSK)


@pytest.fixture
def sessions(database_url: str):
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    yield db.make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def cli(database_url: str, sessions, monkeypatch):
    """`mailbot` on the test database."""
    monkeypatch.setenv("MAILBOT_DATABASE_URL", database_url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    return main


def add_staff(session, login: str) -> Staff:
    staff = Staff(login=login, full_name=login.capitalize(), email=f"{login}@tecon.example",
                  tier="tp1")
    session.add(staff)
    session.flush()
    return staff


def add_request(session, n: int, level: int, staff: Staff, opened: datetime,
                reacted: datetime | None = None) -> Request:
    request = Request(number=f"ТП-2026-{n:06d}", level=level, status="open", assignee_id=staff.id,
                      received_at=opened, opened_at=opened, first_reaction_at=reacted,
                      created_at=opened, updated_at=opened)
    session.add(request)
    session.flush()
    return request


@pytest.fixture
def week(sessions):
    """The week of 23–27 November 2026 (Monday to Friday)."""
    with sessions.begin() as session:
        sidorov, kozlov = add_staff(session, "sidorov"), add_staff(session, "kozlov")
        add_request(session, 1, 1, sidorov, msk(2026, 11, 25, 10, 0), msk(2026, 11, 25, 10, 10))
        add_request(session, 2, 1, sidorov, msk(2026, 11, 25, 11, 0), msk(2026, 11, 25, 11, 30))
        add_request(session, 3, 1, sidorov, msk(2026, 11, 25, 12, 0))  # never answered: breach
        add_request(session, 4, 1, sidorov, msk(2026, 11, 27, 17, 55))  # still within its norm
        op3 = add_request(session, 5, 3, kozlov, msk(2026, 11, 25, 10, 0), msk(2026, 11, 25, 11, 0))
        add_request(session, 6, 3, kozlov, msk(2026, 11, 20, 17, 0))  # before the week: not counted
        # Friday 17:00 → Monday 10:30: 60 + 90 working minutes, over the 2 hours of ОП3
        add_request(session, 7, 3, kozlov, msk(2026, 11, 27, 17, 0), msk(2026, 11, 30, 10, 30))
        session.add(Escalation(request_id=op3.id, subject="ООО «Завод» ТП-2026-000005", status="answered",
                               sent_at=msk(2026, 11, 25, 10, 0), due_at=msk(2026, 11, 25, 13, 0),
                               answered_at=msk(2026, 11, 25, 12, 0)))
    return sessions


def test_report_per_level_and_staff_member_in_working_minutes(week):
    config = load_config(None, environ={})
    with week() as session:
        rows = sla_report(session, config, date(2026, 11, 23), date(2026, 11, 27),
                          now=msk(2026, 11, 27, 18, 0))
    table = {(r.level, r.staff): (r.requests, r.answered, r.judged, r.met, r.median, r.p90, r.breaches)
             for r in rows}
    assert table == {
        ("ОП1", "sidorov"): (4, 2, 3, 1, 20, 30, 2),  # 10 and 30 min; one unanswered and late
        ("ОП1", "all"): (4, 2, 3, 1, 20, 30, 2),
        ("ОП3", "kozlov"): (2, 2, 2, 1, 105, 150, 1),  # 60 min; 150 over the weekend
        ("ОП3", "all"): (2, 2, 2, 1, 105, 150, 1),
        ("ОП4/ТП2", "ТП2"): (1, 1, 1, 1, 120, 120, 0),  # ТП2 answered the escalation in 2 h
        ("ОП4/ТП2", "all"): (1, 1, 1, 1, 120, 120, 0),
        ("all", "all"): (7, 5, 6, 3, 60, 150, 3),
    }
    assert [(r.level, r.staff) for r in rows][-1] == ("all", "all")
    text = format_table(rows)
    assert text.splitlines()[0].split() == ["level", "staff", "requests", "answered", "met",
                                            "median", "p90", "breaches"]
    assert "ОП1      sidorov" in text and "33%" in text and "105 min" in text
    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert parsed[0] == {"level": "ОП1", "staff": "sidorov", "requests": "4", "answered": "2",
                         "met": "0.333", "median_min": "20", "p90_min": "30", "breaches": "2"}


def test_report_sla_from_the_command_line(week, cli, capsys):
    assert cli(["report", "sla", "--from", "2026-11-25", "--to", "2026-11-25", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["level"], r["staff"], r["requests"]) for r in rows] == [
        ("ОП1", "sidorov", "3"), ("ОП1", "all", "3"), ("ОП3", "kozlov", "1"), ("ОП3", "all", "1"),
        ("ОП4/ТП2", "ТП2", "1"), ("ОП4/ТП2", "all", "1"), ("all", "all", "5")]
    assert cli(["report", "sla", "--from", "2026-11-23", "--to", "2026-11-27"]) == 0
    assert "sidorov" in capsys.readouterr().out
    assert cli(["report", "sla", "--from", "2026-10-01", "--to", "2026-10-31"]) == 0
    assert capsys.readouterr().out.strip() == "no requests opened in this period"
    assert cli(["report", "sla", "--from", "2026-11-27", "--to", "2026-11-01"]) == 64


def test_report_counts_reaction_from_the_opening_after_contact_details(sessions):
    """A request that waited for the customer's company and name is judged from its opening."""
    config = with_overrides(load_config(None, environ={}), sla={"calendar": "24x7"})
    with sessions.begin() as session:
        staff = add_staff(session, "sidorov")
        request = add_request(session, 1, 1, staff, msk(2026, 11, 25, 12, 0), msk(2026, 11, 25, 12, 15))
        request.received_at = msk(2026, 11, 25, 9, 0)
    with sessions() as session:
        (row, *_) = sla_report(session, config, date(2026, 11, 25), date(2026, 11, 25),
                               now=msk(2026, 11, 26, 0, 0))
    assert (row.median, row.met, row.breaches) == (15, 1, 0)


# ---------------------------------------------------------------- supervisors in the register

def staff_rows(sessions) -> dict[str, str | None]:
    with sessions() as session:
        everyone = {s.id: s for s in session.scalars(select(Staff))}
        return {s.login: everyone[s.supervisor_id].login if s.supervisor_id else None
                for s in everyone.values()}


def test_staff_edit_sets_the_supervisor_and_other_fields(sessions, cli, capsys):
    for login in ("chief", "boss", "sidorov"):
        assert cli(["staff", "add", login, "--name", login.capitalize(), "--email",
                    f"{login}@tecon.example", "--tier", "tp1"]) == 0
    assert cli(["staff", "edit", "boss", "--supervisor", "chief"]) == 0
    assert cli(["staff", "edit", "sidorov", "--supervisor", "boss", "--email", "Sidorov@Tecon.example",
                "--years", "4"]) == 0
    assert staff_rows(sessions) == {"chief": None, "boss": "chief", "sidorov": "boss"}
    with sessions() as session:
        sidorov = session.scalar(select(Staff).where(Staff.login == "sidorov"))
    assert (sidorov.email, sidorov.experience_years, sidorov.full_name) == (
        "sidorov@tecon.example", 4, "Sidorov")
    capsys.readouterr()
    assert cli(["staff", "list"]) == 0
    assert "supervisor boss" in capsys.readouterr().out
    assert cli(["staff", "edit", "sidorov", "--no-supervisor"]) == 0
    assert staff_rows(sessions)["sidorov"] is None


@pytest.mark.parametrize("args, error", [
    (["staff", "edit", "chief", "--supervisor", "sidorov"], "chief is above sidorov already"),
    (["staff", "edit", "boss", "--supervisor", "boss"], "boss is above boss already"),
    (["staff", "edit", "boss", "--supervisor", "nobody"], "no staff member 'nobody'"),
    (["staff", "edit", "nobody", "--years", "3"], "no staff member 'nobody'"),
    (["staff", "edit", "boss", "--email", "chief@tecon.example"], "already the address of chief"),
    (["staff", "edit", "boss", "--email", "boss@tecon.example, x@evil.example"], "not one plain"),
])
def test_staff_edit_refuses_what_would_break_the_register(sessions, cli, capsys, args, error):
    cli(["staff", "add", "chief", "--name", "Chief", "--email", "chief@tecon.example", "--tier", "tp1"])
    cli(["staff", "add", "boss", "--name", "Boss", "--email", "boss@tecon.example", "--tier", "tp1",
         "--supervisor", "chief"])
    cli(["staff", "add", "sidorov", "--name", "Sidorov", "--email", "sidorov@tecon.example",
         "--tier", "tp1", "--supervisor", "boss"])
    before = staff_rows(sessions)
    capsys.readouterr()
    assert cli(args) == 64
    assert error in capsys.readouterr().err
    assert staff_rows(sessions) == before
