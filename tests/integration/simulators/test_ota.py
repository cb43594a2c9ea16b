"""Simulated devices take a real firmware campaign: the announcement from the platform's broker, the image over
HTTP Range, `ota_status` into ingest. One device fails to install, one loses power half-way through the download
and resumes, one reports a wrong version, one gets a tampered announcement; the rest update.

Its own module: it starts a platform of its own (the registry is process-wide)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from firmware.models import DeviceJob
from simulators import Endpoints, MarketSimulation
from simulators.ota import OtaBehaviour
from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform

pytestmark = pytest.mark.timeout(240)
MARKET = "SIM-OTA"
IMAGE = bytes(range(256)) * 1024  # 256 KiB


async def until(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    try:
        async with asyncio.timeout(within):
            while not (result := await check()):  # noqa: ASYNC110 - polls the API and simulator counters
                await asyncio.sleep(0.1)
            return result
    except TimeoutError:
        raise AssertionError(f"{what}: not met within {within:g}s") from None


async def test_simulated_devices_take_a_campaign_with_their_failure_modes(tmp_path: Path) -> None:
    registry = f"sqlite://{tmp_path / 'r.sqlite3'}"
    async with start_test_platform(tmp_path, registry, firmware={"tick_s": 0.05}) as platform, \
            serve_api(platform.app) as api:  # fmt: skip
        platform.services["firmware"].orchestrator.config.http_base_url = str(api.base_url).rstrip("/")
        await ensure_market(api, MARKET)
        vendor = {"X-API-Key": await create_vendor(api, "simota")}
        response = await api.post("/api/v1/vendor/models", json={"kind": "env_sensor", "name": "E1"}, headers=vendor)
        assert response.status_code == 201, response.text
        rows = [{"serial": f"S{i:03d}", "kind": "env_sensor", "model": "E1", "market": MARKET,
                 "firmware_version": "1.0.0"} for i in range(6)]  # fmt: skip
        response = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=vendor)
        assert response.status_code == 200, response.text
        creds = [{"device_id": r["device_id"], "secret": r["secret"], "kind": "env_sensor", "market": MARKET}
                 for r in response.json()["rows"]]  # fmt: skip
        upload = await api.post("/api/v1/firmware/images", data={"model": "E1", "version": "2.0.0"},
                                files={"file": ("fw.bin", IMAGE)}, headers=vendor)  # fmt: skip
        assert upload.status_code == 201, upload.text

        sim = MarketSimulation(
            creds, Endpoints(mqtt_port=platform.settings.broker.port, coap_port=platform.services["coap"].port,
                             api_url=str(api.base_url).rstrip("/")),
            intervals={"env_sensor": 3600}, console=Console(quiet=True), outbox_path=tmp_path / "outbox.sqlite3",
            ack_timeout_s=5.0,
        )  # fmt: skip
        ids = sorted(d.device_id for d in sim.devices)
        by_id = {d.device_id: d for d in sim.devices}
        broken, unplugged, liar, tampered = ids[:4]
        by_id[broken].ota.behaviour = OtaBehaviour(fail_install_rate=1.0)
        by_id[unplugged].ota.behaviour = OtaBehaviour(power_loss_rate=1.0)
        by_id[liar].ota.behaviour = OtaBehaviour(wrong_version_rate=1.0)
        handle = by_id[tampered].ota.handle
        by_id[tampered].ota.handle = lambda body: handle(  # a byte changed on the way: the hash no longer matches
            {**body, "image": {**body["image"], "sha256": "0" * 64}} if body.get("op") == "install" else body)

        await sim.start()
        try:
            await until(lambda: asyncio.sleep(0, all(d.connected and d.stats.acked for d in sim.devices)), 30,
                        "devices connected")  # fmt: skip
            created = await api.post("/api/v1/firmware/campaigns", headers=ADMIN, json={
                "name": "simulated fleet", "image_id": upload.json()["id"], "waves": [{"name": "all"}],
                "abort_rules": [], "max_attempts": 1})  # fmt: skip
            assert created.status_code == 201, created.text
            campaign_id = created.json()["id"]

            async def completed() -> dict[str, Any] | None:
                progress = (await api.get(f"/api/v1/firmware/campaigns/{campaign_id}", headers=ADMIN)).json()
                return progress if progress["state"] == "completed" else None

            done = await until(completed, 120, "the campaign to complete")
        finally:
            await sim.stop(drain_s=10)
            sim.close()

        assert done["counts"]["succeeded"] == 3
        reasons = {d: (await DeviceJob.get(device_id=d, campaign_id=campaign_id)).reason for d in ids[:4]}
        assert reasons[broken].startswith("flash_write_error")
        assert reasons[liar].startswith("wrong_version")
        assert reasons[tampered] == "hash_mismatch"
        assert not reasons[unplugged]
        # Power lost half-way: the download resumed, it did not start over.
        client = by_id[unplugged].ota.client
        assert client is not None and client.downloads == 1 and client.bytes_fetched < 1.6 * len(IMAGE)
        fleet = (await api.get("/api/v1/admin/devices", params={"q": "simota"}, headers=ADMIN)).json()
        versions = {d["id"]: d["firmware_version"] for d in fleet["items"]}
        assert {d for d, v in versions.items() if v == "2.0.0"} == set(ids[4:]) | {unplugged}
        for device_id in set(ids[4:]) | {unplugged}:
            assert by_id[device_id].state["firmware_version"] == "2.0.0"
        states = [s["state"] for s in by_id[ids[5]].ota.log]
        assert states[0] == "downloading" and states[-4:] == ["verifying", "installing", "rebooting", "succeeded"]

