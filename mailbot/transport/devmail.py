"""The embedded development mail server (mail-devel: IMAP + SMTP + a web mail UI).

Used when no IMAP server is configured, so ``mailbot run`` works out of the
box: every address on it is a mailbox (multi-user mode, one password), the bot
reads ``support.address`` and ``support.tp2_address`` (ОП4) and sends through its SMTP
port, and a person reads and writes mail in the browser. mail-devel keeps mail in memory only.

Its web page talks to the server over a websocket that reads, sends and moves
mail for every address. Browsers let any web site open a websocket to
127.0.0.1 (the same-origin rule does not cover them), so a page visited while
the server runs could read the mail: the websocket is opened only with the
Origin of the web mail page itself (:func:`guard_websocket`).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Config, MailboxConfig, with_overrides

if TYPE_CHECKING:
    from mail_devel.http import Frontend

log = logging.getLogger(__name__)


class DevMailError(RuntimeError):
    """The embedded mail server could not start (usually: its ports are taken)."""


class DevMailServer:
    """mail-devel running on its own event loop in a background thread."""

    def __init__(self, config: Config, host: str = "127.0.0.1") -> None:
        self.config = config
        self.host = host
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

        dev = self.config.dev
        args = Service.parse([
            "--host", self.host, "--multi-user", "--user", self.config.support.address,
            "--password", dev.password, "--imap-port", str(dev.imap_port),
            "--smtp-port", str(dev.smtp_port), "--http-port", str(dev.http_port)])
        service = await Service.init(args)
        guard_websocket(service.frontend, page_origins(self.host, dev.http_port))
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with service.start():
            self._ready.set()
            await self._stop.wait()

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
