"""IMAP intake: fetch new mail, commit it to ``inbound``, then move it to ``Processed``.

The order is the whole point: bytes are committed to the database *before*
anything is changed on the server. The last UID and UIDVALIDITY of each folder
live in ``mailbox_state``, so flags are never the source of truth (mail read
by a person in another client is still imported). A crash after the commit
and before the move leaves stored mail in the folder; the next sync moves it
without storing it again. A UIDVALIDITY change triggers a full resync that the
Message-ID deduplication in ``inbound`` makes harmless.
"""
from __future__ import annotations

import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from .. import metrics
from ..config import ImapConfig, OAuth2Config
from ..register.models import MailboxState
from ..supervision import Backoff, DatabaseHealth, Retry
from . import oauth
from .store import RawMail, dedup_key, store, thread_keys

log = logging.getLogger(__name__)

NETWORK_ERRORS = (OSError, IMAPClientError, socket.timeout, ssl.SSLError)
FIRST_BATCH = 10  # messages in the first FETCH of a sync (later ones: imap.fetch_batch)
RECONNECT = (1.0, 5.0)  # seconds: first and longest wait between connection attempts
LEASE_WAIT = 0.5  # seconds between two looks at the lease of a folder another daemon watches
LOGIN_RETRY = (30.0, 300.0)  # a refused login is retried slowly (the server may lock the account)


def connect(config: ImapConfig, oauth2: OAuth2Config | None = None) -> IMAPClient:
    """A logged-in client for the configured account (by OAuth2 when ``config.auth`` says so:
    a refused token is replaced once, then :class:`~.oauth.AuthRefused`)."""
    client = open_client(config)
    try:
        if config.auth == "oauth2":
            source = oauth.token_source(oauth2 or OAuth2Config(), config.refresh_token)
            oauth.login_with_retry(source, lambda token: oauth_login(client, config, token, source),
                                   (LoginError,), f"IMAP server {config.host}")
        else:
            client.login(config.username, config.password)
    except BaseException:
        client.shutdown()
        raise
    return client


def open_client(config: ImapConfig) -> IMAPClient:
    """A connected client, before the login (after STARTTLS when configured)."""
    client = IMAPClient(config.host, port=config.port, ssl=config.ssl, timeout=60)
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        # imapclient sets imaplib's debug level to 5 so that imaplib logs through it, and
        # imaplib then formats every response, whole messages included, for a log line
        # nobody reads: a third of the CPU of fetching mail.
        client._imap.debug = 0
    if config.starttls and not config.ssl:
        client.starttls()
    return client


def oauth_login(client: IMAPClient, config: ImapConfig, token: str,
                source: oauth.TokenSource) -> None:
    """AUTHENTICATE with the token (XOAUTH2 or OAUTHBEARER); a refusal is a LoginError.

    After a refusal the server sends an error challenge, which the empty response ends.
    """
    mechanism = source.config.mechanism
    answers = iter([oauth.sasl_response(mechanism, config.username, token, config.host,
                                        config.port)])
    try:
        client._imap.authenticate(mechanism, lambda challenge: next(answers, b""))
    except imaplib.IMAP4.error as exc:
        raise LoginError(str(exc)) from None


