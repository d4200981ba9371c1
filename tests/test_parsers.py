"""Unit tests of mailbot.parsers with small hand-written messages."""
from __future__ import annotations

import base64
import os
import struct
import time
import tracemalloc
from datetime import timezone

import pytest

from mailbot.parsers import (
    MailKind,
    MailTooLarge,
    ParseOptions,
    find_incident_numbers,
    find_request_numbers,
    parse_mail,
    safe_filename,
)
from tests.corpus_files import CORPUS


def mail(headers: str, body: bytes | str = "Текст.\n", *, extra: bytes = b"") -> bytes:
    """A message from header lines (str, ASCII or with raw bytes in `extra`) and a body."""
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8") + extra
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head + b"\r\n\r\n" + data


BASE = "From: Иван <ivan@client.example>\nTo: support@example.test\nMessage-ID: <m1@client.example>\n"


def multipart(parts: list[tuple[str, bytes | str]], subtype: str = "mixed", extra: str = "") -> bytes:
    """A multipart message from (part headers, part body) pairs."""
    chunks = []
    for headers, body in parts:
        data = body.encode("utf-8") if isinstance(body, str) else body
        chunks.append(b"--B\r\n" + headers.replace("\n", "\r\n").encode() + b"\r\n\r\n" + data + b"\r\n")
    body = b"".join(chunks) + b"--B--\r\n"
    return mail(BASE + f"Subject: t\nMIME-Version: 1.0\nContent-Type: multipart/{subtype}; boundary=B{extra}", body)


# --- headers -------------------------------------------------------------------------------


def test_raw_cp1251_subject_is_recovered() -> None:
    raw = mail(BASE, "x", extra=b"\r\nSubject: " + "Не работает печать отчётов".encode("cp1251"))
    assert parse_mail(raw).subject == "Не работает печать отчётов"


def test_raw_koi8r_and_utf8_subjects() -> None:
    for charset in ("koi8-r", "utf-8"):
        raw = mail(BASE, "x", extra=b"\r\nSubject: " + "Ошибка при запуске программы".encode(charset))
        assert parse_mail(raw).subject == "Ошибка при запуске программы", charset


def test_rfc2047_mixed_charsets_and_odd_labels() -> None:
    subject = ("Re: =?windows-1251?B?z/Do4uXy?= =?koi8-r?Q?=CD=C9=D2?= / "
               "=?iso-gb2312?B?1tDOxA==?= / =?unicode-1-1-utf-7?Q?+ANw-ber?= =?utf-8?B?0JrQvtC0?=")
    parsed = parse_mail(mail(BASE + f"Subject: {subject}"))
    assert parsed.subject == "Re: Приветмир / 中文 / ÜberКод"  # no space between adjacent encoded words


def test_encoded_word_split_inside_a_utf8_character() -> None:
    encoded = "Привет".encode("utf-8")
    first, second = base64.b64encode(encoded[:5]).decode(), base64.b64encode(encoded[5:]).decode()
    parsed = parse_mail(mail(BASE + f"Subject: =?utf-8?B?{first}?=\n =?utf-8?B?{second}?="))
    assert parsed.subject == "Привет"


def test_bad_base64_padding_in_encoded_word() -> None:
    parsed = parse_mail(mail(BASE.replace("From: Иван", 'From: "=?ISO-2022-JP?B?GyRCO3ZMMzZJGyhC==?="')))
    assert parsed.from_name == "事務局"


def test_no_cr_lf_in_header_values() -> None:
    parsed = parse_mail(mail(BASE + "Subject: =?utf-8?Q?a=0D=0ABcc:_evil@x?=\n\tfolded"))
    assert "\r" not in parsed.subject and "\n" not in parsed.subject
    assert all("\n" not in v and "\r" not in v for _, v in parsed.headers)


def test_addresses_date_ids_and_headers() -> None:
    raw = mail(
        "From: =?utf-8?B?0JjQstCw0L0g0J/QtdGC0YDQvtCy?= <Ivan@Client.Example>\n"
        'To: "Поддержка, ТП1" <Support@Example.test>, b@example.test\nCc: c@example.test\n'
        "Reply-To: <reply@client.example>\nSubject: x\nDate: Fri, 20 Mar 2026 12:00:00 +0300\n"
        "Message-ID: <abc@client.example>\nIn-Reply-To: <out-1@example.test> (message of today)\n"
        "References: <out-0@example.test>\n <out-1@example.test>\nReturn-Path: <>"
    )
    parsed = parse_mail(raw)
    assert (parsed.from_name, parsed.from_addr) == ("Иван Петров", "ivan@client.example")
    assert parsed.to == ("support@example.test", "b@example.test") and parsed.cc == ("c@example.test",)
    assert parsed.reply_to == "reply@client.example"
    assert parsed.date is not None and parsed.date.utcoffset() is not None
    assert parsed.date.astimezone(timezone.utc).hour == 9
    assert parsed.message_id == "abc@client.example"
    assert parsed.in_reply_to == ("out-1@example.test",)
    assert parsed.thread_ids == ("out-1@example.test", "out-0@example.test")
    assert parsed.return_path == ""
    assert [name for name, _ in parsed.headers][:3] == ["From", "To", "Cc"]
    assert parsed.header("from") == "Иван Петров <Ivan@Client.Example>"
    assert parsed.size == len(raw)


