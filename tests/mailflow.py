"""A support desk for end-to-end tests: real Dovecot, PostgreSQL and SMTP sink, mail only."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from mailbot.clock import FrozenClock
from mailbot.config import load_config, with_overrides
from mailbot.daemon import Daemon
from mailbot.processor import BatchResult
from mailbot.register import db
from mailbot.register.crm import import_text
from mailbot.register.models import Incident, Request, Staff
from tests.servers import Received

# Wednesday 25 November 2026, 10:00 Moscow time: a working day
MONDAY_MORNING = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)
MX = "mx.tecon.example"  # the support domain's receiving server: its authserv-id and host name

CRM = """crm_id;organization;aliases;domains;contact_name;contact_email;contact_phone;contract_number;valid_from;valid_to
ORG-1;ООО «Завод»;Завод|Завод Ромашка;zavod.example;Иванов Иван Иванович;ivanov@zavod.example;;ТП-17;2026-01-01;2026-12-31
ORG-2;АО «Старый клиент»;Старый клиент;old.example;Петров Пётр Петрович;petrov@old.example;;ТП-03;2023-01-01;2025-12-31
ORG-3;ООО «Тепловые сети»;Теплосети;;;;;ТП-21;2026-01-01;2026-12-31
"""


class Desk:
    """The bot's mailbox on Dovecot, its database, the sink of everything it sends."""

    def __init__(self, database_url: str, dovecot, mailbox, sink) -> None:
        self.dovecot, self.mailbox, self.sink = dovecot, mailbox, sink
        self.clock = FrozenClock(MONDAY_MORNING)
        self.config = with_overrides(
            load_config(None, environ={}),
            database={"url": database_url},
            imap={"host": mailbox.host, "port": mailbox.port, "ssl": False,
                  "username": mailbox.user, "password": mailbox.password},
            smtp={"host": sink.host, "port": sink.port},
            support={"address": mailbox.user, "tp1_address": "tp1@tecon.example",
                     "tp2_address": "tp2@tecon.example"},
            staff={"trusted_authserv_id": (MX,)})
        engine = db.make_engine(database_url)
        db.init_schema(engine)
        self.sessions = db.make_sessionmaker(engine)
        self.seen = 0

    # ------------------------------------------------------------ the register

    def load_crm(self, text: str = CRM) -> None:
        with self.sessions.begin() as session:
            summary = import_text(session, text)
        assert not summary.errors, summary.errors

    def add_staff(self, login: str, *, years: int = 6, tier: str = "tp1",
                  department: str = "Отдел сопровождения проектов", active: bool = True,
                  full_name: str | None = None) -> str:
        email = f"{login}@tecon.example"
        with self.sessions.begin() as session:
            session.add(Staff(login=login, full_name=full_name or f"{login.capitalize()} Сотрудник", email=email,
                              tier=tier, department=department, experience_years=years,
                              active=active))
        return email

    def add_incident(self, number: str, title: str, symptoms: str, solution: str) -> None:
        with self.sessions.begin() as session:
            session.add(Incident(number=number, title=title, symptoms=symptoms, solution=solution))

    def request(self, number: str | None = None) -> Request:
        with self.sessions() as session:
            query = select(Request).order_by(Request.id)
            if number:
                query = query.where(Request.number == number)
            return session.scalars(query).all()[-1]

    # ------------------------------------------------------------ mail

    def write(self, sender: str, subject: str, body: str, *, name: str = "",
              reply_to: Received | None = None, headers: dict[str, str] | None = None,
              attachments: tuple[tuple[str, bytes], ...] = (), dmarc: str | None = "pass",
              mx_results: str | None = None, mx_received: str | None = None,
              above: tuple[str, ...] = (), from_header: str | None = None,
              to: str | None = None, cc: str | None = None,
              written: dict[str, str] | None = None) -> str:
        """Put a mail into the bot's INBOX as our MX delivers it; its Message-ID.

        The MX (:data:`MX`) writes its ``Authentication-Results`` (``dmarc``: what it
        found for the sender's domain, "pass" for a genuine sender, "fail" for a forged
        one, None for no header; ``mx_results``: its results exactly) and its
        ``Received`` (``mx_received``: its value) on top; ``above`` are header lines our
        own later hops wrote above those (LMTP, say); ``headers`` are what the sender
        wrote, below them all. ``from_header`` replaces the ``From:`` value as written; ``to``
        and ``cc`` are the ``To:`` (the bot's address by default) and ``Cc:`` as written;
        ``written`` are header lines exactly as a client wrote them (folding, encoded words),
        replacing the email package's.
        """
        msg = EmailMessage()
        msg["From"] = f"{name} <{sender}>" if name else sender
        msg["To"] = self.mailbox.user if to is None else to
        if cc:
            msg["Cc"] = cc
        msg["Subject"] = subject
        msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "example")
        msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0300"
        if reply_to is not None:
            parent = reply_to.parsed()
            msg["In-Reply-To"] = parent["Message-ID"]
            msg["References"] = " ".join(filter(None, [parent["References"], parent["Message-ID"]]))
            quoted = "\n".join(f"> {line}" for line in
                               parent.get_body(("plain",)).get_content().splitlines())
            body = f"{body}\n\n{parent['Date']}, {parent['From']} пишет:\n{quoted}\n"
        for key, value in (headers or {}).items():
            msg[key] = value
        msg.set_content(body)
        for filename, data in attachments:
            msg.add_attachment(data, maintype="application", subtype="octet-stream",
                               filename=filename)
        for key in written or {}:
            del msg[key]
        raw = "".join(f"{key}: {value}\n" for key, value in (written or {}).items()).encode() \
            + msg.as_bytes()
        if from_header is not None:  # as written: the email package would parse and refold it
            raw = raw.replace(f"From: {msg['From']}\n".encode(), f"From: {from_header}\n".encode(), 1)
        top = "".join(f"{line}\n" for line in above).encode()
        self.dovecot.append(self.mailbox.user, top + mx_trace(sender, dmarc, mx_results, mx_received) + raw)
        return (written or {}).get("Message-ID", msg["Message-ID"]).strip("<>")

    def reply(self, to: Received, sender: str, body: str, **kwargs) -> str:
        return self.write(sender, f"Re: {to.parsed()['Subject']}", body, reply_to=to, **kwargs)

    def run(self) -> BatchResult:
        """What `mailbot run --once` does."""
        return asyncio.run(Daemon(self.config, self.sessions, self.clock).run_once())

    def new_mail(self) -> list[Received]:
        """Mail the bot sent since the last call."""
        messages = self.sink.messages
        fresh, self.seen = messages[self.seen:], len(messages)
        return fresh

    def mail_to(self, address: str) -> Received:
        """The one new mail to ``address`` since the last call of :meth:`new_mail`."""
        found = [m for m in self.new_mail() if address in m.rcpt_tos]
        assert len(found) == 1, [(m.rcpt_tos, m.parsed()["Subject"]) for m in self.sink.messages]
        return found[0]

    def inbox(self) -> dict[str, list[Received]]:
        by_address: dict[str, list[Received]] = {}
        for message in self.new_mail():
            for rcpt in message.rcpt_tos:
                by_address.setdefault(rcpt, []).append(message)
        return by_address


