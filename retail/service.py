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
                 limits: AnomalyLimits | None = None, group_window_s: float = 0.002, group_max: int = 500,
                 transaction_retention_days: int = 1095) -> None:
        self.clock = clock
        self.sender = sender
        # group_window_s: how long a single price change or label confirmation waits for others to share its
        # write; group_max: most per write, 1 writes each alone (docs/retail.md, "Single changes: group commit")
        self.labels = LabelDispatcher(sender, clock, group_window_s=group_window_s, group_max=group_max)
        self.prices = PriceBook(self.labels, sender, clock, schedule_lead=schedule_lead,
                                group_window_s=group_window_s, group_max=group_max)
        self.ledger = Ledger(clock, limits)
        self.scales = ScaleDesk(sender, clock)
        self.uplinks = UplinkRouter(self)
        self.tick_s = tick_s
        self.resend_after_s = resend_after_s
        # sales are kept three years (SZ 6.11.2 b), like telemetry: older ones are deleted at start, then hourly
        self.transaction_retention_days = transaction_retention_days
        self._tasks: list[asyncio.Task[None]] = []

    async def handle(self, envelope: Envelope) -> None:
        await self.uplinks.handle(envelope)

    async def start(self, events: AsyncIterator[Any] | None = None) -> None:
        if events is not None:
            self._tasks.append(asyncio.create_task(self._consume(events), name="retail-uplinks"))
        self._tasks.append(asyncio.create_task(self._every(self.tick_s, self.prices.apply_due), name="retail-due"))
        self._tasks.append(asyncio.create_task(self._every(60.0, self.prices.send_upcoming), name="retail-ahead"))
        self._tasks.append(asyncio.create_task(
            self._every(max(1.0, self.resend_after_s / 4), lambda: self.labels.resend_stale(self.resend_after_s)),
            name="retail-resend",
        ))
        self._tasks.append(asyncio.create_task(self._every(10.0, self.prices.sync_scales), name="retail-scales"))
        self._tasks.append(asyncio.create_task(self._every(5.0, self.labels.save_frames), name="retail-frames"))
        self._tasks.append(asyncio.create_task(
            self._every(3600.0, lambda: self.ledger.purge(self.transaction_retention_days)),
            name="retail-retention",
        ))

    async def aclose(self) -> None:
        started = bool(self._tasks)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        # Queued single changes and confirmations are written, later ones refused.
        for close in (self.prices.aclose, self.labels.aclose):
            with contextlib.suppress(Exception):
                await close()
        if started:
            with contextlib.suppress(Exception):  # the registry may already be gone when a start failed
                await self.labels.save_frames()

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

    async def _consume(self, events: Any) -> None:
        """Uplinks from the bus. Labels' `shown` events come in bursts after a batch update: whatever is waiting
        is taken at once and the confirmations among it are written together, everything else in order."""
        async for first in events:
            burst = [first]
            while len(burst) < CONSUME_BURST and hasattr(events, "get_nowait"):
                try:
                    burst.append(events.get_nowait())
                except IndexError:
                    break
            await self.handle_many([e for e in burst if isinstance(e, Envelope)])

    async def handle_many(self, envelopes: list[Envelope]) -> None:
        shown = [e for e in envelopes if _is_shown(e)]
        if len(shown) > 1:
            try:
                await self.labels.confirmed_many(
                    [(e.device_id, e.payload["image_sha256"], int(e.payload.get("page", 0))) for e in shown]
                )
            except Exception:
                log.exception("retail: %d label confirmations failed", len(shown))
            envelopes = [e for e in envelopes if not _is_shown(e)]
        prices: list[Envelope] = []  # a run of prices typed on scales, written together in their order
        for envelope in envelopes:
            if _is_price_set(envelope):
                prices.append(envelope)
                continue
            if prices:
                await self.uplinks.handle_price_sets(prices)
                prices = []
            await self.uplinks.handle(envelope)
        if prices:
            await self.uplinks.handle_price_sets(prices)

    async def _every(self, seconds: float, work: Any) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("retail background work failed; trying again in %.1f s", seconds)
            await asyncio.sleep(seconds)


CONSUME_BURST = 500


def _is_shown(envelope: Envelope) -> bool:
    payload = envelope.payload
    return (str(envelope.kind) == "esl" and str(envelope.channel) == "event" and isinstance(payload, dict)
            and payload.get("type") == "shown" and isinstance(payload.get("image_sha256"), str))


def _is_price_set(envelope: Envelope) -> bool:
    payload = envelope.payload
    return (str(envelope.kind) == "scale" and str(envelope.channel) == "event" and isinstance(payload, dict)
            and payload.get("type") == "price_set")


def setup(sender: CommandSender, clock: Clock = utcnow, **options: Any) -> RetailService:
    return RetailService(sender, clock, **options)
