"""External mode against a real Mosquitto 2.0 with dynamic security (started by tests/services.py).

The platform provisions each device's client and role over `$CONTROL/dynamic-security/v1`; ingest workers are
MQTT clients sharing `$share/mf-ingest/…`. What a user depends on: a freshly registered device connects with
the credential it was issued, a revoked one is cut off and refused, a wrong password is refused, a device
cannot write another device's data, every message is stored exactly once with two workers, and drift
between registry and broker is repaired at start-up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import topics
from broker.bus import PresenceChanged
from broker.dynsec import DEVICE_MARKER, DynsecProvisioner, device_acls, device_role
from broker.external import ExternalIngest
from broker.service import BrokerService
from fleet.registry import Registry
from telemetry import SqliteStore
from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform
from tests.integration.broker.conftest import env_payload, external_params, register, running
from tests.integration.broker.mqtt_wire import Will, WireClient
from tests.services import MosquittoServer

pytestmark = pytest.mark.timeout(180)

TS = "2026-11-23T08:15:02.120Z"


@pytest.fixture
async def service(
    mosquitto_server: MosquittoServer, registry: Registry, store: SqliteStore
) -> AsyncIterator[BrokerService]:
    async with running(external_params(mosquitto_server, 'ext'), registry, store) as svc:
        yield svc


async def connect(server: MosquittoServer, device_id: str, secret: str) -> tuple[WireClient, int]:
    client = WireClient()
    rc = await client.connect(server.host, server.port, device_id, device_id, secret, clean_session=True, within=5)
    return client, rc


async def connect_now(server: MosquittoServer, device_id: str, secret: str) -> WireClient:
    """Connect once, right after provisioning was pushed: no retry, no periodic sync to wait for."""
    client, rc = await connect(server, device_id, secret)
    assert rc == 0, f"{device_id} refused (CONNACK {rc})"
    return client


async def next_ack(client: WireClient, within: float = 5) -> dict:
    while True:
        topic, payload = await asyncio.wait_for(client.messages.get(), within)
        if topic.endswith("/down/ack"):
            return json.loads(payload)


def body(seq: int) -> bytes:
    return json.dumps({"seq": seq, "ts": TS, "payload": env_payload(seq)}).encode()


async def wait_stored(store: SqliteStore, device_ids: list[str], expected: int, within: float = 60) -> int:
    async with asyncio.timeout(within):
        while True:
            total = sum([await store.count(d, "env_sensor.telemetry") for d in device_ids])
            if total >= expected:
                return total
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------- through the platform and its vendor API


async def test_registered_device_connects_at_once_and_revoked_one_is_cut_off(
    mosquitto_server: MosquittoServer, registry_url_factory, tmp_path: Path
) -> None:
    broker = {"mode": "external", "host": mosquitto_server.host, "port": mosquitto_server.port,
              "username": "mf-platform-api", "admin_username": mosquitto_server.admin_username,
              "admin_password": mosquitto_server.admin_password, "workers": 2}
    async with (
        start_test_platform(tmp_path, registry_url_factory("sqlite"), broker=broker) as platform,
        serve_api(platform.app) as api,
    ):
        await ensure_market(api, "M1")
        vendor = {"X-API-Key": await create_vendor(api, "extco")}
        response = await api.post("/api/v1/vendor/devices", headers=vendor,
                                   json={"devices": [{"serial": "EXT1", "kind": "env_sensor", "market": "M1"}]})
        assert response.status_code in (200, 201), response.text
        row = response.json()["rows"][0]
        device_id, secret = row["device_id"], row["secret"]

        # provisioning is pushed to Mosquitto when the device is registered: once the queued dynsec batch is
        # answered (milliseconds; `marketfleet bench broker` times it), the first CONNECT is accepted
        await platform.services["broker"].provisioner.flush()
        client = await connect_now(mosquitto_server, device_id, secret)
        assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)]) == [1]
        await client.publish(topics.up_topic("M1", device_id, "telemetry"), body(1))
        assert (await next_ack(client))["seqs"] == [1]
        assert await wait_stored(platform.store, [device_id], 1) == 1  # type: ignore[arg-type]

        wrong, rc = await connect(mosquitto_server, device_id, "not-the-secret")
        assert rc == 5
        await wrong.abort()

        revoked = await api.post(f"/api/v1/vendor/devices/{device_id}/credentials/revoke", headers=vendor)
        assert revoked.status_code == 200, revoked.text
        await asyncio.wait_for(client.closed.wait(), 2)  # Mosquitto disconnected the live session
        again, rc = await connect(mosquitto_server, device_id, secret)
        assert rc == 5
        await again.abort()
        assert (await api.get("/healthz", headers=ADMIN)).status_code == 200


# ---------------------------------------------------------------- the service directly


async def test_cross_device_publish_is_not_stored(
    mosquitto_server: MosquittoServer, service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    (a, secret_a), (b, secret_b) = (await register(registry, 2)).items()
    assert service.provisioner is not None
    await service.provisioner.flush()
    client = await connect_now(mosquitto_server, a, secret_a)
    victim = await connect_now(mosquitto_server, b, secret_b)
    codes = await client.subscribe([(topics.device_down_filter("M1", b), 1), (topics.device_down_filter("M1", a), 1)])
    assert codes == [0x80, 1]  # another device's downlinks: refused at SUBSCRIBE
    await client.publish(topics.up_topic("M1", b, "telemetry"), body(1))  # dropped by the broker's ACL
    await client.publish(topics.down_topic("M1", b, "cmd"), b'{"command": "reboot"}')
    await client.publish(topics.up_topic("M1", a, "telemetry"), body(2))  # its own: stored and acked
    assert (await next_ack(client))["seqs"] == [2]
    assert await store.count(a) == 1
    assert await store.count(b) == 0
    await asyncio.sleep(0.2)
    assert victim.messages.empty()  # the forged command never reached b
    await client.disconnect()
    await victim.disconnect()


async def test_presence_from_retained_status_and_last_will(
    mosquitto_server: MosquittoServer, service: BrokerService, registry: Registry
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    assert service.provisioner is not None
    await service.provisioner.flush()
    events = service.bus.subscribe(kinds=(PresenceChanged,))
    status = topics.status_topic("M1", device_id)
    client = WireClient()
    rc = await client.connect(mosquitto_server.host, mosquitto_server.port, device_id, device_id, secret,
                              clean_session=True, will=Will(status, b"offline", 1, True), within=5)
    assert rc == 0
    await client.publish(status, b"online", retain=True)
    change = await asyncio.wait_for(events.get(), 5)
    assert (change.device_id, change.online) == (device_id, True)
    await client.abort()  # vanishes: Mosquitto publishes the will to the ingest workers
    change = await asyncio.wait_for(events.get(), 5)
    assert (change.device_id, change.online, change.reason) == (device_id, False, "will")
    assert not service.presence.is_online(device_id)
    cleaner = await connect_now(mosquitto_server, device_id, secret)
    await cleaner.publish(status, b"", retain=True)  # clear the retained status
    await cleaner.disconnect()


async def test_two_workers_share_10000_messages_each_stored_exactly_once(
    mosquitto_server: MosquittoServer, service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    creds = await register(registry, 10)
    assert service.provisioner is not None
    await service.provisioner.flush()
    clients = [await connect_now(mosquitto_server, d, s) for d, s in creds.items()]
    per_device = 1000

    async def send(client: WireClient, device_id: str) -> None:
        """Like a device with an outbox: a window of 50 messages in flight until the platform acks them."""
        assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)]) == [1]
        up = topics.up_topic("M1", device_id, "telemetry")
        for start in range(0, per_device, 50):
            window = set(range(start, start + 50))
            await asyncio.gather(*[client.publish_nowait(up, body(s)) for s in sorted(window)])
            while window:
                window -= set((await next_ack(client, within=20))["seqs"])

    await asyncio.gather(*[send(c, d) for c, d in zip(clients, creds, strict=True)])
    total = await wait_stored(store, list(creds), 10 * per_device)
    assert total == 10_000
    assert service.pipeline.stats.uplinks == 10_000  # the broker handed each message to exactly one worker
    received = [w.received for w in service.workers]
    assert all(r > 1000 for r in received), received  # and both took a share
    assert [w.via_paho for w in service.workers] == [0, 0]  # MQTT 3.1.1: all through the socket fast path
    assert service.pipeline.stats.duplicates == 0
    for device_id in creds:
        rows = await store.range(device_id, "env_sensor.telemetry", *_window(), limit=5000)
        assert sorted(r.seq for r in rows) == list(range(per_device))
    for client in clients:
        await client.disconnect()


async def test_an_mqtt5_worker_beside_the_311_ones_shares_the_load_through_paho(
    mosquitto_server: MosquittoServer, service: BrokerService, registry: Registry, store: SqliteStore
) -> None:
    """MQTT 5 connections keep paho's packet path (properties): same results, exactly once, with acks."""
    params = service.params
    v5 = ExternalIngest(service.pipeline, host=params.host, port=params.port, username=params.username,
                        password=params.password, group=params.shared_group, protocol="5")
    await v5.start()
    try:
        creds = await register(registry, 4)
        assert service.provisioner is not None
        await service.provisioner.flush()
        clients = [await connect_now(mosquitto_server, d, s) for d, s in creds.items()]
        per_device = 300

        async def send(client: WireClient, device_id: str) -> None:
            assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)]) == [1]
            up = topics.up_topic("M1", device_id, "telemetry")
            window = set(range(per_device))
            await asyncio.gather(*[client.publish_nowait(up, body(s)) for s in sorted(window)])
            while window:
                window -= set((await next_ack(client, within=20))["seqs"])

        await asyncio.gather(*[send(c, d) for c, d in zip(clients, creds, strict=True)])
        assert await wait_stored(store, list(creds), 4 * per_device) == 4 * per_device
        assert v5.received == v5.via_paho > 0  # the v5 worker took its share, all through paho
        assert [w.via_paho for w in service.workers] == [0, 0]
        for device_id in creds:
            rows = await store.range(device_id, "env_sensor.telemetry", *_window(), limit=5000)
            assert sorted(r.seq for r in rows) == list(range(per_device))
        for client in clients:
            await client.disconnect()
    finally:
        await v5.aclose()


