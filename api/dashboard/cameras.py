"""Cameras: a grid per market with each camera's latest picture, presence and today's passenger flow; a camera's
page with the line and zone editor drawn on its picture, its passenger-flow chart and its violation events.

Reads the vision tables (`vision.store.VisionStore`, shared with the `marketfleet vision run` worker) and the
registry (a camera is a `camera` device: its presence is the worker's MQTT link). The editor
(`static/cameras.js`) saves through `PUT /api/v1/vision/cameras/{id}/analytics` with the session cookie, so the
page and the API validate one way (`vision.config.CameraAnalytics`: coordinates are fractions of the frame);
the worker picks a change up within `vision.reload_s`. The chart reads `GET /api/v1/vision/cameras/{id}/flow`.
Pictures come from the camera itself (`vision.snapshots`), with a timeout and a placeholder when it is away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response

from accounts.permissions import Permission, Principal
from api.auth import ContextDep
from api.dashboard.today import local_midnight
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_see_cameras, not_found_page, render
from api.i18n import CATALOG, DEFAULT_TIMEZONE
from fleet.errors import Conflict, NotFound
from fleet.models import Device, Market
from vision.models import EventState, VisionCamera
from vision.snapshots import SnapshotUnavailable, latest_snapshot
from vision.store import VisionStore

router = APIRouter()
store = VisionStore()
EVENTS_SHOWN = 20


def may_edit_cameras(principal: Principal) -> bool:
    """Lines and zones are the camera's configuration: who may change the fleet (maintainers, admins)."""
    return principal.can(Permission.FLEET_WRITE)


@dataclass
class CameraTile:
    camera: VisionCamera
    online: bool
    last_seen: datetime | None
    passengers_in: int
    passengers_out: int
    open_events: int


async def _timezones(codes: set[str]) -> dict[str, Market]:
    return {m.code: m for m in await Market.filter(code__in=list(codes))} if codes else {}


async def _today_flow(camera: VisionCamera, timezone: str) -> tuple[int, int]:
    now = datetime.now(UTC)
    points = await store.flow(camera.device_id, local_midnight(timezone, now), now, bucket="day")
    return sum(p.count_in for p in points), sum(p.count_out for p in points)


async def _visible_camera(viewer: Viewer, device_id: str) -> VisionCamera | None:
    camera = await VisionCamera.get_or_none(device_id=device_id)
    if camera is None or not viewer.principal.sees_market(camera.market):
        return None
    return camera


def category_text(viewer: Viewer, category: str) -> str:
    key = f"cameras.category.{category}"
    return viewer.t(key) if key in CATALOG[viewer.language] else category


@router.get("/cameras")
async def cameras_page(
    request: Request, viewer: ViewerDep, market: Annotated[str, Query(max_length=32)] = ""
) -> Response:
    if not viewer.may(may_see_cameras):
        return forbidden_page(request, viewer)
    cameras = await store.cameras(viewer.principal.markets)
    markets = await _timezones({c.market for c in cameras if c.market})
    shown = [c for c in cameras if not market or c.market == market]
    devices = {d.id: d for d in await Device.filter(id__in=[c.device_id for c in shown])}
    open_counts: dict[str, int] = {}
    for event in await store.events(state=EventState.OPEN, markets=viewer.principal.markets, limit=1000):
        open_counts[event.camera] = open_counts.get(event.camera, 0) + 1
    groups: dict[str | None, list[CameraTile]] = {}
    for camera in shown:
        device = devices.get(camera.device_id)
        zone_name = markets[camera.market].timezone if camera.market in markets else DEFAULT_TIMEZONE
        flow_in, flow_out = await _today_flow(camera, zone_name)
        groups.setdefault(camera.market, []).append(CameraTile(
            camera, bool(device and device.online), device.last_seen if device else None, flow_in, flow_out,
            open_counts.get(camera.device_id, 0)))
    return render(request, viewer, "cameras.html", {
        "groups": [(markets.get(code) if code else None, code, tiles) for code, tiles in sorted(
            groups.items(), key=lambda item: item[0] or "")],
        "markets": sorted(markets.values(), key=lambda m: m.code), "market": market,
    }, section="cameras")


