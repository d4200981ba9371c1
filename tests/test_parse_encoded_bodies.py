"""Files' encoded bodies are not fed to the MIME parser line by line (parsers/mime.py, _feed).

The rule: setting the runs of base64 lines aside and putting them back after the parse gives
the tree that parsing the whole message gives, for any input: well-formed mail, damaged mail
(the mutations of the fuzzing test), and mail written to pass for a set-aside run.
"""
from __future__ import annotations

import base64
import random
from email.message import Message

import pytest

from mailbot.parsers import parse_mail
from mailbot.parsers import mime
from tests.test_parser_mutations import MUTATIONS

PDF = random.Random(7).randbytes(300_000)
PNG = random.Random(8).randbytes(90_000)


def _lines(data: bytes, width: int = 76, eol: bytes = b"\r\n") -> bytes:
    text = base64.b64encode(data)
    return eol.join(text[i:i + width] for i in range(0, len(text), width)) + eol


def _mail(eol: bytes = b"\r\n", width: int = 76, epilogue: bytes = b"") -> bytes:
    parts = [
        b"From: Client <client@example.ru>", b"To: support@example.com", b"Subject: files",
        b"Message-ID: <bulk@example.ru>", b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="b1"', b"", b"preamble", b"--b1",
        b"Content-Type: text/plain; charset=utf-8", b"", "Логи во вложении.".encode(), b"--b1",
        b'Content-Type: application/pdf; name="report.pdf"', b"Content-Transfer-Encoding: base64",
        b"", _lines(PDF, width, eol) + b"--b1",
        b'Content-Type: image/png; name="shot.png"', b"Content-Transfer-Encoding: base64",
        b"", _lines(PNG, width, eol), b"--b1--", epilogue,
    ]
    return eol.join(parts)


def _tree(message: Message) -> list:
    """Everything the parser made of a message, part by part."""
    out, stack = [], [message]
    while stack:
        part = stack.pop()
        payload = mime.stored_payload(part)
        out.append((part.get_content_type(), list(part.raw_items()), part.preamble, part.epilogue,
                    [type(d).__name__ for d in part.defects],
                    payload if isinstance(payload, str) else len(payload or ())))
        if isinstance(payload, list):
            stack.extend(payload)
    return out


def _same_tree_as_a_whole_parse(raw: bytes) -> None:
    assert _tree(mime._feed(raw)) == _tree(mime._feed_whole(raw))


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("width", [76, 64, 72])
def test_encoded_files_are_set_aside_and_the_tree_is_the_whole_parse(eol, width):
    raw = _mail(eol, width, epilogue=eol + _lines(PNG, width, eol))
    assert len(mime._bulk_runs(raw)) == 3  # both files and the epilogue
    _same_tree_as_a_whole_parse(raw)
    parsed = parse_mail(raw)
    assert [(a.filename, a.size) for a in parsed.attachments] == [("report.pdf", len(PDF)), ("shot.png", len(PNG))]


def test_a_run_with_a_line_of_another_length_is_parsed_line_by_line():
    pdf = _lines(PDF)
    raw = _mail().replace(pdf, pdf[:76] + pdf[78:])  # its first line twice as long
    raw = raw.replace(b"\r\n--b1--", b"\r\nAAAA\r\n--b1--")  # a short line after the last one
    assert mime._bulk_runs(raw) == []
    _same_tree_as_a_whole_parse(raw)
    assert [a.size for a in parse_mail(raw).attachments] == [len(PDF), len(PNG) + 3]


@pytest.mark.parametrize("seed", range(60))
def test_damaged_mail_parses_to_the_same_tree(seed):
    rng = random.Random(seed)
    raw = _mail(rng.choice([b"\r\n", b"\n"]))
    for _ in range(rng.randint(1, 3)):
        raw = rng.choice(MUTATIONS)(raw, rng)
    _same_tree_as_a_whole_parse(raw)


def test_text_written_as_a_token_stays_as_written():
    forged = b"mailbotbulk0123456789abcdef00000000"
    raw = _mail().replace(b"preamble", forged).replace("Логи".encode(), forged)
    _same_tree_as_a_whole_parse(raw)
    assert forged.decode() in parse_mail(raw).text


def test_a_token_that_does_not_come_back_once_means_the_whole_parse():
    message = mime._feed_whole(_mail())
    assert not mime._put_back(message, "0123456789abcdef", ["text"])
