"""The register's read-only listings for the command line, in plain SQL so a command answers at once.

Each function reads what one read command shows (``requests list|show|files``, ``staff list``,
``undeliverable list``, ``quarantine list|show``, ``kb list|show``), through psycopg alone:
importing SQLAlchemy and mapping the models took longer than the whole answer may (issue 16
§5, docs/operations.md). The queries mirror the models of :mod:`.models`; rows are named
tuples whose fields are the models' attribute names (and a joined row's name, where said).
Everything that changes the register goes through the models; ``kb search`` runs the one
search of :mod:`mailbot.kb.search`, on this connection.
"""
from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import namedtuple_row

Row = Any  # a named tuple of the columns selected


def _rows(conn: psycopg.Connection, sql: str, *params: Any) -> list[Row]:
    with conn.cursor(row_factory=namedtuple_row) as cursor:
        return cursor.execute(sql, params).fetchall()


def _row(conn: psycopg.Connection, sql: str, *params: Any) -> Row | None:
    found = _rows(conn, sql, *params)
    return found[0] if found else None


# ---------------------------------------------------------------- requests

def requests(conn: psycopg.Connection, status: str | None, limit: int) -> list[Row]:
    """The latest requests (of ``status``, when given), newest first."""
    where = "WHERE status = %s" if status else ""
    return _rows(conn, f"""
        SELECT number, status, level, received_at, requester_email, subject FROM requests
        {where} ORDER BY id DESC LIMIT %s""", *([status] if status else []), limit)


def request(conn: psycopg.Connection, number: str) -> Row | None:
    """The request numbered ``number``, with the names of what it refers to: ``organization``
    (the organisation's name), ``follows`` and ``parent`` (numbers), ``incident_number``,
    ``incident_status``, ``incident_title``."""
    return _row(conn, """
        SELECT r.id, r.number, r.subject, r.status, r.level, r.requester_name, r.requester_email,
               r.channel, r.received_at, r.due_at, r.organization_id, r.follows_id, r.parent_id,
               r.incident_id, o.name AS organization, f.number AS follows, p.number AS parent,
               i.number AS incident_number, i.status AS incident_status, i.title AS incident_title
        FROM requests r
        LEFT JOIN organizations o ON o.id = r.organization_id
        LEFT JOIN requests f ON f.id = r.follows_id
        LEFT JOIN requests p ON p.id = r.parent_id
        LEFT JOIN incidents i ON i.id = r.incident_id
        WHERE r.number = %s""", number)


def followed_by(conn: psycopg.Connection, request_id: int) -> list[str]:
    """The numbers of the requests continuing this one (new questions in its confirming replies)."""
    return [r.number for r in _rows(conn, "SELECT number FROM requests WHERE follows_id = %s "
                                          "ORDER BY id", request_id)]


def op4_requests(conn: psycopg.Connection, request_id: int) -> list[Row]:
    """The ОП4 requests of an ОП3 one: number, status."""
    return _rows(conn, "SELECT number, status FROM requests WHERE parent_id = %s ORDER BY id",
                 request_id)


def deliveries(conn: psycopg.Connection, request_id: int) -> list[Row]:
    """The mails that carried files to the customer, oldest first."""
    return _rows(conn, """
        SELECT created_at, files, recipient, status, confirmed_by, confirmed_at, failure,
               settled_at, settled_by, note, reminders
        FROM deliveries WHERE request_id = %s ORDER BY id""", request_id)


def file_requests(conn: psycopg.Connection, request_id: int) -> list[Row]:
    """The files asked of the customer, oldest first."""
    return _rows(conn, """
        SELECT created_at, asked, asked_by, status, reminders, received_at
        FROM file_requests WHERE request_id = %s ORDER BY id""", request_id)


def timeline(conn: psycopg.Connection, request_id: int) -> list[Row]:
    """The request's events in order; ``subject``: that of the event's mail of this request
    (``has_message``: there is one)."""
    return _rows(conn, """
        SELECT e.at, e.actor, e.kind, e.from_status, e.to_status,
               m.id IS NOT NULL AS has_message, m.subject
        FROM events e
        LEFT JOIN messages m ON m.id = e.message_id AND m.request_id = e.request_id
        WHERE e.request_id = %s ORDER BY e.at, e.id""", request_id)


