"""Per-device MQTT uplink limit (issue 11: rate limits per device): a device flooding the broker (embedded, or
Mosquitto with an ingest worker) has its excess uplinks dead-lettered as `rate_limited` and not acknowledged (it
keeps them and sends them again later); another device publishing at the same time has every reading stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import topics
from broker.models import DeadLetter
from broker.service import BrokerParams, BrokerService
from fleet.registry import Registry
from marketfleet.settings import load_settings
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, external_params, register, running
from tests.integration.broker.device import TestDevice
from tests.integration.broker.mqtt_wire import WireClient
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(120)

TS = "2026-11-23T08:15:02.120Z"
FLOOD = 80
BURST = 5


@pytest.fixture(params=["embedded", "external"])
async def service(request: pytest.FixtureRequest, registry: Registry, store: SqliteStore
                  ) -> AsyncIterator[BrokerService]:
    """The limit lives in the ingest pipeline both MQTT modes feed: amqtt in-process, or Mosquitto + a worker."""
    limit = {"device_rate_per_s": 0.5, "device_burst": BURST}
    if request.param == "embedded":
        params = BrokerParams(mode="embedded", port=find_free_port(), username="mf-platform",
                              password="platform-secret", **limit)
    else:
        params = external_params(request.getfixturevalue("mosquitto_server"), "rl", workers=1, **limit)
    async with running(params, registry, store) as svc:
        yield svc


async def until(condition, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(within / 0.1)):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_a_flooding_device_is_limited_and_dead_lettered_and_another_device_is_not(
    service: BrokerService, registry: Registry, store: SqliteStore, tmp_path: Path
) -> None:
    (flooder, flooder_secret), (quiet, quiet_secret) = (await register(registry, 2)).items()
    if service.provisioner is not None:  # external: the devices' Mosquitto accounts are pushed first
        await service.provisioner.flush()
    client = WireClient()
    assert await client.connect(service.params.host, service.params.port, flooder, flooder, flooder_secret,
                                clean_session=True, within=5) == 0
    assert await client.subscribe([(topics.device_down_filter("M1", flooder), 1)]) == [1]
    device = TestDevice(service.params.host, service.params.port, quiet, quiet_secret, "M1", tmp_path / "outbox.db")
    runner = asyncio.create_task(device.run())
    acked: set[int] = set()

    async def read_acks() -> None:
        while True:
            topic, payload = await client.messages.get()
            if topic.endswith("/down/ack"):
                acked.update(json.loads(payload)["seqs"])

    reader = asyncio.create_task(read_acks())
    try:
        await device.wait_connected()
        up = f"mf/v1/M1/{flooder}/up/telemetry"
        for seq in range(FLOOD):  # as fast as the socket takes them
            client.publish_nowait(up, json.dumps({"seq": seq, "ts": TS, "payload": env_payload(seq)}).encode(), 1)
        quiet_seqs = [device.produce(env_payload(i), ts=TS) for i in range(BURST)]
        await device.wait_outbox_empty(60)
        assert device.acked == set(quiet_seqs)  # the other device: everything stored and acknowledged
        assert await store.count(quiet) == BURST

        pipeline = service.pipeline

        async def all_decided() -> bool:  # every flood uplink either stored or refused
            return len(acked) + pipeline.stats.rejected["rate_limited"] == FLOOD

        await until(all_decided)
        refused = pipeline.stats.rejected["rate_limited"]
        assert refused > 0 and len(acked) >= BURST  # the burst went through, the rest was refused
        assert await store.count(flooder) == len(acked)  # refused uplinks were not stored, nor acknowledged

        async def dead_lettered() -> bool:
            return await DeadLetter.filter(device_id=flooder, reason="rate_limited").exists()

        await until(dead_lettered)
        letter = await DeadLetter.filter(device_id=flooder, reason="rate_limited").first()
        assert letter is not None and letter.transport == "mqtt" and letter.topic == up
        assert "rate limited" in letter.detail and "not acknowledged" in letter.detail
        assert not await DeadLetter.filter(device_id=quiet).exists()
    finally:
        reader.cancel()
        device.stop()
        await runner
        device.close()
        await client.abort()


def test_the_platform_setting_reaches_the_broker_params(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MF_BROKER__DEVICE_RATE_PER_S", "3.5")
    monkeypatch.setenv("MF_BROKER__DEVICE_BURST", "40")
    params = BrokerParams.from_settings(load_settings(None, data_dir=tmp_path).broker)
    assert (params.device_rate_per_s, params.device_burst) == (3.5, 40)
    monkeypatch.setenv("MF_BROKER__DEVICE_BURST", "0")
    with pytest.raises(ValueError, match="device_burst"):
        load_settings(None, data_dir=tmp_path)