def test_missing_return_path_and_bad_date() -> None:
    parsed = parse_mail(mail(BASE + "Subject: x\nDate: when the cows come home"))
    assert parsed.return_path is None and parsed.date is None


def test_stray_lines_in_header_block_are_joined() -> None:
    raw = mail("Received: from a\nby b with SMTP\nX-Blob: AAAA\nBBBBCCCC\nFrom: a@b.example\nSubject: Тема",
               "Текст")
    parsed = parse_mail(raw)
    assert (parsed.subject, parsed.from_addr, parsed.text) == ("Тема", "a@b.example", "Текст")
    assert any("header block repaired" in d for d in parsed.defects)


# --- bodies --------------------------------------------------------------------------------


def test_koi8r_body_declared_and_undeclared() -> None:
    text = "Здравствуйте! Программа не запускается после обновления.\r\nС уважением, Иван"
    declared = mail(BASE + "Subject: x\nContent-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: 8bit",
                    text.encode("koi8-r"))
    undeclared = mail(BASE + "Subject: x\nContent-Type: text/plain", text.encode("koi8-r"))
    for raw in (declared, undeclared):
        assert parse_mail(raw).text == text.replace("\r\n", "\n")


def test_utf8_labelled_cp1251_body_is_guessed() -> None:
    raw = mail(BASE + "Subject: x\nContent-Type: text/plain; charset=utf-8",
               "Не могу войти в систему, пишет ошибку".encode("cp1251"))
    assert parse_mail(raw).text == "Не могу войти в систему, пишет ошибку"


def test_html_only_gets_clean_text_and_keeps_html() -> None:
    html = ("<html><head><title>T</title><style>p{color:red}</style><script>alert(1)</script></head>"
            "<body><p>Добрый день,<br>не работает&nbsp;печать.</p><ul><li>один</li><li>два</li></ul>"
            "<blockquote>старое письмо</blockquote><table><tr><td>a</td><td>b</td></tr></table></body></html>")
    parsed = parse_mail(mail(BASE + "Subject: x\nContent-Type: text/html; charset=utf-8", html))
    assert parsed.html == html
    assert "<" not in parsed.text and "alert" not in parsed.text and "color" not in parsed.text
    assert "Добрый день,\nне работает печать." in parsed.text
    assert "- один\n- два" in parsed.text and "> старое письмо" in parsed.text and "a b" in parsed.text
    assert parsed.new_text.startswith("Добрый день") and "старое" not in parsed.new_text


def test_outlook_paragraphs_are_lines_and_its_empty_paragraphs_the_blank_lines() -> None:
    """Outlook writes each line as <p class=MsoNormal> (no margin) and a blank line as an empty one:
    the text reads as the customer saw it, not double-spaced."""
    html = ("<div class=WordSection1><p class=MsoNormal>Добрый день!<o:p></o:p></p>"
            "<p class=MsoNormal><o:p>&nbsp;</o:p></p>"
            "<p class=MsoNormal>Сервер опроса перезапускается.<o:p></o:p></p>"
            "<p class=MsoNormal>Журнал во вложении.<o:p></o:p></p>"
            "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Иванов И. И.<o:p></o:p></p>"
            "</div><p>Абзац.</p><p>Ещё абзац.</p>")
    parsed = parse_mail(mail(BASE + "Subject: x\nContent-Type: text/html; charset=utf-8", html))
    assert parsed.text == ("Добрый день!\n\nСервер опроса перезапускается.\nЖурнал во вложении.\n\n"
                           "Иванов И. И.\nАбзац.\n\nЕщё абзац.")


def test_alternative_prefers_plain_and_keeps_html() -> None:
    raw = multipart([("Content-Type: text/plain; charset=utf-8", "Простой текст"),
                     ("Content-Type: text/html; charset=utf-8", "<p>HTML текст</p>")], "alternative")
    parsed = parse_mail(raw)
    assert parsed.text == "Простой текст" and parsed.html == "<p>HTML текст</p>"


