"""The intake pipeline under load: several FETCH batches, and batches parsed in worker processes."""
from __future__ import annotations

import asyncio
import hashlib
import os

import psutil
import psycopg
import pytest
from sqlalchemy import event, func, select, update

from mailbot.clock import FrozenClock
from mailbot.config import with_overrides
from mailbot.parsers import MailTooLarge, ParseOptions, parse_mail
from mailbot.parsing import PARALLEL_MIN, WORKER_NICENESS, ParsePool
from mailbot.processor import Processor
from mailbot.register import files
from mailbot.register.db import binary_cursor
from mailbot.register.models import (
    AttachmentRow,
    Contact,
    Event,
    Inbound,
    MailboxState,
    Message,
    Outbox,
    Quarantine,
    Request,
    StoredFile,
)
from mailbot.transport.imap import FolderSync, connect
from mailbot.transport.smtp import SmtpSender
from mailbot.workflow.intake import Intake
from mailbot.workflow.trail import record_incoming
from tests.mailflow import MONDAY_MORNING, Desk


@pytest.fixture
def desk(database_url, dovecot, mailbox, smtp_sink) -> Desk:
    desk = Desk(database_url, dovecot, mailbox, smtp_sink)
    desk.load_crm()
    return desk


def count(desk: Desk, model, *where) -> int:
    with desk.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def folder_count(desk: Desk, folder: str) -> int:
    with desk.mailbox.client() as client:
        client.select_folder(folder, readonly=True)
        return len(client.search("ALL"))


def test_sync_in_several_batches_stores_and_moves_everything(desk):
    config = with_overrides(desk.config, imap={"fetch_batch": 2})
    for n in range(5):
        desk.write("ivanov@zavod.example", f"Обращение {n}", "Не запускается АРМ.")
    woken = []
    sync = FolderSync(config.imap, "INBOX", desk.sessions, woken.append)
    client = connect(config.imap)
    try:
        assert sync.sync(client) == 5
    finally:
        client.logout()
    assert [len(new) for new in woken] == [2, 1, 2]  # each commit heard of; the newest mail alone
    assert count(desk, Inbound) == 5
    assert folder_count(desk, "INBOX") == 0
    assert folder_count(desk, "Processed") == 5
    with desk.sessions() as session:
        assert session.scalar(select(MailboxState.last_uid)) == 5


def test_mail_that_comes_in_during_a_sync_goes_first_unless_it_answers_the_backlog(desk, monkeypatch):
    """A backlog is being fetched when two mails come in: one that answers a mail of the
    backlog is stored after it (processed first, it would open a request of its own), the
    other at once, before the rest of the backlog (it is answered within seconds)."""
    config = with_overrides(desk.config, imap={"fetch_batch": 2})
    backlog = [desk.write("ivanov@zavod.example", f"Обращение {n}", "Не запускается АРМ.") for n in range(6)]
    fetch, arrived = FolderSync._fetch, []

    def more_mail_while_fetching(self, client, batch):
        if not arrived:
            arrived.append(desk.write("ivanov@zavod.example", "Re: Обращение 5", "Добавлю: журнал пуст.",
                                      headers={"In-Reply-To": f"<{backlog[5]}>",
                                               "References": f"<{backlog[5]}>"}))
            arrived.append(desk.write("petrov@zavod.example", "Отчёт", "Как настроить отчёт?"))
        return fetch(self, client, batch)

    monkeypatch.setattr(FolderSync, "_fetch", more_mail_while_fetching)
    client = connect(config.imap)
    try:
        assert FolderSync(config.imap, "INBOX", desk.sessions).sync(client) == 8
    finally:
        client.logout()
    with desk.sessions() as session:
        order = list(session.scalars(select(Inbound.dedup_key).order_by(Inbound.id)))
    answer, other = (order.index(f"mid:{mid}") for mid in arrived)
    assert other < order.index(f"mid:{backlog[2]}")  # before the rest of the backlog
    assert answer > order.index(f"mid:{backlog[5]}")  # after the mail it answers
    assert folder_count(desk, "INBOX") == 0 and folder_count(desk, "Processed") == 8


