"""Resume after a break (断点续传): a device keeps producing while its link is down; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.service import BrokerParams, BrokerService, setup
from fleet.registry import Registry
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, register
from tests.integration.broker.device import TestDevice
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def service(registry: Registry, store: SqliteStore) -> AsyncIterator[BrokerService]:
    svc = setup(BrokerParams(mode="embedded", port=find_free_port()), registry, store)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


def ts(i: int) -> int:
    return 1_795_000_000_000 + i * 1000  # epoch ms, one reading per second of device time


async def produce(device: TestDevice, start: int, count: int, pause_every: int = 50) -> None:
    for i in range(start, start + count):
        device.produce(env_payload(i), ts=ts(i))
        if i % pause_every == 0:
            await asyncio.sleep(0.005)  # a real device produces over time; lets acks interleave


async def test_broker_outage_loses_nothing_and_stores_nothing_twice(
    service: BrokerService, registry: Registry, store: SqliteStore, tmp_path: Path
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    assert service.embedded is not None
    device = TestDevice("127.0.0.1", service.params.port, device_id, secret, "M1", tmp_path / "outbox.sqlite3")
    runner = asyncio.create_task(device.run())
    try:
        await device.wait_connected()
        await produce(device, 0, 300)
        await service.embedded.aclose()
        await produce(device, 300, 400)  # the device keeps measuring into its outbox
        await asyncio.sleep(1.0)
        assert len(device.pending()) >= 400
        await service.embedded.start()  # back on the same port; the device reconnects and replays
        await produce(device, 700, 300)
        await device.wait_outbox_empty(60)
    finally:
        device.stop()
        await runner
        device.close()
    assert device.connects >= 2
    assert device.acked == set(range(1000))
    assert await store.count(device_id) == 1000
    stored = await store.range(device_id, "env_sensor.telemetry", *_window(), limit=5000)
    assert sorted(r.seq for r in stored) == list(range(1000))


async def test_dropped_links_while_sending_lose_nothing(
    service: BrokerService, registry: Registry, store: SqliteStore, tmp_path: Path
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    device = TestDevice("127.0.0.1", service.params.port, device_id, secret, "M1", tmp_path / "outbox.sqlite3")
    runner = asyncio.create_task(device.run())
    try:
        await device.wait_connected()
        for burst in range(5):
            await produce(device, burst * 200, 200, pause_every=100)
            await device.drop_link()  # no DISCONNECT: published-but-unacked messages are replayed
            await device.wait_connected()
        await device.wait_outbox_empty(60)
    finally:
        device.stop()
        await runner
        device.close()
    assert device.acked == set(range(1000))
    assert await store.count(device_id) == 1000


def _window() -> tuple:
    from datetime import UTC, datetime, timedelta

    start = datetime.fromtimestamp(ts(0) / 1000, UTC) - timedelta(seconds=1)
    return start, start + timedelta(days=1)
