"""Reports: the data-quality report and the standards scorecard of a market, on screen, as CSV downloads, and
printable without the navigation."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest

from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser


async def read_text(path: Path) -> str:
    return await asyncio.to_thread(Path(path).read_text, encoding="utf-8")


async def test_data_quality_report_downloads_as_csv(site, new_page) -> None:
    page = await new_page(accept_downloads=True)
    await sign_in(page, site, "manny", next_path="/reports")
    assert await page.locator("[data-summary=devices]").inner_text() == "12"  # FT01's devices
    async with page.expect_download() as info:
        await page.click("a[data-download=quality]")
    download = await info.value
    assert download.suggested_filename.startswith("FT01-") and download.suggested_filename.endswith(".csv")
    rows = list(csv.reader(io.StringIO(await read_text(await download.path()))))
    assert len(rows) > 1 and any("devices" in ",".join(r) for r in rows)


async def test_scorecard_downloads_as_csv(site, new_page) -> None:
    page = await new_page(accept_downloads=True)
    await sign_in(page, site, "manny", next_path="/reports")
    assert await page.locator("table.scorecard tr[data-item]").count() > 5
    gains = page.locator("ol.gains li[data-gain]")  # what would raise the score most, biggest first
    assert await gains.count() >= 1 and (await gains.first.inner_text()).startswith("+")
    async with page.expect_download() as info:
        await page.click("a[data-download=scorecard]")
    download = await info.value
    assert download.suggested_filename == "FT01-scorecard.csv"
    text = await read_text(await download.path())
    assert text.count("\n") > 5


async def test_printed_report_has_no_navigation(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/reports")
    await page.emulate_media(media="print")
    assert not await page.locator("header.top").is_visible()
    assert not await page.locator("a[data-download=scorecard]").is_visible()
    assert await page.locator("#scorecard h2").is_visible()


async def test_manager_cannot_download_another_markets_report(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "manny")
    response = await page.request.get(f"{site.url}/reports/NS02/data-quality.csv")
    assert response.status == 404


async def test_vendor_has_no_reports(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "vera")
    response = await page.goto(f"{site.url}/reports")
    assert response.status == 403
