"""Signing in with each role, and what each role may see (issue 10: must show)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PASSWORD, sign_in

pytestmark = pytest.mark.browser

NAV = {
    "ada": {"/overview", "/fleet", "/alerts", "/ota", "/prices", "/labels", "/cameras", "/reports", "/admin/vendors"},
    "mia": {"/overview", "/fleet", "/alerts", "/ota", "/prices", "/labels", "/cameras", "/reports"},
    "manny": {"/overview", "/fleet", "/alerts", "/prices", "/labels", "/cameras", "/reports"},
    "vera": {"/overview", "/fleet"},
}


@pytest.mark.parametrize("username", sorted(NAV))
async def test_each_role_signs_in_and_sees_only_its_pages_in_the_navigation(site, new_page, username) -> None:
    page = await new_page()
    await sign_in(page, site, username)
    assert page.url.endswith("/")  # the overview
    links = set(await page.eval_on_selector_all(".main-nav a", "els => els.map(e => e.getAttribute('href'))"))
    assert links == NAV[username]


async def test_wrong_password_is_refused_with_a_reason(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "mia", "not-the-password")
    assert "/login" in page.url
    assert await page.get_attribute("[role=alert]", "data-error") == "credentials"


async def test_a_page_asked_for_before_signing_in_opens_after_signing_in(site, new_page) -> None:
    page = await new_page()
    await page.goto(f"{site.url}/fleet?kind=scale")
    assert "/login?next=" in page.url
    await page.fill("input[name=username]", "mia")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/fleet?kind=scale")
    kinds = await page.eval_on_selector_all("table.fleet tbody tr[data-device]", "rows => rows.length")
    assert kinds == 10  # every scale, in both markets


async def test_manager_cannot_open_vendor_administration(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "manny")
    response = await page.goto(f"{site.url}/admin/vendors")
    assert response.status == 403
    assert await page.get_attribute("[data-error-code]", "data-error-code") == "403"
    assert await page.locator("table.vendors").count() == 0


async def test_admin_adds_a_vendor_and_sees_its_key_once(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/admin/vendors")
    await page.fill("input[name=code]", "newco")
    await page.fill("input[name=name]", "New Co")
    await page.click("form.card button[type=submit]")
    key = await page.text_content("[data-api-key]")
    assert key and len(key) > 20
    assert await page.locator("tr[data-vendor=newco]").count() == 1
    await page.reload()
    assert await page.locator("[data-api-key]").count() == 0


async def test_manager_sees_only_the_markets_in_scope(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "manny")
    await page.goto(f"{site.url}/fleet")
    markets = set(await page.eval_on_selector_all("table.fleet tbody tr[data-device]",
                                                   "rows => rows.map(r => r.cells[2].textContent.trim())"))
    assert markets == {"福田智慧农贸市场"}


async def test_vendor_sees_only_its_own_devices(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "vera")
    await page.goto(f"{site.url}/fleet")
    shown = set(await page.eval_on_selector_all("tr[data-device]", "rows => rows.map(r => r.dataset.device)"))
    assert shown == set(site.devices["coldco"])
    response = await page.goto(f"{site.url}/devices/{site.devices['acme'][0]}")
    assert response.status == 404


async def test_language_switch_is_remembered(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "mia")  # the account's language is Chinese
    assert await page.get_attribute("html", "lang") == "zh-CN"
    assert await page.text_content(".main-nav a[href='/fleet']") == "设备"
    await page.click("[data-lang-switch=en]")
    await page.wait_for_load_state("domcontentloaded")
    assert await page.get_attribute("html", "lang") == "en"
    await page.goto(f"{site.url}/fleet")
    assert await page.text_content(".main-nav a[href='/fleet']") == "Devices"
