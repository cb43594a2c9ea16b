"""One device: registry facts, presence and its history (broker/presence_log.py), firmware, latest
telemetry with a zoomable chart, recent events, credentials (rotate / revoke) and commands.

The chart reads `/devices/{id}/series`, which asks the telemetry store to downsample (`TelemetryStore.downsample`:
mean/min/max per minute or hour) so a week of readings is a few hundred points whatever the sample rate; the
page draws it with uPlot (served from /static/vendor) and zooms by dragging. Commands are validated against the
kind's command schema and sent over the transport the device listens on (`broker.transports.send_command`:
MQTT `mf/v1/{market}/{device}/down/cmd` or CoAP Observe, docs/protocol.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from accounts.permissions import Permission, Principal
from api.auth import ContextDep, RegistryDep
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_read_fleet, not_found_page, render
from broker.presence_log import presence_history
from broker.transports import send_command
from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.kinds import CATALOG, DeviceKind
from fleet.models import Device, Market, Vendor

router = APIRouter()

RANGES: dict[str, tuple[timedelta, Literal["1m", "1h"]]] = {
    "1h": (timedelta(hours=1), "1m"),
    "24h": (timedelta(hours=24), "1m"),
    "7d": (timedelta(days=7), "1h"),
}
EVENTS_SHOWN = 20
EVENT_WINDOW = timedelta(days=7)
CALIBRATION_WINDOW = timedelta(minutes=30)
# broker.bus.PresenceChanged reasons, each with its text (presence.reason.*); any other is shown as it is.
PRESENCE_REASONS = frozenset({"connected", "disconnected", "status", "will", "silent", "revoked"})

# The commands the page offers, as payloads; each is shown only for kinds whose command schema accepts it.
COMMANDS: dict[str, dict[str, Any]] = {
    "reboot": {"command": "reboot"},
    "ping": {"command": "ping"},
    "flash_led": {"command": "flash_led", "colour": "green", "seconds": 10},
    "authorise_calibration": {"command": "authorise_calibration", "grant_id": "preview",
                              "valid_until": "2030-01-01T00:00:00+00:00"},
}


# Kinds with no downlink of their own (shelf labels hear only their base station): only these commands are
# offered, and they go through the service that relays them (retail's label dispatcher for the LED flash).
RELAYED: dict[DeviceKind, frozenset[str]] = {DeviceKind.ESL: frozenset({"flash_led"})}


def commands_for(kind: DeviceKind) -> list[str]:
    spec = CATALOG.get(kind)
    if spec is None or spec.command is None:
        return []
    adapter = spec.adapter("command")
    offered = []
    for name, sample in COMMANDS.items():
        if kind in RELAYED and name not in RELAYED[kind]:
            continue
        try:
            adapter.validate_python(sample)
        except ValidationError:
            continue
        offered.append(name)
    return offered


async def visible_device(viewer: Viewer, device_id: str, registry: RegistryDep) -> Device | None:
    principal = viewer.principal
    try:
        device = await registry.get_device(device_id, markets=principal.markets)
    except NotFound:
        return None
    if principal.vendor_id is not None and device.vendor_id != principal.vendor_id:  # type: ignore[attr-defined]
        return None
    return device


def may_manage_credentials(principal: Principal) -> bool:
    return principal.can(Permission.FLEET_WRITE) or principal.can(Permission.VENDOR_SELF)


def numeric_fields(fields: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in fields.items() if isinstance(v, int | float) and not isinstance(v, bool))


async def _page_context(viewer: Viewer, ctx: ContextDep, device: Device) -> dict[str, Any]:
    market = await Market.get_or_none(code=device.market_id) if device.market_id else None  # type: ignore[attr-defined]
    vendor = await Vendor.get_or_none(id=device.vendor_id)  # type: ignore[attr-defined]
    credentials = await ctx.registry.list_credentials(device.id)
    store = ctx.services.get("store")
    latest: dict[str, Any] = {}
    events: list[Any] = []
    presence: list[Any] = []
    kind = device.kind.value
    if store is not None:
        for channel in ("telemetry", "state"):
            found = await store.latest([device.id], f"{kind}.{channel}")
            if device.id in found:
                latest[channel] = found[device.id]
        now = datetime.now(UTC)
        events = (await store.range(device.id, f"{kind}.event", now - EVENT_WINDOW, now, limit=5000))[-EVENTS_SHOWN:]
        events.reverse()
        presence = await presence_history(store, device.id, now - EVENT_WINDOW, now, EVENTS_SHOWN)
    telemetry = latest.get("telemetry")
    return {
        "device": device, "market": market, "vendor": vendor, "credentials": credentials,
        "timezone": market.timezone if market else None,
        "has_store": store is not None, "latest": latest, "events": events,
        "presence": presence, "presence_reasons": PRESENCE_REASONS,
        "chart_fields": numeric_fields(telemetry.fields) if telemetry else [],
        "ranges": list(RANGES),
        "commands": commands_for(device.kind) if viewer.principal.can(Permission.FLEET_WRITE) else [],
        "broker_running": ctx.services.get("broker") is not None or ctx.services.get("coap") is not None,
        "may_credentials": may_manage_credentials(viewer.principal),
        "live_url": f"/events/presence?market={device.market_id}" if device.market_id else "/events/presence",  # type: ignore[attr-defined]
    }


@router.get("/devices/{device_id}")
async def device_page(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, device_id: str
) -> Response:
    if not viewer.may(may_read_fleet):
        return forbidden_page(request, viewer)
    device = await visible_device(viewer, device_id, registry)
    if device is None:
        return not_found_page(request, viewer)
    return render(request, viewer, "device.html", await _page_context(viewer, ctx, device), section="fleet")


@router.get("/devices/{device_id}/series")
async def device_series(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, device_id: str,
    field: str, range: Literal["1h", "24h", "7d"] = "24h",
    end: datetime | None = None,
) -> Response:
    """Downsampled series for the chart: `{"t": [epoch s…], "mean": […], "min": […], "max": […]}`."""
    if not viewer.may(may_read_fleet):
        return JSONResponse({"detail": "this role may not see devices"}, status_code=403)
    device = await visible_device(viewer, device_id, registry)
    if device is None:
        return JSONResponse({"detail": f"device {device_id!r} not found"}, status_code=404)
    store = ctx.services.get("store")
    if store is None:
        return JSONResponse({"detail": "no telemetry store runs on this instance"}, status_code=503)
    span, every = RANGES[range]
    stop = (end or datetime.now(UTC)).astimezone(UTC)
    buckets = await store.downsample(device.id, f"{device.kind.value}.telemetry", field[:100], stop - span, stop,
                                     every)
    return JSONResponse({
        "field": field, "range": range, "every": every,
        "t": [b.bucket.timestamp() for b in buckets],
        "mean": [b.mean for b in buckets], "min": [b.min for b in buckets], "max": [b.max for b in buckets],
    })


@router.post("/devices/{device_id}/credentials/{action}")
async def device_credentials(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, device_id: str,
    action: Literal["rotate", "revoke"],
) -> Response:
    """Answers the credentials fragment; a new secret is shown once, in it."""
    if not may_manage_credentials(viewer.principal):
        return forbidden_page(request, viewer)
    device = await visible_device(viewer, device_id, registry)
    if device is None:
        return not_found_page(request, viewer)
    secret = None
    revoked = None
    if action == "rotate":
        secret = await registry.rotate_credential(device.id)
    else:
        revoked = await registry.revoke_credentials(device.id)
    return render(request, viewer, "device_credentials.html", {
        "device": device, "credentials": await registry.list_credentials(device.id), "secret": secret,
        "revoked": revoked, "may_credentials": True,
        "timezone": (await Market.get_or_none(code=device.market_id)).timezone if device.market_id else None,  # type: ignore[attr-defined,union-attr]
    })


@router.post("/devices/{device_id}/commands")
async def device_command(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep, device_id: str,
    command: Annotated[str, Form(max_length=32)],
) -> Response:
    t = viewer.t
    if not viewer.principal.can(Permission.FLEET_WRITE):
        return forbidden_page(request, viewer)
    device = await visible_device(viewer, device_id, registry)
    if device is None:
        return not_found_page(request, viewer)
    if ctx.services.get("broker") is None and ctx.services.get("coap") is None:
        return render(request, viewer, "not_running.html", {"feature": "broker"}, status_code=503)
    if command not in commands_for(device.kind):
        return render(request, viewer, "command_result.html",
                      {"ok": False, "text": t("device.command_unknown", command=command)}, status_code=422)
    payload = dict(COMMANDS[command])
    if command == "authorise_calibration":
        return await _calibration_grant(request, viewer, ctx, device)
    if device.kind in RELAYED:
        return await _relayed_command(request, viewer, ctx, device, command, payload)
    try:
        # Over MQTT or CoAP, whichever the device listens on (docs/coap.md, Commands).
        command_id, _transport = await send_command(ctx.services, device.id, device.market_id,  # type: ignore[attr-defined]
                                                    device.kind.value, payload)
    except (ConnectionError, LookupError) as err:
        return render(request, viewer, "command_result.html",
                      {"ok": False, "text": t("device.command_failed", reason=str(err))}, status_code=503)
    return render(request, viewer, "command_result.html",
                  {"ok": True, "text": t("device.command_sent", command=t("command." + command), id=command_id)})


async def _calibration_grant(request: Request, viewer: Viewer, ctx: ContextDep, device: Device) -> Response:
    """SZ 6.2.7: the grant is made by retail's scale desk, so it is recorded (who, until when), single-use and
    for this scale; the scale's `calibrated` event is then judged against it (a grant made up here would be
    refused by the platform as unknown while the scale calibrated)."""
    from api.dashboard.prices import retail_service

    t = viewer.t
    if not viewer.principal.can(Permission.CALIBRATION_GRANT):
        return forbidden_page(request, viewer)
    service = retail_service(ctx)
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": "retail"}, status_code=503)
    minutes = int(CALIBRATION_WINDOW.total_seconds() // 60)
    try:
        grant = await service.scales.grant_calibration(device.id, minutes, viewer.principal.actor, "device page",
                                                       viewer.principal.markets)
    except (NotFound, InvalidRequest, ConnectionError) as err:
        return render(request, viewer, "command_result.html",
                      {"ok": False, "text": t("device.command_failed", reason=str(err))}, status_code=409)
    return render(request, viewer, "command_result.html",
                  {"ok": True, "text": t("device.command_sent", command=t("command.authorise_calibration"),
                                         id=grant.id)})


async def _relayed_command(
    request: Request, viewer: Viewer, ctx: ContextDep, device: Device, command: str, payload: dict[str, Any]
) -> Response:
    """A shelf label's LED flash goes through its base station (retail's label dispatcher, as on /labels)."""
    from api.dashboard.prices import retail_service

    t = viewer.t
    service = retail_service(ctx)
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": "retail"}, status_code=503)
    try:
        await service.labels.flash(device.id, payload["colour"], payload["seconds"])
    except (NotFound, Conflict, InvalidRequest, ConnectionError) as err:
        return render(request, viewer, "command_result.html",
                      {"ok": False, "text": t("device.command_failed", reason=str(err))}, status_code=409)
    return render(request, viewer, "command_result.html",
                  {"ok": True, "text": t("device.command_sent", command=t("command." + command), id=device.id)})
