"""SLA clock (DESIGN.md §6): reaction norms ОП1 20 min, ОП2 40 min, ОП3 2 h, ОП4 3 h, counted in
working time of the Russian production calendar (or 24x7)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mailbot.config import ConfigError, SlaConfig, load_config
from mailbot.sla.calendar import BusinessCalendar, RoundTheClockCalendar, deadline, make_calendar

MSK = ZoneInfo("Europe/Moscow")


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MSK)


@pytest.fixture(scope="module")
def business() -> BusinessCalendar:
    return BusinessCalendar()


@pytest.mark.parametrize("level, minutes", [(1, 20), (2, 40), (3, 120), (4, 180)])
def test_reaction_norms_of_the_regulation(business, level, minutes):
    received = msk(2026, 3, 11, 10, 0)  # a Wednesday
    assert deadline(level, received, business) == received + timedelta(minutes=minutes)


def test_deadline_is_aware_utc(business):
    due = deadline(1, msk(2026, 3, 11, 10, 0), business)
    assert due.tzinfo == timezone.utc and due == datetime(2026, 3, 11, 7, 20, tzinfo=timezone.utc)


def test_op1_on_friday_evening_is_due_on_monday_morning(business):
    assert deadline(1, msk(2026, 3, 13, 17, 50), business) == msk(2026, 3, 16, 9, 10)


def test_op1_ending_exactly_at_close_stays_on_the_same_day(business):
    assert deadline(1, msk(2026, 3, 11, 17, 40), business) == msk(2026, 3, 11, 18, 0)


def test_op4_three_hours_span_the_night(business):
    assert deadline(4, msk(2026, 3, 11, 16, 30), business) == msk(2026, 3, 12, 10, 30)


def test_op3_received_at_night_counts_from_the_opening(business):
    assert deadline(3, msk(2026, 3, 11, 2, 15), business) == msk(2026, 3, 11, 11, 0)


def test_request_on_a_public_holiday_counts_from_the_first_working_day(business):
    # 2026-01-05 is within the New Year holidays; 01-09 is a moved day off; 01-12 is Monday
    assert not business.is_working_time(msk(2026, 1, 5, 12, 0))
    assert not business.is_working_day(date(2026, 1, 9))
    assert deadline(1, msk(2026, 1, 5, 12, 0), business) == msk(2026, 1, 12, 9, 20)


def test_moved_day_off_on_a_weekday_is_not_working(business):
    # 2025-11-03 (Monday) became a day off in exchange for Saturday 2025-11-01
    assert not business.is_working_day(date(2025, 11, 3))
    assert deadline(2, msk(2025, 10, 31, 17, 50), business) == msk(2025, 11, 1, 9, 30)


def test_transferred_working_saturday_counts_as_working(business):
    saturday = date(2025, 11, 1)
    assert saturday.weekday() == 5
    assert business.is_working_day(saturday)
    assert business.is_working_time(msk(2025, 11, 1, 10, 0))
    assert not business.is_working_day(date(2025, 11, 8))  # an ordinary Saturday
    assert deadline(1, msk(2025, 11, 1, 9, 0), business) == msk(2025, 11, 1, 9, 20)


def test_is_working_time_respects_hours_and_weekends(business):
    assert business.is_working_time(msk(2026, 3, 11, 9, 0))
    assert not business.is_working_time(msk(2026, 3, 11, 18, 0))
    assert not business.is_working_time(msk(2026, 3, 11, 8, 59))
    assert not business.is_working_time(msk(2026, 3, 14, 12, 0))  # Saturday


def test_other_time_zones_are_converted(business):
    received = datetime(2026, 3, 13, 14, 50, tzinfo=timezone.utc)  # 17:50 MSK, Friday
    assert deadline(1, received, business) == msk(2026, 3, 16, 9, 10)


def test_working_minutes_between(business):
    assert business.working_minutes_between(msk(2026, 3, 13, 17, 50), msk(2026, 3, 16, 9, 10)) == 20
    assert business.working_minutes_between(msk(2026, 3, 16, 9, 10), msk(2026, 3, 13, 17, 50)) == -20
    assert business.working_minutes_between(msk(2026, 3, 14, 1, 0), msk(2026, 3, 15, 23, 0)) == 0
    start = msk(2026, 3, 10, 11, 7)
    for minutes in (0, 1, 59, 540, 541, 5000):
        end = business.add_working_minutes(start, minutes)
        assert business.working_minutes_between(start, end) == minutes


def test_subtracting_working_minutes_undoes_adding_them(business):
    assert business.subtract_working_minutes(msk(2026, 3, 16, 9, 10), 20) == msk(2026, 3, 13, 17, 50)
    assert business.subtract_working_minutes(msk(2026, 1, 12, 9, 20), 40) == msk(2025, 12, 30, 17, 40)
    assert business.subtract_working_minutes(msk(2025, 11, 1, 9, 10), 20) == msk(2025, 10, 31, 17, 50)
    assert business.subtract_working_minutes(msk(2026, 3, 14, 12, 0), 0) == msk(2026, 3, 13, 18, 0)
    for end in (msk(2026, 3, 10, 11, 7), msk(2026, 3, 14, 3, 0), msk(2026, 1, 5, 12, 0)):
        for minutes in (0, 1, 59, 540, 541, 5000):
            start = business.subtract_working_minutes(end, minutes)
            assert business.working_minutes_between(start, end) == minutes
            assert minutes == 0 or business.add_working_minutes(start, minutes) <= end
    assert RoundTheClockCalendar().subtract_working_minutes(msk(2026, 1, 4, 0, 10), 20) == \
        msk(2026, 1, 3, 23, 50)


def test_naive_datetimes_are_refused(business):
    with pytest.raises(ValueError):
        business.add_working_minutes(datetime(2026, 3, 11, 10, 0), 20)


def test_24x7_counts_every_minute():
    calendar = RoundTheClockCalendar()
    saturday_night = msk(2026, 1, 3, 23, 50)
    assert calendar.is_working_time(saturday_night)
    assert deadline(1, saturday_night, calendar) == msk(2026, 1, 4, 0, 10)
    assert deadline(4, saturday_night, calendar) == msk(2026, 1, 4, 2, 50)
    assert calendar.working_minutes_between(saturday_night, msk(2026, 1, 4, 1, 50)) == 120


def test_calendar_and_norms_from_config(tmp_path):
    path = tmp_path / "mailbot.toml"
    path.write_text('[sla]\ncalendar = "24x7"\nnorm_op1 = 15\n', encoding="utf-8")
    config = load_config(path, environ={"MAILBOT_SLA_WORK_START": "08:30"})
    assert config.sla.work_start == "08:30"
    calendar = make_calendar(config.sla, config.timezone)
    assert isinstance(calendar, RoundTheClockCalendar)
    assert deadline(1, msk(2026, 3, 14, 12, 0), calendar, config.sla) == msk(2026, 3, 14, 12, 15)


def test_business_hours_from_config():
    sla = SlaConfig(work_start="08:00", work_end="17:00")
    calendar = make_calendar(sla, "Europe/Moscow")
    assert deadline(1, msk(2026, 3, 13, 16, 50), calendar, sla) == msk(2026, 3, 16, 8, 10)


@pytest.mark.parametrize("text, key", [
    ('[sla]\ncalendar = "weekdays"\n', "sla.calendar"),
    ('[sla]\nwork_start = "9am"\n', "sla.work_start"),
    ('[sla]\nwork_end = "24:00"\n', "sla.work_end"),
    ('[sla]\nwork_start = "18:00"\nwork_end = "09:00"\n', "sla.work_end"),
    ('[sla]\nnorm_op3 = 0\n', "sla.norm_op3"),
    ('[sla]\nwarn_share = 1.5\n', "sla.warn_share"),
    ('[sla]\nescalate_after = 0\n', "sla.escalate_after"),
    ('[sla]\nconfirm_remind = 600\nconfirm_overdue = 600\n', "sla.confirm_overdue"),
    ('[sla]\ndigest_times = ["9:00"]\n', "sla.digest_times"),
    ('[sla]\nsupervisor_addresses = ["boss@example.ru, other@example.ru"]\n', "sla.supervisor_addresses"),
    ('[sla]\nwarn_before = 10\n', "sla.warn_before"),
])
def test_a_wrong_sla_setting_is_one_line_naming_the_key(tmp_path, text, key):
    path = tmp_path / "mailbot.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(key) and "\n" not in str(err.value)
