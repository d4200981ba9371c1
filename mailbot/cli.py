"""``mailbot`` command line: the daemon, the database, checks, and the register."""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from . import db
from .clock import Clock
from .config import Config, ConfigError, load_config, with_overrides
from .daemon import Daemon
from .parsers.visible import one_line, visible
from .supervision import GiveUp
from .transport.notify import INBOUND, OUTBOX, notify

log = logging.getLogger("mailbot")

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
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
        self._sessions: sessionmaker[Session] | None = None
        self.clock = Clock()

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            engine = db.make_engine(db.database_url(self.config))
            try:
                db.check_connection(engine)
            except db.DatabaseUnavailable as exc:
                raise Fail(f"database unavailable: {exc}", EX_TEMPFAIL) from None
            self._sessions = db.make_sessionmaker(engine)
        return self._sessions

    def ready_sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is created and up to date."""
        sessions = self.sessions
        db.ensure_schema(sessions.kw["bind"])
        return sessions


# ---------------------------------------------------------------- commands

def cmd_run(app: App, args: argparse.Namespace) -> int:
    dev = None
    config = app.config
    if config.embedded_mail:
        from .transport.devmail import DevMailError, DevMailServer

        dev = DevMailServer(config)
        try:
            config = dev.start()
        except DevMailError as exc:
            raise Fail(str(exc), EX_UNAVAILABLE) from None
        print(dev.describe(), flush=True)
        config = _with_dev_sites(config)
    _log_staff_authentication(app.config)  # as configured (the development server's hint)
    sessions = app.ready_sessions()
    daemon = Daemon(config, sessions, app.clock)
    try:
        if not args.once:
            daemon.sites = _bound_sites(config, sessions, app.clock, daemon)
        if args.once:
            result = asyncio.run(daemon.run_once())
            print(f"processed {result.processed}, quarantined {result.quarantined}")
            return EX_OK
        print(f"mailbot is watching {config.imap.username} at {config.imap.host}:"
              f"{config.imap.port} ({', '.join(config.imap.folders)}); Ctrl+C stops it", flush=True)
        try:
            asyncio.run(_run_until_signal(daemon))
        except GiveUp as exc:  # a fresh process may fare better: systemd restarts a failed one
            log.critical("giving up: %s", exc)
            raise Fail(f"giving up: {exc}", EX_TEMPFAIL) from None
        return EX_OK
    finally:
        for site in daemon.sites:
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
    from .web.serve import ListenError, sites

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


async def _run_until_signal(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.run_forever()


def cmd_db(app: App, args: argparse.Namespace) -> int:
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

    sessions = app.ready_sessions()
    with sessions() as session:
        if args.action == "list":
            print(report.request_list(session, status=args.status, limit=args.limit))
        else:
            text = report.request_detail(session, args.number)
            if text is None:
                raise Fail(f"no request {args.number}")
            print(text)
    return EX_OK


def cmd_request_files(app: App, args: argparse.Namespace) -> int:
    """List the files of a request, or save them into a directory."""
    from pathlib import Path

    from .files import read as read_file
    from .report import request_files

    with app.ready_sessions()() as session:
        files = request_files(session, args.number)
        if files is None:
            raise Fail(f"no request {args.number}")
        for message, row in files:
            line = (f"{row.id:>6}  {row.size:>10} B  {one_line(message.sender) or '-':<30} "
                    f"{one_line(row.filename)}")
            if args.save:
                target = Path(args.save) / f"{row.id}-{row.filename}"
                target.parent.mkdir(parents=True, exist_ok=True)
                with db.binary_cursor(session) as cursor:
                    target.write_bytes(read_file(cursor, row.sha256, message.inbound_id))
                line += f"  -> {target}"
            print(line)
        print(f"{len(files)} file(s)")
    return EX_OK


def cmd_request_new(app: App, args: argparse.Namespace) -> int:
    """Register a request taken by phone, from the web site or the intranet portal."""
    from .workflow.manual import ManualError, ManualRequest, register

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


def cmd_request_command(app: App, args: argparse.Namespace) -> int:
    """Do what a staff reply with these command lines would do."""
    from .lookup import Lookup
    from .parsers.commands import parse_commands
    from .workflow.manual import run_commands

    block = parse_commands("\n".join(args.lines), app.config.support.incident_prefix)
    with app.ready_sessions().begin() as session:
        lookup = Lookup(session, app.config.timezone)
        request, staff = lookup.request_by_number(args.number), lookup.staff_by_login_or_email(args.actor)
        if request is None:
            raise Fail(f"no request {args.number}")
        if staff is None or not staff.active:
            raise Fail(f"no active staff member {args.actor!r}")
        problems = run_commands(session, app.config, app.clock.now(), request, staff, block)
        if problems:
            session.rollback()
            raise Fail("nothing done: " + "; ".join(problems), EX_USAGE)
        notify(session, OUTBOX)
        print(f"{request.number}: {request.status}")
    return EX_OK


def cmd_staff(app: App, args: argparse.Namespace) -> int:
    from . import admin

    with app.ready_sessions().begin() as session:
        try:
            if args.action == "add":
                staff = admin.add_staff(session, login=args.login, full_name=args.name,
                                        email=args.email, tier=args.tier,
                                        department=args.department, qualification=args.qualification,
                                        years=args.years, supervisor=args.supervisor)
                print(f"{staff.login} saved")
            elif args.action in ("deactivate", "activate"):
                admin.set_staff_active(session, args.login, args.action == "activate")
                print(f"{args.login} {args.action}d")
            else:
                print(admin.staff_table(session))
        except admin.AdminError as exc:
            raise Fail(str(exc), EX_USAGE) from None
    return EX_OK


def cmd_incidents(app: App, args: argparse.Namespace) -> int:
    from . import admin
    from .lookup import Lookup

    with app.ready_sessions().begin() as session:
        if args.action == "add":
            try:
                incident = admin.add_incident(session, title=args.title, symptoms=args.symptoms,
                                              solution=args.solution, number=args.number,
                                              prefix=app.config.support.incident_prefix,
                                              now=app.clock.now())
            except admin.AdminError as exc:
                raise Fail(str(exc), EX_USAGE) from None
            print(f"[{incident.number}] created")
        elif args.action == "search":
            matches = Lookup(session, app.config.timezone).search_incidents(args.text, limit=10)
            print("\n".join(f"[{m.number}] {m.score:.2f} {m.title}" for m in matches) or "nothing found")
        else:
            print(admin.incident_table(session))
    return EX_OK


def cmd_crm(app: App, args: argparse.Namespace) -> int:
    """Import a CRM CSV export: bad rows are listed, good rows are kept."""
    from . import crm

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
    from .transport.store import RawMail, looks_like_mail, store

    raw = sys.stdin.buffer.read()
    if not looks_like_mail(raw):
        raise Fail("stdin does not hold a mail message", EX_DATAERR)
    try:
        with app.ready_sessions().begin() as session:
            new = store(session, [RawMail(raw, "ingest")])
    except Fail:
        raise
    except Exception as exc:  # anything that kept the bytes out of the database: let the MTA retry
        raise Fail(f"cannot store the message, the MTA should retry: {exc}", EX_TEMPFAIL) from None
    log.info("ingest: %s", "stored" if new else "already stored")
    return EX_OK


def cmd_undeliverable(app: App, args: argparse.Namespace) -> int:
    """Addresses our SMTP server refused for good: list them, or forget one (mail to it is tried again)."""
    from sqlalchemy import delete, select

    from .models import UndeliverableAddress

    with app.ready_sessions().begin() as session:
        if args.action == "list":
            rows = session.scalars(select(UndeliverableAddress)
                                   .order_by(UndeliverableAddress.refused_at)).all()
            for row in rows:
                print(f"{row.refused_at:%Y-%m-%d %H:%M}  {row.address:<40} {row.reply[:90]}")
            print(f"{len(rows)} undeliverable address(es)")
        else:
            address = args.address.strip().lower()
            gone = session.execute(delete(UndeliverableAddress)
                                   .where(UndeliverableAddress.address == address)).rowcount
            if not gone:
                raise Fail(f"{address} is not recorded as undeliverable")
            print(f"{address} forgotten: new mail to it goes to the SMTP server again")
    return EX_OK


def cmd_quarantine(app: App, args: argparse.Namespace) -> int:
    from . import quarantine
    from .models import Inbound

    with app.ready_sessions().begin() as session:
        if args.action == "list":
            items = quarantine.open_items(session)
            for item, inbound in items:
                print(f"{item.id:>6}  {item.created_at:%Y-%m-%d %H:%M}  {item.stage:<9} "
                      f"{inbound.size:>9} B  {one_line(item.error)[:90]}")
            print(f"{len(items)} message(s) in quarantine")
            return EX_OK
        found = quarantine.get(session, args.id)
        if found is None:
            raise Fail(f"no quarantine item {args.id}")
        item, inbound = found
        if args.action == "show":
            raw = db.read_blob(session, Inbound.raw, inbound.id)
            head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
            head_text = visible(head.decode("utf-8", "replace").replace("\r\n", "\n"))
            print(f"item {item.id}, inbound {inbound.id} from {inbound.source}, {inbound.size} bytes")
            print(f"stage: {item.stage}\nerror: {one_line(item.error)}")
            print(f"resolved: {item.resolution or 'no'}\n\n{head_text}")
        elif args.action == "retry":
            quarantine.retry(session, item, app.clock.now())
            notify(session, INBOUND)
            print(f"item {item.id} will be processed again by the daemon (or `mailbot run --once`)")
        else:
            quarantine.drop(session, item, app.clock.now())
            print(f"item {item.id} dropped; its raw bytes stay in the database")
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
    for action in ("deactivate", "activate"):
        s_actions.add_parser(action).add_argument("login")
    staff.set_defaults(func=cmd_staff)

    incidents = commands.add_parser("incidents", help="the known-error database")
    i_actions = incidents.add_subparsers(dest="action", required=True)
    i_actions.add_parser("list")
    i_add = i_actions.add_parser("add")
    i_add.add_argument("--title", required=True)
    i_add.add_argument("--symptoms", default="")
    i_add.add_argument("--solution", default="")
    i_add.add_argument("--number", help="keep an existing number, e.g. INC-000045")
    i_actions.add_parser("search").add_argument("text")
    incidents.set_defaults(func=cmd_incidents)

    crm = commands.add_parser("crm", help="the corporate CRM: organisations, contacts, contracts")
    crm_actions = crm.add_subparsers(dest="action", required=True)
    crm_actions.add_parser("import", help="upsert from a CSV export (layout: docs/crm.md); "
                           "exit 0 read, 65 unreadable").add_argument("file")
    crm.set_defaults(func=cmd_crm)

    ingest = commands.add_parser("ingest", help="store one message from stdin (MTA pipe); "
                                 "exit 0 stored, 75 retry later, 65 not a mail")
    ingest.set_defaults(func=cmd_ingest)

    quarantine = commands.add_parser("quarantine", help="mail the pipeline could not process")
    q_actions = quarantine.add_subparsers(dest="action", required=True)
    q_actions.add_parser("list", help="open items")
    for action in ("show", "retry", "drop"):
        q_actions.add_parser(action).add_argument("id", type=int)
    quarantine.set_defaults(func=cmd_quarantine)

    undeliverable = commands.add_parser("undeliverable",
                                        help="addresses the SMTP server refused for good")
    u_actions = undeliverable.add_subparsers(dest="action", required=True)
    u_actions.add_parser("list")
    u_actions.add_parser("forget", help="send to it again").add_argument("address")
    undeliverable.set_defaults(func=cmd_undeliverable)
    return parser


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
        return func(App(config), args)
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
