"""Load generation and process helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
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
    # (p50, p99, mean) in ms from a tool that keeps its own histogram (wrk) instead of `latencies_ms`
    summary_ms: tuple[float, float, float] | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if self.summary_ms is not None and q in (50, 99):
            return self.summary_ms[0 if q == 50 else 1]
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
            "mean ms": round(self.summary_ms[2] if self.summary_ms else statistics.fmean(self.latencies_ms), 1)
            if self.latencies_ms or self.summary_ms else 0.0,
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


# ---------------------------------------------------------------- `marketfleet bench api`: wrk, many processes

WRK_SCRIPT = Path(__file__).with_name("wrk_paths.lua")


def load_tool() -> str:
    """"wrk" when installed (scripts/install-services.sh installs it), else "python" (`paced_load` below)."""
    return "wrk" if shutil.which("wrk") else "python"


async def wrk_load(base_url: str, paths: list[str], *, connections: int, seconds: float,
                   headers: dict[str, str] | None = None, think_ms: float = 0.0, workdir: Path) -> LoadResult:
    """wrk (one thread, C) keeps `connections` connections busy for `seconds`, taking `paths` in turn.
    `think_ms` > 0: each connection is a user who waits a think time drawn uniformly from 0 to 2 × think_ms
    between an answer and its next request (an offered rate of about connections / think_ms); 0: closed loop."""
    path_file = workdir / f"paths-{len(paths)}-{abs(hash(paths[0])) % 10**8}.txt"
    path_file.write_text("\n".join(paths) + "\n")
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
            "-s", str(WRK_SCRIPT)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(*args, base_url, "--", str(path_file), str(think_ms),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("MFJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-1500:]}")
    data = json.loads(line.removeprefix("MFJSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(data["requests"], errors, data["duration_us"] / 1e6, [],
                      summary_ms=(data["p50_us"] / 1000, data["p99_us"] / 1000, data["mean_us"] / 1000))


async def paced_load(base_url: str, paths: list[str], *, connections: int, seconds: float,
                     headers: dict[str, str] | None = None, think_ms: float = 0.0, workdir: Path | None = None
                     ) -> LoadResult:
    """The fallback when wrk is missing: `connections` httpx clients in this process, one connection each, for
    `seconds` (closed loop, or users with `think_ms` think time like `wrk_load`). Python's client costs more
    CPU than the server it measures, so its numbers are a floor, not the platform's capacity."""
    del workdir
    latencies: list[float] = []
    errors = 0
    counter = itertools.count(random.randrange(len(paths)))
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    ok = (await http.get(paths[next(counter) % len(paths)])).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok
                if think_ms:
                    await asyncio.sleep(random.uniform(0, 2 * think_ms) / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return LoadResult(len(latencies), errors, time.perf_counter() - started, latencies)


def listening_sockets(port: int) -> int:
    """How many sockets listen on `port` (IPv4, any address): with SO_REUSEPORT, how many processes serve it."""
    count = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def wait_listening(port: int, count: int, procs: list[subprocess.Popen[bytes]], log_path: Path,
                   within_s: float = 180) -> None:
    """Until `count` processes listen on `port` (each a SO_REUSEPORT socket), or fail with the log."""
    deadline = time.monotonic() + within_s
    while listening_sockets(port) < count:
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"{count} processes did not come to listen on {port}: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def wait_idle(procs: list[subprocess.Popen[bytes]], *, below: float = 0.15, within_s: float = 120) -> None:
    """Until every process uses less than `below` of a core: a server keeps working through the requests of
    connections a load generator has closed, which would otherwise be counted against the next case."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        before = [_cpu_seconds(p.pid) for p in procs]
        await asyncio.sleep(0.5)
        if all(_cpu_seconds(p.pid) - b < below * 0.5 for p, b in zip(procs, before, strict=True)):
            return
