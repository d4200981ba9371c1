"""Log-in to the board without passwords: a one-time link mailed to a staff address.

1. Someone types an address into the log-in form. The answer is always the
   same page ("if the address is registered, a link was sent"), and the work
   that differs for a registered address (the link, the mail) is done after the
   response has gone: neither the page nor its timing tells who is registered.
   Requests are counted per address and per client (IP address) within
   ``web.login_window_minutes``: past ``login_limit_per_address`` no more mail
   goes to that address, past ``login_limit_per_client`` the client is told to wait.
2. The link (``web.base_url``/login/<token>, never the Host the request named)
   carries 32 random bytes; only their SHA-256 is stored, with an expiry
   (``web.link_minutes``). Opening it shows a button: the token is spent by that
   POST, not by the GET, so a mail scanner that fetches links spends nothing.
3. Spending it starts a session: another 32 random bytes in an HttpOnly,
   SameSite=Lax cookie (Secure and ``__Host-`` named behind TLS), stored as
   their SHA-256 with an expiry (``web.session_hours``). Logout ends it in the
   database; so does deactivating the staff member.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ..clock import Clock
from ..config import Config
from ..outbox import InvalidRecipient, Outgoing, enqueue
from ..parsers.addresses import is_valid_address
from ..render import render
from ..transport.notify import OUTBOX, notify
from .queries import Viewer

log = logging.getLogger(__name__)

KEEP = timedelta(days=1)  # spent links, ended sessions and old attempts are deleted after this
MAX_ADDRESS = 254


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def normal_address(address: str) -> str:
    return address.strip().lower()[:MAX_ADDRESS]


class Auth:
    """Login links and sessions (tables ``web_login_links``, ``web_sessions``, ``web_login_attempts``)."""

    def __init__(self, config: Config, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.config = config
        self.web = config.web
        self.sessions = sessions
        self.clock = clock

    # ------------------------------------------------------------ link requests

    def attempt(self, address: str, client: str) -> bool:
        """Record a request for a link; False when the client is over its limit."""
        now = self.clock.now()
        with self.sessions.begin() as session:
            session.execute(text("INSERT INTO web_login_attempts (address, client, at) "
                                 "VALUES (:address, :client, :at)"),
                            {"address": normal_address(address), "client": client, "at": now})
            count = session.scalar(text("SELECT count(*) FROM web_login_attempts "
                                        "WHERE client = :client AND at > :since"),
                                   {"client": client, "since": now - self._window})
        if count > self.web.login_limit_per_client:
            log.warning("board: login links: client %s over its limit (%d requests)", client, count)
            return False
        return True

    def send_link(self, address: str) -> None:
        """Mail a login link to ``address`` if it is an active staff member's and under its limit
        (run after the response: nothing of it shows to the one who asked)."""
        address, now = normal_address(address), self.clock.now()
        if not is_valid_address(address):
            return
        with self.sessions.begin() as session:
            count = session.scalar(text("SELECT count(*) FROM web_login_attempts "
                                        "WHERE address = :address AND at > :since"),
                                   {"address": address, "since": now - self._window})
            if count > self.web.login_limit_per_address:
                log.warning("board: login link for %s not sent: %d requests within %g min",
                            address, count, self.web.login_window_minutes)
                return
            staff = session.execute(text("SELECT id, login, full_name, email FROM staff "
                                         "WHERE email = :address AND active"),
                                    {"address": address}).first()
            if staff is None:
                log.info("board: login link asked for %s: no active staff member", address)
                return
            token = secrets.token_urlsafe(32)
            session.execute(text("""
                INSERT INTO web_login_links (staff_id, token_hash, created_at, expires_at)
                VALUES (:staff, :hash, :now, :expires)"""),
                {"staff": staff.id, "hash": token_hash(token), "now": now,
                 "expires": now + timedelta(minutes=self.web.link_minutes)})
            content = render("web_login", with_html=False, staff=staff,
                             link=f"{self.web.public_url}/login/{token}",
                             minutes=round(self.web.link_minutes), support=self.config.support)
            try:
                enqueue(session, self.config, Outgoing("web_login", (staff.email,), content), now)
            except InvalidRecipient as exc:
                log.error("board: login link for %s not sent: %s", staff.login, exc)
                session.rollback()
                return
            notify(session, OUTBOX)
            self._cleanup(session, now)
        log.info("board: login link sent to %s", staff.login)

    @property
    def _window(self) -> timedelta:
        return timedelta(minutes=self.web.login_window_minutes)

    # ------------------------------------------------------------ sessions

    def redeem(self, token: str, client: str) -> str | None:
        """Spend a login link: the new session's token, or None (unknown, spent, expired, or the
        staff member is no longer active)."""
        now = self.clock.now()
        with self.sessions.begin() as session:
            staff_id = session.scalar(text("""
                UPDATE web_login_links l SET used_at = :now
                FROM staff s
                WHERE l.token_hash = :hash AND l.used_at IS NULL AND l.expires_at > :now
                  AND s.id = l.staff_id AND s.active
                RETURNING l.staff_id"""), {"hash": token_hash(token), "now": now})
            if staff_id is None:
                return None
            session_token = secrets.token_urlsafe(32)
            session.execute(text("""
                INSERT INTO web_sessions (staff_id, token_hash, client, created_at, expires_at)
                VALUES (:staff, :hash, :client, :now, :expires)"""),
                {"staff": staff_id, "hash": token_hash(session_token), "client": client[:100],
                 "now": now, "expires": now + timedelta(hours=self.web.session_hours)})
        return session_token

    def viewer(self, session_token: str | None) -> Viewer | None:
        """The staff member of a live session (its role read anew on every request)."""
        if not session_token:
            return None
        with self.sessions() as session:
            row = session.execute(text("""
                SELECT w.id AS session_id, s.id, s.login, s.full_name, s.tier,
                       (s.login = ANY(:supervisors) OR EXISTS (
                           SELECT 1 FROM staff u WHERE u.supervisor_id = s.id AND u.active))
                           AS supervisor
                FROM web_sessions w JOIN staff s ON s.id = w.staff_id
                WHERE w.token_hash = :hash AND w.ended_at IS NULL AND w.expires_at > :now
                  AND s.active"""),
                {"hash": token_hash(session_token), "now": self.clock.now(),
                 "supervisors": list(self.web.supervisors)}).first()
        if row is None:
            return None
        return Viewer(row.id, row.login, row.full_name, row.tier, row.supervisor, row.session_id)

    def logout(self, viewer: Viewer) -> None:
        with self.sessions.begin() as session:
            session.execute(text("UPDATE web_sessions SET ended_at = :now WHERE id = :id"),
                            {"now": self.clock.now(), "id": viewer.session_id})
        log.info("board: %s logged out", viewer.login)

    @staticmethod
    def _cleanup(session: Session, now: datetime) -> None:
        """Forget what no longer counts: links, sessions and attempts over a day old."""
        params = {"before": now - KEEP}
        session.execute(text("DELETE FROM web_login_links WHERE expires_at < :before"), params)
        session.execute(text("DELETE FROM web_sessions WHERE expires_at < :before "
                             "OR ended_at < :before"), params)
        session.execute(text("DELETE FROM web_login_attempts WHERE at < :before"), params)
