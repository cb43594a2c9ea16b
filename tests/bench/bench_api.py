"""Dashboard: fleet table, paging, filters, search and the overview at 100,000 devices, and the overview's time
to first render in Chromium.

The platform runs in its own process (`marketfleet serve`, SQLite registry); 20 concurrent clients load pages
with the admin token. Baseline in the same run: `GET /api/v1/kinds` (a static answer from the same server), so
`vs baseline` is the share of that rate a page keeps. The first-render row is Chromium's
`first-contentful-paint` of `/overview` (median of 5 loads, headless, Debian's /usr/bin/chromium).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from tests.bench.bench_registry import KINDS, MARKETS, _seed
from tests.bench.load import hammer, platform_process

CHROMIUM = "/usr/bin/chromium"


async def first_render_ms(url: str, token: str, path: str, loads: int = 5) -> float | None:
    if shutil.which(CHROMIUM) is None:
        return None
    from playwright.async_api import async_playwright

    samples: list[float] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for _ in range(loads):
                context = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
                page = await context.new_page()
                await page.goto(url + path, wait_until="load")
                fcp = await page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
                if fcp is not None:
                    samples.append(float(fcp))
                await context.close()
        finally:
            await browser.close()
    return statistics.median(samples) if samples else None


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    devices = 20_000 if quick else 100_000
    requests = 200 if quick else 500
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, platform_process(Path(tmp)) as (url, token):
        await _seed(url, token, devices, console)
        headers = {"Authorization": f"Bearer {token}"}
        baseline = await hammer(url, lambda n: "/api/v1/kinds", concurrency=20, total=requests, headers=headers)
        rows.append(baseline.row("baseline GET /api/v1/kinds", **{"vs baseline": 1.0}))
        last_page = devices // 50
        cases = {
            "fleet page 1": lambda n: "/fleet",
            "fleet deep page (random)": lambda n: f"/fleet?page={(n * 7919) % last_page + 1}",
            "fleet filter kind+market": lambda n: f"/fleet?kind={KINDS[n % 5]}&market={MARKETS[n % 20]}",
            "fleet search": lambda n: f"/fleet?q=B{n % 1000:04d}",
            "overview, all markets": lambda n: "/overview",
            "overview, one market": lambda n: f"/overview?market={MARKETS[n % 20]}",
        }
        for case, path in cases.items():
            result = await hammer(url, path, concurrency=20, total=requests, headers=headers)
            rows.append(result.row(f"{case} @ {devices:,} devices",
                                   **{"vs baseline": round(result.rate / baseline.rate, 2)}))
        fcp = await first_render_ms(url, token, f"/overview?market={MARKETS[0]}")
        rows.append({"case": f"overview first contentful paint @ {devices:,} devices (ms, median of 5)",
                     "p50 ms": round(fcp, 1) if fcp is not None else "no chromium"})
    return rows
