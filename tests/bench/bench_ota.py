"""OTA: simulated devices completing an update through the orchestrator, against the BJ 4.2.9 seed
(ESL OTA ≥ 20,000 labels/hour).

One process runs the platform (registry, API over uvicorn on a real socket, firmware service with its
orchestrator task) and the simulated devices (tests/integration/firmware/agents.py): each device receives its
announcement through the injected downlink, downloads the 256 KiB image over HTTP with 64 KiB Range requests,
verifies SHA-256 and the Ed25519 signature, and reports downloading → verifying → installing → rebooting →
succeeded through the service's status queue (`FirmwareService.report`, as the ingest bus feeds it). Issue 7's
sizes: 2,000 devices and 20,000 ESL labels behind 50 base stations (`--quick`: 200 and 2,000); a base station
downloads once per announcement and reports for each label. Devices and server share one event loop, so the
numbers are a floor for the server.

Baseline in the same run: plain HTTP downloads of the same image from the same server (whole image per GET,
and the same 64 KiB Range requests the devices make), as images/hour. What is measured is the platform's
capacity (orchestration, status handling, delivery); the radio time of flashing a label is the `RadioModel`
row, computed from its parameters.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from firmware.device import RadioModel
from firmware.service import FirmwareSettings, setup
from tests.bench.load import hammer
from tests.factories import ADMIN, serve_api, start_test_platform
from tests.integration.firmware.agents import AgentFleet
from tests.services import PostgresServer

SEED_PER_HOUR = 20_000  # BJ 4.2.9: ESL OTA ≥ 20,000 labels/hour
IMAGE = os.urandom(256 * 1024)
CHUNK = 64 * 1024
RELAY_BATCH = 200  # labels per base-station announcement (one image download each)
RADIO = RadioModel()


async def _register(api: httpx.AsyncClient, headers: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for start in range(0, len(rows), 10_000):
        response = await api.post("/api/v1/vendor/devices", json={"devices": rows[start : start + 10_000]},
                                   headers=headers, timeout=600)  # fmt: skip
        response.raise_for_status()
        secrets |= {r["device_id"]: r["secret"] for r in response.json()["rows"]}
    return secrets


async def _vendor(api: httpx.AsyncClient, code: str, kind: str, model: str) -> dict[str, str]:
    key = (await api.post("/api/v1/admin/vendors", json={"code": code, "name": code}, headers=ADMIN)).json()["api_key"]
    headers = {"X-API-Key": key}
    (await api.post("/api/v1/vendor/models", json={"kind": kind, "name": model}, headers=headers)).raise_for_status()
    return headers


async def _upload(api: httpx.AsyncClient, headers: dict[str, str], model: str) -> dict[str, Any]:
    response = await api.post("/api/v1/firmware/images", data={"model": model, "version": "2.0.0"},
                              files={"file": ("fw.bin", IMAGE)}, headers=headers)  # fmt: skip
    response.raise_for_status()
    return dict(response.json())


async def _campaign(api: httpx.AsyncClient, image_id: int, max_in_flight: int, timeout_s: float) -> float:
    """Run a campaign (1 % canary, 10 %, rest) to completion; returns seconds from creation to the end."""
    body = {
        "name": "bench", "image_id": image_id, "device_timeout_s": 600,
        "waves": [{"name": "canary", "percent": 1, "success_threshold_pct": 100, "max_in_flight": max_in_flight},
                  {"name": "early", "percent": 10, "success_threshold_pct": 95, "max_in_flight": max_in_flight},
                  {"name": "rest", "max_in_flight": max_in_flight}],
    }  # fmt: skip
    started = time.perf_counter()
    response = await api.post("/api/v1/firmware/campaigns", json=body, headers=ADMIN)
    response.raise_for_status()
    campaign_id = response.json()["id"]
    deadline = started + timeout_s
    while True:
        progress = (await api.get(f"/api/v1/firmware/campaigns/{campaign_id}", headers=ADMIN)).json()
        if progress["state"] != "running":
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"campaign not done after {timeout_s}s: {progress['counts']}")
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - started
    if progress["state"] != "completed" or progress["counts"]["succeeded"] != progress["total"]:
        raise RuntimeError(f"campaign ended {progress['state']}: {progress['counts']} {progress['state_reason']}")
    return seconds


async def _range_downloads(base: str, url: str, auth: dict[str, str], clients: int, total: int) -> float:
    """Images per second fetched as devices do: 64 KiB Range requests, one connection per client."""
    counter = iter(range(total))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as http:
            for _ in counter:
                for start in range(0, len(IMAGE), CHUNK):
                    response = await http.get(url, headers={"Range": f"bytes={start}-{start + CHUNK - 1}"})
                    response.raise_for_status()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return total / (time.perf_counter() - began)


async def _measure(backend: str, registry_url: str | None, console: Console, quick: bool) -> list[dict[str, Any]]:
    devices = 200 if quick else 2_000  # issue 7: 2,000 MQTT devices
    stations, labels_each = (5, 400) if quick else (50, 400)  # issue 7: 20,000 ESLs behind 50 base stations
    in_flight = 200
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = registry_url or f"sqlite://{Path(tmp) / 'registry.sqlite3'}"
        async with start_test_platform(Path(tmp), url) as platform, serve_api(platform.app) as api:
            fleets: list[AgentFleet] = []

            async def send(device, payload):  # type: ignore[no-untyped-def]
                await fleets[0].send(device, payload)

            base = str(api.base_url).rstrip("/")
            # The platform's own firmware service announces over MQTT; here the simulated devices take the
            # announcements in-process, so the orchestrator and the delivery path are what is measured.
            await platform.services["firmware"].aclose()
            service = setup(FirmwareSettings(http_base_url=base, tick_s=0.2, relay_batch=RELAY_BATCH),
                            registry=platform.registry, data_dir=Path(tmp) / "fw", send=send)  # fmt: skip

            async def report(device_id: str, status: dict[str, Any]) -> None:
                service.report(device_id, status)  # as the ingest bus hands statuses over: queued, batched

            fleets.append(AgentFleet(base, service.keypair.public_key, report, CHUNK, max_connections=200))
            platform.services["firmware"] = service
            await service.start()
            try:
                console.print(f"[{backend}] registering {devices:,} devices and {stations * labels_each:,} labels")
                scales = await _vendor(api, "bench", "env_sensor", "S1")
                secrets = await _register(api, scales, [
                    {"serial": f"D{n:06d}", "kind": "env_sensor", "model": "S1", "firmware_version": "1.0.0"}
                    for n in range(devices)])  # fmt: skip
                esl = await _vendor(api, "eslbench", "esl", "L1")
                station_secrets = await _register(api, esl, [
                    {"serial": f"BS{n:03d}", "kind": "esl_base_station"} for n in range(stations)])  # fmt: skip
                await _register(api, esl, [
                    {"serial": f"L{s:03d}{n:04d}", "kind": "esl", "model": "L1", "firmware_version": "1.0.0",
                     "metadata": {"base_station_id": station}}
                    for s, station in enumerate(station_secrets) for n in range(labels_each)])  # fmt: skip
                for device_id, secret in (secrets | station_secrets).items():
                    fleets[0].add(device_id, secret)
                image = await _upload(api, scales, "S1")
                esl_image = await _upload(api, esl, "L1")

                blob = f"/api/v1/firmware/images/{image['id']}/blob"
                one_id, one_secret = next(iter(secrets.items()))
                auth = {"Authorization": f"Bearer {one_id}:{one_secret}"}
                downloads = 500 if quick else 2_000
                console.print(f"[{backend}] baseline: {downloads:,} plain downloads of the 256 KiB image")
                whole = await hammer(base, lambda n: blob, concurrency=50, total=downloads, headers=auth)
                baseline = whole.rate * 3600
                rows.append({"case": "baseline: GET whole image", "backend": backend, "devices": downloads,
                             "seconds": round(whole.seconds, 2), "per hour": round(baseline),
                             "vs seed": round(baseline / SEED_PER_HOUR, 1), "vs baseline": 1.0})  # fmt: skip
                ranged = await _range_downloads(base, blob, auth, 50, downloads) * 3600
                rows.append({"case": "baseline: 64 KiB Range requests", "backend": backend, "devices": downloads,
                             "seconds": round(downloads * 3600 / ranged, 2), "per hour": round(ranged),
                             "vs seed": round(ranged / SEED_PER_HOUR, 1),
                             "vs baseline": round(ranged / baseline, 2)})  # fmt: skip

                console.print(f"[{backend}] campaign over {devices:,} devices (canary 1 %, 10 %, rest)")
                seconds = await _campaign(api, image["id"], in_flight, 1800)
                per_hour = devices / seconds * 3600
                rows.append({"case": "OTA campaign, devices (Range + verify + 5 statuses)", "backend": backend,
                             "devices": devices, "seconds": round(seconds, 2), "per hour": round(per_hour),
                             "vs seed": round(per_hour / SEED_PER_HOUR, 1),
                             "vs baseline": round(per_hour / baseline, 2)})  # fmt: skip

                labels = stations * labels_each
                console.print(f"[{backend}] campaign over {labels:,} ESL labels via {stations} base stations")
                seconds = await _campaign(api, esl_image["id"], labels, 1800)
                per_hour = labels / seconds * 3600
                rows.append({"case": "OTA campaign, ESL labels via base stations", "backend": backend,
                             "devices": labels, "seconds": round(seconds, 2), "per hour": round(per_hour),
                             "vs seed": round(per_hour / SEED_PER_HOUR, 1),
                             "vs baseline": round(per_hour / baseline, 2)})  # fmt: skip
                radio = RADIO.labels_per_hour(stations, len(IMAGE))
                rows.append({"case": f"radio model limit ({RADIO.describe()})", "backend": backend,
                             "devices": labels, "seconds": round(labels / radio * 3600, 2), "per hour": round(radio),
                             "vs seed": round(radio / SEED_PER_HOUR, 1), "vs baseline": ""})  # fmt: skip
                if fleets[0].errors:
                    raise RuntimeError(f"simulated devices failed: {fleets[0].errors[:3]!r}")
            finally:
                await service.aclose()
                await fleets[0].aclose()
    return rows


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    rows = await _measure("sqlite", None, console, quick)
    if PostgresServer.missing_binaries():
        console.print("[yellow]PostgreSQL not installed: scripts/install-services.sh; skipping its rows[/]")
        return rows
    with PostgresServer() as server:
        rows += await _measure("postgresql", server.create_database("bench_ota"), console, quick)
    return rows
