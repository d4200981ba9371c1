"""Real servers for tests and benchmarks: Dovecot (IMAP), an aiosmtpd sink (SMTP), PostgreSQL.

Plain helpers without pytest; tests/conftest.py wraps them in fixtures.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import email
import functools
import grp
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
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


# With OAuth2: XOAUTH2 and OAUTHBEARER logins are checked by the oauth2 passdb, which asks
# the test's token introspection endpoint (RFC 7662) whether a token is active and whose it is.
OAUTH2_PASSDB = """passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = ${DIR}/oauth2.conf
}
"""
OAUTH2_ARGS = """introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
force_introspection = yes
"""


class Dovecot:
    """A private Dovecot IMAP server on 127.0.0.1 with passwd-file users (plain, no TLS);
    with ``introspection_url``, OAuth2 logins too (an oauth2 passdb asking that endpoint)."""

    host = LOCALHOST

    def __init__(self, introspection_url: str = "") -> None:
        self.introspection_url = introspection_url
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
        template = DOVECOT_CONF.template
        if self.introspection_url:
            template = template.replace("auth_mechanisms = plain login",
                                        "auth_mechanisms = plain login xoauth2 oauthbearer")
            template = template.replace("passdb {", OAUTH2_PASSDB + "passdb {", 1)
            (self.dir / "oauth2.conf").write_text(OAUTH2_ARGS.format(url=self.introspection_url))
            (self.dir / "oauth2.conf").chmod(0o644)
        conf = Template(template).substitute(accounts, DIR=self.dir, IMAP_PORT=self.port)
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
    controller_options: dict[str, Any] = {}

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
        self._controller = Controller(self, hostname=self.host, port=self.port, enable_SMTPUTF8=True,
                                      **self.controller_options)
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


class OAuthSmtpSink(SmtpSink):
    """An SMTP sink that wants an OAuth2 login (AUTH XOAUTH2 or OAUTHBEARER, no password
    mechanisms) and asks ``provider`` whether the token is an active one of the user it names."""

    controller_options = {"auth_required": True, "auth_require_tls": False,
                          "auth_exclude_mechanism": ["PLAIN", "LOGIN"]}

    def __init__(self, provider: OAuthProvider) -> None:
        super().__init__()
        self.provider = provider
        self.logins: list[tuple[str, str]] = []  # (mechanism, user) of every accepted login
        self.refused = 0

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        """aiosmtpd hook: ``user=<u>^Aauth=Bearer <token>^A^A``."""
        return await self._check(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> Any:
        """aiosmtpd hook (RFC 7628): ``n,a=<u>,^Ahost=…^Aport=…^Aauth=Bearer <token>^A^A``."""
        return await self._check(server, args, "OAUTHBEARER")

    async def _check(self, server: Any, args: list[str], mechanism: str) -> Any:
        from aiosmtpd.smtp import AuthResult

        raw = base64.b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
        user, token = parse_sasl_oauth(mechanism, raw)
        if user and self.provider.owner(token) == user:
            self.logins.append((mechanism, user))
            return AuthResult(success=True, auth_data=user)
        self.refused += 1
        # RFC 7628 §3.2.2: an error challenge, which the client ends with an empty response
        await server.challenge_auth(json.dumps({"status": "invalid_token", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Authentication credentials invalid")


def parse_sasl_oauth(mechanism: str, raw: bytes) -> tuple[str, str]:
    """(user, token) of a client's XOAUTH2 / OAUTHBEARER response, checked for its form."""
    text = raw.decode("utf-8", "replace")
    if mechanism == "OAUTHBEARER":
        gs2, _, text = text.partition("\x01")
        if not (gs2.startswith("n,a=") and gs2.endswith(",")):
            return "", ""
        user = gs2[4:-1].replace("=2C", ",").replace("=3D", "=")
        fields = dict(f.split("=", 1) for f in text.split("\x01") if "=" in f)
    else:
        fields = dict(f.split("=", 1) for f in text.split("\x01") if "=" in f)
        user = fields.get("user", "")
    if not text.endswith("\x01\x01"):
        return "", ""
    scheme, _, token = fields.get("auth", "").partition(" ")
    return (user, token) if scheme == "Bearer" else ("", "")


# ---------------------------------------------------------------- OAuth2 authorization server


