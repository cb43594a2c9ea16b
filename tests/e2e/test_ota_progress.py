"""OTA progress as people see it, fed by simulated devices that really download, verify and report.

The platform's firmware service is replaced for the module (as in tests/integration/firmware/conftest.py) by one
whose downlink is the in-test device agents (tests/integration/firmware/agents.py): each agent downloads the
signed image over HTTP from the platform, verifies it and reports ota_status steps through the service's
`on_status`, as the ingest bus would deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.routes import firmware as firmware_routes
from firmware.models import Campaign, DeviceJob
from firmware.service import FirmwareService, FirmwareSettings, setup
from tests.e2e.conftest import Site, sign_in
from tests.factories import ADMIN, eventually
from tests.integration.firmware.agents import AgentFleet

pytestmark = pytest.mark.browser


@dataclass
class Rollout:
    service: FirmwareService
    agents: AgentFleet
    api: httpx.AsyncClient


@pytest.fixture(scope="module")
async def rollout(site: Site, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rollout]:
    agents: list[AgentFleet] = []

    async def send(device: Any, payload: dict[str, Any]) -> None:
        await agents[0].send(device, payload)

    platform = site.platform
    service = setup(
        FirmwareSettings(http_base_url=site.url, tick_s=0.05, enrol_interval_s=0.1),
        registry=platform.registry, data_dir=tmp_path_factory.mktemp("firmware"), send=send,
    )  # fmt: skip
    agents.append(AgentFleet(site.url, service.keypair.public_key, service.on_status))
    services = platform.app.state.ctx.services
    original = services.get("firmware")
    if original is not None:
        await original.aclose()  # one orchestrator per database
    if not any(getattr(r, "path", "").startswith(firmware_routes.router.prefix) for r in platform.app.routes):
        platform.app.include_router(firmware_routes.router)
    services["firmware"] = service
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=site.url, timeout=30) as api:
            yield Rollout(service, agents[0], api)
    finally:
        for campaign in await Campaign.filter(state__in=["running", "paused", "scheduled"]):
            with contextlib.suppress(Exception):
                await service.campaigns.cancel(campaign.id)
        await service.aclose()
        await agents[0].aclose()
        if original is not None:
            services["firmware"] = original
        else:
            services.pop("firmware", None)


async def vendor_fleet(
    rollout: Rollout, code: str, kind: str, model: str, count: int
) -> tuple[int, dict[str, asyncio.Event], dict[str, str]]:
    """A vendor, one model of `kind` and `count` devices in FT01 on 1.0.0, each simulated by an agent that stops
    at "rebooting" until its gate is set; → (model id, device id → gate, vendor headers)."""
    api = rollout.api
    created = await api.post("/api/v1/admin/vendors", json={"code": code, "name": code.title()}, headers=ADMIN)
    assert created.status_code == 201, created.text
    headers = {"X-API-Key": created.json()["api_key"]}
    response = await api.post("/api/v1/vendor/models", json={"kind": kind, "name": model}, headers=headers)
    assert response.status_code == 201, response.text
    model_id = int(response.json()["id"])
    rows = [{"serial": f"{code.upper()}{n:03d}", "kind": kind, "model": model, "market": "FT01",
             "firmware_version": "1.0.0"} for n in range(count)]  # fmt: skip
    devices = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=headers)
    assert devices.status_code == 200 and devices.json()["failed"] == 0, devices.text
    gates = {row["device_id"]: asyncio.Event() for row in devices.json()["rows"]}
    for row in devices.json()["rows"]:
        rollout.agents.add(row["device_id"], row["secret"], version="1.0.0", gate=gates[row["device_id"]])
    return model_id, gates, headers


async def start_campaign(rollout: Rollout, headers: dict[str, str], model: str, model_id: int,
                         waves: list[dict[str, Any]]) -> int:  # fmt: skip
    image = await rollout.api.post("/api/v1/firmware/images", data={"model": model, "version": "2.0.0"},
                                   files={"file": ("fw.bin", bytes(range(256)) * 64)}, headers=headers)
    assert image.status_code == 201, image.text
    body = {"name": f"{model} 2.0.0", "image_id": image.json()["id"],
            "target": {"markets": ["FT01"], "models": [model_id]}, "waves": waves}  # fmt: skip
    response = await rollout.api.post("/api/v1/firmware/campaigns", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def job_states(campaign_id: int) -> list[str]:
    return [str(job.state) for job in await DeviceJob.filter(campaign_id=campaign_id)]


async def test_overview_counts_a_device_as_updating_while_its_ota_job_runs(site, new_page, rollout) -> None:
    model_id, gates, headers = await vendor_fleet(rollout, "updco", "display", "DS1", 1)
    [(device_id, gate)] = gates.items()
    campaign = await start_campaign(rollout, headers, "DS1", model_id, [{"name": "all", "percent": 100}])
    page = await new_page()
    await sign_in(page, site, "mia", next_path="/overview?market=FT01")
    cell = page.locator("td[data-updating='display']")

    async def overview_shows(count: str) -> bool:
        await page.goto(f"{site.url}/overview?market=FT01")
        return (await cell.inner_text()).strip() == count

    # The device downloads, verifies, installs and waits to reboot: its job is under way → 1 updating display.
    await eventually(lambda: _reached(campaign, "rebooting"), within=60)
    await eventually(lambda: overview_shows("1"), within=30)
    steps = [report["state"] for report in rollout.agents.agents[device_id].reports]
    assert steps == ["downloading", "verifying", "installing", "rebooting"], steps
    assert (await page.locator("td[data-updating='scale']").inner_text()).strip() == "0"
    gate.set()
    await eventually(lambda: _reached(campaign, "succeeded"), within=60)
    await eventually(lambda: overview_shows("0"), within=30)
    assert rollout.agents.agents[device_id].version == "2.0.0"
    assert not rollout.agents.errors, rollout.agents.errors


async def _reached(campaign_id: int, state: str) -> bool:
    return await job_states(campaign_id) == [state]


async def test_wave_progress_bar_follows_the_devices_that_succeeded(site, new_page, rollout) -> None:
    model_id, gates, headers = await vendor_fleet(rollout, "waveco", "flow_counter", "FC1", 6)
    # canary = 4 of the 6 devices, the rest after it; the canary's bar is what the test reads
    campaign = await start_campaign(rollout, headers, "FC1", model_id,
                                    [{"name": "canary", "count": 4}, {"name": "rest", "percent": 100}])
    page = await new_page()
    await sign_in(page, site, "mia", next_path="/ota")
    card = page.locator(f"article[data-campaign='{campaign}']")
    await card.wait_for()
    canary = card.locator("tr[data-wave='0']")

    async def canary_shows(pct: int) -> bool:
        value = await canary.locator("[role=progressbar]").get_attribute("aria-valuenow")
        shown = (await canary.locator("td:nth-child(3) small").inner_text()).strip()
        return value == str(pct) and shown.startswith(f"{pct}%")

    # The four canaries download and install, then wait to reboot: none has succeeded, the bar reads 0.
    await eventually(lambda: _count(campaign, "rebooting", 4), within=60)
    await eventually(lambda: canary_shows(0), within=30)
    waiting = [device for device, jobs in (await _jobs_by_device(campaign)).items() if jobs == "rebooting"]
    assert len(waiting) == 4
    # Let them succeed one at a time; the page's own refresh (every 5 s) moves the bar to succeeded / 4.
    for succeeded, device_id in enumerate(waiting, start=1):
        gates[device_id].set()
        await eventually(lambda n=succeeded: _count(campaign, "succeeded", n), within=30)
        await eventually(lambda n=succeeded: canary_shows(n * 100 // 4), within=30)
    assert not rollout.agents.errors, rollout.agents.errors


async def _jobs_by_device(campaign_id: int) -> dict[str, str]:
    return {str(job.device_id): str(job.state) for job in await DeviceJob.filter(campaign_id=campaign_id)}


async def _count(campaign_id: int, state: str, n: int) -> bool:
    return (await job_states(campaign_id)).count(state) == n
