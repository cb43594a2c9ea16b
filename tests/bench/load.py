"""Load generation and process helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.services import find_free_port


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def row(self, case: str, **extra: object) -> dict[str, object]:
        return {
            "case": case,
            **extra,
            "requests": self.requests,
            "errors": self.errors,
            "req/s": round(self.rate, 1),
            "p50 ms": round(self.pct(50), 1),
            "p99 ms": round(self.pct(99), 1),
            "mean ms": round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else 0.0,
        }


async def hammer(
    base_url: str,
    path_for: Callable[[int], str],
    *,
    concurrency: int,
    total: int,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`concurrency` clients issue `total` GETs in all; each keeps one connection (like a browser tab)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def client() -> None:
        nonlocal errors
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
            for n in counter:
                started = time.perf_counter()
                try:
                    response = await http.get(path_for(n))
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LoadResult(total, errors, time.perf_counter() - started, latencies)


@contextlib.contextmanager
def platform_process(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """`marketfleet serve` in its own process (so load and server do not share a core); yields (url, token)."""
    port = find_free_port()
    environment = {
        **os.environ,
        "MF_DATA_DIR": str(data_dir),
        "MF_API__PORT": str(port),
        "MF_API__ADMIN_TOKEN": "bench-admin",
        "MF_BROKER__PORT": str(find_free_port()),
        "MF_COAP__PORT": str(find_free_port()),
        "MF_API__RATE_LIMITS": "false",  # the load comes from one address on purpose
        **(env or {}),
    }
    log = (data_dir / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "marketfleet", "serve"], env=environment, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"platform did not start: {(data_dir / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, "bench-admin"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
