"""The TelemetryStore contract, run against every backend (SQLite file, real InfluxDB 1.x).

Anything asserted here holds for both backends; backend-only behaviour lives in its own tests.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import mean

import pytest

from telemetry import Aggregate, Reading, TelemetryError, TelemetryStore
from tests.factories import STORE_BACKENDS, telemetry_store

pytestmark = pytest.mark.timeout(120)

M = "env_sensor.telemetry"
# Recent enough for any retention the tests set, hour-aligned so bucket edges are predictable.
T0 = (datetime.now(UTC) - timedelta(hours=12)).replace(minute=0, second=0, microsecond=0)
FAR = T0 + timedelta(days=2)


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TelemetryStore]:
    async with telemetry_store(request, tmp_path, "contract") as s:
        yield s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(device: str, seconds: float, value: float, measurement: str = M, **extra: object) -> Reading:
    return Reading(device, measurement, at(seconds), {"temp_c": value}, **extra)  # type: ignore[arg-type]


async def test_write_then_range_round_trips_every_field_type(store: TelemetryStore) -> None:
    written = [
        Reading(
            "dev-1",
            M,
            at(1.000001),
            {"temp_c": 21.0, "rssi": -71, "door_open": False, "fw": "1.2.3"},
            {"market": "north", "kind": "env_sensor"},
            seq=1,
        ),
        Reading(
            "dev-1",
            M,
            at(2),
            {"temp_c": 21.5, "rssi": -70, "door_open": True, "fw": 'say "hi"'},
            {"market": "north", "kind": "env_sensor"},
            seq=2,
        ),
        Reading("dev-1", M, at(3), {"temp_c": 0.1}),
    ]
    await store.write(written)
    got = await store.range("dev-1", M, T0, FAR)
    assert got == written
    assert type(got[0].fields["temp_c"]) is float and type(got[0].fields["rssi"]) is int
    assert got[0].ts.tzinfo is UTC


async def test_range_is_half_open_ordered_and_limited(store: TelemetryStore) -> None:
    rs = [reading("dev-1", s, float(s)) for s in range(10)]
    shuffled = rs[:]
    random.Random(7).shuffle(shuffled)
    await store.write(shuffled)
    assert await store.range("dev-1", M, at(2), at(7)) == rs[2:7]
    assert await store.range("dev-1", M, T0, FAR, limit=3) == rs[:3]
    assert await store.range("dev-1", M, at(9.5), FAR) == []
    with pytest.raises(ValueError):
        await store.range("dev-1", M, T0, FAR, limit=0)


async def test_range_selects_one_device_and_measurement(store: TelemetryStore) -> None:
    await store.write(
        [
            reading("dev-1", 1, 1.0),
            reading("dev-2", 1, 2.0),
            reading("dev-1", 2, 3.0, measurement="scale.weight"),
            reading("dev-10", 3, 4.0),
        ]
    )
    assert [r.fields["temp_c"] for r in await store.range("dev-1", M, T0, FAR)] == [1.0]
    assert [r.fields["temp_c"] for r in await store.range("dev-1", "scale.weight", T0, FAR)] == [3.0]
    assert await store.range("nobody", M, T0, FAR) == []


HOSTILE_IDS = [
    "it's",
    'say "hi"',
    "back\\slash",
    "a,b=c d",
    "'; DROP DATABASE x; --",
    "x' OR \"device_id\" =~ /.*/ OR 'a'='a",
    "dev-1",
]


async def test_device_ids_are_data_not_query_syntax(store: TelemetryStore) -> None:
    await store.write([reading(d, i, float(i)) for i, d in enumerate(HOSTILE_IDS)])
    for i, device in enumerate(HOSTILE_IDS):
        got = await store.range(device, M, T0, FAR)
        assert [(r.device_id, r.fields["temp_c"]) for r in got] == [(device, float(i))]
        assert await store.count(device_id=device) == 1
    latest = await store.latest(HOSTILE_IDS[:3])
    assert sorted(latest) == sorted(HOSTILE_IDS[:3])
    assert sorted(await store.latest()) == sorted(HOSTILE_IDS)


async def test_unicode_ids_tags_measurements_and_fields(store: TelemetryStore) -> None:
    r = Reading(
        "capteur-é-🍅",
        "température.canal",
        at(5),
        {"degrés": 19.5, "état": "ouvert"},
        {"marché": "Saint-Étienne 🍅", "stand": "n°7"},
        seq=3,
    )
    await store.write([r])
    assert await store.range(r.device_id, r.measurement, T0, FAR) == [r]
    assert (await store.latest([r.device_id]))[r.device_id] == r
    (agg,) = await store.downsample(r.device_id, r.measurement, "degrés", T0, FAR, "1h")
    assert agg.mean == 19.5


async def test_a_lone_surrogate_in_a_string_does_not_refuse_the_batch(store: TelemetryStore) -> None:
    """JSON may carry a lone surrogate ("\\ud800"), which is not UTF-8: the batch is stored, the odd string kept
    (exactly by SQLite, as its escape text by InfluxDB, whose line protocol is UTF-8)."""
    odd = Reading("odd-dev", "env", at(1), {"note": "a\ud800b", "t": 1.5}, {"stall": "x\udfff"}, seq=1)
    plain = Reading("odd-dev", "env", at(2), {"note": "fine", "t": 2.5}, {"stall": "y"}, seq=2)
    await store.write([odd, plain])
    stored = await store.range("odd-dev", "env", T0, FAR)
    assert len(stored) == 2 and stored[1] == plain
    assert stored[0].fields["t"] == 1.5 and stored[0].fields["note"] in ("a\ud800b", "a\\ud800b")


async def test_latest_per_device(store: TelemetryStore) -> None:
    await store.write(
        [
            reading("dev-1", 10, 1.0),
            reading("dev-1", 30, 2.0),
            reading("dev-1", 20, 3.0, measurement="scale.weight"),
            reading("dev-1", 40, 4.0, measurement="scale.weight"),
            reading("dev-2", 5, 5.0),
            reading("dev-3", 50, 6.0, measurement="scale.weight"),
        ]
    )
    latest = await store.latest()
    assert {d: (r.measurement, r.ts, r.fields["temp_c"]) for d, r in latest.items()} == {
        "dev-1": ("scale.weight", at(40), 4.0),
        "dev-2": (M, at(5), 5.0),
        "dev-3": ("scale.weight", at(50), 6.0),
    }
    by_measurement = await store.latest(measurement=M)
    assert {d: r.fields["temp_c"] for d, r in by_measurement.items()} == {"dev-1": 2.0, "dev-2": 5.0}
    some = await store.latest(["dev-2", "dev-3", "unknown"], measurement=M)
    assert list(some) == ["dev-2"]
    assert await store.latest([]) == {}
    assert await store.latest(measurement="no.such") == {}


async def test_latest_for_many_devices(store: TelemetryStore) -> None:
    ids = [f"dev-{i:04d}" for i in range(450)]  # more than one InfluxQL query's worth
    await store.write([reading(d, s, float(s)) for d in ids for s in (1, 2)])
    latest = await store.latest([*ids, "unknown"])
    assert sorted(latest) == ids
    assert {r.ts for r in latest.values()} == {at(2)}


async def test_latest_returns_the_whole_newest_reading(store: TelemetryStore) -> None:
    await store.write(
        [
            Reading("dev-1", M, at(1), {"temp_c": 1.0, "humidity": 40.0}, {"market": "north"}, seq=1),
            Reading("dev-1", M, at(2), {"temp_c": 2.0}, {"market": "north"}, seq=2),
        ]
    )
    assert (await store.latest(["dev-1"]))["dev-1"] == Reading(
        "dev-1", M, at(2), {"temp_c": 2.0}, {"market": "north"}, seq=2
    )


async def test_downsample_per_minute_and_hour(store: TelemetryStore) -> None:
    # Every 20 s for 2.5 h: 3 per minute, 180 per full hour.
    values = {s: float((s // 20) % 11) for s in range(0, 9000, 20)}
    await store.write([reading("dev-1", s, v) for s, v in values.items()])
    await store.write([reading("dev-2", 0, 1000.0)])  # other devices don't leak in

    per_minute = await store.downsample("dev-1", M, "temp_c", at(60), at(240), "1m")
    assert [a.bucket for a in per_minute] == [at(60), at(120), at(180)]
    first = [values[s] for s in (60, 80, 100)]
    assert per_minute[0] == Aggregate(at(60), "temp_c", mean(first), min(first), max(first), 3)

    hourly = await store.downsample("dev-1", M, "temp_c", T0, FAR, "1h")
    assert [(a.bucket, a.count) for a in hourly] == [(at(0), 180), (at(3600), 180), (at(7200), 90)]
    hour2 = [v for s, v in values.items() if 3600 <= s < 7200]
    assert hourly[1].mean == pytest.approx(mean(hour2))
    assert (hourly[1].min, hourly[1].max) == (min(hour2), max(hour2))

    # The range cuts into buckets: only readings inside it count, buckets stay epoch-aligned.
    partial = await store.downsample("dev-1", M, "temp_c", at(30 * 60), at(90 * 60), "1h")
    assert [(a.bucket, a.count) for a in partial] == [(at(0), 90), (at(3600), 90)]


async def test_downsample_of_nothing_numeric_is_empty(store: TelemetryStore) -> None:
    await store.write([Reading("dev-1", M, at(1), {"temp_c": 1.0, "state": "ok", "open": True})])
    assert await store.downsample("dev-1", M, "state", T0, FAR, "1m") == []
    assert await store.downsample("dev-1", M, "open", T0, FAR, "1m") == []
    assert await store.downsample("dev-1", M, "missing", T0, FAR, "1m") == []
    assert await store.downsample("dev-1", "no.such", "temp_c", T0, FAR, "1m") == []
    assert await store.downsample("dev-1", M, "temp_c", at(2), FAR, "1m") == []
    with pytest.raises(ValueError):
        await store.downsample("dev-1", M, "temp_c", T0, FAR, "5m")  # type: ignore[arg-type]


async def test_writing_n_readings_counts_n(store: TelemetryStore) -> None:
    n = 12_345  # more than one InfluxDB batch
    await store.write(
        [Reading(f"dev-{i % 50}", M if i % 3 else "scale.weight", at(i), {"temp_c": float(i)}, seq=i) for i in range(n)]
    )
    await store.write([])
    assert await store.count() == n
    assert await store.count(device_id="dev-7") == len(range(7, n, 50))
    assert await store.count(measurement="scale.weight") == len(range(0, n, 3))
    assert await store.count(device_id="dev-3", measurement="scale.weight") == len(range(3, n, 150))
    assert await store.count(device_id="nobody") == 0


async def test_the_store_does_not_deduplicate_by_seq(store: TelemetryStore) -> None:
    # The ingest pipeline de-duplicates; the store keeps distinct readings even with equal seq.
    await store.write([reading("dev-1", 1, 1.0, seq=7), reading("dev-1", 2, 1.0, seq=7)])
    assert await store.count() == 2


async def test_same_reading_written_twice_is_stored_once_with_merged_fields(store: TelemetryStore) -> None:
    tags = {"market": "north"}
    await store.write([Reading("dev-1", M, at(1), {"temp_c": 1.0, "humidity": 50.0}, tags, seq=1)])
    await store.write([Reading("dev-1", M, at(1), {"temp_c": 2.0}, tags, seq=1)])
    assert await store.count() == 1
    (got,) = await store.range("dev-1", M, T0, FAR)
    assert got.fields == {"temp_c": 2.0, "humidity": 50.0}
    # Different tags make it a different reading.
    await store.write([Reading("dev-1", M, at(1), {"temp_c": 3.0}, {"market": "south"})])
    assert await store.count() == 2


async def test_retention_drops_readings_older_than_it(store: TelemetryStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recent = Reading("dev-1", M, now - timedelta(hours=2), {"temp_c": 1.0})
    await store.write([recent])
    await store.set_retention(1)
    await store.set_retention(1)  # idempotent
    old = Reading("dev-1", M, now - timedelta(days=3), {"temp_c": 2.0})
    recent2 = Reading("dev-1", M, now - timedelta(hours=1), {"temp_c": 3.0})
    await store.write([old, recent2])  # late backfill beyond retention: dropped, not an error
    got = await store.range("dev-1", M, now - timedelta(days=10), now)
    assert got == [recent, recent2]
    assert await store.count() == 2
    with pytest.raises(ValueError):
        await store.set_retention(0)


async def test_closed_store_refuses_work(store: TelemetryStore) -> None:
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(TelemetryError):
        await store.write([reading("dev-1", 1, 1.0)])


async def test_export_gives_every_reading_once_across_pages(store: TelemetryStore) -> None:
    """Backups read the whole store through export(); same-instant points of one channel with other tags
    must not be lost or repeated at a page edge."""
    written = [reading(f"dev-{d}", s, float(s)) for d in range(3) for s in range(7)]
    written += [reading("dev-0", 3, 9.0, tags={"probe": "b"}), reading("dev-0", 3, 8.0, tags={"probe": "c"})]
    written += [reading("dev-1", 1, 1.0, measurement="scale.event")]
    await store.write(written)
    pages = [page async for page in store.export(batch=2)]
    exported = [r for page in pages for r in page]
    key = lambda r: (r.device_id, r.measurement, r.ts, sorted(r.tags.items()))  # noqa: E731
    assert sorted(exported, key=key) == sorted(written, key=key)
    assert len(exported) == len(written) and all(0 < len(page) <= 4 for page in pages)
