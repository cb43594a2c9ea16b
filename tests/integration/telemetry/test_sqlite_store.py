"""SqliteStore specifics the shared contract can't express (files, pragmas, retention clean-up)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


_field_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1), st.booleans(),
    st.text(st.characters(codec="utf-8")), st.text(st.characters(categories=("Cs", "Cc", "Lo"))),
)


async def test_fields_and_tags_read_back_exactly_what_was_written(tmp_path: Path) -> None:
    """Field values of every type and odd strings (lone surrogates, control characters), and tags whose text is
    remembered between writes: a range query returns them equal, with the same types."""
    async with SqliteStore(tmp_path / "t.sqlite3", retention_interval=None) as store:
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        written: list[Reading] = []

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(fields=st.dictionaries(st.sampled_from(["a", "b", "temp.c", "é"]), _field_values, min_size=1),
               market=st.sampled_from(["M1", "M2", "\u00e9"]))
        def one(fields: dict[str, object], market: str) -> None:
            tags = {"kind": "env_sensor", "market": market} if len(written) % 2 else {"market": market, "kind": "x"}
            written.append(Reading("d1", "m", t0 + timedelta(milliseconds=len(written)), fields, tags,  # type: ignore[arg-type]
                                   len(written)))

        one()
        for start in range(0, len(written), 40):
            await store.write(written[start:start + 40])
        back = await store.range("d1", "m", t0, t0 + timedelta(days=1))
        assert [(r.fields, r.tags, r.seq) for r in back] == [(r.fields, r.tags, r.seq) for r in written]
        assert [[(k, type(v)) for k, v in r.fields.items()] for r in back] == [
            [(k, type(v)) for k, v in r.fields.items()] for r in written]