def test_crlf_and_format_flowed() -> None:
    body = "Это длинная строка, \r\nкоторая продолжается.\r\n> цитата \r\n> дальше\r\n-- \r\nИван\r\n"
    raw = mail(BASE + "Subject: x\nContent-Type: text/plain; charset=utf-8; format=flowed", body)
    parsed = parse_mail(raw)
    assert "\r" not in parsed.text
    assert parsed.text.startswith("Это длинная строка, которая продолжается.\n> цитата дальше\n-- \n")
    assert parsed.new_text == "Это длинная строка, которая продолжается."


def test_x_uuencode_attachment() -> None:
    raw = multipart([("Content-Type: text/plain", "see file"),
                     ('Content-Type: application/octet-stream; name="a.txt"\nContent-Transfer-Encoding: x-uuencode',
                      "begin 644 a.txt\n,2&5L;&\\@6F%M;6%D\n`\nend\n")])
    assert parse_mail(raw).attachments[0].data == b"Hello Zammad"


# --- new_text ------------------------------------------------------------------------------

QUOTE_STYLES = {
    "outlook-en": "Ответ.\n\n-----Original Message-----\nFrom: a@b\nSent: today\n\nold",
    "outlook-ru": "Ответ.\n\n-----Исходное сообщение-----\nОт: a@b\nОтправлено: сегодня\n\nстарое",
    "outlook-ru-headers": "Ответ.\n\n________________________________\nОт: Иван <a@b>\n"
                          "Отправлено: 20 марта 2026 г. 12:00\nКому: support@x\nТема: RE: вопрос\n\nстарое",
    "gmail-en": "Ответ.\n\nOn Fri, Mar 20, 2026 at 12:00 PM Ivan <a@b> wrote:\n> old",
    "gmail-en-wrapped": "Ответ.\n\nOn Fri, Mar 20, 2026 at 12:00 PM Ivan Petrov <\nivan@b.example> wrote:\n> old",
    "gmail-ru": "Ответ.\n\nпт, 20 мар. 2026 г. в 12:00, Иван <a@b>:\n> старое",
    "gmail-android-ru": "Ответ.\n\nср, 25 нояб. 2026 г., 10:00 Техническая поддержка <support@x.ru>:\n\n> старое",
    "yandex-ru": "Ответ.\n\n25.11.2026, 10:00, \"Техническая поддержка\" <support@x.ru>:\n> старое",
    "mailru": "Ответ.\n\nСреда, 25 ноября 2026, 10:00 +03:00 от Техническая поддержка <support@x.ru>:\n> старое",
    "apple-ru": "Ответ.\n\n25 нояб. 2026 г., в 10:00, Поддержка <support@x.ru> написал(а):\n\n> старое",
    "thunderbird-ru": "Ответ.\n\n20.03.2026 12:00, Иван Петров пишет:\n> старое",
    "quote-block": "Ответ.\n> старое\n> письмо",
    "signature": "Ответ.\n-- \nИван Петров\nтел. 123",
    "outlook-mobile-ru": "Ответ.\n\nПолучить Outlook для iOS\n________________________________\nОт: Поддержка",
    "windows-mail": "Ответ.\n\nSent from Mail for Windows\n\nFrom: Support",
    "german-library": "Ответ.\n\nAm 20.03.2026 um 12:00 schrieb Hans Meier:\n> alt",
}


@pytest.mark.parametrize("style", sorted(QUOTE_STYLES))
def test_new_text_strips_history(style: str) -> None:
    parsed = parse_mail(mail(BASE + "Subject: Re: x\nContent-Type: text/plain; charset=utf-8", QUOTE_STYLES[style]))
    assert parsed.new_text == "Ответ."


def test_new_text_of_outlook_html_reply() -> None:
    html = ("<div><p class=MsoNormal>Проблема решена, спасибо.<o:p></o:p></p><p class=MsoNormal>&nbsp;</p>"
            "<div style='border-top:solid #E1E1E1 1.0pt'><p class=MsoNormal><b>От:</b> Поддержка<br>"
            "<b>Отправлено:</b> 20 марта 2026 г. 12:00<br><b>Кому:</b> Иван<br><b>Тема:</b> RE: вопрос</p></div>"
            "<p class=MsoNormal>Старый текст</p></div>")
    parsed = parse_mail(mail(BASE + "Subject: RE: x\nContent-Type: text/html; charset=utf-8", html))
    assert parsed.new_text == "Проблема решена, спасибо."


