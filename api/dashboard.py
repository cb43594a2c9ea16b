"""Server-rendered dashboard pages. People sign in with their account; the session token is an HttpOnly
cookie. What a page shows is scoped like the API: a manager sees their markets, a vendor its own devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from accounts.permissions import Permission
from api.auth import SESSION_COOKIE, AccountsDep, ContextDep, RegistryDep, resolve_principal
from api.routes.accounts import client_ip
from fleet.errors import Unauthorised
from fleet.kinds import CATALOG, DeviceKind
from fleet.models import DeviceStatus
from fleet.schemas import DeviceFilter

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, error: str | None = None) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": error})


@router.post("/login")
async def login(
    request: Request, accounts: AccountsDep, username: Annotated[str, Form()], password: Annotated[str, Form()]
) -> Response:
    try:
        token, _ = await accounts.login(username.strip(), password, ip=client_ip(request))
    except Unauthorised:
        return RedirectResponse("/login?error=1", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request, accounts: AccountsDep) -> Response:
    await accounts.logout(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
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
    principal = await resolve_principal(request, ctx)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    if not (principal.can(Permission.FLEET_READ) or principal.can(Permission.VENDOR_SELF)):
        return RedirectResponse("/login?error=2", status_code=303)
    flt = DeviceFilter(
        kind=DeviceKind(kind) if kind in DeviceKind._value2member_map_ else None,
        market=market or None,
        status=DeviceStatus(status) if status in DeviceStatus._value2member_map_ else None,
        online={"yes": True, "no": False}.get(online),
        q=q or None,
    )
    if principal.vendor_id is not None:
        flt = flt.model_copy(update={"vendor_id": principal.vendor_id})
    total, devices = await registry.list_devices(
        flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, markets=principal.markets
    )
    markets = await registry.list_markets(principal.markets)
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
            "principal": principal,
            "filters": {"kind": kind, "market": market, "status": status, "online": online, "q": q},
        },
    )
