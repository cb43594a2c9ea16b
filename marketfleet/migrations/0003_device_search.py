"""Index for fleet text search (fleet/search.py): FTS5 trigram on SQLite, pg_trgm GIN on PostgreSQL.

Upgrading an existing registry builds the index from the devices already there. Where the database cannot
have it (SQLite without FTS5/trigram, PostgreSQL without pg_trgm or the right to create it) the migration
still succeeds and search keeps scanning, with the same results.
"""

import logging

from tortoise import migrations
from tortoise.migrations import operations as ops

log = logging.getLogger("marketfleet.migrations")

SQLITE_UP = [
    "CREATE VIRTUAL TABLE device_search USING fts5(id, serial, name, content='device', content_rowid='rowid',"
    " tokenize='trigram')",
    "CREATE TRIGGER device_search_insert AFTER INSERT ON device BEGIN"
    " INSERT INTO device_search(rowid, id, serial, name) VALUES (new.rowid, new.id, new.serial, new.name); END",
    "CREATE TRIGGER device_search_delete AFTER DELETE ON device BEGIN"
    " INSERT INTO device_search(device_search, rowid, id, serial, name)"
    " VALUES ('delete', old.rowid, old.id, old.serial, old.name); END",
    # Presence and status updates rewrite the row too (the ORM saves every column): only a changed id, serial
    # or name touches the index.
    "CREATE TRIGGER device_search_update AFTER UPDATE OF id, serial, name ON device"
    " WHEN old.id IS NOT new.id OR old.serial IS NOT new.serial OR old.name IS NOT new.name BEGIN"
    " INSERT INTO device_search(device_search, rowid, id, serial, name)"
    " VALUES ('delete', old.rowid, old.id, old.serial, old.name);"
    " INSERT INTO device_search(rowid, id, serial, name) VALUES (new.rowid, new.id, new.serial, new.name); END",
    "INSERT INTO device_search(device_search) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS device_search_insert",
    "DROP TRIGGER IF EXISTS device_search_delete",
    "DROP TRIGGER IF EXISTS device_search_update",
    "DROP TABLE IF EXISTS device_search",
]
# One GIN index over id, serial and name joined by a unit separator (fleet/search.py: POSTGRES_TEXT): one index
# scan per search, where three per-column indexes cost several times more.
POSTGRES_UP = [
    "CREATE INDEX IF NOT EXISTS device_search_trgm ON device USING gin"
    " ((UPPER(id) || chr(31) || UPPER(serial) || chr(31) || UPPER(name)) gin_trgm_ops)",
]
POSTGRES_DOWN = ["DROP INDEX IF EXISTS device_search_trgm"]


async def _sqlite_has_trigram(client) -> bool:
    try:
        await client.execute_script("CREATE VIRTUAL TABLE temp.mf_trigram_probe USING fts5(x, tokenize='trigram');"
                                    " DROP TABLE temp.mf_trigram_probe;")
        return True
    except Exception as err:  # no FTS5, or SQLite older than 3.34
        log.warning("SQLite has no FTS5 trigram tokenizer (%s): fleet search will scan", err)
        return False


async def _postgres_has_trgm(client) -> bool:
    rows = await client.execute_query_dict("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    if rows:
        return True
    available = await client.execute_query_dict("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    if not available:
        log.warning("PostgreSQL has no pg_trgm (contrib not installed): fleet search will scan")
        return False
    # A failed CREATE EXTENSION (no privilege) must not abort the migration's transaction.
    await client.execute_script("SAVEPOINT mf_pg_trgm")
    try:
        await client.execute_script("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as err:
        await client.execute_script("ROLLBACK TO SAVEPOINT mf_pg_trgm")
        log.warning("cannot create extension pg_trgm (%s): fleet search will scan", err)
        return False
    await client.execute_script("RELEASE SAVEPOINT mf_pg_trgm")
    return True


async def forward(apps, schema_editor) -> None:
    client = schema_editor.client
    dialect = client.capabilities.dialect
    if dialect == "sqlite" and await _sqlite_has_trigram(client):
        for statement in SQLITE_UP:
            await client.execute_script(statement)
    elif dialect == "postgres" and await _postgres_has_trgm(client):
        for statement in POSTGRES_UP:
            await client.execute_script(statement)


async def backward(apps, schema_editor) -> None:
    client = schema_editor.client
    dialect = client.capabilities.dialect
    for statement in SQLITE_DOWN if dialect == "sqlite" else POSTGRES_DOWN if dialect == "postgres" else []:
        await client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [('models', '0002_kinds_tablet_broadcast')]

    initial = False

    operations = [
        ops.RunPython(forward, backward),
    ]
