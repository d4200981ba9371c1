"""The register: schema.sql creates it, the models mirror it, init is idempotent."""
from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import inspect

from mailbot.register import db, files
from mailbot.register.models import Base


def _normalise(type_name: str) -> str:
    name = type_name.upper().split("(")[0].replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
    return {"VARCHAR": "TEXT", "JSON": "JSONB"}.get(name, name)


def test_db_init_creates_the_whole_register_and_is_idempotent(database_url):
    engine = db.make_engine(database_url)
    assert db.init_schema(engine) is True
    assert db.init_schema(engine) is False
    assert db.current_version(engine) == db.latest_version()
    assert db.upgrade_schema(engine) == []
    tables = set(inspect(engine).get_table_names())
    for name in ("organizations", "contacts", "support_contracts", "staff", "requests",
                 "messages", "attachments", "incidents", "deliveries", "escalations",
                 "events", "inbound", "outbox", "mailbox_state", "quarantine"):
        assert name in tables


def test_models_mirror_schema_sql_column_by_column(database_url):
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    assert_models_mirror(engine)


def assert_models_mirror(engine) -> None:
    """Every table, column (type, nullability) and foreign key of the models is in the database."""
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == set(Base.metadata.tables)
    for table in Base.metadata.sorted_tables:
        in_db = {c["name"]: c for c in inspector.get_columns(table.name)}
        in_model = {c.name: c for c in table.columns}
        assert set(in_db) == set(in_model), table.name
        for name, column in in_model.items():
            real = in_db[name]
            where = f"{table.name}.{name}"
            assert real["nullable"] == column.nullable, where
            assert _normalise(real["type"].compile(dialect=engine.dialect)) == _normalise(
                column.type.compile(dialect=engine.dialect)), where
        real_fks = {(fk["constrained_columns"][0], fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table.name)}
        model_fks = {(fk.parent.name, fk.column.table.name) for fk in table.foreign_keys}
        assert real_fks == model_fks, table.name


def _as_version_4(engine) -> None:
    """The database as an older mailbot left it: the schema of version 4."""
    with engine.begin() as conn:
        conn.exec_driver_sql((Path(__file__).parent / "data" / "schema-v4.sql").read_text("utf-8"))
        conn.exec_driver_sql("INSERT INTO schema_version (version) VALUES (4)")


def test_db_upgrade_applies_newer_migrations_once(database_url):
    engine = db.make_engine(database_url)
    _as_version_4(engine)
    with engine.begin() as conn:  # as if the database had been created by the first mailbot
        conn.exec_driver_sql("DELETE FROM schema_version")
        conn.exec_driver_sql("INSERT INTO schema_version (version) VALUES (1)")
        conn.exec_driver_sql("ALTER TABLE inbound ALTER COLUMN raw SET STORAGE EXTENDED")
    applied = db.upgrade_schema(engine)
    assert applied == [name for version, name, _ in db.migrations() if version > 1]
    assert db.current_version(engine) == db.latest_version()
    assert db.upgrade_schema(engine) == []
    with engine.connect() as conn:
        storage = conn.exec_driver_sql(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'inbound'::regclass "
            "AND attname = 'raw'").scalar_one()
    assert storage == "e"  # external: no pointless compression of mail
    assert_models_mirror(engine)


def test_db_upgrade_moves_the_files_of_version_4_into_the_file_store(database_url):
    engine = db.make_engine(database_url)
    _as_version_4(engine)
    logo, log = b"\x89PNG same logo", b"log line\n"
    with engine.begin() as conn:
        message = conn.exec_driver_sql(
            "INSERT INTO messages (direction) VALUES ('in') RETURNING id").scalar_one()
        for name, data in (("logo.png", logo), ("a.log", log), ("logo.png", logo)):
            conn.exec_driver_sql(
                "INSERT INTO attachments (message_id, filename, content_type, size, sha256, data) "
                "VALUES (%s, %s, 'application/octet-stream', %s, %s, %s)",
                (message, name, len(data), hashlib.sha256(data).hexdigest(), data))
    assert db.upgrade_schema(engine) == [name for version, name, _ in db.migrations() if version > 4]
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT sha256, size, data FROM files ORDER BY size").all()
        names = conn.exec_driver_sql(
            "SELECT a.filename, f.data FROM attachments a JOIN files f USING (sha256) "
            "ORDER BY a.id").all()
    assert [(row.size, bytes(row.data)) for row in stored] == [(len(log), log), (len(logo), logo)]
    assert [(row.filename, bytes(row.data)) for row in names] == [
        ("logo.png", logo), ("a.log", log), ("logo.png", logo)]
    with engine.connect() as conn, db.binary_cursor(conn) as cursor:  # read as any other file
        assert files.read(cursor, hashlib.sha256(logo).hexdigest(), None) == logo
    assert_models_mirror(engine)


def test_db_upgrade_leaves_contacts_stored_before_0008_unregistered_until_the_crm_is_imported(database_url):
    """Migration 0008 cannot tell the CRM's contacts from those earlier versions took from mail:
    all become 'mail' (they may act on their own requests only) until the CRM export is imported."""
    from sqlalchemy.orm import Session

    from mailbot.register.crm import import_text
    from mailbot.register.models import Contact

    engine = db.make_engine(database_url)
    _as_version_4(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO contacts (email, full_name) VALUES "
                             "('ivanov@zavod.example', 'Иванов Иван Иванович'), ('self@gmail.example', 'Сам')")
    db.upgrade_schema(engine)
    with Session(engine) as session:
        assert {c.email: c.registered for c in session.query(Contact)} == {
            "ivanov@zavod.example": False, "self@gmail.example": False}
        import_text(session, "organization;contact_email;contact_name\n"
                             "ООО «Завод»;ivanov@zavod.example;Иванов Иван Иванович\n")
        session.commit()
        assert {c.email: c.source for c in session.query(Contact)} == {
            "ivanov@zavod.example": "crm", "self@gmail.example": "mail"}
