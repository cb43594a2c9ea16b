"""The telemetry data model: one `Reading` per device sample, one `Aggregate` per downsampled bucket.

This module owns validation of what a reading may contain. Both backends accept exactly the
readings this module accepts, so a reading that works on SQLite in development also works on
InfluxDB in production (InfluxDB's line protocol is the narrower of the two, and sets the rules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "EPOCH",
    "RESERVED_FIELD_KEYS",
    "RESERVED_TAG_KEYS",
    "Aggregate",
    "FieldValue",
    "Reading",
    "from_epoch_ns",
    "from_epoch_us",
    "to_epoch_us",
]

FieldValue = float | int | bool | str

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

#: `device_id` is stored as a tag by every backend; InfluxDB rejects `time` as any key.
RESERVED_TAG_KEYS: Final = frozenset({"device_id", "time"})
#: `seq` is stored as a field by InfluxDB, so a field of that name would collide with `Reading.seq`;
#: a `device_id` field would shadow the tag of that name in InfluxQL results.
RESERVED_FIELD_KEYS: Final = frozenset({"seq", "time", "device_id"})

# Line protocol has no escape for these inside names/tag values: InfluxDB would store them as the
# two characters backslash + letter, so they would not round-trip.
_CONTROL_CHARS: Final = ("\n", "\r", "\t")


def to_epoch_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch; `ts` must be tz-aware (exact, no float rounding)."""
    return (ts - EPOCH) // _ONE_US


def from_epoch_us(us: int) -> datetime:
    """Inverse of `to_epoch_us`, always UTC."""
    return EPOCH + timedelta(microseconds=us)


def from_epoch_ns(ns: int) -> datetime:
    """UTC datetime from nanoseconds since the epoch (truncated to microseconds, as datetime is)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty str, got {name!r}")
    if name[-1] == "\\":
        # A trailing backslash would escape the line-protocol separator after it.
        raise ValueError(f"{kind} must not end with a backslash: {name!r}")
    for ch in _CONTROL_CHARS:
        if ch in name:
            raise ValueError(f"{kind} must not contain newline/CR/tab: {name!r}")


# Field keys, and names (device ids, measurements, tag keys and values), that passed the checks below: the same
# few come with every reading (ingest's hot path), so each is checked once and then found in a set.
_CHECKED_KEYS: set[str] = set()
_CHECKED_NAMES: set[str] = set()
_CHECKED_MAX: Final = 10_000
_NAMES_MAX: Final = 200_000  # device ids are among them


def _remember(key: str) -> None:
    if len(_CHECKED_KEYS) >= _CHECKED_MAX:
        _CHECKED_KEYS.clear()
    _CHECKED_KEYS.add(key)


def _check_known(kind: str, name: object) -> None:
    """`_check_name`, remembering names that pass (exact str only: a subclass could compare equal)."""
    if type(name) is str and name in _CHECKED_NAMES:
        return
    _check_name(kind, name)
    if type(name) is str:
        if len(_CHECKED_NAMES) >= _NAMES_MAX:
            _CHECKED_NAMES.clear()
        _CHECKED_NAMES.add(name)


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of one device channel.

    `ts` is normalised to UTC and kept at microsecond precision. A reading is identified by
    (device_id, measurement, tags, ts): writing another reading with the same identity merges its
    fields into the stored one (InfluxDB point semantics, mirrored by SQLite). `seq` is the
    device's own sequence number, kept for the ingest pipeline's de-duplication; stores never
    de-duplicate by it.
    """

    device_id: str
    measurement: str
    ts: datetime
    fields: dict[str, FieldValue]
    tags: dict[str, str] = field(default_factory=dict)
    seq: int | None = None

    def __post_init__(self) -> None:
        ts = self.ts
        if not isinstance(ts, datetime):
            raise TypeError(f"Reading.ts must be a datetime, got {type(ts).__name__}")
        tz = ts.tzinfo
        if tz is not UTC:
            if tz is None or ts.utcoffset() is None:
                raise ValueError(f"Reading.ts must be timezone-aware, got naive {ts!r}")
            object.__setattr__(self, "ts", ts.astimezone(UTC))
        _check_known("device_id", self.device_id)
        _check_known("measurement", self.measurement)
        if self.measurement[0] == "#":
            raise ValueError(f"measurement must not start with '#' (a line-protocol comment): {self.measurement!r}")
        fields = self.fields
        if not fields:
            raise ValueError("a Reading needs at least one field")
        for key, value in fields.items():
            if key not in _CHECKED_KEYS:
                _check_name("field key", key)
                if key in RESERVED_FIELD_KEYS:
                    raise ValueError(f"field key {key!r} is reserved")
                _remember(key)
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    raise ValueError(f"field {key!r} must be finite, got {value!r}")
            elif kind is int:
                if not _INT64_MIN <= value <= _INT64_MAX:
                    raise ValueError(f"field {key!r} does not fit in int64: {value!r}")
            elif kind is not bool and kind is not str:
                raise TypeError(f"field {key!r} must be float, int, bool or str, got {kind.__name__}")
        tags = self.tags
        if tags:
            for key, value in tags.items():
                _check_known("tag key", key)
                if type(value) is not str or value not in _CHECKED_NAMES:
                    _check_known(f"tag {key!r} value", value)
                if key in RESERVED_TAG_KEYS:
                    raise ValueError(f"tag key {key!r} is reserved")
            if not tags.keys().isdisjoint(fields):
                raise ValueError(f"keys used both as tag and field: {sorted(tags.keys() & fields.keys())}")
        seq = self.seq
        if seq is not None and (type(seq) is not int or not _INT64_MIN <= seq <= _INT64_MAX):
            raise ValueError(f"seq must be an int64 or None, got {seq!r}")


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Statistics of one numeric field over one time bucket `[bucket, bucket + every)`."""

    bucket: datetime
    field: str
    mean: float
    min: float
    max: float
    count: int
