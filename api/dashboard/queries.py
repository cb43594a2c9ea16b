"""Read-only aggregate queries the dashboard needs and `fleet.registry.Registry` does not offer yet.

Each is one GROUP BY over indexed columns (kind, online, market_id, vendor_id), never a per-device loop. They
belong in the registry once another caller needs them; the signatures are chosen so they can move unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from tortoise.functions import Count

from fleet.kinds import DeviceKind
from fleet.models import Device, Market
from fleet.registry import Registry


@dataclass
class PresenceCount:
    online: int = 0
    offline: int = 0

    @property
    def total(self) -> int:
        return self.online + self.offline

    @property
    def online_pct(self) -> float:
        return 100.0 * self.online / self.total if self.total else 0.0

    def add(self, online: bool, n: int) -> None:
        if online:
            self.online += n
        else:
            self.offline += n


@dataclass
class PresenceSummary:
    """Devices online/offline in one scope: overall, per kind (catalog order) and per market."""

    total: PresenceCount = field(default_factory=PresenceCount)
    by_kind: dict[str, PresenceCount] = field(default_factory=dict)
    by_market: dict[str | None, PresenceCount] = field(default_factory=dict)


def _scoped(markets: Collection[str] | None, vendor_id: int | None, market: str | None):  # type: ignore[no-untyped-def]
    query = Device.all()
    if markets is not None:
        query = query.filter(market_id__in=list(markets))
    if vendor_id is not None:
        query = query.filter(vendor_id=vendor_id)
    if market:
        query = query.filter(market_id=market)
    return query


SUMMARY_CACHE_S = 3.0
_summaries: dict[tuple[frozenset[str] | None, int | None, str | None], tuple[float, PresenceSummary]] = {}


async def presence_summary(
    *, markets: Collection[str] | None, vendor_id: int | None = None, market: str | None = None
) -> PresenceSummary:
    """Online/offline counts of the devices a principal sees (`markets` scope, a vendor's own), optionally in
    one market. Kept `SUMMARY_CACHE_S` per scope: at 100,000 devices the GROUP BY costs a few hundred ms, and
    many dashboards opening at once (a shift change) then share one; the page moves the counts live after."""
    key = (frozenset(markets) if markets is not None else None, vendor_id, market)
    cached = _summaries.get(key)
    if cached is not None and time.monotonic() - cached[0] < SUMMARY_CACHE_S:
        return cached[1]
    summary = await _presence_summary(markets=markets, vendor_id=vendor_id, market=market)
    if len(_summaries) > 1_000:
        _summaries.clear()
    _summaries[key] = (time.monotonic(), summary)
    return summary


async def _presence_summary(
    *, markets: Collection[str] | None, vendor_id: int | None, market: str | None
) -> PresenceSummary:
    rows = (
        await _scoped(markets, vendor_id, market)
        .annotate(n=Count("id"))
        .group_by("kind", "market_id", "online")
        .values("kind", "market_id", "online", "n")
    )
    summary = PresenceSummary()
    order = {kind.value: i for i, kind in enumerate(DeviceKind)}
    for row in sorted(rows, key=lambda r: order.get(str(r["kind"]), len(order))):
        online, n = bool(row["online"]), int(row["n"])
        summary.total.add(online, n)
        summary.by_kind.setdefault(str(row["kind"]), PresenceCount()).add(online, n)
        summary.by_market.setdefault(row["market_id"], PresenceCount()).add(online, n)
    return summary


async def markets_of_vendor(vendor_id: int) -> list[str]:
    """Codes of the markets where a vendor has devices (what a vendor may pick in the dashboard)."""
    rows = await (
        Device.filter(vendor_id=vendor_id, market_id__not_isnull=True)
        .group_by("market_id")
        .values_list("market_id", flat=True)
    )
    return sorted(str(code) for code in rows)


async def device_counts_by_vendor() -> dict[int, int]:
    rows = await Device.all().annotate(n=Count("id")).group_by("vendor_id").values("vendor_id", "n")
    return {int(row["vendor_id"]): int(row["n"]) for row in rows}


async def device_facts(device_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """(kind, vendor_id) of each known device among `device_ids`: what a presence event lacks."""
    ids = list(device_ids)
    if not ids:
        return {}
    rows = await Device.filter(id__in=ids).values_list("id", "kind", "vendor_id")
    return {str(device_id): (str(kind), int(vendor_id)) for device_id, kind, vendor_id in rows}


async def visible_markets(
    registry: Registry, markets: Collection[str] | None, vendor_id: int | None
) -> list[Market]:
    """The markets a principal may pick: their scope, or for a vendor the markets holding its devices."""
    if vendor_id is not None:
        codes = await markets_of_vendor(vendor_id)
        return await registry.list_markets(codes) if codes else []
    return await registry.list_markets(markets)


ACTIVE_ALERT_STATES = ("open", "acknowledged")
SEVERITIES = ("critical", "warning", "info")


@dataclass
class AlertSummary:
    """Active (open or acknowledged) alerts in one scope: per severity, and devices alarming per kind."""

    by_severity: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    alarming_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())


async def alert_summary(*, markets: Collection[str] | None, market: str | None = None) -> AlertSummary:
    """Two GROUP BYs over the indexed alert columns; imported here so a registry without the rules app still
    renders the rest of the overview."""
    from rules.models import Alert

    query = Alert.filter(status__in=ACTIVE_ALERT_STATES)
    if markets is not None:
        query = query.filter(market__in=list(markets))
    if market:
        query = query.filter(market=market)
    summary = AlertSummary()
    for row in await query.annotate(n=Count("id")).group_by("severity").values("severity", "n"):
        summary.by_severity[str(row["severity"])] = summary.by_severity.get(str(row["severity"]), 0) + int(row["n"])
    pairs = await (
        query.filter(device_id__not_isnull=True).group_by("kind", "device_id").values_list("kind", "device_id")
    )
    for kind, _device in pairs:
        summary.alarming_by_kind[str(kind)] = summary.alarming_by_kind.get(str(kind), 0) + 1
    return summary


UPDATING_STATES = ("downloading", "verifying", "installing", "rebooting")


async def updating_by_kind(
    *, markets: Collection[str] | None, vendor_id: int | None = None, market: str | None = None
) -> dict[str, int]:
    """Devices with an OTA job under way (downloading … rebooting), per kind; one GROUP BY over the jobs."""
    from firmware.models import DeviceJob

    query = DeviceJob.filter(state__in=UPDATING_STATES)
    if markets is not None:
        query = query.filter(device__market_id__in=list(markets))
    if vendor_id is not None:
        query = query.filter(device__vendor_id=vendor_id)
    if market:
        query = query.filter(device__market_id=market)
    rows = await query.annotate(n=Count("id")).group_by("device__kind").values("device__kind", "n")
    return {str(row["device__kind"]): int(row["n"]) for row in rows}
