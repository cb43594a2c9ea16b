"""Server-rendered dashboard pages. This first page is the fleet table; people and roles arrive later.

Until accounts exist, the dashboard signs in with the admin token, kept in an HttpOnly cookie.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.auth import ContextDep, RegistryDep
from fleet.kinds import CATALOG, DeviceKind
from fleet.models import DeviceStatus
from fleet.schemas import DeviceFilter

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
COOKIE = "mf_token"
PAGE_SIZE = 50


def _signed_in(request: Request, admin_token: str) -> bool:
    token = request.cookies.get(COOKIE, "")
    return bool(token) and hmac.compare_digest(token, admin_token)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, error: str | None = None) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": error})


@router.post("/login")
async def login(ctx: ContextDep, token: Annotated[str, Form()]) -> Response:
    if not hmac.compare_digest(token.strip(), ctx.admin_token):
        return RedirectResponse("/login?error=1", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
async def fleet_page(
    request: Request,
    ctx: ContextDep,
    registry: RegistryDep,
    kind: Annotated[str, Query()] = "",
    market: Annotated[str, Query()] = "",
    status: Annotated[str, Query()] = "",
    online: Annotated[str, Query()] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    if not _signed_in(request, ctx.admin_token):
        return RedirectResponse("/login", status_code=303)
    flt = DeviceFilter(
        kind=DeviceKind(kind) if kind in DeviceKind._value2member_map_ else None,
        market=market or None,
        status=DeviceStatus(status) if status in DeviceStatus._value2member_map_ else None,
        online={"yes": True, "no": False}.get(online),
        q=q or None,
    )
    total, devices = await registry.list_devices(flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    markets = await registry.list_markets()
    return templates.TemplateResponse(
        request,
        "fleet.html",
        {
            "devices": devices,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "kinds": list(CATALOG.values()),
            "markets": markets,
            "statuses": list(DeviceStatus),
            "filters": {"kind": kind, "market": market, "status": status, "online": online, "q": q},
        },
    )
