"""Firmware and OTA endpoints: vendors upload images for their own models, operators run campaigns (progress
also as server-sent events), devices download images (HTTP Range) and poll for their job. See docs/ota.md.

The service is `ctx.services["firmware"]` (firmware/service.py), put there by the composition root. Device
routes authenticate the device (`Bearer <device_id>:<secret>`), never a person: they are marked `x-auth: device`
in the OpenAPI spec. The signing key is public (`x-auth: public`): it only verifies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request, UploadFile, status
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from accounts.permissions import Permission, Principal
from api.auth import ContextDep, FleetRead, VendorDep, require
from firmware import scope
from firmware.delivery import RangeNotSatisfiable, etag_for, if_range_allows, parse_range
from firmware.models import DeviceJob
from firmware.schemas import (
    CampaignCreate,
    CampaignProgress,
    CampaignPublic,
    ImagePublic,
    ImageUpload,
    JobPublic,
    JobTransitionPublic,
    RollbackResult,
    SigningKeyPublic,
)
from firmware.service import FirmwareService
from firmware.states import FINISHED_CAMPAIGN, CampaignState, JobState
from fleet.errors import NotFound
from fleet.models import Device
from fleet.schemas import Page

router = APIRouter(prefix="/api/v1/firmware", tags=["firmware"])
UPLOAD_CHUNK = 256 * 1024
DEVICE_AUTH = {"x-auth": "device"}
KEEPALIVE_S = 15.0


async def get_firmware(ctx: ContextDep) -> FirmwareService:  # async: no thread hop per request
    service = ctx.services.get("firmware")
    if service is None:
        raise NotFound("firmware updates are not enabled on this platform")
    return service  # type: ignore[no-any-return]


FirmwareDep = Annotated[FirmwareService, Depends(get_firmware)]
FirmwareWrite = Annotated[Principal, require(Permission.FIRMWARE_WRITE)]


# ---------------------------------------------------------------- images


@router.get("/signing-key", response_model=SigningKeyPublic, openapi_extra={"x-auth": "public"})
async def signing_key(firmware: FirmwareDep) -> SigningKeyPublic:
    """The public key devices verify images with (provision it at manufacturing)."""
    return firmware.signing_key()


class ImageUploadForm(ImageUpload):
    """The multipart form: the metadata fields and the image as `file` (unknown fields are refused)."""

    file: UploadFile = Field(description="the image bytes")


@router.post("/images", status_code=status.HTTP_201_CREATED, response_model=ImagePublic)
async def upload_image(
    form: Annotated[ImageUploadForm, Form(media_type="multipart/form-data")], vendor: VendorDep, firmware: FirmwareDep
) -> ImagePublic:
    """Upload an image for one of the vendor's models (multipart form); the platform hashes and signs it."""

    async def chunks():  # type: ignore[no-untyped-def]
        while chunk := await form.file.read(UPLOAD_CHUNK):
            yield chunk

    meta = ImageUpload.model_validate(form.model_dump(exclude={"file"}))
    image = await firmware.images.upload(vendor, meta, chunks())
    return ImagePublic.model_validate(image)


@router.get("/images", response_model=list[ImagePublic])
async def list_images(_: FleetRead, firmware: FirmwareDep, model_id: int | None = None) -> list[ImagePublic]:
    return [ImagePublic.model_validate(i) for i in await firmware.images.list(None, model_id)]


@router.get("/images/{image_id}", response_model=ImagePublic)
async def get_image(image_id: int, _: FleetRead, firmware: FirmwareDep) -> ImagePublic:
    return ImagePublic.model_validate(await firmware.images.get(image_id))


@router.get("/vendor/images", response_model=list[ImagePublic])
async def list_own_images(vendor: VendorDep, firmware: FirmwareDep, model_id: int | None = None) -> list[ImagePublic]:
    """The calling vendor's images."""
    return [ImagePublic.model_validate(i) for i in await firmware.images.list(vendor.id, model_id)]


@router.get("/vendor/images/{image_id}", response_model=ImagePublic)
async def get_own_image(image_id: int, vendor: VendorDep, firmware: FirmwareDep) -> ImagePublic:
    """One of the calling vendor's images (another vendor's is 404)."""
    return ImagePublic.model_validate(await firmware.images.get(image_id, vendor.id))


