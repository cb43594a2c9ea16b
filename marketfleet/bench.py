"""`marketfleet bench <area>`: run a benchmark from tests/bench/ and print its table.

A benchmark module `tests/bench/bench_<area>.py` exposes `async def run(console, quick: bool) -> list[dict]`;
each dict is one table row. Benchmarks compare against a baseline measured in the same run, because these
machines are noisy: read the ratio column, not the absolute numbers alone.
"""

from __future__ import annotations

import asyncio
import importlib
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

AREAS = ("registry", "ingest", "broker", "coap", "rules", "ota", "esl", "vision", "api", "soak")


class UnknownBenchmark(LookupError):
    pass


def load(area: str) -> Any:
    root = Path.cwd()
    if not (root / "tests" / "bench").is_dir():
        raise UnknownBenchmark("run `marketfleet bench` from the repository root (tests/bench/ holds the benchmarks)")
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(f"tests.bench.bench_{area}")
    except ModuleNotFoundError as err:
        if err.name == f"tests.bench.bench_{area}":
            available = sorted(p.stem.removeprefix("bench_") for p in (root / "tests" / "bench").glob("bench_*.py"))
            raise UnknownBenchmark(f"no benchmark {area!r}; available: {', '.join(available)}") from err
        raise


def render(area: str, rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"marketfleet bench {area}")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "backend", "note") else "right")
    for row in rows:
        table.add_row(*[_fmt(row.get(c, "")) for c in columns])
    console.print(table)
    console.print(
        f"machine: {platform.node()} · {platform.machine()} · {_cpus()} cores · Python {platform.python_version()}"
        f" · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def run_benchmark(area: str, console: Console, quick: bool) -> list[dict[str, Any]]:
    module = load(area)
    rows: list[dict[str, Any]] = asyncio.run(module.run(console, quick=quick))
    render(area, rows, console)
    return rows
