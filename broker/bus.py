"""`EnvelopeBus`: in-process fan-out of ingest events to the subsystems that react to them.

Ingest publishes every accepted `fleet.envelope.Envelope`, and presence publishes `PresenceChanged`; the rules
engine, presence consumers and the dashboard's server-sent events subscribe. Publishing never waits: each
subscriber has its own bounded buffer and, when it falls behind, loses its *oldest* events (counted in
`Subscription.dropped`), so a slow dashboard can never slow down ingest or another subscriber.

    sub = bus.subscribe(maxsize=10_000, kinds=(Envelope,))
    async for event in sub:          # or: await sub.get(), sub.get_nowait()
        ...
    sub.close()
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["EnvelopeBus", "PresenceChanged", "Subscription"]


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A device went online or offline; `reason`: connected, disconnected, status, will, silent, revoked."""

    device_id: str
    market: str | None
    online: bool
    reason: str
    at: datetime


class Doorbell:
    """Wakes the one task waiting for a buffer to fill (a subscriber has one reader): a bare future, cheaper than an
    `asyncio.Event` per subscriber when thousands of them are offered every event."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Subscription:
    """One subscriber's bounded buffer; iterate it, or `get()` events one by one."""

    def __init__(self, bus: EnvelopeBus, maxsize: int, kinds: tuple[type, ...] | None, name: str) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.name = name
        self.maxsize = maxsize
        self.kinds = kinds
        self.dropped = 0  # events lost because this subscriber fell behind (oldest first)
        self.delivered = 0
        self._buffer: collections.deque[Any] = collections.deque()
        self._bell = Doorbell()
        self._bus: EnvelopeBus | None = bus
        self.closed = False

    def _offer(self, event: Any) -> None:
        if self.kinds is not None and not isinstance(event, self.kinds):
            return
        buffer = self._buffer
        if len(buffer) >= self.maxsize:
            buffer.popleft()
            self.dropped += 1
        buffer.append(event)
        self._bell.ring()

    def __len__(self) -> int:
        return len(self._buffer)

    def get_nowait(self) -> Any:
        """The oldest buffered event; IndexError when none is waiting."""
        event = self._buffer.popleft()
        self.delivered += 1
        return event

    async def get(self) -> Any:
        """Wait for the next event; raises `asyncio.CancelledError`-free `StopAsyncIteration` once closed."""
        while not self._buffer:
            if self.closed:
                raise StopAsyncIteration
            await self._bell.wait()
        return self.get_nowait()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.get()

    def close(self) -> None:
        """Stop receiving; a pending `get()` ends with StopAsyncIteration once the buffer is drained."""
        if self._bus is not None:
            self._bus._remove(self)
            self._bus = None
        self.closed = True
        self._bell.ring()


class EnvelopeBus:
    """Fan-out of events to subscriptions; `publish` is synchronous and never blocks."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self.published = 0

    def subscribe(
        self, *, maxsize: int = 10_000, kinds: tuple[type, ...] | None = None, name: str = ""
    ) -> Subscription:
        """A new subscription; `kinds` limits it to events of those types (e.g. `(PresenceChanged,)`)."""
        sub = Subscription(self, maxsize, kinds, name)
        self._subscriptions.append(sub)
        return sub

    @property
    def has_subscribers(self) -> bool:
        """Lets publishers skip building events nobody reads."""
        return bool(self._subscriptions)

    def publish(self, event: Any) -> None:
        self.published += 1
        for sub in self._subscriptions:
            sub._offer(event)

    def publish_many(self, events: list[Any]) -> None:
        for event in events:
            self.publish(event)

    def dropped(self) -> dict[str, int]:
        """Events lost per subscriber name (for metrics)."""
        return {sub.name or f"#{i}": sub.dropped for i, sub in enumerate(self._subscriptions)}

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def close(self) -> None:
        for sub in list(self._subscriptions):
            sub.close()