class FolderSync:
    """Keeps one IMAP folder in step with ``inbound``.

    ``on_found`` hears how many new messages the folder has, before they are
    fetched (the daemon starts its parsing processes for a big delivery);
    ``on_stored`` hears of each commit (the new rows' bytes by id), before the
    messages are moved: the daemon wakes the processor and starts parsing them.
    """

    def __init__(self, config: ImapConfig, folder: str, sessions: sessionmaker[Session],
                 on_stored: Callable[[dict[int, bytes]], None] = lambda new: None,
                 on_found: Callable[[int], None] = lambda count: None,
                 role: str = "support", oauth2: OAuth2Config | None = None) -> None:
        self.config = config
        self.oauth2 = oauth2  # where tokens come from when config.auth is "oauth2"
        self.folder = folder
        self.role = role  # the mailbox's role, stored with its mail (inbound.mailbox)
        self.sessions = sessions
        self.on_stored = on_stored
        self.on_found = on_found
        self.name = f"{config.username}@{config.host}/{folder}"
        self._received = metrics.MAIL_RECEIVED.labels(self.name)
        self._stored = metrics.MAIL_STORED.labels(self.name)
        self._last_sync = metrics.IMAP_LAST_SYNC.labels(self.name)

    def sync(self, client: IMAPClient) -> int:
        """Store every message not stored yet and move it away; the number stored."""
        stored = self._sync(client)
        self._last_sync.set_to_current_time()
        return stored

    def _sync(self, client: IMAPClient) -> int:
        uidvalidity = client.select_folder(self.folder)[b"UIDVALIDITY"]
        announced_new_mail(client)  # the count SELECT reports is not news
        last_uid = self._last_uid(uidvalidity)
        uids = sorted(client.search("ALL"))
        self._move(client, [uid for uid in uids if uid <= last_uid])
        new = [uid for uid in uids if uid > last_uid]
        if new:
            self.on_found(len(new))
        batches = list(_chunks(new, self.config.fetch_batch))
        if len(batches) < 2:  # nothing to overlap
            stored = 0
            for batch in batches:
                mails = self._fetch(client, batch)
                stored += self._commit(mails, uidvalidity, batch)
                self._move(client, batch)
            return stored
        # FETCH the next batch while a helper thread commits this one; a batch is moved
        # only after its commit, and one commit at a time keeps mailbox_state in order
        stored, known, behind = 0, new[-1], []
        with ThreadPoolExecutor(1, thread_name_prefix=f"store:{self.folder}") as committer:
            pending = None
            for index, batch in enumerate(batches):
                mails = self._fetch(client, batch)
                if pending is not None:
                    stored += pending[1].result()
                    self._move(client, pending[0])
                pending = (batch, committer.submit(self._commit, mails, uidvalidity, batch))
                waiting = [uid for later in batches[index:] for uid in later]  # not committed yet
                stored, known = self._live(client, known, stored, waiting, behind)
            stored += pending[1].result()
            self._move(client, pending[0])
        for batch in _chunks(behind, self.config.fetch_batch):
            stored += self._store_now(client, self._fetch(client, batch), batch)
        return stored

    def _live(self, client: IMAPClient, known: int, stored: int, waiting: list[int],
              behind: list[int]) -> tuple[int, int]:
        """Mail that came in during a long sync is stored at once, before the rest of it: a
        new mail does not wait for a backlog. ``last_uid`` stays below the backlog not yet
        stored; a crash before the move only fetches it again (stored once: Message-ID).

        Not a mail that answers one of the backlog's (``waiting``, by In-Reply-To or
        References): processed before the mail it answers, it would open a request of its
        own. Its UID goes ``behind`` the backlog, stored after it, in order.
        """
        if not announced_new_mail(client):
            return stored, known
        live = [uid for uid in client.search(["UID", f"{known + 1}:*"]) if uid > known]
        backlog: set[str] | None = None  # the Message-IDs of ``waiting``, read when needed
        for batch in _chunks(live, self.config.fetch_batch):
            mails = self._fetch(client, batch)
            answering = {mail.uid: _answered_ids(mail.raw) for mail in mails}
            if any(answering.values()):
                backlog = self._message_ids(client, waiting) if backlog is None else backlog
            later = {uid for uid, ids in answering.items() if ids & (backlog or set())}
            if later:
                log.info("%s: %d new mail(s) answer mail still being fetched: stored after it",
                         self.name, len(later))
            behind += sorted(later)
            now = [mail for mail in mails if mail.uid not in later]
            stored += self._store_now(client, now, [mail.uid for mail in now])
        return stored, max(live, default=known)

    def _store_now(self, client: IMAPClient, mails: list[RawMail], uids: list[int]) -> int:
        """Store these mails in a transaction of their own (live mail) and move them."""
        if not mails:
            return 0
        with self.sessions.begin() as session:
            new = store(session, mails)
        self._received.inc(len(mails))
        self._stored.inc(len(new))
        self.on_stored(new)
        self._move(client, uids)
        return len(new)

    @staticmethod
    def _message_ids(client: IMAPClient, uids: list[int]) -> set[str]:
        """The Message-IDs of these messages (their headers only), as ``mid:`` keys."""
        if not uids:
            return set()
        fetched = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        return {dedup_key(value) for data in fetched.values() for value in data.values()
                if isinstance(value, bytes) and value.lower().startswith(b"message-id")}

    def _fetch(self, client: IMAPClient, batch: list[int]) -> list[RawMail]:
        fetched = client.fetch(batch, ["BODY.PEEK[]"])
        return [RawMail(fetched[uid][b"BODY[]"], f"imap:{self.name}", uid, self.role)
                for uid in batch if uid in fetched]

    def _commit(self, mails: list[RawMail], uidvalidity: int, batch: list[int]) -> int:
        """Store the batch and advance ``last_uid`` in one transaction; the number stored."""
        with self.sessions.begin() as session:
            new = store(session, mails)
            self._save_state(session, uidvalidity, max(batch))
        self._received.inc(len(mails))
        self._stored.inc(len(new))
        mails.clear()  # the bytes are in the database; don't keep them while the next FETCH runs
        self.on_stored(new)
        return len(new)

    def _last_uid(self, uidvalidity: int) -> int:
        with self.sessions() as session:
            state = session.get(MailboxState, self.name)
        if state is not None and state.uidvalidity == uidvalidity:
            return state.last_uid
        if state is not None:
            log.warning("%s: UIDVALIDITY changed (%s -> %s), resyncing by Message-ID",
                        self.name, state.uidvalidity, uidvalidity)
        with self.sessions.begin() as session:  # remember the new epoch, even with no mail
            self._save_state(session, uidvalidity, 0)
        return 0

    def _save_state(self, session: Session, uidvalidity: int, last_uid: int) -> None:
        values = {"mailbox": self.name, "uidvalidity": uidvalidity, "last_uid": last_uid}
        session.execute(insert(MailboxState).values(values).on_conflict_do_update(
            index_elements=["mailbox"], set_={**values, "updated_at": func.now()}))

    def _move(self, client: IMAPClient, uids: list[int]) -> None:
        target = self.config.processed_folder
        if not uids or not target or target == self.folder:
            return
        if not client.folder_exists(target):
            client.create_folder(target)
        if client.has_capability("MOVE"):
            client.move(uids, target)
        else:
            client.copy(uids, target)
            client.delete_messages(uids)
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(uids)
            else:
                client.expunge()


