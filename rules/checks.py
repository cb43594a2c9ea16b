"""Checks that read the registry rather than envelopes: scale metrology, the presence sweep, device scopes.

They run as scheduled jobs (rules/scheduler.py) and feed the engine like any reading does: metrology
through `RuleEngine.apply_snapshot` (one alarm per owner), the sweep through `RuleEngine.on_presence`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fleet.kinds import DeviceKind
from fleet.models import Device, DeviceStatus, MetrologyRecord, Stall
from rules.engine import RuleEngine
from rules.language import Metrology, Rule

__all__ = ["load_devices", "metrology_matches", "sweep_presence"]


async def load_devices() -> tuple[dict[str, tuple[str | None, dict[str, str]]], dict[str, str]]:
    """Device id → (market, labels) for scopes that name labels or devices without a market on the wire, and
    device id → kind for presence changes that do not name it."""
    rows = await Device.exclude(status=DeviceStatus.RETIRED).values_list("id", "market_id", "labels", "kind")
    devices = {device_id: (market, {str(k): str(v) for k, v in (labels or {}).items()})
               for device_id, market, labels, _ in rows}
    return devices, {device_id: str(kind) for device_id, _, _, kind in rows}


async def metrology_matches(rule: Rule, today: date) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Owners (stall, else the market's unassigned scales) whose scales are overdue / due soon, per SJZ table 4.

    A scale's status is that of its newest certificate (the latest due date).
    """
    cond = rule.condition
    assert isinstance(cond, Metrology)
    scope = rule.scope
    query = Device.filter(kind=DeviceKind.SCALE, status=DeviceStatus.ACTIVE)
    if scope.markets:
        query = query.filter(market_id__in=scope.markets)
    if scope.devices:
        query = query.filter(id__in=scope.devices)
    devices = await query.values_list("id", "market_id", "stall_id", "name")
    if not devices:
        return {}
    due: dict[str, date] = {}
    ids = [d[0] for d in devices]
    for start in range(0, len(ids), 1000):
        for device_id, due_on in await MetrologyRecord.filter(device_id__in=ids[start:start + 1000]).values_list(
                "device_id", "due_on"):
            if device_id not in due or due_on > due[device_id]:
                due[device_id] = due_on
    stalls = {s.id: s for s in await Stall.filter(id__in={d[2] for d in devices if d[2] is not None})}
    horizon = today + timedelta(seconds=cond.within.total_seconds())
    owners: dict[str, list[tuple[str, date | None]]] = defaultdict(list)
    where: dict[str, tuple[str | None, Stall | None]] = {}
    for device_id, market, stall_id, _ in devices:
        due_on = due.get(device_id)
        if cond.state == "overdue":
            hit = due_on < today if due_on is not None else cond.unregistered
        else:
            hit = due_on is not None and today <= due_on <= horizon
        if not hit:
            continue
        stall = stalls.get(stall_id) if stall_id is not None else None
        owner = f"{market or '-'}/stall {stall.number}" if stall else f"{market or '-'}/unassigned"
        owners[owner].append((device_id, due_on))
        where[owner] = (market, stall)
    matches: dict[str, tuple[Any, dict[str, Any]]] = {}
    for owner, scales in owners.items():
        market, stall = where[owner]
        dates = [d for _, d in scales if d is not None]
        names = sorted(device_id for device_id, _ in scales)
        holder = stall.holder_name if stall else ""
        label = f"Market {market or '-'}, " + (f"stall {stall.number}" + (f" ({holder})" if holder else "")
                                               if stall else "scales without a stall")
        matches[owner] = (len(scales), {
            "owner": label, "holder": holder, "stall": stall.number if stall else "", "market": market,
            "count": len(scales), "due_on": min(dates).isoformat() if dates else "no record",
            "devices": ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else ""),
            "device_ids": names,
        })
    return matches


async def sweep_presence(engine: RuleEngine, now: datetime | None = None, grace_factor: float = 3.0) -> int:
    """Tell the engine the presence the registry shows, for devices the presence hook may have missed.

    A device counts as offline when the registry says so or it has been silent for `grace_factor`
    keepalive intervals. Repeating a presence the engine already knows changes nothing. Returns how many
    devices were seen offline.
    """
    now = now or datetime.now(UTC)
    offline = 0
    rows = await Device.filter(status=DeviceStatus.ACTIVE, last_seen__isnull=False).values_list(
        "id", "kind", "market_id", "online", "last_seen", "keepalive_s")
    for device_id, kind, market, online, last_seen, keepalive_s in rows:
        stale = last_seen < now - timedelta(seconds=max(keepalive_s, 1) * grace_factor)
        is_online = bool(online) and not stale
        if not is_online:
            offline += 1
        engine.on_presence(device_id, str(kind), market, is_online, now if is_online else last_seen)
    return offline