def request_files(conn: psycopg.Connection, request_id: int) -> list[Row]:
    """Every file in the request's trail, oldest first, with its mail's ``sender`` and
    ``inbound_id`` (where its bytes are: :func:`mailbot.register.files.read`)."""
    return _rows(conn, """
        SELECT a.id, a.size, a.filename, a.original_filename, a.sha256, m.sender, m.inbound_id
        FROM messages m JOIN attachments a ON a.message_id = m.id
        WHERE m.request_id = %s ORDER BY a.id""", request_id)


# ---------------------------------------------------------------- staff and mail

def staff(conn: psycopg.Connection) -> list[Row]:
    """Every staff member by tier and login; ``supervisor``: the supervisor's login."""
    return _rows(conn, """
        SELECT s.login, s.tier, s.active, s.experience_years, s.email, s.full_name, s.department,
               b.login AS supervisor
        FROM staff s LEFT JOIN staff b ON b.id = s.supervisor_id
        ORDER BY s.tier, s.login""")


def undeliverable(conn: psycopg.Connection) -> list[Row]:
    """The addresses our mail cannot reach, the oldest mark first."""
    return _rows(conn, "SELECT refused_at, source, address, reply FROM undeliverable_addresses "
                       "ORDER BY refused_at")


def quarantined(conn: psycopg.Connection) -> list[Row]:
    """The open quarantine items in order, with the ``size`` of their mail."""
    return _rows(conn, """
        SELECT q.id, q.created_at, q.stage, q.error, i.size
        FROM quarantine q JOIN inbound i ON i.id = q.inbound_id
        WHERE q.resolved_at IS NULL ORDER BY q.id""")


def quarantine_item(conn: psycopg.Connection, item_id: int) -> Row | None:
    """One quarantine item, with its mail's ``source`` and ``size``."""
    return _row(conn, """
        SELECT q.id, q.inbound_id, q.stage, q.error, q.resolution, i.source, i.size
        FROM quarantine q JOIN inbound i ON i.id = q.inbound_id WHERE q.id = %s""", item_id)


def raw_mail(conn: psycopg.Connection, inbound_id: int) -> bytes:
    """A stored mail's bytes, received in binary (as hex text they cost twice their size)."""
    with conn.cursor(binary=True) as cursor:
        return cursor.execute("SELECT raw FROM inbound WHERE id = %s", (inbound_id,)).fetchone()[0]


# ---------------------------------------------------------------- the known-error database

def incidents(conn: psycopg.Connection, status: str | None, limit: int) -> list[Row]:
    """The latest incidents (of ``status``, when given), newest first."""
    where = "WHERE status = %s" if status else ""
    return _rows(conn, f"SELECT number, status, title FROM incidents {where} ORDER BY id DESC "
                       "LIMIT %s", *([status] if status else []), limit)


def incident(conn: psycopg.Connection, number: str) -> Row | None:
    """The incident numbered exactly ``number``; ``author``: its creator's login, ``original``:
    the number of the incident it duplicates."""
    return _row(conn, """
        SELECT i.id, i.number, i.title, i.symptoms, i.solution, i.product, i.version, i.status,
               i.created_at, i.updated_at, s.login AS author, o.number AS original
        FROM incidents i
        LEFT JOIN staff s ON s.id = i.created_by
        LEFT JOIN incidents o ON o.id = i.duplicate_of
        WHERE i.number = %s""", number)


def incident_requests(conn: psycopg.Connection, incident_id: int) -> list[Row]:
    """The requests linked to an incident, oldest first."""
    return _rows(conn, "SELECT number, level, status, subject FROM requests WHERE incident_id = %s "
                       "ORDER BY id", incident_id)


def incident_history(conn: psycopg.Connection, incident_id: int) -> list[Row]:
    """An incident's changes in order; ``request``: the number of the request one came from."""
    return _rows(conn, """
        SELECT h.at, h.actor, h.kind, h.changes, r.number AS request
        FROM incident_history h LEFT JOIN requests r ON r.id = h.request_id
        WHERE h.incident_id = %s ORDER BY h.id""", incident_id)
