"""Deterministic mutation fuzzing of parse_mail over the test corpus (tests/corpus/).

Each case takes one corpus message (or none), applies 1-3 seeded mutations (truncation,
flipped bytes, duplicated/removed headers, broken boundaries, garbage, huge header lines,
odd charsets and transfer encodings, ...) and checks that parse_mail returns a ParsedMail
whose fields all have their declared types, never raising anything but MailTooLarge and
never falling back to the "parser error" last resort.
"""
from __future__ import annotations

import dataclasses
import enum
import random
import re
import time
import types
import typing
from collections.abc import Callable
from datetime import datetime

import pytest

from mailbot.parsers import MailTooLarge, ParsedMail, parse_mail
from tests.corpus_files import messages

SEED = 20260320
CASES = 3200
MAX_SECONDS_PER_CASE = 5.0
MESSAGES = [p.read_bytes() for p in messages()]

Mutation = Callable[[bytes, random.Random], bytes]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 30)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _header_lines(data: bytes) -> tuple[list[bytes], bytes]:
    end = data.find(b"\n\n") if b"\r\n\r\n" not in data else data.find(b"\r\n\r\n")
    end = len(data) if end < 0 else end
    return data[:end].split(b"\n"), data[end:]


def _duplicate_header(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _header_lines(data)
    index = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[index])
    return b"\n".join(lines) + rest


def _remove_header(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _header_lines(data)
    if len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    return b"\n".join(lines) + rest


def _break_boundary(data: bytes, rng: random.Random) -> bytes:
    found = re.search(rb'boundary="?([^";\r\n]+)', data, re.I)
    if not found:
        return data.replace(b"multipart/", b"multipart/x-", 1) if rng.random() < 0.5 else data
    boundary = found.group(1)
    choice = rng.randrange(4)
    if choice == 0:  # wrong boundary in the header
        return data[:found.start(1)] + b"nope" + data[found.end(1):]
    if choice == 1:  # no closing boundary
        return data.replace(b"--" + boundary + b"--", b"")
    if choice == 2:  # no boundary parameter at all
        return data[:found.start()] + data[found.end():]
    return data.replace(b"--" + boundary, b"--" + boundary[: len(boundary) // 2], rng.randint(1, 3))


def _garbage(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 2000)) + data[at:]


def _huge_header(data: bytes, rng: random.Random) -> bytes:
    name = rng.choice([b"Subject", b"From", b"To", b"X-Long", b"Content-Type", b"References", b"Message-ID"])
    unit = rng.choice([b"a", b"=?utf-8?B?0JA=?= ", b"<x@y> ", b'"q\\" ', b"(c(", b"\xd0\x90", b"a@b, "])
    return name + b": " + unit * rng.randint(1000, 20000) + b"\r\n" + data


def _odd_charset(data: bytes, rng: random.Random) -> bytes:
    label = rng.choice([b"undefined", b"rot13", b"utf-16", b"base64", b"x-unknown", b"utf-7", b"idna", b'"', b""])
    return re.sub(rb"charset=\"?[\w.:-]*\"?", b"charset=" + label, data, count=rng.randint(1, 5), flags=re.I)


def _odd_encoding(data: bytes, rng: random.Random) -> bytes:
    cte = rng.choice([b"base64", b"quoted-printable", b"x-uuencode", b"8bit", b"bogus", b""])
    return re.sub(rb"Content-Transfer-Encoding:[^\r\n]*", b"Content-Transfer-Encoding: " + cte, data,
                  count=rng.randint(1, 5), flags=re.I)


def _line_endings(data: bytes, rng: random.Random) -> bytes:
    return rng.choice([data.replace(b"\r\n", b"\n"), data.replace(b"\n", b"\r\n"), data.replace(b"\n", b"\r"),
                       data.replace(b"\r\n\r\n", b"\r\n", 1).replace(b"\n\n", b"\n", 1)])


def _splice(data: bytes, rng: random.Random) -> bytes:
    other = rng.choice(MESSAGES)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


def _nest(data: bytes, rng: random.Random) -> bytes:
    depth = rng.randint(2, 120)
    head = b"".join(b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i) for i in range(depth))
    return head + data


MUTATIONS: list[Mutation] = [_truncate, _flip_bytes, _duplicate_header, _remove_header, _break_boundary, _garbage,
                             _huge_header, _odd_charset, _odd_encoding, _line_endings, _splice, _nest]
FIXED_INPUTS = [b"", b"\n", b"\r\n\r\n", b"\x00" * 64, b"From:", b"--", b"=?utf-8?B?", b"Content-Type: multipart/"]


def case_input(index: int) -> tuple[bytes, str]:
    """The bytes of case `index` and a description of how they were made."""
    if index < len(FIXED_INPUTS):
        return FIXED_INPUTS[index], "fixed input"
    rng = random.Random(SEED * 100_003 + index)
    source = rng.randrange(len(MESSAGES))
    data = MESSAGES[source]
    names = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        mutation = rng.choice(MUTATIONS)
        data = mutation(data, rng)
        names.append(mutation.__name__.strip("_"))
    return data, f"message #{source} + {' + '.join(names)}"


def _conforms(value: object, hint: object) -> bool:
    """isinstance for the annotations used by the parser model."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return len(args) == len(value) and all(_conforms(v, a) for v, a in zip(value, args))
    if hint is type(None):
        return value is None
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and _fields_conform(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint)
    return isinstance(value, hint)  # type: ignore[arg-type]


def _fields_conform(obj: object) -> bool:
    hints = typing.get_type_hints(type(obj))
    return all(_conforms(getattr(obj, f.name), hints[f.name]) for f in dataclasses.fields(obj))  # type: ignore[arg-type]


def check_invariants(parsed: ParsedMail, raw: bytes) -> None:
    """Types as declared, plus the promises other modules rely on."""
    hints = typing.get_type_hints(ParsedMail)
    for item in dataclasses.fields(ParsedMail):
        value = getattr(parsed, item.name)
        assert _conforms(value, hints[item.name]), (item.name, type(value), value)
    assert parsed.size == len(raw)
    assert not any(d.startswith("parser error") for d in parsed.defects), parsed.defects
    assert isinstance(parsed.date, datetime | type(None)) and (parsed.date is None or parsed.date.tzinfo)
    for value in (parsed.subject, parsed.from_name, parsed.from_addr, *(v for _, v in parsed.headers)):
        assert "\r" not in value and "\n" not in value
    assert "\r" not in parsed.text and "\x00" not in parsed.text
    for attachment in parsed.attachments:
        assert attachment.filename and not re.search(r'[\x00-\x1f/\\<>:"|?*]', attachment.filename)


@pytest.mark.parametrize("index", range(CASES))
def test_mutated_input(index: int) -> None:
    raw, how = case_input(index)
    started = time.perf_counter()
    try:
        parsed = parse_mail(raw)
    except MailTooLarge:
        return
    elapsed = time.perf_counter() - started
    assert elapsed < MAX_SECONDS_PER_CASE, f"{how}: {elapsed:.1f}s"
    check_invariants(parsed, raw)
