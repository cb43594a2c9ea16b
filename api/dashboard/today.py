"""Today's transactions and passenger flow of one market, read from the telemetry store.

"Today" is the market's local day (`Market.timezone`). Transactions are the scales' `transaction` events
(measurement `scale.event`, tag `event_type=transaction`); passenger flow is the sum of the flow counters'
`count_in` (measurement `flow_counter.telemetry`). The store is asked per device (the `TelemetryStore` protocol
has no cross-device aggregate), at most `CONCURRENCY` at a time and for at most `MAX_DEVICES` devices of each
kind, and the answer is kept `CACHE_S` seconds per market, so many open overviews cost one computation.
"""

from __future__ import annotations

import asyncio
import time as monotonic
from dataclasses import dataclass
from datetime import UTC, datetime, time

from api.i18n import zone
from fleet.kinds import DeviceKind
from fleet.models import Device, DeviceStatus
from telemetry import TelemetryStore

CONCURRENCY = 16
MAX_DEVICES = 2_000
CACHE_S = 15.0
PER_DEVICE_LIMIT = 50_000


@dataclass(frozen=True)
class Today:
    transactions: int
    sales_yuan: float
    passengers_in: int
    passengers_out: int
    partial: bool  # more devices than MAX_DEVICES: the figures cover the first ones only
    since: datetime  # local midnight, in UTC


_cache: dict[tuple[int, str], tuple[float, Today]] = {}


def local_midnight(timezone: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    local = now.astimezone(zone(timezone))
    return datetime.combine(local.date(), time(0), zone(timezone)).astimezone(UTC)


async def _device_ids(market: str, kind: DeviceKind) -> tuple[list[str], bool]:
    ids = await (
        Device.filter(market_id=market, kind=kind)
        .exclude(status=DeviceStatus.RETIRED)
        .order_by("id")
        .limit(MAX_DEVICES + 1)
        .values_list("id", flat=True)
    )
    return [str(i) for i in ids[:MAX_DEVICES]], len(ids) > MAX_DEVICES


async def today_in_market(store: TelemetryStore, market: str, timezone: str) -> Today:
    key = (id(store), market)
    cached = _cache.get(key)
    if cached is not None and monotonic.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    start, end = local_midnight(timezone), datetime.now(UTC)
    scales, partial_scales = await _device_ids(market, DeviceKind.SCALE)
    counters, partial_counters = await _device_ids(market, DeviceKind.FLOW_COUNTER)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def readings(device_id: str, measurement: str):  # type: ignore[no-untyped-def]
        async with gate:
            return await store.range(device_id, measurement, start, end, limit=PER_DEVICE_LIMIT)

    sales = await asyncio.gather(*(readings(d, "scale.event") for d in scales))
    flows = await asyncio.gather(*(readings(d, "flow_counter.telemetry") for d in counters))
    transactions, yuan = 0, 0.0
    for device_readings in sales:
        for reading in device_readings:
            if reading.tags.get("event_type") == "transaction":
                transactions += 1
                total = reading.fields.get("total")
                yuan += float(total) if isinstance(total, int | float) and not isinstance(total, bool) else 0.0
    passengers_in = passengers_out = 0
    for device_readings in flows:
        for reading in device_readings:
            passengers_in += int(reading.fields.get("count_in", 0) or 0)
            passengers_out += int(reading.fields.get("count_out", 0) or 0)
    result = Today(transactions, round(yuan, 2), passengers_in, passengers_out,
                   partial_scales or partial_counters, start)
    _cache[key] = (monotonic.monotonic(), result)
    return result
