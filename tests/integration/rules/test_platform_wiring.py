"""The rules service inside the running platform: a reading a device publishes over MQTT, and its going away,
reach the engine through the broker's bus and come out as alerts on the API's server-sent event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import httpx
import pytest

from broker import topics
from tests.factories import ADMIN, create_vendor, ensure_market

pytestmark = pytest.mark.timeout(90)

MARKET = "WIRE1"


async def register_sensor(api: httpx.AsyncClient) -> tuple[str, str]:
    await ensure_market(api, MARKET, "Wiring market")
    key = await create_vendor(api, "wirev")
    response = await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key},
                              json={"devices": [{"serial": "W1", "kind": "env_sensor", "market": MARKET}]})
    assert response.status_code == 200, response.text
    [row] = response.json()["rows"]
    return row["device_id"], row["secret"]


async def alert_events(api: httpx.AsyncClient, ready: asyncio.Event) -> AsyncIterator[dict[str, Any]]:
    """The alert stream as the dashboard reads it: (event name, message) for every alert change."""
    async with api.stream("GET", "/api/v1/alerts/stream", params={"market": MARKET}, headers=ADMIN) as response:
        assert response.status_code == 200
        event = ""
        async for line in response.aiter_lines():
            if line == ": connected":
                ready.set()
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield {"event": event, **json.loads(line.removeprefix("data: "))}


async def next_alert(events: AsyncIterator[dict[str, Any]], rule_id: str) -> dict[str, Any]:
    async for message in events:
        if message["alert"]["rule_id"] == rule_id:
            return message
    raise AssertionError("the alert stream ended")


async def test_a_published_reading_and_a_departure_become_alerts_on_the_stream(platform, api: httpx.AsyncClient):
    device_id, secret = await register_sensor(api)
    for rule in (
        {"id": "wire-hot", "name": "Hall too hot", "scope": {"kind": "env_sensor", "devices": [device_id]},
         "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 30}},
        {"id": "wire-offline", "name": "Sensor gone", "scope": {"devices": [device_id]},
         "condition": {"type": "offline"}},
    ):
        created = await api.post("/api/v1/rules", json=rule, headers=ADMIN)
        assert created.status_code == 201, created.text

    ready = asyncio.Event()
    events = alert_events(api, ready)
    first = asyncio.ensure_future(next_alert(events, "wire-hot"))
    await asyncio.wait_for(ready.wait(), 10)

    broker = platform.settings.broker
    async with aiomqtt.Client(broker.host, broker.port, identifier=device_id, username=device_id,
                              password=secret) as device:
        reading = {"seq": 0, "payload": {"temperature_c": 36.5, "humidity_pct": 60}}
        await device.publish(topics.up_topic(MARKET, device_id, "telemetry"), json.dumps(reading), qos=1)
        hot = await asyncio.wait_for(first, 20)
    assert hot["event"] == "alert.opened"
    assert hot["alert"]["device_id"] == device_id and hot["alert"]["market"] == MARKET
    assert "36.5" in hot["alert"]["message"]

    # The device left (its connection closed): presence reaches the engine through the same bus.
    gone = await asyncio.wait_for(next_alert(events, "wire-offline"), 30)
    assert gone["event"] == "alert.opened" and gone["alert"]["device_id"] == device_id
    await events.aclose()

    listed = (await api.get("/api/v1/alerts", params={"device_id": device_id}, headers=ADMIN)).json()
    assert {a["rule_id"] for a in listed} >= {"wire-hot", "wire-offline"}