@router.get("/cameras/{device_id}/snapshot.jpg")
async def camera_snapshot(viewer: ViewerDep, device_id: str) -> Response:
    """The camera's current picture (JPEG); 503 with the reason when the camera does not give one."""
    if not viewer.may(may_see_cameras):
        return JSONResponse({"detail": "this role may not see cameras"}, status_code=403)
    camera = await _visible_camera(viewer, device_id)
    if camera is None:
        return JSONResponse({"detail": f"camera {device_id!r} not found"}, status_code=404)
    try:
        jpeg = await latest_snapshot(camera.device_id, camera.snapshot_uri, camera.stream_uri)
    except SnapshotUnavailable as err:
        return JSONResponse({"detail": str(err)}, status_code=503)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _events_context(viewer: Viewer, camera: VisionCamera, timezone: str) -> dict[str, Any]:
    principal = viewer.principal
    events = await store.events(camera=camera.device_id, limit=EVENTS_SHOWN) \
        if principal.can(Permission.ALERTS_READ) else []
    return {"camera": camera, "events": events, "timezone": timezone,
            "may_events": principal.can(Permission.ALERTS_READ),
            "may_handle": principal.can(Permission.ALERTS_WRITE),
            "category_text": lambda category: category_text(viewer, category), "message": None, "error": False}


async def _worker_health(ctx: ContextDep, camera: VisionCamera) -> dict[str, Any] | None:
    """The worker's latest report for this camera (its `camera.telemetry`): analysed and skipped frames per
    second, inference time, people in view; `behind` when it analyses under 80 % of the configured rate."""
    store_service = ctx.services.get("store")
    if store_service is None:
        return None
    reading = (await store_service.latest([camera.device_id], "camera.telemetry")).get(camera.device_id)
    if reading is None:
        return None
    fields = reading.fields
    target = float((camera.analytics or {}).get("sample_fps", 2.0))
    fps = float(fields.get("fps") or 0.0)
    return {"at": reading.ts, "fps": fps, "target": target, "behind": fps < 0.8 * target,
            "inference_ms": float(fields.get("inference_ms") or 0.0),
            "skipped_fps": float(fields.get("skipped_fps") or 0.0),
            "people": int(fields.get("people_in_view") or 0)}


@router.get("/cameras/{device_id}")
async def camera_page(request: Request, viewer: ViewerDep, ctx: ContextDep, device_id: str) -> Response:
    if not viewer.may(may_see_cameras):
        return forbidden_page(request, viewer)
    camera = await _visible_camera(viewer, device_id)
    if camera is None:
        return not_found_page(request, viewer)
    market = await Market.get_or_none(code=camera.market) if camera.market else None
    timezone = market.timezone if market else DEFAULT_TIMEZONE
    device = await Device.get_or_none(id=camera.device_id)
    flow_in, flow_out = await _today_flow(camera, timezone)
    analytics = camera.analytics or {}
    return render(request, viewer, "camera.html", {
        **await _events_context(viewer, camera, timezone),
        "market": market, "device": device, "analytics": analytics,
        "may_edit": may_edit_cameras(viewer.principal), "may_flow": viewer.principal.can(Permission.REPORTS_READ),
        "passengers_in": flow_in, "passengers_out": flow_out, "health": await _worker_health(ctx, camera),
    }, section="cameras")


@router.post("/cameras/{device_id}/events/{event_id}/handle")
async def handle_camera_event(
    request: Request, viewer: ViewerDep, device_id: str, event_id: int,
    note: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Mark one of the camera's events handled (who and a note: the handling archive, HZ 7.3.2.1); answers the
    events fragment."""
    if not viewer.principal.can(Permission.ALERTS_WRITE) or not viewer.may(may_see_cameras):
        return forbidden_page(request, viewer)
    camera = await _visible_camera(viewer, device_id)
    if camera is None:
        return not_found_page(request, viewer)
    market = await Market.get_or_none(code=camera.market) if camera.market else None
    context = await _events_context(viewer, camera, market.timezone if market else DEFAULT_TIMEZONE)
    code = 200
    try:
        event = await store.event(event_id)
        if event.camera != camera.device_id:
            raise NotFound(f"vision event {event_id} not found")
        await store.handle_event(event_id, viewer.principal.actor, note.strip())
        context["message"] = viewer.t("cameras.handled_done", id=event_id)
    except (NotFound, Conflict) as err:
        context.update(message=viewer.t("cameras.handle_failed", reason=str(err)), error=True)
        code = 404 if isinstance(err, NotFound) else 409
    context["events"] = await store.events(camera=camera.device_id, limit=EVENTS_SHOWN)
    return render(request, viewer, "camera_events.html", context, status_code=code)
