"""Vision: onboarding cameras by ONVIF, their analytics configuration, passenger flow, events with evidence.

The worker itself runs as its own process (`marketfleet vision run`); these routes read and write the vision
tables it shares with the API.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from accounts.permissions import Permission, Principal
from api.audit import audit_before
from api.auth import FleetRead, FleetWrite, RegistryDep, require
from fleet.errors import NotFound
from vision.config import CameraAnalytics
from vision.models import EventState, VisionCamera, VisionEvent
from vision.onboarding import OnboardRequest, onboard, registry_registrar
from vision.store import VisionStore

router = APIRouter(prefix="/api/v1/vision", tags=["vision"])
store = VisionStore()
AlertsRead = Annotated[Principal, require(Permission.ALERTS_READ)]
AlertsWrite = Annotated[Principal, require(Permission.ALERTS_WRITE)]
ReportsRead = Annotated[Principal, require(Permission.REPORTS_READ)]


class CameraPublic(BaseModel):
    device_id: str
    market: str | None
    name: str
    manufacturer: str
    model: str
    stream_uri: str
    snapshot_uri: str | None
    enabled: bool
    analytics: dict[str, Any]

    @classmethod
    def of(cls, camera: VisionCamera) -> CameraPublic:
        return cls(device_id=camera.device_id, market=camera.market, name=camera.name,
                   manufacturer=camera.manufacturer, model=camera.model, stream_uri=camera.stream_uri,
                   snapshot_uri=camera.snapshot_uri, enabled=camera.enabled, analytics=camera.analytics or {})


class FlowPointPublic(BaseModel):
    start: datetime
    line: str
    count_in: int
    count_out: int


class FlowPublic(BaseModel):
    camera: str
    bucket: str
    total_in: int
    total_out: int
    points: list[FlowPointPublic]


class EventPublic(BaseModel):
    id: int
    camera: str
    market: str | None
    category: str
    zone: str | None
    track_id: int | None
    count: int | None
    confidence: float
    detail: str
    evidence_url: str | None
    state: EventState
    handled_by: str | None
    handled_at: datetime | None
    note: str
    created_at: datetime

    @classmethod
    def of(cls, e: VisionEvent) -> EventPublic:
        return cls(id=e.id, camera=e.camera, market=e.market, category=e.category, zone=e.zone,
                   track_id=e.track_id, count=e.count, confidence=e.confidence, detail=e.detail,
                   evidence_url=f"/api/v1/vision/events/{e.id}/evidence" if e.evidence_path else None,
                   state=e.state, handled_by=e.handled_by, handled_at=e.handled_at, note=e.note,
                   created_at=e.created_at)


class HandleRequest(BaseModel):
    note: str = Field(default="", max_length=1000)


async def _camera(device_id: str, principal: Principal) -> VisionCamera:
    camera = await store.camera(device_id)
    if not principal.sees_market(camera.market):
        raise NotFound(f"camera {device_id} is not known to the vision worker; onboard it first")
    return camera


async def _event(event_id: int, principal: Principal) -> VisionEvent:
    event = await store.event(event_id)
    if not principal.sees_market(event.market):
        raise NotFound(f"vision event {event_id} not found")
    return event


@router.post("/cameras", response_model=CameraPublic, status_code=201)
async def onboard_camera(data: OnboardRequest, principal: FleetWrite, registry: RegistryDep) -> CameraPublic:
    """Onboard a camera by its ONVIF address: read identity, profiles and stream URI, register it as a
    `camera` device (idempotent by serial) and hand it to the vision worker."""
    if not principal.sees_market(data.market):
        raise NotFound(f"market {data.market} not found")
    return CameraPublic.of(await onboard(data, registry_registrar(registry), store))


@router.get("/cameras", response_model=list[CameraPublic])
async def list_cameras(principal: FleetRead) -> list[CameraPublic]:
    return [CameraPublic.of(c) for c in await store.cameras(principal.markets)]


@router.get("/cameras/{device_id}", response_model=CameraPublic)
async def get_camera(device_id: str, principal: FleetRead) -> CameraPublic:
    return CameraPublic.of(await _camera(device_id, principal))


@router.put("/cameras/{device_id}/analytics", response_model=CameraPublic)
async def set_analytics(device_id: str, data: CameraAnalytics, request: Request,
                        principal: FleetWrite) -> CameraPublic:
    """Replace the camera's lines, zones and rules; the worker picks the change up within `vision.reload_s`."""
    audit_before(request, CameraPublic.of(await _camera(device_id, principal)))
    return CameraPublic.of(await store.set_analytics(device_id, data))


@router.get("/cameras/{device_id}/flow", response_model=FlowPublic)
async def passenger_flow(
    device_id: str, principal: ReportsRead,
    start: Annotated[datetime | None, Query(description="default: 24 hours ago")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    line: Annotated[str | None, Query(max_length=64)] = None,
    bucket: Literal["minute", "hour", "day"] = "hour",
) -> FlowPublic:
    """In/out counts per entrance line, per minute, hour or day (UTC), over the last 30 days (SZ 6.9)."""
    await _camera(device_id, principal)
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=24)
    points = await store.flow(device_id, start, end, line=line, bucket=bucket)
    return FlowPublic(camera=device_id, bucket=bucket, total_in=sum(p.count_in for p in points),
                      total_out=sum(p.count_out for p in points),
                      points=[FlowPointPublic(**p.__dict__) for p in points])


@router.get("/events", response_model=list[EventPublic])
async def list_events(
    principal: AlertsRead, camera: str | None = None, category: str | None = None,
    state: EventState | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventPublic]:
    events = await store.events(camera=camera, category=category, state=state, markets=principal.markets,
                                limit=limit)
    return [EventPublic.of(e) for e in events]


@router.get("/events/{event_id}/evidence", response_class=FileResponse)
async def event_evidence(event_id: int, principal: AlertsRead) -> FileResponse:
    """The evidence snapshot (JPEG): the frame with boxes, tracks, zones and the zone's count drawn."""
    event = await _event(event_id, principal)
    if not event.evidence_path or not await asyncio.to_thread(Path(event.evidence_path).is_file):
        raise NotFound(f"vision event {event_id} has no evidence image")
    return FileResponse(event.evidence_path, media_type="image/jpeg")


@router.post("/events/{event_id}/handle", response_model=EventPublic)
async def handle_event(event_id: int, data: HandleRequest, principal: AlertsWrite) -> EventPublic:
    """Mark the event handled (open → handled), recording who and a note: the handling archive (HZ 7.3.2.1)."""
    await _event(event_id, principal)
    return EventPublic.of(await store.handle_event(event_id, principal.actor, data.note))
