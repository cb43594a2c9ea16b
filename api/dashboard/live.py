"""`GET /events/presence`: server-sent events of devices going online and offline, for the dashboard pages.

Fed by `ctx.services["bus"]` (broker.bus.EnvelopeBus) `PresenceChanged` events and filtered to what the caller
may see: a person's markets, a vendor's own devices, and optionally one `market`. Each event is sent as

    event: presence
    data: {"device_id": "acme-SN1", "online": false, "kind": "scale", "market": "M1", "reason": "will",
           "at": "2025-05-01T06:00:00+00:00"}

`kind` (which the bus event lacks) is looked up once per batch, and each event is encoded once for every
dashboard: the streams share one `api.dashboard.fanout.PresenceFanout`, which sorts events by scope and hands
each dashboard ready bytes. A dashboard that falls behind (its socket stops draining) loses its queued events
and gets `event: overflow` instead; the page says so, and the others are not held up. A comment line every 15 s
keeps proxies from closing an idle stream and lets the server notice a browser that went away. Without a bus
the answer is 204, which tells EventSource not to reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from accounts.permissions import Principal
from api.auth import ContextDep, resolve_principal
from api.dashboard.fanout import PresenceFanout, Scope, fanout_for, sse
from api.dashboard.queries import device_facts
from api.dashboard.viewer import may_read_fleet
from broker.bus import EnvelopeBus

router = APIRouter()

KEEPALIVE_S = 15.0


def scope_of(principal: Principal, market: str | None) -> Scope:
    return Scope(market, principal.markets, principal.vendor_id)


async def presence_stream(fanout: PresenceFanout, principal: Principal, market: str | None) -> AsyncIterator[bytes]:
    listener = fanout.listen(scope_of(principal, market))
    try:
        yield b"retry: 3000\n" + sse("hello", {"market": market})
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    chunk = await listener.get()
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            except StopAsyncIteration:  # the bus closed: the platform is shutting down
                return
            yield chunk
    finally:
        listener.close()


@router.get("/events/presence")
async def presence_events(
    request: Request, ctx: ContextDep, market: Annotated[str, Query(max_length=32)] = ""
) -> Response:
    principal = await resolve_principal(request, ctx)
    if principal is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    if not may_read_fleet(principal):
        return Response("this role may not see device presence", status_code=403, media_type="text/plain")
    bus: EnvelopeBus | None = ctx.services.get("bus")
    if bus is None:
        return Response(status_code=204)  # live updates are off on this instance
    return StreamingResponse(
        presence_stream(fanout_for(bus, device_facts), principal, market or None),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
