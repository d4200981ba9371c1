"""``mailbot`` command line: the daemon, the database, checks, and the register."""
from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from ..clock import Clock
from ..config import Config, ConfigError, load_config, with_overrides
from ..parsers.visible import one_line, visible

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.orm import Session, sessionmaker

    from ..daemon import Daemon

log = logging.getLogger("mailbot")
# Each command imports what it uses when it runs: `mailbot requests list` does not load the
# daemon, the parsers or the scheduler, and the commands that only read the register do not load
# SQLAlchemy either (App.register; issue 16 §5: a command answers in well under 0.5 s).

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
GC_YOUNG = 10_000  # allocations between collections of the youngest generation (collect_less)
NOISY_LOGGERS = ("mail.log", "mail_devel", "pgserver", "apscheduler", "aiohttp.access",
                 "uvicorn.error")
EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 69, 75, 78


class Fail(Exception):
    """A one-line error for the operator, with the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class App:
    """What every command needs: the config, and (lazily) the database."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._url: str | None = None
        self._sessions: sessionmaker[Session] | None = None
        self.clock = Clock()
        self.finished = False  # the command has closed all it opened: the process may end at once

    @property
    def url(self) -> str:
        """The database's URL (the embedded server is started when none is configured)."""
        from ..register.connection import database_url

        if self._url is None:
            self._url = database_url(self.config)
        return self._url

    @property
    def sessions(self) -> sessionmaker[Session]:
        from ..register import db

        if self._sessions is None:
            engine = db.make_engine(self.url)
            try:
                db.check_connection(engine)
            except db.DatabaseUnavailable as exc:
                raise Fail(f"database unavailable: {exc}", EX_TEMPFAIL) from None
            self._sessions = db.make_sessionmaker(engine)
        return self._sessions

    def close(self) -> None:
        """Close the database's pooled connections."""
        if self._sessions is not None:
            self._sessions.kw["bind"].dispose()

    def ready_sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is created and up to date."""
        from ..register import db

        sessions = self.sessions
        db.ensure_schema(sessions.kw["bind"])
        return sessions

    def register(self) -> psycopg.Connection:
        """A read-only connection for the register's plain-SQL listings (register/listing.py),
        without SQLAlchemy, on a schema that is up to date: one not created or upgraded yet is
        first, as :meth:`ready_sessions` does."""
        from ..register import connection

        try:
            conn = connection.connect(self.url)
        except connection.DatabaseUnavailable as exc:
            raise Fail(f"database unavailable: {exc}", EX_TEMPFAIL) from None
        conn.read_only = True
        if connection.schema_version(conn) != connection.latest_version():
            conn.rollback()  # its snapshot would stand in the way of an upgrade
            self.ready_sessions()
        return conn


# ---------------------------------------------------------------- commands

def cmd_run(app: App, args: argparse.Namespace) -> int:
    import asyncio

    from ..parsing import start_server

    gc.disable()  # while the daemon is imported: see collect_less
    start_server()  # it imports the parsers while this process imports the rest
    from ..daemon import Daemon
    from ..supervision import GiveUp, PoolResetNoise

    collect_less()

    for handler in logging.getLogger().handlers:  # an outage is one line, not a traceback per connection
        handler.addFilter(PoolResetNoise())
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until then, SIGTERM stops as Ctrl+C does
    dev = None
    config = app.config
    if config.embedded_mail:
        from ..transport.devmail import DevMailError, DevMailServer

        dev = DevMailServer(config)
        try:
            config = dev.start()
        except DevMailError as exc:
            raise Fail(str(exc), EX_UNAVAILABLE) from None
        print(dev.describe(), flush=True)
        config = _with_dev_sites(config)
    _log_staff_authentication(app.config)  # as configured (the development server's hint)
    daemon = None
    try:
        sessions = app.ready_sessions()
        daemon = Daemon(config, sessions, app.clock)
        if not args.once:
            daemon.sites = _bound_sites(config, sessions, app.clock, daemon)
        if args.once:
            result = asyncio.run(daemon.run_once())  # its parsing processes and connections closed
            print(f"processed {result.processed}, quarantined {result.quarantined}")
            app.finished = True
            return EX_OK
        watched = "; ".join(f"{account.username} at {account.host}:{account.port} "
                            f"({', '.join(account.folders)}{', ТП2' if role == 'tp2' else ''})"
                            for role, account in config.imap.mailboxes())
        print(f"mailbot is watching {watched}; Ctrl+C stops it", flush=True)
        try:
            asyncio.run(_run_until_signal(daemon))
        except GiveUp as exc:  # a fresh process may fare better: systemd restarts a failed one
            log.critical("giving up: %s", exc)
            raise Fail(f"giving up: {exc}", EX_TEMPFAIL) from None
        return EX_OK
    except KeyboardInterrupt:  # a stop asked for before the daemon's loop took the signals
        return EX_OK
    finally:
        for site in daemon.sites if daemon else ():
            site.close()
        if dev:
            dev.stop()


def _with_dev_sites(config: Config) -> Config:
    """With the development mail server, the board and the monitoring endpoints are on too
    (on ``dev.board_port`` and ``dev.metrics_port``; 0 turns one off), unless configured."""
    dev, changes = config.dev, {}
    if dev.board_port and not config.web.enabled:
        changes["web"] = {"enabled": True, "port": dev.board_port, "host": "127.0.0.1",
                          "base_url": f"http://127.0.0.1:{dev.board_port}"}
    if dev.metrics_port and not config.monitoring.enabled:
        changes["monitoring"] = {"enabled": True, "port": dev.metrics_port, "host": "127.0.0.1"}
    return with_overrides(config, **changes)


def _bound_sites(config: Config, sessions: sessionmaker[Session], clock: Clock,
                 daemon: Daemon | None = None, board: bool | None = None) -> list:
    """The board and the monitoring endpoints, bound now (each says where it listens)."""
    from ..web.serve import ListenError, sites

    try:
        bound = sites(config, sessions, clock, daemon, board=board)
    except ListenError as exc:
        raise Fail(str(exc), EX_UNAVAILABLE) from None
    for site in bound:
        what = "supervisors' board" if site.name == "board" else "monitoring (/metrics, /healthz, /readyz)"
        print(f"{what}: {site.url}/", flush=True)
    return bound


def cmd_web(app: App, args: argparse.Namespace) -> int:
    """The board (and the monitoring endpoints, when enabled) without the daemon."""
    import asyncio

    sessions = app.ready_sessions()
    bound = _bound_sites(app.config, sessions, app.clock, board=True)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: [site.stop() for site in bound])
        await asyncio.gather(*(site.serve() for site in bound))

    try:
        asyncio.run(serve())
    finally:
        for site in bound:
            site.close()
    return EX_OK


def _log_staff_authentication(config: Config) -> None:
    """An insecure or missing staff authentication is a WARNING at start-up (as `check` says)."""
    from .checks import staff_authentication

    state, line = staff_authentication(config)
    log.log(logging.INFO if state == "ok" else logging.WARNING, "%s", line)


async def _run_until_signal(daemon: "Daemon") -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.run_forever()


def cmd_db(app: App, args: argparse.Namespace) -> int:
    from ..register import db

    engine = app.sessions.kw["bind"]
    if args.action == "init":
        created = db.init_schema(engine)
        print("schema created" if created else "schema already present; nothing to do")
        if not created:
            pending = db.latest_version() - (db.current_version(engine) or 0)
            if pending > 0:
                print(f"{pending} migration(s) pending: run `mailbot db upgrade`")
    else:
        try:
            applied = db.upgrade_schema(engine)
        except db.DatabaseUnavailable as exc:
            raise Fail(str(exc)) from None
        print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return EX_OK


def cmd_check(app: App, args: argparse.Namespace) -> int:
    from .checks import run_checks

    return EX_OK if run_checks(app.config, print) else 1


def cmd_requests(app: App, args: argparse.Namespace) -> int:
    from . import report

    with app.register() as conn:
        if args.action == "list":
            print(report.request_list(conn, status=args.status, limit=args.limit))
        else:
            text = report.request_detail(conn, args.number)
            if text is None:
                raise Fail(f"no request {args.number}")
            print(text)
    return EX_OK


def cmd_request_files(app: App, args: argparse.Namespace) -> int:
    """List the files of a request, or save them into a directory."""
    from pathlib import Path

    from ..register import listing

    with app.register() as conn:
        request = listing.request(conn, args.number)
        if request is None:
            raise Fail(f"no request {args.number}")
        files = listing.request_files(conn, request.id)
        if args.save:
            from ..register.files import read as read_file  # it parses mail: only when saving
        for row in files:
            line = (f"{row.id:>6}  {row.size:>10} B  {one_line(row.sender) or '-':<30} "
                    f"{one_line(row.filename)}")
            if row.original_filename and row.original_filename != row.filename:
                line += f"  (named in the mail: {one_line(row.original_filename)!r})"
            if args.save:
                target = Path(args.save) / f"{row.id}-{row.filename}"
                target.parent.mkdir(parents=True, exist_ok=True)
                with conn.cursor(binary=True) as cursor:
                    target.write_bytes(read_file(cursor, row.sha256, row.inbound_id))
                line += f"  -> {target}"
            print(line)
        print(f"{len(files)} file(s)")
    return EX_OK


def cmd_request_new(app: App, args: argparse.Namespace) -> int:
    """Register a request taken by phone, from the web site or the intranet portal."""
    from ..transport.notify import OUTBOX, notify
    from ..workflow.manual import ManualError, ManualRequest, register

    given = ManualRequest(channel=args.channel, text=args.text, subject=args.subject or "",
                          organization=args.org or "", contact_name=args.contact or "",
                          email=args.email or "", level=args.level)
    with app.ready_sessions().begin() as session:
        try:
            request = register(session, app.config, app.clock.now(), given)
            notify(session, OUTBOX)
        except ManualError as exc:
            raise Fail(str(exc), EX_USAGE) from None
        print(f"{request.number} registered: {request.status}, "
              f"level {'ОП%d' % request.level if request.level else '-'}")
    return EX_OK


def _request_and_actor(session: Session, app: App, args: argparse.Namespace) -> tuple:
    """The request ``args.number`` and the active staff member ``args.actor`` acting on it."""
    from ..register.lookup import Lookup

    lookup = Lookup(session, app.config.timezone)
    request, staff = lookup.request_by_number(args.number), lookup.staff_by_login_or_email(args.actor)
    if request is None:
        raise Fail(f"no request {args.number}")
    if staff is None or not staff.active:
        raise Fail(f"no active staff member {args.actor!r}")
    return request, staff


def cmd_request_command(app: App, args: argparse.Namespace) -> int:
    """Do what a staff reply with these command lines would do."""
    from ..parsers.commands import parse_commands
    from ..render import describe_problems
    from ..transport.notify import OUTBOX, notify
    from ..workflow.manual import run_commands

    block = parse_commands("\n".join(args.lines), app.config.support.incident_prefix)
    with app.ready_sessions().begin() as session:
        request, staff = _request_and_actor(session, app, args)
        problems = run_commands(session, app.config, app.clock.now(), request, staff, block)
        if problems:
            session.rollback()
            raise Fail("nothing done: " + "; ".join(describe_problems(problems)), EX_USAGE)
        notify(session, OUTBOX)
        print(f"{request.number}: {request.status}")
    return EX_OK


def cmd_request_send_files(app: App, args: argparse.Namespace) -> int:
    """ОП2: send files to the customer of a request, as ``#файлы`` in a staff reply would."""
    from pathlib import Path

    from ..parsers import MailTooLarge
    from ..render import describe_problems
    from ..transport.notify import OUTBOX, notify
    from ..workflow.manual import send_files

    files = []
    for name in args.files:
        path = Path(name)
        try:
            files.append((path.name, path.read_bytes()))
        except OSError as exc:
            raise Fail(f"{name}: {exc.strerror}", EX_USAGE) from None
    with app.ready_sessions().begin() as session:
        request, staff = _request_and_actor(session, app, args)
        try:
            problems = send_files(session, app.config, app.clock.now(), request, staff, files,
                                  text=args.text or "", description=args.description or "")
        except MailTooLarge as exc:
            raise Fail(f"not sent: {exc}", EX_USAGE) from None
        if problems:
            session.rollback()
            raise Fail("nothing done: " + "; ".join(describe_problems(problems)), EX_USAGE)
        notify(session, OUTBOX)
        print(f"{request.number}: {len(files)} file(s) sent to {one_line(request.requester_email)}, "
              f"awaiting confirmation of receipt; {request.status}")
    return EX_OK


