"""Who is calling and what they may do.

Credentials, in order: `Authorization: Bearer <session token>` (people, from /api/v1/auth/login),
`Authorization: Bearer <admin token>` (the platform's bootstrap token), the dashboard's session cookie, or
`X-API-Key` (a vendor's key). Every endpoint states the one permission it needs with `require(...)`; the role
table lives in accounts/permissions.py.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from accounts.models import Role
from accounts.permissions import Permission, Principal
from accounts.service import Accounts
from api.context import ApiContext
from fleet.errors import Forbidden, Unauthorised
from fleet.models import Vendor
from fleet.registry import Registry

SESSION_COOKIE = "mf_session"
ADMIN_TOKEN_PRINCIPAL = Principal(actor="admin-token", role=Role.ADMIN)


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop on every request (it halved the requests per second of a cached lookup; BENCHMARKS.md).
async def get_context(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


ContextDep = Annotated[ApiContext, Depends(get_context)]


async def get_registry(ctx: ContextDep) -> Registry:
    return ctx.registry


async def get_accounts(ctx: ContextDep) -> Accounts:
    return ctx.accounts


RegistryDep = Annotated[Registry, Depends(get_registry)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


async def resolve_principal(request: Request, ctx: ApiContext) -> Principal | None:
    """The caller, or None when no credential was presented; a bad credential raises Unauthorised."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    api_key = request.headers.get("x-api-key")
    cookie = request.cookies.get(SESSION_COOKIE)
    principal: Principal | None = None
    if token:
        if scheme.lower() != "bearer":
            raise Unauthorised("send 'Authorization: Bearer <token>'")
        if hmac.compare_digest(token, ctx.admin_token):
            principal = ADMIN_TOKEN_PRINCIPAL
        else:
            principal = await ctx.accounts.principal_for_token(token)
            if principal is None:
                raise Unauthorised("unknown or expired token; sign in again")
    elif api_key:
        vendor = await ctx.registry.vendor_for_key(api_key)
        if vendor is None:
            raise Unauthorised("unknown or revoked vendor API key")
        principal = Principal(actor=f"vendor:{vendor.code}", role=Role.VENDOR, vendor_id=vendor.id)
    elif cookie:
        principal = await ctx.accounts.principal_for_token(cookie)
    request.state.principal = principal
    return principal


def require(permission: Permission):  # type: ignore[no-untyped-def]
    """Dependency: the caller must hold `permission`; 401 without a credential, 403 without the right."""

    async def dependency(request: Request, ctx: ContextDep) -> Principal:
        principal = await resolve_principal(request, ctx)
        if principal is None:
            raise Unauthorised("sign in, or send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'")
        if not principal.can(permission):
            raise Forbidden(f"role {principal.role.value!r} may not do this (needs {permission.value})")
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]  # read by document_permissions()
    return Depends(dependency)


def document_permissions(router) -> None:  # type: ignore[no-untyped-def]
    """Write each operation's required permission into the OpenAPI spec as `x-permission` (call it on an
    APIRouter before it is included: FastAPI includes routers lazily)."""
    from fastapi.routing import APIRoute

    def permissions(dependant) -> list[str]:  # type: ignore[no-untyped-def]
        found = [dependant.call.permission.value] if hasattr(dependant.call, "permission") else []
        for sub in dependant.dependencies:
            found += permissions(sub)
        return found

    for route in router.routes:
        if isinstance(route, APIRoute):
            needed = sorted(set(permissions(route.dependant)))
            if needed:
                route.openapi_extra = {**(route.openapi_extra or {}), "x-permission": ",".join(needed)}


FleetRead = Annotated[Principal, require(Permission.FLEET_READ)]
FleetWrite = Annotated[Principal, require(Permission.FLEET_WRITE)]
PlatformAdmin = Annotated[Principal, require(Permission.PLATFORM_ADMIN)]
AuditRead = Annotated[Principal, require(Permission.AUDIT_READ)]
AdminDep = require(Permission.PLATFORM_ADMIN)  # for routers whose every route only the platform admin uses


async def require_vendor(
    registry: RegistryDep,
    principal: Annotated[Principal, require(Permission.VENDOR_SELF)],
    x_api_key: Annotated[str | None, Header(alias="X-API-Key", include_in_schema=True)] = None,
) -> Vendor:
    del registry, x_api_key  # the header is declared for the OpenAPI docs; resolve_principal reads it
    vendor = await Vendor.get_or_none(id=principal.vendor_id, active=True)
    if vendor is None:
        raise Unauthorised("vendor account is disabled")
    return vendor


VendorDep = Annotated[Vendor, Depends(require_vendor)]
