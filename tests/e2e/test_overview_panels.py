"""The overview's panels (issue 10, Build 2): open alerts by severity (live, without reloading), today's
transactions and passenger flow of the market, and its data-quality score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from telemetry import Reading
from tests.e2e.conftest import sign_in
from tests.e2e.test_alerts_inbox import RULE, locker_reports
from tests.factories import ADMIN, eventually

pytestmark = pytest.mark.browser


async def test_panels_show_todays_sales_flow_quality_and_alerts_by_severity_live(site, new_page) -> None:
    now = datetime.now(UTC) - timedelta(seconds=2)  # inside the market's day whatever the hour
    scale = next(d for d in site.devices["acme"] if "SCAFT01" in d)
    counter = next(d for d in site.devices["coldco"] if "FLOFT01" in d)
    await site.platform.services["store"].write([
        *(Reading(device_id=scale, measurement="scale.event", ts=now - timedelta(milliseconds=10 * i),
                  fields={"total": 12.5}, tags={"market": "FT01", "event_type": "transaction"}) for i in range(3)),
        *(Reading(device_id=counter, measurement="flow_counter.telemetry", ts=now - timedelta(milliseconds=10 * i),
                  fields={"count_in": 40, "count_out": 25}, tags={"market": "FT01"}) for i in range(2)),
    ])
    async with httpx.AsyncClient(base_url=site.url, headers=ADMIN) as api:  # the site's 12, and any added since
        in_market = (await api.get("/api/v1/admin/devices", params={"market": "FT01", "limit": 1})).json()["total"]
    page = await new_page()
    await sign_in(page, site, "manny")  # one market in scope: its overview

    async def figures() -> bool:  # today's figures and quality are kept a few seconds per market: reload
        await page.reload()
        return (await page.inner_text("[data-today=transactions]") == "3"
                and await page.inner_text("[data-today=passengers]") == "80"
                and f"{in_market} " in await page.inner_text("[data-panel=quality]"))

    await eventually(figures, within=40)
    assert "37.50" in await page.inner_text("[data-panel=transactions]")
    assert "50" in await page.inner_text("[data-panel=flow]")  # out
    assert 0 <= int(await page.inner_text("[data-quality]")) <= 100

    await page.evaluate("window.__sameDocument = true")
    await page.wait_for_selector("#live-status[data-state=on]")
    critical = int(await page.inner_text("[data-severity=critical]"))
    await site.rules.create_rule({**RULE, "id": "overview-locker-warm"})
    try:
        locker = next(d for d in site.devices["coldco"] if "COLFT01" in d)
        await locker_reports(site, locker, 4, 16.0)
        await page.wait_for_function(
            f"document.querySelector('[data-severity=critical]').textContent == '{critical + 1}'", timeout=30_000)
        assert await page.evaluate("window.__sameDocument") is True  # the panel moved without a reload
        await page.reload()
        assert int(await page.inner_text("[data-alarming=cold_locker]")) >= 1  # devices by kind: alarming
    finally:
        await site.rules.delete_rule("overview-locker-warm")
