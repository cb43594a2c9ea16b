"""Presence history for the device page: every online/offline change, kept in the telemetry store.

The presence tracker (`broker.presence`) keeps only the current state and `last_seen` in the registry; a change
is published on the bus as `PresenceChanged` and then gone. `PresenceLog` follows the bus (where ingest runs)
and writes each change as a reading of measurement `presence` (fields `online`, `reason`; tag `market`), so the
device page can list when a device came and went, and why (connected, disconnected, status, will, silent,
revoked), with the store's own retention. Changes are written in batches: a reconnect storm is a few writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from broker.bus import PresenceChanged, Subscription
from telemetry import Reading, TelemetryStore

__all__ = ["MEASUREMENT", "PresenceLog", "presence_history"]

log = logging.getLogger(__name__)

MEASUREMENT = "presence"
BATCH = 1_000
CLOSE_WAIT_S = 5.0


def reading_of(event: PresenceChanged) -> Reading:
    tags = {"market": event.market} if event.market else {}
    return Reading(device_id=event.device_id, measurement=MEASUREMENT, ts=event.at,
                   fields={"online": event.online, "reason": event.reason}, tags=tags)


class PresenceLog:
    """Writes the `PresenceChanged` events of one bus subscription to the store until closed."""

    def __init__(self, store: TelemetryStore, events: Subscription) -> None:
        self.store = store
        self.events = events
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-log")

    async def _run(self) -> None:
        async for first in self.events:
            batch = [first]
            while len(self.events) and len(batch) < BATCH:
                batch.append(self.events.get_nowait())
            readings = [reading_of(e) for e in batch if isinstance(e, PresenceChanged)]
            try:
                await self.store.write(readings)
            except Exception:  # the store is down or refused: history has a hole, presence itself goes on
                log.exception("presence history: %d changes not written", len(readings))
                continue
            self.written += len(readings)

    async def aclose(self) -> None:
        """Stop following the bus; what is buffered is still written (for a few seconds at most)."""
        self.events.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, CLOSE_WAIT_S)


async def presence_history(store: TelemetryStore, device_id: str, since: datetime, until: datetime,
                           shown: int) -> list[Reading]:
    """The device's last `shown` presence changes in [since, until], newest first."""
    found = await store.range(device_id, MEASUREMENT, since, until, limit=50_000)
    return list(reversed(found[-shown:]))