def mx_trace(sender: str, dmarc: str | None, results: str | None = None,
             received: str | None = None) -> bytes:
    """The header lines our MX puts above a mail it receives from ``sender``'s server."""
    domain = sender.rpartition("@")[2] or "unknown.example"
    received = "Received: " + (received or (
        f"from mail.{domain} (mail.{domain} [192.0.2.25])\n\tby {MX} (Postfix) "
        f"with ESMTPS id 4Zq7 for <support@tecon.example>")) + "; Wed, 25 Nov 2026 10:00:01 +0300\n"
    if results is None and dmarc is None:
        return received.encode()
    if results is None:
        checks = (f"dkim=pass header.d={domain}; spf=pass smtp.mailfrom={sender}"
                  if dmarc == "pass" else "dkim=none; spf=none")
        results = f"{checks};\n\tdmarc={dmarc} header.from={domain}"
    return f"Authentication-Results: {MX};\n\t{results}\n{received}".encode()


def body(message: Received) -> str:
    return message.parsed().get_body(("plain",)).get_content()


def staff_answer(notice: Received, sender: str, content: str, *, subject: str | None = None,
                 subtype: str = "plain") -> EmailMessage:
    """A staff member's reply to the bot's ``notice``, its content exactly as written."""
    parent = notice.parsed()
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, parent["Reply-To"]
    msg["Subject"] = subject or f"RE: {parent['Subject']}"
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg["In-Reply-To"] = msg["References"] = parent["Message-ID"]
    msg.set_content(content, subtype=subtype)
    return msg
