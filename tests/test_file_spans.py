"""Files sent on are read from their slice of the raw mail, not by parsing the mail again.

A customer's files go to ТП1 with the staff notification. The intake notes where each file's
encoded body lies in the raw mail (``attachments.part_start``/``part_end``/``part_encoding``);
sending decodes that slice, and uses it only when its SHA-256 is the file's.
Real PostgreSQL, Dovecot and the aiosmtpd sink.
"""
from __future__ import annotations

import base64
import binascii
import quopri

import pytest
from sqlalchemy import select, update

from mailbot.parsers import parse_mail
from mailbot.register import files
from mailbot.register.models import AttachmentRow, Outbox
from tests.mailflow import Desk, mx_trace

CUSTOMER = "ivanov@zavod.example"
LOG = "строка журнала\r\n".encode() * 300 + b"\x00\x01 end without newline"
SCREENSHOT = bytes(range(256)) * 40
NOTES = "Версия 5.1.14\r\n.точка в начале строки\r\n".encode() * 20
FILES = {"service.log": LOG, "screen.png": SCREENSHOT, "notes.txt": NOTES}


def _mail() -> bytes:
    """A mail with three files in three transfer encodings (base64, quoted-printable, 8bit)."""
    b64 = base64.encodebytes(SCREENSHOT).replace(b"\n", b"\r\n")
    qp = binascii.b2a_qp(LOG, istext=False).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parts = [
        (b"text/plain; charset=utf-8", b"8bit", None, "Не запускается АРМ, журнал и снимок во вложении."
         .encode() + b"\r\n"),
        (b"application/octet-stream", b"quoted-printable", b"service.log", qp),
        (b"image/png", b"base64", b"screen.png", b"\r\n" + b64),
        (b"text/plain; charset=utf-8", b"8bit", b"notes.txt", NOTES),
    ]
    out = [f"From: {CUSTOMER}\r\nTo: support@tecon.example\r\nSubject: АРМ не запускается\r\n"
           "Message-ID: <spans-1@zavod.example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0300\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n".encode()]
    for ctype, cte, name, body in parts:
        out.append(b"--b1\r\nContent-Type: " + ctype + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n")
        if name:
            out.append(b"Content-Disposition: attachment; filename=\"" + name + b"\"\r\n")
        out.append(b"\r\n" + body + b"\r\n")
    out.append(b"--b1--\r\n")
    return b"".join(out)


def _sent_files(desk: Desk) -> dict[str, bytes]:
    """The files of the staff notification the sink received."""
    (notice,) = [m for m in desk.new_mail() if CUSTOMER not in m.rcpt_tos]
    return {part.get_filename(): part.get_payload(decode=True)
            for part in notice.parsed().iter_attachments()}


def _deliver(desk: Desk, raw: bytes) -> None:
    desk.dovecot.append(desk.mailbox.user, mx_trace(CUSTOMER, "pass") + raw)


def _no_parsing(monkeypatch) -> None:
    def parse_again(*args, **kwargs):
        raise AssertionError("a file was read by parsing its mail again")
    monkeypatch.setattr(files, "parse_keeping_files", parse_again)


def test_the_parser_notes_where_each_file_lies_in_the_raw_mail():
    raw = _mail()
    mail = parse_mail(raw)

    assert [a.filename for a in mail.attachments] == list(FILES)
    for attachment in mail.attachments:
        start, end, encoding = attachment.span
        slice_ = raw[start:end]
        decoded = (base64.b64decode(slice_) if encoding == "base64"
                   else quopri.decodestring(slice_) if encoding == "quoted-printable" else slice_)
        assert decoded == FILES[attachment.filename] == attachment.data


def test_files_sent_to_staff_are_read_from_their_slice_byte_for_byte_without_parsing_the_mail(
        desk, monkeypatch):
    _no_parsing(monkeypatch)
    _deliver(desk, _mail())

    desk.run()

    assert _sent_files(desk) == FILES
    with desk.sessions() as session:
        encodings = session.scalars(select(AttachmentRow.part_encoding).order_by(AttachmentRow.id)).all()
    assert encodings == ["quoted-printable", "base64", "8bit"]


SPOILED = {"a slice elsewhere": {"part_start": AttachmentRow.part_start + 7},
           "no slice (stored before version 17)": {"part_start": None, "part_end": None,
                                                   "part_encoding": None}}


@pytest.mark.parametrize("wrong", list(SPOILED))
def test_a_file_whose_slice_is_not_the_file_is_read_by_parsing_its_mail_again(desk, wrong):
    _deliver(desk, _mail())
    port = desk.sink.port
    desk.sink.stop()  # SMTP down: the mail is processed, nothing goes out yet
    try:
        desk.run()
    finally:
        desk.sink.start(port)
    with desk.sessions.begin() as session:
        session.execute(update(AttachmentRow).values(**SPOILED[wrong]))
        session.execute(update(Outbox).values(next_attempt_at=desk.clock.now()))

    desk.run()

    assert _sent_files(desk) == FILES
