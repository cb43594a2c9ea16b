"""Reading validation: what every backend can store and give back unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from telemetry.reading import Reading, from_epoch_ns, from_epoch_us, to_epoch_us

TS = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make(**overrides: object) -> Reading:
    args: dict[str, object] = {
        "device_id": "dev-1",
        "measurement": "env_sensor.telemetry",
        "ts": TS,
        "fields": {"temp_c": 21.5},
    }
    args.update(overrides)
    return Reading(**args)  # type: ignore[arg-type]


def test_defaults_and_equality() -> None:
    r = make()
    assert r.tags == {} and r.seq is None
    assert r == make()


def test_ts_is_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    r = make(ts=datetime(2026, 3, 1, 13, 0, tzinfo=cet))
    assert r.ts == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert r.ts.tzinfo is UTC


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"ts": datetime(2026, 3, 1)}, ValueError),  # naive
        ({"ts": "2026-03-01T00:00:00Z"}, TypeError),
        ({"device_id": ""}, ValueError),
        ({"device_id": "ends-with\\"}, ValueError),
        ({"device_id": "new\nline"}, ValueError),
        ({"measurement": "#comment"}, ValueError),
        ({"fields": {}}, ValueError),
        ({"fields": {"x": float("nan")}}, ValueError),
        ({"fields": {"x": float("inf")}}, ValueError),
        ({"fields": {"x": 2**63}}, ValueError),
        ({"fields": {"x": None}}, TypeError),
        ({"fields": {"x": [1]}}, TypeError),
        ({"fields": {"seq": 1}}, ValueError),
        ({"fields": {"time": 1}}, ValueError),
        ({"fields": {"device_id": "x"}}, ValueError),
        ({"tags": {"device_id": "x"}}, ValueError),
        ({"tags": {"market": ""}}, ValueError),
        ({"tags": {"market": "tab\there"}}, ValueError),
        ({"tags": {"temp_c": "x"}}, ValueError),  # both tag and field
        ({"seq": 1.5}, ValueError),
        ({"seq": True}, ValueError),
    ],
)
def test_rejects_what_a_backend_could_not_round_trip(overrides: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        make(**overrides)


def test_accepts_awkward_but_representable_values() -> None:
    r = make(
        device_id='it\'s "quoted" \\ back,slash=eq space',
        fields={"a b": -(2**63), "ok": True, "note": 'say "hi"\n', "f": 0.0},
        tags={"marché": "Saint-Étienne 🍅"},
        seq=2**63 - 1,
    )
    assert r.fields["ok"] is True


def test_epoch_conversions_are_exact() -> None:
    us = to_epoch_us(TS)
    assert from_epoch_us(us) == TS
    assert from_epoch_ns(us * 1000 + 999) == TS
    before_1970 = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert to_epoch_us(before_1970) == -1
    assert from_epoch_us(-1) == before_1970
