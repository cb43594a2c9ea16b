"""Who is calling: the platform admin (bearer token) or a vendor (X-API-Key). People and roles come later."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from api.context import ApiContext
from fleet.errors import Unauthorised
from fleet.models import Vendor
from fleet.registry import Registry


def get_context(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


ContextDep = Annotated[ApiContext, Depends(get_context)]


def get_registry(ctx: ContextDep) -> Registry:
    return ctx.registry


RegistryDep = Annotated[Registry, Depends(get_registry)]


async def require_admin(ctx: ContextDep, authorization: Annotated[str | None, Header()] = None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token or not hmac.compare_digest(token.strip(), ctx.admin_token):
        raise Unauthorised("admin token required: send 'Authorization: Bearer <token>'")


AdminDep = Depends(require_admin)


async def require_vendor(
    registry: RegistryDep, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> Vendor:
    if not x_api_key:
        raise Unauthorised("vendor API key required: send 'X-API-Key: mfk_…'")
    vendor = await registry.vendor_for_key(x_api_key)
    if vendor is None:
        raise Unauthorised("unknown or revoked vendor API key")
    return vendor


VendorDep = Annotated[Vendor, Depends(require_vendor)]
