"""Telemetry queries for people and integrations: raw readings of one device channel, or per-bucket
aggregates of one numeric field (what the dashboard's charts draw), from the configured telemetry store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from api.auth import ContextDep, FleetRead, RegistryDep
from fleet.errors import InvalidRequest
from fleet.lookups import device_view
from telemetry import TelemetryStore

router = APIRouter(prefix="/api/v1/admin/devices", tags=["telemetry"])
MAX_SPAN = timedelta(days=366)


def _store(ctx: Any) -> TelemetryStore:
    store = ctx.services.get("store")
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the telemetry store is not running")
    return store  # type: ignore[no-any-return]


def _window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=24)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("start, end: give a time zone (e.g. 2026-11-23T08:00:00+08:00 or …Z)")
    if not start < end or end - start > MAX_SPAN:
        raise InvalidRequest("start, end: start must be before end, at most 366 days apart")
    return start, end


@router.get("/{device_id}/telemetry")
async def device_readings(
    device_id: str, registry: RegistryDep, who: FleetRead, ctx: ContextDep,
    channel: Literal["telemetry", "event", "state"] = "telemetry",
    start: Annotated[datetime | None, Query(description="default: 24 hours before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Readings of one channel with start ≤ ts < end, oldest first (at most `limit`)."""
    device = await device_view(registry.lookups, device_id, markets=who.markets)  # scoped, from the lookup cache
    start, end = _window(start, end)
    readings = await _store(ctx).range(device.id, f"{device.kind}.{channel}", start, end, limit=limit)
    return {"device_id": device.id, "channel": channel, "start": start, "end": end,
            "readings": [{"ts": r.ts, "seq": r.seq, "fields": r.fields, "tags": r.tags} for r in readings]}


@router.get("/{device_id}/telemetry/{field}")
async def device_series(
    device_id: str, field: str, registry: RegistryDep, who: FleetRead, ctx: ContextDep,
    start: Annotated[datetime | None, Query(description="default: 24 hours before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    every: Literal["1m", "1h"] = "1m",
) -> dict[str, Any]:
    """Mean, min, max and count of a numeric telemetry field per minute or hour (empty buckets left out)."""
    device = await device_view(registry.lookups, device_id, markets=who.markets)
    start, end = _window(start, end)
    buckets = await _store(ctx).downsample(device.id, f"{device.kind}.telemetry", field[:100], start, end,
                                           every)
    return {"device_id": device.id, "field": field, "every": every, "buckets": [
        {"ts": b.bucket, "mean": b.mean, "min": b.min, "max": b.max, "count": b.count} for b in buckets]}