def test_crash_before_a_move_leaves_later_batches_unstored(desk, monkeypatch):
    config = with_overrides(desk.config, imap={"fetch_batch": 2})
    for n in range(5):
        desk.write("ivanov@zavod.example", f"Обращение {n}", "Не запускается АРМ.")

    def crash(self, client, uids):
        if uids:
            raise KeyboardInterrupt("killed after the first commit, before its move")

    sync = FolderSync(config.imap, "INBOX", desk.sessions)
    client = connect(config.imap)
    with monkeypatch.context() as patch:
        patch.setattr(FolderSync, "_move", crash)
        with pytest.raises(KeyboardInterrupt):
            sync.sync(client)
    client.logout()
    # the first batch is committed (and last_uid with it); nothing later was committed
    assert count(desk, Inbound) == 2
    with desk.sessions() as session:
        assert session.scalar(select(MailboxState.last_uid)) == 2

    client = connect(config.imap)
    try:
        assert sync.sync(client) == 3  # the stored two are moved, not stored again
    finally:
        client.logout()
    assert count(desk, Inbound) == 5
    assert folder_count(desk, "INBOX") == 0


def test_a_batch_parsed_in_worker_processes_is_processed_like_one_parsed_here(desk):
    desk.config = with_overrides(desk.config, limits={"max_message_bytes": 4000})
    for n in range(PARALLEL_MIN + 2):
        desk.write("ivanov@zavod.example", f"Обращение {n}", "Не запускается АРМ диспетчера.")
    desk.write("ivanov@zavod.example", "Большое письмо", "x" * 5000)  # too large: quarantined
    processor = _stored_with_a_worker(desk)
    try:
        result = processor.run_pending()
    finally:
        processor.close()

    assert (result.processed, result.quarantined) == (PARALLEL_MIN + 2, 1)
    assert count(desk, Request) == PARALLEL_MIN + 2
    with desk.sessions() as session:
        item = session.scalar(select(Quarantine))
        assert item.stage == "parse" and "too large" in item.error
    assert count(desk, Inbound, Inbound.status == "pending") == 0


def test_one_batch_sees_what_its_earlier_messages_created(desk):
    """A batch is written in one flush; each message still sees the ones before it."""
    first = desk.write("sidorov@zavod.example", "Не запускается АРМ", "Сидоров Сидор Сидорович")
    desk.write("sidorov@zavod.example", "Ещё подробности", "Вот лог.",
               headers={"In-Reply-To": f"<{first}>", "References": f"<{first}>"})
    desk.write("sidorov@zavod.example", "ТП-2026-000001: и ещё", "Перезагрузка не помогла.")
    for n in range(6):
        desk.write("sidorov@zavod.example", f"Другой вопрос {n}", "Как настроить отчёт?")
    assert desk.run().processed == 9  # one batch

    with desk.sessions() as session:
        requests = session.scalars(select(Request).order_by(Request.id)).all()
        assert [r.number for r in requests] == [f"ТП-2026-{n:06d}" for n in range(1, 8)]
        trail = session.scalars(select(Message.request_id).where(Message.direction == "in")
                                .order_by(Message.id)).all()
        assert trail[:3] == [requests[0].id] * 3  # the follow-ups found the request of the batch
        assert len(session.scalars(select(Contact).where(
            Contact.email == "sidorov@zavod.example")).all()) == 1
        assert {r.contact_id for r in requests} == {requests[0].contact_id}
    acks = [m for m in desk.new_mail() if "sidorov@zavod.example" in m.rcpt_tos
            and m.parsed()["Auto-Submitted"]]
    assert len(acks) == desk.config.support.ack_limit_per_hour  # the rate limit counted the batch


