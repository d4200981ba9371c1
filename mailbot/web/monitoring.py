"""``/metrics``, ``/healthz`` and ``/readyz``: for Prometheus and the service manager.

They are served on a listen address of their own (``[monitoring]``, default
127.0.0.1:9470), without log-in and apart from the board: bind it to
localhost or a monitoring network, never to the reverse proxy. They show
counts and states, never the content of mail.

- ``/healthz`` (liveness): 200 while the process serves and is not stopping;
  served from the daemon's event loop, an answer also says the loop is not stuck.
- ``/readyz`` (readiness): 200 when the database answers, every IMAP watcher
  is logged in, the SMTP server was not found unreachable, and neither backlog
  is stuck (the oldest mail waiting to be processed, or due to be sent, is
  younger than ``monitoring.stuck_minutes``); else 503. The body (JSON) names
  each check and what is wrong.
- ``/metrics``: :mod:`mailbot.metrics`, the process's own collectors
  (memory, CPU, open files) and the database gauges read at scrape time.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..clock import Clock
from ..config import Config
from ..metrics import DatabaseCollector
from ..supervision import one_line

if TYPE_CHECKING:
    from ..daemon import Daemon

# when the oldest mail waiting to be processed came in, and the oldest due to be sent was due
_BACKLOG = text("""
    SELECT (SELECT min(received_at) FROM inbound WHERE status = 'pending'),
           (SELECT min(next_attempt_at) FROM outbox WHERE status = 'pending')""")


class Monitoring:
    """The three endpoints over one database; ``daemon`` (None in `mailbot web`) for the
    state of its IMAP watchers and its sender."""

    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock,
                 daemon: Daemon | None = None) -> None:
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DatabaseCollector(sessions, clock))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/metrics", self.metrics), Route("/healthz", self.healthz),
                                 Route("/readyz", self.readyz)])

    def metrics(self, request: Request) -> Response:
        body = generate_latest(REGISTRY) + generate_latest(self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def healthz(self, request: Request) -> Response:
        if self.daemon is not None and self.daemon.stopping.is_set():
            return PlainTextResponse("stopping\n", status_code=503)
        return PlainTextResponse("ok\n")

    def readyz(self, request: Request) -> Response:
        checks = self.checks()
        ready = all(value == "ok" for value in checks.values())
        body = json.dumps({"status": "ready" if ready else "not ready", "checks": checks},
                          ensure_ascii=False, indent=1)
        return Response(body + "\n", status_code=200 if ready else 503,
                        media_type="application/json")

    def checks(self) -> dict[str, str]:
        """Each check: "ok", or what is wrong."""
        checks = {"database": "ok", "backlog": "ok"}
        try:
            with self.sessions() as session:
                session.execute(text("SET LOCAL statement_timeout = 2000"))
                inbound, outbox = session.execute(_BACKLOG).one()
        except Exception as error:  # the check reports it: that is its job
            checks["database"] = f"unavailable: {one_line(error)}"
            checks["backlog"] = "unknown (no database)"
        else:
            now, stuck = self.clock.now(), timedelta(minutes=self.config.monitoring.stuck_minutes)
            late = [f"{what} waits since {since:%Y-%m-%d %H:%M:%S} UTC"
                    for what, since in (("the oldest stored mail", inbound),
                                        ("the oldest due outgoing mail", outbox))
                    if since is not None and now - since > stuck]
            if late:
                checks["backlog"] = "stuck: " + "; ".join(late)
        if self.daemon is not None:
            down = [w.sync.name for w in self.daemon.watchers  # a folder another daemon watches is no fault
                    if w.leased() and not w.connected]
            checks["imap"] = "ok" if not down else "not connected: " + ", ".join(down)
            checks["smtp"] = "ok" if self.daemon.sender.reachable else "unreachable"
        return checks
