"""The platform as `marketfleet serve` runs it: CoAP, the serial gateway and HTTP ingest wired to one pipeline,
with credentials issued by the vendor registration API, and revocation reaching the CoAP server at once."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiocoap
import httpx
import pytest
from aiocoap import oscore
from aiocoap.numbers import codes

from broker.coap import CoapServer
from broker.coap_security import device_client_context
from broker.serial_gateway import Reply, SerialGateway, encode_frame
from broker.transports import TransportUnavailable
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


async def test_a_taken_coap_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(TransportUnavailable) as refused:
            async with start_test_platform(tmp_path, f"sqlite://{tmp_path / 'registry.sqlite3'}", coap={"port": port}):
                pass
    assert f"127.0.0.1:{port}" in str(refused.value) and "MF_COAP__PORT" in str(refused.value)
    # Nothing was left half-started: the same data directory starts cleanly on a free port.
    async with start_test_platform(tmp_path, f"sqlite://{tmp_path / 'registry.sqlite3'}") as platform:
        assert platform.services["coap"].port != port
