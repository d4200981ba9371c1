"""Shared fixtures: PostgreSQL, Dovecot IMAP and an SMTP sink (logic in tests/servers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.corpus_files import corpus_problem
from tests.mailflow import Desk
from tests.servers import (Dovecot, Mailbox, OAuthProvider, SmtpSink, drop_database,
                           embedded_postgres_url, fresh_database)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, with one message, when test data the repository carries is missing."""
    problem = corpus_problem()
    if problem:
        pytest.exit(f"test data missing: {problem}", returncode=3)


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """URL of a PostgreSQL server: $MAILBOT_TEST_DATABASE_URL, else an embedded pgserver."""
    return os.environ.get("MAILBOT_TEST_DATABASE_URL") or embedded_postgres_url()


@pytest.fixture
def database_url(pg_base_url: str) -> Iterator[str]:
    """URL (postgresql://) of a fresh empty database, dropped after the test."""
    url = fresh_database(pg_base_url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot IMAP server for the session."""
    server = Dovecot().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oauth_provider() -> Iterator[OAuthProvider]:
    """A local OAuth2 authorization server (token endpoint over HTTPS, token introspection)."""
    provider = OAuthProvider().start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_provider: OAuthProvider) -> Iterator[Dovecot]:
    """A second Dovecot for the session whose oauth2 passdb asks ``oauth_provider``."""
    server = Dovecot(introspection_url=oauth_provider.introspection_url).start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Mailbox:
    """A fresh Dovecot account (support-<n>@example.test / secret) for this test only."""
    return dovecot.new_mailbox()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started SMTP sink that records every message it accepts."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def desk(database_url: str, dovecot: Dovecot, mailbox: Mailbox, smtp_sink: SmtpSink) -> Desk:
    """A support desk (tests/mailflow.py) whose CRM holds the test companies."""
    desk = Desk(database_url, dovecot, mailbox, smtp_sink)
    desk.load_crm()
    return desk