def cmd_staff(app: App, args: argparse.Namespace) -> int:
    if args.action == "list":
        from .report import staff_table

        with app.register() as conn:
            print(staff_table(conn))
        return EX_OK
    from . import admin

    with app.ready_sessions().begin() as session:
        try:
            if args.action == "add":
                staff = admin.add_staff(session, login=args.login, full_name=args.name,
                                        email=args.email, tier=args.tier,
                                        department=args.department, qualification=args.qualification,
                                        years=args.years, supervisor=args.supervisor)
                print(f"{staff.login} saved")
            elif args.action == "edit":
                staff = admin.edit_staff(session, args.login, full_name=args.name, email=args.email,
                                         tier=args.tier, department=args.department,
                                         qualification=args.qualification, years=args.years,
                                         supervisor=args.supervisor,
                                         no_supervisor=args.no_supervisor)
                print(f"{staff.login} saved")
            elif args.action in ("deactivate", "activate"):
                admin.set_staff_active(session, args.login, args.action == "activate")
                print(f"{args.login} {args.action}d")
        except admin.AdminError as exc:
            raise Fail(str(exc), EX_USAGE) from None
    return EX_OK


def cmd_kb(app: App, args: argparse.Namespace) -> int:
    """The known-error database: search, add, show, edit, import, list, solution."""
    if args.action in ("search", "list", "show"):
        return _kb_read(app, args)
    from ..kb import incidents as kb
    from ..transport.notify import OUTBOX, notify

    prefix, now = app.config.support.incident_prefix, app.clock.now()
    with app.ready_sessions().begin() as session:
        try:
            actor = _kb_actor(session, args)
            if args.action == "add":
                incident = kb.create(session, title=args.title, symptoms=args.symptoms,
                                     solution=args.solution, product=args.product,
                                     version=args.version, status=kb.status_named(args.status) or "",
                                     number=args.number, prefix=prefix, actor=actor.login if actor
                                     else "cli", now=now, staff=actor)
                print(f"[{incident.number}] created")
            elif args.action == "import":
                summary = kb.import_file(session, args.file, actor=actor.login if actor else "cli",
                                         now=now, prefix=prefix)
                print(summary.describe())
                for where, reason in summary.errors:
                    print(f"line/item {where}: {reason}")
            else:
                incident = kb.by_number(session, args.number, prefix)
                if incident is None:
                    raise Fail(f"no incident {args.number}", EX_USAGE)
                if args.action == "edit":
                    _kb_edit(session, incident, args, actor, now, prefix)
                    print(f"[{incident.number}] saved")
                else:
                    _kb_solution(app, session, incident, args, actor)
        except kb.KbError as exc:
            raise Fail(str(exc), EX_USAGE) from None
        notify(session, OUTBOX)
    return EX_OK


