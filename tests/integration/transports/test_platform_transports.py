"""The platform as `marketfleet serve` runs it: CoAP, the serial gateway and HTTP ingest wired to one pipeline,
with credentials issued by the vendor registration API, and revocation reaching the CoAP server at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiocoap
import aiomqtt
import httpx
import pytest
from aiocoap import oscore
from aiocoap.numbers import codes
from pydantic import ValidationError

from broker.coap import CoapServer
from broker.coap_security import device_client_context
from broker.serial_gateway import Reply, SerialGateway, encode_frame
from broker.transports import send_command
from marketfleet.platform import Platform
from tests.factories import create_vendor, device_rows, ensure_market, serve_api, start_test_platform
from tests.integration.transports.pty_scale import Scale

pytestmark = pytest.mark.timeout(120)

SCALE = "wire-SC000000"  # "<vendor code>-<serial>", known before registration so the port can name it
NOW = datetime.now(UTC) - timedelta(minutes=1)


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Platform, Scale]]:
    scale = Scale()
    data_dir: Path = tmp_path_factory.mktemp("wired")
    try:
        async with start_test_platform(
            data_dir, f"sqlite://{data_dir / 'registry.sqlite3'}",
            serial={"ports": [{"url": scale.path, "devices": [SCALE], "name": "counter-1", "baudrate": 19200}]},
        ) as platform:
            yield platform, scale
    finally:
        scale.close()


@pytest.fixture(scope="module")
async def api(running: tuple[Platform, Scale]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_api(running[0].app) as client:
        yield client


@pytest.fixture(scope="module")
async def vendor(api: httpx.AsyncClient) -> dict[str, str]:
    """The vendor's API key header (vendor code "wire"), and market m1."""
    key = await create_vendor(api, "wire")
    await ensure_market(api, "m1")
    return {"X-API-Key": key}


async def register(api: httpx.AsyncClient, vendor: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, str]:
    response = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=vendor)
    assert response.status_code == 200, response.text
    return {row["device_id"]: row["secret"] for row in response.json()["rows"]}


def msg(seq: int, **payload: Any) -> bytes:
    return json.dumps({"seq": seq, "ts": (NOW + timedelta(seconds=seq)).isoformat(), "payload": payload}).encode()


