"""Ingest benchmark: how close does ``mailbot run --once`` get to the raw IMAP + parse limit?

Usage (from the repository root)::

    .venv/bin/python benchmarks/ingest.py [--mails 1000] [--latency-mails 100] [--seed 1]

Starts a private Dovecot and an SMTP sink (tests/servers.py), uses a fresh database on
$MAILBOT_TEST_DATABASE_URL's server (else an embedded pgserver), generates realistic support
mail deterministically and measures

(a) the raw limit: one IMAP connection, SELECT, SEARCH, FETCH BODY.PEEK[] in batches of
    ``imap.fetch_batch`` and ``parse_mail`` on every message, no database;
(b) ``Daemon.run_once()`` end to end on a fresh schema, both until every message is stored,
    processed and acknowledged in the outbox (no sending) and until the SMTP sink has
    accepted every acknowledgement;
(c) latency with ``Daemon.run_forever`` (IDLE): APPEND one mail at a time, time until the sink
    accepts its acknowledgement (matched by In-Reply-To).

(a) and (b) run twice each, in turn ((a), (b), (a), (b), the second (b) on a new mailbox and
database), and each counts with its better run: a slow spell of a shared machine then does not
weigh on one side of the ratio alone.

See benchmarks/README.md for what it prints.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import logging
import os
import quopri
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from mailbot.clock import Clock  # noqa: E402
from mailbot.config import load_config, with_overrides  # noqa: E402
from mailbot.daemon import Daemon  # noqa: E402
from mailbot.parsers import parse_mail  # noqa: E402
from mailbot.processor import parse_options  # noqa: E402
from mailbot.register import db, files  # noqa: E402
from mailbot.register.models import AttachmentRow, Inbound, Message, Outbox, Quarantine, Request  # noqa: E402
from mailbot.transport.imap import connect  # noqa: E402
from tests.servers import Dovecot, SmtpSink, drop_database, embedded_postgres_url, fresh_database  # noqa: E402

CRLF = b"\r\n"
ACKS_PER_SENDER = 4  # below support.ack_limit_per_hour (5): every new request is acknowledged

# ---------------------------------------------------------------- realistic mail

RU_FIRST = ["Иван", "Пётр", "Сергей", "Алексей", "Андрей", "Дмитрий", "Елена", "Ольга", "Наталья",
            "Татьяна", "Михаил", "Анна", "Юлия", "Владимир", "Николай", "Светлана", "Ирина",
            "Константин", "Евгений", "Марина"]
RU_LAST = ["Иванов", "Петров", "Сидоров", "Кузнецов", "Смирнов", "Попов", "Соколов", "Лебедев",
           "Козлов", "Новиков", "Морозов", "Волков", "Алексеев", "Фёдоров", "Егоров", "Никитин"]
EN_FIRST = ["John", "Mary", "Peter", "Susan", "David", "Laura", "James", "Emma", "Robert", "Anna",
            "Michael", "Sarah", "Thomas", "Kate", "George", "Helen"]
EN_LAST = ["Smith", "Brown", "Taylor", "Wilson", "Evans", "Walker", "Wright", "Green", "Hall",
           "Clarke", "Turner", "Hill", "Cooper", "Ward", "Baker", "Morris"]
RU_ORGS = [("ООО «Завод Прогресс»", "zavod-progress.ru"), ("АО «Энергосбыт»", "energosbyt.ru"),
           ("ПАО «Северсталь-Сервис»", "sever-service.ru"), ("ООО «ТехноЛогистик»", "tehnolog.ru"),
           ("МУП «Водоканал»", "vodokanal.example.ru"), ("АО «НИИ Автоматики»", "niiavt.ru"),
           ("ООО «Ромашка»", "romashka.example"), ("ГБУ «Городская больница №3»", "gb3.med.example"),
           ("ООО «СтройМонтаж»", "stroymontazh.ru"), ("АО «Транспортная компания»", "tk-trans.ru")]
EN_ORGS = [("Acme Logistics Ltd", "acme-logistics.co.uk"), ("Northwind Traders", "northwind.example"),
           ("Globex Energy", "globex-energy.com"), ("Initech GmbH", "initech.de"),
           ("Umbrella Pharma", "umbrella-pharma.example"), ("Contoso Rail", "contoso-rail.com")]
RU_SUBJECTS = [
    "Не запускается АРМ диспетчера", "Ошибка при формировании отчёта за месяц",
    "Проблема с лицензией на сервере", "Зависает модуль учёта после обновления",
    "Не приходят уведомления на почту", "Вопрос по обновлению до версии 5.2",
    "Сбой синхронизации с филиалом", "Не открывается журнал событий",
    "Перестал работать импорт из 1С", "Медленно работает поиск по архиву",
    "Ошибка 0x80070005 при установке клиента", "Нужна помощь с настройкой резервного копирования",
    "Не печатаются накладные", "После перезагрузки сервера не стартует служба",
    "Прошу предоставить дистрибутив последней версии", "Консультация по настройке прав доступа",
    "Не сохраняются изменения в карточке объекта", "Ошибка авторизации через AD",
    "Неверно считаются итоги в сводной ведомости", "Вопрос по интеграции с SCADA",
]
EN_SUBJECTS = [
    "Cannot log in to the web console", "License server unreachable since this morning",
    "Report export fails with error 0x80004005", "Dashboard shows no data after upgrade",
    "Question about the 5.2 release", "Backup job fails every night",
    "Slow response times in the archive module", "Service does not start after reboot",
    "How to configure LDAP group mapping?", "Printing of delivery notes is broken",
    "Integration with SAP stopped working", "Need the latest installer for Windows Server 2022",
]
RU_SENTENCES = [
    "Добрый день!", "После обновления драйверов система не запускается.",
    "Ошибка появляется у всех пользователей отдела, перезагрузка не помогает.",
    "В журнале видно исключение при подключении к базе данных.",
    "Проблема началась вчера примерно в 16:30 по московскому времени.",
    "Прикладываю журнал работы службы и снимок экрана с ошибкой.",
    "Версия клиента 5.1.14, сервер под управлением Windows Server 2019.",
    "Просим помочь как можно скорее, стоит работа смены.",
    "Антивирус отключали, результат тот же.",
    "На тестовом стенде ошибка не воспроизводится.",
    "Подскажите, пожалуйста, какие настройки нужно проверить.",
    "Пользователи жалуются, что отчёт формируется более двадцати минут.",
    "Сертификат на сервере лицензий продлён в прошлом месяце.",
    "Раньше всё работало без замечаний.", "Заранее спасибо за помощь.",
    "Готовы предоставить удалённый доступ для диагностики.",
]
EN_SENTENCES = [
    "Hello support team,", "Since this morning none of our operators can log in.",
    "The error appears right after the splash screen, see the attached log.",
    "We restarted the application server twice without any change.",
    "The problem started after we installed the latest Windows updates.",
    "Client version 5.1.14, server running on Ubuntu 22.04.",
    "Could you please advise which settings we should check?",
    "This is blocking the night shift, so a quick answer would be appreciated.",
    "The same configuration works fine on our test environment.",
    "We can provide remote access for diagnostics if needed.",
    "Thanks in advance for your help.",
]
MAILERS = ["Microsoft Outlook 16.0", "Mozilla Thunderbird 115.6.0", "Apple Mail (2.3774)",
           "Roundcube Webmail/1.6.5", "The Bat! (v10.5.3)", "Яндекс.Почта", "Mail.ru"]
ATTACHMENT_KINDS = [
    ("pdf", "application/pdf", ["Акт_сверки", "scan", "Скриншот_ошибки", "invoice", "Договор"]),
    ("zip", "application/zip", ["logs", "журналы_сервера", "config_backup", "dump"]),
    ("png", "image/png", ["screenshot", "снимок_экрана", "error", "image001"]),
    ("log", "text/plain", ["server", "client", "журнал", "service-trace"]),
]


@dataclass
class GenMail:
    raw: bytes
    message_id: str
    sender: str
    is_reply: bool
    root: int  # index of the mail that opened the request (itself for new mail)
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (filename, data)


@dataclass
class Sender:
    name: str
    address: str
    russian: bool
    org: str


def _header(value: str, charset: str) -> str:
    """An RFC 2047 encoded (and folded) header value; plain ASCII stays as it is."""
    if value.isascii():
        return value
    encoded = Header(value, charset, maxlinelen=76).encode(linesep="\r\n")
    return encoded


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def _crlf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", CRLF)


def _leaf(content_type: str, body: str | bytes, charset: str | None, cte: str,
          extra: list[str] = ()) -> bytes:
    data = body.encode(charset) if isinstance(body, str) else body
    if cte == "base64":
        payload = _b64(data)
    elif cte == "quoted-printable":
        payload = _crlf(quopri.encodestring(data.replace(CRLF, b"\n")))
    else:  # 8bit / 7bit
        payload = _crlf(data)
    ctype = f"{content_type}; charset=\"{charset}\"" if charset else content_type
    head = [f"Content-Type: {ctype}", f"Content-Transfer-Encoding: {cte}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + payload


def _multipart(subtype: str, parts: list[bytes], boundary: str) -> bytes:
    out = [f"Content-Type: multipart/{subtype};\r\n\tboundary=\"{boundary}\"\r\n\r\n".encode(),
           b"This is a multi-part message in MIME format.\r\n"]
    for part in parts:
        out += [f"\r\n--{boundary}\r\n".encode(), part]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


def _html(paragraphs: list[str], quote_html: str | None) -> str:
    body = "".join(f"<p class=\"MsoNormal\">{p}</p>\n" for p in paragraphs)
    if quote_html:
        body += f"<blockquote style=\"border-left:1px solid #ccc;padding-left:8px\">{quote_html}</blockquote>\n"
    return ("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html\">"
            "<style>p.MsoNormal{margin:0;font-family:Calibri,sans-serif}</style></head>\n"
            f"<body lang=\"RU\"><div class=\"WordSection1\">\n{body}</div></body></html>\n")


class MailFactory:
    """Deterministic support mail: the same seed gives byte-identical messages."""

    def __init__(self, seed: int, support: str, tag: str = "b") -> None:
        self.rng = random.Random(seed)
        self.support = support
        self.tag = tag
        self.senders: list[Sender] = []
        self.acks: dict[str, int] = {}
        self.start = datetime(2026, 11, 23, 6, 0, tzinfo=timezone(timedelta(hours=3)))
        self.serial = 0

    def new_sender(self) -> Sender:
        rng = self.rng
        russian = rng.random() < 0.7
        if russian:
            org, domain = rng.choice(RU_ORGS)
            first, last = rng.choice(RU_FIRST), rng.choice(RU_LAST)
            name = f"{first} {last}"
            local = f"{_translit(first)}.{_translit(last)}{len(self.senders)}".lower()
        else:
            org, domain = rng.choice(EN_ORGS)
            first, last = rng.choice(EN_FIRST), rng.choice(EN_LAST)
            name = f"{first} {last}"
            local = f"{first}.{last}{len(self.senders)}".lower()
        sender = Sender(name, f"{local}@{domain}", russian, org)
        self.senders.append(sender)
        return sender

    def sender_for_new_request(self) -> Sender:
        """A sender who has had fewer than ACKS_PER_SENDER acknowledgements."""
        candidates = [s for s in self.senders if self.acks.get(s.address, 0) < ACKS_PER_SENDER]
        if not candidates or self.rng.random() < 0.35:
            sender = self.new_sender()
        else:
            sender = self.rng.choice(candidates)
        self.acks[sender.address] = self.acks.get(sender.address, 0) + 1
        return sender

    def generate(self, count: int, reply_share: float = 0.15,
                 attachment_share: float = 0.2) -> list[GenMail]:
        mails: list[GenMail] = []
        subjects: list[str] = []
        texts: list[str] = []
        for index in range(count):
            reply_to = None
            if mails and self.rng.random() < reply_share:
                reply_to = self.rng.randrange(len(mails))
            if reply_to is None:
                sender = self.sender_for_new_request()
                subject = self.rng.choice(RU_SUBJECTS if sender.russian else EN_SUBJECTS)
            else:
                sender = self._sender(mails[reply_to].sender)
                prefix = self.rng.choice(["Re: ", "RE: ", "Re: ", "Ответ: " if sender.russian else "Re: "])
                subject = prefix + _strip_re(subjects[reply_to])
            mail, text = self.message(index, sender, subject, mails[reply_to] if reply_to is not None else None,
                                      texts[reply_to] if reply_to is not None else None,
                                      with_attachments=self.rng.random() < attachment_share)
            mails.append(mail)
            subjects.append(subject)
            texts.append(text)
        return mails

    def _sender(self, address: str) -> Sender:
        return next(s for s in self.senders if s.address == address)

    def message(self, index: int, sender: Sender, subject: str, parent: GenMail | None,
                parent_text: str | None, with_attachments: bool) -> tuple[GenMail, str]:
        rng = self.rng
        self.serial += 1
        domain = sender.address.rpartition("@")[2]
        mid = f"{self.tag}{self.serial:06d}.{rng.getrandbits(48):012x}@{domain}"
        when = self.start + timedelta(seconds=37 * self.serial + rng.randrange(30))
        if sender.russian:
            charset = rng.choice(["utf-8", "utf-8", "windows-1251", "koi8-r"])
            sentences = RU_SENTENCES
            signature = f"--\r\nС уважением,\r\n{sender.name}\r\n{sender.org}\r\nтел. +7 (495) {rng.randrange(100, 999)}-{rng.randrange(10, 99)}-{rng.randrange(10, 99)}"
        else:
            charset = rng.choice(["utf-8", "us-ascii", "iso-8859-1"])
            sentences = EN_SENTENCES
            signature = f"--\r\nBest regards,\r\n{sender.name}\r\n{sender.org}"
        paragraphs = [sentences[0]] + rng.sample(sentences[1:], rng.randrange(2, 6))
        text = "\r\n\r\n".join(paragraphs) + "\r\n\r\n" + signature + "\r\n"
        quote_html = None
        if parent is not None and parent_text is not None:
            said = "пишет" if sender.russian else "wrote"
            header = f"{format_datetime(when - timedelta(hours=2))}, {self.support} {said}:"
            quoted = "\r\n".join("> " + line for line in parent_text.splitlines()[:40])
            text = text + "\r\n" + header + "\r\n" + quoted + "\r\n"
            quote_html = "<br>\n".join(_escape(line) for line in parent_text.splitlines()[:40])
        if charset == "koi8-r":  # what a KOI8-R client does with characters it cannot encode
            text = text.replace("«", '"').replace("»", '"').replace("№", "N")
            quote_html = quote_html and quote_html.replace("«", "&laquo;").replace("»", "&raquo;")
        headers = [
            f"Return-Path: <{sender.address}>",
            f"Received: from mx.{domain} (mx.{domain} [198.51.100.{rng.randrange(1, 254)}])\r\n"
            f"\tby mail.example.test with ESMTPS id {rng.getrandbits(40):010x}\r\n"
            f"\tfor <{self.support}>; {format_datetime(when)}",
            f"From: {_header(sender.name, charset if charset != 'us-ascii' else 'utf-8')} <{sender.address}>",
            f"To: {_header('Техническая поддержка', 'utf-8')} <{self.support}>",
        ]
        if rng.random() < 0.2:
            colleague = f"{_header(rng.choice(RU_FIRST if sender.russian else EN_FIRST), 'utf-8')} <office@{domain}>"
            headers.append(f"Cc: {colleague}")
        subject_charset = charset if charset not in ("us-ascii", "iso-8859-1") or subject.isascii() else "utf-8"
        headers += [
            f"Subject: {_header(subject, subject_charset)}",
            f"Date: {format_datetime(when)}",
            f"Message-ID: <{mid}>",
        ]
        if parent is not None:
            refs = _references(parent) + [parent.message_id]
            headers.append(f"In-Reply-To: <{parent.message_id}>")
            headers.append("References: " + "\r\n ".join(f"<{r}>" for r in refs[-10:]))
        headers += [f"X-Mailer: {rng.choice(MAILERS)}", "MIME-Version: 1.0"]

        cte = rng.choice(["quoted-printable", "base64", "8bit"])
        if charset == "us-ascii":
            cte = "7bit"
        html = _html([_escape(p).replace("\r\n", "<br>") for p in text.split("\r\n\r\n")
                      if not p.startswith(">")], quote_html)
        style = rng.random()
        if style < 0.45:
            body = _leaf("text/plain", text, charset, cte)
        elif style < 0.85:
            body = _multipart("alternative", [_leaf("text/plain", text, charset, cte),
                                              _leaf("text/html", html, charset, cte)],
                              f"----=_Alt_{rng.getrandbits(64):016x}")
        else:
            body = _leaf("text/html", html, charset, cte)
        attachments: list[tuple[str, bytes]] = []
        if with_attachments:
            parts = [body]
            for _ in range(rng.choice([1, 1, 1, 2])):
                name, data, part = self.attachment()
                attachments.append((name, data))
                parts.append(part)
            body = _multipart("mixed", parts, f"----=_Mix_{rng.getrandbits(64):016x}")
        head = "\r\n".join(headers).encode("utf-8") + CRLF
        raw = head + body
        return GenMail(raw, mid, sender.address, parent is not None,
                       parent.root if parent is not None else index, attachments), text

    def attachment(self) -> tuple[str, bytes, bytes]:
        rng = self.rng
        ext, ctype, stems = rng.choice(ATTACHMENT_KINDS)
        size = rng.randrange(50 * 1024, 1024 * 1024 + 1)
        if ext == "log":
            line = "2026-11-24 {:02d}:{:02d}:{:02d}.{:03d} [{}] {}: {}\n"
            out, total = [], 0
            while total < size:
                entry = line.format(rng.randrange(24), rng.randrange(60), rng.randrange(60),
                                    rng.randrange(1000), rng.choice(["INFO", "WARN", "ERROR", "DEBUG"]),
                                    rng.choice(["db.pool", "scada.link", "report.export", "auth"]),
                                    rng.choice(["connection reset by peer", "retrying in 5 s",
                                                "query took 1834 ms", "token expired",
                                                "ошибка чтения блока 0x1f"]))
                out.append(entry)
                total += len(entry.encode())
            data = "".join(out).encode("utf-8")[:size]
            data = data[:data.rfind(b"\n") + 1]
        else:
            data = rng.randbytes(size)
        name = f"{rng.choice(stems)}_{rng.randrange(1, 999)}.{ext}"
        if name.isascii():
            disposition = f"attachment;\r\n\tfilename=\"{name}\""
            ct = f"{ctype}; name=\"{name}\""
        elif rng.random() < 0.5:  # RFC 2231 (Thunderbird, Apple Mail)
            disposition = f"attachment;\r\n\tfilename*=utf-8''{quote(name, safe='')}"
            ct = ctype
        else:  # RFC 2047 in a quoted string (Outlook, many webmails)
            encoded = Header(name, "utf-8").encode(maxlinelen=998)
            disposition = f"attachment;\r\n\tfilename=\"{encoded}\""
            ct = f"{ctype}; name=\"{encoded}\""
        part = _leaf(ct, data, None, "base64", [f"Content-Disposition: {disposition}"])
        return name, data, part


def _references(mail: GenMail) -> list[str]:
    head = BytesHeaderParser().parsebytes(mail.raw.split(b"\r\n\r\n", 1)[0])
    value = head.get("References") or ""
    return [r.strip("<>") for r in str(value).split()]


def _strip_re(subject: str) -> str:
    for prefix in ("Re: ", "RE: ", "Ответ: "):
        while subject.startswith(prefix):
            subject = subject[len(prefix):]
    return subject


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_TRANSLIT = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                     ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o",
                      "p", "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e",
                      "yu", "ya"]))


def _translit(word: str) -> str:
    return "".join(_TRANSLIT.get(ch, ch) for ch in word.lower())


# ---------------------------------------------------------------- servers and config

class TimedSink(SmtpSink):
    """An SMTP sink that also notes when each message was accepted, by In-Reply-To and recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: dict[tuple[str, str], float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        if answer.startswith("250"):
            now = time.monotonic()
            data = envelope.original_content or envelope.content
            head = BytesHeaderParser().parsebytes(data.split(b"\r\n\r\n", 1)[0])
            in_reply_to = str(head.get("In-Reply-To") or "").strip().strip("<>")
            with self._cond:
                for rcpt in envelope.rcpt_tos:
                    self.accepted_at.setdefault((in_reply_to, rcpt.lower()), now)
        return answer


STAFF_DEPARTMENT = "Отдел сопровождения проектов"
INCIDENTS = [
    ("INC-000101", "Не запускается АРМ диспетчера после обновления драйверов",
     "АРМ закрывается сразу после заставки", "Откатить драйвер видеокарты до версии 472"),
    ("INC-000102", "Ошибка лицензии: сервер лицензий недоступен",
     "Клиент сообщает, что сервер лицензий недоступен", "Перезапустить службу LicenseServer"),
    ("INC-000103", "Медленный поиск по архиву", "Поиск по архиву занимает минуты",
     "Перестроить индексы архива"),
    ("INC-000104", "Сбой синхронизации с филиалом", "Очередь репликации растёт",
     "Очистить очередь и перезапустить репликацию"),
    ("INC-000105", "Ошибка авторизации через AD", "Пользователи домена не входят",
     "Обновить пароль сервисной учётной записи"),
]


def seed_register_contacts(sessions, senders: list[Sender]) -> None:
    """Every other sender becomes a known CRM contact of the organisation of their domain."""
    from mailbot.register.crm import import_text

    orgs = {domain: (f"ORG-{i}", name) for i, (name, domain) in enumerate(RU_ORGS + EN_ORGS, 1)}
    lines = ["crm_id;organization;contact_name;contact_email"]
    for sender in senders[::2]:
        crm_id, name = orgs[sender.address.rpartition("@")[2]]
        lines.append(f"{crm_id};{name};{sender.name};{sender.address}")
    with sessions.begin() as session:
        summary = import_text(session, "\n".join(lines) + "\n")
    if summary.errors:
        raise SystemExit(f"CRM import failed: {summary.errors[:3]}")


def seed_register(sessions, senders: list[Sender]) -> None:
    """The CRM (organisations with contracts, every other sender a known contact), staff, incidents."""
    from mailbot.register.crm import import_text
    from mailbot.register.models import Incident, Staff

    lines = ["crm_id;organization;aliases;domains;contact_name;contact_email;contact_phone;"
             "contract_number;valid_from;valid_to"]
    for number, (name, domain) in enumerate(RU_ORGS + EN_ORGS, 1):
        alias = name.split("«")[-1].rstrip("»") if "«" in name else name.split()[0]
        lines.append(f"ORG-{number};{name};{alias};{domain};;;;ТП-{number:02d};2026-01-01;2027-12-31")
    with sessions.begin() as session:
        summary = import_text(session, "\n".join(lines) + "\n")
        if summary.errors:
            raise SystemExit(f"CRM import failed: {summary.errors[:3]}")
        for i, (login, years) in enumerate([("petrova", 6), ("sidorov", 7), ("kuznetsova", 4),
                                            ("orlov", 9), ("belova", 3), ("zaitsev", 5)]):
            session.add(Staff(login=login, full_name=f"{login.capitalize()} Сотрудник",
                              email=f"{login}@tecon.example", tier="tp1", department=STAFF_DEPARTMENT,
                              experience_years=years))
        for number, title, symptoms, solution in INCIDENTS:
            session.add(Incident(number=number, title=title, symptoms=symptoms, solution=solution))
    seed_register_contacts(sessions, senders)


def append_all(mailbox, raws: list[bytes], chunk_bytes: int = 8 * 1024 * 1024) -> None:
    """MULTIAPPEND to INBOX in chunks of about ``chunk_bytes``, in order."""
    with mailbox.client() as client:
        batch: list[bytes] = []
        size = 0
        for raw in raws:
            batch.append(raw)
            size += len(raw)
            if size >= chunk_bytes:
                client.multiappend("INBOX", batch)
                batch, size = [], 0
        if batch:
            client.multiappend("INBOX", batch)


BIG_COLUMNS = (("inbound", "raw"), ("files", "data"), ("outbox", "raw"))


def set_toast_compression(engine, method: str) -> None:
    """Experiment: how the big bytea columns are stored. The schema stores them uncompressed
    (STORAGE EXTERNAL, = ``none``); ``pglz`` and ``lz4`` compress them (STORAGE EXTENDED)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        for table, column in BIG_COLUMNS:
            if method == "none":
                conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL"))
            else:
                conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED, "
                                  f"ALTER COLUMN {column} SET COMPRESSION {method}"))
    print(f"experiment: {', '.join(f'{t}.{c}' for t, c in BIG_COLUMNS)} stored with "
          f"{'no compression' if method == 'none' else method}", flush=True)


def make_config(database_url: str, mailbox, sink: SmtpSink):
    return with_overrides(
        load_config(None, environ={}),
        database={"url": database_url},
        imap={"host": mailbox.host, "port": mailbox.port, "ssl": False,
              "username": mailbox.user, "password": mailbox.password},
        smtp={"host": sink.host, "port": sink.port},
        # the stream is legitimate mail, half of it from senders the CRM does not list: every
        # new request is acknowledged, so the backscatter cap must not cut in
        support={"address": mailbox.user, "unknown_auto_reply_limit_per_hour": 1_000_000})


# ---------------------------------------------------------------- measurements

def measure_raw(config, folder: str, expected: int) -> float:
    """(a) FETCH BODY.PEEK[] in the bot's batches + parse_mail, no database; seconds."""
    options = parse_options(config)
    batch = config.imap.fetch_batch
    started = time.perf_counter()
    client = connect(config.imap)
    try:
        client.select_folder(folder)
        uids = sorted(client.search("ALL"))
        parsed = 0
        for start in range(0, len(uids), batch):
            chunk = uids[start:start + batch]
            fetched = client.fetch(chunk, ["BODY.PEEK[]"])
            for uid in chunk:
                parse_mail(fetched[uid][b"BODY[]"], options)
                parsed += 1
    finally:
        client.logout()
    elapsed = time.perf_counter() - started
    if parsed != expected:
        raise SystemExit(f"(a) parsed {parsed} messages in {folder}, expected {expected}")
    return elapsed


class CpuMeter:
    """CPU seconds each kind of process used between :meth:`start` and :meth:`stop`.

    On 2 CPUs the daemon, its parsing processes, PostgreSQL and Dovecot share
    the machine, so where the CPU goes says more than wall time alone. Every
    process is sampled each second (one that ends counts with its last sample).
    """

    def __init__(self) -> None:
        self._base: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        import psutil

        self._base = {pid: used for pid, (_, used) in self._sample().items()}
        self._idle = psutil.cpu_times().idle
        self._thread.start()

    def stop(self) -> dict[str, float]:
        import psutil

        self._stop.set()
        self._thread.join()
        self._sample()
        used: dict[str, float] = {"idle": psutil.cpu_times().idle - self._idle}
        for pid, (kind, total) in self._last.items():
            used[kind] = used.get(kind, 0.0) + total - self._base.get(pid, 0.0)
        return used

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _sample(self) -> dict[int, tuple[str, float]]:
        import psutil

        me = os.getpid()
        try:  # the parsing processes are forked by multiprocessing's forkserver, a child of ours
            ours = {child.pid for child in psutil.Process(me).children(recursive=True)}
        except psutil.Error:
            ours = set()
        for process in psutil.process_iter(["pid", "ppid", "name", "cmdline", "cpu_times"]):
            info = process.info
            if info["cpu_times"] is None:
                continue
            name = info["name"] or ""
            kind = ("mailbot" if info["pid"] == me else "parsing processes" if info["pid"] in ours
                    else _postgres_kind(info["cmdline"]) if name.startswith("postgres")
                    else "Dovecot" if name in ("dovecot", "imap", "imap-login", "auth", "anvil", "log",
                                               "config", "stats")
                    else "other")
            self._last[info["pid"]] = (kind, info["cpu_times"].user + info["cpu_times"].system)
        return self._last


def _postgres_kind(cmdline: list[str] | None) -> str:
    """Its backends (the SQL of the daemon and its workers) or its own background work
    (checkpoints, WAL writing), told apart by the process title."""
    title = " ".join(cmdline or [])
    background = ("checkpointer", "walwriter", "background writer", "autovacuum", "logger")
    return "PostgreSQL background" if any(w in title for w in background) else "PostgreSQL"


@dataclass
class OnceResult:
    fetched: float  # every message committed to inbound
    processed: float  # every message processed, acks in the outbox (sending starts)
    sent: float  # run_once returned: the sink accepted every ack
    processed_count: int
    quarantined: int
    cpu: dict[str, float]  # CPU seconds by kind of process until `processed`


def measure_run_once(config, sessions) -> OnceResult:
    """(b) Daemon.run_once() on the fresh schema, with the time sending starts noted."""
    daemon = Daemon(config, sessions, Clock())
    marks: dict[str, float] = {}
    sync_folder, send_due = daemon._sync_folder, daemon.sender.send_due

    def timed_sync(sync):
        try:
            return sync_folder(sync)
        finally:
            marks["fetched"] = time.perf_counter()

    async def timed_send():
        if "processed" not in marks:
            marks["processed"] = time.perf_counter()
            cpu.update(meter.stop())
        return await send_due()

    daemon._sync_folder, daemon.sender.send_due = timed_sync, timed_send
    meter, cpu = CpuMeter(), {}
    meter.start()
    started = time.perf_counter()
    result = asyncio.run(daemon.run_once())
    done = time.perf_counter()
    return OnceResult(marks["fetched"] - started, marks["processed"] - started, done - started,
                      result.processed, result.quarantined, cpu)


def verify(sessions, mails: list[GenMail], sink: TimedSink, sample: int = 25) -> list[str]:
    """Check what (b) left in the database; a list of problems (empty when all is well)."""
    problems = []
    n = len(mails)
    new = sum(not m.is_reply for m in mails)
    expected_attachments = sum(len(m.attachments) for m in mails)
    with sessions() as s:
        inbound = s.scalar(select(func.count()).select_from(Inbound))
        pending = s.scalar(select(func.count()).select_from(Inbound).where(Inbound.status != "processed"))
        quarantined = s.scalar(select(func.count()).select_from(Quarantine))
        requests = s.scalar(select(func.count()).select_from(Request))
        acks = s.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack"))
        outbox = s.scalar(select(func.count()).select_from(Outbox))
        unsent = s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != "sent"))
        att_rows, att_bytes = s.execute(select(func.count(), func.coalesce(func.sum(AttachmentRow.size), 0))
                                        .select_from(AttachmentRow)).one()
        located = s.execute(select(AttachmentRow.sha256, AttachmentRow.size, Message.inbound_id)
                            .join(Message, AttachmentRow.message_id == Message.id)).all()
        with db.binary_cursor(s) as cursor:  # every file read back the way sending reads it
            read_back = files.read_many(cursor, [(sha, inbound) for sha, _, inbound in located])
        corrupt = sum(hashlib.sha256(data).hexdigest() != sha or len(data) != size
                      for (sha, size, _), data in zip(located, read_back))
        if corrupt:
            problems.append(f"{corrupt} files read back do not match their sha256 or size")
        stored_hashes: dict[str, list[str]] = {}
        for mid, digest in s.execute(select(Message.message_id, AttachmentRow.sha256)
                                     .join(Message, AttachmentRow.message_id == Message.id)
                                     .order_by(AttachmentRow.id)):
            stored_hashes.setdefault(mid, []).append(digest)
        request_of = dict(s.execute(select(Message.message_id, Message.request_id)
                                    .where(Message.direction == "in")).all())
        with_att = [m for m in mails if m.attachments]
        picked = random.Random(7).sample(with_att, min(sample, len(with_att)))
        for mail in picked:
            found = s.execute(select(AttachmentRow.filename, AttachmentRow.sha256, Message.inbound_id)
                              .join(Message, AttachmentRow.message_id == Message.id)
                              .where(Message.message_id == mail.message_id)
                              .order_by(AttachmentRow.id)).all()
            with db.binary_cursor(s) as cursor:
                data = files.read_many(cursor, [(sha, inbound) for _, sha, inbound in found])
            rows = [(name, d) for (name, _, _), d in zip(found, data)]
            if [d for _, d in rows] != [d for _, d in mail.attachments]:
                problems.append(f"attachment bytes differ for <{mail.message_id}>")
            elif [f for f, _ in rows] != [f for f, _ in mail.attachments]:
                problems.append(f"attachment names differ for <{mail.message_id}>: "
                                f"{[f for f, _ in rows]} != {[f for f, _ in mail.attachments]}")
    expected_bytes = sum(len(d) for m in mails for _, d in m.attachments)
    if inbound != n:
        problems.append(f"inbound rows {inbound} != {n}")
    if pending:
        problems.append(f"{pending} inbound rows not processed ({quarantined} quarantined)")
    if att_rows != expected_attachments or att_bytes != expected_bytes:
        problems.append(f"attachments {att_rows} rows / {att_bytes} bytes != generated "
                        f"{expected_attachments} / {expected_bytes}")
    for mail in mails:
        want = [hashlib.sha256(d).hexdigest() for _, d in mail.attachments]
        if stored_hashes.get(mail.message_id, []) != want:
            problems.append(f"attachment sha256 differ for <{mail.message_id}>")
            break
    if requests != new:
        problems.append(f"requests {requests} != non-reply mails {new}")
    wrong_thread = [m.message_id for m in mails if m.is_reply
                    and request_of.get(m.message_id) != request_of.get(mails[m.root].message_id)]
    if wrong_thread:
        problems.append(f"{len(wrong_thread)} replies not in their request, e.g. <{wrong_thread[0]}>")
    if acks != requests:
        problems.append(f"outbox acks {acks} != requests {requests}")
    if unsent:
        problems.append(f"{unsent} outbox rows not sent")
    if len(sink.messages) != outbox:
        problems.append(f"SMTP sink got {len(sink.messages)} mails, outbox has {outbox} rows")
    acked = sum((m.message_id, m.sender) in sink.accepted_at for m in mails if not m.is_reply)
    if acked != new:
        problems.append(f"the sink got acknowledgements for {acked} of {new} new requests")
    return problems


