"""Admin, maintainer and manager endpoints: markets, vendors, and the fleet (scoped to the caller's markets)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api.audit import audit_before
from api.auth import FleetRead, FleetWrite, PlatformAdmin, RegistryDep
from fleet.kinds import DeviceKind
from fleet.lookups import device_view
from fleet.models import DeviceStatus
from fleet.schemas import (
    CredentialPublic,
    DeviceFilter,
    DevicePublic,
    DeviceUpdate,
    MarketCreate,
    MarketPublic,
    MetrologyCreate,
    MetrologyPublic,
    Page,
    StallCreate,
    VendorCreate,
    VendorCreated,
    VendorPublic,
)

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/markets", status_code=status.HTTP_201_CREATED, response_model=MarketPublic)
async def create_market(data: MarketCreate, registry: RegistryDep, _: PlatformAdmin) -> MarketPublic:
    return MarketPublic.model_validate(await registry.create_market(data))


@router.get("/markets", response_model=list[MarketPublic])
async def list_markets(registry: RegistryDep, who: FleetRead) -> list[MarketPublic]:
    return [MarketPublic.model_validate(m) for m in await registry.list_markets(who.markets)]


@router.post("/markets/{code}/stalls", status_code=status.HTTP_201_CREATED)
async def create_stall(code: str, data: StallCreate, registry: RegistryDep, _: PlatformAdmin) -> dict[str, object]:
    stall = await registry.create_stall(code, data)
    return {"id": stall.id, "market": code, **data.model_dump()}


@router.post("/vendors", status_code=status.HTTP_201_CREATED, response_model=VendorCreated)
async def create_vendor(data: VendorCreate, registry: RegistryDep, _: PlatformAdmin) -> VendorCreated:
    vendor, api_key = await registry.create_vendor(data)
    return VendorCreated(**VendorPublic.model_validate(vendor).model_dump(), api_key=api_key)


@router.get("/vendors", response_model=list[VendorPublic])
async def list_vendors(registry: RegistryDep, _: FleetRead) -> list[VendorPublic]:
    return [VendorPublic.model_validate(v) for v in await registry.list_vendors()]


@router.get("/devices", response_model=Page[DevicePublic])
async def list_devices(
    registry: RegistryDep,
    who: FleetRead,
    kind: DeviceKind | None = None,
    market: str | None = None,
    status_: Annotated[DeviceStatus | None, Query(alias="status")] = None,
    online: bool | None = None,
    vendor_id: int | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    label: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[DevicePublic]:
    flt = DeviceFilter(
        kind=kind, market=market, status=status_, online=online, vendor_id=vendor_id, q=q, label=label
    )
    total, items = await registry.list_devices(flt, limit=limit, offset=offset, markets=who.markets)
    return Page[DevicePublic](
        total=total, limit=limit, offset=offset, items=[DevicePublic.model_validate(d) for d in items]
    )


@router.get("/devices/{device_id}", response_model=DevicePublic)
async def get_device(device_id: str, registry: RegistryDep, who: FleetRead) -> Response:
    # From the per-process lookup cache as ready JSON (fleet/lookups.py); scoped like every read.
    view = await device_view(registry.lookups, device_id, markets=who.markets)
    return Response(view.body, media_type="application/json")


@router.patch("/devices/{device_id}", response_model=DevicePublic)
async def update_device(device_id: str, data: DeviceUpdate, request: Request, registry: RegistryDep,
                        who: FleetWrite) -> DevicePublic:
    audit_before(request, DevicePublic.model_validate(await registry.get_device(device_id, markets=who.markets)))
    return DevicePublic.model_validate(await registry.update_device(device_id, data, markets=who.markets))


@router.get("/devices/{device_id}/credentials", response_model=list[CredentialPublic])
async def list_device_credentials(device_id: str, registry: RegistryDep, who: FleetRead) -> list[CredentialPublic]:
    await registry.get_device(device_id, markets=who.markets)
    return [CredentialPublic.model_validate(c) for c in await registry.list_credentials(device_id)]


@router.post("/devices/{device_id}/credentials/revoke")
async def revoke_device_credentials(device_id: str, registry: RegistryDep, who: FleetWrite) -> dict[str, int]:
    await registry.get_device(device_id, markets=who.markets)
    return {"revoked": await registry.revoke_credentials(device_id)}


@router.post("/devices/{device_id}/metrology", status_code=status.HTTP_201_CREATED, response_model=MetrologyPublic)
async def add_metrology(
    device_id: str, data: MetrologyCreate, registry: RegistryDep, who: FleetWrite
) -> MetrologyPublic:
    await registry.get_device(device_id, markets=who.markets)
    return MetrologyPublic.model_validate(await registry.add_metrology_record(device_id, data))


@router.get("/devices/{device_id}/metrology", response_model=list[MetrologyPublic])
async def list_metrology(device_id: str, registry: RegistryDep, who: FleetRead) -> list[MetrologyPublic]:
    await registry.get_device(device_id, markets=who.markets)
    return [MetrologyPublic.model_validate(r) for r in await registry.metrology_records(device_id)]
