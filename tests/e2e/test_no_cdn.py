"""No CDN at run time (issue 10): every script, stylesheet, image and font a page loads comes from the platform."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser

API = Path(__file__).resolve().parents[2] / "api"
PAGES = ["/overview", "/fleet", "/alerts", "/alerts?view=archive", "/alerts?view=tasks", "/ota", "/prices",
         "/labels", "/ledger", "/cameras", "/reports", "/admin/vendors"]
# A URL the browser would fetch from elsewhere: src/href/action/url()/import/fetch pointing at another host.
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["'](?:https?:)?//|url\(\s*["']?(?:https?:)?//"""
                      r"""|@import\s+["']?(?:https?:)?//|fetch\(\s*["'](?:https?:)?//""", re.IGNORECASE)


async def test_every_page_loads_only_from_the_platform(site, new_page) -> None:
    page = await new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    await sign_in(page, site, "ada")
    sensor = next(d for d in site.devices["acme"] if "ENVFT01" in d)
    for path in [*PAGES, f"/devices/{sensor}"]:
        response = await page.goto(site.url + path)
        assert response.status == 200, path
        await page.wait_for_load_state("networkidle")
    elsewhere = sorted({u for u in fetched if not u.startswith(site.url) and not u.startswith(("data:", "blob:"))})
    assert not elsewhere, elsewhere
    assert any(u.startswith(f"{site.url}/static/vendor/") for u in fetched)  # the libraries, served locally


def test_templates_and_static_files_name_no_other_host() -> None:
    found = [f"{path.relative_to(API)}: {m.group(0)}"
             for path in sorted([*API.glob("templates/**/*.html"), *API.glob("static/**/*.js"),
                                 *API.glob("static/**/*.css")])
             for m in EXTERNAL.finditer(path.read_text(encoding="utf-8"))]
    assert not found, found