def measure_latency(config, sessions, dovecot, mailbox, sink: TimedSink, count: int, seed: int,
                    pace: tuple[float, float]) -> list[float]:
    """(c) run_forever with IDLE; seconds from APPEND to the sink accepting the ack."""
    factory = MailFactory(seed + 1000, mailbox.user, tag="lat")
    for _ in range(count):  # one new request per sender: each is acknowledged
        factory.new_sender()
    seed_register_contacts(sessions, factory.senders)
    mails = []
    for i in range(count):
        sender = factory.senders[i]
        subject = factory.rng.choice(RU_SUBJECTS if sender.russian else EN_SUBJECTS)
        mail, _ = factory.message(i, sender, subject, None, None,
                                  with_attachments=factory.rng.random() < 0.2)
        mails.append(mail)
    pauses = [factory.rng.uniform(*pace) for _ in mails]

    daemon = Daemon(config, sessions, Clock())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run_forever(),),
                              name="daemon")
    thread.start()
    appended: dict[tuple[str, str], float] = {}
    try:
        time.sleep(1.0)  # the watcher connects, syncs the empty INBOX and enters IDLE
        with mailbox.client() as client:
            for mail, pause in zip(mails, pauses):
                appended[(mail.message_id, mail.sender)] = time.monotonic()
                client.append("INBOX", mail.raw)
                time.sleep(pause)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sink._cond:
                if all(key in sink.accepted_at for key in appended):
                    break
            time.sleep(0.05)
    finally:
        loop.call_soon_threadsafe(daemon.stop)
        thread.join(timeout=15)
    missing = [key for key in appended if key not in sink.accepted_at]
    if missing:
        raise SystemExit(f"latency: {len(missing)} acknowledgements never arrived, e.g. {missing[0]}")
    return [sink.accepted_at[key] - appended[key] for key in appended]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[index]


