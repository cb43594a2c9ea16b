"""How one validated device message becomes telemetry `Reading`s (the storage mapping of docs/ingest.md).

- measurement: `{kind}.telemetry`, `{kind}.state`, or `{kind}.event` (event type in the `event_type` tag);
- tags: `kind`, `market` (absent while the device has no market), `event_type` for events, and for a list of
  nested objects one tag naming the element (`compartment` for a locker's `compartments`, else `idx`);
- fields: the validated payload flattened: numbers, booleans and strings as they are (the schema's type, so a
  field never changes type between messages, which InfluxDB would refuse), Decimal → float, datetime → RFC 3339
  string, nested objects → `parent.child`, lists of scalars and free-form dicts → a JSON string. A key that is
  reserved by the store (`time`, `seq`) or clashes with a tag gets a trailing `_`;
- a list of nested objects (a locker's compartments) → one reading per element, carrying the element's fields
  and the message's other fields;
- time: `point_time(ts, seq)`: the device time truncated to the millisecond plus `seq % 1000` microseconds.
  A replayed message therefore maps to exactly the same (device_id, measurement, tags, time) identity and
  overwrites itself with identical fields: the store is idempotent per (device_id, seq[, element]) without
  any de-duplication of its own, on SQLite and InfluxDB alike. Two *different* messages of one device could
  only collide with 1,000 messages in one millisecond.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from pydantic import BaseModel

from telemetry import Reading

__all__ = ["ELEMENT_TAGS", "measurement_for", "point_time", "readings_for"]

_RESERVED: Final = frozenset({"time", "seq", "device_id"})
#: list field → the element field that becomes the element's tag (identity); others use the index.
ELEMENT_TAGS: Final[dict[str, str]] = {"compartments": "compartment"}
_ONE_MS: Final = timedelta(milliseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def point_time(ts: datetime, seq: int) -> datetime:
    """Deterministic store time of a message: device time to the ms, plus seq mod 1000 µs."""
    if ts.tzinfo is UTC:  # the usual case; seconds are whole ms, so flooring within the second is the same
        return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000 + seq % 1000)
    ms = (ts - _EPOCH) // _ONE_MS
    return _EPOCH + timedelta(microseconds=ms * 1000 + seq % 1000)


def measurement_for(kind: str, channel: str) -> str:
    return f"{kind}.{channel}"


def readings_for(
    device_id: str,
    kind: str,
    market: str | None,
    channel: str,
    seq: int,
    ts: datetime,
    payload: Any,
) -> list[Reading]:
    """Readings for one validated message (`payload` is what `fleet.kinds.validate_payload` returned).

    Raises ValueError (or TypeError) when a value cannot be stored (e.g. a non-finite float); the pipeline
    rejects the message as `schema` with that text.
    """
    tags = {"kind": kind}
    if market:
        tags["market"] = market
    fields: dict[str, Any] = {}
    elements: list[tuple[str, list[BaseModel]]] = []
    if channel == "event":
        event_type = getattr(payload, "type", None)
        if isinstance(event_type, str) and event_type:
            tags["event_type"] = event_type
    if isinstance(payload, BaseModel):
        _flatten(payload, "", fields, elements, skip="type" if "event_type" in tags else None)
    elif isinstance(payload, dict):
        _flatten_dict(payload, "", fields, elements)
    measurement = measurement_for(kind, channel)
    when = point_time(ts, seq)
    if not elements:
        if not fields:
            return []
        return [Reading(device_id, measurement, when, _safe_keys(fields, tags), tags, seq)]
    list_key, items = elements[0]
    for key, extra in elements[1:]:
        fields[key] = _json([_plain(item) for item in extra])
    tag_key = ELEMENT_TAGS.get(list_key, "idx")
    readings = []
    for index, item in enumerate(items):
        element_fields = dict(fields)
        nested: list[tuple[str, list[BaseModel]]] = []
        _flatten(item, "", element_fields, nested)
        for key, extra in nested:
            element_fields[key] = _json([_plain(x) for x in extra])
        element_tags = dict(tags)
        tag_value = element_fields.pop(tag_key, None) if tag_key != "idx" else None
        element_tags[tag_key] = str(tag_value) if tag_value is not None else str(index)
        readings.append(Reading(device_id, measurement, when, _safe_keys(element_fields, element_tags),
                                element_tags, seq))
    return readings


def _flatten(
    model: BaseModel,
    prefix: str,
    out: dict[str, Any],
    elements: list[tuple[str, list[BaseModel]]],
    skip: str | None = None,
) -> None:
    for name, value in model.__dict__.items():
        if value is None or name == skip:
            continue
        kind = type(value)
        if kind is float or kind is int or kind is str or kind is bool:  # `_put`'s first case, inline
            out[prefix + name] = value
        else:
            _put(prefix + name, value, out, elements)


def _flatten_dict(
    data: dict[str, Any], prefix: str, out: dict[str, Any], elements: list[tuple[str, list[BaseModel]]]
) -> None:
    for name, value in data.items():
        if value is None:
            continue
        _put(prefix + str(name), value, out, elements)


def _put(key: str, value: Any, out: dict[str, Any], elements: list[tuple[str, list[BaseModel]]]) -> None:
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool:
        out[key] = value
    elif isinstance(value, Enum):
        out[key] = value.value
    elif isinstance(value, Decimal):
        out[key] = float(value)
    elif isinstance(value, datetime):
        out[key] = value.isoformat()
    elif isinstance(value, BaseModel):
        _flatten(value, key + ".", out, elements)
    elif isinstance(value, list | tuple):
        if value and all(isinstance(item, BaseModel) for item in value):
            elements.append((key, list(value)))
        else:
            out[key] = _json([_plain(item) for item in value])
    elif isinstance(value, dict):
        out[key] = _json(_plain(value))
    else:
        out[key] = str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def _safe_keys(fields: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    if _RESERVED.isdisjoint(fields) and tags.keys().isdisjoint(fields):
        return fields
    safe: dict[str, Any] = {}
    for key, value in fields.items():
        while key in _RESERVED or key in tags or key in safe:
            key += "_"
        safe[key] = value
    return safe
