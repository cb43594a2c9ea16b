"""The fleet table and overview follow presence live: a simulated device that connects turns its row green, and
when it goes away its row turns red, without reloading the page."""

from __future__ import annotations

import aiomqtt
import pytest

from broker import topics
from tests.e2e.conftest import sign_in
from tests.factories import eventually

pytestmark = pytest.mark.browser


async def row_state(page, device_id: str) -> str:
    return str(await page.get_attribute(f"tr[data-device='{device_id}']", "class"))


async def test_device_going_offline_turns_its_row_red_without_reload(site, new_page) -> None:
    device_id = next(d for d in site.devices["acme"] if "SCAFT01" in d)
    page = await new_page()
    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/fleet?market=FT01")
    await page.evaluate("window.__sameDocument = true")
    assert "offline" in await row_state(page, device_id)
    await page.wait_for_selector("#live-status[data-state=on]")

    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device_id, username=device_id,
                              password=site.secrets[device_id]) as client:
        await client.publish(topics.status_topic("FT01", device_id), b"online", qos=1, retain=True)
        await page.wait_for_selector(f"tr[data-device='{device_id}'].online")
        assert await page.text_content(f"tr[data-device='{device_id}'] td.presence") == "在线"
    # The connection is gone: the broker reports it and the row turns red.
    await page.wait_for_selector(f"tr[data-device='{device_id}'].offline")
    assert await page.text_content(f"tr[data-device='{device_id}'] td.presence") == "离线"
    # The row's background settles on the offline red of app.css (after a short fade).
    await page.wait_for_function(
        f"getComputedStyle(document.querySelector(\"tr[data-device='{device_id}']\")).backgroundColor"
        " == 'rgb(253, 236, 234)'")
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened


async def test_overview_counts_move_with_presence(site, new_page) -> None:
    device_id = next(d for d in site.devices["acme"] if "ENVFT01" in d)
    page = await new_page()
    await sign_in(page, site, "manny")  # one market in scope: the overview is that market's
    assert await page.text_content("h1") == "福田智慧农贸市场 设备总览"
    before = int(await page.text_content("[data-count='total.online']") or 0)
    await page.wait_for_selector("#live-status[data-state=on]")
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device_id, username=device_id,
                              password=site.secrets[device_id]):
        await page.wait_for_function(
            f"document.querySelector(\"[data-count='total.online']\").textContent == '{before + 1}'")
        assert await page.text_content("[data-count='kind.env_sensor.online']") == "1"
        assert await page.locator("#recent li.ok").count() >= 1
    await page.wait_for_function(
        f"document.querySelector(\"[data-count='total.online']\").textContent == '{before}'")


async def test_fleet_search_filter_and_paging_are_server_side(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/fleet?kind=scale&market=NS02")
    ids = await page.eval_on_selector_all("tr[data-device]", "rows => rows.map(r => r.dataset.device)")
    assert len(ids) == 4 and all("SCANS02" in i for i in ids)
    await page.fill("input[name=q]", "SCANS02001")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**q=SCANS02001**")
    assert await page.eval_on_selector_all("tr[data-device]", "rows => rows.length") == 1
    bad = await page.goto(f"{site.url}/fleet?label=no-equals-sign")
    assert bad.status == 200
    assert "key=value" in (await page.text_content("[role=alert]") or "")


async def test_an_unknown_filter_value_is_ignored_not_an_error(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "ada")
    response = await page.goto(f"{site.url}/fleet?kind=toaster&page=99999")
    assert response.status == 200
    await eventually(lambda: page.locator("tr[data-device]").count())
