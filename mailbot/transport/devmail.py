"""The embedded development mail server (mail-devel: IMAP + SMTP + a web mail UI).

Used when no IMAP server is configured, so ``mailbot run`` works out of the
box: every address on it is a mailbox (multi-user mode, one password), the bot
reads ``support.address`` and ``support.tp2_address`` (ОП4) and sends through its SMTP
port, and a person reads and writes mail in the browser.

mail-devel keeps mail in memory only; its mail is kept here under the state
directory (``<state_dir>/devmail``, :class:`MailStore`): saved a moment after
every change and when the server stops, and put back, with each folder's
UIDVALIDITY and UIDs, when it starts. A restarted ``make run`` has the mail of
the walk-through, and the bot's IMAP state (``mailbox_state``) still fits it.
``support.note_address``, when set, is an alias of the bot's mailbox here.

Its web page talks to the server over a websocket that reads, sends and moves
mail for every address. Browsers let any web site open a websocket to
127.0.0.1 (the same-origin rule does not cover them), so a page visited while
the server runs could read the mail: the websocket is opened only with the
Origin of the web mail page itself (:func:`guard_websocket`).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Config, MailboxConfig, with_overrides

if TYPE_CHECKING:
    from mail_devel.http import Frontend
    from mail_devel.mailbox import TestMailboxDict

log = logging.getLogger(__name__)

SAVE_EVERY = 1.0  # seconds between looks for changes to save


class DevMailError(RuntimeError):
    """The embedded mail server could not start (usually: its ports are taken)."""


class DevMailServer:
    """mail-devel running on its own event loop in a background thread."""

    def __init__(self, config: Config, host: str = "127.0.0.1") -> None:
        self.config = config
        self.host = host
        self.store = MailStore(Path(config.state_dir) / "devmail")
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="devmail", daemon=True)

    def start(self, timeout: float = 10.0) -> Config:
        """Start the server; the config pointing IMAP and SMTP at it."""
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            raise DevMailError(f"the development mail server did not start: {self._error} "
                               "(is another mailbot running? the ports are dev.imap_port, "
                               "dev.smtp_port and dev.http_port)")
        dev = self.config.dev
        return with_overrides(
            self.config,
            imap={"host": self.host, "port": dev.imap_port, "ssl": False,
                  "username": self.config.support.address, "password": dev.password,
                  "idle": False, "poll_interval": 1.0,
                  "tp2": MailboxConfig(username=self.config.support.tp2_address,
                                       password=dev.password)},
            smtp={"host": self.host, "port": dev.smtp_port, "ssl": False, "starttls": False})

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from mail_devel.service import Service  # imported late: only the embedded mode needs it

        dev, support = self.config.dev, self.config.support
        aliases = ["--alias", f"{support.note_address}:{support.address}"] if support.note_address else []
        args = Service.parse([
            "--host", self.host, "--multi-user", "--user", support.address,
            "--password", dev.password, "--imap-port", str(dev.imap_port),
            "--smtp-port", str(dev.smtp_port), "--http-port", str(dev.http_port), *aliases])
        service = await Service.init(args)
        guard_websocket(service.frontend, page_origins(self.host, dev.http_port))
        await self.store.restore(service.mailboxes)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with service.start():
            self._ready.set()
            try:
                while not self._stop.is_set():
                    try:
                        await asyncio.wait_for(self._stop.wait(), SAVE_EVERY)
                    except asyncio.TimeoutError:
                        pass
                    await self.store.save(service.mailboxes)
            finally:
                await self.store.save(service.mailboxes)
                service.smtp.stop()  # mail-devel leaves its SMTP thread listening

    def describe(self) -> str:
        dev = self.config.dev
        return (f"development mail server: web mail http://{self.host}:{dev.http_port}/ , "
                f"SMTP {self.host}:{dev.smtp_port}, IMAP {self.host}:{dev.imap_port} "
                f"(any address, password {dev.password!r}); write to {self.config.support.address} "
                f"(ТП2: {self.config.support.tp2_address})")


def page_origins(host: str, port: int) -> frozenset[str]:
    """The Origins of the web mail page: the address it is served on, and localhost."""
    names = {host, "localhost", "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {host}
    return frozenset(f"http://{f'[{name}]' if ':' in name else name}:{port}" for name in names)


def guard_websocket(frontend: Frontend, origins: frozenset[str]) -> None:
    """Make mail-devel's web front end open its websocket only for a page of ``origins``.

    Others get 403 before the upgrade; so does a handshake without Origin (every
    browser sends one; a local program can read the mail over IMAP anyway). The
    front end registers ``self._websocket`` as the handler when it starts: the
    checked handler is put in its place before that.
    """
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = frontend._websocket

    async def checked(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin not in origins:
            log.warning("development mail server: websocket from %s refused (Origin %r)",
                        request.remote, origin)
            raise web.HTTPForbidden(text="the web mail websocket serves only its own page\n")
        return await handler(request)

    frontend._websocket = checked


class MailStore:
    """The development server's mail on disk: ``index.json`` (per account and folder: its
    UIDVALIDITY, its last UID, and each message's UID, date, flags and file) and the messages,
    one file each, named by the SHA-256 of their bytes.

    mail-devel's backend (pymap's ``dict``) has no storage of its own: the folders are
    read and put back through the attributes that hold their UIDVALIDITY and UIDs
    (``_uid_validity``, ``_max_uid``; mail-devel is pinned to 0.18).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._saved: tuple | None = None  # what the mail looked like when last saved

    async def restore(self, mailboxes: TestMailboxDict) -> int:
        """Put the saved mail back; how many messages."""
        from pymap.parsing.message import AppendMessage
        from pymap.parsing.specials.flag import Flag

        index = self._read_index()
        count = 0
        for user, folders in index.get("accounts", {}).items():
            account = await mailboxes.get(user)
            for name, saved in folders.items():
                folder = await account.get_mailbox(name)
                folder._uid_validity = saved["uidvalidity"]
                for item in sorted(saved["messages"], key=lambda m: m["uid"]):
                    raw = (self.directory / "messages" / item["file"]).read_bytes()
                    folder._max_uid = item["uid"] - 1
                    await folder.append(AppendMessage(
                        raw, datetime.fromisoformat(item["date"]),
                        frozenset(Flag(f.encode()) for f in item["flags"])))
                    count += 1
                folder._max_uid = max(folder._max_uid, saved["max_uid"])
        self._saved = await self._fingerprint(mailboxes)
        if count:
            log.info("development mail server: %d message(s) restored from %s", count, self.directory)
        return count

    async def save(self, mailboxes: TestMailboxDict) -> bool:
        """Write the mail down if it changed since the last save; whether it did."""
        fingerprint = await self._fingerprint(mailboxes)
        if fingerprint == self._saved:
            return False
        messages = self.directory / "messages"
        messages.mkdir(parents=True, exist_ok=True)
        accounts: dict = {}
        kept = set()
        for user, name, folder in await self._folders(mailboxes):
            items = []
            async for message in folder.messages():
                raw = bytes(message._content)
                digest = hashlib.sha256(raw).hexdigest()
                if digest not in kept and not (messages / digest).exists():
                    _write_atomically(messages / digest, raw)
                kept.add(digest)
                items.append({"uid": message.uid, "date": message.internal_date.isoformat(),
                              "flags": [bytes(f).decode() for f in message.permanent_flags],
                              "file": digest})
            accounts.setdefault(user, {})[name] = {
                "uidvalidity": folder.uid_validity, "max_uid": folder._max_uid, "messages": items}
        _write_atomically(self.directory / "index.json",
                          json.dumps({"version": 1, "accounts": accounts}).encode())
        for stale in messages.iterdir():
            if stale.name not in kept:
                stale.unlink(missing_ok=True)
        self._saved = fingerprint
        return True

    def _read_index(self) -> dict:
        try:
            return json.loads((self.directory / "index.json").read_text("utf-8"))
        except FileNotFoundError:
            return {}

    @staticmethod
    async def _folders(mailboxes: TestMailboxDict) -> list:
        """(account, folder name, folder) of every folder of every account."""
        found = []
        for user in list(mailboxes.config.set_cache):
            account = mailboxes[user]
            names = ["INBOX"] + sorted(n for n in account._set if n.upper() != "INBOX")
            for name in names:
                found.append((user, name, await account.get_mailbox(name)))
        return found

    async def _fingerprint(self, mailboxes: TestMailboxDict) -> tuple:
        return tuple((user, name, folder.uid_validity, folder._max_uid,
                      folder._mod_sequences.highest)
                     for user, name, folder in await self._folders(mailboxes))


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
