"""Signing in, people's accounts, and the audit log."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from accounts.models import AuditEntry, User
from accounts.permissions import GRANTS
from accounts.service import UserCreate, UserPublic
from api.audit import audit_before
from api.auth import AccountsDep, AuditRead, ContextDep, PlatformAdmin, resolve_principal
from fleet.errors import Unauthorised

router = APIRouter(tags=["accounts"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class LoginResponse(BaseModel):
    token: str
    user: UserPublic
    permissions: list[str]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post("/api/v1/auth/login", response_model=LoginResponse)
async def login(data: LoginRequest, request: Request, accounts: AccountsDep) -> LoginResponse:
    token, user = await accounts.login(data.username, data.password, ip=client_ip(request))
    return LoginResponse(
        token=token, user=UserPublic.model_validate(user), permissions=sorted(p.value for p in GRANTS[user.role])
    )


@router.post("/api/v1/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, accounts: AccountsDep) -> Response:
    _, _, token = request.headers.get("authorization", "").partition(" ")
    await accounts.logout(token.strip())
    return Response(status_code=204)


@router.get("/api/v1/auth/me")
async def me(request: Request, ctx: ContextDep) -> dict[str, Any]:
    principal = await resolve_principal(request, ctx)
    if principal is None:
        raise Unauthorised("not signed in")
    return {
        "actor": principal.actor,
        "role": principal.role.value,
        "markets": sorted(principal.markets) if principal.markets is not None else None,
        "vendor_id": principal.vendor_id,
        "permissions": sorted(p.value for p in GRANTS[principal.role]),
    }


@router.post("/api/v1/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
async def create_user(data: UserCreate, accounts: AccountsDep, _: PlatformAdmin) -> UserPublic:
    return UserPublic.model_validate(await accounts.create_user(data))


@router.get("/api/v1/users", response_model=list[UserPublic])
async def list_users(accounts: AccountsDep, _: PlatformAdmin) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in await accounts.list_users()]


@router.post("/api/v1/users/{username}/disable", response_model=UserPublic)
async def disable_user(username: str, request: Request, accounts: AccountsDep, _: PlatformAdmin) -> UserPublic:
    if (user := await User.get_or_none(username=username)) is not None:
        audit_before(request, UserPublic.model_validate(user))
    return UserPublic.model_validate(await accounts.set_active(username, False))


class AuditPublic(BaseModel):
    model_config = {"from_attributes": True}
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    status: int
    ip: str
    before: Any
    after: Any


def _json_cell(value: Any) -> str:
    """JSON in a CSV cell (a Python repr would not parse back)."""
    return "" if value is None else json.dumps(value, ensure_ascii=False, default=str)


@router.get("/api/v1/audit", response_model=list[AuditPublic])
async def list_audit(
    _: AuditRead,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="substring, e.g. 'login' or '/devices'")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    query = AuditEntry.all()
    if actor:
        query = query.filter(actor=actor)
    if action:
        query = query.filter(action__icontains=action)
    if since:
        query = query.filter(at__gte=since)
    if until:
        query = query.filter(at__lt=until)
    rows = [AuditPublic.model_validate(e) for e in await query.order_by("-id").offset(offset).limit(limit)]
    if format == "json":
        return rows
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "role", "action", "target", "status", "ip", "before", "after"])
    for r in rows:
        writer.writerow([r.id, r.at.isoformat(), r.actor, r.role, r.action, r.target, r.status, r.ip,
                         _json_cell(r.before), _json_cell(r.after)])
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": "attachment; filename=audit.csv"})
