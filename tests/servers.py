"""Real servers for tests and benchmarks: Dovecot (IMAP), an aiosmtpd sink (SMTP), PostgreSQL.

Plain helpers without pytest; tests/conftest.py wraps them in fixtures.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email
import functools
import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from string import Template
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psycopg
from aiosmtpd.controller import Controller
from imapclient import IMAPClient

LOCALHOST = "127.0.0.1"
DOVECOT_BIN = "/usr/sbin/dovecot"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LOCALHOST, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {LOCALHOST}:{port} after {timeout}s") from None
            time.sleep(0.01)


# ---------------------------------------------------------------- Dovecot

DOVECOT_CONF = Template("""\
instance_name = dovecot-test-${IMAP_PORT}
base_dir = ${DIR}/run
state_dir = ${DIR}/state
protocols = imap
listen = 127.0.0.1
log_path = ${DIR}/log/dovecot.log
info_log_path = ${DIR}/log/dovecot.log
default_internal_user = ${INTERNAL_USER}
default_internal_group = ${INTERNAL_GROUP}
default_login_user = ${LOGIN_USER}
first_valid_uid = 1
mail_uid = ${MAIL_UID}
mail_gid = ${MAIL_GID}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
ssl = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${DIR}/users/%u
}
userdb {
  driver = passwd-file
  args = username_format=%u ${DIR}/users/%u
  default_fields = home=${DIR}/mail/%u
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
  mailbox Processed {
    auto = subscribe
  }
}
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    # renamed so that nobody finds it: disables the per-IP login penalty
    path = anvil-auth-penalty-disabled
  }
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = ${IMAP_PORT}
  }
  inet_listener imaps {
    # port 0 disables the built-in default listener on 993
    address = 127.0.0.1
    port = 0
  }
}
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 2 mins
""")


@dataclass(frozen=True)
class Mailbox:
    """Connection data of one IMAP account."""

    host: str
    port: int
    user: str
    password: str

    def client(self) -> IMAPClient:
        """A logged-in plain-IMAP client; the caller logs out (or uses `with`)."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        try:
            client.login(self.user, self.password)
        except BaseException:
            client.shutdown()
            raise
        return client


def _service_accounts() -> dict[str, str]:
    """Dovecot process users: dovecot/dovenull as root, else the current user."""
    if os.geteuid() == 0:
        return {"INTERNAL_USER": "dovecot", "INTERNAL_GROUP": "dovecot",
                "LOGIN_USER": "dovenull", "MAIL_UID": "dovecot", "MAIL_GID": "dovecot"}
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    return {"INTERNAL_USER": user, "INTERNAL_GROUP": group,
            "LOGIN_USER": user, "MAIL_UID": user, "MAIL_GID": group}


