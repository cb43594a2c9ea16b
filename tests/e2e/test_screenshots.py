"""Every main page renders in both languages with no untranslated text, and its screenshot is saved to
docs/screenshots/<page>-<lang>.png (linked from the README)."""

from __future__ import annotations

import re

import pytest

from api.i18n import CATALOG
from tests.e2e.conftest import screenshot, sign_in

pytestmark = pytest.mark.browser

PAGES = {
    "overview": "/overview?market=FT01",
    "fleet": "/fleet",
    "device": "/devices/{device}",
    "alerts": "/alerts",
    "ota": "/ota",
    "reports": "/reports?market=FT01",
    "vendors": "/admin/vendors",
}
KEY = re.compile(r"\b(?:" + "|".join(sorted({k.split(".")[0] for k in CATALOG["en"]})) + r")\.[a-z_]+(?:\.[a-z_]+)*\b")


@pytest.mark.parametrize("language", ["zh", "en"])
async def test_each_main_page_renders_translated_and_is_screenshotted(site, new_page, language) -> None:
    page = await new_page()
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/lang/{language}?next=/overview")
    problems = []
    for name, path in PAGES.items():
        response = await page.goto(site.url + path.format(device=site.devices["acme"][0]))
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