def test_new_text_keeps_answers_between_quotes() -> None:
    body = "20.03.2026 12:00, Иван пишет:\n> Вопрос один?\nОтвет один.\n> Вопрос два?\nОтвет два."
    parsed = parse_mail(mail(BASE + "Subject: Re: x\nContent-Type: text/plain; charset=utf-8", body))
    assert parsed.new_text == "Ответ один.\nОтвет два."


def test_pure_forward_has_no_new_text() -> None:
    body = "-----Original Message-----\nFrom: a@b\nSent: today\nSubject: x\n\nold text"
    assert parse_mail(mail(BASE + "Subject: Fw: x", body)).new_text == ""


# --- attachments ---------------------------------------------------------------------------


def test_attachments_decoded_with_cyrillic_names() -> None:
    rfc2231 = "Отчёт об ошибке №5.txt".encode("cp1251")
    encoded = "".join(f"%{b:02X}" for b in rfc2231)
    outlook = base64.b64encode("Скриншот экрана.png".encode("cp1251")).decode()
    raw = multipart([
        ("Content-Type: text/plain; charset=utf-8", "См. вложения"),
        (f"Content-Type: text/plain\nContent-Disposition: attachment; filename*=windows-1251''{encoded}\n"
         "Content-Transfer-Encoding: quoted-printable", "=CF=F0=E8=E2=E5=F2"),
        (f'Content-Type: image/png; name="=?windows-1251?B?{outlook}?="\nContent-Transfer-Encoding: base64',
         base64.b64encode(b"\x89PNG data").decode()),
        ("Content-Type: application/pdf\nContent-Disposition: attachment;\n filename*0*=utf-8''%D0%94%D0%BE;"
         "\n filename*1*=%D0%B3%D0%BE%D0%B2%D0%BE%D1%80.pdf", "PDF"),
    ])
    parsed = parse_mail(raw)
    assert [a.filename for a in parsed.attachments] == ["Отчёт об ошибке №5.txt", "Скриншот экрана.png", "Договор.pdf"]
    assert parsed.attachments[0].data == "Привет".encode("cp1251")
    assert parsed.attachments[1].data == b"\x89PNG data" and parsed.attachments[1].content_type == "image/png"
    assert parsed.text == "См. вложения"


def test_raw_utf8_filename() -> None:
    raw = multipart([("Content-Type: text/plain", "x"),
                     ('Content-Type: image/jpeg\nContent-Disposition: attachment; filename="Фото.jpg"', "JPEG")])
    assert parse_mail(raw).attachments[0].filename == "Фото.jpg"


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "_.._etc_passwd"),
    ("C:\\Windows\\evil.exe", "C__Windows_evil.exe"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("rep\x00ort\x07.pdf", "report.pdf"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),
    ("  ..hidden  ", "hidden"),
    ("", "attachment-3.bin"),
    (None, "attachment-3.bin"),
    ("///", "attachment-3.bin"),
])
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name, 3) == expected


def test_safe_filename_caps_length_and_keeps_extension() -> None:
    name = safe_filename("Очень длинное имя " * 30 + ".docx", 1)
    assert len(name.encode("utf-8")) <= 200 and name.endswith(".docx")


def test_fallback_name_uses_content_type() -> None:
    raw = multipart([("Content-Type: text/plain", "x"),
                     ("Content-Type: image/png\nContent-ID: <img1@x>", "PNG")], "related")
    attachment = parse_mail(raw).attachments[0]
    assert (attachment.filename, attachment.inline, attachment.content_id) == ("attachment-1.png", True, "img1@x")


def test_nested_message_is_an_eml_attachment() -> None:
    inner = "From: a@b.example\r\nSubject: =?utf-8?B?0J/QtdGA0LLQvtC1?=\r\nMessage-ID: <in@b>\r\n\r\nвнутри"
    raw = multipart([("Content-Type: text/plain; charset=utf-8", "Пересылаю"), ("Content-Type: message/rfc822", inner)])
    parsed = parse_mail(raw)
    assert parsed.text == "Пересылаю"
    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.content_type) == ("Первое.eml", "message/rfc822")
    assert parse_mail(attachment.data).text == "внутри"


def _tnef_object(level: int, name: int, kind: int, data: bytes) -> bytes:
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def _mapi_unicode(name: int, text: str) -> bytes:
    value = (text + "\x00").encode("utf-16-le")
    return struct.pack("<HHII", 0x001F, name, 1, len(value)) + value + b"\x00" * (-len(value) % 4)


