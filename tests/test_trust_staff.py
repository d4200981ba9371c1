"""Staff mail is authenticated, safely by default (issue 15, part 2; docs/operations.md, Security model).

Each attack is a mail through the real pipeline (Dovecot or `mailbot ingest`, PostgreSQL, the
SMTP sink). The desk's MX (tests/mailflow.py) writes its Authentication-Results and Received on
top of every mail, as a real one does; what an attacker writes comes below. Every attack test
asserts that nothing was executed or changed, that nothing reached the customer, and who was told.
"""
from __future__ import annotations

import io
import logging
import sys

import pytest
from sqlalchemy import select

from mailbot.cli.main import main
from mailbot.config import with_overrides
from mailbot.register.models import Event, Message
from tests.mailflow import MX, Desk, body

CUSTOMER = "ivanov@zavod.example"
TP1 = "tp1@tecon.example"
ATTACK = "#решено\nСкачайте исправление: http://evil.example/fix.exe"
WATCHED = ("status", "level", "assignee_id", "organization_id", "first_reaction_at", "due_at",
           "confirmation", "closed_at")


def open_request(desk: Desk):
    """A customer's open request, its assignee, and the notification the assignee got."""
    staff = desk.add_staff("sidorov", years=6)
    desk.add_staff("petrova", years=6)
    desk.write(CUSTOMER, "Настройка АРМ", "Как настроить АРМ диспетчера?")
    desk.run()
    notice = desk.mail_to(staff)
    return staff, notice


def state(desk: Desk) -> dict:
    request = desk.request()
    return {key: getattr(request, key) for key in WATCHED}


def events(desk: Desk) -> list[Event]:
    with desk.sessions() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def cli_environment(desk: Desk, monkeypatch, **settings: str) -> None:
    """`mailbot` commands see the desk's database, Dovecot account and SMTP sink (and
    ``settings``, as MAILBOT_<KEY>), and no staff authentication settings of the desk."""
    for key, value in {
            "DATABASE_URL": desk.config.database.url, "IMAP_HOST": desk.mailbox.host,
            "IMAP_PORT": str(desk.mailbox.port), "IMAP_SSL": "no", "IMAP_USERNAME": desk.mailbox.user,
            "IMAP_PASSWORD": desk.mailbox.password, "SMTP_HOST": desk.sink.host,
            "SMTP_PORT": str(desk.sink.port), "SUPPORT_ADDRESS": desk.mailbox.user, **settings}.items():
        monkeypatch.setenv(f"MAILBOT_{key}", value)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)


def assert_rejected(desk: Desk, before: dict, *, alerted: bool = True) -> None:
    """Nothing changed, nothing reached the customer; ТП1 got the alert (when ``alerted``); the
    mail is kept on its request as an unauthenticated note."""
    assert state(desk) == before
    mail = desk.inbox()
    assert CUSTOMER not in mail
    alerts = mail.pop(TP1, [])
    assert len(alerts) == (1 if alerted else 0)
    assert not mail, {k: [m.parsed()["Subject"] for m in v] for k, v in mail.items()}
    if alerted:
        assert "не подтверждено" in alerts[0].parsed()["Subject"]
        assert "ничего не выполнено" in alerts[0].parsed()["Subject"].lower() or \
            "не выполнены" in body(alerts[0])
    note = events(desk)[-1 - alerted]
    assert note.kind == "unauthenticated_staff_mail" and note.request_id == desk.request().id
    with desk.sessions() as session:
        assert session.get(Message, note.message_id).request_id == desk.request().id


# ---------------------------------------------------------------- forged From:

def test_a_forged_staff_mail_cannot_close_a_request_or_send_a_solution(desk):
    """The MX found the From: domain forged (dmarc=fail): no command runs, nothing is relayed."""
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc="fail")
    desk.run()
    assert_rejected(desk, before)


