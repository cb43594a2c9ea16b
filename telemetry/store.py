"""The `TelemetryStore` protocol every backend implements, and the errors every backend raises.

Backends translate their driver's errors into this hierarchy exactly once, at their edge, so
callers handle `StoreUnavailable` (retry later / back-pressure) and `TelemetryError` (a bug or bad
data: don't retry the same input) without knowing which backend is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable

from telemetry.reading import Aggregate, Reading

__all__ = [
    "DownsampleEvery",
    "StoreUnavailable",
    "TelemetryError",
    "TelemetryStore",
    "WriteRejected",
]

DownsampleEvery = Literal["1m", "1h"]


class TelemetryError(Exception):
    """Base class of every error the telemetry package raises on purpose."""


class StoreUnavailable(TelemetryError):
    """The backend cannot take the request now (down, timing out, spool full); retrying later may work."""


class WriteRejected(TelemetryError):
    """The backend refused the data itself (e.g. a field type conflict); retrying the same batch won't help.

    `line` is the offending line protocol / reading description when the backend names one.
    Other readings of the same batch may have been stored (InfluxDB writes the valid points of a
    partially bad batch); re-writing them is harmless because identical readings merge.
    """

    def __init__(self, message: str, *, line: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.status = status


@runtime_checkable
class TelemetryStore(Protocol):
    """Time-series storage of device readings.

    Shared semantics (checked by tests/integration/telemetry/test_store_contract.py):

    - Time ranges are half-open, `start <= ts < end`; results are ordered by `ts` ascending.
    - `write` is durable when it returns; the store never de-duplicates by `seq`.
    - A reading's identity is (device_id, measurement, tags, ts); re-writing it merges fields.
    - After `set_retention(days)`, readings older than `days` are dropped, at write time or by
      the backend's periodic clean-up.
    - Stores are async context managers; `start()` (or `async with`) must run before use.
    """

    async def start(self) -> None:
        """Open connections/files; idempotent."""
        ...

    async def write(self, readings: Sequence[Reading]) -> None:
        """Store `readings`; durable once this returns (the pipeline acks devices after it)."""
        ...

    async def range(
        self, device_id: str, measurement: str, start: datetime, end: datetime, limit: int = 10000
    ) -> list[Reading]:
        """Readings of one device channel with `start <= ts < end`, oldest first, at most `limit`."""
        ...

    async def latest(
        self, device_ids: Sequence[str] | None = None, measurement: str | None = None
    ) -> dict[str, Reading]:
        """The newest reading per device (optionally only of `measurement`); devices with none are absent."""
        ...

    async def downsample(
        self,
        device_id: str,
        measurement: str,
        field: str,
        start: datetime,
        end: datetime,
        every: DownsampleEvery,
    ) -> list[Aggregate]:
        """Per-bucket mean/min/max/count of a numeric field; epoch-aligned buckets, empty ones omitted."""
        ...

    async def count(self, device_id: str | None = None, measurement: str | None = None) -> int:
        """Number of stored readings matching the filters."""
        ...

    async def set_retention(self, days: int) -> None:
        """Keep readings for `days` days (>= 1); older ones are dropped."""
        ...

    def export(self, batch: int = 5000) -> AsyncIterator[list[Reading]]:
        """Every stored reading, in batches of at most `batch` (for backups; order is the backend's own)."""
        ...

    async def aclose(self) -> None:
        """Release every resource; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
