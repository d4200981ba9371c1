"""SLA clock benchmark: one overdue scan and one digest build on a register of 1,000,000 requests.

Usage (from the repository root)::

    .venv/bin/python benchmarks/sla.py [--requests 1000000] [--open 100000] [--runs 20] [--keep-db]

Works in a fresh database (``mb_<random>``) on the server of $MAILBOT_TEST_DATABASE_URL (else
postgresql://postgres@127.0.0.1:5432/test), filled with generate_series in a few statements:
20 supervisors with 10 ТП1 staff each and 10 ТП2 staff; ``--requests`` requests over two years,
of which ``--open`` are not closed (answered and waiting for the customer, resolved and awaiting
confirmation, waiting for a first reaction, escalated to ТП2, waiting for contact details), the
ОП2 deliveries and ОП4 escalations that go with them, and the ladder steps a running daemon
would have taken on everything long overdue. It then times, at Wednesday 25 November 2026 11:00
Moscow time:

- one overdue scan as a running daemon's pass makes it every minute: ``Deadlines.due_steps(since)``
  with ``since`` the previous pass (a minute ago) less the margin, after the steps due a minute
  earlier were taken (rows only, no mail); the best and the median of ``--runs``, and each
  clock's share;
- the full scan a pass makes every 15 minutes and at start: ``Deadlines.due_steps()``;
- one digest build for the 20 supervisors: ``build_digests`` and rendering each (text and HTML),
  the best and the median of 5.

See benchmarks/README.md for the figures of a run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from mailbot.config import load_config, with_overrides  # noqa: E402
from mailbot.register import db  # noqa: E402
from mailbot.render import render  # noqa: E402
from mailbot.scheduler import WINDOW_MARGIN  # noqa: E402
from mailbot.sla.calendar import make_calendar  # noqa: E402
from mailbot.sla.deadlines import CLOCKS, Deadlines  # noqa: E402
from mailbot.workflow.digest import build_digests  # noqa: E402
from tests.servers import drop_database, fresh_database  # noqa: E402

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)  # Wednesday 11:00 in Moscow
SUPERVISORS, PER_SUPERVISOR, TP2_STAFF = 20, 10, 10

STAFF = """
INSERT INTO staff (id, login, full_name, email, tier, department, experience_years, supervisor_id)
SELECT g, 'boss' || g, 'Руководитель ' || g, 'boss' || g || '@tecon.example', 'tp1', 'Руководство', 15, NULL
FROM generate_series(1, :bosses) g
UNION ALL
SELECT :bosses + g, 'tp1_' || g, 'Специалист ' || g, 'tp1_' || g || '@tecon.example', 'tp1',
       'Отдел сопровождения проектов', 3 + g % 8, 1 + (g - 1) / :per
FROM generate_series(1, :bosses * :per) g
UNION ALL
SELECT :bosses * (:per + 1) + g, 'tp2_' || g, 'Инженер ТП2 ' || g, 'tp2_' || g || '@tecon.example', 'tp2',
       'Отдел программирования', 8, NULL
FROM generate_series(1, :tp2) g;
SELECT setval('staff_id_seq', (SELECT max(id) FROM staff));
INSERT INTO organizations (id, name) SELECT g, 'ООО «Организация ' || g || '»' FROM generate_series(1, 2000) g;
SELECT setval('organizations_id_seq', 2000);
"""

# Each request gets a kind (what state it is in) and a level; times are minutes before NOW.
# Old requests (the first requests - open) are closed or rejected; the open ones are:
# 55 % answered (the customer's turn), 22 % open and answered (staff at work), 12 % resolved
# (awaiting confirmation: half in the last 3 days, half over 30), 4 % waiting for a first
# reaction (70 % of them received in the last 3 hours, the rest over 20 days: overdue
# stragglers), 4 % escalated to ТП2 (the last 5 days), 3 % waiting for contact details (the
# last 10 days). Levels: 40 % ОП1, 30 % ОП2, 25 % ОП3, 5 % ОП4. A tenth of the open ОП2
# requests' deliveries are unconfirmed.
REQUESTS = """
SELECT setseed(0.42);
CREATE TEMP TABLE shape AS
SELECT id, kind, level, t, react, who,
       CASE level WHEN 1 THEN 20 WHEN 2 THEN 40 WHEN 3 THEN 120 ELSE 180 END AS norm,
       CASE kind WHEN 'closed' THEN 86400 + t * 960000 WHEN 'rejected' THEN 86400 + t * 960000
                 WHEN 'waiting' THEN CASE WHEN t < 0.7 THEN t / 0.7 * 180 ELSE 180 + (t - 0.7) * 96000 END
                 WHEN 'escalated' THEN 240 + t * 7200 WHEN 'contact' THEN t * 14400
                 WHEN 'resolved' THEN CASE WHEN t < 0.5 THEN t * 8640 ELSE 4320 + (t - 0.5) * 77760 END
                 ELSE 60 + t * 86400 END AS ago