def _kb_read(app: App, args: argparse.Namespace) -> int:
    """``kb search``, ``kb list``, ``kb show``: plain SQL (the one search, :mod:`mailbot.kb.search`)."""
    from ..kb import views
    from ..kb.search import search
    from ..kb.statuses import status_named
    from ..parsers.numbers import incident_number
    from ..register import listing

    with app.register() as conn:
        if args.action == "search":
            print(views.matches(search(conn, [args.text], limit=args.limit)[args.text]))
        elif args.action == "list":
            status = status_named(args.status or "") if args.status else None
            print(views.incident_list(conn, status=status, limit=args.limit))
        else:
            incident = listing.incident(conn, incident_number(args.number,
                                                              app.config.support.incident_prefix))
            if incident is None:
                raise Fail(f"no incident {args.number}", EX_USAGE)
            print(views.incident_detail(conn, incident))
    return EX_OK


def cmd_report(app: App, args: argparse.Namespace) -> int:
    """How the SLA was kept (issue 18): per level and staff member, as a table or CSV."""
    from ..sla.report import format_csv, format_table, sla_report

    if args.last < args.first:
        raise Fail("--to must not be earlier than --from", EX_USAGE)
    with app.ready_sessions()() as session:
        rows = sla_report(session, app.config, args.first, args.last, app.clock.now())
    if args.csv:
        sys.stdout.write(format_csv(rows))
    else:
        print(format_table(rows) if rows else "no requests opened in this period")
    return EX_OK


