"""Request limits for the HTTP API: per vendor key and per client address (issue 11; per device limits live with
the device transports in broker/ratelimit.py, whose token bucket this reuses).

A request with `X-API-Key` spends from its key's bucket (a vendor's integration running away cannot starve the
others), any other request from its address's bucket. Over the limit: 429 with `Retry-After`, before the
request reaches a route, so a flood costs one dictionary lookup per request. Health checks, static files and
device uploads (limited per device instead) are not limited here. Behind a reverse proxy every request comes
from the proxy's address: raise `api.ip_rate` there, or let the proxy limit per client.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.ratelimit import RateLimiter

# Device uploads have their own per-device limits (HTTP ingest, after authentication); many detectors may
# share one gateway address, which must not starve them.
EXEMPT = ("/healthz", "/static/", "/api/v1/ingest/")


class RequestLimits:
    def __init__(self, app: ASGIApp, *, key_rate: float, key_burst: float, ip_rate: float, ip_burst: float) -> None:
        self.app = app
        self.keys = RateLimiter(key_rate, key_burst)
        self.addresses = RateLimiter(ip_rate, ip_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        key = dict(scope["headers"]).get(b"x-api-key")
        if key:
            # The lookup part of `mfk_<lookup>_<secret>` names the vendor without keeping secrets in memory.
            limiter, name, what = self.keys, key.decode("latin-1").rsplit("_", 1)[0][:40], "API key"
        else:
            client = scope.get("client")
            limiter, name, what = self.addresses, client[0] if client else "?", "address"
        wait = limiter.take(name)
        if wait:
            seconds = RateLimiter.retry_after_s(wait)
            response = JSONResponse({"detail": f"too many requests from this {what}; retry in {seconds} s"},
                                    status_code=429, headers={"Retry-After": str(seconds)})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
