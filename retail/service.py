"""`setup(sender, clock) -> RetailService`: products and prices, shelf labels, the scale ledger, scale integrity.

    retail = setup(sender)                      # sender: retail.commands.CommandSender (MQTT or CoAP adapter)
    await retail.start(events)                  # events: an async iterator of envelopes (the ingest bus)
    await retail.prices.update(product, {"price": Decimal("6.80")}, actor, PriceSource.API)
    await retail.aclose()

Background work (one task each, kept and cancelled on close): consuming uplinks, applying timed changes when
their moment comes (`tick_s`), sending timed frames that entered the lead time, and sending again label
updates that were not confirmed in time (`resend_after_s`, which bounds how long a roaming label waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fleet.envelope import Envelope
from retail.anomalies import AnomalyLimits
from retail.commands import Clock, CommandSender, utcnow
from retail.labels import LabelDispatcher
from retail.ledger import Ledger
from retail.prices import PriceBook
from retail.scales import ScaleDesk
from retail.uplinks import UplinkRouter

__all__ = ["RetailService", "setup"]

log = logging.getLogger(__name__)


class RetailService:
    def __init__(self, sender: CommandSender, clock: Clock = utcnow, *, tick_s: float = 0.5,
                 resend_after_s: float = 20.0, schedule_lead: timedelta = timedelta(days=2),
                 limits: AnomalyLimits | None = None) -> None:
        self.clock = clock
        self.sender = sender
        self.labels = LabelDispatcher(sender, clock)
        self.prices = PriceBook(self.labels, sender, clock, schedule_lead=schedule_lead)
        self.ledger = Ledger(clock, limits)
        self.scales = ScaleDesk(sender, clock)
        self.uplinks = UplinkRouter(self)
        self.tick_s = tick_s
        self.resend_after_s = resend_after_s
        self._tasks: list[asyncio.Task[None]] = []

    async def handle(self, envelope: Envelope) -> None:
        await self.uplinks.handle(envelope)

    async def start(self, events: AsyncIterator[Any] | None = None) -> None:
        if events is not None:
            self._tasks.append(asyncio.create_task(self._consume(events), name="retail-uplinks"))
        self._tasks.append(asyncio.create_task(self._every(self.tick_s, self.prices.apply_due), name="retail-due"))
        self._tasks.append(asyncio.create_task(self._every(60.0, self.prices.send_upcoming), name="retail-ahead"))
        self._tasks.append(asyncio.create_task(
            self._every(max(1.0, self.resend_after_s / 2), lambda: self.labels.resend_stale(self.resend_after_s)),
            name="retail-resend",
        ))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> RetailService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> dict[str, Any]:
        s = self.labels.stats
        return {"labels": {"sent": s.sent, "resent": s.resent, "confirmed": s.confirmed, "bytes": s.bytes_sent,
                           "diff_frames": s.diff_frames, "full_frames": s.full_frames, "no_route": s.no_route},
                "uplinks": {"handled": dict(self.uplinks.stats.handled), "ignored": dict(self.uplinks.stats.ignored),
                            "errors": self.uplinks.stats.errors}}

    async def _consume(self, events: AsyncIterator[Any]) -> None:
        async for event in events:
            if isinstance(event, Envelope):
                await self.uplinks.handle(event)

    async def _every(self, seconds: float, work: Any) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("retail background work failed; trying again in %.1f s", seconds)
            await asyncio.sleep(seconds)


def setup(sender: CommandSender, clock: Clock = utcnow, **options: Any) -> RetailService:
    return RetailService(sender, clock, **options)
