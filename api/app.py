"""The FastAPI application: routers, error table, request-size limit, dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api import dashboard
from api.audit import AuditMiddleware
from api.auth import document_permissions
from api.context import ApiContext
from api.errors import install_error_handlers
from api.ratelimit import RequestLimits
from api.routes import (
    accounts,
    admin,
    broker_admin,
    catalog,
    compliance,
    firmware,
    ingest,
    retail,
    rules,
    telemetry,
    upstream,
    vendor,
    vision,
)

STATIC_DIR = Path(__file__).parent / "static"


class BodyLimit:
    """Refuse request bodies above a limit before they are read into memory (413 with the limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited_receive():  # type: ignore[no-untyped-def]
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="MarketFleet",
        version="0.1.0",
        description="Device fleet platform for smart farmers' markets. Vendor onboarding: docs/onboarding.md.",
    )
    app.state.ctx = ctx
    install_error_handlers(app)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name every offending field as a path a person can find in their input: devices[3].kind
        problems = []
        for error in exc.errors():
            loc = [str(p) for p in error.get("loc", ()) if p != "body"]
            path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")
            problems.append({"field": path or "body", "message": error.get("msg", "invalid")})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        return JSONResponse({"detail": summary, "errors": problems[:100]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own message for an undecodable body does not say what to fix.
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            exc = StarletteHTTPException(400, "body: not decodable as UTF-8 JSON; send UTF-8 text")
        return await http_exception_handler(request, exc)

    for module in (
        catalog, accounts, admin, vendor, compliance, ingest, broker_admin, rules, firmware, upstream, vision,
        retail, telemetry,
    ):
        document_permissions(module.router)
        app.include_router(module.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(AuditMiddleware)
    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)
    if ctx.rate_limits is not None:
        key_rate, key_burst, ip_rate, ip_burst = ctx.rate_limits
        app.add_middleware(RequestLimits, key_rate=key_rate, key_burst=key_burst, ip_rate=ip_rate, ip_burst=ip_burst)
    return app