def _kb_actor(session: Session, args: argparse.Namespace):
    """The staff member ``--as`` names (None without ``--as``)."""
    from sqlalchemy import func, or_, select

    from ..register.models import Staff

    if not getattr(args, "actor", None):
        return None
    name = args.actor.strip().lower()
    staff = session.scalar(select(Staff).where(or_(func.lower(Staff.login) == name,
                                                   Staff.email == name), Staff.active))
    if staff is None:
        raise Fail(f"no active staff member {args.actor!r}", EX_USAGE)
    return staff


def _kb_edit(session: Session, incident, args: argparse.Namespace, actor, now, prefix: str) -> None:
    from ..kb import incidents as kb

    who = actor.login if actor else "cli"
    kb.edit(session, incident, {f: getattr(args, f) for f in kb.FIELDS
                                if getattr(args, f) is not None}, actor=who, now=now)
    if args.status:
        status = kb.status_named(args.status)
        if status is None:
            raise kb.KbError(f"the status is one of {', '.join(kb.STATUSES)}, not {args.status!r}")
        original = kb.by_number(session, args.duplicate_of, prefix) if args.duplicate_of else None
        if args.duplicate_of and original is None:
            raise kb.KbError(f"no incident {args.duplicate_of}")
        kb.set_status(session, incident, status, duplicate_of=original, actor=who, now=now)


