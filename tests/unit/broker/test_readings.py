"""How validated messages become readings: measurement, tags, flattened fields, deterministic time."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from broker.readings import point_time, readings_for
from fleet.kinds import CATALOG, validate_payload

pytestmark = pytest.mark.timeout(30)

TS = datetime(2026, 11, 23, 8, 15, 2, 123456, tzinfo=UTC)


def test_point_time_is_device_ms_plus_seq_micros() -> None:
    assert point_time(TS, 5) == datetime(2026, 11, 23, 8, 15, 2, 123005, tzinfo=UTC)
    assert point_time(TS, 1005) == point_time(TS, 5)  # only 1,000 messages in one ms could collide
    assert point_time(TS, 6) != point_time(TS, 5)


def test_telemetry_reading_has_kind_market_tags_and_schema_types() -> None:
    payload = validate_payload("env_sensor", "telemetry", {"temperature_c": 4, "humidity_pct": 81})
    [reading] = readings_for("acme-1", "env_sensor", "M1", "telemetry", 3, TS, payload)
    assert reading.measurement == "env_sensor.telemetry"
    assert reading.tags == {"kind": "env_sensor", "market": "M1"}
    assert reading.fields == {"temperature_c": 4.0, "humidity_pct": 81.0}
    assert type(reading.fields["temperature_c"]) is float  # the schema's type, stable for InfluxDB
    assert reading.seq == 3


def test_event_type_becomes_a_tag_and_reserved_keys_are_renamed() -> None:
    payload = validate_payload("scale", "event", {
        "type": "transaction", "order_no": "1", "time": "2026-11-23T08:00:00Z", "market_code": "M1",
        "stall_no": "A1", "scale_id": "s", "product_name": "leek", "weight_kg": "1.250", "unit_price": "3.00",
        "total": "3.75",
    })
    [reading] = readings_for("acme-1", "scale", None, "event", 1, TS, payload)
    assert reading.measurement == "scale.event"
    assert reading.tags == {"kind": "scale", "event_type": "transaction"}
    assert "type" not in reading.fields
    assert reading.fields["time_"] == "2026-11-23T08:00:00+00:00"
    assert reading.fields["weight_kg"] == 1.25 and reading.fields["total"] == 3.75


def test_locker_compartments_become_one_reading_each() -> None:
    payload = validate_payload("cold_locker", "telemetry", {"compartments": [
        {"compartment": 1, "temperature_c": 4, "door": "open"},
        {"compartment": 7, "temperature_c": 2.5, "door": "closed_locked"},
    ]})
    readings = readings_for("acme-1", "cold_locker", "M1", "telemetry", 9, TS, payload)
    assert [r.tags["compartment"] for r in readings] == ["1", "7"]
    assert readings[1].fields == {"temperature_c": 2.5, "door": "closed_locked"}
    assert len({(r.measurement, tuple(sorted(r.tags.items())), r.ts) for r in readings}) == 2


def test_lists_of_scalars_are_json_strings_and_empty_state_stores_nothing() -> None:
    payload = validate_payload("esl", "state", {"resolution": [296, 128], "colours": "bwr"})
    [reading] = readings_for("acme-1", "esl", None, "state", 1, TS, payload)
    assert reading.fields["resolution"] == "[296,128]"
    empty = validate_payload("env_sensor", "state", {})  # Health: every field optional
    assert readings_for("acme-1", "env_sensor", None, "state", 2, TS, empty) == []


def test_non_finite_numbers_are_refused() -> None:
    payload = validate_payload("scale", "event", {"type": "calibrated", "reference_kg": 1, "measured_kg": "nan"})
    with pytest.raises(ValueError, match="finite"):
        readings_for("acme-1", "scale", None, "event", 1, TS, payload)


def _storage_type(annotation: Any) -> str:
    """The field type a value of this annotation is stored as (broker/readings.py's flattening)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return "|".join(sorted({_storage_type(a) for a in args}))
    if origin is typing.Annotated:
        return _storage_type(args[0])
    if origin is typing.Literal:
        return "str"
    if annotation in (float, Decimal):
        return "float"
    if annotation in (str, datetime) or origin in (list, tuple, dict):
        return "str"
    return getattr(annotation, "__name__", repr(annotation))


def _field_types(model: type[BaseModel]) -> dict[str, str]:
    return {name: _storage_type(info.annotation) for name, info in model.model_fields.items()}


def test_event_types_of_one_kind_never_give_a_field_two_types() -> None:
    """All event types of a kind share the `{kind}.event` measurement; InfluxDB needs one type per field."""
    for spec in CATALOG.values():
        if spec.event is None:
            continue
        union = typing.get_args(spec.event)[0]
        members = typing.get_args(union) or (union,)
        seen: dict[str, tuple[str, str]] = {}
        for member in members:
            for name, annotation in _field_types(member).items():
                if name == "type":
                    continue
                if name in seen:
                    assert seen[name][0] == annotation, (spec.kind, name, seen[name][1], member.__name__)
                else:
                    seen[name] = (annotation, member.__name__)


@settings(max_examples=500, deadline=None)
@given(ts=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5))])),
       seq=st.integers(0, 2**63 - 1))
def test_point_time_is_the_ms_floor_plus_seq_micros_in_any_zone(ts: datetime, seq: int) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ms = (ts - epoch) // timedelta(milliseconds=1)
    assert point_time(ts, seq) == epoch + timedelta(microseconds=ms * 1000 + seq % 1000)
