"""Random bytes on MQTT: raw garbage into the broker's socket and random payloads on a device's own topic.

Issue 11 (fuzzing): the embedded broker and the Mosquitto ingest workers stay up, the garbage is refused or
dead-lettered, and a well-behaved device publishing at the same time keeps its one session and has every
reading stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import topics
from broker.models import DeadLetter
from broker.service import BrokerParams, BrokerService
from fleet.registry import Registry
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, external_params, register, running
from tests.integration.broker.device import TestDevice
from tests.integration.broker.mqtt_wire import WireClient
from tests.services import MosquittoServer, find_free_port

pytestmark = pytest.mark.timeout(240)

TS = "2026-11-23T08:15:02.120Z"


def garbage(rng: random.Random, i: int) -> bytes:
    """Shapes that reach different parts of a broker's parser, not only its first byte."""
    shape = i % 5
    if shape == 0:
        return rng.randbytes(rng.randint(1, 4096))  # anything at all
    if shape == 1:
        return b"\x10" + rng.randbytes(rng.randint(1, 300))  # a CONNECT header, then noise
    if shape == 2:
        return b"\x10\xff\xff\xff\xff\x7f" + rng.randbytes(64)  # remaining length longer than MQTT allows
    if shape == 3:  # a CONNECT with a made-up protocol name and level
        name = rng.randbytes(rng.randint(0, 12))
        body = len(name).to_bytes(2, "big") + name + bytes([rng.randrange(256), rng.randrange(256)]) + b"\x00\x3c"
        return b"\x10" + bytes([len(body)]) + body + rng.randbytes(32)
    return bytes([rng.randrange(0x20, 0x100)]) + rng.randbytes(rng.randint(0, 64))  # a packet type before CONNECT


async def blast(host: str, port: int, seed: int, connections: int = 60) -> None:
    """Open many connections that each send random bytes; each may be closed by the broker or left hanging."""
    rng = random.Random(seed)
    for i in range(connections):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)  # still accepting
        writer.write(garbage(rng, i))
        try:
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 0.5)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def random_payloads(host: str, port: int, device_id: str, secret: str, seed: int, count: int = 80) -> int:
    """A genuine device that publishes random bytes on its own up topics; returns how many acks said rejected."""
    rng = random.Random(seed)
    client = WireClient()
    assert await client.connect(host, port, device_id, device_id, secret, clean_session=True, within=10) == 0
    assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)]) == [1]
    for i in range(count):
        channel = ("telemetry", "event", "state")[i % 3]
        await client.publish(topics.up_topic("M1", device_id, channel), rng.randbytes(rng.randint(0, 2048)))
    rejected = 0
    try:
        async with asyncio.timeout(30):
            while rejected < count:
                topic, payload = await client.messages.get()
                if topic.endswith("/down/ack"):
                    rejected += len(json.loads(payload)["rejected"])
    except TimeoutError:
        pass
    await client.disconnect()
    return rejected


async def make_device(host: str, port: int, registry: Registry, tmp_path: Path) -> tuple[str, TestDevice]:
    [(device_id, secret)] = (await register(registry, 1)).items()
    return device_id, TestDevice(host, port, device_id, secret, "M1", tmp_path / f"{device_id}.sqlite3")


async def run_good_device(device: TestDevice, attack) -> list[int]:
    """The device publishes before, during and after `attack`; returns the seqs it produced."""
    runner = asyncio.create_task(device.run())
    seqs: list[int] = []
    try:
        await device.wait_connected(20)
        seqs += [device.produce(env_payload(i), ts=TS) for i in range(100)]

        async def trickle() -> None:
            for i in range(100, 300):
                seqs.append(device.produce(env_payload(i), ts=TS))
                await asyncio.sleep(0.01)

        await asyncio.gather(attack(), trickle())
        seqs += [device.produce(env_payload(i), ts=TS) for i in range(300, 400)]
        await device.wait_outbox_empty(60)
        assert device.connects == 1  # its session was never dropped by the garbage next to it
    finally:
        device.stop()
        await runner
        device.close()
    return seqs


# ---------------------------------------------------------------- embedded broker (amqtt) with its ingest


@pytest.fixture
async def embedded(registry: Registry, store: SqliteStore) -> AsyncIterator[BrokerService]:
    params = BrokerParams(mode="embedded", port=find_free_port(), username="mf-platform", password="platform-secret")
    async with running(params, registry, store) as svc:
        yield svc


async def test_random_bytes_into_the_embedded_broker_leave_it_up_and_other_devices_intact(
    embedded: BrokerService, registry: Registry, store: SqliteStore, tmp_path: Path
) -> None:
    port = embedded.params.port
    [(fuzzer, fuzzer_secret)] = (await register(registry, 1)).items()
    device_id, device = await make_device("127.0.0.1", port, registry, tmp_path)
    rejected: list[int] = []

    async def attack() -> None:
        await blast("127.0.0.1", port, seed=11)
        rejected.append(await random_payloads("127.0.0.1", port, fuzzer, fuzzer_secret, seed=12))

    seqs = await run_good_device(device, attack)
    assert device.acked == set(seqs) and len(seqs) == 400
    assert await store.count(device_id) == 400
    assert await store.count(fuzzer) == 0  # random bytes are never readings
    assert rejected == [80]  # every random payload was answered with a reason
    letters = await DeadLetter.filter(device_id=fuzzer).count()
    assert letters == 80
    # and the broker still takes a fresh, well-formed connection afterwards
    again = WireClient()
    assert await again.connect("127.0.0.1", port, fuzzer, fuzzer, fuzzer_secret, clean_session=True, within=10) == 0
    await again.disconnect()


# ---------------------------------------------------------------- Mosquitto with two shared-subscription workers


@pytest.fixture
async def external(
    mosquitto_server: MosquittoServer, registry: Registry, store: SqliteStore
) -> AsyncIterator[BrokerService]:
    async with running(external_params(mosquitto_server, 'fuzz'), registry, store) as svc:
        yield svc


async def test_random_bytes_into_mosquitto_and_its_ingest_workers_leave_other_devices_intact(
    mosquitto_server: MosquittoServer, external: BrokerService, registry: Registry, store: SqliteStore,
    tmp_path: Path
) -> None:
    host, port = mosquitto_server.host, mosquitto_server.port
    [(fuzzer, fuzzer_secret)] = (await register(registry, 1)).items()
    device_id, device = await make_device(host, port, registry, tmp_path)
    assert external.provisioner is not None
    await external.provisioner.flush()
    rejected: list[int] = []

    async def attack() -> None:
        await blast(host, port, seed=21)
        rejected.append(await random_payloads(host, port, fuzzer, fuzzer_secret, seed=22))

    seqs = await run_good_device(device, attack)
    assert device.acked == set(seqs) and len(seqs) == 400
    assert await store.count(device_id) == 400
    assert await store.count(fuzzer) == 0
    assert rejected == [80]  # the workers saw every random payload and answered each with a reason
    assert await DeadLetter.filter(device_id=fuzzer).count() == 80