def _kb_solution(app: App, session: Session, incident, args: argparse.Namespace, actor) -> None:
    """ТП2 documents the solution: stored on the incident and sent to ТП1 for each ОП4 under way
    on it (as ``#решение`` by mail)."""
    from sqlalchemy import select

    from ..kb import incidents as kb
    from ..parsers.commands import parse_commands
    from ..register.models import Request
    from ..render import describe_problems
    from ..workflow.manual import run_commands

    if actor is None or actor.tier != "tp2":
        raise Fail("kb solution needs --as a ТП2 member", EX_USAGE)
    open_op4 = session.scalars(select(Request).where(
        Request.incident_id == incident.id, Request.level == 4,
        Request.status.not_in(("closed", "rejected")))).all()
    if not open_op4:
        kb.document_solution(session, incident, args.text, actor=actor.login, now=app.clock.now())
        print(f"[{incident.number}] solution saved (no ОП4 under way: nobody told)")
        return
    block = parse_commands(f"#решение\n{args.text}", app.config.support.incident_prefix)
    for op4 in open_op4:
        problems = run_commands(session, app.config, app.clock.now(), op4, actor, block)
        if problems:
            raise Fail("nothing done: " + "; ".join(describe_problems(problems)), EX_USAGE)
        print(f"[{incident.number}] solution saved and sent to ТП1 ({op4.number})")


def cmd_crm(app: App, args: argparse.Namespace) -> int:
    """Import a CRM CSV export: bad rows are listed, good rows are kept."""
    from ..register import crm

    with app.ready_sessions().begin() as session:
        try:
            summary = crm.import_file(session, args.file)
        except crm.CrmFileError as exc:
            raise Fail(f"{args.file}: {exc}", EX_DATAERR) from None
    print(summary.describe())
    for line, reason in summary.errors:
        print(f"line {line}: {reason}")
    return EX_OK


def cmd_ingest(app: App, args: argparse.Namespace) -> int:
    """Store one message from stdin (an MTA pipe transport, like rt-mailgate)."""
    from ..transport.store import RawMail, looks_like_mail, store

    raw = sys.stdin.buffer.read()
    if not looks_like_mail(raw):
        raise Fail("stdin does not hold a mail message", EX_DATAERR)
    try:
        with app.ready_sessions().begin() as session:
            new = store(session, [RawMail(raw, "ingest", mailbox=args.mailbox)])
    except Fail:
        raise
    except Exception as exc:  # anything that kept the bytes out of the database: let the MTA retry
        raise Fail(f"cannot store the message, the MTA should retry: {exc}", EX_TEMPFAIL) from None
    log.info("ingest: %s", "stored" if new else "already stored")
    return EX_OK