def test_a_batch_threads_its_answers_under_its_own_mail_not_yet_written(desk):
    """A batch's outgoing mail is written after its flush; a later message of the same batch
    still answers in the thread that mail started (§2–4: asked for contact details, then
    acknowledged once they came)."""
    first = desk.write("someone@gmail.example", "Вопрос", "Как выполнить привязку объекта?")
    desk.write("someone@gmail.example", "ТП-2026-000001: данные",
               "Организация: ООО Тепловые сети\nФИО: Смирнова Анна Сергеевна")
    assert desk.run().processed == 2  # one batch

    ask, ack = desk.inbox()["someone@gmail.example"]
    assert "наименование вашей организации" in ask.parsed().get_body(("plain",)).get_content()
    asked = ask.parsed()["Message-ID"].strip("<>")
    references = ack.parsed()["References"].split()
    assert f"<{first}>" in references and f"<{asked}>" in references
    with desk.sessions() as session:
        trail = session.execute(select(Message.kind, Outbox.kind).join(
            Outbox, Message.outbox_id == Outbox.id).order_by(Message.id)).all()
    assert [kind for kind, _ in trail] == [kind for _, kind in trail]  # each row has its trail
    assert [kind for kind, _ in trail][::2] == ["ask_contact_info", "ack"]


def test_a_batch_searches_the_known_errors_of_its_op3_mails_in_a_few_statements(desk):
    """§4 ОП3: the known errors are searched for each new ОП3 request; a batch asks for all of
    them together (the analysis of the texts, their candidates, and once more for the short
    ones that found too little: mailbot/kb/search.py), and not for its ОП1 mail."""
    desk.add_incident("INC-000045", "АРМ не запускается после обновления драйверов",
                      "Сбой при запуске АРМ диспетчера после обновления драйверов",
                      "Переустановите драйвер ключа версии 3.2 и перезапустите службу.")
    for n in range(3):
        desk.write("ivanov@zavod.example", f"Сбой {n}: АРМ не запускается",
                   "После обновления драйверов АРМ диспетчера не запускается, критический сбой.")
    desk.write("ivanov@zavod.example", "Вопрос", "Как выгрузить отчёт в Excel?")
    searches = []

    class Watched(psycopg.Cursor):  # the search's SQL runs on the session's psycopg connection
        def execute(self, query, params=None, **kwargs):
            if "websearch_to_tsquery" in query:
                searches.append(("analysis", len(params["texts"])))
            elif "incident_title_words" in query:
                searches.append(("candidates", len(params["ns"])))
            return super().execute(query, params, **kwargs)

    def watch(dbapi_connection, *_args) -> None:
        dbapi_connection.cursor_factory = Watched

    engine = desk.sessions.kw["bind"]
    event.listen(engine, "checkout", watch)
    try:
        assert desk.run().processed == 4
    finally:
        event.remove(engine, "checkout", watch)
    assert searches[0] == ("analysis", 3)  # the three ОП3 mails together
    assert [kind for kind, _ in searches[1:]] in (["candidates"], ["candidates"] * 2)
    assert all(texts <= 3 for _, texts in searches)
    with desk.sessions() as session:
        levels = session.scalars(select(Request.level).order_by(Request.id)).all()
    assert levels == [3, 3, 3, 1]
    notices = [m.parsed().get_body(("plain",)).get_content() for m in desk.new_mail()
               if m.rcpt_tos == [desk.config.support.tp1_address]]
    assert ["[INC-000045] АРМ не запускается" in text for text in notices] == [True, True, True, False]