FROM (SELECT id, t, react, who,
             CASE WHEN id <= :old THEN (CASE WHEN k < 0.97 THEN 'closed' ELSE 'rejected' END)
                  WHEN k < 0.55 THEN 'answered' WHEN k < 0.77 THEN 'open' WHEN k < 0.89 THEN 'resolved'
                  WHEN k < 0.93 THEN 'waiting' WHEN k < 0.97 THEN 'escalated' ELSE 'contact' END AS kind,
             CASE WHEN l < 0.40 THEN 1 WHEN l < 0.70 THEN 2 WHEN l < 0.95 THEN 3 ELSE 4 END AS level
      FROM (SELECT g AS id, random() AS k, random() AS l, random() AS t, random() AS react,
                   random() AS who
            FROM generate_series(1, :total) g) numbers) shaped;
INSERT INTO requests (id, number, organization_id, requester_email, requester_name, channel, subject,
                      level, status, parent_id, assignee_id, received_at, opened_at, first_reaction_at,
                      due_at, resolved_at, closed_at, confirmation, created_at, updated_at, waiting_since)
SELECT s.id, 'ТП-B-' || lpad(s.id::text, 7, '0'), 1 + s.id % 2000,
       'user' || s.id % 50000 || '@org' || s.id % 2000 || '.example', 'Клиент ' || s.id % 50000,
       'email', 'Обращение ' || s.id, s.level,
       CASE s.kind WHEN 'answered' THEN 'awaiting_customer' WHEN 'waiting' THEN 'open'
                   WHEN 'escalated' THEN 'escalated_op4' WHEN 'contact' THEN 'awaiting_contact_info'
                   ELSE s.kind END,
       CASE WHEN s.level = 4 THEN greatest(s.id - 1, 1) END,
       CASE WHEN s.who < 0.02 THEN NULL
            ELSE :bosses + 1 + floor(s.who * :workers)::int % :workers END,
       received, CASE WHEN s.kind <> 'contact' THEN received END,
       CASE WHEN s.kind NOT IN ('waiting', 'contact', 'rejected')
            THEN received + make_interval(mins => (s.react * 2 * s.norm)::int) END,
       CASE WHEN s.kind NOT IN ('contact', 'rejected') THEN received + make_interval(mins => s.norm) END,
       CASE WHEN s.kind = 'resolved' THEN received + make_interval(mins => (s.react * 2 * s.norm)::int + 30) END,
       CASE WHEN s.kind IN ('closed', 'rejected') THEN received + interval '3 days' END,
       CASE WHEN s.kind = 'resolved' THEN 'requested' WHEN s.kind = 'closed' THEN 'confirmed' ELSE 'none' END,
       received, received, CASE WHEN s.kind = 'waiting' THEN received END
FROM (SELECT *, CAST(:now AS timestamptz) - make_interval(mins => ago::int) AS received FROM shape) s;
SELECT setval('requests_id_seq', :total);
"""

RELATED = """
INSERT INTO deliveries (request_id, recipient, status, confirmed_by, confirmed_at, created_at)
SELECT r.id, r.requester_email, d.status,
       CASE WHEN d.status = 'confirmed' THEN 'mdn' END,
       CASE WHEN d.status = 'confirmed' THEN r.received_at + interval '2 hours' END,
       r.received_at + interval '30 minutes'
FROM requests r, LATERAL (SELECT CASE WHEN r.status IN ('closed', 'rejected') OR random() < 0.9
                                      THEN 'confirmed' ELSE 'sent' END AS status) d
WHERE r.level = 2 AND r.status NOT IN ('awaiting_contact_info', 'rejected');
INSERT INTO escalations (request_id, subject, status, sent_at, due_at, answered_at)
SELECT r.id, 'Организация ' || r.organization_id || ' ' || r.number, e.status,
       r.received_at + interval '1 hour', r.received_at + interval '4 hours',
       CASE WHEN e.status <> 'sent' THEN r.received_at + interval '3 hours' END
