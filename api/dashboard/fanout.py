"""`PresenceFanout`: one bus subscription feeding every open dashboard's presence stream.

With one bus subscription per dashboard, each presence change woke 2,000 streams that each filtered it, looked
up the device's kind (a query per stream the first time it met the device) and JSON-encoded it. Here that work
is done once per batch of events: one look-up of the devices' kinds, one SSE encoding per event, then one joined
chunk of bytes per *scope* (market filter, the person's markets, the vendor), shared by every dashboard in that
scope. A dashboard (`Listener`) only receives ready bytes into a bounded queue.

A dashboard that falls more than `maxsize` events behind (a browser on a bad link, a frozen tab: its socket
stops draining) loses what was queued for it and gets `event: overflow` with the count instead, which the page
shows as "some live updates may have been missed". The fan-out only ever appends to queues, so a slow dashboard
never holds up the others.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple

from broker.bus import Doorbell, EnvelopeBus, PresenceChanged, Subscription

log = logging.getLogger(__name__)

BUFFER = 2_000  # presence events one dashboard may lag behind before its queue is dropped
BATCH = 500  # bus events handled per round (one kind look-up, one encoding pass)
BUS_BUFFER = 50_000  # events the fan-out itself may lag behind the bus
FACTS_CACHE = 50_000  # (kind, vendor) of devices already seen; a device's kind never changes

Facts = Callable[[Iterable[str]], Awaitable[dict[str, tuple[str, int]]]]


class Scope(NamedTuple):
    """What one dashboard may see: None means no limit on that axis."""

    market: str | None  # the page's market filter
    markets: frozenset[str] | None  # the person's markets
    vendor_id: int | None  # a vendor sees only its own devices

    def sees(self, market: str | None, vendor_id: int) -> bool:
        return ((self.market is None or market == self.market)
                and (self.markets is None or (market is not None and market in self.markets))
                and (self.vendor_id is None or vendor_id == self.vendor_id))


def sse(event: str, data: object) -> bytes:
    """One server-sent event, encoded once for every reader."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {payload}\n\n".encode()


class Listener:
    """One dashboard's bounded queue of encoded chunks."""

    def __init__(self, fanout: PresenceFanout, scope: Scope, maxsize: int) -> None:
        self.scope, self.maxsize = scope, maxsize
        self.missed = 0  # events this dashboard lost by falling behind
        self.closed = False
        self._fanout: PresenceFanout | None = fanout
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0  # events in _chunks
        self._bell = Doorbell()

    def offer(self, chunk: bytes, events: int) -> None:
        if self._queued + events > self.maxsize:
            self.missed += self._queued + events
            self._chunks.clear()
            self._queued = 0
            self._chunks.append(sse("overflow", {"dropped": self.missed}))
        else:
            self._chunks.append(chunk)
            self._queued += events
        self._bell.ring()

    def overflow(self, dropped: int) -> None:
        """The fan-out itself lost events before they were sorted: every dashboard missed them."""
        self.missed += dropped
        self._chunks.append(sse("overflow", {"dropped": self.missed}))
        self._bell.ring()

    @property
    def pending(self) -> int:
        """Presence events waiting to be sent."""
        return self._queued

    async def get(self) -> bytes:
        """Everything queued, as one chunk; StopAsyncIteration once closed and drained."""
        while not self._chunks:
            if self.closed:
                raise StopAsyncIteration
            await self._bell.wait()
        chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._queued = 0
        return chunk

    def close(self) -> None:
        if self._fanout is not None:
            self._fanout._remove(self)
            self._fanout = None
        self.closed = True
        self._bell.ring()


class PresenceFanout:
    """Runs while at least one dashboard listens: subscribes to the bus on the first, lets go after the last."""

    def __init__(self, bus: EnvelopeBus, facts: Facts, maxsize: int = BUFFER) -> None:
        self._bus, self._lookup, self.maxsize = bus, facts, maxsize
        self._groups: dict[Scope, list[Listener]] = {}
        self._facts: dict[str, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> list[Listener]:
        return [listener for group in self._groups.values() for listener in group]

    def listen(self, scope: Scope) -> Listener:
        """A new dashboard; events published on the bus from now on reach it."""
        if self._task is None or self._task.done():
            subscription = self._bus.subscribe(maxsize=BUS_BUFFER, kinds=(PresenceChanged,), name="dashboards")
            self._task = asyncio.get_running_loop().create_task(self._pump(subscription), name="presence-fanout")
            self._task.add_done_callback(_log_failure)
        listener = Listener(self, scope, self.maxsize)
        self._groups.setdefault(scope, []).append(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        group = self._groups.get(listener.scope)
        if group is not None and listener in group:
            group.remove(listener)
            if not group:
                del self._groups[listener.scope]
        if not self._groups and self._task is not None:
            self._task.cancel()  # its `finally` lets go of the bus subscription
            self._task = None

    async def _pump(self, subscription: Subscription) -> None:
        seen_dropped = 0
        try:
            while True:
                try:
                    batch = [await subscription.get()]
                except StopAsyncIteration:  # the bus closed: the platform is shutting down
                    for listener in self.listeners:
                        listener.close()
                    return
                while len(batch) < BATCH and len(subscription):
                    batch.append(subscription.get_nowait())
                if subscription.dropped > seen_dropped:
                    for listener in self.listeners:
                        listener.overflow(subscription.dropped - seen_dropped)
                    seen_dropped = subscription.dropped
                await self._send(batch)
        finally:
            subscription.close()

    async def _send(self, batch: list[PresenceChanged]) -> None:
        unknown = {event.device_id for event in batch} - self._facts.keys()
        if unknown:
            if len(self._facts) + len(unknown) > FACTS_CACHE:
                self._facts.clear()
            try:
                self._facts.update(await self._lookup(unknown))
            except Exception:  # the registry is briefly unreachable: skip these, keep the streams open
                log.exception("presence fan-out: device look-up failed, %d events not sent", len(batch))
                return
        encoded: list[tuple[str | None, int, bytes]] = []
        for event in batch:
            fact = self._facts.get(event.device_id)
            if fact is None:  # not (or no longer) in the registry
                continue
            encoded.append((event.market, fact[1], sse("presence", {
                "device_id": event.device_id, "online": event.online, "kind": fact[0],
                "market": event.market, "reason": event.reason, "at": event.at.isoformat(),
            })))
        if not encoded:
            return
        for scope, group in list(self._groups.items()):
            chunks = [data for market, vendor_id, data in encoded if scope.sees(market, vendor_id)]
            if chunks:
                chunk = b"".join(chunks)
                for listener in group:
                    listener.offer(chunk, len(chunks))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("presence fan-out stopped; the next dashboard to connect restarts it", exc_info=task.exception())


_fanouts: weakref.WeakKeyDictionary[EnvelopeBus, PresenceFanout] = weakref.WeakKeyDictionary()


def fanout_for(bus: EnvelopeBus, facts: Facts) -> PresenceFanout:
    """The one fan-out of this bus (created on first use)."""
    fanout = _fanouts.get(bus)
    if fanout is None:
        fanout = _fanouts[bus] = PresenceFanout(bus, facts)
    return fanout
