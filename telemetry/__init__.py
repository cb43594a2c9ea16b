"""Device telemetry storage: one `TelemetryStore` protocol, a SQLite and an InfluxDB backend.

A leaf package: it imports nothing from the rest of MarketFleet. Typical use::

    from telemetry import Reading, open_store

    async with open_store("influxdb", url=..., database="marketfleet", spool_dir="var/spool") as store:
        await store.write([Reading("dev-1", "env_sensor.telemetry", ts, {"temp_c": 21.5}, {"market": "m1"})])

See docs/telemetry.md for the shared semantics and each backend's specifics.
"""

from __future__ import annotations

from typing import Any, Literal

from telemetry.influx import InfluxStore
from telemetry.reading import Aggregate, FieldValue, Reading
from telemetry.spool import SpoolFull, SpoolStatus
from telemetry.sqlite import SqliteStore
from telemetry.store import (
    DownsampleEvery,
    StoreUnavailable,
    TelemetryError,
    TelemetryStore,
    WriteRejected,
)

__all__ = [
    "Aggregate",
    "DownsampleEvery",
    "FieldValue",
    "InfluxStore",
    "Reading",
    "SpoolFull",
    "SpoolStatus",
    "SqliteStore",
    "StoreUnavailable",
    "TelemetryError",
    "TelemetryStore",
    "WriteRejected",
    "open_store",
    "spool_status",
]


def spool_status(store: object) -> SpoolStatus | None:
    """The write spool's fill level of a store that has one (InfluxStore), else None."""
    status = getattr(store, "spool_status", None)
    return status() if callable(status) else None


def open_store(kind: Literal["sqlite", "influxdb"], **options: Any) -> TelemetryStore:
    """Build (not yet start) the configured backend; use it as `async with open_store(...) as store`.

    `options` are the backend's constructor arguments: `SqliteStore(path, ...)` or
    `InfluxStore(url, database, username, password, retention, spool_dir, ...)`.
    """
    if kind == "sqlite":
        return SqliteStore(**options)
    if kind == "influxdb":
        return InfluxStore(**options)
    raise ValueError(f"unknown telemetry store kind {kind!r} (expected 'sqlite' or 'influxdb')")
