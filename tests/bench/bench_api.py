"""`marketfleet bench api`: the dashboard at 100,000 devices (issue 10) and the API under 100 / 500 / 2,000
concurrent clients (issue 11).

Dashboard part: fleet table, paging, filters, search and the overview at 100,000 devices, and the overview's
time to first render in Chromium.

The platform runs in its own process (`marketfleet serve`, SQLite registry); 20 concurrent clients load pages
with the admin token. Baseline in the same run: `GET /api/v1/kinds` (a static answer from the same server), so
`vs baseline` is the share of that rate a page keeps. The first-render row is Chromium's
`first-contentful-paint` of `/overview` (median of 5 loads, headless, Debian's /usr/bin/chromium). The SSE row:
2,000 dashboards on /events/presence while one real MQTT device connects and disconnects ten times; the delay
from each change to its arrival at every dashboard (the load generator shares the machine, so it is an upper
bound). `MF_BENCH_API_ONLY=sse marketfleet bench api` runs only the fan-out, on a platform with no other devices,
against a same-run baseline of one dashboard (the delay the platform and one reader add without fan-out).
The dashboard part also holds 1,000 open alerts (issue 10's measure), all in the market whose overview is
rendered, bulk-created with the rules app's Alert model in the platform's SQLite registry after the devices are
registered. `MF_BENCH_API_ONLY=first_render` runs only that setup, the overview rows and the first render.

API part (`api_under_load`, alone with `MF_BENCH_API_ONLY=under_load`): a bare FastAPI "hello" (the ceiling,
tests/bench/hello_server.py), device lookup (cached and mostly uncached), telemetry query and alert list at 100 /
500 / 2,000 connections in a closed loop, then 2,000 users with a 1 s and a 2 s mean think time (about 2,000 and
1,000 requests/s offered), with 1 and then 2 `marketfleet serve --role api` processes sharing one port
(SO_REUSEPORT) against one SQLite registry; the hello runs in as many processes, served the same way. The load
comes from wrk (tests/bench/wrk_paths.lua; installed by scripts/install-services.sh) or, without it, from Python
clients in this process (the `tool` column says which). SJZ section 4: p99 ≤ 200 ms at 2,000 concurrent users, ≥ 5,000
req/s for cached lookups. docs/scale-out.md explains closed loop against users.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tests.bench.bench_registry import KINDS, MARKETS, _seed
from tests.bench.load import (
    hammer,
    load_tool,
    paced_load,
    platform_process,
    start_process,
    stop_processes,
    wait_idle,
    wait_listening,
    wrk_load,
)
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
        await http.post("/api/v1/admin/markets", json={"code": MARKETS[0], "name": MARKETS[0]}, headers=admin)
        vendor = await http.post("/api/v1/admin/vendors", json={"code": f"sse{clients}", "name": "SSE"}, headers=admin)
        rows = [{"serial": f"SSE{clients:05d}", "kind": "env_sensor", "market": MARKETS[0]}]
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


async def sse_only(console: Console, quick: bool) -> list[dict[str, Any]]:
    """The fan-out alone: one dashboard (the baseline), then 200 (`--quick`) or 2,000, in one platform process."""
    clients = 200 if quick else 2_000
    broker_port = find_free_port()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, \
            platform_process(Path(tmp), {"MF_BROKER__PORT": str(broker_port)}) as (url, token):
        baseline = await sse_fanout(url, token, broker_port, 1, changes=20)
        rows.append({**baseline, "vs baseline": 1.0})
        console.print(f"[dim]baseline p99 {baseline['p99 ms']} ms; {clients} dashboards …[/]")
        result = await sse_fanout(url, token, broker_port, clients)
        ratio = round(result["p99 ms"] / baseline["p99 ms"], 1) if baseline["p99 ms"] and result["p99 ms"] else ""
        rows.append({**result, "vs baseline": ratio})
    return rows


OPEN_ALERTS = 1_000
SEVERITY_MIX = ("critical", "warning", "warning", "info")


async def seed_open_alerts(data_dir: Path, market: str, count: int = OPEN_ALERTS) -> int:
    """`count` open alerts on distinct devices of `market`, written with the rules app's Alert model into the
    running platform's SQLite registry (WAL, so its readers carry on); → the open alerts now in that market."""
    from tortoise import Tortoise

    from fleet.models import Device
    from marketfleet import db
    from rules.models import Alert, AlertStatus

    await Tortoise.init(config=db.tortoise_config(f"sqlite://{data_dir / 'registry.sqlite3'}"))
    try:
        await Tortoise.get_connection("default").execute_script("PRAGMA busy_timeout=30000;")
        devices = await Device.filter(market_id=market).order_by("id").limit(count).values_list("id", "kind")
        now = datetime.now(UTC)
        await Alert.bulk_create([
            Alert(rule_id="bench.cold_chain", rule_name="Cold chain too warm", severity=SEVERITY_MIX[n % 4],
                  status=AlertStatus.OPEN, open_key=f"bench.cold_chain|{device_id}", device_id=device_id,
                  market=market, kind=kind, message=f"temperature above 8 °C on {device_id}", value="9.5",
                  last_value="9.5", opened_at=now - timedelta(seconds=n), last_seen_at=now)
            for n, (device_id, kind) in enumerate(devices)
        ], batch_size=500)  # fmt: skip
        return await Alert.filter(status=AlertStatus.OPEN, market=market).count()
    finally:
        await db.close()


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    only = os.environ.get("MF_BENCH_API_ONLY", "")
    if only == "sse":
        return await sse_only(console, quick)
    if only == "under_load":
        return await api_under_load(console, quick)
    devices = 20_000 if quick else 100_000
    requests = 200 if quick else 500
    rows: list[dict[str, Any]] = []
    broker_port = find_free_port()
    with tempfile.TemporaryDirectory() as tmp, \
            platform_process(Path(tmp), {"MF_BROKER__PORT": str(broker_port)}) as (url, token):
        await _seed(url, token, devices, console)
        alerts = await seed_open_alerts(Path(tmp), MARKETS[0])
        if alerts != OPEN_ALERTS:
            raise RuntimeError(f"expected {OPEN_ALERTS} open alerts in {MARKETS[0]}, the registry holds {alerts}")
        scale = f"{devices:,} devices, {alerts:,} open alerts"
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
        if only == "first_render":
            cases = {case: path for case, path in cases.items() if case.startswith("overview")}
        for case, path in cases.items():
            result = await hammer(url, path, concurrency=20, total=requests, headers=headers)
            rows.append(result.row(f"{case} @ {scale}",
                                   **{"vs baseline": round(result.rate / baseline.rate, 2)}))
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
            page = (await http.get(f"/overview?market={MARKETS[0]}")).text
        if f"data-alerts-total>{alerts}<" not in page:  # the page measured must show the alerts
            raise RuntimeError(f"the overview of {MARKETS[0]} does not show {alerts} active alerts")
        fcp = await first_render_ms(url, token, f"/overview?market={MARKETS[0]}")
        rows.append({"case": f"overview first contentful paint @ {scale} (ms, median of 5; goal < 1,000)",
                     "p50 ms": round(fcp, 1) if fcp is not None else "no chromium"})
        if only == "first_render":
            return rows
        rows.append(await sse_fanout(url, token, broker_port, 200 if quick else 2_000))
    return rows + await api_under_load(console, quick)


