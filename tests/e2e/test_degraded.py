"""A page whose service does not run on this instance says so, instead of failing."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def without(site):
    """Take optional services out of the running platform for one test, and put them back after."""
    taken: dict[str, object] = {}

    def take(*names: str) -> None:
        for name in names:
            taken[name] = site.platform.services.pop(name)

    yield take
    site.platform.services.update(taken)


async def test_pages_say_which_service_is_not_running(site, new_page, without) -> None:
    without("rules", "firmware", "bus")
    page = await new_page()
    await sign_in(page, site, "ada", next_path="/alerts")
    assert await page.get_attribute("[data-not-running]", "data-not-running") == "rules"
    assert "is not running" in await page.inner_text("[data-not-running]")  # ada reads English
    await page.goto(f"{site.url}/ota")
    assert await page.get_attribute("[data-not-running]", "data-not-running") == "firmware"
    await page.goto(f"{site.url}/overview?market=FT01")
    assert await page.locator("[data-panel=alerts] [data-not-running=rules]").count() == 1
    assert await page.locator("[data-live-off]").count() == 1  # no bus: no live updates, and it says so
    assert await page.locator("[data-count='total.all']").inner_text() == "12"


async def test_alert_actions_answer_503_without_the_rules_service(site, new_page, without) -> None:
    without("rules")
    page = await new_page()
    await sign_in(page, site, "mia")
    response = await page.request.post(f"{site.url}/alerts/1/ack")
    assert response.status == 503
    events = await page.request.get(f"{site.url}/events/alerts")
    assert events.status == 204  # EventSource stops reconnecting
