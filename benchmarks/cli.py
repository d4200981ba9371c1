"""The command line's answer time (issue 16 §5): each command as a whole process, target < 0.5 s.

Usage (from the repository root)::

    .venv/bin/python benchmarks/cli.py [--requests 5000] [--runs 10] [--url URL] [--keep]

Fills a fresh database on the machine's PostgreSQL (``--url``, default
postgresql://postgres@127.0.0.1:5432/postgres; dropped at the end unless ``--keep``) with a
register: ``--requests`` requests (``benchmarks/board.py``'s fill: 2,000 organisations, 40 staff
under a supervisor, 5,000 incidents, 2 % of the requests open, 5 % ОП4; the latest 1,000 with
5 mails and 6 events each), and for the request shown, files sent and asked, attachments and
incident history; 30 quarantined mails, 50 undeliverable addresses.

Then it runs each read command as ``python -m mailbot …`` (the real command line, a new process
each time: interpreter, imports, config, connection, schema check, query, output) ``--runs``
times, the commands in turn within each round so that the machine's load falls on all alike,
and beside them in the same rounds two baselines:

- ``python -c pass``: the interpreter's own start;
- ``python -c "import psycopg; psycopg.connect(URL).execute('select 1')"``: the least any Python
  program that reads the database pays.

Wall time is the clock around each process; CPU is its user and system time
(``resource.getrusage(RUSAGE_CHILDREN)`` before and after). It prints per command the median
(p50) and the maximum of each, and whether the slowest read command's p50 is under the target.
With ``--before DIR`` the read commands also run with the mailbot package in DIR on
``PYTHONPATH`` (the code before a change), in the same rounds. The write commands, which keep
SQLAlchemy and the ORM, are timed the same way afterwards, for the record (they change the
register, so they run after the reads).

See benchmarks/README.md ("CLI start-up") for the figures measured.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from board import fill  # noqa: E402

from tests.servers import drop_database, fresh_database  # noqa: E402

TARGET = 0.5  # seconds, wall, per command
MAILBOT = [sys.executable, "-m", "mailbot"]

# What a busy request shows (the latest one: board.py gave it 5 mails and 6 events), plus the
# quarantine and the undeliverable addresses; the incident numbers taken (as an import leaves
# them: `kb add` numbers from the sequence). :n is the number of requests.
EXTRA = """
SELECT setval('incident_number_seq', (SELECT count(*) FROM incidents));
INSERT INTO attachments (message_id, filename, original_filename, content_type, size, sha256)
    SELECT m.id, 'file' || g || '.log', NULL, 'text/plain', 1000 * g, repeat('a', 64)
    FROM messages m, generate_series(1, 3) g WHERE m.request_id = :n;
INSERT INTO deliveries (request_id, recipient, files, status, confirmed_by, confirmed_at,
                        settled_at, settled_by, created_at)
    VALUES (:n, 'user@org.example', '{patch.zip,readme.txt}', 'confirmed', 'mdn', now(), now(),
            'user@org.example', now() - interval '1 hour'),
           (:n, 'user@org.example', '{driver.zip}', 'sent', NULL, NULL, NULL, NULL, now());
INSERT INTO file_requests (request_id, asked, asked_by, status, created_at)
    VALUES (:n, 'логи, скриншот', 's1', 'waiting', now());
UPDATE requests SET incident_id = 1 WHERE id = :n;
INSERT INTO incident_history (incident_id, at, actor, kind, changes, request_id)
    SELECT 1, now() - g * interval '1 day', 's35', 'edited',
           '{"solution": ["старое решение", "новое решение"]}', NULL
    FROM generate_series(1, 20) g;
INSERT INTO inbound (dedup_key, source, raw, size, status)
    SELECT 'mid:q' || g, 'ingest', convert_to('From: x@spam.example' || chr(13) || chr(10)
           || 'Subject: ' || g || chr(13) || chr(10) || chr(13) || chr(10) || 'body', 'UTF8'),
           40, 'quarantined'
    FROM generate_series(1, 30) g;
INSERT INTO quarantine (inbound_id, stage, error)
    SELECT id, 'parse', 'MIME error: bad header' FROM inbound WHERE dedup_key LIKE 'mid:q%';
INSERT INTO undeliverable_addresses (address, reply, source)
    SELECT 'gone' || g || '@org.example', '550 5.1.1 user unknown', 'smtp'
    FROM generate_series(1, 50) g;