async def test_coap_runs_in_the_platform_with_registry_credentials(
    running: tuple[Platform, Scale], api: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    platform, _ = running
    coap = platform.services["coap"]
    assert isinstance(coap, CoapServer) and coap in platform.registry.listeners
    secrets = await register(api, vendor, device_rows(1, kind="esl_base_station", prefix="BS", market="m1"))
    [(device, secret)] = secrets.items()

    client = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    base = f"coap://127.0.0.1:{coap.port}"
    client.client_credentials[base + "/*"] = device_client_context(device, secret)
    try:
        async with asyncio.timeout(30):
            response = await client.request(aiocoap.Message(
                code=codes.POST, uri=f"{base}/mf/v1/{device}/up/telemetry", payload=msg(1, labels_connected=3),
                content_format=50)).response
            assert response.code == codes.CHANGED, response.payload
            assert json.loads(response.payload)["seqs"] == [1]
            assert await platform.store.count(device, "esl_base_station.telemetry") == 1  # type: ignore[union-attr]
            presence = platform.services["broker"].presence  # CoAP devices are online while they talk
            assert presence.is_online(device) and presence.last_seen(device) is not None

            # A command sent through the running server arrives on the device's observation.
            command_id = await coap.send_command(device, {"command": "ping"})
            observe = client.request(aiocoap.Message(code=codes.GET, uri=f"{base}/mf/v1/{device}/down/cmd",
                                                     observe=0))
            first = await observe.response
            assert json.loads(first.payload) == {"command": "ping", "id": command_id}
            observe.observation.cancel()

            # Revoking through the vendor API reaches the CoAP server at once (it is a registry listener).
            revoked = await api.post(f"/api/v1/vendor/devices/{device}/credentials/revoke", headers=vendor)
            assert revoked.status_code == 200, revoked.text
            # The platform no longer holds a key for the device, so it refuses in the clear; aiocoap's client
            # surfaces an unprotected answer as NotAProtectedMessage (firmware: "credential problem, stop").
            with pytest.raises(oscore.NotAProtectedMessage) as refused:
                await client.request(aiocoap.Message(
                    code=codes.POST, uri=f"{base}/mf/v1/{device}/up/telemetry", payload=msg(2, labels_connected=3),
                    content_format=50)).response
            assert refused.value.plain_message.code == codes.UNAUTHORIZED
    finally:
        await client.shutdown()
    assert await platform.store.count(device, "esl_base_station.telemetry") == 1  # type: ignore[union-attr]


async def test_serial_gateway_runs_from_settings(
    running: tuple[Platform, Scale], api: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    platform, scale = running
    gateway = platform.services["serial"]
    assert isinstance(gateway, SerialGateway)
    async with asyncio.timeout(10):
        await gateway.wait_open()
    secrets = await register(api, vendor, device_rows(1, kind="scale", prefix="SC", market="m1"))
    assert list(secrets) == [SCALE]

    scale.send(encode_frame(SCALE, "telemetry", 1, msg(1, load_kg=1.5)))
    assert await scale.reply() == Reply("ACK", 1, high=1)
    scale.send(b"\x00\xffnoise on the line\r\n")
    assert (await scale.reply()).reason == "frame"
    scale.send(encode_frame(SCALE, "telemetry", 2, msg(2, load_kg=2.5)))
    assert await scale.reply() == Reply("ACK", 2, high=2)
    assert await platform.store.count(SCALE, "scale.telemetry") == 2  # type: ignore[union-attr]
    assert gateway.stats()["counter-1"]["naked"] == {"frame": 1}
    assert platform.services["broker"].presence.is_online(SCALE)


async def test_http_results_reach_the_platform_pipeline(
    running: tuple[Platform, Scale], api: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    platform, _ = running
    secrets = await register(api, vendor, device_rows(1, kind="food_detector", prefix="FD", market="m1"))
    [(device, secret)] = secrets.items()
    result = {"result_id": "R-1", "tested_at": NOW.isoformat(), "channel": 1, "sample_name": "青菜",
              "item": "有机磷农药残留", "value": 12.5, "unit": "%", "limit": 50.0, "passed": True}
    response = await api.post(f"/api/v1/ingest/{device}/results", json=[result],
                              headers={"Authorization": f"Bearer {device}:{secret}"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "stored"
    assert await platform.store.count(device, "food_detector.event") == 1  # type: ignore[union-attr]
    assert platform.services["broker"].presence.is_online(device)


async def test_commands_go_over_the_transport_each_device_listens_on(
    running: tuple[Platform, Scale], api: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    platform, _ = running
    services = platform.services
    coap = services["coap"]
    [(station, _)] = (await register(api, vendor, device_rows(1, kind="esl_base_station",
                                                              prefix="CMDBS", market="m1"))).items()
    [(sensor, sensor_secret)] = (await register(api, vendor, device_rows(1, kind="env_sensor", prefix="CMDENV",
                                                                         market="m1"))).items()
    [(detector, _)] = (await register(api, vendor, device_rows(1, kind="food_detector", prefix="CMDFD",
                                                               market="m1"))).items()

    # A base station speaks only CoAP: its command waits in the CoAP queue for its observation.
    command_id, transport = await send_command(services, station, "m1", "esl_base_station", {"command": "ping"})
    assert transport == "coap" and coap.pending_commands(station) == 1

    # An environment sensor on MQTT gets it on its own down/cmd topic, as the JSON of docs/protocol.md.
    async with aiomqtt.Client("127.0.0.1", platform.settings.broker.port, identifier=sensor, username=sensor,
                              password=sensor_secret) as mqtt:
        await mqtt.subscribe(f"mf/v1/m1/{sensor}/down/#", qos=1)
        command_id, transport = await send_command(services, sensor, "m1", "env_sensor", {"command": "reboot"})
        assert transport == "mqtt"
        async with asyncio.timeout(10):
            received = await anext(aiter(mqtt.messages))
        assert str(received.topic) == f"mf/v1/m1/{sensor}/down/cmd"
        assert json.loads(received.payload) == {"id": command_id, "command": "reboot", "delay_s": 0}  # type: ignore[arg-type]

    # The same sensor observing its CoAP down/cmd (it speaks both) gets the next one there.
    client = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    base = f"coap://127.0.0.1:{coap.port}"
    client.client_credentials[base + "/*"] = device_client_context(sensor, sensor_secret)
    try:
        observe = client.request(aiocoap.Message(code=codes.GET, uri=f"{base}/mf/v1/{sensor}/down/cmd", observe=0))
        async with asyncio.timeout(20):
            assert (await observe.response).payload == b""  # nothing queued yet
            command_id, transport = await send_command(services, sensor, "m1", "env_sensor", {"command": "ping"})
            assert transport == "coap"
            notification = await anext(aiter(observe.observation))
        assert json.loads(notification.payload) == {"id": command_id, "command": "ping"}
        observe.observation.cancel()
    finally:
        await client.shutdown()

    with pytest.raises(LookupError, match="no command downlink"):
        await send_command(services, detector, "m1", "food_detector", {"command": "ping"})
    # Commands are checked against the kind's command schema before anything is queued or published.
    with pytest.raises(ValidationError):
        await send_command(services, station, "m1", "esl_base_station", {"command": "format_disk"})
    with pytest.raises(ValidationError):
        await send_command(services, sensor, "m1", "env_sensor", {"command": "reboot", "delay_s": "soon"})
    assert coap.pending_commands(station) == 1  # still only the ping from the start
