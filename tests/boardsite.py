"""The board served for tests: a real uvicorn server on a free port, over the desk's database.

The login link comes the way staff get it: the board writes the mail to the
outbox, the daemon's sender (``desk.run()``) sends it to the SMTP sink, and the
test reads the link from the mail.
"""
from __future__ import annotations

import asyncio
import re
import threading
from datetime import datetime, timedelta

import httpx
from sqlalchemy import any_, select

from mailbot.config import with_overrides
from mailbot.register.models import Organization, Outbox, Request, Staff
from mailbot.web.app import Board
from mailbot.web.serve import Site
from tests.daemonproc import MailbotProcess, wait_until
from tests.mailflow import Desk, body
from tests.servers import free_port, wait_for_port

LINK = re.compile(r"(https?://\S+/login/[A-Za-z0-9_-]+)")


class BoardSite:
    """The board over ``desk``'s database and clock, served in a thread of its own."""

    def __init__(self, desk: Desk, **web) -> None:
        self.desk = desk
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config = with_overrides(desk.config, web={"enabled": True, "port": port, **web})
        self.board = Board(self.config, desk.sessions, desk.clock)
        self.site = Site("board", self.board.app(), "127.0.0.1", port, self.config.web.public_url,
                         self.config.web.forwarded_allow_ips)
        self.site.bind()
        self._thread = threading.Thread(target=asyncio.run, args=(self.site.serve(),), daemon=True)
        self._thread.start()
        wait_for_port(port)

    def stop(self) -> None:
        self.site.stop()
        self._thread.join(timeout=10)
        self.site.close()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10, **kwargs)

    # ------------------------------------------------------------ log-in

    def ask_link(self, client: httpx.Client, address: str, **headers: str) -> httpx.Response:
        """Fill in the log-in form as a browser would."""
        page = client.get("/login")
        return client.post("/login", data={"email": address, "csrf": csrf(page.text)},
                           headers={"origin": self.url, **headers})

    def mailed_link(self, address: str, timeout: float = 5.0) -> str:
        """The login link in the mail the bot sends to ``address`` (sent through the sink now)."""
        wait_until(lambda: self.links_queued(address) > 0, timeout, f"a login link for {address}")
        self.desk.run()
        mail = [m for m in self.desk.new_mail() if address in m.rcpt_tos]
        assert mail, f"no mail to {address}"
        return LINK.search(body(mail[-1]))[1]

    def links_queued(self, address: str) -> int:
        with self.desk.sessions() as session:
            return len(session.scalars(select(Outbox.id).where(
                Outbox.kind == "web_login", address == any_(Outbox.recipients))).all())

    def spend(self, client: httpx.Client, link: str) -> httpx.Response:
        """Open the link and press «Войти»."""
        path = link.removeprefix(self.config.web.public_url)
        page = client.get(path)
        return client.post(path, data={"csrf": csrf(page.text)}, headers={"origin": self.url})

    def logged_in(self, address: str) -> httpx.Client:
        """A client with a session of the staff member at ``address``."""
        client = self.client()
        self.ask_link(client, address)
        answer = self.spend(client, self.mailed_link(address))
        assert answer.status_code == 303 and answer.headers["location"].endswith("/requests")
        return client


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


# ---------------------------------------------------------------- the register, directly

def add_staff(desk: Desk, login: str, tier: str = "tp1", supervisor: str | None = None) -> str:
    email = desk.add_staff(login, tier=tier)
    if supervisor:
        with desk.sessions.begin() as session:
            boss = session.scalar(select(Staff).where(Staff.login == supervisor))
            session.scalar(select(Staff).where(Staff.login == login)).supervisor_id = boss.id
    return email


def add_request(desk: Desk, number: str, *, level: int | None = 1, status: str = "open",
                received: datetime | None = None, due: timedelta | None = timedelta(minutes=20),
                reacted: timedelta | None = None, subject: str = "Вопрос", parent: str | None = None,
                assignee: str | None = None, organization: str | None = None) -> int:
    """A request written straight into the register (for what mail cannot make yet, and for
    many requests at once); times relative to the desk's clock."""
    received = received or desk.clock.now() - timedelta(minutes=5)
    with desk.sessions.begin() as session:
        request = Request(number=number, level=level, status=status, subject=subject,
                          received_at=received, due_at=received + due if due is not None else None,
                          first_reaction_at=received + reacted if reacted is not None else None,
                          requester_email="client@zavod.example", requester_name="Клиент")
        if parent:
            request.parent_id = session.scalar(select(Request.id).where(Request.number == parent))
        if assignee:
            request.assignee_id = session.scalar(select(Staff.id).where(Staff.login == assignee))
        if organization:
            request.organization_id = session.scalar(
                select(Organization.id).where(Organization.name == organization))
        session.add(request)
        session.flush()
        return request.id


# ---------------------------------------------------------------- a real daemon

class Daemon(MailbotProcess):
    """A `mailbot run` process over the desk (its database, Dovecot mailbox and SMTP sink),
    with the board and the monitoring endpoints on free ports."""

    def __init__(self, desk: Desk, directory) -> None:
        c = desk.config
        self.board_port, self.metrics_port = free_port(), free_port()
        self.board = f"http://127.0.0.1:{self.board_port}"
        self.metrics = f"http://127.0.0.1:{self.metrics_port}"
        super().__init__(directory / "mailbot.toml", directory / "mailbot.log")
        self.config.write_text(f"""log_level = "INFO"
[database]
url = "{c.database.url}"
[imap]
host = "{c.imap.host}"
port = {c.imap.port}
ssl = false
username = "{c.imap.username}"
password = "{c.imap.password}"
idle = false
poll_interval = 0.5
[smtp]
host = "{c.smtp.host}"
port = {c.smtp.port}
retry_base = 1.0
[support]
address = "{c.support.address}"
tp1_address = "{c.support.tp1_address}"
tp2_address = "{c.support.tp2_address}"
[staff]
trusted_authserv_id = "{c.staff.trusted_authserv_id[0]}"
[web]
enabled = true
port = {self.board_port}
[monitoring]
enabled = true
port = {self.metrics_port}
stuck_minutes = 1
""")
