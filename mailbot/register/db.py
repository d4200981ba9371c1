"""SQLAlchemy on PostgreSQL: the engine and sessions, and creating/upgrading the schema (the
URL, the embedded server and the schema version are :mod:`.connection`'s)."""
from __future__ import annotations

import logging
from collections import defaultdict
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import JSON, Connection, Engine, Table, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .connection import (
    CONNECT_TIMEOUT,
    DatabaseUnavailable,
    error_line,
    latest_version,
    migrations,
    schema_version,
    sqlalchemy_url,
)

log = logging.getLogger(__name__)


def make_engine(url: str, **kwargs) -> Engine:
    """An engine whose connections are checked before use and give up connecting after 10 s
    (libpq would wait for TCP's own timeout, minutes, on a server that is unreachable)."""
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", CONNECT_TIMEOUT)
    engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, future=True, **kwargs)
    event.listen(engine, "connect", _send_bytes_as_binary)
    return engine


def engine_conninfo(engine: Engine) -> str:
    """The engine's database as libpq takes it, for the connections psycopg keeps on its own
    (the LISTEN connection, the leases', the claims' lock)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _send_bytes_as_binary(dbapi_connection, _record) -> None:
    """Send bytea parameters in binary: as hex text a 25 MB attachment costs twice its size."""
    dbapi_connection.adapters.register_dumper(bytes, BytesBinaryDumper)


def dbapi(bind: Session | Connection) -> psycopg.Connection:
    """The psycopg connection under a session (its transaction's) or a SQLAlchemy connection."""
    connection = bind.connection() if isinstance(bind, Session) else bind
    return connection.connection.dbapi_connection


def binary_cursor(bind: Session | Connection) -> psycopg.Cursor:
    """A cursor on the session's (or connection's) connection that receives results in binary.

    As hex text a bytea value costs twice its size on the wire and 5× in memory.
    """
    return dbapi(bind).cursor(binary=True)


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) with one binary COPY.

    Straight through psycopg: SQLAlchemy's processing of each row's parameters
    cost more than the insert itself for a batch's outgoing mail and events, and
    a COPY costs both sides about half of a pipelined INSERT per row. Binary: as
    text, a mail's bytes travel and are read back as hex, twice their size.
    JSON columns take their values as they are (psycopg's ``Jsonb``).
    """
    if not rows:
        return
    columns = list(rows[0])
    json = {c for c in columns if isinstance(table.c[c].type, JSON)}
    with dbapi(connection).cursor() as cursor:
        types = _column_types(cursor, table.name, tuple(columns))
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row([Jsonb(row[c]) if c in json else row[c] for c in columns])


_TYPES: dict[tuple[str, tuple[str, ...]], list[int]] = {}


def _column_types(cursor: psycopg.Cursor, table: str, columns: tuple[str, ...]) -> list[int]:
    """The type oids of these columns, as a binary COPY wants them (the schema's are all
    built-in types, whose oids are the same in every database: read once per process)."""
    if (table, columns) not in _TYPES:
        oids = dict(cursor.execute("SELECT attname, atttypid::int FROM pg_attribute "
                                   "WHERE attrelid = %s::regclass AND attnum > 0", (table,)).fetchall())
        _TYPES[table, columns] = [oids[column] for column in columns]
    return _TYPES[table, columns]


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    maker = sessionmaker(engine, expire_on_commit=False)
    event.listen(maker, "before_flush", _assign_ids)
    return maker


_NEXT_IDS = text("""
    SELECT t.name, nextval(pg_get_serial_sequence(t.name, 'id'))
    FROM unnest(CAST(:names AS text[]), CAST(:counts AS integer[])) AS t(name, n),
         generate_series(1, t.n)""")


def _assign_ids(session: Session, _context, _instances) -> None:
    """Give the new rows their ids from their sequences before a flush: one query for all.

    With every id (and every default, ``eager_defaults`` off) known beforehand,
    SQLAlchemy writes a table's rows with one pipelined executemany of one
    prepared statement, instead of many-row ``INSERT … RETURNING`` statements
    that psycopg has to parse anew each time.
    """
    wanting: dict[str, list] = defaultdict(list)
    for instance in session.new:
        table = getattr(instance, "__table__", None)
        if table is not None and "id" in table.c and table.c.id.primary_key and instance.id is None:
            wanting[table.name].append(instance)
    if not wanting:
        return
    ids = next_ids(session.connection(), {name: len(rows) for name, rows in wanting.items()})
    for name, instances in wanting.items():
        for instance, new_id in zip(instances, ids[name]):
            instance.id = new_id


def next_ids(connection: Connection, counts: dict[str, int]) -> dict[str, list[int]]:
    """``counts[table]`` new ids from each table's sequence, in one query; ascending."""
    wanted = {name: count for name, count in counts.items() if count}
    ids: dict[str, list[int]] = {name: [] for name in counts}
    if wanted:
        rows = connection.execute(_NEXT_IDS, {"names": list(wanted),
                                              "counts": list(wanted.values())}).all()
        for name, new_id in rows:
            ids[name].append(new_id)
    return {name: sorted(values) for name, values in ids.items()}


def check_connection(engine: Engine) -> str:
    """The server version; raises :class:`DatabaseUnavailable` with the reason."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SHOW server_version")).scalar_one()
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(error_line(exc)) from exc


def schema_sql() -> str:
    return resources.files("mailbot.register").joinpath("schema.sql").read_text(encoding="utf-8")


def current_version(engine: Engine) -> int | None:
    """The schema version stamped in the database, or None for an empty database."""
    with engine.connect() as conn:
        return schema_version(dbapi(conn))


def init_schema(engine: Engine) -> bool:
    """Create the whole schema on an empty database. Idempotent: False if it was there."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(7201001)"))
        exists = conn.execute(text("SELECT to_regclass('schema_version') IS NOT NULL")).scalar_one()
        if exists:
            return False
        conn.exec_driver_sql(schema_sql())
        conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"),
                     {"v": latest_version()})
    log.info("database schema created (version %d)", latest_version())
    return True


def upgrade_schema(engine: Engine) -> list[str]:
    """Apply the migrations newer than the database's version; the names applied."""
    applied = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(7201001)"))
        version = schema_version(dbapi(conn))
        if version is None:
            raise DatabaseUnavailable("the database has no mailbot schema: run `mailbot db init`")
        for number, name, sql in migrations():
            if number > version:
                conn.exec_driver_sql(sql)
                conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": number})
                applied.append(name)
    return applied


def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the schema so the daemon can start (one read when it is up to date:
    every CLI command asks)."""
    if current_version(engine) == latest_version():
        return
    if not init_schema(engine):
        for name in upgrade_schema(engine):
            log.info("applied migration %s", name)
