"""The audit log is append-only in the database itself (issue 11, audit log), on SQLite and PostgreSQL.

UPDATE and DELETE on `audit_entry` are refused through the ORM and through raw SQL; inserts keep working; an
existing registry gets the guard when it is upgraded; `restore --replace` still replaces the audit log with the
archive's and leaves the guard in place.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
from tortoise import Tortoise
from tortoise.exceptions import IntegrityError
from tortoise.migrations.api import migrate

from accounts import append_only
from accounts.models import AuditEntry, Role, Session
from accounts.permissions import Principal
from accounts.service import Accounts, Unauthorised, UserCreate, audit
from marketfleet import db
from marketfleet.backup import BackupError, backup, restore
from marketfleet.platform import running_platform
from tests.integration.test_backup import make_settings, populate, snapshot

pytestmark = pytest.mark.timeout(180)
BACKENDS = ["sqlite", "postgres"]
REFUSED = "audit log is append-only"
ALICE = Principal(actor="user:alice", role=Role.ADMIN)


async def write_some_entries() -> None:
    """Entries the way the platform writes them: sign-ins (one failed) and an audited change."""
    accounts = Accounts()
    await accounts.create_user(UserCreate(username="alice", password="correct horse 1", role="admin"))
    with pytest.raises(Unauthorised):
        await accounts.login("alice", "wrong", ip="10.0.0.7")
    token, _ = await accounts.login("alice", "correct horse 1", ip="10.0.0.7")
    await accounts.logout(token)  # other accounts rows stay deletable
    await audit(ALICE, "PUT /api/v1/devices/acme-SN1", target="/api/v1/devices/acme-SN1", ip="10.0.0.7",
                before={"name": "old"}, after={"name": "new"})


async def rows() -> list[dict]:
    return await AuditEntry.all().order_by("id").values()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_updates_and_deletes_of_audit_entries_are_refused_and_inserts_still_work(
    backend: str, registry_url_factory
) -> None:
    url = registry_url_factory(backend)
    await db.connect(url)
    try:
        await write_some_entries()
        assert not await Session.exists()
        before = await rows()
        assert [r["action"] for r in before] == ["login_failed", "login", "PUT /api/v1/devices/acme-SN1"]
        entry = await AuditEntry.get(action="login_failed")
        conn = Tortoise.get_connection("default")

        # Through the ORM: covering up a failed sign-in, rewriting history, deleting it.
        entry.status = 200
        with pytest.raises(IntegrityError, match=REFUSED):
            await entry.save()
        with pytest.raises(IntegrityError, match=REFUSED):
            await AuditEntry.filter(actor="user:alice").update(ip="127.0.0.1")
        with pytest.raises(IntegrityError, match=REFUSED):
            await entry.delete()
        with pytest.raises(IntegrityError, match=REFUSED):
            await AuditEntry.all().delete()

        # Through raw SQL on the platform's own connection.
        for statement in ("UPDATE audit_entry SET actor = 'nobody'", "DELETE FROM audit_entry",
                          "DELETE FROM audit_entry WHERE action = 'login_failed'",
                          *(["TRUNCATE audit_entry"] if backend == "postgres" else [])):
            with pytest.raises(IntegrityError, match=REFUSED):
                await conn.execute_query(statement)
        if backend == "sqlite":  # and from another program opening the file (the sqlite3 shell, a script)
            with sqlite3.connect(url.removeprefix("sqlite://")) as other, \
                    pytest.raises(sqlite3.IntegrityError, match=REFUSED):  # fmt: skip
                other.execute("DELETE FROM audit_entry")

        assert await rows() == before  # nothing changed
        await audit(ALICE, "DELETE /api/v1/rules/r1", target="/api/v1/rules/r1", status=204)
        after = await rows()
        assert after[:-1] == before and after[-1]["action"] == "DELETE /api/v1/rules/r1"
        assert await append_only.guarded(conn)
    finally:
        await db.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_existing_registry_gets_the_guard_when_upgraded(backend: str, registry_url_factory) -> None:
    url = registry_url_factory(backend)
    # A registry as the previous version left it: accounts at 0001, with entries in it.
    await migrate(config=db.tortoise_config(url), target="accounts.0001_initial")
    try:
        conn = Tortoise.get_connection("default")
        assert not await append_only.guarded(conn)
        await conn.execute_query(
            "INSERT INTO audit_entry (at, actor, role, action, target, status, ip)"
            " VALUES (CURRENT_TIMESTAMP, 'user:old', 'admin', 'login', '', 200, '10.0.0.1')")
        await conn.execute_query("UPDATE audit_entry SET ip = '10.0.0.2'")  # unguarded before the upgrade
    finally:
        await db.close()

    await db.connect(url)  # upgrades, as every start does
    try:
        conn = Tortoise.get_connection("default")
        assert await append_only.guarded(conn)
        [old] = await rows()
        assert (old["actor"], old["ip"]) == ("user:old", "10.0.0.2")
        with pytest.raises(IntegrityError, match=REFUSED):
            await AuditEntry.filter(id=old["id"]).update(ip="10.0.0.3")
        with pytest.raises(IntegrityError, match=REFUSED):
            await conn.execute_query("DELETE FROM audit_entry")
        await audit(ALICE, "login")
        assert await AuditEntry.all().count() == 2
    finally:
        await db.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_restore_replace_replaces_the_audit_log_and_keeps_it_guarded(
    backend: str, tmp_path: Path, registry_url_factory
) -> None:
    source = make_settings(tmp_path / "a", registry_url_factory(backend))
    await populate(source)
    await db.connect(source.registry_url)
    try:
        await write_some_entries()
    finally:
        await db.close()
    expected = await snapshot(source)
    assert len(expected["tables"]["accounts.AuditEntry"]) == 3
    archive = tmp_path / "a.tar.gz"
    await backup(source, archive)

    # The target is a running market with an audit log of its own, which --replace must be able to empty.
    target = make_settings(tmp_path / "b", registry_url_factory(backend))
    async with running_platform(target, ingest=False):
        await audit(ALICE, "POST /api/v1/markets", target="/api/v1/markets", status=201, after={"code": "X"})
        await audit(ALICE, "POST /api/v1/vendors", target="/api/v1/vendors", status=201)
    await restore(target, archive, replace=True)
    restored = await snapshot(target)
    assert restored["tables"] == expected["tables"]  # the audit log included, ids and times as they were

    await db.connect(target.registry_url)
    try:
        conn = Tortoise.get_connection("default")
        assert await append_only.guarded(conn)
        with pytest.raises(IntegrityError, match=REFUSED):
            await AuditEntry.all().delete()
        await audit(ALICE, "login")  # and new entries follow the restored ones
        assert await AuditEntry.all().count() == 4
    finally:
        await db.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_failed_restore_replace_leaves_the_registry_and_its_audit_log_as_they_were(
    backend: str, tmp_path: Path, registry_url_factory
) -> None:
    source = make_settings(tmp_path / "a", registry_url_factory(backend))
    await populate(source)
    archive = tmp_path / "a.tar.gz"
    await backup(source, archive)
    # An archive whose audit log turns out shorter than its manifest says, found only while loading.
    broken = tmp_path / "broken.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(broken, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["counts"]["registry/accounts.AuditEntry.jsonl"] += 1
                data = json.dumps(manifest).encode()
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))

    target = make_settings(tmp_path / "b", registry_url_factory(backend))
    await db.connect(target.registry_url)
    try:
        await write_some_entries()
    finally:
        await db.close()
    before = await snapshot(target)
    with pytest.raises(BackupError, match=r"accounts\.AuditEntry\.jsonl: restored 0 rows, the manifest says 1"):
        await restore(target, broken, replace=True)
    assert (await snapshot(target))["tables"] == before["tables"]  # nothing deleted, the audit log included
    await db.connect(target.registry_url)
    try:
        assert await append_only.guarded(Tortoise.get_connection("default"))
    finally:
        await db.close()
