"""Every message of the test corpus (tests/corpus/) against its expectation file (see corpus/SOURCES.md).

Checked: subject, from, from_name, body_contains, attachment names that are in the message
(plus their content type and Content-ID), and for bounces/auto-replies kind,
failed_recipient, the delivery-status Status fields and the per-recipient status codes
(Sisimai pseudo codes X.0.9xx, marked status_note, are not in the mail and are skipped).
Names that Zammad synthesised and attachment counts are printed as information only.

Nested messages are attachments (.eml).  Where an expectation was derived by walking into
them (Sisimai's reference decode of every part for body_contains; the Status fields of a
bounce returned inside a bounce), the check parses the attached .eml the same way and
looks there too.

DEVIATIONS lists the expectations this parser contradicts on purpose, each with the reason;
they are reported as skips, never silently passed.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mailbot.parsers import MailKind, ParsedMail, parse_mail
from mailbot.parsers.body import strip_tags
from tests.corpus_files import CORPUS, EXPECTED_MESSAGES, messages

MESSAGES = messages()

# (message stem, expectation key) -> why the expectation is not what a correct parser returns.
DEVIATIONS: dict[tuple[str, str], str] = {
    ("mail018", "subject"):
        "Zammad left the UTF-7 encoded word undecoded ('+ANw-bermittlungsstatus'); "
        "we decode unicode-1-1-utf-7 as asked: 'Übermittlungsstatus'",
    ("mail046", "from_name"):
        "Zammad's value 'ÎäŔźłÉ' is mojibake of raw GB2312 bytes; we decode them with the "
        "message's declared gb2312 charset",
    ("mail018", "body_contains:+ANw-bermittlung an folgende Empf+AOQ-nger fehlgeschlagen."):
        "the same undecoded UTF-7 as mail018/subject; our text has 'Übermittlung an folgende Empfänger'",
    ("mail072", "body_contains:XXXX S.aĚ r.l."):
        "mojibake: the mail is windows-1258, where 0xCC after 'a' is U+0300 (combining grave), so the "
        "text is 'S.à r.l.'; Zammad's 'aĚ' reads 0xCC as cp1250",
    ("mail035", "from"):
        "'From: \"finances8@…\"' is a quoted string only; Zammad kept the quotes in the address, "
        "we return the address inside them",
    ("mail076", "from"):
        "Zammad kept the stray '>' of '\"Millions Lottery Spain transfer\"@example.com>'; "
        "we return the addr-spec without it",
    ("mail076", "from_name"):
        "Zammad turned the quoted local part into a display name; the header has no display name",
    ("mail087", "from"):
        "'From: Test test@example.com' has no angle brackets; Zammad took the whole value as the "
        "address, we take test@example.com and the name 'Test'",
    ("mail087", "from_name"):
        "same header as mail087/from: the display name is 'Test'",
}


def _ws(text: str) -> str:
    return " ".join(text.split())


def _load(path: Path) -> tuple[ParsedMail, dict]:
    return parse_mail(path.read_bytes()), yaml.safe_load(path.with_suffix(".yml").read_text("utf-8"))


def _tree(mail: ParsedMail, depth: int = 0) -> Iterator[ParsedMail]:
    """The mail and, recursively, the messages attached to it as .eml."""
    yield mail
    if depth < 5:
        for att in mail.attachments:
            if att.content_type == "message/rfc822":
                yield from _tree(parse_mail(att.data), depth + 1)


def _deviation(stem: str, key: str) -> None:
    reason = DEVIATIONS.get((stem, key))
    if reason:
        pytest.skip(f"{stem} {key}: {reason}")


@pytest.fixture(params=MESSAGES, ids=[p.stem for p in MESSAGES])
def case(request: pytest.FixtureRequest) -> tuple[str, ParsedMail, dict]:
    mail, expected = _load(request.param)
    return request.param.stem, mail, expected


def test_corpus_present() -> None:
    assert len(MESSAGES) >= EXPECTED_MESSAGES, f"corpus not found or incomplete at {CORPUS}"


def test_never_falls_back(case: tuple[str, ParsedMail, dict]) -> None:
    _, mail, _ = case
    assert not any(d.startswith("parser error") for d in mail.defects), mail.defects


def test_subject(case: tuple[str, ParsedMail, dict]) -> None:
    stem, mail, expected = case
    if "subject" not in expected:
        pytest.skip("no subject expectation")
    _deviation(stem, "subject")
    assert _ws(mail.subject) == _ws(expected["subject"] or "")


def test_from(case: tuple[str, ParsedMail, dict]) -> None:
    stem, mail, expected = case
    _deviation(stem, "from")
    assert mail.from_addr == (expected["from"] or "").lower()


def test_from_name(case: tuple[str, ParsedMail, dict]) -> None:
    stem, mail, expected = case
    if not expected.get("from_name"):
        pytest.skip("no from_name expectation")
    _deviation(stem, "from_name")
    assert _ws(mail.from_name) == _ws(expected["from_name"])


def test_body_contains(case: tuple[str, ParsedMail, dict]) -> None:
    stem, mail, expected = case
    excerpts = expected.get("body_contains") or []
    if not excerpts:
        pytest.skip("no body excerpts")
    # Sisimai expectations come from a reference decode of every part, nested messages included.
    whole_tree = str((expected.get("facts_origin") or {}).get("body_contains", "")).startswith("derived: reference")
    mails = list(_tree(mail)) if whole_tree else [mail]
    text = " ".join(_ws(m.text) for m in mails)
    stripped = " ".join(_ws(strip_tags(m.html or "")) for m in mails)
    for excerpt in excerpts:
        _deviation(stem, f"body_contains:{excerpt}")
        assert _ws(excerpt) in text or _ws(excerpt) in stripped, excerpt


def test_named_attachments(case: tuple[str, ParsedMail, dict]) -> None:
    stem, mail, expected = case
    wanted = expected.get("attachments") or []
    ours = list(mail.attachments)
    print(f"{stem}: attachments ours={len(mail.attachments)} upstream={expected.get('attachment_count')} "
          f"names={[a.filename for a in mail.attachments]}")
    checked = [w for w in wanted if w.get("filename") and w.get("name_in_message") is not False]
    for item in wanted:
        if item not in checked:
            print(f"  info only (name not in the message): {item.get('filename')!r} {item.get('content_type')}")
    if not checked:
        pytest.skip("no attachment name stated in the message")
    for item in checked:
        match = [a for a in ours if a.filename == item["filename"]]
        assert match, f"{item['filename']!r} not in {[a.filename for a in ours]}"
        assert match[0].content_type == item["content_type"]
        if item.get("content_id"):
            assert match[0].content_id == item["content_id"]


def test_kind(case: tuple[str, ParsedMail, dict]) -> None:
    _, mail, expected = case
    if "kind" not in expected:
        pytest.skip("no kind expectation")
    assert mail.kind == MailKind(expected["kind"]), mail.kind_reason
    if mail.kind is MailKind.DSN:
        assert mail.dsn is not None and mail.dsn.recipients


def test_failed_recipients(case: tuple[str, ParsedMail, dict]) -> None:
    _, mail, expected = case
    if not expected.get("failed_recipient"):
        pytest.skip("no failed_recipient expectation")
    assert mail.dsn is not None
    addresses = [r.address for r in mail.dsn.recipients]
    assert expected["failed_recipient"].lower() in addresses
    stated = [r["address"].lower() for r in expected.get("dsn_recipients") or [] if r.get("address")]
    assert set(stated) <= set(addresses)


def test_dsn_statuses(case: tuple[str, ParsedMail, dict]) -> None:
    _, mail, expected = case
    fields = expected.get("dsn_status_fields")
    real = [r for r in expected.get("dsn_recipients") or [] if not r.get("status_note")]
    if not fields and not real:
        pytest.skip("no real status codes stated")
    if fields:
        ours = [r.status for m in _tree(mail) if m.dsn for r in m.dsn.recipients]
        assert ours == fields
    assert mail.dsn is not None
    by_address = {r.address: r.status for r in mail.dsn.recipients}
    for item in real:
        if item.get("address"):
            assert by_address.get(item["address"].lower()) == item["status"], item
        else:
            assert item["status"] in by_address.values(), item


def test_deviations_are_real() -> None:
    """Each listed deviation still differs from the expectation (else remove it from the list)."""
    for stem, key in DEVIATIONS:
        mail, expected = _load(CORPUS / f"{stem}.eml")
        if key.startswith("body_contains:"):
            excerpt = key.split(":", 1)[1]
            assert excerpt in expected["body_contains"] and _ws(excerpt) not in _ws(mail.text), (stem, key)
            continue
        ours = {"subject": mail.subject, "from": mail.from_addr, "from_name": mail.from_name}[key]
        assert _ws(ours).lower() != _ws(expected[key] or "").lower(), (stem, key)
