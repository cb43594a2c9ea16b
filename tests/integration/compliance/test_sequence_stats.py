"""The default sequence-statistics source reads `Reading.seq` from a real telemetry store (SQLite, InfluxDB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from compliance import SeqSpan, TelemetrySequenceStats
from telemetry import Reading, TelemetryStore
from tests.factories import STORE_BACKENDS, telemetry_store

pytestmark = pytest.mark.timeout(120)

T0 = (datetime.now(UTC) - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
WINDOW = (T0 - timedelta(hours=1), T0 + timedelta(hours=2))


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TelemetryStore]:
    async with telemetry_store(request, tmp_path, "compliance") as s:
        yield s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_gaps_across_channels_count_as_lost(store: TelemetryStore) -> None:
    """One seq counter per device across channels: seqs 0..9 over telemetry and events, 3 and 7 never stored."""
    readings = [
        Reading("scale-1", "scale.telemetry" if seq % 2 else "scale.event", at(seq), {"load_kg": 1.0}, seq=seq)
        for seq in range(10)
        if seq not in (3, 7)
    ]
    await store.write(readings)
    spans = await TelemetrySequenceStats(store).sequence_spans({"scale-1": "scale"}, *WINDOW)
    assert spans == {"scale-1": SeqSpan(0, 9, 8)}


async def test_readings_sharing_a_timestamp_are_all_counted_across_pages(store: TelemetryStore) -> None:
    """A locker's compartments are several readings of one message at one time; a page edge must not drop any."""
    readings = [
        Reading("locker-1", "cold_locker.telemetry", at(seq), {"temperature_c": 4.0}, {"compartment": str(c)},
                seq=seq)
        for seq in range(6)
        for c in range(3)
    ]
    await store.write(readings)
    spans = await TelemetrySequenceStats(store, page_size=4).sequence_spans({"locker-1": "cold_locker"}, *WINDOW)
    assert spans == {"locker-1": SeqSpan(0, 5, 6)}


async def test_a_device_that_sent_nothing_is_absent(store: TelemetryStore) -> None:
    await store.write([Reading("env-1", "env_sensor.telemetry", at(1), {"temperature_c": 20.0}, seq=41)])
    spans = await TelemetrySequenceStats(store).sequence_spans({"env-1": "env_sensor", "env-2": "env_sensor"}, *WINDOW)
    assert spans == {"env-1": SeqSpan(41, 41, 1)}


async def test_readings_without_seq_make_the_loss_unknown(store: TelemetryStore) -> None:
    await store.write([Reading("old-1", "env_sensor.telemetry", at(s), {"temperature_c": 20.0}) for s in range(3)])
    assert await TelemetrySequenceStats(store).sequence_spans({"old-1": "env_sensor"}, *WINDOW) is None
