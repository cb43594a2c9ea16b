"""Server-sent events of the alert stream, one implementation for the API (`/api/v1/alerts/stream`) and the
dashboard's inbox: a comment every `KEEPALIVE_S` keeps proxies from closing an idle stream, each message goes
out with its id (browsers resume with Last-Event-ID) and its event name, and the subscription is closed when
the client goes away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

KEEPALIVE_S = 15.0


def alert_event_stream(subscription: Any) -> StreamingResponse:
    """Stream a `rules.stream.Subscription` (already subscribed, so nothing published since is missed)."""

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n: connected\n\n"
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        message = await subscription.get()
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message is None:
                    return
                data = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str)
                yield f"id: {message['id']}\nevent: {message['event']}\ndata: {data}\n\n"
        finally:
            subscription.close()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
