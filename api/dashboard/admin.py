"""Vendor administration for the platform admin: the vendors, their device counts, and adding one (its API key
is shown once). Every other role gets the 403 page: a market manager never sees vendor administration.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.auth import RegistryDep
from api.dashboard.queries import device_counts_by_vendor
from api.dashboard.viewer import ViewerDep, forbidden_page, may_admin, render
from fleet.errors import Conflict, InvalidRequest
from fleet.schemas import VendorCreate

router = APIRouter()


async def _page(request: Request, viewer: ViewerDep, registry: RegistryDep, **extra: object) -> Response:
    context = {"vendors": await registry.list_vendors(), "counts": await device_counts_by_vendor(),
               "api_key": None, "error": None, "created": None, **extra}
    status_code = 422 if context["error"] else 200
    return render(request, viewer, "vendors.html", context, section="vendors", status_code=status_code)


@router.get("/admin/vendors")
async def vendors_page(request: Request, viewer: ViewerDep, registry: RegistryDep) -> Response:
    if not viewer.may(may_admin):
        return forbidden_page(request, viewer)
    return await _page(request, viewer, registry)


@router.post("/admin/vendors")
async def create_vendor(
    request: Request, viewer: ViewerDep, registry: RegistryDep,
    code: Annotated[str, Form(max_length=32)], name: Annotated[str, Form(max_length=200)],
    contact: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not viewer.may(may_admin):
        return forbidden_page(request, viewer)
    try:
        vendor, api_key = await registry.create_vendor(
            VendorCreate(code=code.strip(), name=name.strip(), contact=contact.strip()))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return await _page(request, viewer, registry, error=problems)
    except (Conflict, InvalidRequest) as err:
        return await _page(request, viewer, registry, error=str(err))
    return await _page(request, viewer, registry, api_key=api_key, created=vendor.code)
