"""The embedded broker end to end: real amqtt, real sockets, real registry and telemetry store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import topics
from broker.bus import PresenceChanged
from broker.models import DeadLetter
from broker.service import BrokerParams, BrokerService
from fleet.envelope import Envelope
from fleet.models import Device
from fleet.registry import Registry
from telemetry import SqliteStore
from tests.integration.broker.conftest import env_payload, register, running
from tests.integration.broker.device import TestDevice
from tests.integration.broker.mqtt_wire import WireClient
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(120)

TS = "2026-11-23T08:15:02.120Z"
SERVICE_USER, SERVICE_PASSWORD = "mf-platform", "platform-secret"


@pytest.fixture
async def service(registry: Registry, store: SqliteStore) -> AsyncIterator[BrokerService]:
    params = BrokerParams(mode="embedded", port=find_free_port(), username=SERVICE_USER, password=SERVICE_PASSWORD,
                          presence_flush_s=0.2, presence_sweep_s=0.5)
    async with running(params, registry, store) as svc:
        yield svc


async def connect(
    service: BrokerService, device_id: str, secret: str, *, client_id: str | None = None, subscribe: bool = True
) -> tuple[WireClient, int]:
    """Connect like a device (persistent session) and, when accepted, subscribe to its own downlinks."""
    client = WireClient()
    rc = await client.connect("127.0.0.1", service.params.port, client_id or device_id, device_id, secret,
                              clean_session=False, within=5)
    if rc == 0 and subscribe and device_id != SERVICE_USER:
        assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)]) == [1]
    return client, rc


async def next_ack(client: WireClient, within: float = 5) -> dict:
    while True:
        topic, payload = await asyncio.wait_for(client.messages.get(), within)
        if topic.endswith("/down/ack"):
            return json.loads(payload)


async def test_device_publishes_1000_readings_stored_once_and_all_acked(
    service: BrokerService, registry: Registry, store: SqliteStore, tmp_path: Path
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    device = TestDevice("127.0.0.1", service.params.port, device_id, secret, "M1", tmp_path / "outbox.sqlite3")
    runner = asyncio.create_task(device.run())
    try:
        await device.wait_connected()
        seqs = [device.produce(env_payload(i), ts=TS) for i in range(1000)]
        await device.wait_outbox_empty(30)
        assert device.acked == set(seqs)
        # a replay of already stored messages is acknowledged again but not stored twice
        await device.drop_link()
        await device.wait_connected()
        device.db.executemany("INSERT INTO outbox VALUES (?, 'telemetry', ?)",
                              [(s, json.dumps({"seq": s, "ts": TS, "payload": env_payload(s)}).encode())
                               for s in range(100)])
        device.db.commit()
        await device.drop_link()  # reconnect replays the outbox
        await device.wait_outbox_empty(30)
    finally:
        device.stop()
        await runner
        device.close()
    assert await store.count(device_id) == 1000
    assert service.pipeline.stats.duplicates >= 100


async def test_wrong_password_is_refused(service: BrokerService, registry: Registry) -> None:
    [(device_id, _secret)] = (await register(registry, 1)).items()
    _client, rc = await connect(service, device_id, "not-the-secret")
    assert rc == 5
    _client2, rc2 = await connect(service, "acme-nobody", "x")
    assert rc2 == 5


async def test_client_id_must_be_the_device_id(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    _client, rc = await connect(service, device_id, secret, client_id="someone-else")
    assert rc == 5


async def test_revoking_disconnects_the_live_device_and_refuses_it(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    client, rc = await connect(service, device_id, secret)
    assert rc == 0
    await registry.revoke_credentials(device_id)
    await asyncio.wait_for(client.closed.wait(), 2)
    _again, rc = await connect(service, device_id, secret)
    assert rc == 5
    new_secret = await registry.rotate_credential(device_id)
    ok, rc = await connect(service, device_id, new_secret)
    assert rc == 0
    await ok.disconnect()


async def test_revoking_cuts_a_device_that_is_busy_publishing(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    client, _ = await connect(service, device_id, secret)
    up = topics.up_topic("M1", device_id, "telemetry")

    async def flood() -> None:
        seq = 0
        while not client.closed.is_set():
            client.publish_nowait(up, json.dumps({"seq": seq, "payload": env_payload()}).encode())
            seq += 1
            await asyncio.sleep(0)

    flooding = asyncio.create_task(flood())
    await asyncio.sleep(0.3)
    await asyncio.wait_for(registry.revoke_credentials(device_id), 2)
    await asyncio.wait_for(client.closed.wait(), 2)
    flooding.cancel()
    await asyncio.gather(flooding, return_exceptions=True)


async def test_rotation_ends_the_session_of_the_old_secret(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    client, rc = await connect(service, device_id, secret)
    assert rc == 0
    new_secret = await registry.rotate_credential(device_id)
    await asyncio.wait_for(client.closed.wait(), 2)
    assert (await connect(service, device_id, secret))[1] == 5
    fresh, rc = await connect(service, device_id, new_secret)
    assert rc == 0
    await fresh.disconnect()


async def test_a_refused_connect_does_not_kick_the_real_device(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    client, rc = await connect(service, device_id, secret)
    assert rc == 0
    _attacker, rc = await connect(service, device_id, "guess")
    assert rc == 5
    await asyncio.sleep(0.2)
    assert not client.closed.is_set()
    await client.publish(topics.up_topic("M1", device_id, "telemetry"),
                         json.dumps({"seq": 1, "payload": env_payload()}).encode())
    assert (await next_ack(client))["seqs"] == [1]
    await client.disconnect()


async def test_publish_on_another_devices_topic_is_dead_lettered_not_stored(
    service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    creds = await register(registry, 2)
    (a, secret_a), (b, _) = creds.items()
    client, _ = await connect(service, a, secret_a)
    watcher, rc = await connect(service, SERVICE_USER, SERVICE_PASSWORD, client_id="watcher")
    assert rc == 0
    assert await watcher.subscribe([(topics.UP_FILTER, 1)]) == [1]
    body = json.dumps({"seq": 1, "payload": env_payload()}).encode()
    await client.publish(topics.up_topic("M1", b, "telemetry"), body)
    await client.publish(topics.down_topic("M1", b, "cmd"), b'{"command": "reboot"}')
    await client.publish(topics.up_topic("M1", a, "telemetry"), body)  # its own: stored
    ack = await next_ack(client)
    assert ack["seqs"] == [1]
    await service.pipeline.flush_dead_letters()
    letters = await DeadLetter.filter(device_id=a, reason="forbidden_topic").order_by("id")
    assert [letter.topic for letter in letters] == [topics.up_topic("M1", b, "telemetry"),
                                                    topics.down_topic("M1", b, "cmd")]
    assert await store.count(b) == 0
    # other subscribers never saw the forbidden publishes either
    seen = []
    while not watcher.messages.empty():
        seen.append(watcher.messages.get_nowait()[0])
    assert topics.up_topic("M1", b, "telemetry") not in seen
    await client.disconnect()
    await watcher.disconnect()


async def test_subscribing_to_another_devices_downlinks_is_refused(service: BrokerService, registry: Registry) -> None:
    (a, secret_a), (b, _) = (await register(registry, 2)).items()
    client, _ = await connect(service, a, secret_a, subscribe=False)
    codes = await client.subscribe([
        (topics.device_down_filter("M1", b), 1),
        ("mf/v1/#", 1),
        ("#", 0),
        (topics.device_down_filter("M1", a), 1),
        (f"mf/v1/+/{a}/down/cmd", 1),
    ])
    assert codes == [0x80, 0x80, 0x80, 1, 1]
    await client.disconnect()


async def test_bad_payloads_are_dead_lettered_while_valid_ones_between_them_are_stored(
    service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    client, _ = await connect(service, device_id, secret)
    up = topics.up_topic("M1", device_id, "telemetry")
    valid = [json.dumps({"seq": s, "ts": TS, "payload": env_payload(s)}).encode() for s in (1, 3, 5, 7)]
    bodies = [
        valid[0],
        b"{this is not json",
        valid[1],
        json.dumps({"seq": 4, "payload": {"temperature_c": 4.2, "humidity_pct": 80, "pad": "x" * 70_000}}).encode(),
        valid[2],
        json.dumps({"seq": 6, "payload": {"temperature_c": 4.2, "humidity_pct": 181}}).encode(),
        valid[3],
        json.dumps({"seq": 8, "ts": "2099-01-01T00:00:00Z", "payload": env_payload()}).encode(),
    ]
    for body in bodies:
        client.publish_nowait(up, body)
    seqs, rejected = set(), []
    while len(seqs) < 4 or len(rejected) < 4:
        ack = await next_ack(client)
        seqs.update(ack["seqs"])
        rejected += ack["rejected"]
    assert seqs == {1, 3, 5, 7}
    reasons = {(r["seq"], r["reason"]) for r in rejected}
    assert reasons == {(None, "malformed"), (None, "oversized"), (6, "schema"), (8, "future_timestamp")}
    schema = next(r for r in rejected if r["reason"] == "schema")
    assert schema["detail"].startswith("payload.humidity_pct:")
    assert await store.count(device_id) == 4
    letters = await DeadLetter.filter(device_id=device_id).order_by("id")
    assert sorted(letter.reason for letter in letters) == ["future_timestamp", "malformed", "oversized", "schema"]
    assert all(letter.payload is not None and len(letter.payload) <= 1024 for letter in letters)
    await client.disconnect()


async def test_presence_follows_connect_and_dropped_link(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    events = service.bus.subscribe(kinds=(PresenceChanged,))
    client, _ = await connect(service, device_id, secret)
    online = await asyncio.wait_for(events.get(), 2)
    assert (online.device_id, online.online) == (device_id, True)
    await client.abort()
    offline = await asyncio.wait_for(events.get(), 2)
    assert (offline.device_id, offline.online) == (device_id, False)
    await service.presence.flush()
    device = await Device.get(id=device_id)
    assert device.online is False and device.last_seen is not None


async def test_accepted_envelopes_are_published_on_the_bus(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    envelopes = service.bus.subscribe(kinds=(Envelope,))
    client, _ = await connect(service, device_id, secret)
    await client.publish(topics.up_topic("M1", device_id, "telemetry"),
                         json.dumps({"seq": 42, "ts": TS, "payload": env_payload()}).encode())
    envelope = await asyncio.wait_for(envelopes.get(), 2)
    assert (envelope.device_id, envelope.seq, envelope.kind, envelope.market) == (device_id, 42, "env_sensor", "M1")
    await client.disconnect()


async def test_platform_command_reaches_the_device(service: BrokerService, registry: Registry) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    client, _ = await connect(service, device_id, secret)
    await service.publish(topics.down_topic("M1", device_id, "cmd"), b'{"id": "1", "command": "ping"}')
    topic, payload = await asyncio.wait_for(client.messages.get(), 2)
    assert topic == topics.down_topic("M1", device_id, "cmd") and b"ping" in payload
    await client.disconnect()


async def test_a_device_gone_silent_is_cut_and_offline_after_its_keepalive(
    service: BrokerService, registry: Registry
) -> None:
    """A half-open link (no FIN, no will from the device's side): the broker ends it after 1.5 × keepalive."""
    [(device_id, secret)] = (await register(registry, 1, keepalive_s=5)).items()
    events = service.bus.subscribe(kinds=(PresenceChanged,))
    client = WireClient()
    assert await client.connect("127.0.0.1", service.params.port, device_id, device_id, secret, keepalive=1) == 0
    assert (await asyncio.wait_for(events.get(), 5)).online is True
    # the client asked for a 1 s keepalive in its CONNECT and now sends nothing at all (no PINGREQ)
    await asyncio.wait_for(client.closed.wait(), 10)
    offline = await asyncio.wait_for(events.get(), 5)
    assert (offline.device_id, offline.online) == (device_id, False)
    await client.abort()


async def test_a_publish_with_a_wildcard_topic_closes_only_that_connection(
    service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    """MQTT-3.3.2-2: a topic name with '+' or '#' is a protocol violation; the broker ends that connection."""
    (a, secret_a), (b, secret_b) = (await register(registry, 2)).items()
    bad, _ = await connect(service, a, secret_a)
    good, _ = await connect(service, b, secret_b)
    bad.publish_nowait(f"mf/v1/M1/{a}/up/+", b'{"seq": 1}', 1)
    await asyncio.wait_for(bad.closed.wait(), 10)
    body = json.dumps({"seq": 1, "payload": env_payload()}).encode()
    await good.publish(topics.up_topic("M1", b, "telemetry"), body)
    assert (await next_ack(good))["seqs"] == [1]
    assert await store.count(a) == 0
    await good.disconnect()
    await bad.abort()


async def test_a_large_uplink_written_in_small_pieces_is_stored_and_acked(
    service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    """The broker's packet reader: a 3-byte remaining length, and a packet arriving a few bytes at a time."""
    from tests.integration.broker.mqtt_wire import encode_publish

    [(device_id, secret)] = (await register(registry, 1)).items()
    client, _ = await connect(service, device_id, secret)
    batch = [{"seq": seq, "ts": 1_795_000_000_000 + seq, "payload": env_payload(seq)} for seq in range(300)]
    body = json.dumps(batch).encode()
    packet = encode_publish(topics.up_topic("M1", device_id, "telemetry"), body, 1, packet_id=4242)
    assert packet[1] & 0x80 and packet[2] & 0x80  # remaining length takes three bytes
    acked = client._expect(4, 4242)  # PUBACK
    assert client.writer is not None
    for start in range(0, len(packet), 7):
        client.writer.write(packet[start : start + 7])
        if start % 700 == 0:
            await client.writer.drain()
            await asyncio.sleep(0)
    await asyncio.wait_for(acked, 10)
    ack = await next_ack(client)
    assert sorted(ack["seqs"]) == list(range(300)) and not ack["rejected"]
    assert await store.count(device_id) == 300
    await client.disconnect()


async def test_a_device_that_pings_stays_connected_beyond_its_keepalive(
    service: BrokerService, registry: Registry
) -> None:
    """The keepalive watchdog re-arms on every packet: PINGREQs every half keepalive keep the link up."""
    [(device_id, secret)] = (await register(registry, 1, keepalive_s=5)).items()
    client = WireClient()
    assert await client.connect("127.0.0.1", service.params.port, device_id, device_id, secret, keepalive=1) == 0
    for _ in range(8):  # 4 s: well past 1.5 × the 1 s keepalive
        await client.ping()
        await asyncio.sleep(0.5)
    assert not client.closed.is_set()
    assert service.presence.is_online(device_id)
    await client.disconnect()


async def test_a_connect_storm_is_checked_in_batches_with_the_registrys_rule(
    service: BrokerService, registry: Registry
) -> None:
    """Concurrent CONNECTs share registry queries (CredentialBatch), and each still gets its own right answer:
    current secret → accepted; wrong, revoked, rotated-away secret or disabled device → CONNACK 5."""
    from fleet.schemas import DeviceStatus, DeviceUpdate

    creds = await register(registry, 60)
    ids = sorted(creds)
    good, wrong, revoked, rotated, disabled = ids[:30], ids[30:40], ids[40:45], ids[45:50], ids[50:60]
    for device_id in revoked:
        await registry.revoke_credentials(device_id)
    new_secrets = {device_id: await registry.rotate_credential(device_id) for device_id in rotated}
    for device_id in disabled:
        await registry.update_device(device_id, DeviceUpdate(status=DeviceStatus.DISABLED))
    attempts = [(d, creds[d], 0) for d in good] + [(d, creds[d] + "x", 5) for d in wrong]
    attempts += [(d, creds[d], 5) for d in revoked + disabled]
    attempts += [(d, creds[d], 5) for d in rotated] + [(d, new_secrets[d], 0) for d in rotated]
    assert service.hub is not None
    batches_before = service.hub.batch.batches
    clients = [WireClient() for _ in attempts]
    codes = await asyncio.gather(*(
        client.connect("127.0.0.1", service.params.port, device_id, device_id, secret, within=30)
        for client, (device_id, secret, _) in zip(clients, attempts, strict=True)
    ))
    # a rotated device connects twice at once (old and new secret): the accepted one may then be taken over
    assert list(codes) == [expected for _, _, expected in attempts]
    assert service.hub.batch.batches - batches_before < len(attempts) // 2
    await asyncio.gather(*(client.abort() for client in clients))


async def test_batched_credential_check_agrees_with_the_registrys(registry: Registry) -> None:
    """`check_device_secrets` (the broker's batch) must give Registry.check_device_secret's answer in every case,
    so a change of the registry's rule that is not carried over fails here."""
    from broker.amqtt_plugins import check_device_secrets
    from fleet.schemas import DeviceStatus, DeviceUpdate

    creds = await register(registry, 5)
    ok, revoked, rotated, disabled, _spare = sorted(creds)
    await registry.revoke_credentials(revoked)
    new_secret = await registry.rotate_credential(rotated)
    await registry.update_device(disabled, DeviceUpdate(status=DeviceStatus.DISABLED))
    cases = {ok: {creds[ok], "wrong"}, revoked: {creds[revoked]}, rotated: {creds[rotated], new_secret},
             disabled: {creds[disabled]}, "no-such-device": {"x"}}
    batched = await check_device_secrets(cases)
    for device_id, secrets in cases.items():
        for secret in secrets:
            one = await registry.check_device_secret(device_id, secret)
            device, good = batched.get(device_id, (None, set()))
            assert (one is not None) == (secret in good), (device_id, secret)
            if one is not None:
                assert device is not None and device.id == one.id