FROM requests r, LATERAL (SELECT CASE WHEN r.status = 'escalated_op4' AND random() < 0.7 THEN 'sent'
                                      WHEN r.status = 'escalated_op4' THEN 'answered'
                                      ELSE 'closed' END AS status) e
WHERE r.status = 'escalated_op4' OR (r.level = 3 AND r.status = 'closed' AND r.id % 20 = 0);
"""

# What a running daemon would have done with everything long overdue: the ladder's last steps.
STEPS = """
INSERT INTO sla_steps (request_id, clock, cycle, started_at, step, at)
SELECT r.id, 'reaction', r.due_at, r.waiting_since, s.step, r.due_at
FROM requests r, unnest(ARRAY['breach', 'escalation']) s(step)
WHERE r.waiting_since IS NOT NULL AND r.due_at < :now - interval '1 day';
INSERT INTO sla_steps (request_id, clock, cycle, started_at, step, at)
SELECT e.request_id, 'op4_answer', e.due_at, e.sent_at, s.step, e.due_at
FROM escalations e, unnest(ARRAY['breach', 'escalation']) s(step)
WHERE e.status = 'sent' AND e.answered_at IS NULL AND e.due_at < :now - interval '1 day';
INSERT INTO sla_steps (request_id, clock, cycle, started_at, step, at)
SELECT DISTINCT ON (d.request_id, d.created_at, s.step) d.request_id, 'delivery',
       d.created_at + interval '1 day', d.created_at, s.step, d.created_at + interval '1 day'
FROM deliveries d, unnest(ARRAY['breach', 'escalation']) s(step)
WHERE d.status = 'sent' AND d.created_at < :now - interval '3 days';
INSERT INTO sla_steps (request_id, clock, cycle, started_at, step, at)
SELECT r.id, 'confirmation', r.resolved_at + interval '2 days', r.resolved_at, s.step,
       r.resolved_at + interval '2 days'
FROM requests r, unnest(ARRAY['reminder', 'breach']) s(step)
WHERE r.status = 'resolved' AND r.resolved_at < :now - interval '4 days';
INSERT INTO sla_steps (request_id, clock, cycle, started_at, step, at)
SELECT r.id, 'contact_info', r.received_at + interval '1 hour', r.received_at, 'breach',
       r.received_at + interval '1 hour'
