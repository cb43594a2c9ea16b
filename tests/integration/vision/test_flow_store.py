"""Passenger flow in the vision tables: minutes add up, buckets by hour and day, 30 days kept and no more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from marketfleet import db
from vision.store import InvalidQuery, VisionStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def store(registry_url_factory):
    await db.connect(registry_url_factory("sqlite"))
    try:
        yield VisionStore(retention_days=30)
    finally:
        await db.close()


async def test_counts_written_twice_in_a_minute_add_up_and_bucket_by_hour(store: VisionStore) -> None:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    await store.add_counts("cam-1", base + timedelta(seconds=5), {"north": (2, 1)})
    await store.add_counts("cam-1", base + timedelta(seconds=50), {"north": (3, 0), "south": (0, 4)})
    await store.add_counts("cam-1", base + timedelta(minutes=70), {"north": (1, 1)})
    await store.add_counts("cam-2", base, {"north": (100, 100)})  # another camera is not mixed in
    minutes = await store.flow("cam-1", base, base + timedelta(hours=2), bucket="minute")
    hours = await store.flow("cam-1", base, base + timedelta(hours=2), line="north", bucket="hour")
    assert [(p.line, p.count_in, p.count_out) for p in minutes] == [("north", 5, 1), ("south", 0, 4),
                                                                     ("north", 1, 1)]
    assert [(p.start, p.count_in, p.count_out) for p in hours] == [(base, 5, 1), (base + timedelta(hours=1), 1, 1)]


async def test_thirty_days_are_kept_and_older_minutes_are_purged(store: VisionStore) -> None:
    now = datetime.now(UTC)
    await store.add_counts("cam-3", now - timedelta(days=29), {"gate": (7, 0)})
    await store.add_counts("cam-3", now - timedelta(days=31), {"gate": (9, 0)})
    assert await store.purge(now) == 1
    kept = await store.flow("cam-3", now - timedelta(days=30), now, bucket="day")
    assert [p.count_in for p in kept] == [7]


async def test_asking_beyond_retention_or_backwards_is_refused_with_the_reason(store: VisionStore) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidQuery, match="kept for 30 days"):
        await store.flow("cam-3", now - timedelta(days=90), now)
    with pytest.raises(InvalidQuery, match="end must be after start"):
        await store.flow("cam-3", now, now - timedelta(hours=1))