def tnef(files: list[tuple[str, bytes]], mapi_count: int | None = None) -> bytes:
    """A minimal TNEF stream carrying `files` (long names in MAPI properties)."""
    stream = struct.pack("<IH", 0x223E9F78, 1)
    stream += _tnef_object(1, 0x9006, 0x0008, struct.pack("<I", 0x10000))
    stream += _tnef_object(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))
    for name, data in files:
        stream += _tnef_object(2, 0x9002, 0x0006, b"\x01\x00" + b"\x00" * 12)
        stream += _tnef_object(2, 0x8010, 0x0001, b"SHORT.TXT\x00")
        stream += _tnef_object(2, 0x800F, 0x0006, data)
        props = struct.pack("<I", 1 if mapi_count is None else mapi_count) + _mapi_unicode(0x3707, name)
        stream += _tnef_object(2, 0x9005, 0x0006, props)
    return stream


def _with_winmail(blob: bytes) -> bytes:
    return multipart([("Content-Type: text/plain", "see attached"),
                      ('Content-Type: application/ms-tnef; name="winmail.dat"\nContent-Transfer-Encoding: base64',
                       base64.encodebytes(blob).decode())])


def test_tnef_is_expanded() -> None:
    parsed = parse_mail(_with_winmail(tnef([("Отчёт.txt", b"hello"), ("photo.jpg", b"\xff\xd8jpeg")])))
    assert [(a.filename, a.data, a.content_type) for a in parsed.attachments] == [
        ("Отчёт.txt", b"hello", "text/plain"), ("photo.jpg", b"\xff\xd8jpeg", "image/jpeg")]


def test_tnef_without_files_or_damaged_is_kept() -> None:
    for blob in (tnef([]), b"garbage", tnef([("a.txt", b"x")], mapi_count=0xFFFFFFF0)):
        started = time.perf_counter()
        parsed = parse_mail(_with_winmail(blob))
        assert time.perf_counter() - started < 2
        assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
        assert parsed.attachments[0].data == blob


def test_real_winmail_dat_from_corpus_is_kept() -> None:
    parsed = parse_mail((CORPUS / "sisimai-lhost-amazonworkmail-01.eml").read_bytes())
    winmail = [a for a in parsed.attachments if a.content_type == "application/ms-tnef"]
    assert [a.filename for a in winmail] == ["winmail.dat"]
    assert winmail[0].data[:4] == b"\x78\x9f\x3e\x22" and len(winmail[0].data) == 3441


# --- limits --------------------------------------------------------------------------------


def test_mail_too_large() -> None:
    small = ParseOptions(max_message_bytes=100)
    with pytest.raises(MailTooLarge):
        parse_mail(mail(BASE + "Subject: x", "x" * 200), small)
    one = multipart([("Content-Type: text/plain", "x"), ("Content-Type: application/pdf; name=a.pdf", "y" * 50)])
    with pytest.raises(MailTooLarge):
        parse_mail(one, ParseOptions(max_attachment_bytes=10))
    many = multipart([("Content-Type: application/pdf; name=a.pdf", "y")] * 4)
    with pytest.raises(MailTooLarge):
        parse_mail(many, ParseOptions(max_attachments=3))
    assert len(parse_mail(many, ParseOptions(max_attachments=4)).attachments) == 4


# --- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "ТП-2026-000123", "TП-2026-000123", "ТП–2026–000123", "ТП - 2026 - 000123", "[ТП-2026-000123]",
    "тп-2026-123", "Re: по заявке TП—2026—000123.",
])
def test_request_number_look_alikes(text: str) -> None:
    assert find_request_numbers(text) == ("ТП-2026-000123",)


@pytest.mark.parametrize("text", ["СТП-2026-000123", "ТП-2026-0000123", "ТП-26-000123", "ТП2026000123"])
def test_request_number_non_matches(text: str) -> None:
    assert find_request_numbers(text) == ()


def test_incident_numbers() -> None:
    assert find_incident_numbers("[INC-000045] и ІNС–46, inc - 45") == ("INC-000045", "INC-000046")
    assert find_incident_numbers("ServiceNow INC0012345") == ()
    assert find_request_numbers("REQ-2026-7", prefix="REQ") == ("REQ-2026-000007",)


def test_numbers_are_read_from_the_subject_only_never_from_the_text() -> None:
    """A number typed or quoted in the text names no request (issue 15: it would file a new mail
    into another company's request)."""
    raw = mail(BASE + "Subject: Re: [ТП-2026-000002] [INC-000007]\nContent-Type: text/plain; charset=utf-8",
               "См. ТП-2026-000001 и ТП-2026-000002, [INC-000008]")
    parsed = parse_mail(raw)
    assert parsed.request_numbers == ("ТП-2026-000002",)
    assert parsed.incident_numbers == ("INC-000007",)