FROM requests r
WHERE r.status = 'awaiting_contact_info' AND r.received_at < :now - interval '1 day';
"""


def run_sql(engine, script: str, **params) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in filter(str.strip, script.split(";\n")):
            names = {k: v for k, v in params.items() if f":{k}" in statement}
            conn.execute(text(statement), names)
    return time.perf_counter() - started


def fill(engine, config, total: int, open_: int) -> None:
    workers = SUPERVISORS * PER_SUPERVISOR
    print(f"filling: {total:,} requests, {open_:,} open, {SUPERVISORS} supervisors "
          f"× {PER_SUPERVISOR} ТП1 staff, {TP2_STAFF} ТП2 staff", flush=True)
    seconds = run_sql(engine, STAFF, bosses=SUPERVISORS, per=PER_SUPERVISOR, tp2=TP2_STAFF)
    seconds += run_sql(engine, REQUESTS, old=total - open_, total=total, now=NOW,
                       bosses=SUPERVISORS, workers=workers)
    seconds += run_sql(engine, RELATED)
    started = time.perf_counter()
    calendar_deadlines(engine, config)
    seconds += time.perf_counter() - started
    seconds += run_sql(engine, STEPS, now=NOW)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        counts = conn.execute(text("""
            SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM requests
                    WHERE status NOT IN ('closed', 'rejected')),
                   (SELECT count(*) FROM requests WHERE waiting_since IS NOT NULL),
                   (SELECT count(*) FROM requests WHERE status = 'resolved'),
                   (SELECT count(*) FROM deliveries), (SELECT count(*) FROM deliveries WHERE status = 'sent'),
                   (SELECT count(*) FROM escalations WHERE status = 'sent'),
                   (SELECT count(*) FROM sla_steps)""")).one()
    print(f"filled in {seconds:.1f} s: requests {counts[0]:,} (open {counts[1]:,}; waiting for a "
          f"first reaction {counts[2]:,}; resolved {counts[3]:,}), deliveries {counts[4]:,} "
          f"(unconfirmed {counts[5]:,}), escalations awaiting ТП2 {counts[6]:,}, "
          f"ladder steps already taken {counts[7]:,}", flush=True)


def calendar_deadlines(engine, config) -> None:
    """The deadlines of running clocks as the workflow sets them: in the calendar's working
    minutes (the SQL above added wall minutes)."""
    calendar = make_calendar(config.sla, config.timezone)
    with engine.begin() as conn:
        waiting = conn.execute(text("SELECT id, level, waiting_since FROM requests "
                                    "WHERE waiting_since IS NOT NULL")).all()
        sent = conn.execute(text("SELECT id, sent_at FROM escalations WHERE status = 'sent'")).all()
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.executemany("UPDATE requests SET due_at = %s WHERE id = %s", [
                (calendar.add_working_minutes(row.waiting_since, config.sla.norm(row.level)), row.id)
                for row in waiting])
            cursor.executemany("UPDATE escalations SET due_at = %s WHERE id = %s", [
                (calendar.add_working_minutes(row.sent_at, config.sla.norm_op4), row.id)
                for row in sent])


def steady_state(engine, sessions, config) -> int:
    """Take (as rows, without mail) every step due a minute before NOW, as a running daemon has."""
    calendar = make_calendar(config.sla, config.timezone)
    before = NOW - timedelta(minutes=1)
    with sessions.begin() as session:
        due = Deadlines(session, config.sla, calendar, before).due_steps()
        rows = [(d.running.request_id, d.running.clock, d.running.due, d.running.start, d.step, before)
                for d in due]
        with session.connection().connection.dbapi_connection.cursor() as cursor:
            cursor.executemany("INSERT INTO sla_steps (request_id, clock, cycle, started_at, step, at) "
                               "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE sla_steps"))
    return len(rows)


def timed(action, runs: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def measure(sessions, config, runs: int) -> None:
    calendar = make_calendar(config.sla, config.timezone)
    since = NOW - timedelta(minutes=1) - WINDOW_MARGIN  # the previous pass, less the margin
    with sessions() as session:
        deadlines = Deadlines(session, config.sla, calendar, NOW)
        deadlines.due_steps(since)  # warm the connection, the plans and the calendar's cache
        times, steps = timed(lambda: deadlines.due_steps(since), runs)
        print(f"\noverdue scan, a pass of every minute (Deadlines.due_steps(since), {runs} runs): "
              f"best {min(times):.1f} ms, median {statistics.median(times):.1f} ms; "
              f"{len(steps)} steps due now (target < 50 ms)")
        by_clock = {}
        for clock in CLOCKS:
            clock_times, found = timed(lambda: deadlines.scan(clock, since), runs)
            by_clock[clock] = (min(clock_times), len(found))
        print("  per clock (best): " + ", ".join(
            f"{clock} {ms:.1f} ms / {n} rows" for clock, (ms, n) in by_clock.items()))
        times, steps = timed(deadlines.due_steps, max(3, runs // 4))
        print(f"full scan, every 15 minutes and at start (Deadlines.due_steps()): "
              f"best {min(times):.1f} ms, median {statistics.median(times):.1f} ms; "
              f"{len(steps)} steps due now")

        def digest() -> list:
            built = build_digests(session, config, calendar, NOW)
            for one in built:
                render("sla_digest", digest=one, slot=NOW, support=config.support,
                       horizon=config.sla.digest_horizon)
            return built

        digest()
        times, digests = timed(digest, 5)
        items = sum(d.overdue + d.soon for d in digests)
        print(f"digest build for {len(digests)} supervisors (build_digests + text and HTML, "
              f"5 runs): best {min(times):.0f} ms, median {statistics.median(times):.0f} ms; "
              f"{items:,} items in all, {sum(d.shown for d in digests):,} shown "
              f"(at most {config.sla.digest_max_items} per digest)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    base = os.environ.get("MAILBOT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    url = fresh_database(base)
    print(f"database: {url}")
    engine = db.make_engine(url)
    try:
        db.init_schema(engine)
        config = with_overrides(load_config(None, environ={}), database={"url": url})
        fill(engine, config, args.requests, args.open)
        sessions = db.make_sessionmaker(engine)
        print(f"steady state: {steady_state(engine, sessions, config):,} more steps taken at "
              f"10:59 (rows only)", flush=True)
        measure(sessions, config, args.runs)
    finally:
        engine.dispose()
        if not args.keep_db:
            drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
