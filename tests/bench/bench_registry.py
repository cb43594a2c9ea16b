"""Registry: bulk registration of 10,000 devices, and fleet listing/filtering at 100,000 devices.

Each backend (SQLite, PostgreSQL) runs the platform in its own process; the load comes from this one with
100 concurrent clients. Baseline in the same run: `GET /api/v1/kinds`, a static answer from the same server,
so `vs baseline` says what the registry query costs on top of HTTP and the framework.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

from tests.bench.load import hammer, platform_process
from tests.services import PostgresServer

KINDS = ["scale", "esl", "camera", "env_sensor", "cold_locker"]
MARKETS = [f"M{n:03d}" for n in range(20)]


async def _seed(url: str, token: str, devices: int, console: Console) -> list[float]:
    admin = {"Authorization": f"Bearer {token}"}
    bulk_seconds: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        for code in MARKETS:
            await http.post("/api/v1/admin/markets", json={"code": code, "name": code}, headers=admin)
        key = (await http.post("/api/v1/admin/vendors", json={"code": "bench", "name": "b"}, headers=admin)).json()[
            "api_key"
        ]
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("registering devices", total=devices)
            for start in range(0, devices, 10_000):
                rows = [
                    {"serial": f"B{n:07d}", "kind": KINDS[n % len(KINDS)], "market": MARKETS[n % len(MARKETS)],
                     "name": f"device {n}"}
                    for n in range(start, min(devices, start + 10_000))
                ]
                began = time.perf_counter()
                response = await http.post("/api/v1/vendor/devices", json={"devices": rows},
                                           headers={"X-API-Key": key})
                response.raise_for_status()
                bulk_seconds.append(time.perf_counter() - began)
                progress.advance(task, len(rows))
    return bulk_seconds


async def _measure(backend: str, registry_url: str | None, console: Console, quick: bool) -> list[dict[str, Any]]:
    devices = 20_000 if quick else 100_000
    requests = 1_000 if quick else 5_000
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MF_REGISTRY__URL": registry_url} if registry_url else {}
        with platform_process(Path(tmp), env) as (url, token):
            bulk = await _seed(url, token, devices, console)
            rows.append({"case": "bulk register 10,000 (first call)", "backend": backend,
                         "seconds": round(bulk[0], 2), "devices/s": round(10_000 / bulk[0])})
            rows.append({"case": f"bulk register, mean of {len(bulk)} calls", "backend": backend,
                         "seconds": round(sum(bulk) / len(bulk), 2),
                         "devices/s": round(10_000 * len(bulk) / sum(bulk))})
            headers = {"Authorization": f"Bearer {token}"}
            baseline = await hammer(url, lambda n: "/api/v1/kinds", concurrency=100, total=requests, headers=headers)
            rows.append(baseline.row("baseline GET /api/v1/kinds", backend=backend, **{"vs baseline": 1.0}))
            cases = {
                "list page (50 of all)": lambda n: f"/api/v1/admin/devices?offset={(n * 50) % 5000}",
                "filter kind+market": lambda n: f"/api/v1/admin/devices?kind={KINDS[n % 5]}&market={MARKETS[n % 20]}",
                "text search": lambda n: f"/api/v1/admin/devices?q=B{n % 1000:04d}",
                # Always 1,000 hits (serials B0000000 …: `B0012` is B0012000–B0012999), a count and a page of 50.
                "text search, 1,000 hits": lambda n: f"/api/v1/admin/devices?q=B{n % (devices // 1000):04d}",
            }
            for case, path in cases.items():
                result = await hammer(url, path, concurrency=100, total=requests, headers=headers)
                rows.append(result.row(f"{case} @ {devices:,} devices", backend=backend,
                                       **{"vs baseline": round(result.rate / baseline.rate, 2)}))
    return rows


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    rows = await _measure("sqlite", None, console, quick)
    if PostgresServer.missing_binaries():
        console.print("[yellow]PostgreSQL not installed: scripts/install-services.sh; skipping its rows[/]")
        return rows
    with PostgresServer() as server:
        rows += await _measure("postgresql", server.create_database("bench"), console, quick)
    return rows
