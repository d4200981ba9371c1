"""Serving the board and the monitoring endpoints with uvicorn, in the daemon or alone.

Each is a :class:`Site`: its socket is bound when the process starts (a port
in use is a one-line error then, not a worker dying later), and it is served
on the running event loop, so the daemon's watchdog keeps it alive like its
other workers. uvicorn's signal handling is left out: the daemon (or
``mailbot web``) owns SIGTERM and SIGINT and stops the sites itself.
"""
from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp

from ..clock import Clock
from ..config import Config

if TYPE_CHECKING:
    from ..daemon import Daemon

log = logging.getLogger(__name__)


class ListenError(Exception):
    """A site cannot listen on its address; the message says which and why, in one line."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the process's owner handles signals
        yield


class Site:
    """One ASGI app on one listen address."""

    def __init__(self, name: str, app: ASGIApp, host: str, port: int, url: str,
                 forwarded_allow_ips: tuple[str, ...] = ()) -> None:
        self.name, self.app, self.host, self.port, self.url = name, app, host, port, url
        self.forwarded_allow_ips = forwarded_allow_ips
        self._socket: socket.socket | None = None
        self._server: _Server | None = None

    def bind(self) -> None:
        try:
            self._socket = socket.create_server((self.host, self.port))
        except OSError as error:
            raise ListenError(f"{self.name}: cannot listen on {self.host}:{self.port}: "
                              f"{error.strerror or error}") from None

    async def serve(self) -> None:
        """Serve until :meth:`stop` (binding again if a previous run closed the socket)."""
        if self._socket is None or self._socket.fileno() == -1:
            self.bind()
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5, proxy_headers=bool(self.forwarded_allow_ips),
                                forwarded_allow_ips=list(self.forwarded_allow_ips) or None)
        self._server = _Server(config)
        await self._server.serve(sockets=[self._socket])

    def stop(self) -> None:
        """Ask the server to finish (thread-safe: uvicorn looks at the flag ten times a second)."""
        if self._server is not None:
            self._server.should_exit = True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()


def sites(config: Config, sessions: sessionmaker[Session], clock: Clock,
          daemon: Daemon | None = None, board: bool | None = None) -> list[Site]:
    """The sites the config asks for, bound (``board``: serve the board whatever
    ``web.enabled`` says, as `mailbot web` does). Raises :class:`ListenError`."""
    from .app import Board
    from .monitoring import Monitoring

    found = []
    web, monitoring = config.web, config.monitoring
    if web.enabled if board is None else board:
        found.append(Site("board", Board(config, sessions, clock).app(), web.host, web.port,
                          web.public_url, web.forwarded_allow_ips))
    if monitoring.enabled:
        host = f"[{monitoring.host}]" if ":" in monitoring.host else monitoring.host
        found.append(Site("monitoring", Monitoring(config, sessions, clock, daemon).app(),
                          monitoring.host, monitoring.port, f"http://{host}:{monitoring.port}"))
    try:
        for site in found:
            site.bind()
    except ListenError:
        for site in found:
            site.close()
        raise
    return found