async def test_revoke_and_rotate_take_effect_in_mosquitto(
    mosquitto_server: MosquittoServer, service: BrokerService, registry: Registry
) -> None:
    [(device_id, secret)] = (await register(registry, 1)).items()
    assert service.provisioner is not None
    await service.provisioner.flush()
    client = await connect_now(mosquitto_server, device_id, secret)
    new_secret = await registry.rotate_credential(device_id)
    await service.provisioner.flush()
    await asyncio.wait_for(client.closed.wait(), 2)  # the session of the old secret ends at once
    fresh = await connect_now(mosquitto_server, device_id, new_secret)
    assert (await connect(mosquitto_server, device_id, secret))[1] == 5
    await registry.revoke_credentials(device_id)
    await asyncio.wait_for(fresh.closed.wait(), 2)
    assert (await connect(mosquitto_server, device_id, new_secret))[1] == 5


async def test_reconcile_repairs_drift_between_registry_and_broker(
    mosquitto_server: MosquittoServer, registry: Registry
) -> None:
    (kept, secret), (deleted_by_hand, secret_2), (revoked, _) = (await register(registry, 3)).items()
    stale = "acme-gone-from-registry"
    admin = {"host": mosquitto_server.host, "port": mosquitto_server.port,
             "admin_username": mosquitto_server.admin_username, "admin_password": mosquitto_server.admin_password}
    async with DynsecProvisioner(**admin) as provisioner:  # type: ignore[arg-type]
        await provisioner.reconcile(registry)
        # drift made by hand: a client deleted, one enabled though revoked, one left over from a removed device
        await registry.revoke_credentials(revoked)  # no listener attached: the broker still lets it in
        await provisioner.execute([
            {"command": "deleteClient", "username": deleted_by_hand},
            {"command": "createRole", "rolename": device_role(stale), "acls": device_acls(stale)},
            {"command": "createClient", "username": stale, "password": "x", "textdescription": DEVICE_MARKER},
        ])
        assert (await connect(mosquitto_server, deleted_by_hand, secret_2))[1] == 5

        report = await provisioner.reconcile(registry)

        assert report.errors == []
        assert revoked in report.disabled and stale in report.deleted
        clients = {c["username"]: c for c in await provisioner.list_clients()}
        assert stale not in clients
        assert clients[revoked].get("disabled") is True
        for device_id, device_secret in ((kept, secret), (deleted_by_hand, secret_2)):
            client, rc = await connect(mosquitto_server, device_id, device_secret)
            assert rc == 0, device_id
            await client.disconnect()


def _window() -> tuple:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    return start, start + timedelta(hours=1)