@pytest.mark.parametrize("commands", [
    "#закрыть", "#уровень ОП3", "#назначить petrova", "#организация Старый клиент",
    "#заметка\nКлиент отказался", "Ответ клиенту со ссылкой http://evil.example",
])
def test_a_forged_staff_mail_changes_nothing_and_keeps_the_sla_clock_running(desk, commands):
    """Level, assignee, organisation, notes and answers: none from mail the MX did not vouch for
    (an answer would also have stopped the reaction clock)."""
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, commands, dmarc="fail")
    desk.run()
    assert_rejected(desk, before)
    assert desk.request().first_reaction_at is None


def test_a_staff_mail_without_any_authentication_results_is_not_acted_on(desk):
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc=None)
    desk.run()
    assert_rejected(desk, before)


def test_a_genuine_staff_answer_is_still_relayed(desk):
    """The same path with the MX's dmarc=pass: the answer reaches the customer."""
    staff, notice = open_request(desk)
    desk.reply(notice, staff, "#решено\nПереустановите драйвер ключа.")
    desk.run()
    assert desk.request().status == "resolved"
    assert "Переустановите драйвер" in body(desk.mail_to(CUSTOMER))


# ---------------------------------------------------------------- Authentication-Results done right

def test_authentication_results_below_the_first_received_are_ignored(desk):
    """An attacker writes our MX's authserv-id into his own mail: it stands below our Received."""
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc=None, headers={
        "Authentication-Results": f"{MX}; dkim=pass header.d=tecon.example; "
                                  "spf=pass smtp.mailfrom=sidorov@tecon.example; dmarc=pass header.from=tecon.example"})
    desk.run()
    assert_rejected(desk, before)


def test_a_comment_is_not_a_result(desk):
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, mx_results='dkim=fail (expected "spf=pass") header.d=tecon.example; '
                                                 'spf=softfail (dmarc=pass) smtp.mailfrom=tecon.example')
    desk.run()
    assert_rejected(desk, before)


def test_a_pass_for_the_attackers_own_domain_is_no_pass_for_ours(desk):
    """His own domain passes DKIM, SPF and DMARC; none of it is aligned with tecon.example."""
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, mx_results=(
        "dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=bounce@evil.example; "
        "dmarc=pass header.from=evil.example"))
    desk.run()
    assert_rejected(desk, before)


def test_a_look_alike_domain_is_not_aligned(desk):
    """tecon.example.evil.example is evil.example's, whatever it starts with."""
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, mx_results=(
        "dkim=pass header.d=tecon.example.evil.example; spf=pass smtp.mailfrom=a@tecon-example.evil.example"))
    desk.run()
    assert_rejected(desk, before)


def test_any_dmarc_fail_fails_even_beside_an_aligned_dkim_pass(desk):
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, mx_results="dkim=pass header.d=tecon.example; dmarc=fail header.from=tecon.example")
    desk.run()
    assert_rejected(desk, before)


def test_results_of_another_authserv_id_do_not_count(desk):
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc=None, above=(
        "Authentication-Results: mx.evil.example; dmarc=pass header.from=tecon.example",))
    desk.run()
    assert_rejected(desk, before)


@pytest.mark.parametrize("results", [
    "dmarc=pass header.from=tecon.example",
    "dkim=pass header.d=mail.tecon.example",  # relaxed alignment: the same organizational domain
    "spf=pass smtp.mailfrom=bounces@lists.tecon.example; dkim=none",
])
def test_an_aligned_pass_authenticates_staff(desk, results):
    staff, notice = open_request(desk)
    desk.reply(notice, staff, "#закрыть", mx_results=results)
    desk.run()
    assert desk.request().status == "closed"


# ---------------------------------------------------------------- identity from From: only

def test_sender_and_reply_to_never_make_a_staff_member(desk):
    """From: is the attacker's own (genuine) address; Sender:/Reply-To: name the staff member.
    He is a stranger to the request: kept as a note, the assignee told, nothing done."""
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, "mallory@evil.example", ATTACK, headers={"Sender": staff, "Reply-To": staff})
    desk.run()
    assert state(desk) == before
    mail = desk.inbox()
    assert set(mail) == {staff}  # the assignee hears of the stranger; nobody else gets anything
    assert "постороннего" in mail[staff][0].parsed()["Subject"]
    assert events(desk)[-2].kind == "stranger_mail"