# --- kinds ---------------------------------------------------------------------------------

DSN = (
    "From: MAILER-DAEMON@mx.example.test (Mail Delivery System)\nTo: support@example.test\n"
    "Subject: Undelivered Mail Returned to Sender\nReturn-Path: <>\nMIME-Version: 1.0\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=B"
)
DSN_BODY = (
    "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n"
    "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
    "Final-Recipient: rfc822; Lost@Client.Example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <lost@client.example>: User unknown\r\n\r\n"
    "Final-Recipient: rfc822; slow@client.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
    "--B\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <out-7@example.test>\r\nSubject: Ответ\r\n\r\nтекст\r\n"
    "--B--\r\n"
)


def test_dsn_multipart_report() -> None:
    parsed = parse_mail(mail(DSN, DSN_BODY))
    assert parsed.kind is MailKind.DSN and parsed.dsn is not None
    assert parsed.dsn.original_message_id == "out-7@example.test"
    first, second = parsed.dsn.recipients
    assert (first.address, first.status, first.action, first.permanent) == ("lost@client.example", "5.1.1", "failed", True)
    assert first.diagnostic == "550 5.1.1 <lost@client.example>: User unknown"
    assert (second.status, second.action, second.permanent) == ("4.4.1", "delayed", False)
    assert parsed.return_path == "" and parsed.mdn is None


def test_text_only_bounce() -> None:
    body = ("Hi. This is the qmail-send program at mx.example.test.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
            "<lost@client.example>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 no such user\n\n"
            "--- Below this line is a copy of the message.\n\nMessage-ID: <out-9@example.test>\nSubject: x\n")
    raw = mail("From: MAILER-DAEMON@mx.example.test\nTo: support@example.test\nSubject: failure notice", body)
    parsed = parse_mail(raw)
    assert parsed.kind is MailKind.DSN and parsed.dsn is not None
    assert [(r.address, r.status) for r in parsed.dsn.recipients] == [("lost@client.example", "5.1.1")]
    assert parsed.dsn.original_message_id == "out-9@example.test"


def test_russian_bounce_subject_with_x_failed_recipients() -> None:
    raw = mail("From: mailer-daemon@yandex.ru\nSubject: =?utf-8?B?0J3QtdC00L7RgdGC0LDQstC70LXQvdC90L7QtSDRgdC+0L7QsdGJ0LXQvdC40LU=?=",
               "Сообщение не доставлено: 550 5.7.1 Policy rejection")
    parsed = parse_mail(raw)
    assert parsed.kind is MailKind.DSN and "Недоставленное" in parsed.subject


def test_mdn_rfc8098() -> None:
    body = (
        "--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nВаше сообщение прочитано.\r\n"
        "--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Reporting-UA: client.example; Mail 1.0\r\nOriginal-Recipient: rfc822;ivan@client.example\r\n"
        "Final-Recipient: rfc822;Ivan@Client.Example\r\nOriginal-Message-ID: <out-42@example.test>\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <out-42@example.test>\r\nSubject: x\r\n\r\n"
        "--B--\r\n"
    )
    raw = mail(BASE + "Subject: Прочитано: Файлы\nMIME-Version: 1.0\n"
               "Content-Type: multipart/report; report-type=disposition-notification; boundary=B", body)
    parsed = parse_mail(raw)
    assert parsed.kind is MailKind.MDN and parsed.mdn is not None and parsed.dsn is None
    assert (parsed.mdn.original_message_id, parsed.mdn.disposition, parsed.mdn.final_recipient) == (
        "out-42@example.test", "displayed", "ivan@client.example")


@pytest.mark.parametrize("headers", [
    "Auto-Submitted: auto-replied",
    "Auto-Submitted: auto-generated",
    "X-Autoreply: yes",
    "X-Autorespond: on",
    "Subject: Автоответ: Re: заявка",
    "Subject: Автоматический ответ: заявка",
    "Subject: Отсутствую в офисе",
    "Subject: Out of Office: request",
    "Subject: Auto: request",
    "Subject: Automatic reply: request",
    "Subject: Re: заявка (я в отпуске до 30.03)",
])
def test_auto_replies(headers: str) -> None:
    subject = "" if headers.startswith("Subject") else "Subject: Re: заявка\n"
    parsed = parse_mail(mail(BASE + subject + headers))
    assert parsed.kind is MailKind.AUTO_REPLY, parsed.kind_reason


