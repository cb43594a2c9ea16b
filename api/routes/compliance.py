"""Standards conformance: model checks for vendors, market layouts and scorecards for people.

Each operation declares exactly one permission (the role walk in tests/integration/api checks it), so a
registered model's report has two doors: `/models/{id}` for people with fleet:read, `/vendor/models/{id}` for
the vendor that owns the model.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.audit import audit_before
from api.auth import ContextDep, FleetRead, PlatformAdmin, VendorDep
from api.downloads import attachment
from compliance.export import scorecard_csv
from compliance.schemas import (
    CheckModelRequest,
    ConformanceReport,
    LayoutIn,
    LayoutPublic,
    ModelConformance,
    Scorecard,
    SpecKeys,
)
from compliance.service import MAX_WINDOW_DAYS, ComplianceService, setup
from fleet.errors import NotFound

router = APIRouter(prefix="/api/v1/compliance", tags=["compliance"])


async def get_compliance(ctx: ContextDep) -> ComplianceService:  # async: no thread hop per request
    # The composition root sets services["compliance"]; until it does, a default service (snapshot presence,
    # unknown data loss) keeps these routes answering.
    service = ctx.services.get("compliance")
    return service if isinstance(service, ComplianceService) else setup()


ComplianceDep = Annotated[ComplianceService, Depends(get_compliance)]
Standards = Annotated[str | None, Query(description="comma-separated standard codes, e.g. SZ,BJ (default: all)")]
Days = Annotated[int | None, Query(ge=1, le=MAX_WINDOW_DAYS, description="window for loss and online rates")]


def _codes(standards: str | None) -> list[str] | None:
    return [c for c in standards.split(",") if c.strip()] if standards else None


@router.get("/spec-keys/{kind}", response_model=SpecKeys)
async def spec_keys(kind: str, _: VendorDep, service: ComplianceDep) -> SpecKeys:
    """The spec keys a model of this kind should state, with types, units and the clauses that read them."""
    return service.spec_keys(kind)


@router.post("/check-model", response_model=ConformanceReport)
async def check_model(data: CheckModelRequest, _: VendorDep, service: ComplianceDep) -> ConformanceReport:
    """Check a model's specs against the standards before registering it."""
    return service.check_model(data.kind, data.specs, data.standards)


@router.get("/vendor/models/{model_id}", response_model=ModelConformance)
async def vendor_model_report(
    model_id: int, vendor: VendorDep, service: ComplianceDep, standards: Standards = None
) -> ModelConformance:
    """The conformance report of one of the vendor's own registered models."""
    return await service.model_report(model_id, vendor_id=vendor.id, standards=_codes(standards))


@router.get("/models/{model_id}", response_model=ModelConformance)
async def model_report(
    model_id: int, _: FleetRead, service: ComplianceDep, standards: Standards = None
) -> ModelConformance:
    """The conformance report of any registered model."""
    return await service.model_report(model_id, standards=_codes(standards))


@router.put("/markets/{code}/layout", response_model=LayoutPublic)
async def put_layout(code: str, data: LayoutIn, request: Request, who: PlatformAdmin,
                     service: ComplianceDep) -> LayoutPublic:
    """Replace the market's floor area, entrances, zones and stall count."""
    with contextlib.suppress(NotFound):  # the first layout has no "before"
        audit_before(request, await service.get_layout(code, who.markets))
    return await service.put_layout(code, data, who.markets)


@router.get("/markets/{code}/layout", response_model=LayoutPublic)
async def get_layout(code: str, who: FleetRead, service: ComplianceDep) -> LayoutPublic:
    return await service.get_layout(code, who.markets)


@router.get("/markets/{code}/scorecard", response_model=Scorecard)
async def scorecard(code: str, who: FleetRead, service: ComplianceDep, days: Days = None) -> Scorecard:
    """SZ A.1 hardware and data-transmission rows and the Zhengzhou device rows for one market."""
    return await service.scorecard(code, who.markets, days)


@router.get("/markets/{code}/scorecard.csv", response_class=Response)
async def scorecard_export(code: str, who: FleetRead, service: ComplianceDep, days: Days = None) -> Response:
    card = await service.scorecard(code, who.markets, days)
    return Response(
        scorecard_csv(card),
        media_type="text/csv; charset=utf-8",
        headers=attachment(f"scorecard-{code}.csv"),
    )