# ---------------------------------------------------------------- the API under 100 / 500 / 2,000 clients (issue 11)

API_DEVICES = 2_000


async def _api_seed(url: str, token: str) -> list[str]:
    admin = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await http.post("/api/v1/admin/markets", json={"code": "B1", "name": "Bench market"}, headers=admin)
        key = (await http.post("/api/v1/admin/vendors", json={"code": "apib", "name": "b"}, headers=admin)).json()[
            "api_key"]
        rows = (await http.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={"devices": [
            {"serial": f"A{n:05d}", "kind": "env_sensor", "market": "B1"} for n in range(API_DEVICES)]})).json()["rows"]
    return [row["device_id"] for row in rows]


async def _api_readings(data_dir: Path, device_ids: list[str]) -> None:
    """An hour of one-per-10-s readings for the first 200 devices, written straight into the SQLite store."""
    from telemetry import Reading, SqliteStore

    start = datetime.now(UTC) - timedelta(hours=1)
    async with SqliteStore(data_dir / "telemetry.sqlite3", retention_interval=None) as store:
        for device_id in device_ids[:200]:
            await store.write([Reading(device_id, "env_sensor.telemetry", start + timedelta(seconds=10 * n),
                                       {"temperature_c": 4.0 + n % 7, "humidity_pct": 80.0}, seq=n)
                               for n in range(360)])


# Users with think time (a paced load): 2,000 users, each waiting on average THINK_MS between an answer and their
# next request (uniform from 0 to twice that), offer about 2,000 / THINK_MS requests per ms: 1 s gives 2,000 req/s,
# 2 s gives 1,000 req/s.
THINK_MS = (1_000.0, 2_000.0)
USERS = 2_000
# The cached lookup case asks for these many devices in turn: at the rates here each comes back well within the
# cache's 2 s TTL, so nearly every answer is a hit; the 2,000-device case comes back after more than the TTL at
# these rates per process, so most of its answers are read from the registry (a cache miss).
HOT_DEVICES = 200


