"""Persistence of the engine's state in the `rule_state` table: loaded once at start, written in batches.

Phase changes (a for-duration started, an alert firing, a clear pending) are written within
`flush_interval` of the change; auxiliary state that moves with nearly every reading (a rate's last value,
baseline samples, the last time data was seen) every `aux_interval`, and always on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from rules.background import Repeating
from rules.engine import RuleEngine
from rules.models import RuleState

__all__ = ["StateStore"]

log = logging.getLogger(__name__)
_SEP = "\x1f"
_CHUNK = 500


def _key(slot: str, rule_id: str, device_id: str, element: str) -> str:
    return _SEP.join((slot, rule_id, device_id, element))


class StateStore:
    def __init__(self, engine: RuleEngine, *, flush_interval: float = 0.5, aux_interval: float = 30.0) -> None:
        self.engine = engine
        self.flush_interval, self.aux_interval = flush_interval, aux_interval
        self._lock = asyncio.Lock()
        self._last_aux = 0.0
        self._writer = Repeating(self._step, flush_interval, "rules-state-flush")

    async def load(self) -> list[tuple[str, str, str]]:
        """Restore the engine from the table; returns the keys the engine believes are firing."""
        rows: list[tuple[str, str, str, str, Any]] = []
        for row in await RuleState.all():
            parts = row.key.split(_SEP)
            if len(parts) == 4:
                rows.append((parts[0], parts[1], parts[2], parts[3], row.data))
        firing = self.engine.restore(rows)
        await self.flush(include_aux=False)  # rows of rules that no longer exist
        return firing

    async def flush(self, include_aux: bool = True) -> int:
        """Write what changed; returns the number of rows written or deleted."""
        async with self._lock:
            upserts, deletes, dropped = self.engine.take_dirty(include_aux)
            try:
                return await self._write(upserts, deletes, dropped)
            except BaseException:
                self.engine.requeue(upserts, deletes, dropped)  # written next time
                raise

    async def _write(self, upserts: list[tuple[str, str, str, str, Any]], deletes: list[tuple[str, str, str, str]],
                     dropped: set[str]) -> int:
        if dropped:
            await RuleState.filter(rule_id__in=sorted(dropped)).delete()
        delete_keys = [_key(*row) for row in deletes]
        for start in range(0, len(delete_keys), _CHUNK):
            await RuleState.filter(key__in=delete_keys[start:start + _CHUNK]).delete()
        now = datetime.now(UTC)
        objects = {}
        for slot, rule_id, device_id, element, data in upserts:
            key = _key(slot, rule_id, device_id, element)
            objects[key] = RuleState(key=key, rule_id=rule_id, data=data, updated_at=now)
        rows = list(objects.values())
        for start in range(0, len(rows), _CHUNK):
            await RuleState.bulk_create(rows[start:start + _CHUNK], on_conflict=["key"],
                                        update_fields=["data", "updated_at"])
        return len(rows) + len(delete_keys)

    async def _step(self) -> None:
        now = time.monotonic()
        include_aux = now - self._last_aux >= self.aux_interval
        await self.flush(include_aux)  # a failure is logged by Repeating; the rows are written next time
        if include_aux:
            self._last_aux = now

    async def start(self) -> None:
        self._last_aux = time.monotonic()
        self._writer.start()

    async def aclose(self) -> None:
        await self._writer.stop()
        await self.flush(include_aux=True)