# ---------------------------------------------------------------- main

@dataclass
class RunB:
    """One measured (b): its database, the sink that got its mail, what it did."""

    database_url: str
    sink: TimedSink
    engine: Any = None
    sessions: Any = None
    config: Any = None
    once: OnceResult | None = None
    problems: list[str] = field(default_factory=list)

    def close(self, keep_db: bool) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if keep_db:
            print(f"database kept: {self.database_url}")
        else:
            drop_database(self.database_url)


def run_b(run: RunB, mailbox, support: str, factory: MailFactory, mails: list[GenMail],
          toast_compression: str | None, number: int) -> None:
    """(b) on ``mailbox`` (which holds the mails) into ``run``'s fresh database, then verify."""
    run.config = with_overrides(make_config(run.database_url, mailbox, run.sink),
                                support={"address": support})
    run.engine = db.make_engine(run.database_url)
    db.init_schema(run.engine)
    if toast_compression:
        set_toast_compression(run.engine, toast_compression)
    run.sessions = db.make_sessionmaker(run.engine)
    seed_register(run.sessions, factory.senders)
    run.once = once = measure_run_once(run.config, run.sessions)
    n = len(mails)
    print(f"(b) #{number} run_once, all stored in inbound:      {once.fetched:6.2f} s  "
          f"{n / once.fetched:7.1f} mails/s", flush=True)
    print(f"(b) #{number} run_once without sending:             {once.processed:6.2f} s  "
          f"{n / once.processed:7.1f} mails/s  (stored + requests + acks in outbox)", flush=True)
    print(f"(b) #{number} run_once with sending:                {once.sent:6.2f} s  "
          f"{n / once.sent:7.1f} mails/s  (the SMTP sink accepted every ack)", flush=True)
    print("    CPU until processed: " + ", ".join(
        f"{kind} {seconds:.1f} s" for kind, seconds in sorted(once.cpu.items(), key=lambda kv: -kv[1])
        if seconds >= 0.05) + f" (of {os.cpu_count()} x {once.processed:.1f} s)", flush=True)
    run.problems = verify(run.sessions, mails, run.sink)
    for problem in run.problems:
        print(f"    VERIFY FAILED: {problem}")
    if not run.problems:
        new = sum(not m.is_reply for m in mails)
        attachments = [d for m in mails for _, d in m.attachments]
        print(f"    verified: {n} inbound rows, {new} requests, {new} acks sent, {len(attachments)} "
              f"attachments ({sum(map(len, attachments))} bytes) kept, replies in their requests",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000, help="mails for (a) and (b)")
    parser.add_argument("--latency-mails", type=int, default=100, help="mails for (c); 0 skips it")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pace", type=float, nargs=2, default=(0.3, 1.0), metavar=("MIN", "MAX"),
                        help="seconds between APPENDs in (c), uniformly random")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases at the end")
    parser.add_argument("--toast-compression", choices=("pglz", "lz4", "none"),
                        help="experiment: ALTER the big bytea columns (inbound.raw, files.data, "
                             "outbox.raw) to this TOAST compression after creating the schema")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    base = os.environ.get("MAILBOT_TEST_DATABASE_URL")
    db_label = "MAILBOT_TEST_DATABASE_URL" if base else "embedded pgserver"
    base = base or embedded_postgres_url()
    dovecot = Dovecot().start()
    runs: list[RunB] = []
    try:
        mailbox = dovecot.new_mailbox()
        runs.append(RunB(fresh_database(base), TimedSink().start()))
        config = make_config(runs[0].database_url, mailbox, runs[0].sink)

        t = time.perf_counter()
        factory = MailFactory(args.seed, mailbox.user)
        mails = factory.generate(args.mails)
        raws = [m.raw for m in mails]
        raw_bytes = sum(map(len, raws))
        new = sum(not m.is_reply for m in mails)
        print(f"generated {len(mails)} mails in {time.perf_counter() - t:.1f} s (seed {args.seed}): "
              f"{new} new requests, {len(mails) - new} replies, "
              f"{sum(1 for m in mails if m.attachments)} with "
              f"{sum(len(m.attachments) for m in mails)} attachments "
              f"({sum(len(d) for m in mails for _, d in m.attachments) / 1e6:.1f} MB); "
              f"{raw_bytes / 1e6:.1f} MB raw", flush=True)
        t = time.perf_counter()
        append_all(mailbox, raws)
        print(f"appended to Dovecot in {time.perf_counter() - t:.1f} s; database: {db_label}, "
              f"imap.fetch_batch {config.imap.fetch_batch}", flush=True)

        # (a) and (b) twice each, in turn, so that a slow spell of the machine (they come and
        # go on shared hosts) does not weigh on one of them alone; each takes its better run
        n = len(mails)
        raw_runs = [measure_raw(config, "INBOX", n)]
        print(f"(a) #1 raw FETCH + parse_mail (INBOX):       {raw_runs[0]:6.2f} s  "
              f"{n / raw_runs[0]:7.1f} mails/s", flush=True)
        run_b(runs[0], mailbox, mailbox.user, factory, mails, args.toast_compression, 1)
        raw_runs.append(measure_raw(config, config.imap.processed_folder, n))
        print(f"(a) #2 raw FETCH + parse_mail (Processed):   {raw_runs[1]:6.2f} s  "
              f"{n / raw_runs[1]:7.1f} mails/s", flush=True)
        second = dovecot.new_mailbox()  # the same mails again, for a second (b) on a new database
        append_all(second, raws)
        runs.append(RunB(fresh_database(base), TimedSink().start()))
        run_b(runs[1], second, mailbox.user, factory, mails, args.toast_compression, 2)
        raw = min(raw_runs)
        best = min((run.once for run in runs), key=lambda once: once.processed)
        problems = [p for run in runs for p in run.problems]

        latencies: list[float] = []
        if args.latency_mails:
            latencies = measure_latency(runs[0].config, runs[0].sessions, dovecot, mailbox,
                                        runs[0].sink, args.latency_mails, args.seed, tuple(args.pace))

        rate_a, rate_b, rate_bs = n / raw, n / best.processed, n / best.sent
        ratio, ratio_sent = rate_b / rate_a, rate_bs / rate_a
        print()
        print("=" * 72)
        print(f"mailbot ingest benchmark: {n} mails, {raw_bytes / 1e6:.0f} MB, seed {args.seed}, "
              f"{os.cpu_count()} CPUs, {db_label}"
              + (f", TOAST compression {args.toast_compression} (experiment)" if args.toast_compression else ""))
        print(f"  (a) raw IMAP FETCH + parse_mail      {rate_a:7.1f} mails/s  (best of 2: "
              + ", ".join(f"{n / r:.1f}" for r in raw_runs) + ")")
        print(f"  (b) run --once without sending       {rate_b:7.1f} mails/s  ({best.processed:.2f} s; "
              f"best of 2: " + ", ".join(f"{n / run.once.processed:.1f}" for run in runs) + ")")
        print(f"  (b) run --once with sending          {rate_bs:7.1f} mails/s  ({best.sent:.2f} s)")
        print(f"  ratio (b)/(a) without sending        {ratio:7.2f}   target >= 0.75  "
              f"{'OK' if ratio >= 0.75 else 'MISSED'}")
        print(f"  ratio (b)/(a) with sending           {ratio_sent:7.2f}")
        if latencies:
            p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)
            print(f"  latency APPEND -> ack accepted (n={len(latencies)}): p50 {p50:.2f} s, "
                  f"p95 {p95:.2f} s, max {max(latencies):.2f} s   target p95 <= 1.5 s  "
                  f"{'OK' if p95 <= 1.5 else 'MISSED'}  (mean {statistics.mean(latencies):.2f} s)")
        print(f"  verification                         {'OK' if not problems else 'FAILED'}")
        print("=" * 72)
        return 1 if problems else 0
    finally:
        for run in runs:
            run.close(args.keep_db)
            run.sink.stop()
        dovecot.stop()


if __name__ == "__main__":
    sys.exit(main())
