"""`marketfleet bench soak`: steady load at half of what the platform can serve, for a long time; the platform's
memory must stay flat (issue 11: "a 30-minute soak at 50 % load with flat memory").

The platform (`marketfleet serve`, SQLite) runs as its own process with 500 devices. The request mix is device
lookups, device listings, telemetry queries and telemetry writes through HTTP ingest (one reading per request,
each device counting its own seq), round robin. First the platform's capacity for that mix is measured in the
same run (20 closed-loop clients for 20 s, `--quick`: 8 s); then the mix is sent open-loop at 50 % of it — a
request is started every 1/rate seconds whether or not the earlier ones have answered (at most 256 in flight) —
for 30 minutes (`--quick`: 3). The platform process's resident memory (VmRSS) is sampled every 30 s (10 s with
`--quick`); the baseline is the first sample, taken after one sample period of load. Flat: the last sample is
within 10 % of the baseline. The slope is the least-squares fit over all samples, in MiB per 10 minutes.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tests.bench.load import platform_process

DEVICES = 500
LOAD_FRACTION = 0.5  # of the capacity measured in the same run
MAX_IN_FLIGHT = 256
CALIBRATION_CLIENTS = 20
FLAT = 1.10  # last sample within 10 % of the first


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


def slope_per_10min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per 10 minutes (0 for fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [m for _, m in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if not var:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var * 600


class Mix:
    """The soak's requests, round robin: lookup, listing, telemetry query, telemetry write (HTTP ingest)."""

    def __init__(self, http: httpx.AsyncClient, admin: dict[str, str], devices: list[tuple[str, str]]) -> None:
        self.http, self.admin, self.devices = http, admin, devices
        self.seqs = [0] * len(devices)
        self.statuses: Counter[str] = Counter()
        self.done = 0
        self.started = datetime.now(UTC)

    def request(self, n: int) -> Callable[[], Awaitable[httpx.Response]]:
        device_id, secret = self.devices[n % len(self.devices)]
        which = n % 4
        if which == 0:
            return lambda: self.http.get(f"/api/v1/admin/devices/{device_id}", headers=self.admin)
        if which == 1:
            return lambda: self.http.get(f"/api/v1/admin/devices?offset={(n * 50) % len(self.devices)}",
                                         headers=self.admin)
        if which == 2:
            return lambda: self.http.get(f"/api/v1/admin/devices/{device_id}/telemetry?limit=50", headers=self.admin)
        index = n % len(self.devices)
        seq = self.seqs[index]
        self.seqs[index] += 1
        ts = (self.started + timedelta(milliseconds=seq)).isoformat()
        body = {"seq": seq, "ts": ts, "payload": {"temperature_c": 18 + seq % 10, "humidity_pct": 55.0}}
        return lambda: self.http.post(f"/api/v1/ingest/{device_id}/telemetry", json=body,
                                      headers={"Authorization": f"Bearer {device_id}:{secret}"})

    async def send(self, n: int) -> None:
        try:
            response = await self.request(n)()
            self.statuses[str(response.status_code)] += 1
        except httpx.HTTPError as err:
            self.statuses[type(err).__name__] += 1
        self.done += 1

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != "200")


async def capacity(mix: Mix, seconds: float) -> float:
    """Requests/s the platform serves for the mix with CALIBRATION_CLIENTS closed-loop clients."""
    counter = iter(range(10**9))
    deadline = time.monotonic() + seconds
    before = mix.done

    async def client() -> None:
        while time.monotonic() < deadline:
            await mix.send(next(counter))

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CALIBRATION_CLIENTS)))
    return (mix.done - before) / (time.monotonic() - started)


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    minutes, every, calibrate_s = (3, 10.0, 8.0) if quick else (30, 30.0, 20.0)
    with tempfile.TemporaryDirectory() as tmp, platform_process(Path(tmp)) as (url, token):
        pid = _platform_pid()
        admin = {"Authorization": f"Bearer {token}"}
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them (no reuse-while-closing race).
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64, keepalive_expiry=2.0)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            await http.post("/api/v1/admin/markets", json={"code": "S1", "name": "Soak"}, headers=admin)
            key = (await http.post("/api/v1/admin/vendors", json={"code": "soak", "name": "s"}, headers=admin)).json()[
                "api_key"]
            rows = (await http.post("/api/v1/vendor/devices", headers={"X-API-Key": key},
                    json={"devices": [{"serial": f"K{n:04d}", "kind": "env_sensor", "market": "S1"}
                                      for n in range(DEVICES)]})).json()["rows"]
            mix = Mix(http, admin, [(r["device_id"], r["secret"]) for r in rows])

            ceiling = await capacity(mix, calibrate_s)
            rate = max(1.0, ceiling * LOAD_FRACTION)
            calibration_errors = mix.errors
            console.print(f"[dim]capacity for the mix: {ceiling:.1f} req/s → soak at {rate:.1f} req/s[/]")

            rss_start = _rss_mib(pid)
            done_before = mix.done
            in_flight: set[asyncio.Task[None]] = set()
            samples: list[tuple[float, float]] = []
            throttled = 0
            started = time.monotonic()
            next_send = next_sample = started
            next_sample += every
            n = 10**6  # past the calibration's request numbers: the seqs keep counting per device
            while (now := time.monotonic()) - started < minutes * 60:
                if now >= next_sample:
                    samples.append((now - started, _rss_mib(pid)))
                    console.print(f"[dim]{samples[-1][0]:6.0f} s  {samples[-1][1]:7.1f} MiB  "
                                  f"{mix.done - done_before:,} requests  {len(in_flight)} in flight[/]")
                    next_sample += every
                if len(in_flight) >= MAX_IN_FLIGHT:
                    throttled += 1
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                task = asyncio.create_task(mix.send(n))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                n += 1
                next_send += 1 / rate
                await asyncio.sleep(max(0.0, min(next_send, next_sample) - time.monotonic()))
            elapsed = time.monotonic() - started
            if in_flight:
                await asyncio.wait(in_flight, timeout=60)
            samples.append((time.monotonic() - started, _rss_mib(pid)))
            sent = n - 10**6

    baseline, end = samples[0][1], samples[-1][1]
    slope = slope_per_10min(samples)
    statuses = dict(mix.statuses)
    rows_out: list[dict[str, Any]] = [
        {"case": f"capacity for the mix ({CALIBRATION_CLIENTS} clients, {calibrate_s:.0f} s)",
         "req/s": round(ceiling, 1), "errors": calibration_errors},
    ]
    for at, mib in samples[:: max(1, len(samples) // 8)] + samples[-1:]:
        rows_out.append({"case": f"RSS at {at / 60:.1f} min", "MiB": round(mib, 1),
                         "vs first sample": round(mib / baseline, 3)})
    rows_out.append({
        "case": f"{minutes} min at {LOAD_FRACTION:.0%} load", "requests": sent, "req/s": round(sent / elapsed, 1),
        "errors": mix.errors - calibration_errors, "MiB": round(end, 1), "vs first sample": round(end / baseline, 3),
        "start MiB": round(rss_start, 1), "peak MiB": round(max(m for _, m in samples), 1),
        "MiB/10 min": round(slope, 2),
        "note": f"{'flat' if end <= baseline * FLAT else 'GREW more than 10 %'} (target {rate:.1f} req/s)",
    })
    console.print(f"statuses: {statuses}; generator held back at {MAX_IN_FLIGHT} in flight: {throttled}×")
    return rows_out