def test_a_message_that_fails_in_the_workflow_is_quarantined_and_the_batch_goes_on(desk, monkeypatch):
    new_request = Intake.new_request

    def failing(self, inbound_id, mail, verdict, channel):
        if "сбой обработки" in mail.subject:
            raise RuntimeError("simulated fault")
        return new_request(self, inbound_id, mail, verdict, channel)

    monkeypatch.setattr(Intake, "new_request", failing)
    for subject in ("Первое", "сбой обработки", "Третье"):
        desk.write("ivanov@zavod.example", subject, "Не запускается АРМ.")
    result = desk.run()

    assert (result.processed, result.quarantined) == (2, 1)
    with desk.sessions() as session:
        item = session.scalar(select(Quarantine))
        assert item.stage == "workflow" and "simulated fault" in item.error
        numbers = session.scalars(select(Request.number).order_by(Request.id)).all()
    assert numbers == ["ТП-2026-000001", "ТП-2026-000002"]  # no gap for the failed one
    assert sorted(m.parsed()["Subject"].split("] ")[1] for m in desk.new_mail()
                  if "ivanov@zavod.example" in m.rcpt_tos) == ["Первое", "Третье"]


def test_a_message_that_fails_midway_leaves_no_events_and_the_others_keep_theirs(desk, monkeypatch):
    new_request = Intake.new_request

    def failing(self, inbound_id, mail, verdict, channel):
        message = new_request(self, inbound_id, mail, verdict, channel)  # its events recorded
        if "сбой обработки" in mail.subject:
            raise RuntimeError("simulated fault")
        return message

    monkeypatch.setattr(Intake, "new_request", failing)
    for subject in ("Первое", "сбой обработки", "Третье"):
        desk.write("ivanov@zavod.example", subject, "Не запускается АРМ.")
    assert (desk.run().processed, count(desk, Quarantine)) == (2, 1)

    with desk.sessions() as session:
        requests = session.scalars(select(Request).order_by(Request.id)).all()
        kinds = {r.subject: session.scalars(select(Event.kind).where(Event.request_id == r.id)
                                            .order_by(Event.id)).all() for r in requests}
        assert session.scalar(select(func.count()).select_from(Event)
                              .where(Event.request_id.is_(None))) == 0
        mailed = session.execute(select(Outbox.request_id, Message.request_id).join(
            Message, Message.outbox_id == Outbox.id)).all()
    assert [r.number for r in requests] == ["ТП-2026-000001", "ТП-2026-000002"]
    assert kinds == {subject: ["created", "identified", "status"]  # no staff to assign
                     for subject in ("Первое", "Третье")}
    # the failed message's acknowledgement and staff notice went with it
    assert sorted(mailed) == sorted((r.id, r.id) for r in requests for _ in ("ack", "notice"))


def test_mail_parsed_ahead_is_taken_from_the_workers_not_read_again():
    raws = {n: (f"From: c{n}@zavod.example\r\nSubject: Обращение {n}\r\nMessage-ID: <a{n}@zavod>\r\n"
                f"\r\nНе запускается АРМ.\r\n").encode() for n in range(1, PARALLEL_MIN + 2)}
    pool = ParsePool(ParseOptions(), workers=1)
    read: list[int] = []

    def read_many(ids: list[int]) -> dict[int, bytes]:
        read.extend(ids)
        return {i: raws[i] for i in ids}

    try:
        pool.start(wait=True)
        pool.ahead(raws)  # as the watcher does right after its commit
        mails = [parse() for parse in pool.parsers(list(raws), read_many)]
    finally:
        pool.close()
    assert read == []
    assert [m.subject for m in mails] == [f"Обращение {n}" for n in raws]


def test_files_of_mail_stay_in_the_raw_mail_and_are_read_back_from_it(desk):
    logo = b"\x89PNG the company logo in every signature"
    mails = PARALLEL_MIN + 1
    for n in range(mails):
        desk.write("ivanov@zavod.example", f"Обращение {n}", "Не запускается АРМ.",
                   attachments=(("logo.png", logo), (f"журнал-{n}.log", f"строка {n}\n".encode())))
    processor = _stored_with_a_worker(desk)
    try:
        processor.parse_ahead(_read_all_pending(desk))  # most are parsed by the worker
        assert processor.run_pending().processed == mails
    finally:
        processor.close()

    assert count(desk, AttachmentRow) == 2 * mails
    assert count(desk, StoredFile) == 0  # not stored a second time
    with desk.sessions() as session, binary_cursor(session) as cursor:
        rows = session.execute(select(AttachmentRow.sha256, AttachmentRow.size, Message.inbound_id)
                               .join(Message)).all()
        for (sha256, size, _), data in zip(rows, files.read_many(cursor, [(r[0], r[2]) for r in rows])):
            assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256
        assert files.read(cursor, hashlib.sha256(logo).hexdigest(), rows[0].inbound_id) == logo