def _api_env(home: Path, port: int) -> dict[str, str]:
    """Every api process: one SQLite registry and telemetry file shared on this machine (WAL; the bench only
    reads them), one port shared with SO_REUSEPORT, the same master key and admin token."""
    return {
        "MF_REGISTRY__URL": f"sqlite://{home / 'registry.sqlite3'}",
        "MF_TELEMETRY__BACKEND": "sqlite", "MF_TELEMETRY__PATH": str(home / "telemetry.sqlite3"),
        "MF_SECRET_KEY": "bench-api-shared-master-key", "MF_API__ADMIN_TOKEN": "bench-admin",
        "MF_API__PORT": str(port), "MF_API__REUSE_PORT": "true",
        "MF_API__RATE_LIMITS": "false",  # the load comes from one address on purpose
        "MF_COAP__ENABLED": "false", "MF_BROKER__PORT": str(find_free_port()),
    }


async def api_under_load(console: Console, quick: bool) -> list[dict[str, Any]]:
    """Hello ceiling, device lookup (cached), telemetry query (100 readings) and alert list (50 of 1,000 open) at
    100 / 500 / 2,000 connections (closed loop), then 2,000 users with 1 s and 2 s think time, with 1 and 2
    `marketfleet serve --role api` processes sharing one port; the ceiling is a bare FastAPI "hello" served the
    same way by as many processes (tests/bench/hello_server.py). `MF_BENCH_API_ONLY=under_load` runs only this."""
    levels = (100, 500) if quick else (100, 500, 2_000)
    seconds = 3.0 if quick else 6.0
    tool = load_tool()
    generate = wrk_load if tool == "wrk" else paced_load
    if tool != "wrk":
        console.print("[yellow]wrk not installed (scripts/install-services.sh installs it): the load comes from "
                      "Python clients in this process, which bound the numbers below the platform's capacity[/]")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        api_port, hello_port = find_free_port(), find_free_port()
        env = _api_env(home, api_port)
        api_procs: list[subprocess.Popen[bytes]] = []
        hello_procs: list[subprocess.Popen[bytes]] = []
        api_url, hello_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{hello_port}"
        headers = {"Authorization": "Bearer bench-admin"}
        try:
            cases: dict[str, list[str]] = {}
            for processes in (1, 2):
                while len(api_procs) < processes:
                    n = len(api_procs)
                    api_procs.append(start_process([sys.executable, "-m", "marketfleet", "serve", "--role", "api"],
                                                   {**env, "MF_DATA_DIR": str(home / f"api-{n}")},
                                                   home / "api.log"))
                    wait_listening(api_port, len(api_procs), api_procs, home / "api.log")
                    hello_procs.append(start_process([sys.executable, "-m", "tests.bench.hello_server",
                                                      "127.0.0.1", str(hello_port)], {}, home / "hello.log"))
                    wait_listening(hello_port, len(hello_procs), hello_procs, home / "hello.log")
                if not cases:
                    device_ids = await _api_seed(api_url, "bench-admin")
                    await _api_readings(home, device_ids)
                    alerts = await seed_open_alerts(home, "B1")
                    cases = {
                        "hello (bare FastAPI, the ceiling)": ["/hello"],
                        f"device lookup (cached: {HOT_DEVICES} devices in turn)": [
                            f"/api/v1/admin/devices/{d}" for d in device_ids[:HOT_DEVICES]],
                        f"device lookup ({API_DEVICES:,} devices in turn: cache misses)": [
                            f"/api/v1/admin/devices/{d}" for d in device_ids],
                        "telemetry query (100 readings)": [
                            f"/api/v1/admin/devices/{d}/telemetry?limit=100" for d in device_ids[:200]],
                        f"alert list (50 of {alerts:,} open)": ["/api/v1/alerts?limit=50"],
                    }
                for paths in cases.values():  # warm up: caches of every process, SQLite pages
                    url = hello_url if paths == ["/hello"] else api_url
                    await generate(url, paths, connections=50, seconds=1, headers=headers, workdir=home)
                    await wait_idle(api_procs + hello_procs)
                console.print(f"[dim]{processes} api process(es), {tool}: closed loop at {levels} connections, "
                              f"then {USERS:,} users …[/]")
                for connections, think_ms in [(c, 0.0) for c in levels] + [(USERS, t) for t in THINK_MS]:
                    ceiling = 0.0
                    for case, paths in cases.items():
                        url = hello_url if paths == ["/hello"] else api_url
                        result = await generate(url, paths, connections=connections, headers=headers,
                                                seconds=seconds * 2 if think_ms else seconds, think_ms=think_ms,
                                                workdir=home)
                        await wait_idle(api_procs + hello_procs)  # drained before the next case
                        ceiling = ceiling or result.rate
                        load = "closed loop" if not think_ms else f"users, {think_ms / 1000:g} s think"
                        rows.append(result.row(case, processes=processes, connections=connections, load=load,
                                               tool=tool, **{"vs hello": round(result.rate / ceiling, 2)}))
        finally:
            stop_processes(api_procs + hello_procs)
    return rows
