"""EnvelopeBus fan-out: bounded per subscriber, drop-oldest, never blocks the publisher."""

from __future__ import annotations

import asyncio

import pytest

from broker.bus import EnvelopeBus, PresenceChanged

pytestmark = pytest.mark.timeout(30)


async def test_each_subscriber_gets_every_event() -> None:
    bus = EnvelopeBus()
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(3):
        bus.publish(i)
    assert [await a.get() for _ in range(3)] == [0, 1, 2]
    assert [b.get_nowait() for _ in range(3)] == [0, 1, 2]


async def test_a_slow_subscriber_loses_its_oldest_events_only() -> None:
    bus = EnvelopeBus()
    slow = bus.subscribe(maxsize=2, name="slow")
    fast = bus.subscribe(maxsize=100)
    for i in range(5):
        bus.publish(i)
    assert [slow.get_nowait() for _ in range(len(slow))] == [3, 4]
    assert slow.dropped == 3
    assert len(fast) == 5
    assert bus.dropped()["slow"] == 3


async def test_kinds_filter_and_waiting_get() -> None:
    bus = EnvelopeBus()
    presence = bus.subscribe(kinds=(PresenceChanged,))
    waiter = asyncio.create_task(presence.get())
    await asyncio.sleep(0)
    bus.publish("not presence")
    event = PresenceChanged("d", None, True, "connected", None)  # type: ignore[arg-type]
    bus.publish(event)
    assert await asyncio.wait_for(waiter, 1) is event


async def test_closing_ends_iteration() -> None:
    bus = EnvelopeBus()
    sub = bus.subscribe()
    bus.publish(1)
    sub.close()
    assert [e async for e in sub] == [1]
    assert not bus.has_subscribers