def cmd_undeliverable(app: App, args: argparse.Namespace) -> int:
    """Addresses our mail cannot reach (refused or bounced for good): list them, or forget one
    (automatic mail to it is sent again)."""
    if args.action == "list":
        from ..register import listing

        with app.register() as conn:
            rows = listing.undeliverable(conn)
        for row in rows:
            print(f"{row.refused_at:%Y-%m-%d %H:%M}  {row.source:<4} {row.address:<40} "
                  f"{one_line(row.reply)[:90]}")
        print(f"{len(rows)} undeliverable address(es)")
        return EX_OK
    from sqlalchemy import delete

    from ..register.models import UndeliverableAddress

    with app.ready_sessions().begin() as session:
        address = args.address.strip().lower()
        gone = session.execute(delete(UndeliverableAddress)
                               .where(UndeliverableAddress.address == address)).rowcount
        if not gone:
            raise Fail(f"{address} is not recorded as undeliverable")
        print(f"{address} forgotten: automatic mail to it is sent again")
    return EX_OK


def cmd_quarantine(app: App, args: argparse.Namespace) -> int:
    if args.action in ("list", "show"):
        return _quarantine_read(app, args)
    from ..register.models import Quarantine
    from ..transport.notify import INBOUND, notify
    from . import quarantine

    with app.ready_sessions().begin() as session:
        item = session.get(Quarantine, args.id)
        if item is None:
            raise Fail(f"no quarantine item {args.id}")
        if args.action == "retry":
            quarantine.retry(session, item, app.clock.now())
            notify(session, INBOUND)
            print(f"item {item.id} will be processed again by the daemon (or `mailbot run --once`)")
        else:
            quarantine.drop(session, item, app.clock.now())
            print(f"item {item.id} dropped; its raw bytes stay in the database")
    return EX_OK


def _quarantine_read(app: App, args: argparse.Namespace) -> int:
    """``quarantine list`` (the open items) and ``quarantine show ID`` (an item, its mail's header)."""
    from ..register import listing

    with app.register() as conn:
        if args.action == "list":
            items = listing.quarantined(conn)
            for item in items:
                print(f"{item.id:>6}  {item.created_at:%Y-%m-%d %H:%M}  {item.stage:<9} "
                      f"{item.size:>9} B  {one_line(item.error)[:90]}")
            print(f"{len(items)} message(s) in quarantine")
            return EX_OK
        item = listing.quarantine_item(conn, args.id)
        if item is None:
            raise Fail(f"no quarantine item {args.id}")
        raw = listing.raw_mail(conn, item.inbound_id)
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    head_text = visible(head.decode("utf-8", "replace").replace("\r\n", "\n"))
    print(f"item {item.id}, inbound {item.inbound_id} from {item.source}, {item.size} bytes")
    print(f"stage: {item.stage}\nerror: {one_line(item.error)}")
    print(f"resolved: {item.resolution or 'no'}\n\n{head_text}")
    return EX_OK


