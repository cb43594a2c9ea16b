"""`marketfleet bench soak`: steady load for a long time; the platform's memory must stay flat (issue 11).

The platform runs as its own process with 500 devices; a steady mix of device lookups, device listings and
telemetry writes+queries is sent at a fixed rate (about half of what `bench api` measured this machine to
serve), for 30 minutes (`--quick`: 3). The platform process's resident memory is sampled every 30 s (10 s with
`--quick`); the baseline is its memory after the first sample period, once caches are warm. Flat means the
last sample is within 10 % of that baseline.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tests.bench.load import platform_process

RATE = 100  # requests per second, total


def _platform_pid() -> int:
    """The `marketfleet serve` child of this process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"serve" in cmdline:
            return int(entry.name)
    raise RuntimeError("platform process not found")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    minutes, every = (3, 10.0) if quick else (30, 30.0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, platform_process(Path(tmp)) as (url, token):
        pid = _platform_pid()
        admin = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await http.post("/api/v1/admin/markets", json={"code": "S1", "name": "Soak"}, headers=admin)
            key = (await http.post("/api/v1/admin/vendors", json={"code": "soak", "name": "s"}, headers=admin)).json()[
                "api_key"]
            ids = [r["device_id"] for r in (await http.post("/api/v1/vendor/devices", headers={"X-API-Key": key},
                   json={"devices": [{"serial": f"K{n:04d}", "kind": "env_sensor", "market": "S1"}
                                     for n in range(500)]})).json()["rows"]]
            paths = [lambda n: f"/api/v1/admin/devices/{ids[n % 500]}",
                     lambda n: f"/api/v1/admin/devices?offset={(n * 50) % 500}",
                     lambda n: f"/api/v1/admin/devices/{ids[n % 500]}/telemetry?limit=50"]
            started = time.monotonic()
            sent = errors = 0
            next_sample = started + every
            samples: list[tuple[float, float]] = []
            while time.monotonic() - started < minutes * 60:
                tick = time.monotonic()
                batch = [http.get(paths[n % 3](n), headers=admin) for n in range(sent, sent + RATE // 10)]
                for response in await asyncio.gather(*batch, return_exceptions=True):
                    errors += isinstance(response, Exception) or response.status_code != 200  # type: ignore[union-attr]
                sent += len(batch)
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - started, _rss_mib(pid)))
                    console.print(f"[dim]{samples[-1][0]:6.0f} s  {samples[-1][1]:7.1f} MiB  {sent:,} requests[/]")
                    next_sample += every
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    baseline = samples[0][1]
    peak = max(m for _, m in samples)
    for at, mib in samples[:: max(1, len(samples) // 8)] + samples[-1:]:
        rows.append({"case": f"RSS at {at / 60:.1f} min", "MiB": round(mib, 1),
                     "vs first sample": round(mib / baseline, 3)})
    rows.append({"case": f"{minutes} min at ~{RATE} req/s", "requests": sent, "errors": errors,
                 "MiB": round(peak, 1), "vs first sample": round(samples[-1][1] / baseline, 3),
                 "note": "flat" if samples[-1][1] <= baseline * 1.10 else "GREW more than 10 %"})
    return rows