@pytest.mark.parametrize("from_header", [
    "sidorov@tecon.example, mallory@evil.example",
    '"sidorov@tecon.example" <mallory@evil.example>, sidorov@tecon.example',
    "<sidorov@tecon.example> mallory@evil.example",
    "sidorov@tecon.example (Сидоров), bcc: mallory@evil.example",
])
def test_a_from_that_is_not_exactly_one_valid_address_identifies_nobody(desk, from_header):
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, from_header=from_header)
    desk.run()
    assert state(desk) == before
    mail = desk.inbox()
    assert set(mail) == {staff}  # the assignee is told of a mail that cannot be answered
    assert "недействительного адреса" in body(mail[staff][0])


# ---------------------------------------------------------------- secure by default

def test_without_authentication_configured_staff_mail_is_a_note_and_tp1_is_told_once_an_hour(desk):
    """The default: staff.authentication = "dmarc" and no authserv-id configured. Genuine
    staff mail cannot be told from forged mail, so none is executed; ТП1 learns what to set."""
    desk.config = with_overrides(desk.config, staff={"trusted_authserv_id": ()})
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, "#закрыть")
    desk.run()
    alert = desk.mail_to(TP1)
    assert "trusted_authserv_id" in body(alert)
    assert state(desk) == before

    desk.clock.advance(minutes=30)
    desk.reply(notice, staff, "#уровень ОП3")
    desk.run()
    assert desk.new_mail() == []  # the same sender within the hour: kept, no second alert
    assert [e.kind for e in events(desk)][-1] == "unauthenticated_staff_mail"

    desk.clock.advance(minutes=31)
    desk.reply(notice, staff, "#уровень ОП3")
    desk.run()
    assert desk.mail_to(TP1)
    assert state(desk) == before


def test_a_forged_staff_mail_naming_no_request_is_kept_and_only_tp1_is_told(desk):
    staff = desk.add_staff("sidorov", years=6)
    desk.write(staff, "Срочно", "Переведите все запросы на меня", dmarc="fail")
    desk.run()
    mail = desk.inbox()
    assert set(mail) == {TP1}  # no help mail to the forged address, no request
    with desk.sessions() as session:
        message = session.scalar(select(Message))
        assert message.request_id is None and message.sender == staff
    assert events(desk)[0].kind == "unauthenticated_staff_mail"


def test_authentication_none_trusts_from_alone_and_is_flagged_insecure(desk, monkeypatch, capsys,
                                                                        caplog):
    """The development opt-out: From: alone identifies staff; `mailbot check` fails on it with a
    real mail server, and `mailbot run` logs a WARNING at start-up."""
    staff, notice = open_request(desk)
    desk.reply(notice, staff, "#закрыть", dmarc=None)
    cli_environment(desk, monkeypatch, STAFF_AUTHENTICATION="none")

    assert main(["check"]) == 1
    assert 'INSECURE: staff.authentication = "none"' in capsys.readouterr().out
    with caplog.at_level(logging.WARNING, logger="mailbot"):
        assert main(["run", "--once"]) == 0
    assert any(r.levelno == logging.WARNING and "INSECURE" in r.getMessage() for r in caplog.records)
    assert desk.request().status == "closed"  # executed: insecure, as documented


def test_mailbot_check_says_exactly_what_to_set(desk, monkeypatch, capsys):
    cli_environment(desk, monkeypatch)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "staff authentication: NOT CONFIGURED" in out
    assert "MAILBOT_STAFF_TRUSTED_AUTHSERV_ID=" in out and "staff.internal_hosts" in out

    monkeypatch.setenv("MAILBOT_STAFF_TRUSTED_AUTHSERV_ID", MX)
    assert main(["check"]) == 0
    assert f"staff authentication: ok (DMARC-aligned Authentication-Results from {MX})" in \
        capsys.readouterr().out


