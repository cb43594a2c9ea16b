"""Gathers `MarketFacts` for one market from the registry, the layout and the providers.

A display's role (stall or public screen) is read from, in order: the device's `labels.screen`, its
`metadata.screen`, its model's `specs.screen`; a display placed at a stall with none of these is a stall
screen. A flow counter's or thermometer's entrance is its `labels.entrance` (or `metadata.entrance`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from compliance.facts import DeviceFacts, LayoutFacts, MarketFacts
from compliance.models import MarketLayout
from compliance.providers import PresenceHistory, SequenceStats
from fleet.errors import NotFound
from fleet.models import Device, DeviceModel, DeviceStatus, Market, Stall

__all__ = ["collect_market_facts", "layout_facts"]


async def layout_facts(code: str) -> LayoutFacts | None:
    layout = await MarketLayout.get_or_none(market_id=code).prefetch_related("entrances")
    if layout is None:
        return None
    entrances = tuple(e.name for e in sorted(layout.entrances, key=lambda e: e.position))
    return LayoutFacts(layout.floor_area_m2, entrances, layout.stall_count)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _screen(kind: str, labels: dict[str, Any], metadata: dict[str, Any], specs: dict[str, Any] | None,
            stall: str | None) -> str | None:
    if kind != "display":
        return None
    for source in (labels, metadata, specs or {}):
        role = _text(source.get("screen"))
        if role:
            return role.lower()
    return "stall" if stall else None


async def collect_market_facts(
    code: str,
    *,
    sequence_stats: SequenceStats,
    presence: PresenceHistory,
    start: datetime,
    end: datetime,
    window_days: int,
) -> MarketFacts:
    """Facts of market `code` over `[start, end)`; NotFound when the market does not exist."""
    if not await Market.exists(code=code):
        raise NotFound(f"market {code!r} not found")
    rows = await Device.filter(market_id=code, status=DeviceStatus.ACTIVE).order_by("id").values(
        "id", "kind", "online", "labels", "metadata", "model_id", "stall_id"
    )
    model_ids = {r["model_id"] for r in rows if r["model_id"] is not None}
    stall_ids = {r["stall_id"] for r in rows if r["stall_id"] is not None}
    specs = dict(await DeviceModel.filter(id__in=list(model_ids)).values_list("id", "specs")) if model_ids else {}
    numbers = dict(await Stall.filter(id__in=list(stall_ids)).values_list("id", "number")) if stall_ids else {}

    ids = [str(r["id"]) for r in rows]
    report = await presence.online_ratios(ids, start, end)
    spans = await sequence_stats.sequence_spans({str(r["id"]): str(r["kind"]) for r in rows}, start, end)

    devices = []
    for row in rows:
        kind = str(row["kind"])
        labels, metadata = row["labels"] or {}, row["metadata"] or {}
        model_specs = specs.get(row["model_id"])
        stall = numbers.get(row["stall_id"])
        devices.append(DeviceFacts(
            id=str(row["id"]),
            kind=kind,
            online=bool(row["online"]),
            online_ratio=report.ratios.get(str(row["id"]), 0.0),
            stall=stall,
            screen=_screen(kind, labels, metadata, model_specs, stall),
            entrance=_text(labels.get("entrance")) or _text(metadata.get("entrance")),
            model_id=row["model_id"],
            specs=model_specs,
        ))
    return MarketFacts(
        market=code,
        devices=tuple(devices),
        layout=await layout_facts(code),
        registered_stalls=await Stall.filter(market_id=code).count(),
        sequence_spans=spans,
        online_basis=report.basis,
        sequence_basis=sequence_stats.basis,
        window_days=window_days,
    )