# ---------------------------------------------------------------- plumbing

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailbot", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $MAILBOT_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true",
                     help="process everything pending (mailboxes, stored mail, outbox) and exit")
    run.set_defaults(func=cmd_run)

    database = commands.add_parser("db", help="create or upgrade the database schema")
    database.add_argument("action", choices=("init", "upgrade"))
    database.set_defaults(func=cmd_db)

    web = commands.add_parser("web", help="serve the supervisors' board alone ([web]; the "
                              "daemon sends the login links)")
    web.set_defaults(func=cmd_web)

    check = commands.add_parser("check", help="validate config, IMAP, SMTP and the database")
    check.set_defaults(func=cmd_check)

    requests = commands.add_parser("requests", help="the register of requests")
    actions = requests.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recent requests")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    show = actions.add_parser("show", help="one request with its timeline")
    show.add_argument("number")
    files = actions.add_parser("files", help="the files of a request")
    files.add_argument("number")
    files.add_argument("--save", metavar="DIR", help="write them into DIR")
    files.set_defaults(func=cmd_request_files)
    new = actions.add_parser("new", help="register a request taken by phone, web site or portal")
    new.add_argument("--channel", required=True, choices=("phone", "web", "portal"))
    new.add_argument("--text", required=True, help="the substance of the request")
    new.add_argument("--subject")
    new.add_argument("--org", help="organisation: CRM id or name")
    new.add_argument("--contact", help="the person's full name (ФИО)")
    new.add_argument("--email", help="the customer's address (for the acknowledgement)")
    new.add_argument("--level", type=int, choices=(1, 2, 3), help="override the classification")
    new.set_defaults(func=cmd_request_new)
    command = actions.add_parser("command", help="run staff commands, as in a reply by mail")
    command.add_argument("number")
    command.add_argument("--as", dest="actor", required=True, help="staff login or e-mail")
    command.add_argument("lines", nargs="+", help='e.g. "#уровень ОП2" (text lines go to the customer)')
    command.set_defaults(func=cmd_request_command)
    send = actions.add_parser("send-files", help="ОП2: send files to the customer, asking to "
                              "confirm receipt (as #файлы by mail)")
    send.add_argument("number")
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--as", dest="actor", required=True, help="staff login or e-mail")
    send.add_argument("--text", help="words for the customer, above the standard text")
    send.add_argument("--description", help='what is sent, e.g. "дистрибутив 3.1"')
    send.set_defaults(func=cmd_request_send_files)
    requests.set_defaults(func=cmd_requests)
    listing.set_defaults(func=cmd_requests)
    show.set_defaults(func=cmd_requests)

    staff = commands.add_parser("staff", help="support staff (ТП1/ТП2)")
    s_actions = staff.add_subparsers(dest="action", required=True)
    s_actions.add_parser("list")
    add = s_actions.add_parser("add", help="add or update a staff member")
    add.add_argument("login")
    add.add_argument("--name", required=True, help="full name")
    add.add_argument("--email", required=True)
    add.add_argument("--tier", required=True, choices=("tp1", "tp2"))
    add.add_argument("--department", default="")
    add.add_argument("--qualification", default="")
    add.add_argument("--years", type=int, default=0, help="years of experience with the system")
    add.add_argument("--supervisor", help="login of the supervisor")
    edit = s_actions.add_parser("edit", help="change some of a staff member's data")
    edit.add_argument("login")
    edit.add_argument("--name", help="full name")
    edit.add_argument("--email")
    edit.add_argument("--tier", choices=("tp1", "tp2"))
    edit.add_argument("--department")
    edit.add_argument("--qualification")
    edit.add_argument("--years", type=int, help="years of experience with the system")
    boss = edit.add_mutually_exclusive_group()
    boss.add_argument("--supervisor", help="login of the supervisor (SLA escalations and digests)")
    boss.add_argument("--no-supervisor", action="store_true", help="nobody above this person")
    for action in ("deactivate", "activate"):
        s_actions.add_parser(action).add_argument("login")
    staff.set_defaults(func=cmd_staff)

    kb = commands.add_parser("kb", aliases=["incidents"],
                             help="the known-error database (incidents)")
    k_actions = kb.add_subparsers(dest="action", required=True)
    k_search = k_actions.add_parser("search", help="incidents a text is about, with the reason")
    k_search.add_argument("text", help='words, "a phrase", -excluded, an error code')
    k_search.add_argument("--limit", type=int, default=10)
    k_list = k_actions.add_parser("list")
    k_list.add_argument("--status")
    k_list.add_argument("--limit", type=int, default=100)
    k_add = k_actions.add_parser("add", help="a new incident")
    k_add.add_argument("--title", required=True)
    for name in ("symptoms", "solution", "product", "version"):
        k_add.add_argument(f"--{name}", default="")
    k_add.add_argument("--status", default="new", help="new, investigating, solved, closed")
    k_add.add_argument("--number", help="keep an existing number, e.g. INC-000045")
    k_show = k_actions.add_parser("show", help="an incident, its requests and its history")
    k_show.add_argument("number")
    k_edit = k_actions.add_parser("edit", help="change fields or the status (history kept)")
    k_edit.add_argument("number")
    for name in ("title", "symptoms", "solution", "product", "version"):
        k_edit.add_argument(f"--{name}")
    k_edit.add_argument("--status", help="new, investigating, solved, closed, duplicate")
    k_edit.add_argument("--duplicate-of", help="the original, with --status duplicate")
    k_import = k_actions.add_parser("import", help="incidents from a CSV or JSON file "
                                    "(docs/workflow.md); existing numbers are updated")
    k_import.add_argument("file")
    k_solution = k_actions.add_parser("solution", help="ТП2 documents the solution: stored and "
                                      "sent to ТП1 (as #решение)")
    k_solution.add_argument("number")
    k_solution.add_argument("--text", required=True)
    for parser_ in (k_add, k_edit, k_import, k_solution):
        parser_.add_argument("--as", dest="actor", help="staff login or e-mail (the history's actor)")
    kb.set_defaults(func=cmd_kb)

    report = commands.add_parser("report", help="reports on the register")
    r_kinds = report.add_subparsers(dest="kind", required=True)
    sla = r_kinds.add_parser("sla", help="reaction norms kept, per level and staff member "
                             "(times in working minutes)")
    sla.add_argument("--from", dest="first", required=True, type=_day, help="first day, YYYY-MM-DD")
    sla.add_argument("--to", dest="last", required=True, type=_day, help="last day (included)")
    sla.add_argument("--csv", action="store_true", help="CSV instead of a table")
    report.set_defaults(func=cmd_report)

    crm = commands.add_parser("crm", help="the corporate CRM: organisations, contacts, contracts")
    crm_actions = crm.add_subparsers(dest="action", required=True)
    crm_actions.add_parser("import", help="upsert from a CSV export (layout: docs/crm.md); "
                           "exit 0 read, 65 unreadable").add_argument("file")
    crm.set_defaults(func=cmd_crm)

    ingest = commands.add_parser("ingest", help="store one message from stdin (MTA pipe); "
                                 "exit 0 stored, 75 retry later, 65 not a mail")
    ingest.add_argument("--mailbox", choices=("support", "tp2"), default="support",
                        help="the address it was delivered to: support (default) or ТП2's")
    ingest.set_defaults(func=cmd_ingest)

    quarantine = commands.add_parser("quarantine", help="mail the pipeline could not process")
    q_actions = quarantine.add_subparsers(dest="action", required=True)
    q_actions.add_parser("list", help="open items")
    for action in ("show", "retry", "drop"):
        q_actions.add_parser(action).add_argument("id", type=int)
    quarantine.set_defaults(func=cmd_quarantine)

    undeliverable = commands.add_parser("undeliverable",
                                        help="addresses our mail cannot reach (refused or bounced)")
    u_actions = undeliverable.add_subparsers(dest="action", required=True)
    u_actions.add_parser("list")
    u_actions.add_parser("forget", help="send to it again").add_argument("address")
    undeliverable.set_defaults(func=cmd_undeliverable)
    return parser