def test_a_file_that_cannot_be_found_is_named(desk):
    desk.write("ivanov@zavod.example", "Обращение", "Не запускается АРМ.",
               attachments=(("журнал.log", "строка\n".encode()),))
    desk.run()
    missing = hashlib.sha256(b"other").hexdigest()
    with desk.sessions() as session, binary_cursor(session) as cursor:
        inbound_id = session.scalar(select(Inbound.id))
        with pytest.raises(LookupError, match=f"inbound {inbound_id} holds no file {missing}"):
            files.read(cursor, missing, inbound_id)
        with pytest.raises(LookupError, match=f"file {missing} is not in the file store"):
            files.read(cursor, missing, None)


def test_files_without_their_raw_mail_are_refused_not_dropped(desk):
    raw = (b"From: c@zavod.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext\r\n--b\r\n"
           b"Content-Type: application/octet-stream; name=a.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n")
    with desk.sessions() as session, pytest.raises(ValueError, match="kept in their raw mail"):
        record_incoming(session, parse_mail(raw), None, None, MONDAY_MORNING)


def test_a_mail_whose_file_cannot_be_read_fails_with_the_reason_and_the_rest_go_out(desk):
    desk.write("ivanov@zavod.example", "Обращение", "Не запускается АРМ.",
               attachments=(("журнал.log", "строка\n".encode()),))
    processor = _stored_with_a_worker(desk)  # stored and processed, not sent yet
    try:
        assert processor.run_pending().processed == 1
    finally:
        processor.close()
    gone = hashlib.sha256(b"not this file").hexdigest()
    with desk.sessions.begin() as session:  # as if the raw mail no longer held the file
        session.execute(update(AttachmentRow).values(sha256=gone))

    asyncio.run(SmtpSender(desk.config.smtp, desk.sessions, FrozenClock(MONDAY_MORNING)).send_due())

    with desk.sessions() as session:
        rows = {row.kind: row for row in session.execute(
            select(Outbox.kind, Outbox.status, Outbox.last_error))}
        inbound_id = session.scalar(select(Inbound.id))
    assert rows["ack"].status == "sent"
    assert rows["staff_new_request"].status == "failed"
    assert rows["staff_new_request"].last_error == f"cannot compose: inbound {inbound_id} holds no file {gone}"
    assert [m.rcpt_tos for m in desk.new_mail()] == [["ivanov@zavod.example"]]


def _sync(desk: Desk, sync: FolderSync) -> None:
    """One sync of ``sync``'s folder over a connection of its own."""
    client = connect(desk.config.imap)
    try:
        sync.sync(client)
    finally:
        client.logout()


def _stored_with_a_worker(desk: Desk) -> Processor:
    """The INBOX synced into ``inbound``; a processor with one parsing process, up."""
    _sync(desk, FolderSync(desk.config.imap, "INBOX", desk.sessions))
    processor = Processor(desk.config, desk.sessions, FrozenClock(MONDAY_MORNING), parse_workers=1)
    processor.parsing.start(wait=True)
    return processor


def _read_all_pending(desk: Desk) -> dict[int, bytes]:
    with desk.sessions() as session:
        return {row.id: bytes(row.raw) for row in session.execute(
            select(Inbound.id, Inbound.raw).where(Inbound.status == "pending"))}