VACATION_NOTICES = [  # the defaults and the usual own texts of mail clients' autoresponders
    "Здравствуйте!\nЯ в отпуске до 23.03.2026. По срочным вопросам обращайтесь к Петрову Петру,"
    " petrov@zavod.example, тел. 123-45-67.",
    "Добрый день! Нахожусь в командировке до 20.03, с ограниченным доступом к почте.",
    "Здравствуйте! Спасибо за письмо. Я сейчас в отпуске и отвечу после 23 марта.",
    "Это автоматическое сообщение. Меня нет на рабочем месте до 25.03.2026.",
    "Я нахожусь вне офиса до 1 апреля. Ваше письмо будет прочитано после возвращения.",
    "Буду на связи после 23.03. В моё отсутствие по всем вопросам — Сидоров, sidorov@zavod.example",
    "Уважаемый отправитель! Временно отсутствую на рабочем месте. Ваше письмо будет обработано "
    "после 10.04.2026.",
    "I am out of the office until 23/03/2026 with limited access to email. For urgent matters "
    "please contact John Smith.",
    "Out of Office\n\nI will be back on Monday, 23 March.",
    "Thank you for your email. I'm currently on annual leave, returning on 2 April.",
]


@pytest.mark.parametrize("text", VACATION_NOTICES)
def test_a_vacation_notice_in_the_text_alone_is_an_auto_reply(text: str) -> None:
    """Issue 16 §3: no Auto-Submitted, no telling subject; the text says it all."""
    raw = mail(BASE + "Subject: Re: [ТП-2026-000001] Не запускается АРМ", text)
    parsed = parse_mail(raw)
    assert parsed.kind is MailKind.AUTO_REPLY, text
    assert parsed.kind_reason.startswith("vacation notice in the text")


@pytest.mark.parametrize("text", [
    "Я был в отпуске, а после возвращения система не запускается.",
    "Добрый день. Я в отпуске до 23.03, но коллеги пишут, что не работает опрос. Посмотрите, пожалуйста.",
    "Сотрудник, отвечавший за систему, в отпуске до 30.03, поэтому пишу я: как выгрузить архив?",
    "После отпуска не могу зайти в АРМ, пишет неверный пароль.",
    "Я в отпуске до понедельника, файлы получил, спасибо.",
    "Я сейчас в отпуске, вернусь 23.03 — тогда и посмотрим ошибку на сервере.",
    "Out of office we keep a backup server; is it supported until version 5?",
])
def test_a_customer_who_mentions_a_vacation_is_a_person(text: str) -> None:
    parsed = parse_mail(mail(BASE + "Subject: Re: [ТП-2026-000001] Не запускается АРМ", text))
    assert parsed.kind is MailKind.HUMAN, parsed.kind_reason


def test_a_vacation_notice_quoting_our_mail_is_read_from_its_own_words() -> None:
    """The quoted request below a notice ("не запускается") does not make it a person's."""
    text = ("Я в отпуске до 23.03.2026.\n\n25.11.2026, support@tecon.example пишет:\n"
            "> Запрос ТП-2026-000001: АРМ не запускается, ошибка 1045?")
    assert parse_mail(mail(BASE + "Subject: Re: заявка", text)).kind is MailKind.AUTO_REPLY


@pytest.mark.parametrize(("headers", "kind"), [
    ("Subject: x\nX-Auto-Response-Suppress: All", MailKind.HUMAN),
    ("Subject: Отпуск не начисляется в 1С", MailKind.HUMAN),
    ("Subject: x\nAuto-Submitted: no", MailKind.HUMAN),
    ("Subject: x\nPrecedence: bulk", MailKind.BULK),
    ("Subject: x\nPrecedence: list", MailKind.BULK),
    ("Subject: x\nList-Id: <news.example.test>", MailKind.BULK),
    ("Subject: x\nList-Unsubscribe: <mailto:u@x>\nPrecedence: normal", MailKind.BULK),
    ("Subject: x\nList-Unsubscribe: <mailto:u@x>", MailKind.HUMAN),
])
def test_human_and_bulk(headers: str, kind: MailKind) -> None:
    parsed = parse_mail(mail(BASE + headers))
    assert parsed.kind is kind, parsed.kind_reason
    assert parsed.kind_reason


# --- robustness ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"", b"\r\n", b"garbage without headers", b"\xff\xfe\x00\x01" * 100, b"Subject: =?", b"From: <<<@@@>>>\n\n",
    b"Content-Type: multipart/mixed; boundary=\n\n--\n--",
    b"Content-Type: text/plain; charset=rot13\n\nhello", b"Content-Type: text/plain; charset=undefined\n\n\xe9",
    b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n!!!!",
])
def test_garbage_degrades(raw: bytes) -> None:
    parsed = parse_mail(raw)
    assert isinstance(parsed.text, str) and parsed.size == len(raw)
    assert not any(d.startswith("parser error") for d in parsed.defects), parsed.defects