class ImapWatcher:
    """Runs one folder forever: sync, then IDLE (or poll), reconnecting with backoff.

    No error ends it. The server going away is logged once, and once more when
    it is back; while the database is unreachable the watcher keeps its IMAP
    connection and tries the sync again every few seconds (until the daemon's
    lease of the folder goes with its connection): the mail stays in the
    folder until it is committed. It watches only while ``leased()`` says the
    daemon holds the folder's lease (:mod:`mailbot.leases`), and looks again
    every ``LEASE_WAIT`` seconds while another daemon does. Any other error is logged (with its
    traceback the first time) and the watcher starts over after a backoff.
    """

    def __init__(self, sync: FolderSync, stop: threading.Event, health: DatabaseHealth,
                 leased: Callable[[], bool] = lambda: True) -> None:
        self.sync = sync
        self.leased = leased  # whether this daemon holds the folder's lease (mailbot.leases)
        self.config = sync.config
        self.stop = stop
        self.retry = Retry(f"IMAP watcher {sync.name}", health)
        self._unreachable: str | None = None  # why the server could not be reached
        self.connected = False  # logged in now (/readyz)
        self._up = metrics.IMAP_UP.labels(sync.name)
        self._up.set(0)

    def run(self) -> None:
        reconnect, login = Backoff(*RECONNECT), Backoff(*LOGIN_RETRY)
        while not self.stop.is_set():
            if not self.leased():  # another daemon watches the folder
                self.stop.wait(LEASE_WAIT)
                continue
            client = None
            try:
                client = connect(self.config, self.sync.oauth2)
                self._reached()
                reconnect.reset()
                login.reset()
                self._watch(client)
            except (LoginError, oauth.AuthRefused, oauth.TokenError) as exc:
                delay = login.next()
                log.error("%s: cannot log in (%s); the mail waits on the server, retrying in "
                          "%.0f s", self.sync.name, exc, delay)
                self.stop.wait(delay)
            except NETWORK_ERRORS as exc:
                self._lost(exc)
                self.stop.wait(reconnect.next())
            except Exception as exc:
                self.stop.wait(self.retry.failed(exc))
            finally:
                self.connected = False
                self._up.set(0)
                if client is not None:
                    _logout(client)

    def _lost(self, exc: BaseException) -> None:
        if self._unreachable is None:
            log.warning("%s: IMAP server unavailable (%s: %s); reconnecting every few seconds",
                        self.sync.name, type(exc).__name__, exc)
        self._unreachable = f"{type(exc).__name__}: {exc}"

    def _reached(self) -> None:
        self.connected = True
        self._up.set(1)
        if self._unreachable is not None:
            log.info("%s: IMAP server available again", self.sync.name)
            self._unreachable = None

    def _watch(self, client: IMAPClient) -> None:
        use_idle = self.config.idle and client.has_capability("IDLE")
        log.info("%s: watching the folder", self.sync.name)
        while not self.stop.is_set():
            if not self.leased():
                log.info("%s: lease lost, another daemon watches the folder", self.sync.name)
                return
            try:
                self.sync.sync(client)
            except NETWORK_ERRORS:
                raise
            except Exception as exc:  # the database, most likely: the mail stays in the folder
                self.stop.wait(self.retry.failed(exc))
                continue
            self.retry.succeeded()
            if announced_new_mail(client):
                continue
            if use_idle:
                self._idle(client)
            else:
                self._poll_wait()

    def _poll_wait(self) -> None:
        """Wait ``poll_interval`` seconds, or less when the daemon stops or loses the lease."""
        deadline = time.monotonic() + self.config.poll_interval
        while self.leased() and (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(LEASE_WAIT, left)):
                return

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the server reports a change, the timeout or a stop."""
        client.idle()
        try:
            if announced_new_mail(client):
                return
            waited = 0.0
            while not self.stop.is_set() and waited < self.config.idle_timeout and self.leased():
                if any(_is_change(r) for r in client.idle_check(timeout=1.0)):
                    return
                waited += 1.0
        finally:
            client.idle_done()


def announced_new_mail(client: IMAPClient) -> bool:
    """Whether the server sent ``* n EXISTS`` during our last commands.

    Mail that arrives between our SEARCH and the start of IDLE is announced in
    the responses to those commands, which imaplib keeps aside; without this
    check it would wait for the next change.
    """
    return client._imap.untagged_responses.pop("EXISTS", None) is not None


def _is_change(response: tuple) -> bool:
    return len(response) > 1 and response[1] in (b"EXISTS", b"RECENT")


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection may already be gone; nothing to save
        pass


def _answered_ids(raw: bytes) -> set[str]:
    """The Message-IDs a mail names in In-Reply-To and References, as ``mid:`` keys."""
    return {key for key in thread_keys(raw, "") if key.startswith("mid:")}


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    """Batches of ``size``; the first and the last smaller: a backlog's first mail is answered
    soon, and its newest (mail that came in while it was fetched) is live mail (the processor
    takes a small commit before a backlog)."""
    if not items:
        return
    size = max(size, 1)
    small = min(size, FIRST_BATCH)
    last = max(small, len(items) - small)  # where the last small batch starts
    yield items[:small]
    for start in range(small, last, size):
        yield items[start:min(start + size, last)]
    if last < len(items):
        yield items[last:]
