"""Outgoing mail: standard MIME, safe headers, names and files survive the round trip."""
from __future__ import annotations

import email
import hashlib
import email.policy
from datetime import datetime, timezone

from mailbot.config import load_config
from mailbot.models import AttachmentRow
from mailbot.outbox import Outgoing, compose, splice
from mailbot.render import Rendered

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)


FILES: dict[str, bytes] = {}  # the file store of these tests, by sha256


def stored(filename: str, content_type: str, data: bytes) -> AttachmentRow:
    digest = hashlib.sha256(data).hexdigest()
    FILES[digest] = data
    return AttachmentRow(filename=filename, content_type=content_type, size=len(data), sha256=digest)


def wire(mail: Outgoing) -> bytes:
    """What the sender puts on the wire: the composed text with the stored files spliced in."""
    composed = compose(load_config(None, environ={}), mail, NOW)
    return splice(composed.raw, [(placeholder, FILES[row.sha256])
                                 for placeholder, row in zip(composed.placeholders, mail.files)])


def round_trip(mail: Outgoing):
    return email.message_from_bytes(wire(mail), policy=email.policy.default)


def test_header_values_from_user_input_never_carry_line_breaks():
    parsed = round_trip(Outgoing(kind="relay", to=("a@zavod.example",), automatic=False,
                                 content=Rendered("Тема\r\nBcc: victim@example.test", "текст", None),
                                 from_name="Иванов\nX-Evil: 1"))
    assert "Bcc" not in parsed and "X-Evil" not in parsed
    assert parsed["Subject"] == "Тема Bcc: victim@example.test"
    assert "Auto-Submitted" not in parsed


def test_cyrillic_names_text_html_and_files_round_trip():
    parsed = round_trip(Outgoing(
        kind="ack", to=("a@zavod.example",), in_reply_to="m1@zavod", references=("m0@zavod",),
        content=Rendered("Re: [ТП-2026-000001] Сбой", "Здравствуйте!", "<p>Здравствуйте!</p>"),
        files=(stored("отчёт об ошибке.pdf", "application/pdf", b"%PDF-1.4"),)))
    assert parsed["Subject"] == "Re: [ТП-2026-000001] Сбой"
    assert parsed["References"] == "<m0@zavod>" and parsed["In-Reply-To"] == "<m1@zavod>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed.get_body(("plain",)).get_content().strip() == "Здравствуйте!"
    assert "<p>Здравствуйте!</p>" in parsed.get_body(("html",)).get_content()
    (attachment,) = parsed.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content()) == ("отчёт об ошибке.pdf", b"%PDF-1.4")


def test_mail_goes_out_with_crlf_line_ends_and_files_byte_for_byte():
    data = bytes(range(256)) * 4000  # 1 MB of every byte value
    files = (stored("a.bin", "application/octet-stream", data),
             stored("b.bin", "application/octet-stream", data[::-1]))
    raw = wire(Outgoing(kind="relay", to=("a@zavod.example",), automatic=False,
                        content=Rendered("Файлы", "Во вложении.", None), files=files))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert [a.get_content() for a in parsed.iter_attachments()] == [data, data[::-1]]


def test_long_and_odd_file_names_and_subjects_stay_within_line_limits():
    name = "Протокол испытаний узла учёта тепловой энергии № 17 (итоговый, подписанный).pdf"
    subject = "Re: [ТП-2026-000001] " + "очень длинная тема письма " * 20
    raw = wire(Outgoing(kind="relay", to=("a@zavod.example",), automatic=False,
                        content=Rendered(subject, "Во вложении.", None),
                        files=(stored(name, "application/PDF", b"1"),
                               stored('a "quoted" name.txt', "not a type", b"2"))))
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == subject.strip()
    first, second = parsed.iter_attachments()
    assert (first.get_filename(), first.get_content_type(), first.get_content()) == \
        (name, "application/pdf", b"1")
    assert (second.get_filename(), second.get_content_type()) == \
        ('a "quoted" name.txt', "application/octet-stream")