class Dovecot:
    """A private Dovecot IMAP server on 127.0.0.1 with passwd-file users (plain, no TLS)."""

    host = LOCALHOST

    def __init__(self) -> None:
        self.port = 0
        self.dir: Path | None = None
        self.paused = False
        self._passwords: dict[str, str] = {}
        self._serial = itertools.count(1)

    def start(self) -> Dovecot:
        """Write the config into a fresh temp dir, start the daemon, wait for the port."""
        if not os.path.exists(DOVECOT_BIN):
            raise FileNotFoundError(f"{DOVECOT_BIN} missing: apt-get install -y dovecot-imapd")
        # not pytest's tmp_path: as root the dir must be traversable by dovecot/dovenull
        self.dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
        atexit.register(self.stop)
        self.port = free_port()
        for sub in ("log", "mail", "users"):
            (self.dir / sub).mkdir()
        accounts = _service_accounts()
        if os.geteuid() == 0:
            self.dir.chmod(0o755)
            shutil.chown(self.dir / "mail", accounts["MAIL_UID"], accounts["MAIL_GID"])
        conf = DOVECOT_CONF.substitute(accounts, DIR=self.dir, IMAP_PORT=self.port)
        (self.dir / "dovecot.conf").write_text(conf)
        _run_daemon([DOVECOT_BIN, "-c", str(self.dir / "dovecot.conf")], self.dir / "log" / "start.err")
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """SIGTERM the master (without waiting the ~2.5 s it lingers) and remove the dir."""
        if self.dir is None:
            return
        pid = self._master_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        atexit.unregister(self.stop)

    def add_user(self, name: str, password: str = "secret") -> Mailbox:
        """Add an account that can log in at once.

        One passwd-file per user: Dovecot stats a changed shared file at most once a
        second, so a user appended to it could fail to log in for up to a second.
        """
        assert self.dir is not None, "Dovecot is not started"
        if name in self._passwords or not name or set(name) & set(":/\n") or name.startswith("."):
            raise ValueError(f"bad or duplicate user name {name!r}")
        tmp = self.dir / "users" / f".{name}"
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n", encoding="utf-8")
        tmp.rename(self.dir / "users" / name)
        self._passwords[name] = password
        return Mailbox(self.host, self.port, name, password)

    def new_mailbox(self, prefix: str = "support", domain: str = "example.test") -> Mailbox:
        """Add a uniquely named account like support-3@example.test (password "secret")."""
        return self.add_user(f"{prefix}-{next(self._serial)}@{domain}")

    def mailbox(self, user: str) -> Mailbox:
        """Connection data of an existing account."""
        return Mailbox(self.host, self.port, user, self._passwords[user])

    def client(self, user: str) -> IMAPClient:
        """A logged-in IMAPClient for `user`."""
        return self.mailbox(user).client()

    def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> int:
        """APPEND a raw message to the user's folder; return its UID."""
        with self.client(user) as client:
            response = client.append(folder, raw, flags=flags)
        # b"[APPENDUID <uidvalidity> <uid>] Append completed."
        return int(response.split(b"]", 1)[0].split()[-1])

    def pause(self) -> None:
        """Stop serving, as in a crash: the master and every process it started (those
        serving open connections too) are killed; the config and the mail stay."""
        assert self.dir is not None, "Dovecot is not started"
        pid = self._master_pid()
        if pid:
            for process in [pid, *_descendants(pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process, signal.SIGKILL)
            _wait_gone(pid)
        (self.dir / "run" / "master.pid").unlink(missing_ok=True)
        self.paused = True

    def resume(self) -> None:
        """Serve again on the same port after :meth:`pause`."""
        assert self.dir is not None, "Dovecot is not started"
        _run_daemon([DOVECOT_BIN, "-c", str(self.dir / "dovecot.conf")], self.dir / "log" / "start.err")
        wait_for_port(self.port)
        self.paused = False

    def deliver(self, user: str, raw: bytes) -> None:
        """Put a message into the user's INBOX as the MTA's local delivery does: a file in
        Maildir/new, written without the IMAP server (which may be paused). The user's
        Maildir must exist (it does after a first login or APPEND)."""
        assert self.dir is not None, "Dovecot is not started"
        maildir = self.dir / "mail" / user / "Maildir"
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.test"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        if os.geteuid() == 0:
            shutil.chown(tmp, "dovecot", "dovecot")
        tmp.rename(maildir / "new" / name)

    def _master_pid(self) -> int | None:
        assert self.dir is not None
        deadline = time.monotonic() + 2
        pidfile = self.dir / "run" / "master.pid"
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the daemon writes it just after forking
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, their children, and so on (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Block until process ``pid`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise TimeoutError(f"process {pid} still runs after {timeout}s")


def _run_daemon(argv: list[str], errfile: Path) -> None:
    """Run a self-daemonizing command; its stderr goes to a file, not a pipe the daemon would keep open."""
    with open(errfile, "w") as err:
        code = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    if code:
        raise RuntimeError(f"{argv} exited {code}: {errfile.read_text()}")


# ---------------------------------------------------------------- SMTP sink


class Received(NamedTuple):
    """One message accepted by SmtpSink."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any = None  # the client's (host, port): one per SMTP connection

    def parsed(self) -> EmailMessage:
        """The message parsed with the modern email policy."""
        return email.message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


class SmtpSink:
    """An aiosmtpd server on a free port that keeps every message it accepts.

    It can refuse recipients (:meth:`refuse`), fail messages (:meth:`fail_next`),
    answer slowly (``delay`` seconds per message) and stop and start again on
    the same port (an outage).
    """

    host = LOCALHOST

    def __init__(self) -> None:
        self.port = 0
        self.rejected = 0
        self.delay = 0.0
        self.rcpts: list[str] = []  # every RCPT address offered, accepted or not
        self._messages: list[Received] = []
        self._fail: tuple[int, int] = (0, 451)
        self._refused: dict[str, str] = {}
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self, port: int | None = None) -> SmtpSink:
        """Start listening, on ``port`` (after :meth:`stop`: the same one) or a free one
        (Controller(port=0) does not work, so one is picked first)."""
        self.port = port or free_port()
        self._controller = Controller(self, hostname=self.host, port=self.port, enable_SMTPUTF8=True)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Received]:
        """A snapshot of the messages received so far."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._cond:
            self._messages.clear()

    def fail_next(self, n: int, code: int = 451) -> None:
        """Answer the next `n` DATA commands with `code` (4xx temporary, 5xx permanent)."""
        with self._cond:
            self._fail = (n, code)

    def refuse(self, address: str, reply: str = "553 5.1.3 malformed address") -> None:
        """Answer every RCPT TO:<address> with ``reply``."""
        with self._cond:
            self._refused[address.lower()] = reply

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `count` messages arrived; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                got = [(m.mail_from, m.rcpt_tos, m.parsed()["Subject"]) for m in self._messages]
                raise AssertionError(f"expected {count} message(s) within {timeout}s, got {len(got)}: {got}")
            return list(self._messages)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        """aiosmtpd hook: accept the recipient unless it is to be refused."""
        with self._cond:
            self.rcpts.append(address)
            reply = self._refused.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd hook: store the message, or reject it while failures are pending."""
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._cond:
            pending, code = self._fail
            if pending > 0:
                self._fail = (pending - 1, code)
                self.rejected += 1
                return f"{code} {code // 100}.3.0 Injected failure"
            data = envelope.original_content or envelope.content
            self._messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), data,
                                           session.peer))
            self._cond.notify_all()
        return "250 OK"


# ---------------------------------------------------------------- PostgreSQL


@functools.cache
def embedded_postgres_url() -> str:
    """Start a pgserver (PostgreSQL 18 with pg_trgm) for this process; return its socket URL."""
    if not os.environ.get("XDG_RUNTIME_DIR"):  # else platformdirs warns on import
        os.environ["XDG_RUNTIME_DIR"] = _temp_dir("xdg-")
    import pgserver

    # pgserver makes every parent of its data dir world-readable as root: keep it in a mkdtemp
    server = pgserver.get_server(Path(_temp_dir("pgserver-")) / "data", cleanup_mode="delete")
    return server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>


def _temp_dir(prefix: str) -> str:
    """A mkdtemp dir removed at exit (after handlers registered later, e.g. pgserver's)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def libpq_url(url: str) -> str:
    """`url` with a plain postgresql:// scheme (drops SQLAlchemy's `+driver`)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


def with_database(url: str, name: str) -> str:
    """libpq URL of database `name` on `url`'s server (TCP or ?host=socket-dir URLs)."""
    return urlunsplit(urlsplit(libpq_url(url))._replace(path=f"/{name}"))


def fresh_database(base_url: str) -> str:
    """Create an empty UTF-8 database `mb_<random>` on base_url's server; return its postgresql:// URL."""
    name = f"mb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8'")
    return with_database(base_url, name)


def drop_database(url: str) -> None:
    """Drop the database of `url`, closing any connections still open to it."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrivatePostgres:
    """A PostgreSQL cluster of its own on a free TCP port, that a test may stop and start.

    It uses the binaries of the embedded pgserver package (PostgreSQL with pg_trgm); as root
    the server runs as pgserver's ``pgserver`` user. The machine's PostgreSQL is not touched.
    """

    host = LOCALHOST

    def __init__(self) -> None:
        self.port = 0
        self.dir: Path | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        """libpq URL of the ``postgres`` database."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def start(self) -> PrivatePostgres:
        """Create the cluster on first use, then start the server and wait until it accepts."""
        if self.dir is None:
            self._init()
        self._pg_ctl("start", "-w", "-t", "30", "-l", str(self.dir / "server.log"),
                     "-o", f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} "
                     "-c fsync=off -c full_page_writes=off")
        return self

    @property
    def running(self) -> bool:
        return self.dir is not None and (self.dir / "data" / "postmaster.pid").exists()

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, as in a real outage)."""
        if self.running:
            self._pg_ctl("stop", "-w", "-m", "fast")

    def destroy(self) -> None:
        """Stop the server and remove the cluster."""
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            atexit.unregister(self.destroy)

    def _init(self) -> None:
        if not os.environ.get("XDG_RUNTIME_DIR"):  # else platformdirs warns on import
            os.environ["XDG_RUNTIME_DIR"] = _temp_dir("xdg-")
        self.dir = Path(tempfile.mkdtemp(prefix="private-pg-"))
        atexit.register(self.destroy)
        self.port = free_port()
        if os.geteuid() == 0:
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.utils import (ensure_folder_permissions, ensure_prefix_permissions,
                                        ensure_user_exists)

            self._user = "pgserver"
            ensure_user_exists(self._user)
            self.dir.chmod(0o755)
            shutil.chown(self.dir, self._user)
            # as pgserver does for its own server: the binaries' user must reach them, also
            # from a checkout inside a 0700 directory (a mkdtemp, as .ci/run's copy)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), *args)

    def _run(self, program: str, *args: str) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        result = subprocess.run([str(POSTGRES_BIN_PATH / program), *args], user=self._user,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd="/")
        if result.returncode:
            raise RuntimeError(f"{program} {' '.join(args)} exited {result.returncode}: {result.stderr}")
