"""Several daemons on one database: throughput of 1, 2 and 3 `mailbot run` processes.

Usage (from the repository root)::

    .venv/bin/python benchmarks/daemons.py [--mails 600] [--rounds 2] [--seed 1]

Starts a private Dovecot and an SMTP sink (tests/servers.py) and uses fresh databases on
$MAILBOT_TEST_DATABASE_URL's server (else an embedded pgserver). The corpus is the ingest
benchmark's realistic support mail (benchmarks/ingest.py, the same seed gives the same bytes;
the register seeded as there). Each run: a fresh database and mailbox, N `mailbot run`
processes of the real CLI with one config file, started and idle; then the whole corpus is
put into the INBOX in one MULTIAPPEND and the clock runs until every mail is processed
(``processed``) and every answer accepted by the sink (``answered``). Runs go in turn,
1, 2, 3, 1, 2, 3, …, and each N counts with its best run, so that a slow spell of a shared
machine does not weigh on one N alone. It prints mails/s per N and how the mail was shared
out (processed per daemon, from their logs).

What to expect on a 2-CPU machine: little or nothing. One daemon already parses in one
worker process per CPU, and PostgreSQL and Dovecot share the same two CPUs; a second daemon
adds processes, not CPUs. One folder is read by one daemon (the lease), so intake does not
scale out anywhere; processing and sending do, on more machines (docs/operations.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from benchmarks.ingest import MailFactory, append_all, seed_register  # noqa: E402
from mailbot.register import db  # noqa: E402
from mailbot.register.models import Inbound, Outbox, Quarantine, Request  # noqa: E402
from tests.servers import Dovecot, SmtpSink, drop_database, embedded_postgres_url, fresh_database  # noqa: E402

PROCESSED_LINE = re.compile(r"INFO mailbot\.processor: inbound \d+ from")


@dataclass
class Run:
    daemons: int
    processed: float = 0.0  # seconds from the APPEND to the last mail processed
    answered: float = 0.0  # … to the last answer accepted by the sink
    shares: list[int] = field(default_factory=list)  # mails processed by each daemon
    problems: list[str] = field(default_factory=list)


def config_text(database_url: str, mailbox, sink: SmtpSink) -> str:
    return f"""log_level = "INFO"
[database]
url = "{database_url}"
[imap]
host = "{mailbox.host}"
port = {mailbox.port}
ssl = false
username = "{mailbox.user}"
password = "{mailbox.password}"
[smtp]
host = "{sink.host}"
port = {sink.port}
[support]
address = "{mailbox.user}"
unknown_auto_reply_limit_per_hour = 1000000
[staff]
trusted_authserv_id = "mx.tecon.example"
"""


def start_daemon(config: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "mailbot", "--config", str(config), "run"],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while "mailbot is watching" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mailbot run did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return process


def count(sessions, model, *where) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.02)


def measure(daemons: int, base: str, dovecot: Dovecot, factory: MailFactory, mails, workdir: Path) -> Run:
    run = Run(daemons)
    url, sink, mailbox = fresh_database(base), SmtpSink().start(), dovecot.new_mailbox()
    engine = db.make_engine(url)
    processes: list[subprocess.Popen] = []
    logs = [workdir / f"{mailbox.user}-{n}.log" for n in range(daemons)]
    try:
        db.init_schema(engine)
        sessions = db.make_sessionmaker(engine)
        seed_register(sessions, factory.senders)
        config = workdir / f"{mailbox.user}.toml"
        config.write_text(config_text(url, mailbox, sink))
        processes = [start_daemon(config, log) for log in logs]
        time.sleep(2)  # every daemon idle: leases taken, parsing workers up
        started = time.perf_counter()
        append_all(mailbox, [m.raw for m in mails])
        wait(lambda: count(sessions, Inbound, Inbound.status != "pending") == len(mails), 600,
             "the mail to be processed")
        run.processed = time.perf_counter() - started
        wait(lambda: count(sessions, Outbox, Outbox.status == "pending") == 0
             and count(sessions, Outbox) > 0, 600, "the answers to be sent")
        run.answered = time.perf_counter() - started
        new = sum(not m.is_reply for m in mails)
        if count(sessions, Request) != new:
            run.problems.append(f"{count(sessions, Request)} requests for {new} new mails")
        if count(sessions, Quarantine):
            run.problems.append(f"{count(sessions, Quarantine)} mails quarantined")
        sent = len({m.parsed()["Message-ID"] for m in sink.messages})
        if sent != count(sessions, Outbox) or len(sink.messages) != sent:
            run.problems.append(f"{len(sink.messages)} mails at the sink ({sent} distinct) for "
                                f"{count(sessions, Outbox)} outbox rows")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        run.shares = [len(PROCESSED_LINE.findall(log.read_text(errors="replace"))) for log in logs]
        engine.dispose()
        sink.stop()
        drop_database(url)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each N, in turn")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    base = os.environ.get("MAILBOT_TEST_DATABASE_URL") or embedded_postgres_url()
    factory = MailFactory(args.seed, "support@example.test")
    mails = factory.generate(args.mails)
    size = sum(len(m.raw) for m in mails) / 1e6
    print(f"{len(mails)} mails ({sum(not m.is_reply for m in mails)} new requests, "
          f"{size:.1f} MB), {os.cpu_count()} CPUs; runs in turn: "
          f"{', '.join(str(n) for n in (1, 2, 3))} daemons × {args.rounds}", flush=True)
    dovecot = Dovecot().start()
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="daemons-bench-") as workdir:
            for round_ in range(args.rounds):
                for daemons in (1, 2, 3):
                    run = measure(daemons, base, dovecot, factory, mails, Path(workdir))
                    runs.append(run)
                    print(f"  round {round_ + 1}, {daemons} daemon(s): processed in "
                          f"{run.processed:5.2f} s ({len(mails) / run.processed:5.1f} mails/s), "
                          f"answered in {run.answered:5.2f} s ({len(mails) / run.answered:5.1f} "
                          f"mails/s); processed per daemon {run.shares}"
                          + (f"; PROBLEMS: {run.problems}" if run.problems else ""), flush=True)
    finally:
        dovecot.stop()
    print("=" * 72)
    print(f"several daemons on one database: {len(mails)} mails, {os.cpu_count()} CPUs, best of {args.rounds}")
    first = None
    for daemons in (1, 2, 3):
        mine = [r for r in runs if r.daemons == daemons]
        processed = min(r.processed for r in mine)
        best = min(mine, key=lambda r: r.answered)
        first = first or best.answered
        print(f"  {daemons} daemon(s): {len(mails) / processed:6.1f} mails/s processed, "
              f"{len(mails) / best.answered:6.1f} mails/s answered "
              f"({first / best.answered:4.2f}× one daemon); processed per daemon {best.shares}")
    problems = [p for r in runs for p in r.problems]
    print(f"  verification: {'OK' if not problems else 'FAILED'}")
    print("=" * 72)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
