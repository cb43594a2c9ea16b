"""The vendor registration API: a vendor, with its key, onboards models and devices and manages credentials.

A vendor sees only its own rows; another vendor's device answers 404 (fleet/registry.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.auth import ContextDep, RegistryDep, VendorDep
from fleet.errors import Conflict, InvalidRequest
from fleet.kinds import DeviceKind
from fleet.lookups import device_view
from fleet.models import DeviceStatus
from fleet.schemas import (
    BulkResult,
    CredentialPublic,
    DeviceBulkCreate,
    DeviceCreate,
    DeviceCredential,
    DeviceFilter,
    DeviceModelCreate,
    DeviceModelPublic,
    DevicePublic,
    MetrologyCreate,
    MetrologyPublic,
    Page,
    VendorPublic,
)

router = APIRouter(prefix="/api/v1/vendor", tags=["vendor"])


@router.get("/me", response_model=VendorPublic)
async def whoami(vendor: VendorDep) -> VendorPublic:
    return VendorPublic.model_validate(vendor)


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=DeviceModelPublic)
async def register_model(data: DeviceModelCreate, vendor: VendorDep, registry: RegistryDep) -> DeviceModelPublic:
    return DeviceModelPublic.model_validate(await registry.register_model(vendor, data))


@router.get("/models", response_model=list[DeviceModelPublic])
async def list_models(vendor: VendorDep, registry: RegistryDep) -> list[DeviceModelPublic]:
    return [DeviceModelPublic.model_validate(m) for m in await registry.list_models(vendor)]


@router.post("/devices", response_model=BulkResult)
async def register_devices(
    data: DeviceBulkCreate, vendor: VendorDep, registry: RegistryDep, ctx: ContextDep
) -> BulkResult:
    """Register up to 10,000 devices; idempotent by serial; each new device's secret is returned once."""
    if len(data.devices) > ctx.max_bulk_devices:
        raise InvalidRequest(
            f"devices: at most {ctx.max_bulk_devices} devices per call, got {len(data.devices)}; split the batch"
        )
    return await registry.register_devices(vendor, data.devices)


@router.post("/device", status_code=status.HTTP_201_CREATED, response_model=DeviceCredential)
async def register_device(data: DeviceCreate, vendor: VendorDep, registry: RegistryDep) -> DeviceCredential:
    """Register one device; 409 when the serial is already registered (its secret is not shown again)."""
    result = await registry.register_devices(vendor, [data])
    row = result.rows[0]
    if row.status == "error":
        raise InvalidRequest(row.error or "invalid device")
    if row.status == "existing":
        raise Conflict(f"serial {data.serial!r} is already registered as {row.device_id}")
    assert row.device_id and row.secret
    return DeviceCredential(device_id=row.device_id, username=row.device_id, secret=row.secret)


@router.get("/devices", response_model=Page[DevicePublic])
async def list_devices(
    vendor: VendorDep,
    registry: RegistryDep,
    kind: DeviceKind | None = None,
    market: str | None = None,
    status_: Annotated[DeviceStatus | None, Query(alias="status")] = None,
    online: bool | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[DevicePublic]:
    flt = DeviceFilter(kind=kind, market=market, status=status_, online=online, q=q)
    total, items = await registry.list_devices(flt, limit=limit, offset=offset, vendor=vendor)
    return Page[DevicePublic](
        total=total, limit=limit, offset=offset, items=[DevicePublic.model_validate(d) for d in items]
    )


@router.get("/devices/{device_id}", response_model=DevicePublic)
async def get_device(device_id: str, vendor: VendorDep, registry: RegistryDep) -> Response:
    # From the per-process lookup cache as ready JSON (fleet/lookups.py); only the vendor's own devices.
    view = await device_view(registry.lookups, device_id, vendor_id=vendor.id)
    return Response(view.body, media_type="application/json")


@router.get("/devices/{device_id}/credentials", response_model=list[CredentialPublic])
async def list_credentials(device_id: str, vendor: VendorDep, registry: RegistryDep) -> list[CredentialPublic]:
    return [CredentialPublic.model_validate(c) for c in await registry.list_credentials(device_id, vendor)]


@router.post("/devices/{device_id}/credentials/rotate", response_model=DeviceCredential)
async def rotate_credential(device_id: str, vendor: VendorDep, registry: RegistryDep) -> DeviceCredential:
    secret = await registry.rotate_credential(device_id, vendor)
    return DeviceCredential(device_id=device_id, username=device_id, secret=secret)


@router.post("/devices/{device_id}/credentials/revoke")
async def revoke_credentials(device_id: str, vendor: VendorDep, registry: RegistryDep) -> dict[str, int]:
    return {"revoked": await registry.revoke_credentials(device_id, vendor)}


@router.post(
    "/devices/{device_id}/metrology", status_code=status.HTTP_201_CREATED, response_model=MetrologyPublic
)
async def add_metrology(
    device_id: str, data: MetrologyCreate, vendor: VendorDep, registry: RegistryDep
) -> MetrologyPublic:
    return MetrologyPublic.model_validate(await registry.add_metrology_record(device_id, data, vendor))
