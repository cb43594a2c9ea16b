"""Ingest for operators: dead letters (what devices sent that was refused, and why), presence, ingest metrics;
and the HTTP auth hooks an EMQX broker calls in external mode.

Thin: the queries live in broker/admin.py, the EMQX rules in broker/emqx.py. The read routes need fleet:read and
answer within the caller's markets; the EMQX hooks need platform:admin (EMQX sends that bearer token).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from api.auth import ContextDep, FleetRead, PlatformAdmin
from broker import admin, emqx
from broker.schemas import (
    DeadLetterPage,
    DeadLetterSummary,
    EmqxAclRequest,
    EmqxAuthRequest,
    EmqxResult,
    IngestMetrics,
    PresencePage,
)

if TYPE_CHECKING:
    from broker.service import BrokerService

router = APIRouter(prefix="/api/v1/broker", tags=["ingest"])

Reason = Annotated[
    str | None,
    Query(pattern="^[a-z_]{1,64}$", description="malformed, schema, unknown_device, oversized, future_timestamp, "
                                               "forbidden_topic, bad_signature, rate_limited"),
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
    presence, the broker's sessions/subscriptions (embedded) or workers (external), and the InfluxDB write spool's
    fill level (`telemetry_spool`)."""
    return await admin.ingest_metrics(_service(ctx), who.markets, store=ctx.services.get("store"))


def _service_account(ctx: Any) -> tuple[str, str]:
    service = _service(ctx)
    return (service.params.username, service.params.password) if service is not None else ("", "")


@router.post("/emqx/authenticate", response_model=EmqxResult)
async def emqx_authenticate(data: EmqxAuthRequest, _: PlatformAdmin, ctx: ContextDep) -> EmqxResult:
    """EMQX HTTP authenticator: is this CONNECT a device with its current secret (or the platform)?"""
    user, password = _service_account(ctx)
    result, superuser = await emqx.authenticate(ctx.registry, data.username, data.password, data.clientid,
                                                service_username=user, service_password=password)
    return EmqxResult(result=result, is_superuser=superuser)


@router.post("/emqx/authorize", response_model=EmqxResult)
async def emqx_authorize(data: EmqxAclRequest, _: PlatformAdmin, ctx: ContextDep) -> EmqxResult:
    """EMQX HTTP authoriser: a device publishes only under its own up/ and subscribes only to its own down/."""
    user, _password = _service_account(ctx)
    return EmqxResult(result=emqx.authorize(data.username, data.topic, data.action, service_username=user))
