"""Backup → wipe → restore gives identical data (issue 11): registry, telemetry and the data directory,
on SQLite, on PostgreSQL + InfluxDB, and from one backend to the other."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accounts.service import Accounts, UserCreate
from fleet.models import Vendor
from fleet.registry import Registry
from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
from marketfleet import db
from marketfleet.backup import BackupError, backup, registry_models, restore
from marketfleet.platform import build_store, master_key, running_platform
from marketfleet.settings import Settings, load_settings
from telemetry import Reading

pytestmark = pytest.mark.timeout(180)


def make_settings(data_dir: Path, registry_url: str, telemetry: dict[str, Any] | None = None) -> Settings:
    return load_settings(None, data_dir=data_dir, registry={"url": registry_url}, api={"admin_token": "t0ken"},
                         telemetry=telemetry or {"backend": "sqlite"})


def telemetry_for(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend == "sqlite":
        return {"backend": "sqlite"}
    server = request.getfixturevalue("influx_server")
    return {"backend": "influxdb", "url": server.url, "database": f"backup_{uuid.uuid4().hex[:10]}"}


async def populate(settings: Settings) -> dict[str, str]:
    """A small market through the platform's own services: vendor, devices, a user, readings, a data file."""
    async with running_platform(settings, ingest=False) as platform:
        registry: Registry = platform.registry
        vendor, _ = await registry.create_vendor(VendorCreate(code="acme", name="Acme Scales"))
        await registry.create_market(MarketCreate(code="SZ-FT-001", name="Futian market"))
        result = await registry.register_devices(vendor, [
            DeviceCreate(serial=f"SN{n:04d}", kind="scale" if n % 2 else "env_sensor", market="SZ-FT-001",
                     labels={"zone": "A"}) for n in range(25)])
        await Accounts().create_user(UserCreate(username="wang", password="correct horse 1", role="manager",
                                                markets=["SZ-FT-001"]))
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        await platform.store.write([
            Reading(f"acme-SN{n % 25:04d}", "env_sensor.telemetry", t0 + timedelta(seconds=n),
                    {"temp_c": 20.0 + n / 10, "ok": n % 3 == 0, "note": f"n{n}"}, {"market": "SZ-FT-001"}, seq=n)
            for n in range(300)])
        secrets = {row.device_id: row.secret for row in result.rows if row.secret}
        (settings.data_dir / "firmware").mkdir(exist_ok=True)
        (settings.data_dir / "firmware" / "image.bin").write_bytes(b"\x7fELF" + bytes(range(256)))
        return secrets


async def snapshot(settings: Settings) -> dict[str, Any]:
    """Every row of every registry table, every reading, and the data files (not the databases)."""
    await db.connect(settings.registry_url)
    try:
        tables = {}
        for model in registry_models():
            rows = await model.all().order_by(model._meta.pk_attr).values()
            tables[f"{model._meta.app}.{model.__name__}"] = json.loads(json.dumps(rows, default=str))
    finally:
        await db.close()
    async with build_store(settings) as store:
        readings = sorted([r async for page in store.export() for r in page],
                          key=lambda r: (r.device_id, r.measurement, r.ts))
    files = {p.relative_to(settings.data_dir).as_posix(): p.read_bytes()
             for p in (settings.data_dir / "firmware").rglob("*") if p.is_file()}
    return {"tables": tables, "readings": readings, "files": files, "key": master_key(settings)}