class OAuthProvider:
    """A local OAuth2 authorization server, as Microsoft's, Google's or Yandex's would be.

    Over HTTPS (a self-signed certificate: ``ca_file``): the token endpoint (``token_url``;
    refresh-token and client-credentials grants) and, for msal, an authority whose OpenID
    configuration names that endpoint (``authority``). Over plain HTTP: the token
    introspection endpoint Dovecot's oauth2 passdb asks (``introspection_url``).
    """

    host = LOCALHOST

    def __init__(self) -> None:
        self.lifetime = 3600  # expires_in of the tokens issued
        self.requests: list[dict[str, str]] = []  # every token request's form
        self.introspections = 0
        self._clients: dict[str, tuple[str, str]] = {}  # client_id -> (secret, app mailbox)
        self._refresh: dict[str, str] = {}  # refresh token -> user
        self._active: dict[str, str] = {}  # access token -> user
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._servers: list[Any] = []
        self.dir: Path | None = None

    def start(self) -> OAuthProvider:
        from http.server import ThreadingHTTPServer

        self.dir = Path(tempfile.mkdtemp(prefix="oauth-"))
        atexit.register(self.stop)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem")],
                       check=True, capture_output=True)
        handler = _oauth_handler(self)
        tls, plain = ThreadingHTTPServer((self.host, 0), handler), ThreadingHTTPServer((self.host, 0), handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.dir / "cert.pem", self.dir / "key.pem")
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        self._servers = [tls, plain]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.tls_port, self.plain_port = tls.server_address[1], plain.server_address[1]
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            atexit.unregister(self.stop)

    @property
    def token_url(self) -> str:
        return f"https://{self.host}:{self.tls_port}/token"

    @property
    def authority(self) -> str:
        return f"https://{self.host}:{self.tls_port}/tenant-1"

    @property
    def introspection_url(self) -> str:
        return f"http://{self.host}:{self.plain_port}/introspect"

    @property
    def ca_file(self) -> str:
        assert self.dir is not None
        return str(self.dir / "cert.pem")

    def add_client(self, secret: str = "", mailbox: str = "") -> str:
        """Register an application; with ``mailbox``, its client-credentials tokens open it."""
        client_id = f"client-{next(self._serial)}"
        with self._lock:
            self._clients[client_id] = (secret, mailbox)
        return client_id

    def grant(self, user: str) -> str:
        """A refresh token of ``user`` (as the user's consent in a browser would give)."""
        token = f"rt-{uuid.uuid4().hex}"
        with self._lock:
            self._refresh[token] = user
        return token

    def revoke(self, refresh_token: str) -> None:
        with self._lock:
            self._refresh.pop(refresh_token, None)

    def expire_all(self) -> None:
        """Every access token issued so far stops working (their holders still think them good)."""
        with self._lock:
            self._active.clear()

    def owner(self, token: str) -> str | None:
        """The user an active access token belongs to."""
        with self._lock:
            return self._active.get(token)

    def issued(self) -> list[str]:
        """Every access token that works now."""
        with self._lock:
            return list(self._active)

    def answer_token_request(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(form)
            secret, mailbox = self._clients.get(form.get("client_id", ""), (None, ""))
            if secret is None or secret != form.get("client_secret", ""):
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            grant = form.get("grant_type")
            if grant == "refresh_token":
                user = self._refresh.get(form.get("refresh_token", ""))
                if user is None:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "the refresh token was revoked"}
            elif grant == "client_credentials" and mailbox:
                user = mailbox
            else:
                return 400, {"error": "unsupported_grant_type"}
            token = f"at-{uuid.uuid4().hex}"
            self._active[token] = user
            return 200, {"access_token": token, "token_type": "Bearer",
                         "expires_in": self.lifetime, "scope": form.get("scope", "")}

    def introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
            user = self._active.get(token)
        return {"active": True, "username": user} if user else {"active": False}


def _oauth_handler(provider: OAuthProvider) -> type:
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import parse_qs

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path.endswith("/.well-known/openid-configuration"):  # msal's discovery
                base = f"https://{provider.host}:{provider.tls_port}/tenant-1"
                self._json(200, {"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                                 "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"})
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(size).decode()).items()}
            if self.path == "/introspect":
                self._json(200, provider.introspect(form.get("token", "")))
            elif self.path in ("/token", "/tenant-1/oauth2/v2.0/token"):
                self._json(*provider.answer_token_request(form))
            else:
                self._json(404, {"error": "not_found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


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