@router.get("/images/{image_id}/blob", response_class=Response, openapi_extra=DEVICE_AUTH)
@router.head("/images/{image_id}/blob", response_class=Response, openapi_extra=DEVICE_AUTH,
             operation_id="download_image_head")  # fmt: skip
async def download_image(
    image_id: int,
    request: Request,
    firmware: FirmwareDep,
    authorization: Annotated[str | None, Header()] = None,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The image bytes for a device (`Authorization: Bearer <device_id>:<secret>`); resumable with Range."""
    device = await firmware.delivery.device_for(authorization)
    image = await firmware.delivery.image_for(device, image_id)
    etag = etag_for(image.sha256)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=86400, immutable"}
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        wanted = parse_range(range_header, image.size) if if_range_allows(if_range, etag) else None
    except RangeNotSatisfiable as err:
        return Response(
            content=str(err),
            status_code=416,
            headers=headers | {"Content-Range": f"bytes */{image.size}"},
            media_type="text/plain",
        )
    start, end = (wanted.start, wanted.end) if wanted else (0, image.size - 1)
    headers["Content-Length"] = str(end - start + 1)
    code = status.HTTP_206_PARTIAL_CONTENT if wanted else status.HTTP_200_OK
    if wanted:
        headers["Content-Range"] = wanted.content_range(image.size)
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        firmware.blobs.read(image.blob_key, start, end),
        status_code=code,
        headers=headers,
        media_type="application/octet-stream",
    )


@router.get("/device/job", response_model=None, openapi_extra=DEVICE_AUTH)
async def current_job(
    firmware: FirmwareDep, authorization: Annotated[str | None, Header()] = None
) -> Response | dict[str, Any]:
    """For devices that cannot receive `down/ota` (HTTP-only, e.g. food-safety detectors): the announcement of
    the device's current job, or 204 when there is none."""
    device = await firmware.delivery.device_for(authorization)
    announcement = await firmware.orchestrator.current_announcement(device.id)
    if announcement is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return announcement


# ---------------------------------------------------------------- campaigns


@router.post("/campaigns", status_code=status.HTTP_201_CREATED, response_model=CampaignPublic)
async def create_campaign(data: CampaignCreate, firmware: FirmwareDep, who: FirmwareWrite) -> CampaignPublic:
    """A caller limited to some markets names them in `target.markets` (firmware/scope.py)."""
    scope.ensure_target_inside(data.target, who.markets)
    return CampaignPublic.model_validate(await firmware.campaigns.create(data))


@router.get("/campaigns", response_model=Page[CampaignPublic])
async def list_campaigns(
    firmware: FirmwareDep,
    who: FleetRead,
    state: CampaignState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[CampaignPublic]:
    """Newest first; a caller limited to some markets sees the campaigns that touch one of them."""
    total, items = await firmware.campaigns.list(state, limit, offset, markets=who.markets)
    return Page(total=total, limit=limit, offset=offset, items=[CampaignPublic.model_validate(c) for c in items])


@router.get("/campaigns/{campaign_id}", response_model=CampaignProgress)
async def campaign_progress(campaign_id: int, firmware: FirmwareDep, who: FleetRead) -> CampaignProgress:
    """The campaign with counts, percentages and ETA, overall and per wave."""
    await scope.ensure_visible(campaign_id, who.markets)
    return await firmware.campaigns.progress(campaign_id)


@router.get("/campaigns/{campaign_id}/events", response_class=StreamingResponse)
async def campaign_events(
    campaign_id: int,
    firmware: FirmwareDep,
    who: FleetRead,
    interval_s: Annotated[float, Query(ge=0.1, le=60)] = 1.0,
) -> StreamingResponse:
    """Server-sent events: `progress` (the same body as GET /campaigns/{id}) whenever it changes, checked every
    `interval_s`; `end` once the campaign is completed, aborted or cancelled; comments as keep-alive."""
    await scope.ensure_visible(campaign_id, who.markets)
    first = await firmware.campaigns.progress(campaign_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        yield "retry: 3000\n: connected\n\n"
        progress, last, quiet = first, "", 0.0
        while True:
            data = progress.model_dump_json()
            if data != last:
                yield f"event: progress\ndata: {data}\n\n"
                last, quiet = data, 0.0
            elif quiet >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet = 0.0
            if progress.state in FINISHED_CAMPAIGN:
                yield f"event: end\ndata: {json.dumps({'state': progress.state.value})}\n\n"
                return
            await asyncio.sleep(interval_s)
            quiet += interval_s
            progress = await firmware.campaigns.progress(campaign_id)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/campaigns/{campaign_id}/jobs", response_model=Page[JobPublic])
async def campaign_jobs(
    campaign_id: int,
    firmware: FirmwareDep,
    who: FleetRead,
    state: JobState | None = None,
    wave: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[JobPublic]:
    """Per-device state (with the failure reason) of a campaign, filterable by state and wave; only the caller's
    markets' devices for a caller limited to some markets."""
    await scope.ensure_visible(campaign_id, who.markets)
    total, jobs = await firmware.campaigns.jobs(campaign_id, state, wave, limit, offset, markets=who.markets)
    return Page(total=total, limit=limit, offset=offset, items=[_job(j) for j in jobs])


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignPublic)
async def pause_campaign(campaign_id: int, firmware: FirmwareDep, who: FirmwareWrite) -> CampaignPublic:
    await scope.ensure_owned(campaign_id, who.markets)
    return CampaignPublic.model_validate(await firmware.campaigns.pause(campaign_id))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignPublic)
async def resume_campaign(campaign_id: int, firmware: FirmwareDep, who: FirmwareWrite) -> CampaignPublic:
    await scope.ensure_owned(campaign_id, who.markets)
    return CampaignPublic.model_validate(await firmware.campaigns.resume(campaign_id))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignPublic)
async def cancel_campaign(campaign_id: int, firmware: FirmwareDep, who: FirmwareWrite) -> CampaignPublic:
    await scope.ensure_owned(campaign_id, who.markets)
    return CampaignPublic.model_validate(await firmware.campaigns.cancel(campaign_id))


@router.post("/campaigns/{campaign_id}/retry-failed")
async def retry_failed(campaign_id: int, firmware: FirmwareDep, who: FirmwareWrite) -> dict[str, Any]:
    """Queue every failed device of the campaign again (fresh attempts); nothing else is touched."""
    await scope.ensure_owned(campaign_id, who.markets)
    campaign, count = await firmware.campaigns.retry_failed(campaign_id)
    return {"campaign": CampaignPublic.model_validate(campaign).model_dump(mode="json"), "retried": count}


@router.post("/campaigns/{campaign_id}/rollback", response_model=RollbackResult)
async def rollback_campaign(campaign_id: int, firmware: FirmwareDep, who: FirmwareWrite) -> RollbackResult:
    """Switch devices that took the image back to their other A/B slot (a rollback campaign)."""
    await scope.ensure_owned(campaign_id, who.markets)
    return await firmware.campaigns.rollback(campaign_id)


@router.get("/devices/{device_id}/jobs", response_model=list[JobPublic])
async def device_jobs(device_id: str, firmware: FirmwareDep, who: FleetRead) -> list[JobPublic]:
    """A device's update history: its jobs in every campaign, newest first (404 outside the caller's markets)."""
    device = await Device.get_or_none(id=device_id)
    if device is None or not who.sees_market(device.market_id):  # type: ignore[attr-defined]
        raise NotFound(f"device {device_id} not found")
    return [_job(j) for j in await firmware.campaigns.device_jobs(device_id)]


@router.get("/jobs/{job_id}/transitions", response_model=list[JobTransitionPublic])
async def job_transitions(job_id: int, firmware: FirmwareDep, who: FleetRead) -> list[JobTransitionPublic]:
    """Every state change of one job, with who caused it and why."""
    await scope.ensure_job_visible(job_id, who.markets)
    return [JobTransitionPublic.model_validate(t) for t in await firmware.campaigns.transitions(job_id)]


def _job(job: DeviceJob) -> JobPublic:
    return JobPublic.model_validate(job)
