"""Ingest for operators: dead letters (what devices sent that was refused, and why), presence, ingest metrics.

Thin: the queries live in broker/admin.py. Every route needs fleet:read and answers within the caller's markets.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from api.auth import ContextDep, FleetRead
from broker import admin
from broker.schemas import DeadLetterPage, DeadLetterSummary, IngestMetrics, PresencePage

if TYPE_CHECKING:
    from broker.service import BrokerService

router = APIRouter(prefix="/api/v1/broker", tags=["ingest"])

Reason = Annotated[
    str | None,
    Query(pattern="^[a-z_]{1,64}$", description="malformed, schema, unknown_device, oversized, future_timestamp, "
                                               "forbidden_topic, bad_signature"),
]


def _service(ctx: Any) -> BrokerService | None:
    return ctx.services.get("broker")


@router.get("/dead-letters", response_model=DeadLetterPage)
async def list_dead_letters(
    who: FleetRead,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    reason: Reason = None,
    transport: Annotated[str | None, Query(pattern="^(mqtt|coap|http|serial)$")] = None,
    since: datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, description="page on: the smallest id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    """Refused uplinks, newest first, with the reason and the first 1,024 bytes of what arrived."""
    return await admin.dead_letters(markets=who.markets, device_id=device_id, reason=reason, transport=transport,
                                    since=since, before_id=before_id, limit=limit)


@router.get("/dead-letters/summary", response_model=DeadLetterSummary)
async def dead_letter_summary(who: FleetRead, since: datetime | None = None) -> DeadLetterSummary:
    """How many uplinks were refused, by reason."""
    return await admin.dead_letter_summary(who.markets, since)


@router.get("/presence", response_model=PresencePage)
async def presence(
    who: FleetRead,
    ctx: ContextDep,
    market: Annotated[str | None, Query(max_length=32)] = None,
    online: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PresencePage:
    """Which devices are online and when each was last heard from (last will, retained status, keepalive)."""
    return await admin.presence(_service(ctx), markets=who.markets, market=market, online=online, limit=limit,
                                offset=offset)


@router.get("/metrics", response_model=IngestMetrics)
async def metrics(who: FleetRead, ctx: ContextDep) -> IngestMetrics:
    """Ingest counters of this process (uplinks, stored, duplicates, rejected by reason), dead letters by reason,
    presence, and the broker's sessions/subscriptions (embedded) or workers (external)."""
    return await admin.ingest_metrics(_service(ctx), who.markets)
