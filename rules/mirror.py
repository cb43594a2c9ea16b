"""`AlertMirror`: the alert stream of a process that does not run the engine, fed from the registry.

When the platform runs in roles (an API process apart from the ingest processes, docs/scale-out.md), alerts
are opened by the engine where ingest runs, but dashboards hold their server-sent event streams open on the
API process. The mirror tails `alert_event` (the handling archive every change writes, in every process) and
publishes each new step on this process's `AlertStream`; the process then announces nothing directly, so a
change made here (an acknowledgement) is not announced twice.

Ids are not committed in order across processes (PostgreSQL), so each poll looks back over the last
`LOOKBACK` ids and skips the ones already announced.
"""

from __future__ import annotations

import logging
from collections import deque

from rules.alerts import public
from rules.background import Repeating
from rules.models import AlertEvent
from rules.stream import AlertStream

__all__ = ["AlertMirror"]

log = logging.getLogger(__name__)
ANNOUNCED = {"opened", "acknowledged", "assigned", "commented", "escalated", "resolved"}  # as the stream names them
LOOKBACK = 200
BATCH = 500


class AlertMirror:
    def __init__(self, stream: AlertStream, *, interval: float = 0.5) -> None:
        self.stream = stream
        self._last = 0
        self._seen: deque[int] = deque(maxlen=4 * LOOKBACK)
        self._seen_set: set[int] = set()
        self._loop = Repeating(self.poll, interval, "rules-alert-mirror")

    async def start(self) -> None:
        # Only what happens from now on: the history is in the API, not worth replaying to live streams.
        latest = await AlertEvent.all().order_by("-id").limit(1).values_list("id", flat=True)
        self._last = int(latest[0]) if latest else 0
        for event_id in range(max(0, self._last - LOOKBACK) + 1, self._last + 1):
            self._remember(event_id)
        self._loop.start()

    async def aclose(self) -> None:
        await self._loop.stop()

    async def poll(self) -> int:
        """Announce the steps written since the last poll; returns how many were announced."""
        rows = await AlertEvent.filter(id__gt=max(0, self._last - LOOKBACK)).order_by("id").limit(BATCH) \
            .prefetch_related("alert")
        announced = 0
        for row in rows:
            if row.id in self._seen_set:
                continue
            self._remember(row.id)
            self._last = max(self._last, row.id)
            if row.action in ANNOUNCED:
                self.stream.publish(f"alert.{row.action}", public(row.alert), comment=row.comment)
                announced += 1
        return announced

    def _remember(self, event_id: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(event_id)
        self._seen_set.add(event_id)
