"""`GET /events/presence`: server-sent events of devices going online and offline, for the dashboard pages.

Fed by `ctx.services["bus"]` (broker.bus.EnvelopeBus) `PresenceChanged` events and filtered to what the caller
may see: a person's markets, a vendor's own devices, and optionally one `market`. Each event is sent as

    event: presence
    data: {"device_id": "acme-SN1", "online": false, "kind": "scale", "market": "M1", "reason": "will",
           "at": "2025-05-01T06:00:00+00:00"}

`kind` (which the bus event lacks) is looked up once per batch of events in one query, so the overview can move
its per-kind counts. A subscriber that falls behind loses its oldest events (the bus never waits for it); the
stream then sends `event: overflow` and the page says so. A comment line every 15 s keeps proxies from closing
an idle stream and lets the server notice a browser that went away. Without a bus the answer is 204, which
tells EventSource not to reconnect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from accounts.permissions import Principal
from api.auth import ContextDep, resolve_principal
from api.dashboard.queries import device_facts
from api.dashboard.viewer import may_read_fleet
from broker.bus import EnvelopeBus, PresenceChanged

router = APIRouter()

KEEPALIVE_S = 15.0
BUFFER = 2_000  # events one browser may lag behind before it loses the oldest
BATCH = 500  # events sent per look-up of their devices' kinds
FACTS_CACHE = 50_000  # (kind, vendor) of devices already seen by this stream; a device's kind never changes


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def presence_stream(bus: EnvelopeBus, principal: Principal, market: str | None) -> AsyncIterator[str]:
    subscription = bus.subscribe(maxsize=BUFFER, kinds=(PresenceChanged,), name=f"dashboard:{principal.actor}")
    facts: dict[str, tuple[str, int]] = {}
    dropped = 0
    try:
        yield "retry: 3000\n" + sse("hello", {"market": market})
        while True:
            try:
                first = await asyncio.wait_for(subscription.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            except StopAsyncIteration:  # the bus closed: the platform is shutting down
                return
            batch: list[PresenceChanged] = [first]
            while len(batch) < BATCH and len(subscription):
                batch.append(subscription.get_nowait())
            if subscription.dropped > dropped:
                dropped = subscription.dropped
                yield sse("overflow", {"dropped": dropped})
            visible = [
                e for e in batch if principal.sees_market(e.market) and (market is None or e.market == market)
            ]
            unknown = {e.device_id for e in visible} - facts.keys()
            if unknown:
                if len(facts) + len(unknown) > FACTS_CACHE:
                    facts.clear()
                facts.update(await device_facts(unknown))
            chunks = []
            for event in visible:
                fact = facts.get(event.device_id)
                if fact is None or (principal.vendor_id is not None and fact[1] != principal.vendor_id):
                    continue
                chunks.append(sse("presence", {
                    "device_id": event.device_id, "online": event.online, "kind": fact[0],
                    "market": event.market, "reason": event.reason, "at": event.at.isoformat(),
                }))
            if chunks:
                yield "".join(chunks)
    finally:
        subscription.close()


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
        presence_stream(bus, principal, market or None),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
