"""Server-sent events of the alert stream, one implementation for the API (`/api/v1/alerts/stream`) and the
dashboard's inbox: each message is serialised once for all subscribers, a comment every `KEEPALIVE_S` keeps
proxies from closing an idle stream, each message goes out with its id (browsers resume with Last-Event-ID) and
its event name, and the subscription is closed when the client goes away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

KEEPALIVE_S = 15.0


def encode(message: dict[str, Any]) -> bytes:
    """One SSE message; a message shared by every subscriber (`rules.stream.SharedMessage`) is encoded once."""
    cached = getattr(message, "encoded", None)
    if cached is not None:
        return cached
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str)
    encoded = f"id: {message['id']}\nevent: {message['event']}\ndata: {data}\n\n".encode()
    if hasattr(message, "encoded"):
        message.encoded = encoded  # type: ignore[attr-defined]
    return encoded


def alert_event_stream(subscription: Any) -> StreamingResponse:
    """Stream a `rules.stream.Subscription` (already subscribed, so nothing published since is missed)."""

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 3000\n: connected\n\n"
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        message = await subscription.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if message is None:
                    return
                yield encode(message)
        finally:
            subscription.close()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
