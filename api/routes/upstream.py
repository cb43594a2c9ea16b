"""Upward data flow status: what each supervision platform has received, what waits, what it refused."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import ContextDep, PlatformAdmin
from fleet.errors import NotFound
from upstream.models import UpstreamRecord

router = APIRouter(prefix="/api/v1/upstream", tags=["upstream"])


@router.get("")
async def upstream_status(ctx: ContextDep, _: PlatformAdmin) -> list[dict[str, Any]]:
    """Per target: pending records, delivered and refused counts since start, back-off and the last error.
    Empty when no target is configured (docs/upstream.md)."""
    service = ctx.services.get("upstream")
    return await service.status() if service is not None else []


@router.post("/{target}/retry-refused")
async def retry_refused(target: str, ctx: ContextDep, _: PlatformAdmin) -> dict[str, int]:
    """Queue the records a target refused (4xx) again, in their original order — after its field mapping or
    the receiver was fixed."""
    service = ctx.services.get("upstream")
    if service is None or target not in service.targets:
        raise NotFound(f"no upstream target {target!r}")
    requeued = await UpstreamRecord.filter(target=target, failed_at__isnull=False, delivered_at=None) \
        .update(failed_at=None, attempts=0)
    service.wake(target)
    return {"requeued": requeued}
