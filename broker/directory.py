"""`DeviceDirectory`: what the transports and the ingest pipeline need to know about a device, cached.

Ingest must not query the registry per message, so device facts (kind, market, status, keepalive) are kept
in a dict in front of `fleet.models.Device`. Entries expire after `ttl_s` as a safety net, and are dropped at
once when the registry reports a change (`credential_issued`, `credential_revoked`, `device_changed`: the
directory is a `fleet.registry.CredentialListener`). Unknown ids are cached briefly too (`negative_ttl_s`), so
a device hammering with a wrong id costs one query per few seconds, not one per message.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.models import Device, DeviceStatus

__all__ = ["DeviceDirectory", "DeviceInfo", "DeviceLookup", "StaticDirectory"]

_CHUNK = 500  # ids per IN (...) query: well under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    kind: str
    market: str | None
    status: str = DeviceStatus.ACTIVE.value
    keepalive_s: int = 60

    @property
    def active(self) -> bool:
        return self.status == DeviceStatus.ACTIVE.value

    @classmethod
    def from_device(cls, device: Device) -> DeviceInfo:
        return cls(
            device_id=device.id,
            kind=str(getattr(device.kind, "value", device.kind)),
            market=device.market_id,  # type: ignore[attr-defined]
            status=str(getattr(device.status, "value", device.status)),
            keepalive_s=device.keepalive_s,
        )


class DeviceLookup(Protocol):
    """What the pipeline asks: facts for a set of device ids; unknown ids are absent from the answer."""

    async def get_many(self, device_ids: Collection[str]) -> dict[str, DeviceInfo]: ...


class DeviceDirectory:
    """Cache of `DeviceInfo` loaded from the registry database (tortoise must be initialised)."""

    def __init__(self, *, ttl_s: float = 300.0, negative_ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._entries: dict[str, tuple[float, DeviceInfo | None]] = {}
        self.loads = 0  # database queries made (for tests and metrics)

    async def get(self, device_id: str) -> DeviceInfo | None:
        return (await self.get_many((device_id,))).get(device_id)

    async def get_many(self, device_ids: Collection[str]) -> dict[str, DeviceInfo]:
        now = time.monotonic()
        found: dict[str, DeviceInfo] = {}
        missing: list[str] = []
        entries = self._entries
        for device_id in device_ids:
            entry = entries.get(device_id)
            if entry is not None and entry[0] > now:
                if entry[1] is not None:
                    found[device_id] = entry[1]
            else:
                missing.append(device_id)
        if missing:
            loaded = await self._load(missing)
            for device_id in missing:
                info = loaded.get(device_id)
                ttl = self.ttl_s if info is not None else self.negative_ttl_s
                entries[device_id] = (now + ttl, info)
                if info is not None:
                    found[device_id] = info
        return found

    async def _load(self, device_ids: list[str]) -> dict[str, DeviceInfo]:
        result: dict[str, DeviceInfo] = {}
        unique = list(dict.fromkeys(device_ids))
        for start in range(0, len(unique), _CHUNK):
            self.loads += 1
            rows: Iterable[dict[str, Any]] = await Device.filter(id__in=unique[start : start + _CHUNK]).values(
                "id", "kind", "market_id", "status", "keepalive_s"
            )
            for row in rows:
                result[row["id"]] = DeviceInfo(
                    device_id=row["id"],
                    kind=str(getattr(row["kind"], "value", row["kind"])),
                    market=row["market_id"],
                    status=str(getattr(row["status"], "value", row["status"])),
                    keepalive_s=int(row["keepalive_s"]),
                )
        return result

    def put(self, info: DeviceInfo) -> None:
        """Prime the cache with facts just read elsewhere (e.g. by the broker's auth check)."""
        self._entries[info.device_id] = (time.monotonic() + self.ttl_s, info)

    def invalidate(self, device_id: str | None = None) -> None:
        """Forget one device (or everything): the next lookup reads the registry again."""
        if device_id is None:
            self._entries.clear()
        else:
            self._entries.pop(device_id, None)

    # ---------------------------------------------------------------- fleet.registry.CredentialListener

    async def credential_issued(self, device: Device, secret: str) -> None:
        self.invalidate(device.id)

    async def credential_revoked(self, device: Device) -> None:
        self.invalidate(device.id)

    async def device_changed(self, device: Device) -> None:
        """Market, status or keepalive changed (the registry should call this; see docs/ingest.md)."""
        self.invalidate(device.id)


class StaticDirectory:
    """A fixed set of devices (for tools and tests that run the pipeline without a registry)."""

    def __init__(self, devices: Iterable[DeviceInfo] = ()) -> None:
        self.devices = {d.device_id: d for d in devices}

    async def get_many(self, device_ids: Collection[str]) -> dict[str, DeviceInfo]:
        return {i: self.devices[i] for i in device_ids if i in self.devices}
