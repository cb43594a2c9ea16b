"""Every main page renders in both languages with no untranslated text, and its screenshot is saved to
docs/screenshots/<page>-<lang>.png (linked from the README)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from api.i18n import CATALOG
from rules.schemas import AlertFilter
from telemetry import Reading
from tests.e2e.conftest import screenshot, sign_in
from tests.e2e.test_alerts_inbox import RULE, locker_reports
from tests.e2e.test_cameras import screenshot_camera  # noqa: F401  (a camera at work, for its pages)
from tests.e2e.test_prices_and_labels import stock_the_shop
from tests.factories import eventually

pytestmark = pytest.mark.browser

async def show_some_activity(site) -> None:
    """What a market looks like at work: a sensor's readings for the chart, and a locker alert in the inbox
    (once per module)."""
    if any(r.id == "screenshot-locker-warm" for r in await site.rules.list_rules()):
        return
    sensor = next(d for d in site.devices["acme"] if "ENVFT01" in d)
    now = datetime.now(UTC)
    await site.platform.services["store"].write([
        Reading(device_id=sensor, measurement="env_sensor.telemetry", ts=now - timedelta(minutes=5 * i),
                fields={"temperature_c": 18 + 4 * math.sin(i / 20), "humidity_pct": 70.0 + (i % 7)})
        for i in range(288)
    ])
    await site.rules.create_rule({**RULE, "id": "screenshot-locker-warm"})
    locker = next(d for d in site.devices["coldco"] if "COLFT01" in d)
    await locker_reports(site, locker, 1, 13.5)
    await eventually(lambda: site.rules.alerts.search(AlertFilter(status="active")))
    await stock_the_shop(site)


PAGES = {
    "overview": "/overview?market=FT01",
    "fleet": "/fleet",
    "device": "/devices/{sensor}",
    "alerts": "/alerts",
    "ota": "/ota",
    "cameras": "/cameras",
    "camera": "/cameras/{camera}",
    "prices": "/prices?market=FT01",
    "labels": "/labels?market=FT01",
    "ledger": "/ledger?market=FT01",
    "reports": "/reports?market=FT01",
    "vendors": "/admin/vendors",
}
KEY = re.compile(r"\b(?:" + "|".join(sorted({k.split(".")[0] for k in CATALOG["en"]})) + r")\.[a-z_]+(?:\.[a-z_]+)*\b")


@pytest.mark.parametrize("language", ["zh", "en"])
async def test_each_main_page_renders_translated_and_is_screenshotted(site, new_page, language,
                                                                     screenshot_camera) -> None:  # noqa: F811
    await show_some_activity(site)
    page = await new_page()
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/lang/{language}?next=/overview")
    problems = []
    for name, path in PAGES.items():
        sensor = next(d for d in site.devices["acme"] if "ENVFT01" in d)
        response = await page.goto(site.url + path.format(sensor=sensor, camera=screenshot_camera))
        assert response.status == 200, f"{name}: HTTP {response.status}"
        await page.wait_for_load_state("networkidle")
        text = await page.inner_text("body")
        leftover = KEY.findall(text)  # a catalog key shown as itself: its text is missing
        if leftover:
            problems.append(f"{name}: untranslated {sorted(set(leftover))[:5]}")
        await screenshot(page, f"{name}-{language}")
    assert not problems, problems


def test_every_key_exists_in_both_languages() -> None:
    assert CATALOG["zh"].keys() == CATALOG["en"].keys()
    assert all(CATALOG["zh"][k] and CATALOG["en"][k] for k in CATALOG["en"])
