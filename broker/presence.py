"""Presence: which devices are online, and when each was last heard from.

Fed by the transports: `connected` / `disconnected` (embedded broker hooks), `status` (the retained
`up/status` message, and the last will `offline` that an external broker publishes for a device that vanished),
and `seen` on every uplink or keepalive ping. A state change publishes `PresenceChanged` on the EnvelopeBus at
once; the database (`Device.online`, `Device.last_seen`) is updated in batches every `flush_interval_s` — one
UPDATE per state and one for all devices seen in the interval (last_seen is therefore precise to that interval),
never one query per message.

The sweep marks a device offline when it has been silent for `silence_factor` (1.5) × its keepalive: the safety
net for a connection that died without a will reaching us (an ingest worker restarted, a half-open socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.bus import EnvelopeBus, PresenceChanged
from broker.directory import DeviceInfo, DeviceLookup
from fleet.models import Device

__all__ = ["PresenceTracker"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _State:
    online: bool
    last_seen: float  # time.time()
    keepalive_s: int
    market: str | None


class PresenceTracker:
    def __init__(
        self,
        bus: EnvelopeBus,
        directory: DeviceLookup | None = None,
        *,
        flush_interval_s: float = 2.0,
        sweep_interval_s: float = 5.0,
        silence_factor: float = 1.5,
        default_keepalive_s: int = 60,
        write_db: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.directory = directory
        self.flush_interval_s = flush_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.silence_factor = silence_factor
        self.default_keepalive_s = default_keepalive_s
        self.write_db = write_db
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._unknown: set[str] = set()  # seen before their keepalive/market were looked up
        self._dirty_online: dict[str, bool] = {}
        self._dirty_seen: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.changes = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.write_db:
            await self._load_online()
        self._task = asyncio.create_task(self._loop(), name="presence")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.flush()

    async def _load_online(self) -> None:
        """Devices the database says are online: tracked so the sweep can end them if they stay silent."""
        now = self._clock()
        try:
            rows = await Device.filter(online=True).values("id", "last_seen", "keepalive_s", "market_id")
        except Exception:
            log.exception("could not load online devices")
            return
        for row in rows:
            last_seen = row["last_seen"].timestamp() if row["last_seen"] else now
            self._states[row["id"]] = _State(True, last_seen, int(row["keepalive_s"]), row["market_id"])

    async def _loop(self) -> None:
        next_sweep = self._clock() + self.sweep_interval_s
        while True:
            await asyncio.sleep(min(self.flush_interval_s, self.sweep_interval_s))
            try:
                await self._resolve_unknown()
                if self._clock() >= next_sweep:
                    self.sweep()
                    next_sweep = self._clock() + self.sweep_interval_s
                await self.flush()
            except Exception:
                log.exception("presence flush/sweep failed; retrying")

    # ---------------------------------------------------------------- events from transports

    def is_online(self, device_id: str) -> bool:
        state = self._states.get(device_id)
        return state is not None and state.online

    def last_seen(self, device_id: str) -> datetime | None:
        state = self._states.get(device_id)
        return datetime.fromtimestamp(state.last_seen, UTC) if state is not None else None

    def online_count(self) -> int:
        return sum(1 for state in self._states.values() if state.online)

    def has_unflushed(self) -> bool:
        """True while state changes or last-seen times wait for the next database flush."""
        return bool(self._dirty_online or self._dirty_seen)

    def connected(self, info: DeviceInfo, reason: str = "connected") -> None:
        state = self._states.get(info.device_id)
        now = self._clock()
        if state is None:
            state = self._states[info.device_id] = _State(False, now, info.keepalive_s, info.market)
        state.keepalive_s, state.market, state.last_seen = info.keepalive_s, info.market, now
        self._dirty_seen.add(info.device_id)
        self._set(info.device_id, state, True, reason)

    def disconnected(self, device_id: str, reason: str = "disconnected") -> None:
        state = self._states.get(device_id)
        if state is not None:
            self._set(device_id, state, False, reason)

    def status(self, device_id: str, payload: bytes | str) -> None:
        """The device's `up/status` message: `online`, or `offline` (usually its last will)."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes | bytearray) else payload
        text = text.strip().lower()
        if text == "online":
            self.seen(device_id, reason="status")
        elif text == "offline":
            state = self._states.get(device_id)
            if state is None:
                state = self._states[device_id] = _State(True, self._clock(), self.default_keepalive_s, None)
                self._unknown.add(device_id)
            self._set(device_id, state, False, "will")
        else:
            log.debug("ignoring status %r from %s", text[:20], device_id)

    def seen(self, device_id: str, reason: str = "seen") -> None:
        """Any sign of life (uplink, ping, status); marks the device online if it was not."""
        state = self._states.get(device_id)
        now = self._clock()
        if state is None:
            state = self._states[device_id] = _State(False, now, self.default_keepalive_s, None)
            self._unknown.add(device_id)
        state.last_seen = now
        self._dirty_seen.add(device_id)
        if not state.online:
            self._set(device_id, state, True, reason)

    def forget(self, device_id: str) -> None:
        self._states.pop(device_id, None)

    def _set(self, device_id: str, state: _State, online: bool, reason: str) -> None:
        if state.online == online:
            return
        state.online = online
        self._dirty_online[device_id] = online
        self.changes += 1
        self.bus.publish(PresenceChanged(device_id, state.market, online, reason, datetime.now(UTC)))

    # ---------------------------------------------------------------- periodic work

    def sweep(self) -> list[str]:
        """Mark devices offline that were silent for silence_factor × keepalive; returns their ids."""
        now = self._clock()
        silent = [
            device_id
            for device_id, state in self._states.items()
            if state.online and now - state.last_seen > self.silence_factor * state.keepalive_s
        ]
        for device_id in silent:
            self._set(device_id, self._states[device_id], False, "silent")
        return silent

    async def _resolve_unknown(self) -> None:
        if not self._unknown or self.directory is None:
            return
        ids, self._unknown = list(self._unknown), set()
        infos = await self.directory.get_many(ids)
        for device_id, info in infos.items():
            state = self._states.get(device_id)
            if state is not None:
                state.keepalive_s, state.market = info.keepalive_s, info.market

    async def flush(self) -> None:
        """Write the state changes and last-seen times gathered since the previous flush."""
        if not self.write_db or (not self._dirty_online and not self._dirty_seen):
            self._dirty_online.clear()
            self._dirty_seen.clear()
            return
        online, self._dirty_online = self._dirty_online, {}
        seen, self._dirty_seen = self._dirty_seen, set()
        went_online = [d for d, v in online.items() if v]
        went_offline = [d for d, v in online.items() if not v]
        try:
            for chunk in _chunks(went_online):
                await Device.filter(id__in=chunk).update(online=True)
            for chunk in _chunks(went_offline):
                await Device.filter(id__in=chunk).update(online=False)
            stamp = datetime.now(UTC)
            for chunk in _chunks(sorted(seen)):
                await Device.filter(id__in=chunk).update(last_seen=stamp)
        except Exception:
            # Keep what was not written for the next round (newer changes win).
            for device_id, value in online.items():
                self._dirty_online.setdefault(device_id, value)
            self._dirty_seen |= seen
            raise


def _chunks(ids: list[str], size: int = 500) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]
