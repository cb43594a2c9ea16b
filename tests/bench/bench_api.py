"""Dashboard: fleet table, paging, filters, search and the overview at 100,000 devices, and the overview's time
to first render in Chromium.

The platform runs in its own process (`marketfleet serve`, SQLite registry); 20 concurrent clients load pages
with the admin token. Baseline in the same run: `GET /api/v1/kinds` (a static answer from the same server), so
`vs baseline` is the share of that rate a page keeps. The first-render row is Chromium's
`first-contentful-paint` of `/overview` (median of 5 loads, headless, Debian's /usr/bin/chromium). The SSE row:
2,000 dashboards on /events/presence while one real MQTT device connects and disconnects ten times; the delay
from each change to its arrival at every dashboard (the load generator shares the machine, so it is an upper
bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tests.bench.bench_registry import KINDS, MARKETS, _seed
from tests.bench.load import hammer, platform_process
from tests.services import find_free_port

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


async def sse_fanout(url: str, token: str, broker_port: int, clients: int, changes: int = 10) -> dict[str, Any]:
    """`clients` dashboards subscribed to /events/presence; one real MQTT device connects and disconnects
    `changes` times; the delay from each change to its arrival at every dashboard."""
    import aiomqtt

    admin = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        vendor = await http.post("/api/v1/admin/vendors", json={"code": "ssebench", "name": "SSE"}, headers=admin)
        rows = [{"serial": "SSE00001", "kind": "env_sensor", "market": MARKETS[0]}]
        result = (await http.post("/api/v1/vendor/devices", json={"devices": rows},
                                  headers={"X-API-Key": vendor.json()["api_key"]})).json()["rows"][0]
    device_id, secret = result["device_id"], result["secret"]
    arrivals: list[list[float]] = [[] for _ in range(clients)]
    connected = 0
    all_connected = asyncio.Event()
    got = [0] * changes
    everyone_got = [asyncio.Event() for _ in range(changes)]
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits, headers=admin) as http:

        async def listen(index: int) -> None:
            nonlocal connected
            async with http.stream("GET", "/events/presence") as response:
                connected += 1
                if connected == clients:
                    all_connected.set()
                async for line in response.aiter_lines():
                    if line.startswith("data:") and device_id in line:
                        arrivals[index].append(time.perf_counter())
                        change = len(arrivals[index]) - 1
                        if change < changes:
                            got[change] += 1
                            if got[change] == clients:
                                everyone_got[change].set()

        listeners = [asyncio.create_task(listen(i)) for i in range(clients)]
        try:
            await asyncio.wait_for(all_connected.wait(), 120)
            await asyncio.sleep(1.0)  # every stream has subscribed on the server
            sent: list[float] = []
            for change in range(changes):
                sent.append(time.perf_counter())
                if change % 2 == 0:
                    link = aiomqtt.Client("127.0.0.1", broker_port, identifier=device_id, username=device_id,
                                          password=secret)
                    await link.__aenter__()
                else:
                    await link.__aexit__(None, None, None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(everyone_got[change].wait(), 15)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    delays = sorted((a[k] - sent[k]) * 1000 for a in arrivals for k in range(min(len(a), changes)))
    missed = clients * changes - len(delays)
    return {"case": f"SSE presence fan-out to {clients:,} dashboards ({changes} changes)",
            "requests": clients * changes, "errors": missed,
            "p50 ms": round(delays[len(delays) // 2], 1) if delays else "",
            "p99 ms": round(delays[int(len(delays) * 0.99) - 1], 1) if delays else ""}


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    devices = 20_000 if quick else 100_000
    requests = 200 if quick else 500
    rows: list[dict[str, Any]] = []
    broker_port = find_free_port()
    with tempfile.TemporaryDirectory() as tmp, \
            platform_process(Path(tmp), {"MF_BROKER__PORT": str(broker_port)}) as (url, token):
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
        rows.append(await sse_fanout(url, token, broker_port, 200 if quick else 2_000))
    return rows
