"""OTA campaigns page: per-wave progress, pause / resume / abort from the dashboard (the platform's firmware
service, fed through the real firmware API)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.conftest import sign_in
from tests.factories import ADMIN

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
async def campaign(site) -> int:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as api:
        created = await api.post("/api/v1/admin/vendors", json={"code": "otaco", "name": "OTA Co"}, headers=ADMIN)
        headers = {"X-API-Key": created.json()["api_key"]}
        model = await api.post("/api/v1/vendor/models", json={"kind": "env_sensor", "name": "E1"}, headers=headers)
        assert model.status_code == 201, model.text
        rows = [{"serial": f"OTA{n:03d}", "kind": "env_sensor", "model": "E1", "market": "FT01",
                 "firmware_version": "1.0.0"} for n in range(4)]
        devices = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=headers)
        assert devices.status_code == 200, devices.text
        image = await api.post("/api/v1/firmware/images", data={"model": "E1", "version": "2.0.0"},
                               files={"file": ("fw.bin", bytes(range(256)) * 64)}, headers=headers)
        assert image.status_code == 201, image.text
        body = {"name": "E1 2.0.0 rollout", "image_id": image.json()["id"],
                "target": {"markets": ["FT01"], "models": [model.json()["id"]]},
                "waves": [{"name": "canary", "count": 1}, {"name": "rest", "percent": 100}]}
        response = await api.post("/api/v1/firmware/campaigns", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


async def test_campaign_shows_each_wave_and_can_be_paused_resumed_and_aborted(site, new_page, campaign) -> None:
    page = await new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await sign_in(page, site, "mia", next_path="/ota")
    card = page.locator(f"article[data-campaign='{campaign}']")
    await card.wait_for()
    assert await card.locator("tr[data-wave]").count() == 2
    assert await card.locator("[role=progressbar]").count() == 2
    await card.locator("button[data-action=pause]").click()
    await page.wait_for_selector(f"article[data-campaign='{campaign}'][data-state=paused]")
    await page.locator(f"article[data-campaign='{campaign}'] button[data-action=resume]").click()
    await page.wait_for_selector(f"article[data-campaign='{campaign}'][data-state=running]")
    await page.locator(f"article[data-campaign='{campaign}'] button[data-action=abort]").click()
    await page.wait_for_selector(f"article[data-campaign='{campaign}'][data-state=cancelled]")
    assert await page.locator(f"article[data-campaign='{campaign}'] button[data-action]").count() == 0


async def test_manager_has_no_ota_page(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "manny")
    response = await page.goto(f"{site.url}/ota")
    assert response.status == 403