def test_mail_handed_over_while_the_workers_start_is_parsed_once_they_are_up():
    raws = {n: f"From: c{n}@zavod.example\r\nSubject: n{n}\r\n\r\nтекст\r\n".encode()
            for n in range(PARALLEL_MIN)}
    pool = ParsePool(ParseOptions(), workers=1)
    try:
        pool.ahead(raws)  # starts the workers, does not wait for them
        assert pool.started
        mails = [parse() for parse in pool.parsers(list(raws), lambda ids: {})]
        assert [m.subject for m in mails] == [f"n{n}" for n in raws]
        lone = pool.parsers([7], lambda ids: {7: b"From: a@b.example\r\nSubject: one\r\n\r\nx\r\n"})
        assert lone[0]().subject == "one"  # a lone message too: every parse is in a worker
    finally:
        pool.close()


def test_parsing_processes_run_below_the_daemons_priority():
    pool = ParsePool(ParseOptions(), workers=1)
    try:
        pool.start(wait=True)
        assert [psutil.Process(pid).nice() for pid in pool.workers.pids] == [
            min(19, os.nice(0) + WORKER_NICENESS)]
    finally:
        pool.close()


def test_a_message_too_large_is_refused_alone_not_with_the_mail_parsed_beside_it():
    raws = {n: f"From: c{n}@zavod.example\r\nSubject: n{n}\r\n\r\n{'текст ' * (300 if n == 2 else 1)}\r\n"
            .encode() for n in range(PARALLEL_MIN + 1)}
    pool = ParsePool(ParseOptions(max_message_bytes=1000), workers=1)
    try:
        pool.start(wait=True)
        pool.ahead(raws)  # one chunk
        parses = pool.parsers(list(raws), lambda ids: {})
        with pytest.raises(MailTooLarge):
            parses[2]()
        assert [parses[n]().subject for n in raws if n != 2] == ["n0", "n1", "n3", "n4"]
    finally:
        pool.close()


def test_a_folder_sync_says_how_much_new_mail_it_found_before_fetching_it(desk):
    for n in range(PARALLEL_MIN + 1):
        desk.write("ivanov@zavod.example", f"Обращение {n}", "Не запускается АРМ.")
    found, stored = [], []
    sync = FolderSync(desk.config.imap, "INBOX", desk.sessions,
                      on_stored=lambda new: stored.append(len(new)),
                      on_found=lambda count: found.append((count, sum(stored))))
    for _ in range(2):  # the second sync finds nothing new
        _sync(desk, sync)
    assert found == [(PARALLEL_MIN + 1, 0)]  # told before anything was stored
    assert sum(stored) == PARALLEL_MIN + 1


def test_parsing_processes_start_as_soon_as_mail_is_coming():
    pool = ParsePool(ParseOptions(), workers=1)
    try:
        pool.expect(0)
        assert not pool.started
        pool.expect(1)
        assert pool.started
    finally:
        pool.close()


# ---------------------------------------------------------------- live mail and a backlog

def _customer_mail(n: int, extra: str = "") -> bytes:
    return (f"From: c{n}@zavod.example\r\nTo: support@tecon.example\r\nSubject: Вопрос {n}\r\n"
            f"Message-ID: <m{n}@zavod.example>\r\n{extra}MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nКак настроить отчёт?\r\n").encode()


def _backlog_and_then(desk: Desk, live: bytes) -> tuple[Processor, dict[int, bytes]]:
    """150 mails pending (a backlog), then one live mail stored as the watcher stores it."""
    from mailbot.transport.store import RawMail, store

    with desk.sessions.begin() as session:
        store(session, [RawMail(_customer_mail(n), "test") for n in range(150)])
    with desk.sessions.begin() as session:
        new = store(session, [RawMail(live, "test")])
    processor = Processor(desk.config, desk.sessions, FrozenClock(MONDAY_MORNING), parse_workers=1)
    processor.parse_ahead(new)
    return processor, new


