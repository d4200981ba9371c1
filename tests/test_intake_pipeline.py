"""The intake pipeline under load: several FETCH batches, and batches parsed in worker processes."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mailbot.clock import FrozenClock
from mailbot.config import with_overrides
from mailbot.models import Inbound, MailboxState, Quarantine, Request
from mailbot.processor import PARALLEL_MIN, Processor
from mailbot.transport.imap import FolderSync, connect
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
    assert woken == [2, 2, 1]  # the processor is woken after each batch is committed and moved
    assert count(desk, Inbound) == 5
    assert folder_count(desk, "INBOX") == 0
    assert folder_count(desk, "Processed") == 5
    with desk.sessions() as session:
        assert session.scalar(select(MailboxState.last_uid)) == 5


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
    sync = FolderSync(desk.config.imap, "INBOX", desk.sessions)
    client = connect(desk.config.imap)
    try:
        sync.sync(client)
    finally:
        client.logout()

    processor = Processor(desk.config, desk.sessions, FrozenClock(MONDAY_MORNING), parse_workers=1)
    try:
        result = processor.run_pending()
        assert processor._pool is not None  # the batch went through the worker processes
    finally:
        processor.close()

    assert (result.processed, result.quarantined) == (PARALLEL_MIN + 2, 1)
    assert count(desk, Request) == PARALLEL_MIN + 2
    with desk.sessions() as session:
        item = session.scalar(select(Quarantine))
        assert item.stage == "parse" and "too large" in item.error
    assert count(desk, Inbound, Inbound.status == "pending") == 0