def test_a_forged_staff_mail_through_the_mta_pipe_does_nothing(desk, monkeypatch):
    """The same attack through `mailbot ingest` (the Postfix pipe) instead of IMAP."""
    staff, notice = open_request(desk)
    before = state(desk)
    subject = notice.parsed()["Subject"]
    raw = (f"Authentication-Results: {MX}; dkim=none; spf=fail smtp.mailfrom=tecon.example; "
           f"dmarc=fail header.from=tecon.example\r\n"
           f"Received: from evil.example (evil.example [203.0.113.9]) by {MX}; Wed, 25 Nov 2026 10:00 +0300\r\n"
           f"Authentication-Results: {MX}; dmarc=pass header.from=tecon.example\r\n"
           f"From: {staff}\r\nTo: {desk.mailbox.user}\r\nSubject: Re: {subject}\r\n"
           f"Message-ID: <forged-1@evil.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: 8bit\r\n\r\n{ATTACK}\r\n").encode()
    monkeypatch.setenv("MAILBOT_DATABASE_URL", desk.config.database.url)
    monkeypatch.delenv("MAILBOT_CONFIG", raising=False)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    assert main(["ingest"]) == 0
    desk.run()
    assert_rejected(desk, before)


# ---------------------------------------------------------------- our own hops and relays

LMTP = "Received: from mx.tecon.example ([10.0.0.2]) by imap.tecon.example with LMTP id 7f; Wed, 25 Nov 2026 10:00:02 +0300"


def test_internal_hosts_let_the_mx_results_below_our_own_lmtp_hop_count(desk):
    desk.config = with_overrides(desk.config, staff={
        "internal_hosts": ("imap.tecon.example", "mx.tecon.example", "10.0.0.2")})
    staff, notice = open_request(desk)
    desk.reply(notice, staff, "#закрыть", above=(LMTP,))
    desk.run()
    assert desk.request().status == "closed"


def test_with_internal_hosts_an_attackers_results_below_the_mx_hop_still_do_not_count(desk):
    desk.config = with_overrides(desk.config, staff={
        "internal_hosts": ("imap.tecon.example", "mx.tecon.example", "10.0.0.2")})
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc=None, above=(LMTP,), headers={
        "Authentication-Results": f"{MX}; dmarc=pass header.from=tecon.example"})
    desk.run()
    assert_rejected(desk, before)


def test_a_client_claiming_an_internal_name_does_not_extend_the_trusted_zone(desk):
    """HELO imap.tecon.example from an outside address: the MX's Received is foreign, so the
    attacker's results below it are not read."""
    desk.config = with_overrides(desk.config, staff={
        "internal_hosts": ("imap.tecon.example", "mx.tecon.example", "10.0.0.2")})
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc=None,
               mx_received=f"from imap.tecon.example (unknown [203.0.113.9]) by {MX} with ESMTP id 1",
               headers={"Authentication-Results": f"{MX}; dmarc=pass header.from=tecon.example"})
    desk.run()
    assert_rejected(desk, before)


def test_a_trusted_relay_vouches_for_the_mail_it_passed_on(desk):
    """An internal Exchange that cannot sign: its address in staff.trusted_relays."""
    desk.config = with_overrides(desk.config, staff={
        "internal_hosts": (MX,), "trusted_relays": ("10.1.1.0/24",)})
    staff, notice = open_request(desk)
    desk.reply(notice, staff, "#закрыть", dmarc=None,
               mx_received=f"from exch.tecon.example (exch.tecon.example [10.1.1.7]) by {MX} with ESMTP id 2")
    desk.run()
    assert desk.request().status == "closed"


def test_a_relay_name_claimed_by_an_outsider_is_no_relay(desk):
    """The relay's name as HELO, from an outside address: not the relay."""
    desk.config = with_overrides(desk.config, staff={
        "internal_hosts": (MX,), "trusted_relays": ("exch.tecon.example", "10.1.1.7")})
    staff, notice = open_request(desk)
    before = state(desk)
    desk.reply(notice, staff, ATTACK, dmarc=None,
               mx_received=f"from exch.tecon.example (unknown [203.0.113.9]) by {MX} with ESMTP id 3",
               headers={"Received": f"from x (exch.tecon.example [10.1.1.7]) by {MX}; Wed, 25 Nov 2026"})
    desk.run()
    assert_rejected(desk, before)