def test_deep_nesting_does_not_raise() -> None:
    depth = 2000
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth))
    parsed = parse_mail(("Subject: deep\n" + head + "Content-Type: text/plain\n\ndeep text\n").encode())
    assert parsed.subject == "deep"


def test_big_attachment_memory() -> None:
    data = os.urandom(8 * 1024 * 1024)
    raw = multipart([("Content-Type: text/plain", "big file"),
                     ("Content-Type: application/octet-stream; name=big.bin\nContent-Transfer-Encoding: base64",
                      base64.encodebytes(data))])
    tracemalloc.start()
    try:
        parsed = parse_mail(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.attachments[0].data == data
    assert peak < 6 * len(raw), peak / len(raw)


# --- trace headers (mailbot.rules.authentication reads them) -----------------------------

@pytest.mark.parametrize("value, by, names, peer", [
    ("from mail.zavod.example (mail.zavod.example [192.0.2.25]) by mx.tecon.example (Postfix) "
     "with ESMTPS id 4Zq7 for <support@tecon.example>; Wed, 25 Nov 2026 10:00:01 +0300",
     "mx.tecon.example", ("mail.zavod.example", "192.0.2.25"), ("192.0.2.25", "mail.zavod.example")),
    ("from imap.tecon.example (unknown [203.0.113.9]) (using TLSv1.3 with cipher "
     "TLS_AES_256_GCM_SHA384 (256/256 bits)) by mx.tecon.example (Postfix) with ESMTPS id 1; Wed",
     "mx.tecon.example", ("imap.tecon.example", "203.0.113.9"), ("203.0.113.9",)),
    ("from mx.tecon.example ([10.0.0.2]) by imap.tecon.example with LMTP id 7f "
     "(envelope-from <a@b.example>) for <support@tecon.example>; Wed",
     "imap.tecon.example", ("mx.tecon.example", "10.0.0.2"), ("10.0.0.2",)),
    ("from [203.0.113.9] (helo=imap.tecon.example) by mx.tecon.example with esmtp (Exim 4.96) id 1x; Wed",
     "mx.tecon.example", ("203.0.113.9", "imap.tecon.example"), ("203.0.113.9",)),
    ("from exch ([IPv6:2001:DB8::1]) by MX.tecon.example.; Wed", "mx.tecon.example",
     ("exch", "2001:db8::1"), ("2001:db8::1",)),
    ("by mx.tecon.example (Postfix, from userid 0) id 5; Wed", "mx.tecon.example", (), ()),
    ("nothing a parser could use", "", (), ()),
])
def test_received_headers_name_the_receiving_host_and_the_client(value, by, names, peer) -> None:
    from mailbot.parsers.trace import parse_received

    hop = parse_received(value)
    assert (hop.by, hop.names, hop.peer) == (by, names, peer)


def test_authentication_results_comments_are_not_results() -> None:
    from mailbot.parsers.trace import parse_authentication_results

    parsed = parse_authentication_results(
        'MX.tecon.example (a comment); dkim=fail (expected "spf=pass") header.d=tecon.example; '
        "spf=pass smtp.mailfrom=a@Evil.example; dmarc=pass (p=reject) header.from=evil.example")
    assert parsed.authserv_id == "mx.tecon.example"
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "fail"), ("spf", "pass"), ("dmarc", "pass")]
    assert parsed.results[1].get("smtp.mailfrom") == "a@evil.example"
    assert parse_authentication_results("mx.tecon.example;;; dkim") is None


@pytest.mark.parametrize("value, written", [
    ("ivanov@zavod.example", ["ivanov@zavod.example"]),
    ('"Иванов, И. И." <ivanov@zavod.example> (отдел)', ["ivanov@zavod.example"]),
    ("<ivanov@zavod.example> mallory@evil.example", [""]),
    ("ivanov@zavod.example mallory@evil.example", [""]),
    ("ivanov@zavod.example, mallory@evil.example", ["ivanov@zavod.example", "mallory@evil.example"]),
    ("x@y.example <ivanov@zavod.example>", [""]),
    ("<>", [""]),
])
def test_written_addresses_read_from_strictly(value, written) -> None:
    """What identifies a sender must not depend on which of two readers guessed right."""
    from mailbot.parsers.addresses import written_addresses

    assert written_addresses(value) == written
