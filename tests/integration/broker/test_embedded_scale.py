"""The embedded broker with thousands of devices: indexed delivery, connect storms, memory under churn."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator

import pytest

from broker import topics
from broker.service import BrokerParams, BrokerService, setup
from fleet.registry import Registry
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, register
from tests.integration.broker.mqtt_wire import WireClient
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(180)

# The 5,000 (~20 s on 2 cores when idle); MF_BROKER_SCALE_DEVICES for more; bench broker times it
DEVICES = int(os.environ.get("MF_BROKER_SCALE_DEVICES", "5000"))


@pytest.fixture
async def service(registry: Registry, store: SqliteStore) -> AsyncIterator[BrokerService]:
    svc = setup(BrokerParams(mode="embedded", port=find_free_port()), registry, store)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.fail(f"needs {needed} open files, the hard limit is {hard}: raise it (ulimit -n)", pytrace=False)


async def _connect_all(port: int, creds: dict[str, str], concurrency: int = 250) -> dict[str, WireClient]:
    clients: dict[str, WireClient] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(device_id: str, secret: str) -> None:
        async with gate:
            client = WireClient()
            assert await client.connect("127.0.0.1", port, device_id, device_id, secret, clean_session=False,
                                        keepalive=600, within=30) == 0
            assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)], within=30) == [1]
            clients[device_id] = client

    await asyncio.gather(*(one(d, s) for d, s in creds.items()))
    return clients


async def test_many_subscribed_devices_a_command_reaches_only_its_device(
    service: BrokerService, registry: Registry
) -> None:
    _raise_fd_limit(2 * DEVICES + 500)
    creds = await register(registry, DEVICES)
    started = time.monotonic()
    clients = await _connect_all(service.params.port, creds)
    connect_s = time.monotonic() - started
    try:
        assert service.embedded is not None and service.embedded.broker is not None
        broker = service.embedded.broker
        assert len(broker.index) == DEVICES
        ids = sorted(clients)
        target = ids[DEVICES // 2 + 7]
        command = json.dumps({"id": str(uuid.uuid4()), "command": "ping"}).encode()
        await service.publish(topics.down_topic("M1", target, "cmd"), command)
        topic, payload = await asyncio.wait_for(clients[target].messages.get(), 30)
        assert (topic, payload) == (topics.down_topic("M1", target, "cmd"), command)
        # one device's uplink is ingested and acked to it alone, with everyone subscribed
        sender = ids[42]
        await clients[sender].publish(topics.up_topic("M1", sender, "telemetry"),
                                      json.dumps({"seq": 0, "payload": env_payload()}).encode())
        ack_topic, ack = await asyncio.wait_for(clients[sender].messages.get(), 30)
        assert ack_topic == topics.down_topic("M1", sender, "ack") and json.loads(ack)["seqs"] == [0]
        await asyncio.sleep(0.3)
        others = [d for d, c in clients.items() if not c.messages.empty()]
        assert others == []
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients.values()))
    print(f"\n{DEVICES:,} devices connected and subscribed in {connect_s:.1f} s (timed in `marketfleet bench broker`)")


async def test_connect_churn_leaves_no_sessions_or_memory_behind(service: BrokerService, registry: Registry) -> None:
    """amqtt #123: sessions of churning client ids were kept forever in Broker._sessions."""
    assert service.embedded is not None and service.embedded.broker is not None
    broker = service.embedded.broker
    port = service.params.port
    [(device_id, secret)] = (await register(registry, 1)).items()

    async def churn(rounds: int) -> None:
        for _ in range(rounds):
            refused = WireClient()  # a random client id with a bad secret: refused, leaves nothing
            assert await refused.connect("127.0.0.1", port, f"x-{uuid.uuid4().hex}", "x", "y") == 5
            clean = WireClient()  # a clean session of the platform's kind of client
            assert await clean.connect("127.0.0.1", port, device_id, device_id, secret, clean_session=True) == 0
            await clean.subscribe([(topics.device_down_filter("M1", device_id), 1)])
            await clean.disconnect()
        await asyncio.sleep(0.2)

    await churn(100)  # warm-up: caches, code paths
    gc.collect()
    baseline_sessions = len(broker.sessions)
    tracemalloc.start()
    try:
        await churn(150)
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        await churn(150)
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(broker.sessions) == baseline_sessions <= 1
    assert len(broker.index) == 0
    assert broker.connection_count == 0
    assert second - first < 512 * 1024, f"grew {second - first} bytes over 150 connect/disconnect rounds"
