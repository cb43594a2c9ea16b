"""The database itself keeps the audit log append-only (SJZ table 1 items 1.5–1.9, BJ 4.3.4).

Triggers on `audit_entry` refuse every UPDATE and DELETE (and TRUNCATE on PostgreSQL) with "audit log is
append-only", whoever sends them: the ORM, a raw query, a `psql`/`sqlite3` session with the platform's
credentials. Inserts are untouched. The migration `accounts.0002_audit_append_only` installs them, also on an
existing registry.

The one legitimate exception is `marketfleet restore --replace`, which empties the registry before it loads an
archive: it calls `writable_audit_log(conn)` inside its transaction, so the guard is lifted for that transaction
only and back before it commits (DDL is transactional on both backends: a failed restore rolls back to a
guarded table too). Nothing in the platform prunes the audit log (it is kept, see docs/operations.md).

What this does not stop: the database owner dropping the triggers by hand. It makes tampering a deliberate act
outside the platform, not something a bug or a leaked API token can do; ship backups to cold storage for the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

TABLE = "audit_entry"
MESSAGE = "audit log is append-only"

SQLITE_TRIGGERS = {
    "audit_entry_no_update": f"CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON {TABLE}"
                             f" BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
    "audit_entry_no_delete": f"CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON {TABLE}"
                             f" BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
}
# SQLSTATE 23000 (integrity_constraint_violation): drivers and tortoise report it as an IntegrityError, as
# SQLite's RAISE(ABORT) is, so callers see one kind of error on both backends.
POSTGRES_UP = [
    "CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$"
    f" BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'integrity_constraint_violation'; END $$",
    f"CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON {TABLE}"
    " FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only()",
    f"CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON {TABLE}"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_entry_append_only()",
]
POSTGRES_DOWN = [
    f"DROP TRIGGER IF EXISTS audit_entry_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_entry_append_only ON {TABLE}",
    "DROP FUNCTION IF EXISTS audit_entry_append_only()",
]


def _dialect(conn: Any) -> str:
    return str(conn.capabilities.dialect)


# On SQLite every statement goes through execute_query: the driver's executescript() COMMITs an open
# transaction first, which would end restore's transaction half-way.


async def install(conn: Any) -> None:
    """Create the guard (idempotent: drops an existing one first)."""
    if _dialect(conn) == "sqlite":
        for name, create in SQLITE_TRIGGERS.items():
            await conn.execute_query(f"DROP TRIGGER IF EXISTS {name}")
            await conn.execute_query(create)
    elif _dialect(conn) == "postgres":
        for statement in POSTGRES_DOWN + POSTGRES_UP:
            await conn.execute_script(statement)
    else:
        raise RuntimeError(f"no append-only guard for the {_dialect(conn)} dialect")


async def uninstall(conn: Any) -> None:
    if _dialect(conn) == "sqlite":
        for name in SQLITE_TRIGGERS:
            await conn.execute_query(f"DROP TRIGGER IF EXISTS {name}")
    elif _dialect(conn) == "postgres":
        for statement in POSTGRES_DOWN:
            await conn.execute_script(statement)


async def guarded(conn: Any) -> bool:
    """Whether the triggers are in place and enabled."""
    if _dialect(conn) == "sqlite":
        rows = await conn.execute_query_dict(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", [TABLE])
        return {r["name"] for r in rows} >= set(SQLITE_TRIGGERS)
    rows = await conn.execute_query_dict(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_entry'::regclass AND NOT tgisinternal"
        " AND tgenabled <> 'D'")
    return {r["tgname"] for r in rows} >= {"audit_entry_append_only", "audit_entry_no_truncate"}


@asynccontextmanager
async def writable_audit_log(conn: Any) -> AsyncIterator[None]:
    """Lift the guard for the body, on `conn`, which must be inside a transaction (restore --replace only).

    The guard is put back after the body, still inside the transaction; if the body raises, the transaction's
    rollback undoes the lifting as well (nothing to restore by hand, and nothing could run on PostgreSQL's
    aborted transaction anyway).
    """
    if _dialect(conn) == "postgres":
        # Keeps the trigger definitions; only the table owner (the platform's own role) may do this.
        await conn.execute_script(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        yield
        await conn.execute_script(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")
    else:
        await uninstall(conn)
        yield
        await install(conn)
