"""The supervisors' board: read-only Russian pages of the register and the SLA (Starlette).

Every page but the log-in ones needs a session (:mod:`.auth`); without one a
GET is sent to the log-in page and anything else gets 403, with no data
either way. Everything shown from mail is escaped (Jinja2 autoescape) and
cleaned of controls and bidi marks (:func:`mailbot.render.shown`); files are
always downloaded (``Content-Disposition: attachment``, served as
``application/octet-stream``), never shown. The log-in and logout forms are
POSTs with a CSRF token (a double-submit cookie, SameSite=Strict) and an
Origin check. Every response carries the security headers of
:class:`SecurityHeaders` and the server time it took (``Server-Timing``).

Handlers are plain functions: Starlette runs them in its thread pool, so the
database work never blocks the daemon's event loop.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..clock import Clock
from ..config import Config
from ..register import files
from ..register.db import binary_cursor
from ..render import shown
from . import queries
from .auth import Auth
from .queries import RegisterQuery, Viewer

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin"),
           (b"cross-origin-resource-policy", b"same-origin")]
Handler = Callable[[Request, Viewer], Response | Awaitable[Response]]


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, ``Cache-Control: no-store``
    on all but the style sheet, and ``Server-Timing: app;dur=<ms>``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"cache-control",) or static]
                headers += HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                elapsed = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={elapsed:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Board:
    """The board's pages over one database (the daemon's, or `mailbot web`'s own)."""

    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.config = config
        self.web = config.web
        self.sessions = sessions
        self.clock = clock
        self.auth = Auth(config, sessions, clock)
        self.root = urlsplit(self.web.public_url).path.rstrip("/")
        self.origin = _origin(self.web.public_url)
        secure = self.web.secure_cookies
        self.session_cookie = "__Host-mb_session" if secure else "mb_session"
        self.csrf_cookie = "__Host-mb_csrf" if secure else "mb_csrf"
        self.env = environment()

    def app(self) -> Starlette:
        private = [
            ("/", self.home), ("/requests", self.register), ("/requests/{number}", self.request),
            ("/files/{id:int}", self.file), ("/sla", self.sla), ("/incidents", self.incidents),
            ("/incidents/{number}", self.incident), ("/quarantine", self.quarantine),
        ]
        routes = [Route(path, self.private(handler), name=handler.__name__)
                  for path, handler in private]
        routes += [
            Route("/logout", self.private(self.logout), methods=["POST"], name="logout"),
            Route("/login", self.login_form, methods=["GET"], name="login_form"),
            Route("/login", self.login_post, methods=["POST"], name="login_post"),
            Route("/login/{token}", self.link_form, methods=["GET"], name="link_form"),
            Route("/login/{token}", self.link_post, methods=["POST"], name="link_post"),
            Mount("/static", StaticFiles(directory=str(resources.files("mailbot.web") / "static")),
                  name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: self.error})
        app.add_middleware(SecurityHeaders)
        return app

    # ------------------------------------------------------------ plumbing

    def private(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for a live session only: else the log-in page (GET) or 403.
        A plain function runs in the thread pool."""

        async def endpoint(request: Request) -> Response:
            cookie = request.cookies.get(self.session_cookie)
            viewer = await run_in_threadpool(self.auth.viewer, cookie)
            if viewer is None:
                if request.method in ("GET", "HEAD"):
                    return RedirectResponse(f"{self.root}/login", status_code=303)
                raise HTTPException(403)
            if asyncio.iscoroutinefunction(handler):
                return await handler(request, viewer)
            return await run_in_threadpool(handler, request, viewer)

        endpoint.__name__ = handler.__name__
        return endpoint

    def page(self, request: Request, template: str, viewer: Viewer | None = None,
             status: int = 200, background: BackgroundTask | None = None,
             **context: Any) -> HTMLResponse:
        """A rendered page; the CSRF cookie is set when the browser has none yet."""
        csrf = request.cookies.get(self.csrf_cookie) or ""
        fresh = not re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        html = self.env.get_template(template).render(
            viewer=viewer, root=self.root, csrf=csrf, now=self.clock.now(),
            tz=ZoneInfo(self.config.timezone), **context)
        response = HTMLResponse(html, status_code=status, background=background)
        if fresh:
            response.set_cookie(self.csrf_cookie, csrf, httponly=True, samesite="strict",
                                secure=self.web.secure_cookies, path="/")
        return response

    async def checked_form(self, request: Request) -> dict[str, str]:
        """The POSTed form, if its CSRF token matches the cookie and it came from our own page.

        "Our own page": the browser's ``Sec-Fetch-Site`` says ``same-origin``; a client
        without it must not name another ``Origin`` (browsers send ``Origin: null`` under
        ``Referrer-Policy: no-referrer``, so that alone proves nothing either way).
        """
        form = await request.form(max_files=0, max_fields=10)
        token, cookie = str(form.get("csrf", "")), request.cookies.get(self.csrf_cookie, "")
        origin, fetch_site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
        own = {self.origin, f"{request.url.scheme}://{request.headers.get('host', '')}", "null"}
        same = fetch_site == "same-origin" if fetch_site else origin is None or origin in own
        if not cookie or not hmac.compare_digest(token.encode(), cookie.encode()) or not same:
            log.warning("board: form refused from %s (CSRF token or origin)", _client(request))
            raise HTTPException(403)
        return {key: str(value) for key, value in form.items()}

    def error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return self.page(request, "error.html.j2", status=status, code=status)

    # ------------------------------------------------------------ log-in

    def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html.j2")

    async def login_post(self, request: Request) -> Response:
        form = await self.checked_form(request)
        address, client = form.get("email", ""), _client(request)
        if not await run_in_threadpool(self.auth.attempt, address, client):
            return self.page(request, "login.html.j2", status=429, limited=True)
        return self.page(request, "login.html.j2", asked=True,
                         background=BackgroundTask(self.auth.send_link, address))

    def link_form(self, request: Request) -> Response:
        return self.page(request, "link.html.j2", token=request.path_params["token"])

    async def link_post(self, request: Request) -> Response:
        await self.checked_form(request)
        token = await run_in_threadpool(self.auth.redeem, request.path_params["token"],
                                        _client(request))
        if token is None:
            return self.page(request, "link.html.j2", status=400, invalid=True, token="")
        response = RedirectResponse(f"{self.root}/requests", status_code=303)
        response.set_cookie(self.session_cookie, token, httponly=True, samesite="lax",
                            secure=self.web.secure_cookies, path="/",
                            max_age=int(self.web.session_hours * 3600))
        response.delete_cookie(self.csrf_cookie, path="/")  # a fresh token for the session
        return response

    async def logout(self, request: Request, viewer: Viewer) -> Response:
        await self.checked_form(request)
        await run_in_threadpool(self.auth.logout, viewer)
        response = RedirectResponse(f"{self.root}/login", status_code=303)
        response.delete_cookie(self.session_cookie, path="/")
        response.delete_cookie(self.csrf_cookie, path="/")
        return response

    # ------------------------------------------------------------ pages

    def home(self, request: Request, viewer: Viewer) -> Response:
        return RedirectResponse(f"{self.root}/requests", status_code=303)

    def register(self, request: Request, viewer: Viewer) -> Response:
        query = _register_query(request.query_params)
        now = self.clock.now()
        with self.sessions() as session:
            page = queries.register(session, viewer, query, now, self.web.page_size)
            staff = queries.staff_choices(session)
        return self.page(request, "register.html.j2", viewer, query=query, page=page,
                         staff=staff, statuses=queries.STATUSES,
                         overdue=queries.overdue, due_soon=queries.due_soon)

    def request(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            view = queries.request_view(session, viewer, request.path_params["number"])
        if view is None:
            raise HTTPException(404)
        return self.page(request, "request.html.j2", viewer, view=view, r=view.request,
                         overdue=queries.overdue, due_soon=queries.due_soon)

    def file(self, request: Request, viewer: Viewer) -> Response:
        """A file of a request, always as a download of opaque bytes."""
        with self.sessions() as session:
            row = queries.attachment(session, viewer, request.path_params["id"])
            if row is None:
                raise HTTPException(404)
            with binary_cursor(session) as cursor:
                data = files.read(cursor, row.sha256, row.inbound_id)
        log.info("board: %s downloaded file %d", viewer.login, row.id)
        return Response(data, media_type="application/octet-stream", headers={
            "content-disposition": content_disposition(row.filename),
            "content-security-policy": "default-src 'none'; sandbox"})

    def sla(self, request: Request, viewer: Viewer) -> Response:
        now = self.clock.now()
        with self.sessions() as session:
            board = queries.sla_board(session, viewer, now, self.config.timezone)
        return self.page(request, "sla.html.j2", viewer, board=board, overdue=queries.overdue)

    def incidents(self, request: Request, viewer: Viewer) -> Response:
        search = request.query_params.get("q", "")[:200]
        with self.sessions() as session:
            rows = queries.incidents(session, search)
        return self.page(request, "incidents.html.j2", viewer, rows=rows, search=search)

    def incident(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            found = queries.incident_view(session, viewer, request.path_params["number"])
        if found is None:
            raise HTTPException(404)
        incident, requests = found
        return self.page(request, "incident.html.j2", viewer, incident=incident, requests=requests)

    def quarantine(self, request: Request, viewer: Viewer) -> Response:
        if not viewer.sees_quarantine:
            raise HTTPException(403)
        resolved = request.query_params.get("show") == "resolved"
        with self.sessions() as session:
            rows = queries.quarantine(session, resolved)
        return self.page(request, "quarantine.html.j2", viewer, rows=rows, resolved=resolved)


# ---------------------------------------------------------------- helpers

def content_disposition(filename: str) -> str:
    """``attachment`` with the name as sent (RFC 6266: an ASCII fallback and ``filename*``)."""
    name = re.sub(r"[\x00-\x1f\x7f\"\\/;]", "_", shown(filename or "file")).strip() or "file"
    fallback = re.sub(r"[^\x20-\x7e]", "_", name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _register_query(params: Any) -> RegisterQuery:
    def number(name: str) -> int | None:
        value = params.get(name, "")
        return int(value) if value.isdigit() and len(value) < 12 else None

    status = params.get("status", "active")
    level = number("level")
    return RegisterQuery(
        status=status if status in ("active", "finished", "all") + queries.STATUSES else "active",
        level=level if level in (0, 1, 2, 3, 4) else None,
        organization=params.get("org", "")[:200], assignee=number("assignee"),
        text=params.get("q", "")[:200], descending=params.get("order") == "desc",
        after=queries.Key.decode(params.get("after", "")))


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The board's Jinja2 environment: HTML, autoescaped, every value cleaned (``shown``)."""
    env = Environment(loader=PackageLoader("mailbot.web", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      auto_reload=False, finalize=shown)
    env.filters["size"] = _size
    env.filters["details"] = _details
    return env


def _details(details: dict[str, Any]) -> list[tuple[str, str]]:
    """An event's details as short "key: value" pairs (the level assessment's inner workings are
    left out: its one-line reason says it)."""
    shown_ = []
    for key, value in details.items():
        if value in (None, "", [], {}) or (key == "level" and isinstance(value, dict)
                                           and "level_reason" in details):
            continue
        if isinstance(value, list):
            value = "; ".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        text = str(value)
        shown_.append((key, text if len(text) <= 300 else text[:299] + "…"))
    return shown_


def _size(count: int) -> str:
    for unit in ("Б", "КБ", "МБ"):
        if count < 1024 or unit == "МБ":
            return f"{count:.0f} {unit}" if unit == "Б" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