"""
CRM = """crm_id;organization;domains;contact_name;contact_email
""" + "".join(f"ORG-{n};ООО «Организация {n}»;org{n}.example;Клиент {n};c{n}@org{n}.example\n"
              for n in range(1, 51))


@dataclass
class Timings:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], env: dict[str, str], into: Timings) -> None:
    """Run ``argv`` to its end (it must succeed) and note its wall and CPU time."""
    cpu, started = children_cpu(), time.perf_counter()
    # from /: `-m mailbot` looks in the working directory first, and should find the installed
    # package (or --before's)
    done = subprocess.run(argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    into.wall.append(time.perf_counter() - started)
    into.cpu.append(children_cpu() - cpu)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr.decode()}")


def measure(commands: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, Timings]:
    """Each command (its argv and environment) ``runs`` times, in turn."""
    timings = {name: Timings() for name in commands}
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            run(argv, env, timings[name])
    return timings


def table(title: str, timings: dict[str, Timings]) -> None:
    print(f"\n{title:<52} {'wall p50':>8} {'max':>6} {'CPU p50':>8} {'max':>6}")
    for name, t in timings.items():
        print(f"{name:<52} {statistics.median(t.wall):>8.3f} {max(t.wall):>6.3f} "
              f"{statistics.median(t.cpu):>8.3f} {max(t.cpu):>6.3f}", flush=True)


def seed(url: str, count: int) -> None:
    fill(url, count)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in EXTRA.replace(":n", str(count)).split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("VACUUM ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=10, help="runs of each command")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--before", metavar="DIR", help="also run the read commands with the "
                        "mailbot package in DIR (e.g. `git archive main mailbot | tar -x -C DIR`)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    url = fresh_database(args.url)
    try:
        print(f"filling {url} with {args.requests:,} requests ...", flush=True)
        seed(url, args.requests)
        with psycopg.connect(url) as conn:
            number = conn.execute("SELECT number FROM requests WHERE id = %s",
                                  (args.requests,)).fetchone()[0]
        env = {key: value for key, value in os.environ.items() if key != "MAILBOT_CONFIG"}
        env["MAILBOT_DATABASE_URL"] = url
        baselines = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python: import psycopg, connect, select 1": [
                sys.executable, "-c",
                f"import psycopg; psycopg.connect({url!r}).execute('select 1')"]}
        reads = {
            "requests list": [*MAILBOT, "requests", "list"],
            "requests list --status open": [*MAILBOT, "requests", "list", "--status", "open"],
            "requests show N (6 events, 2 deliveries)": [*MAILBOT, "requests", "show", number],
            "requests files N (15 files)": [*MAILBOT, "requests", "files", number],
            "staff list (40)": [*MAILBOT, "staff", "list"],
            "undeliverable list (50)": [*MAILBOT, "undeliverable", "list"],
            "quarantine list (30)": [*MAILBOT, "quarantine", "list"],
            "quarantine show 1": [*MAILBOT, "quarantine", "show", "1"],
            "kb list (100 of 5,000)": [*MAILBOT, "kb", "list"],
            "kb show INC-000001 (20 history entries)": [*MAILBOT, "kb", "show", "INC-000001"],
            "kb search «зависает отчёт»": [*MAILBOT, "kb", "search", "зависает отчёт"],
        }
        before = {**env, "PYTHONPATH": str(Path(args.before).resolve())} if args.before else None
        runs = {**{name: (argv, env) for name, argv in {**baselines, **reads}.items()},
                **{f"before: {name}": (argv, before) for name, argv in reads.items() if before}}
        measure(runs, 1)  # warm the page cache and the database's
        load = os.getloadavg()[0]
        timings = measure(runs, args.runs)
        table(f"read commands, {args.runs} runs each (seconds)", timings)
        print(f"load average (1 min) of the machine: {load:.1f} before, {os.getloadavg()[0]:.1f} after")
        commands = {name: timings[name] for name in reads}
        slowest = max(statistics.median(t.wall) for t in commands.values())
        psycopg_p50 = statistics.median(timings["python: import psycopg, connect, select 1"].wall)
        print(f"\nslowest read command: p50 {slowest:.3f} s, "
              f"{slowest - psycopg_p50:+.3f} s over the bare psycopg program; worst single run "
              f"{max(max(t.wall) for t in commands.values()):.3f} s; target < {TARGET} s: "
              f"{'met' if slowest < TARGET else 'NOT met'}")

        crm = Path(tempfile.mkstemp(suffix=".csv")[1])
        crm.write_text(CRM, encoding="utf-8")
        writes = {
            "db upgrade (up to date)": [*MAILBOT, "db", "upgrade"],
            "staff add (an update)": [*MAILBOT, "staff", "add", "s99", "--name", "Сотрудник 99",
                                      "--email", "s99@tecon.example", "--tier", "tp1"],
            "kb add": [*MAILBOT, "kb", "add", "--title", "Не открывается журнал событий"],
            "requests new --channel phone": [*MAILBOT, "requests", "new", "--channel", "phone",
                                             "--org", "ORG-7", "--text", "Не запускается АРМ"],
            "requests command N #уровень ОП2": [*MAILBOT, "requests", "command", number, "--as",
                                                "s1", "#уровень ОП2"],
            "crm import (50 rows)": [*MAILBOT, "crm", "import", str(crm)],
        }
        try:
            table(f"write commands (SQLAlchemy, the ORM), {args.runs} runs each",
                  measure({name: (argv, env) for name, argv in writes.items()}, args.runs))
        finally:
            crm.unlink()
        return 0 if slowest < TARGET else 1
    finally:
        if args.keep:
            print(f"kept {url}")
        else:
            drop_database(url)


if __name__ == "__main__":
    sys.exit(main())
