"""OAuth2 for IMAP and SMTP: access tokens, and the SASL strings that carry them.

A :class:`TokenSource` gets access tokens from the provider's token endpoint — Microsoft's
identity platform through ``msal`` (client credentials, or a refresh token), Google, Yandex
or any other endpoint by the plain refresh-token (or client-credentials) grant over HTTPS —
keeps the token in memory and replaces it ``refresh_margin`` seconds before it expires. A
server that refuses a token gets one fresh token, once (:func:`login_with_retry`).

Neither tokens nor secrets are ever logged or put into an exception's message: what the token
endpoint answers is reported with every secret we hold replaced by ``***``.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlencode

from ..clock import Clock
from ..config import OAuth2Config

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_URLS = {"google": "https://oauth2.googleapis.com/token",
              "yandex": "https://oauth.yandex.ru/token"}
MICROSOFT_LOGIN = "https://login.microsoftonline.com"
# scopes asked for when [oauth2] scopes is empty; Yandex's are fixed when the app is registered
SCOPES = {
    ("microsoft", "refresh_token"): ("https://outlook.office365.com/IMAP.AccessAsUser.All",
                                     "https://outlook.office365.com/SMTP.Send"),
    ("microsoft", "client_credentials"): ("https://outlook.office365.com/.default",),
    ("google", "refresh_token"): ("https://mail.google.com/",),
}
DEFAULT_LIFETIME = 3600  # seconds, when the endpoint does not say (expires_in)


class TokenError(Exception):
    """No access token: the token endpoint refused or could not be reached (the message says
    which, and why; it holds no secret)."""


class AuthRefused(Exception):
    """A mail server refused a fresh token too (the message is the server's answer)."""


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: datetime

    def __repr__(self) -> str:  # never the token itself, whatever prints it
        return f"AccessToken(expires_at={self.expires_at.isoformat()})"


class TokenSource:
    """Access tokens of one account, cached in memory; thread-safe."""

    def __init__(self, config: OAuth2Config, refresh_token: str = "",
                 clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self._refresh_token = refresh_token or config.refresh_token
        self._token: AccessToken | None = None
        self._lock = threading.Lock()
        self._msal_app = None
        self.fetched = 0  # tokens fetched from the endpoint so far

    @property
    def endpoint(self) -> str:
        """Where tokens come from (for messages)."""
        c = self.config
        if c.provider == "microsoft":
            return c.authority or f"{MICROSOFT_LOGIN}/{c.tenant}"
        return c.token_url or TOKEN_URLS.get(c.provider, "")

    def token(self) -> str:
        """A token valid for at least ``refresh_margin`` seconds more (fetched if need be)."""
        with self._lock:
            margin = timedelta(seconds=self.config.refresh_margin)
            if self._token is None or self.clock.now() >= self._token.expires_at - margin:
                self._token = self._fetch()
            return self._token.value

    def refresh(self, refused: str) -> str:
        """A new token after a server refused ``refused`` (unless another thread already
        replaced it)."""
        with self._lock:
            if self._token is None or self._token.value == refused:
                self._token = self._fetch(force=True)
            return self._token.value

    def expires_at(self) -> datetime | None:
        with self._lock:
            return self._token.expires_at if self._token else None

    def _fetch(self, force: bool = False) -> AccessToken:
        answer = self._from_msal(force) if self.config.provider == "microsoft" else self._from_endpoint()
        if not answer.get("access_token"):
            error = answer.get("error") or "no access_token in the answer"
            detail = answer.get("error_description") or ""
            raise TokenError(self._redact(f"token endpoint {self.endpoint} refused: {error}"
                                          + (f": {detail}" if detail else "")))
        if answer.get("refresh_token"):  # a rotated refresh token replaces ours (in memory)
            self._refresh_token = answer["refresh_token"]
        try:
            lifetime = int(answer.get("expires_in") or DEFAULT_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        self.fetched += 1
        token = AccessToken(answer["access_token"], self.clock.now() + timedelta(seconds=lifetime))
        log.info("OAuth2: new access token from %s, valid for %d s", self.endpoint, lifetime)
        return token

    def _scopes(self) -> list[str]:
        c = self.config
        return list(c.scopes or SCOPES.get((c.provider, c.grant), ()))

    def _from_endpoint(self) -> dict:
        c = self.config
        form = {"grant_type": c.grant, "client_id": c.client_id}
        if c.client_secret:
            form["client_secret"] = c.client_secret
        if c.grant == "refresh_token":
            form["refresh_token"] = self._refresh_token
        if self._scopes():
            form["scope"] = " ".join(self._scopes())
        request = urllib.request.Request(
            self.endpoint, data=urlencode(form).encode(), method="POST",
            headers={"Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"})
        context = ssl.create_default_context(cafile=c.ca_file or None)
        try:
            with urllib.request.urlopen(request, timeout=c.timeout, context=context) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:  # 400/401 carry the OAuth2 error as JSON
            body = exc.read()
            answer = _json(body)
            if "error" not in answer:
                raise TokenError(self._redact(f"token endpoint {self.endpoint} answered "
                                              f"HTTP {exc.code} {exc.reason}")) from None
            return answer
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TokenError(self._redact(f"token endpoint {self.endpoint} unreachable: "
                                          f"{reason}")) from None
        return _json(body)

    def _from_msal(self, force: bool) -> dict:
        try:
            app = self._msal()
            if self.config.grant == "client_credentials":
                if force:
                    app.remove_tokens_for_client()  # else msal answers from its own cache
                return app.acquire_token_for_client(scopes=self._scopes())
            return app.acquire_token_by_refresh_token(self._refresh_token, scopes=self._scopes())
        except TokenError:
            raise
        except Exception as exc:  # msal raises ValueError and requests' errors alike
            self._msal_app = None  # discover the authority again next time
            raise TokenError(self._redact(f"Microsoft identity platform {self.endpoint}: "
                                          f"{type(exc).__name__}: {exc}")) from None

    def _msal(self):
        if self._msal_app is None:
            import msal  # only the microsoft provider needs it
            import requests  # msal's own dependency

            c = self.config
            http = requests.Session()
            # per request: a session-wide verify loses to $REQUESTS_CA_BUNDLE
            http.request = functools.partial(http.request, verify=c.ca_file or True,
                                             timeout=c.timeout)
            options = {"authority": self.endpoint, "http_client": http}
            if c.authority:  # a national cloud or a test endpoint: msal cannot validate it
                options["instance_discovery"] = False
            if c.client_secret:
                self._msal_app = msal.ConfidentialClientApplication(
                    c.client_id, client_credential=c.client_secret, **options)
            else:
                self._msal_app = msal.PublicClientApplication(c.client_id, **options)
        return self._msal_app

    def _redact(self, text: str) -> str:
        for secret in (self.config.client_secret, self._refresh_token, self.config.refresh_token,
                       self._token.value if self._token else ""):
            if len(secret) >= 8:  # shorter ones are no real secrets, and would mangle the text
                text = text.replace(secret, "***")
        return " ".join(text.split())[:500]


def _json(body: bytes) -> dict:
    try:
        answer = json.loads(body)
    except ValueError:
        return {"error": "the answer is not JSON"}
    return answer if isinstance(answer, dict) else {"error": "the answer is not a JSON object"}


def sasl_response(mechanism: str, user: str, token: str, host: str, port: int) -> bytes:
    """The client's SASL response (not yet base64) of XOAUTH2 or OAUTHBEARER (RFC 7628)."""
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    identity = user.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={identity},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def login_with_retry(source: TokenSource, attempt: Callable[[str], T],
                     refused: tuple[type[BaseException], ...], what: str) -> T:
    """``attempt(token)``; when the server refuses (one of ``refused``), once more with a fresh
    token. A second refusal raises :class:`AuthRefused`."""
    token = source.token()
    try:
        return attempt(token)
    except refused as exc:
        log.info("%s refused the OAuth2 token (%s); fetching a new one", what, exc)
    token = source.refresh(token)
    try:
        return attempt(token)
    except refused as exc:
        raise AuthRefused(f"{what} refused a fresh OAuth2 token from {source.endpoint}: {exc}") from None


async def login_with_retry_async(source: TokenSource, attempt: Callable[[str], Awaitable[T]],
                                 refused: tuple[type[BaseException], ...], what: str) -> T:
    """:func:`login_with_retry` for an asyncio client (the token requests run in a thread)."""
    token = await asyncio.to_thread(source.token)
    try:
        return await attempt(token)
    except refused as exc:
        log.info("%s refused the OAuth2 token (%s); fetching a new one", what, exc)
    token = await asyncio.to_thread(source.refresh, token)
    try:
        return await attempt(token)
    except refused as exc:
        raise AuthRefused(f"{what} refused a fresh OAuth2 token from {source.endpoint}: {exc}") from None


_sources: dict[tuple[OAuth2Config, str], TokenSource] = {}
_sources_lock = threading.Lock()


def token_source(config: OAuth2Config, refresh_token: str = "") -> TokenSource:
    """The one token source of an account in this process (IMAP watchers and the sender share it)."""
    key = (config, refresh_token or config.refresh_token)
    with _sources_lock:
        if key not in _sources:
            _sources[key] = TokenSource(config, refresh_token)
        return _sources[key]
