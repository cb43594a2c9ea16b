"""Dead letters, presence and ingest metrics through the HTTP API of a real platform (embedded broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from broker import topics
from broker.bus import PresenceChanged
from marketfleet.platform import Platform
from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform
from tests.integration.broker.conftest import env_payload
from tests.integration.broker.mqtt_wire import Will, WireClient

pytestmark = pytest.mark.timeout(120)

TS = "2026-11-23T08:15:02.120Z"


@pytest.fixture(scope="module")
async def started(tmp_path_factory: pytest.TempPathFactory, registry_url_factory) -> AsyncIterator[
    tuple[Platform, httpx.AsyncClient]
]:
    async with (
        start_test_platform(tmp_path_factory.mktemp("data"), registry_url_factory("sqlite")) as platform,
        serve_api(platform.app) as api,
    ):
        yield platform, api


async def new_device(api: httpx.AsyncClient, serial: str) -> tuple[str, str]:
    await ensure_market(api, "M1")
    vendor = {"X-API-Key": await create_vendor(api, f"v{serial.lower()}")}
    response = await api.post("/api/v1/vendor/device", headers=vendor,
                              json={"serial": serial, "kind": "env_sensor", "market": "M1"})
    assert response.status_code == 201, response.text
    return response.json()["device_id"], response.json()["secret"]


async def connect(platform: Platform, device_id: str, secret: str) -> WireClient:
    client = WireClient()
    will = Will(topics.status_topic("M1", device_id), b"offline")
    rc = await client.connect("127.0.0.1", platform.settings.broker.port, device_id, device_id, secret,
                              clean_session=True, will=will, within=5)
    assert rc == 0
    assert await client.subscribe([(topics.device_down_filter("M1", device_id), 1)]) == [1]
    return client


async def next_ack(client: WireClient) -> dict:
    while True:
        topic, payload = await asyncio.wait_for(client.messages.get(), 5)
        if topic.endswith("/down/ack"):
            return json.loads(payload)


async def test_refused_uplinks_are_listed_with_reason_and_counted(started) -> None:
    platform, api = started
    device_id, secret = await new_device(api, "DL1")
    client = await connect(platform, device_id, secret)
    up = topics.up_topic("M1", device_id, "telemetry")
    client.publish_nowait(up, b"{not json")
    client.publish_nowait(up, json.dumps({"seq": 2, "payload": {"temperature_c": "warm"}}).encode())
    client.publish_nowait(up, json.dumps({"seq": 3, "ts": TS, "payload": env_payload()}).encode())
    seqs, rejected = set(), []
    while len(rejected) < 2 or not seqs:
        ack = await next_ack(client)
        seqs |= set(ack["seqs"])
        rejected += ack["rejected"]
    await platform.services["pipeline"].flush_dead_letters()

    page = (await api.get("/api/v1/broker/dead-letters", params={"device_id": device_id}, headers=ADMIN)).json()
    assert page["total"] == 2
    assert [item["reason"] for item in page["items"]] == ["schema", "malformed"]  # newest first
    malformed = page["items"][1]
    assert malformed["payload_text"] == "{not json" and malformed["transport"] == "mqtt"
    assert malformed["topic"] == up
    assert page["items"][0]["detail"].startswith("payload.temperature_c")

    only_schema = await api.get("/api/v1/broker/dead-letters",
                                params={"device_id": device_id, "reason": "schema"}, headers=ADMIN)
    assert [i["reason"] for i in only_schema.json()["items"]] == ["schema"]
    older = await api.get("/api/v1/broker/dead-letters",
                          params={"device_id": device_id, "before_id": page["items"][0]["id"]}, headers=ADMIN)
    assert [i["reason"] for i in older.json()["items"]] == ["malformed"]

    summary = (await api.get("/api/v1/broker/dead-letters/summary", headers=ADMIN)).json()
    assert {r["reason"]: r["count"] for r in summary["by_reason"]}.items() >= {"schema": 1, "malformed": 1}.items()

    metrics = (await api.get("/api/v1/broker/metrics", headers=ADMIN)).json()
    assert metrics["mode"] == "embedded"
    assert metrics["ingest"]["accepted"] >= 1
    assert metrics["ingest"]["rejected"]["malformed"] >= 1 and metrics["ingest"]["rejected"]["schema"] >= 1
    assert metrics["dead_letters"]["malformed"] >= 1
    assert metrics["broker"]["sessions"] >= 1
    await client.disconnect()


async def test_presence_follows_the_device_and_its_last_will(started) -> None:
    platform, api = started
    device_id, secret = await new_device(api, "PR1")

    async def state() -> dict:
        page = (await api.get("/api/v1/broker/presence", params={"market": "M1", "limit": 5000},
                              headers=ADMIN)).json()
        return next(item for item in page["items"] if item["device_id"] == device_id)

    assert (await state())["online"] is False
    client = await connect(platform, device_id, secret)
    assert (await state())["online"] is True
    assert (await state())["last_seen"] is not None
    online = (await api.get("/api/v1/broker/presence", params={"online": "true"}, headers=ADMIN)).json()
    assert device_id in {item["device_id"] for item in online["items"]} and online["online"] >= 1
    events = platform.services["bus"].subscribe(kinds=(PresenceChanged,))
    await client.abort()  # no DISCONNECT: the broker publishes the will
    change = await asyncio.wait_for(events.get(), 5)
    assert (change.device_id, change.online) == (device_id, False)
    assert (await state())["online"] is False


async def test_ingest_admin_needs_a_credential_and_refuses_bad_filters(started) -> None:
    _platform, api = started
    for path in ("/api/v1/broker/dead-letters", "/api/v1/broker/presence", "/api/v1/broker/metrics"):
        assert (await api.get(path)).status_code == 401
    bad = await api.get("/api/v1/broker/dead-letters", params={"transport": "pigeon"}, headers=ADMIN)
    assert bad.status_code in (400, 422) and "transport" in bad.text
    assert (await api.get("/api/v1/broker/dead-letters", params={"limit": 0}, headers=ADMIN)).status_code in (400, 422)


async def test_emqx_hooks_apply_the_device_rules(started) -> None:
    platform, api = started
    device_id, secret = await new_device(api, "EMQX1")
    other, _ = await new_device(api, "EMQX2")

    async def authn(username: str, password: str, clientid: str) -> str:
        response = await api.post("/api/v1/broker/emqx/authenticate", headers=ADMIN,
                                  json={"username": username, "password": password, "clientid": clientid})
        assert response.status_code == 200, response.text
        return response.json()["result"]

    async def authz(topic: str, action: str, username: str = device_id) -> str:
        response = await api.post("/api/v1/broker/emqx/authorize", headers=ADMIN,
                                  json={"username": username, "topic": topic, "action": action})
        assert response.status_code == 200, response.text
        return response.json()["result"]

    assert await authn(device_id, secret, device_id) == "allow"
    assert await authn(device_id, "wrong", device_id) == "deny"
    assert await authn(device_id, secret, "another-client-id") == "deny"
    service = platform.services["broker"].params
    assert await authn(service.username, service.password, "any") == "allow"
    assert await authz(topics.up_topic("M1", device_id, "telemetry"), "publish") == "allow"
    assert await authz(topics.up_topic("M1", other, "telemetry"), "publish") == "deny"
    assert await authz(topics.down_topic("M1", device_id, "cmd"), "publish") == "deny"
    assert await authz(topics.device_down_filter("M1", device_id), "subscribe") == "allow"
    assert await authz(topics.device_down_filter("M1", other), "subscribe") == "deny"
    assert await authz("#", "subscribe") == "deny"
    assert await authz("$share/mf-ingest/mf/v1/+/+/up/#", "subscribe", service.username) == "allow"
    await api.post(f"/api/v1/admin/devices/{device_id}/credentials/revoke", headers=ADMIN)
    assert await authn(device_id, secret, device_id) == "deny"
    refused = await api.post("/api/v1/broker/emqx/authorize", headers=ADMIN,
                             json={"username": device_id, "topic": "x", "action": "retain"})
    assert refused.status_code in (400, 422) and "action" in refused.text
    assert (await api.post("/api/v1/broker/emqx/authenticate", json={})).status_code == 401
