"""Broker restart in external mode (issue 11, crash safety): Mosquitto goes away and comes back on the same port;
both shared-subscription ingest workers reconnect by themselves, and every reading the device kept in its outbox
meanwhile is stored exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.service import BrokerService
from fleet.registry import Registry
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, external_params, register, running
from tests.integration.broker.device import TestDevice
from tests.services import MosquittoServer

pytestmark = pytest.mark.timeout(240)
TS = "2026-11-23T08:15:02.120Z"


@pytest.fixture
async def service(
    mosquitto_server: MosquittoServer, registry: Registry, store: SqliteStore
) -> AsyncIterator[BrokerService]:
    async with running(external_params(mosquitto_server, 'restart'), registry, store) as svc:
        yield svc


async def workers_connected(service: BrokerService, within: float = 90) -> None:
    async with asyncio.timeout(within):
        await asyncio.gather(*(w.connected.wait() for w in service.workers))


async def test_mosquitto_restart_loses_nothing_and_stores_nothing_twice(
    mosquitto_server: MosquittoServer, service: BrokerService, registry: Registry, store: SqliteStore,
    tmp_path: Path
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    assert service.provisioner is not None
    await service.provisioner.flush()
    device = TestDevice(mosquitto_server.host, mosquitto_server.port, device_id, secret, "M1",
                        tmp_path / "outbox.sqlite3")
    runner = asyncio.create_task(device.run())
    try:
        await device.wait_connected(20)
        for i in range(200):
            device.produce(env_payload(i), ts=TS)
        await device.wait_outbox_empty(60)
        await asyncio.to_thread(mosquitto_server.stop)
        for i in range(200, 500):  # the device keeps measuring into its outbox
            device.produce(env_payload(i), ts=TS)
        await asyncio.sleep(1)
        assert len(device.pending()) == 300
        await asyncio.to_thread(mosquitto_server.start)
        await workers_connected(service)
        await device.wait_connected(30)
        await device.drop_link()  # like a device's resend timer: replays what is still unacknowledged
        for i in range(500, 600):
            device.produce(env_payload(i), ts=TS)
        await device.wait_outbox_empty(90)
    finally:
        device.stop()
        await runner
        device.close()
        if not mosquitto_server.running:
            await asyncio.to_thread(mosquitto_server.start)
    assert device.acked == set(range(600))
    assert await store.count(device_id) == 600  # each once: replays of stored seqs are acked, not stored again
