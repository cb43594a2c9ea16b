"""SqliteStore specifics the shared contract can't express (files, pragmas, retention clean-up)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telemetry import Reading, SqliteStore, StoreUnavailable, TelemetryError

pytestmark = pytest.mark.timeout(60)

M = "env_sensor.telemetry"
NOW = datetime.now(UTC).replace(microsecond=0)


def r(device: str, age: timedelta, value: float = 1.0) -> Reading:
    return Reading(device, M, NOW - age, {"temp_c": value})


async def test_wal_mode_and_schema(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "sub" / "t.db") as store:
        await store.write([r("dev-1", timedelta(0))])
    conn = sqlite3.connect(tmp_path / "sub" / "t.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT device_id, fields FROM readings").fetchall() == [("dev-1", '{"temp_c":1.0}')]


async def test_apply_retention_deletes_existing_old_rows_and_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with SqliteStore(path, retention_interval=None) as store:
        await store.write([r(f"dev-{i}", timedelta(days=d)) for i in range(20) for d in (0, 3, 10)])
        assert await store.count() == 60
        await store.set_retention(5)  # deletes the 10-day-old rows at once
        assert await store.count() == 40
    async with SqliteStore(path, retention_interval=None) as store:  # retention survives a restart
        await store.write([r("dev-x", timedelta(days=6))])
        assert await store.count() == 40
        await store.set_retention(1)
        assert await store.apply_retention() == 0  # set_retention already applied it
        assert await store.count() == 20
    async with SqliteStore(path, retention_days=30, retention_interval=None) as store:  # option wins
        await store.write([r("dev-x", timedelta(days=6))])
        assert await store.count() == 21


async def test_periodic_retention(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "t.db") as store:  # no retention yet: old rows are kept
        await store.write([r("dev-1", timedelta(0)), r("dev-1", timedelta(days=3))])
    async with SqliteStore(tmp_path / "t.db", retention_days=1, retention_interval=0.05) as store:
        for _ in range(100):  # the first run is due after 0.05 s
            if await store.count() == 1:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("periodic retention never deleted the old reading")


async def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "t.db") as store:
        await asyncio.gather(
            *(store.write([r(f"dev-{w}", timedelta(seconds=i)) for i in range(500)]) for w in range(20))
        )
        assert await store.count() == 10_000


async def test_errors_are_translated(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable):
        await SqliteStore(tmp_path / "dir.db").start()
    store = SqliteStore(tmp_path / "t.db")
    with pytest.raises(TelemetryError, match="not started"):
        await store.count()
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "t.db", retention_days=0)