def _day(value: str):
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {value!r}") from None


def release_big_buffers_to_the_os() -> None:
    """Serve every allocation over 128 KB with mmap, so a 25 MB mail's buffers go back at once.

    glibc raises its mmap threshold after the first large free, and later
    large buffers (raw mail, attachments) then stay in the heap: the daemon's
    resident size would keep the peak of the biggest mail ever seen.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def collect_less() -> None:
    """The cyclic garbage collector, tuned for the daemon once its modules are imported.

    What is there by then (modules, classes, compiled patterns) lives as long as the process
    and holds next to no garbage: it is imported with the collector off, and the collector
    no longer walks it (``gc.freeze``). Mail makes objects by the hundred thousand (ORM rows,
    parsed mail) and refcounting frees nearly all of them: the young generation is collected
    after GC_YOUNG allocations instead of 700. For 1,000 mails (the whole-process benchmark)
    collections took 0.34 s of the process's 3.6 s, 0.23 s of it in four full ones that each
    held every thread for 56 ms; now 0.07-0.11 s.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    gc.enable()


def end_process(app: App, code: int) -> NoReturn:
    """End the process now that the command has closed what it opened (``run --once``): the
    database's connections are closed, the exit handlers run (log handlers flushed, any
    parsing processes stopped, multiprocessing's own), the output flushed, and the
    interpreter's teardown of every module and object is skipped (0.2-0.5 s at the end of a
    run of 1,000 mails, benchmarks/README.md). Only daemon threads may still run then (the
    sender's composer, reading a mail it will not send); the interpreter's exit stops them
    just as abruptly.
    """
    app.close()
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter's exit would run first
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    release_big_buffers_to_the_os()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else config.log_level.upper())
        func: Callable[[App, argparse.Namespace], int] = args.func
        app = App(config)
        code = func(app, args)
        if app.finished and argv is None:  # this process's own command, not a call from Python
            end_process(app, code)
        return code
    except ConfigError as exc:
        print(f"mailbot: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except Fail as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
