"""`AlertStream`: the in-process broadcaster of alert changes that `GET /api/v1/alerts/stream` serves as SSE.

Publishing never blocks the alert writer: each subscriber has a bounded queue, and a subscriber that falls
behind loses its oldest messages (it is told how many in the next message's `dropped`) rather than
slowing everyone down. A dashboard that reconnects reloads the alert list, so nothing is lost for good.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

__all__ = ["AlertStream", "SharedMessage", "Subscription"]

Message = dict[str, Any]


class SharedMessage(dict[str, Any]):
    """A published message as every subscriber receives it: `encoded` lets the SSE layer serialise it once for
    all of them (a subscriber told about drops gets a plain copy with `dropped`, encoded on its own)."""

    __slots__ = ("encoded",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: bytes | None = None


class Subscription:
    """One listener. Use as `async with stream.subscribe() as sub: async for message in sub: ...`."""

    def __init__(self, stream: AlertStream, accept: Callable[[Message], bool] | None, size: int) -> None:
        self._stream, self.accept = stream, accept
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def _offer(self, message: Message | None) -> None:
        if message is not None and self.accept is not None and not self.accept(message):
            return
        while True:
            try:
                if message is not None and self.dropped:
                    message = {**message, "dropped": self.dropped}
                    self.dropped = 0
                self._queue.put_nowait(message)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1

    @property
    def pending(self) -> int:
        """Messages waiting to be read."""
        return self._queue.qsize()

    async def get(self) -> Message | None:
        """The next message; None once the stream closed (wrap in `asyncio.timeout` to bound the wait)."""
        return await self._queue.get()

    def close(self) -> None:
        self._stream._subscribers.discard(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while (message := await self._queue.get()) is not None:
            yield message


class AlertStream:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        self.closed = False

    def subscribe(self, accept: Callable[[Message], bool] | None = None) -> Subscription:
        """Register a listener now (so nothing published after this call is missed)."""
        subscription = Subscription(self, accept, self._queue_size)
        if self.closed:
            subscription._offer(None)
        else:
            self._subscribers.add(subscription)
        return subscription

    def publish(self, event: str, alert: dict[str, Any], **extra: Any) -> None:
        message = SharedMessage({"id": next(self._ids), "event": event, "at": datetime.now(UTC).isoformat(),
                                 "alert": alert, **extra})
        for subscription in list(self._subscribers):
            subscription._offer(message)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def aclose(self) -> None:
        """End every subscription (their iterators stop), so open SSE responses finish."""
        self.closed = True
        for subscription in list(self._subscribers):
            subscription._offer(None)
        self._subscribers.clear()
