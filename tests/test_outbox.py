"""Outgoing mail: standard MIME, safe headers, names and files survive the round trip."""
from __future__ import annotations

import email
import email.policy
import hashlib
from datetime import datetime, timezone

from mailbot.config import load_config
from mailbot.outbox import Outgoing, compose, splice
from mailbot.register.models import AttachmentRow
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


# ---------------------------------------------------------------- well-formed whatever the input

HOSTILE_TEXT = (
    "a" * 3000,  # one ASCII word longer than a line may be
    "Re: [ТП-2026-000001] " + "б" * 3000,  # one Cyrillic word
    "http://example.test/" + "x/" * 600 + " " + "слово " * 50,
    "=?utf-8?b?0J8=?= looks encoded",  # ASCII that a reader would decode
    "Счёт \u202egpj.exe\u0085\u009b оплачен\r\nBcc: victim@example.test\u2028X-Evil: 1",
    "", " ", "\t\x00\x1b[2J",
)
HIDDEN = ("\u202e", "\u0085", "\u009b", "\u2028", "\x1b", "\x00", "\r", "\n")


def lines_of(raw: bytes) -> list[bytes]:
    assert b"\n" not in raw.replace(b"\r\n", b"")
    return raw.split(b"\r\n")


def test_no_line_is_longer_than_998_octets_whatever_the_input():
    """Subjects, names, file names, media types and thread ids of any length and content:
    every header line stays within 78 characters, and the mail parses without defects."""
    for n, text in enumerate(HOSTILE_TEXT):
        mail = Outgoing(
            kind="relay", to=("a@zavod.example",), automatic=False, from_name=text,
            content=Rendered(text, text or "-", None), in_reply_to=text or None,
            references=(text, "ok@zavod.example", "<x@y>", "a b@c", "ид@завод.рф"),
            extra_headers=(("X-Note", text),),
            files=(stored(text + ".pdf", "application/" + "x" * 3000, str(n).encode()),
                   stored(text, text, b"2")))
        raw = wire(mail)
        head, _, _ = raw.partition(b"\r\n\r\n")
        assert max(map(len, lines_of(head))) <= 78, text[:40]
        assert max(map(len, lines_of(raw))) <= 998
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert not parsed.defects and not [k for k in parsed.keys() if parsed[k].defects], text[:40]
        shown = "".join(" " if c in "\x00\x1b\u0085\u009b\u2028" else c for c in text if c != "\u202e")
        assert parsed["Subject"] == " ".join(shown.split())
        assert not any(c in str(parsed[k]) for k in parsed.keys() for c in HIDDEN), text[:40]
        assert parsed["References"] == "<ok@zavod.example>"
        assert [a.get_content_type() for a in parsed.iter_attachments()] == \
            ["application/octet-stream"] * 2


def test_a_long_word_in_the_subject_is_encoded_and_comes_back_whole():
    subject = "Re: [ТП-2026-000001] " + "a" * 3000
    raw = wire(Outgoing(kind="ack", to=("a@zavod.example",), content=Rendered(subject, "текст", None)))
    assert max(map(len, lines_of(raw))) <= 78
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject


def test_threading_headers_carry_only_msg_ids_of_a_sane_length():
    """Ids that are too long, have no '@', hold spaces, brackets or non-ASCII are left out;
    the answer still goes out, threaded by the ids that remain."""
    long_id = "x" * 600 + "@zavod.example"
    parsed = round_trip(Outgoing(
        kind="relay", to=("a@zavod.example",), automatic=False, in_reply_to=long_id,
        references=("first@zavod.example", long_id, "no-at-sign", "a b@c", "a>b@c", "ид@завод.рф",
                    "x" * 486 + "@zavod.example"),
        content=Rendered("Ответ", "текст", None)))
    assert "In-Reply-To" not in parsed
    assert parsed["References"].split() == ["<first@zavod.example>", f"<{'x' * 486}@zavod.example>"]
    ack = round_trip(Outgoing(kind="ack", to=("a@zavod.example",), in_reply_to=long_id,
                              content=Rendered("Ответ", "текст", None)))
    assert "References" not in ack and ack["Auto-Submitted"] == "auto-replied"  # still a reply


def test_internationalised_addresses_are_written_as_the_rfcs_say():
    """A domain in Cyrillic goes out in its IDNA form; a Cyrillic local part as UTF-8 (RFC 6532),
    never as encoded words, which no reader takes for an address."""
    domain = "завод.рф".encode("idna").decode()  # xn--80aegj1b.xn--p1ai
    parsed = round_trip(Outgoing(kind="ack", to=("info@завод.рф",),
                                 content=Rendered("Ответ", "текст", None)))
    assert parsed["To"] == f"info@{domain}"
    raw = wire(Outgoing(kind="ack", to=("иван@завод.рф",), content=Rendered("Ответ", "текст", None)))
    assert f"To: иван@{domain}\r\n".encode() in raw
    parsed = email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert parsed["To"].addresses[0].addr_spec == f"иван@{domain}"