@pytest.mark.parametrize(("source", "target"), [
    (("sqlite", "sqlite"), ("sqlite", "sqlite")),
    (("postgres", "influxdb"), ("postgres", "influxdb")),
    (("sqlite", "sqlite"), ("postgres", "influxdb")),
], ids=["sqlite", "postgres-influx", "sqlite-to-postgres-influx"])
async def test_backup_wipe_restore_gives_identical_data(
    tmp_path: Path, registry_url_factory, request: pytest.FixtureRequest,
    source: tuple[str, str], target: tuple[str, str],
) -> None:
    before_settings = make_settings(tmp_path / "before", registry_url_factory(source[0]),
                                    telemetry_for(source[1], request))
    secrets = await populate(before_settings)
    before = await snapshot(before_settings)
    assert len(before["readings"]) == 300 and len(before["tables"]["models.Device"]) == 25

    archive = tmp_path / "market.tar.gz"
    manifest = await backup(before_settings, archive)
    assert manifest.counts["registry/models.Device.jsonl"] == 25 and manifest.counts["telemetry.jsonl"] == 300

    # "Wipe": a new, empty database, telemetry store and data directory, as after losing the server.
    after_settings = make_settings(tmp_path / "after", registry_url_factory(target[0]),
                                   telemetry_for(target[1], request))
    await restore(after_settings, archive)
    after = await snapshot(after_settings)
    assert after == before

    # The restored platform is a working one: the same devices authenticate with the secrets issued before,
    # and new rows get fresh ids (PostgreSQL sequences moved past the restored ones).
    async with running_platform(after_settings, ingest=False) as platform:
        device_id, secret = next(iter(secrets.items()))
        assert await platform.registry.check_device_secret(device_id, secret) is not None
        vendor = await Vendor.get(code="acme")
        added = await platform.registry.register_devices(vendor, [DeviceCreate(serial="NEW1", kind="scale")])
        assert added.created == 1


async def test_restore_refuses_a_non_empty_registry_unless_told_to_replace(tmp_path: Path,
                                                                          registry_url_factory) -> None:
    source = make_settings(tmp_path / "a", registry_url_factory("sqlite"))
    await populate(source)
    archive = tmp_path / "a.tar.gz"
    await backup(source, archive)

    target = make_settings(tmp_path / "b", registry_url_factory("sqlite"))
    async with running_platform(target, ingest=False) as platform:
        await platform.registry.create_vendor(VendorCreate(code="other", name="Someone else"))
    with pytest.raises(BackupError, match=r"not empty.*--replace"):
        await restore(target, archive)
    await restore(target, archive, replace=True)
    assert (await snapshot(target))["tables"] == (await snapshot(source))["tables"]


async def test_a_damaged_or_foreign_archive_is_refused_before_anything_is_written(
    tmp_path: Path, registry_url_factory
) -> None:
    source = make_settings(tmp_path / "a", registry_url_factory("sqlite"))
    await populate(source)
    archive = tmp_path / "a.tar.gz"
    await backup(source, archive)

    # Flip one device row inside the archive, keeping the manifest: the hash check must catch it.
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "registry/models.Device.jsonl":
                data = data.replace(b"SN0001", b"SN9999")
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    target = make_settings(tmp_path / "b", registry_url_factory("sqlite"))
    with pytest.raises(BackupError, match=r"damaged: registry/models\.Device\.jsonl"):
        await restore(target, damaged)
    not_a_backup = tmp_path / "x.tar.gz"
    not_a_backup.write_bytes(b"hello")
    with pytest.raises(BackupError, match="cannot read backup"):
        await restore(target, not_a_backup)
    await db.connect(target.registry_url)
    try:
        assert all([not await m.all().exists() for m in registry_models()])
    finally:
        await db.close()


def test_cli_backup_and_restore_print_one_clear_line(tmp_path: Path) -> None:
    env = {"MF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    run = lambda *args, **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "marketfleet", *args], cwd=tmp_path, env={**env, **extra}, capture_output=True,
        text=True, timeout=120)
    assert run("vendor", "create", "acme", "--name", "Acme").returncode == 0
    made = run("backup", "--out", str(tmp_path / "b.tar.gz"))
    assert made.returncode == 0, made.stderr
    assert "registry rows" in made.stdout and (tmp_path / "b.tar.gz").is_file()
    refused = run("restore", str(tmp_path / "b.tar.gz"))
    assert refused.returncode == 2 and "not empty" in refused.stderr and "Traceback" not in refused.stderr
    fresh = run("restore", str(tmp_path / "b.tar.gz"), MF_DATA_DIR=str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr
    missing = run("restore", str(tmp_path / "nope.tar.gz"))
    assert missing.returncode == 2 and "no such backup" in missing.stderr
