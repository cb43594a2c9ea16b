"""Read side of ingest for operators: dead letters, presence, metrics. The API routes call these and nothing else.

`markets` is the caller's market scope (None: every market). A person scoped to markets sees dead letters of
devices in those markets only; letters whose sender could not be identified (device_id null) are visible to
unscoped callers only, since they belong to no market.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tortoise.functions import Count
from tortoise.queryset import QuerySet

from broker.models import DeadLetter
from broker.schemas import (
    DeadLetterPage,
    DeadLetterPublic,
    DeadLetterSummary,
    IngestMetrics,
    PresencePage,
    PresenceRow,
    ReasonCount,
)
from fleet.models import Device
from telemetry import spool_status

if TYPE_CHECKING:
    from broker.service import BrokerService

__all__ = ["dead_letter_summary", "dead_letters", "ingest_metrics", "presence"]


def _scoped(query: QuerySet[DeadLetter], markets: Collection[str] | None) -> QuerySet[DeadLetter]:
    if markets is None:
        return query
    in_scope = Device.filter(market_id__in=list(markets)).values_list("id", flat=True)
    return query.filter(device_id__in=in_scope)


def _public(letter: DeadLetter) -> DeadLetterPublic:
    payload = bytes(letter.payload) if letter.payload is not None else None
    return DeadLetterPublic(
        id=letter.id, received_at=letter.received_at, transport=letter.transport, device_id=letter.device_id,
        topic=letter.topic, reason=letter.reason, detail=letter.detail,
        payload_text=payload.decode("utf-8", "replace") if payload is not None else None,
        payload_bytes=len(payload or b""),
    )


async def dead_letters(
    *,
    markets: Collection[str] | None = None,
    device_id: str | None = None,
    reason: str | None = None,
    transport: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> DeadLetterPage:
    """Newest first; page with `before_id` = the last id seen (stable while new letters arrive)."""
    query = _scoped(DeadLetter.all(), markets)
    if device_id is not None:
        query = query.filter(device_id=device_id)
    if reason is not None:
        query = query.filter(reason=reason)
    if transport is not None:
        query = query.filter(transport=transport)
    if since is not None:
        query = query.filter(received_at__gte=since)
    total = await query.count()
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    rows = await query.order_by("-id").limit(limit)
    return DeadLetterPage(total=total, items=[_public(r) for r in rows])


async def dead_letter_counts(markets: Collection[str] | None = None, since: datetime | None = None) -> dict[str, int]:
    query = _scoped(DeadLetter.all(), markets)
    if since is not None:
        query = query.filter(received_at__gte=since)
    rows = await query.annotate(n=Count("id")).group_by("reason").values("reason", "n")
    return {row["reason"]: int(row["n"]) for row in rows}


async def dead_letter_summary(
    markets: Collection[str] | None = None, since: datetime | None = None
) -> DeadLetterSummary:
    counts = await dead_letter_counts(markets, since)
    by_reason = [ReasonCount(reason=r, count=n) for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return DeadLetterSummary(since=since, total=sum(counts.values()), by_reason=by_reason)


async def presence(
    service: BrokerService | None,
    *,
    markets: Collection[str] | None = None,
    market: str | None = None,
    online: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> PresencePage:
    """Devices with their presence: the live tracker's view where it has one, else the stored columns (which
    lag the tracker by at most its flush interval)."""
    query = Device.all()
    if markets is not None:
        query = query.filter(market_id__in=list(markets))
    if market is not None:
        query = query.filter(market_id=market)
    tracker = service.presence if service is not None else None
    if tracker is not None and tracker.has_unflushed():
        await tracker.flush()  # make the stored columns current so filtering and counts agree with live state
    total = await query.count()
    online_count = await query.filter(online=True).count()
    if online is not None:
        query = query.filter(online=online)
    rows = await query.order_by("id").offset(offset).limit(limit).values(
        "id", "kind", "market_id", "online", "last_seen"
    )
    items = []
    for row in rows:
        last_seen = row["last_seen"]
        if tracker is not None and (live := tracker.last_seen(row["id"])) is not None:
            last_seen = max(live, last_seen) if last_seen is not None else live
        items.append(PresenceRow(device_id=row["id"], kind=str(getattr(row["kind"], "value", row["kind"])),
                                 market=row["market_id"], online=bool(row["online"]), last_seen=last_seen))
    return PresencePage(online=online_count, total=total, items=items)


async def ingest_metrics(service: BrokerService | None, markets: Collection[str] | None = None,
                         store: object = None) -> IngestMetrics:
    dead = await dead_letter_counts(markets)
    spool = spool_status(service.store if service is not None else store)
    spool_info = spool.as_dict() if spool is not None else None
    if service is None:  # the API-only role: no broker in this process
        return IngestMetrics(mode="none", ingest={}, dead_letters=dead, presence={}, telemetry_spool=spool_info)
    stats: dict[str, Any] = service.stats()
    return IngestMetrics(
        mode=service.params.mode, ingest=stats["ingest"], dead_letters=dead,
        presence={"online": service.presence.online_count(), "changes": int(stats["presence_changes"])},
        broker=stats.get("broker"), workers=stats.get("workers"), bus_dropped=stats.get("bus_dropped", {}),
        telemetry_spool=spool_info,
    )
