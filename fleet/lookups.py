"""Cached device lookups: `GET …/devices/{id}` answered from memory (issue 11, SJZ section 4's cached lookups).

Each process keeps its own bounded cache (least recently used entries go first) of devices as their public
JSON. Scoping is applied to every answer, cached or not: an entry remembers the device's market and vendor, and
a caller outside them gets NotFound exactly as from the database.

Staleness:
- a change through this process's registry (`Registry.update_device`) drops the entry at once, and a lookup
  that read the database before the change cannot put its older copy back (the cache's version moved on);
- a change made by another process (another api process, presence and firmware versions written by the
  ingest role) is seen once the entry is older than `ttl_s` (`api.lookup_cache_ttl_s`, 2 s by default).
  Presence (`online`, `last_seen`) is itself written to the registry in periodic batches, so its lag is that
  batch interval plus at most `ttl_s`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from fleet.errors import NotFound
from fleet.models import Device
from fleet.schemas import DevicePublic

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded, per-process map whose entries expire `ttl_s` after they were read from the source.

    `max_entries == 0` or `ttl_s == 0` turns it off (every `get` misses, `put` keeps nothing).
    """

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._version = 0  # moves on at every invalidation (see `token`)
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None or found[0] <= self._clock():
            if found is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[1]

    def token(self) -> int:
        """Take before reading the source; `put` with it keeps the value only if nothing was invalidated since
        (a read that raced a change must not cache the state from before the change)."""
        return self._version

    def put(self, key: K, value: V, token: int) -> None:
        if not self.enabled or token != self._version:
            return
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._version += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._version += 1
        self._entries.clear()


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as the API shows it (DevicePublic's JSON) with what scoping needs."""

    id: str
    kind: str
    market_id: str | None
    vendor_id: int
    body: bytes


def device_cache(max_entries: int = 0, ttl_s: float = 0.0) -> TtlCache[str, DeviceView]:
    return TtlCache(max_entries, ttl_s)


async def device_view(
    cache: TtlCache[str, DeviceView], device_id: str, *, markets: Collection[str] | None = None,
    vendor_id: int | None = None,
) -> DeviceView:
    """The device as a person scoped to `markets` (None: all) or vendor `vendor_id` may see it; else NotFound
    (the same answer as for an unknown id, so ids cannot be probed)."""
    view = cache.get(device_id)
    if view is None:
        token = cache.token()
        device = await Device.get_or_none(id=device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} not found")
        view = DeviceView(device.id, str(device.kind), device.market_id,  # type: ignore[attr-defined]
                          device.vendor_id, DevicePublic.model_validate(device).model_dump_json().encode())
        cache.put(device_id, view, token)
    if (markets is not None and view.market_id not in markets) or (vendor_id is not None
                                                                   and view.vendor_id != vendor_id):
        raise NotFound(f"device {device_id!r} not found")
    return view
