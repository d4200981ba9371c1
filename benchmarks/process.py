"""Whole-process benchmark: ``mailbot run --once`` against the raw loop, as separate processes.

Usage (from the repository root)::

    .venv/bin/python benchmarks/process.py [--mails 1000] [--rounds 3] [--seed 1]
    .venv/bin/python benchmarks/process.py --latency [--latency-mails 60] [--backlog 1000]

Users run the process, so the process is what is timed: from its start to its exit, imports,
connections, shutdown and all. On one private Dovecot (tests/servers.py), with the corpus of
``benchmarks/ingest.py`` APPENDed to a new mailbox for every run, it runs as child processes

- the **raw loop** (``process.py raw``): imapclient SELECT, SEARCH, FETCH BODY.PEEK[] in batches of
  ``imap.fetch_batch`` and plain mail-parser on every message, no database;
- **mailbot** (``mailbot -c FILE run --once``, the real command line) with a config file naming
  that mailbox, a fresh database on $MAILBOT_TEST_DATABASE_URL's server (schema created and, in the
  "seeded" scenarios, the register filled before the clock starts) and an SMTP server: for "SMTP
  down" a port nobody listens on, for "SMTP up" an aiosmtpd sink in this process;
- the **plain client** (``process.py plain``), after each "SMTP up" run: smtplib sending the bytes
  of that run's outbox rows (files spliced in, read before the clock starts) over one connection
  to the same sink.

Each scenario (register seeded / empty × SMTP down / up) runs raw, mailbot, raw, mailbot, ...
``--rounds`` times and counts its best run of each: a shared machine is noisy, and a slow spell
then does not weigh on one side of a ratio alone. CPU is counted for every process of a run:
this one is a child subreaper, so mailbot's parsing processes are reaped here when their parent
has gone, and their rusage counts exactly; PostgreSQL's backends of the run's database are
sampled every 0.2 s. The send phase (SMTP up) is timed by the sink: from the first EHLO of
the run to the last mail accepted, for mailbot and for the plain client alike.

``--latency`` runs ``mailbot run`` (the daemon, IDLE) instead and times each probe mail from its
APPEND to the sink accepting its acknowledgement: first on an idle daemon, then while a backlog
of ``--backlog`` mails drains (APPENDed just before the probes start, the daemon at work on it
from its first mails), and says where the time went (APPEND -> stored -> processed -> sent).

See benchmarks/README.md ("Whole process") for what it prints and the figures measured.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PR_SET_CHILD_SUBREAPER = 36
MAILBOT = [sys.executable, "-m", "mailbot"]


# ---------------------------------------------------------------- the child programs

def raw_loop(args: argparse.Namespace) -> int:
    """The raw limit: one IMAP connection, FETCH in batches, mail-parser, nothing stored."""
    import mailparser
    from imapclient import IMAPClient

    client = IMAPClient(args.host, port=args.port, ssl=False, timeout=60)
    client._imap.debug = 0  # as mailbot's connect(): imaplib's debug formatting is not the work
    client.login(args.user, args.password)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search("ALL"))
    parsed = 0
    for start in range(0, len(uids), args.batch):
        chunk = uids[start:start + args.batch]
        fetched = client.fetch(chunk, ["BODY.PEEK[]"])
        for uid in chunk:
            mailparser.parse_from_bytes(fetched[uid][b"BODY[]"])
            parsed += 1
    client.logout()
    print(parsed)
    return 0 if parsed == args.expect else 1


def plain_client(args: argparse.Namespace) -> int:
    """A plain SMTP client: the same mails, one connection, one after the other."""
    import smtplib

    with open(args.file, "rb") as f:
        mails = pickle.load(f)
    with smtplib.SMTP(args.host, args.port) as smtp:
        for mail_from, recipients, data in mails:
            smtp.sendmail(mail_from, recipients, data)
    return 0


# ---------------------------------------------------------------- measuring a child

def compile_mailbot() -> None:
    """Compile mailbot's modules, as an installed program's are: an editable install is not
    compiled, and where PYTHONDONTWRITEBYTECODE is set (this machine's shell), every run
    would compile its 68 modules from source (0.1 s) while the raw loop's libraries are
    compiled in site-packages."""
    import compileall

    compileall.compile_dir(ROOT / "mailbot", quiet=1)


def become_subreaper() -> None:
    """Orphaned descendants (mailbot's forkserver, its workers) are reparented to us."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@dataclass
class Finished:
    seconds: float
    cpu: float  # the process and all its descendants (rusage of every one reaped)
    postgres: float  # backends of the run's database
    code: int
    output: str = ""


def run_child(argv: list[str], database: str | None = None, env: dict | None = None,
              log: Path | None = None) -> Finished:
    """Run ``argv`` to its end; wall time, CPU of its whole tree, PostgreSQL backends' CPU."""
    import psutil

    backends = _BackendMeter(database) if database else None
    out = open(log, "wb") if log else subprocess.PIPE
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seen: set[int] = set()
    turn = 0
    while child.poll() is None:  # note the descendants: the orphans among them are ours to reap
        try:
            seen |= {p.pid for p in psutil.Process(child.pid).children(recursive=True)}
        except psutil.Error:
            pass
        turn += 1
        if backends and turn % 4 == 0:  # every process's title: costly, in the sink's process
            backends.sample()
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    output = child.stdout.read().decode() if child.stdout else ""
    if log:
        out.close()
    for pid in seen:  # orphans reparented to us, waited for here (a few ms after their parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                done, _, _ = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                break  # reaped by its own parent: counted in the parent's rusage
            if done:
                break
            time.sleep(0.01)
    postgres = backends.total() if backends else 0.0
    return Finished(seconds, 0.0, postgres, child.returncode, output)


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(argv: list[str], **kwargs) -> Finished:
    """:func:`run_child` with its CPU: Popen reaps the child without rusage, but its times and
    those of every descendant reaped (by it or by us) are in our RUSAGE_CHILDREN."""
    before = children_cpu()
    result = run_child(argv, **kwargs)
    result.cpu = children_cpu() - before
    return result


class _BackendMeter:
    """CPU of the PostgreSQL backends connected to one database (sampled; ended ones keep their
    last sample)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample()
        self.first = dict(self.last)

    def sample(self) -> None:
        import psutil

        for process in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            info = process.info
            if not (info["name"] or "").startswith("postgres") or info["cpu_times"] is None:
                continue
            if f" {self.database} " not in " ".join(info["cmdline"] or []) + " ":
                continue
            self.last[info["pid"]] = info["cpu_times"].user + info["cpu_times"].system

    def total(self) -> float:
        self.sample()
        return sum(used - self.first.get(pid, 0.0) for pid, used in self.last.items())


# ---------------------------------------------------------------- the sink

def timed_sink():
    """An aiosmtpd sink that notes the time of every EHLO/HELO and every accepted mail."""
    from ingest import TimedSink

    class Sink(TimedSink):
        def __init__(self) -> None:
            super().__init__()
            self.greeted: list[float] = []
            self.accepted: list[float] = []

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            self.greeted.append(time.monotonic())
            session.host_name = hostname
            return responses

        async def handle_DATA(self, server, session, envelope):
            answer = await super().handle_DATA(server, session, envelope)
            if answer.startswith("250"):
                self.accepted.append(time.monotonic())
            return answer

        def reset(self) -> None:
            with self._cond:
                self._messages.clear()
                self.greeted.clear()
                self.accepted.clear()
                self.accepted_at.clear()

        def phase(self) -> tuple[int, float]:
            """Mails accepted and seconds from the first EHLO to the last acceptance."""
            with self._cond:
                if not self.accepted:
                    return 0, 0.0
                return len(self.accepted), self.accepted[-1] - self.greeted[0]

    return Sink().start()


# ---------------------------------------------------------------- one scenario

@dataclass
class Scenario:
    seeded: bool
    smtp_up: bool
    raw: list[Finished] = field(default_factory=list)
    bot: list[Finished] = field(default_factory=list)
    send: list[tuple[int, float]] = field(default_factory=list)  # mailbot's send phase
    plain: list[tuple[int, float]] = field(default_factory=list)  # the plain client's
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return (f"register {'seeded' if self.seeded else 'empty'}, "
                f"SMTP {'up' if self.smtp_up else 'down'}")


def write_config(path: Path, database_url: str, mailbox, smtp_port: int, support: str) -> None:
    path.write_text(f"""\
log_level = "WARNING"

[database]
url = "{database_url}"

[support]
address = "{support}"
unknown_auto_reply_limit_per_hour = 1000000

[imap]
host = "{mailbox.host}"
port = {mailbox.port}
ssl = false
username = "{mailbox.user}"
password = "{mailbox.password}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
""", encoding="utf-8")


def outbox_mails(database_url: str) -> list[tuple[str, list[str], bytes]]:
    """Every outbox row of a run as it went on the wire (files spliced in), in id order."""
    from mailbot.register import db
    from mailbot.transport.smtp import SmtpSender

    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, mail_from, recipients FROM outbox ORDER BY id").all()
            return [(mail_from, list(recipients), SmtpSender.wire(conn, outbox_id))
                    for outbox_id, mail_from, recipients in rows]
    finally:
        engine.dispose()


def check_run(database_url: str, mails, sink, smtp_up: bool) -> list[str]:
    """What a mailbot run must have done: every mail stored and processed, every request
    answered (an acknowledgement, or a question for the contact details of an unknown sender)."""
    from sqlalchemy import create_engine, text

    from tests.servers import libpq_url

    engine = create_engine(libpq_url(database_url).replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            count = lambda sql: conn.execute(text(sql)).scalar()  # noqa: E731
            inbound = count("SELECT count(*) FROM inbound")
            pending = count("SELECT count(*) FROM inbound WHERE status <> 'processed'")
            requests = count("SELECT count(*) FROM requests")
            answered = count("SELECT count(DISTINCT o.request_id) FROM outbox o "
                             "JOIN requests r ON r.id = o.request_id "
                             "WHERE r.requester_email = ANY(o.recipients)")
            outbox = count("SELECT count(*) FROM outbox")
            unsent = count("SELECT count(*) FROM outbox WHERE status <> 'sent'")
    finally:
        engine.dispose()
    new = sum(not m.is_reply for m in mails)
    problems = []
    if inbound != len(mails) or pending:
        problems.append(f"inbound {inbound} rows ({pending} not processed), expected {len(mails)}")
    if requests != new or answered != new:
        problems.append(f"{requests} requests, {answered} answered, expected {new}")
    if smtp_up and (unsent or len(sink.messages) != outbox):
        problems.append(f"{unsent} outbox rows unsent, the sink got {len(sink.messages)} of {outbox}")
    return problems


def run_scenario(sc: Scenario, rounds: int, dovecot, factory, mails, base_url: str,
                 sink, closed_port: int, batch: int, workdir: Path) -> None:
    from ingest import append_all, seed_register

    from mailbot.register import db
    from tests.servers import drop_database, fresh_database

    raws = [m.raw for m in mails]
    support = factory.support
    for number in range(1, rounds + 1):
        mailbox = dovecot.new_mailbox()
        append_all(mailbox, raws)
        raw = measured([sys.executable, __file__, "raw", "--host", mailbox.host, "--port",
                        str(mailbox.port), "--user", mailbox.user, "--password", mailbox.password,
                        "--batch", str(batch), "--expect", str(len(mails))])
        if raw.code:
            raise SystemExit(f"raw loop failed: {raw.output}")
        sc.raw.append(raw)
        url = fresh_database(base_url)
        try:
            engine = db.make_engine(url)
            db.init_schema(engine)
            if sc.seeded:
                seed_register(db.make_sessionmaker(engine), factory.senders)
            engine.dispose()
            config = workdir / "mailbot.toml"
            write_config(config, url, mailbox, sink.port if sc.smtp_up else closed_port, support)
            sink.reset()
            name = url.rsplit("/", 1)[-1].split("?")[0]
            bot = measured(MAILBOT + ["--config", str(config), "run", "--once"], database=name,
                           log=workdir / f"mailbot-{len(sc.bot)}.log",
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
            if bot.code:
                raise SystemExit(f"mailbot run --once exited {bot.code}: see {workdir}")
            sc.bot.append(bot)
            sc.problems += check_run(url, mails, sink, sc.smtp_up)
            line = (f"  #{number} raw {len(mails) / raw.seconds:6.1f} mails/s ({raw.seconds:5.2f} s, "
                    f"CPU {raw.cpu:5.2f} s)   mailbot {len(mails) / bot.seconds:6.1f} mails/s "
                    f"({bot.seconds:5.2f} s, CPU {bot.cpu:5.2f} s + PostgreSQL {bot.postgres:5.2f} s)")
            if sc.smtp_up:
                sent, seconds = sink.phase()
                sc.send.append((sent, seconds))
                wire = outbox_mails(url)
                sink.reset()
                plain_file = workdir / "outbox.pickle"
                with open(plain_file, "wb") as f:
                    pickle.dump(wire, f)
                # sampled as mailbot's run was: the sampling shares the sink's process
                plain = measured([sys.executable, __file__, "plain", "--host", sink.host,
                                  "--port", str(sink.port), "--file", str(plain_file)], database=name)
                if plain.code:
                    raise SystemExit(f"plain client failed: {plain.output}")
                sc.plain.append(sink.phase())
                line += (f"\n     send phase: mailbot {sent / seconds:6.1f} mails/s ({sent} mails, "
                         f"{seconds:5.2f} s), plain client {sc.plain[-1][0] / sc.plain[-1][1]:6.1f}"
                         f" mails/s")
            print(line, flush=True)
        finally:
            drop_database(url)


def best(values: list[Finished]) -> Finished:
    return min(values, key=lambda f: f.seconds)


def report(scenarios: list[Scenario], mails, raw_bytes: int, rounds: int) -> bool:
    n = len(mails)
    ok = True
    print()
    print("=" * 78)
    print(f"mailbot whole-process benchmark: {n} mails, {raw_bytes / 1e6:.0f} MB, {os.cpu_count()} CPUs, "
          f"best of {rounds}, interleaved")
    for sc in scenarios:
        raw, bot = best(sc.raw), best(sc.bot)
        ratio = raw.seconds / bot.seconds
        print(f"{sc.name}:")
        print(f"  raw loop       {n / raw.seconds:7.1f} mails/s   CPU {1000 * raw.cpu / n:5.2f} s "
              f"per 1,000 mails")
        print(f"  mailbot        {n / bot.seconds:7.1f} mails/s   CPU {1000 * bot.cpu / n:5.2f} s "
              f"+ PostgreSQL {1000 * bot.postgres / n:5.2f} s per 1,000 mails "
              f"({(bot.cpu + bot.postgres) / raw.cpu:.1f}x the raw loop's)")
        target = "" if sc.smtp_up else f"   target >= 0.75  {'OK' if ratio >= 0.75 else 'MISSED'}"
        ok &= sc.smtp_up or ratio >= 0.75
        print(f"  ratio          {ratio:7.2f}x the raw loop{target}")
        if sc.smtp_up:
            send = max(count / seconds for count, seconds in sc.send)
            plain = max(count / seconds for count, seconds in sc.plain)
            print(f"  send phase     {send:7.1f} mails/s  vs plain client {plain:7.1f} mails/s: "
                  f"{send / plain:.2f}x   target >= 0.8  {'OK' if send / plain >= 0.8 else 'MISSED'}")
            ok &= send / plain >= 0.8
        for problem in sc.problems:
            print(f"  VERIFY FAILED: {problem}")
            ok = False
    print("=" * 78)
    return ok


# ---------------------------------------------------------------- latency

def measure_latency(args, dovecot, base_url: str, workdir: Path) -> bool:
    """The daemon (``mailbot run``, IDLE): APPEND -> ack accepted, idle and under a backlog."""
    from ingest import EN_SUBJECTS, RU_SUBJECTS, MailFactory, append_all, percentile, seed_register_contacts

    from mailbot.register import db
    from tests.servers import drop_database, fresh_database

    sink = timed_sink()
    mailbox = dovecot.new_mailbox()
    url = fresh_database(base_url)
    engine = db.make_engine(url)
    db.init_schema(engine)
    sessions = db.make_sessionmaker(engine)
    backlog = MailFactory(args.seed, mailbox.user).generate(args.backlog) if args.backlog else []
    probes = MailFactory(args.seed + 1000, mailbox.user, tag="lat")
    for _ in range(2 * args.latency_mails):  # one new request per sender: each is acknowledged
        probes.new_sender()
    seed_register_contacts(sessions, probes.senders)
    engine.dispose()

    def probe(i: int):
        sender = probes.senders[i]
        subject = probes.rng.choice(RU_SUBJECTS if sender.russian else EN_SUBJECTS)
        return probes.message(i, sender, subject, None, None,
                              with_attachments=probes.rng.random() < 0.2)[0]

    config = workdir / "daemon.toml"
    write_config(config, url, mailbox, sink.port, mailbox.user)
    daemon = subprocess.Popen(MAILBOT + ["--config", str(config), "run"], cwd=ROOT,
                              stdout=open(workdir / "daemon.log", "wb"), stderr=subprocess.STDOUT)
    results: dict[str, list[float]] = {}
    stages: dict[str, dict[str, list[float]]] = {}
    wall: dict[str, float] = {}
    try:
        time.sleep(3.0)  # started, connected, the empty INBOX synced, in IDLE

        def send_probes(label: str, first: int, backlog_done=None) -> None:
            appended = {}
            with mailbox.client() as client:
                for i in range(first, first + args.latency_mails):
                    mail = probe(i)
                    appended[(mail.message_id, mail.sender)] = time.monotonic()
                    wall[mail.message_id] = time.time()
                    client.append("INBOX", mail.raw)
                    time.sleep(probes.rng.uniform(*args.pace))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(k in sink.accepted_at for k in appended):
                time.sleep(0.05)
            missing = [k for k in appended if k not in sink.accepted_at]
            if missing:
                raise SystemExit(f"latency ({label}): {len(missing)} acknowledgements never arrived")
            results[label] = [sink.accepted_at[k] - t for k, t in appended.items()]
            stages[label] = _stages(url, {k[0]: wall[k[0]] for k in appended})

        send_probes("idle", 0)
        if backlog:
            append_all(mailbox, [m.raw for m in backlog])  # the daemon starts on it meanwhile
            send_probes(f"{len(backlog)}-mail backlog", args.latency_mails)
            wanted = len(backlog) + 2 * args.latency_mails
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and _processed(url) < wanted:
                time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        sink.stop()
        drop_database(url)
    ok = True
    print()
    print("=" * 78)
    print("latency APPEND -> acknowledgement accepted by the sink (mailbot run, IDLE):")
    for label, values in results.items():
        limit = 0.75 if label == "idle" else 5.0
        p95 = percentile(values, 0.95)
        ok &= p95 <= limit
        print(f"  {label:20} n={len(values):3}  p50 {percentile(values, 0.5):5.2f} s  p95 {p95:5.2f} s"
              f"  max {max(values):5.2f} s  mean {statistics.mean(values):5.2f} s   "
              f"target p95 <= {limit} s  {'OK' if p95 <= limit else 'MISSED'}")
        print("    " + ", ".join(f"{name} p50 {percentile(v, 0.5):.2f} s p95 {percentile(v, 0.95):.2f} s"
                                 for name, v in stages[label].items() if v))
    print("=" * 78)
    return ok


def _stages(url: str, appended: dict[str, float]) -> dict[str, list[float]]:
    """Where the probes' time went, from the database: APPEND -> stored -> processed -> sent."""
    import psycopg

    from tests.servers import libpq_url

    found: dict[str, list[float]] = {"stored": [], "processed": [], "sent": []}
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT substr(i.dedup_key, 5), extract(epoch FROM i.received_at), "
            "extract(epoch FROM i.processed_at), extract(epoch FROM min(o.sent_at)) "
            "FROM inbound i JOIN messages m ON m.inbound_id = i.id "
            "JOIN outbox o ON o.request_id = m.request_id AND o.recipients @> ARRAY[m.sender] "
            "WHERE i.dedup_key = ANY(%s) GROUP BY 1, 2, 3",
            ([f"mid:{mid}" for mid in appended],)).fetchall()
    for mid, stored, processed, sent in rows:
        start = appended[mid]
        found["stored"].append(float(stored) - start)
        found["processed"].append(float(processed) - float(stored))
        found["sent"].append(float(sent) - float(processed))
    return found


def _processed(url: str) -> int:
    import psycopg

    from tests.servers import libpq_url

    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute("SELECT count(*) FROM inbound WHERE status <> 'pending'").fetchone()[0]


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="child")
    raw = sub.add_parser("raw", help="(internal) the raw loop")
    for name in ("host", "user", "password"):
        raw.add_argument(f"--{name}", required=True)
    raw.add_argument("--port", type=int, required=True)
    raw.add_argument("--batch", type=int, required=True)
    raw.add_argument("--expect", type=int, required=True)
    plain = sub.add_parser("plain", help="(internal) the plain SMTP client")
    plain.add_argument("--host", required=True)
    plain.add_argument("--port", type=int, required=True)
    plain.add_argument("--file", required=True)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default="seeded-down,empty-down,seeded-up,empty-up",
                        help="comma-separated: {seeded,empty}-{down,up}")
    parser.add_argument("--latency", action="store_true", help="measure latency instead")
    parser.add_argument("--latency-mails", type=int, default=40, help="probe mails per phase")
    parser.add_argument("--backlog", type=int, default=1000, help="backlog mails (--latency)")
    parser.add_argument("--pace", type=float, nargs=2, default=(0.3, 1.0), metavar=("MIN", "MAX"))
    args = parser.parse_args(argv)
    if args.child == "raw":
        return raw_loop(args)
    if args.child == "plain":
        return plain_client(args)

    from ingest import MailFactory

    from mailbot.config import load_config
    from tests.servers import Dovecot, embedded_postgres_url, free_port

    become_subreaper()
    compile_mailbot()
    base = os.environ.get("MAILBOT_TEST_DATABASE_URL") or embedded_postgres_url()
    dovecot = Dovecot().start()
    workdir = Path(tempfile.mkdtemp(prefix="mailbot-process-"))
    try:
        if args.latency:
            return 0 if measure_latency(args, dovecot, base, workdir) else 1
        support = dovecot.new_mailbox().user  # the address; each run gets a mailbox of its own
        factory = MailFactory(args.seed, support)
        mails = factory.generate(args.mails)
        raw_bytes = sum(len(m.raw) for m in mails)
        print(f"generated {len(mails)} mails ({raw_bytes / 1e6:.1f} MB), seed {args.seed}; "
              f"logs in {workdir}", flush=True)
        sink = timed_sink()
        closed = free_port()  # nobody listens there: SMTP down
        batch = load_config(None, environ={}).imap.fetch_batch
        scenarios = [Scenario(name.split("-")[0] == "seeded", name.split("-")[1] == "up")
                     for name in args.scenarios.split(",")]
        for sc in scenarios:
            print(f"{sc.name}:", flush=True)
            run_scenario(sc, args.rounds, dovecot, factory, mails, base, sink, closed, batch, workdir)
        sink.stop()
        return 0 if report(scenarios, mails, raw_bytes, args.rounds) else 1
    finally:
        dovecot.stop()


if __name__ == "__main__":
    sys.exit(main())