def test_a_new_mail_is_answered_before_a_backlog_that_drains(desk):
    processor, new = _backlog_and_then(desk, _customer_mail(1000))
    try:
        assert processor.run_batch().processed == 1  # its own batch, first
    finally:
        processor.close()
    (live,) = new
    with desk.sessions() as session:
        assert session.get(Inbound, live).status == "processed"
        assert session.scalar(select(func.count()).select_from(Inbound)
                              .where(Inbound.status == "pending")) == 150
        (ack,) = [row for row in session.scalars(select(Outbox))
                  if row.recipients == ["c1000@zavod.example"]]
    assert ack.next_attempt_at < MONDAY_MORNING  # claimed before the backlog's mail


def test_a_new_mail_that_answers_a_mail_of_the_backlog_waits_for_it_in_its_turn(desk):
    processor, new = _backlog_and_then(desk, _customer_mail(
        1000, "In-Reply-To: <m149@zavod.example>\r\nReferences: <m149@zavod.example>\r\n"))
    try:
        assert processor.run_batch().processed == 100  # the backlog's first batch, in order
    finally:
        processor.close()
    (live,) = new
    with desk.sessions() as session:
        assert session.get(Inbound, live).status == "pending"


def test_live_mail_cuts_a_backlog_batch_short_and_goes_next(desk, monkeypatch):
    from mailbot.transport.store import RawMail, store

    with desk.sessions.begin() as session:
        store(session, [RawMail(_customer_mail(n), "test") for n in range(150)])
    processor = Processor(desk.config, desk.sessions, FrozenClock(MONDAY_MORNING), parse_workers=1)
    process, calls = processor.process, []

    def live_mail_arrives_on_the_fifth(*args):
        calls.append(args[1].id)
        if len(calls) == 5:  # the watcher stores a new mail while the batch runs
            with desk.sessions.begin() as session:
                processor.parse_ahead(store(session, [RawMail(_customer_mail(1000), "test")]))
        return process(*args)

    monkeypatch.setattr(processor, "process", live_mail_arrives_on_the_fifth)
    try:
        assert processor.run_batch().processed == 5  # the batch stops at its next message
        assert processor.run_batch().processed == 1  # the live mail, next
        assert processor.run_batch().processed == 100  # the backlog goes on where it stopped
    finally:
        processor.close()
    with desk.sessions() as session:
        answered = list(dict.fromkeys(  # the customers in the order their first answer was queued
            to for (to,) in session.scalars(select(Outbox.recipients).order_by(Outbox.id))
            if to.startswith("c")))
    assert answered[:8] == [*(f"c{n}@zavod.example" for n in range(5)), "c1000@zavod.example",
                            "c5@zavod.example", "c6@zavod.example"]


def test_a_big_mail_is_read_back_whole_in_slices(desk, monkeypatch):
    """Read in one piece, libpq would hold the mail twice more (its buffer and its result)."""
    from mailbot import processor as processing
    from mailbot.transport.store import RawMail, store

    monkeypatch.setattr(processing, "READ_SLICE", 1000)
    small, big = _customer_mail(1), _customer_mail(2, "X-Padding: " + "ж" * 3000 + "\r\n")
    with desk.sessions.begin() as session:
        new = store(session, [RawMail(small, "test"), RawMail(big, "test")])
    with desk.sessions() as session:
        read = processing._read_raw(session, list(new))
    assert sorted(map(bytes, read.values()), key=len) == [small, big]


def test_the_connection_that_stored_a_big_mail_is_closed_not_pooled(desk, monkeypatch):
    """libpq keeps the buffer it grew to send the mail for as long as the connection lives."""
    from mailbot.transport import store as storing

    monkeypatch.setattr(storing, "BIG_MAIL", 1000)
    big = _customer_mail(2, "X-Padding: " + "x" * 3000 + "\r\n")
    with desk.sessions.begin() as session:
        new = storing.store(session, [storing.RawMail(big, "test")])
        connection = session.connection().connection.dbapi_connection
    assert connection.closed
    with desk.sessions() as session:
        assert session.get(Inbound, *new).raw == big
