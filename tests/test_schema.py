"""The register: schema.sql creates it, the models mirror it, init is idempotent."""
from __future__ import annotations

from sqlalchemy import inspect

from mailbot import db
from mailbot.models import Base


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


def test_db_upgrade_applies_newer_migrations_once(database_url):
    engine = db.make_engine(database_url)
    db.init_schema(engine)
    with engine.begin() as conn:  # as if the database had been created by an older mailbot
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
