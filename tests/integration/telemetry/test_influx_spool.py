"""InfluxStore's spool against a real InfluxDB that goes away and comes back.

These tests stop and restart the session's shared `influx_server`; each one restarts it in a
`finally`, so a failure here can't take InfluxDB away from the tests that follow.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telemetry import InfluxStore, Reading, StoreUnavailable, WriteRejected
from telemetry.influxql import line_for
from telemetry.spool import Spool, encode_record

pytestmark = [pytest.mark.influx, pytest.mark.timeout(180)]

M = "env_sensor.telemetry"
T0 = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0)
FAR = T0 + timedelta(days=1)


def batch(start: int, n: int, device: str = "dev-1") -> list[Reading]:
    return [
        Reading(device, M, T0 + timedelta(seconds=i), {"v": float(i)}, {"market": "north"}, seq=i)
        for i in range(start, start + n)
    ]


@pytest.fixture
def database(influx_server: Any) -> Iterator[str]:
    name = f"spool_{uuid.uuid4().hex[:12]}"
    yield name
    if not influx_server.running:
        influx_server.start()
    influx_server.query(f'DROP DATABASE "{name}"')


@pytest.fixture
async def store(influx_server: Any, database: str, tmp_path: Path) -> AsyncIterator[InfluxStore]:
    async with InfluxStore(influx_server.url, database, spool_dir=tmp_path, probe_interval=0.05, timeout=5.0) as s:
        yield s


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def drained(store: InfluxStore, seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        await store.wait_drained()


async def test_outage_mid_stream_loses_nothing_and_keeps_order(influx_server: Any, store: InfluxStore) -> None:
    await store.write(batch(0, 500))
    # This point is re-written during the outage; only in-order replay leaves the last value.
    await store.write([Reading("dev-1", M, FAR - timedelta(hours=1), {"v": -1.0}, {"market": "north"})])
    await asyncio.to_thread(influx_server.stop)
    try:
        for start in range(500, 3000, 250):  # keeps writing while InfluxDB is down
            await store.write(batch(start, 250))
        for value in (-2.0, -3.0, -4.0):
            await store.write([Reading("dev-1", M, FAR - timedelta(hours=1), {"v": value}, {"market": "north"})])
        assert store.spooling
        assert store.spooled_batches == 13 and store.spool_bytes > 0
    finally:
        await asyncio.to_thread(influx_server.start)
    await store.write(batch(3000, 100))  # accepted while the backlog replays, queued behind it
    await drained(store)
    assert store.spooled_batches == 0 and store.spool_bytes == 0 and not store.spooling

    got = await store.range("dev-1", M, T0, FAR, limit=10_000)
    assert [r.seq for r in got[:-1]] == list(range(3100))  # every reading, once, in order
    assert got[-1].fields == {"v": -4.0}
    assert await store.count() == 3101
    await store.write(batch(3100, 10))  # and direct writes work again
    assert await store.count() == 3111


async def test_spool_outlives_the_store(influx_server: Any, database: str, tmp_path: Path, dead_url: str) -> None:
    async with InfluxStore(dead_url, database, spool_dir=tmp_path) as down:
        await down.write(batch(0, 100))
        await down.write(batch(100, 100))
        assert down.spooled_batches == 2
    # A new process, InfluxDB reachable: the acknowledged batches arrive.
    async with InfluxStore(influx_server.url, database, spool_dir=tmp_path, probe_interval=0.05) as up:
        await drained(up)
        assert [r.seq for r in await up.range("dev-1", M, T0, FAR)] == list(range(200))


async def test_torn_spool_record_is_skipped_on_recovery(influx_server: Any, database: str, tmp_path: Path) -> None:
    with Spool(tmp_path / database) as spool:
        for start in (0, 10):
            spool.append("\n".join(line_for(r) for r in batch(start, 10)).encode())
    (segment,) = (tmp_path / database).glob("*.seg")
    torn = encode_record("\n".join(line_for(r) for r in batch(20, 10)).encode())
    with segment.open("ab") as f:
        f.write(torn[: len(torn) // 2])  # a crash in the middle of an append

    async with InfluxStore(influx_server.url, database, spool_dir=tmp_path, probe_interval=0.05) as store:
        assert store.spooled_batches == 2
        await drained(store)
        assert [r.seq for r in await store.range("dev-1", M, T0, FAR)] == list(range(20))
        assert list((tmp_path / database).glob("*.seg")) == []


async def test_full_spool_is_back_pressure(database: str, tmp_path: Path, dead_url: str) -> None:
    async with InfluxStore(dead_url, database, spool_dir=tmp_path, max_spool_bytes=64 * 1024) as store:
        accepted = 0
        with pytest.raises(StoreUnavailable):
            for start in range(0, 100_000, 100):
                await store.write(batch(start, 100))
                accepted += 1
        assert accepted > 0
        assert store.spooled_batches == accepted  # what was acknowledged is kept, nothing dropped
        assert store.spool_bytes <= 64 * 1024


async def test_bad_data_is_rejected_not_spooled(store: InfluxStore) -> None:
    await store.write([Reading("dev-1", M, T0, {"v": 1.0})])
    clash = Reading("dev-'7'", M, T0 + timedelta(seconds=1), {"v": "a string now"})
    with pytest.raises(WriteRejected) as exc:
        await store.write([clash, *batch(100, 3)])
    assert exc.value.line == line_for(clash)
    assert "field type conflict" in str(exc.value)
    assert store.spooled_batches == 0 and not store.spooling


async def test_without_a_spool_an_outage_raises(database: str, dead_url: str) -> None:
    async with InfluxStore(dead_url, database, spool_dir=None) as store:
        with pytest.raises(StoreUnavailable):
            await store.write(batch(0, 1))
