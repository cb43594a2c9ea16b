"""InfluxStore's write path against a scripted fake InfluxDB (httpx.MockTransport): batching,
spooling on outages, order of replay, 4xx handling. The real-server behaviour is covered in
tests/integration/telemetry/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from telemetry import InfluxStore, SqliteStore, open_store
from telemetry.influxql import line_for
from telemetry.reading import Reading
from telemetry.store import StoreUnavailable, TelemetryError, WriteRejected

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading(f"dev-{i % 7}", "env_sensor.telemetry", T0 + timedelta(seconds=i), {"v": float(i)}, seq=i)
        for i in range(start, start + n)
    ]


class FakeInflux:
    """Answers like InfluxDB 1.x; `up`, `ping_ok` and `write_responses` script outages and errors."""

    def __init__(self) -> None:
        self.up = True
        self.ping_ok = True
        self.write_responses: list[httpx.Response | Callable[[httpx.Request], httpx.Response]] = []
        self.lines: list[str] = []
        self.posts = 0
        self.queries: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/ping":
            return httpx.Response(204 if self.ping_ok else 503)
        if request.url.path == "/query":
            q = request.url.params.get("q") or httpx.QueryParams(request.content.decode()).get("q")
            self.queries.append(q or "")
            return httpx.Response(200, json={"results": [{"statement_id": 0}]})
        assert request.url.path == "/write"
        assert request.url.params["precision"] == "ns"
        self.posts += 1
        if self.write_responses:
            scripted = self.write_responses.pop(0)
            response = scripted(request) if callable(scripted) else scripted
            if response.status_code != 204:
                return response
        self.lines.extend(request.content.decode().split("\n"))
        return httpx.Response(204)


@pytest.fixture
def fake() -> FakeInflux:
    return FakeInflux()


@pytest.fixture
async def store(fake: FakeInflux, tmp_path: Path) -> AsyncIterator[InfluxStore]:
    async with InfluxStore(
        "http://influx.test:8086",
        "mf",
        spool_dir=tmp_path,
        probe_interval=0.01,
        transport=httpx.MockTransport(fake),
    ) as s:
        yield s


def lines(rs: list[Reading]) -> list[str]:
    return [line_for(r) for r in rs]


async def drained(store: InfluxStore) -> None:
    async with asyncio.timeout(10):
        await store.wait_drained()


async def test_setup_creates_database_and_retention_policy(fake: FakeInflux, store: InfluxStore) -> None:
    assert fake.queries[0] == 'CREATE DATABASE "mf"'
    assert fake.queries[1] == (
        'CREATE RETENTION POLICY "marketfleet" ON "mf" DURATION 156w REPLICATION 1 SHARD DURATION 7d DEFAULT'
    )


async def test_large_writes_are_chunked_at_5000_lines(fake: FakeInflux, store: InfluxStore) -> None:
    rs = readings(12_001)
    await store.write(rs)
    assert fake.posts == 3
    assert fake.lines == lines(rs)
    await store.write([])
    assert fake.posts == 3


@pytest.mark.parametrize(
    "failure",
    [
        "down",
        httpx.Response(503, json={"error": "overloaded"}),
        httpx.Response(500, json={"error": "timeout"}),
        httpx.Response(429),
    ],
)
async def test_outage_spools_then_replays_in_order(fake: FakeInflux, store: InfluxStore, failure: object) -> None:
    first, during, after = readings(10), readings(10, 10), readings(10, 20)
    await store.write(first)
    if failure == "down":
        fake.up = False
        fake.ping_ok = False
    else:
        fake.write_responses.append(failure)  # type: ignore[arg-type]
        fake.ping_ok = False
    await store.write(during[:5])
    await store.write(during[5:])
    assert store.spooling
    assert store.spooled_batches == 2 and store.spool_bytes > 0
    assert fake.lines == lines(first)
    fake.up = fake.ping_ok = True
    await drained(store)
    assert store.spooled_batches == 0 and store.spool_bytes == 0 and not store.spooling
    await store.write(after)  # direct again
    assert fake.lines == lines(first + during + after)


async def test_timeouts_are_spooled(fake: FakeInflux, store: InfluxStore) -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    fake.write_responses.append(timeout)
    fake.ping_ok = False
    await store.write(readings(3))
    assert store.spooled_batches == 1
    fake.ping_ok = True
    await drained(store)
    assert fake.lines == lines(readings(3))


async def test_writes_queue_behind_a_backlog(fake: FakeInflux, store: InfluxStore) -> None:
    fake.up, fake.ping_ok = False, False
    await store.write(readings(2))
    fake.up = True  # writes would go through now, but the backlog isn't replayed yet
    await store.write(readings(2, 2))
    assert fake.lines == []
    assert store.spooled_batches == 2
    fake.ping_ok = True
    await drained(store)
    assert fake.lines == lines(readings(4))


async def test_bad_data_raises_and_is_not_spooled(fake: FakeInflux, store: InfluxStore) -> None:
    rs = readings(3)
    bad = line_for(rs[1])
    fake.write_responses.append(
        httpx.Response(400, json={"error": f"partial write: unable to parse '{bad}': invalid number dropped=1"})
    )
    with pytest.raises(WriteRejected) as exc:
        await store.write(rs)
    assert exc.value.line == bad and exc.value.status == 400
    assert bad in str(exc.value)
    assert store.spooled_batches == 0 and not store.spooling


async def test_points_beyond_retention_are_dropped_quietly(fake: FakeInflux, store: InfluxStore) -> None:
    fake.write_responses.append(
        httpx.Response(400, json={"error": "partial write: points beyond retention policy dropped=1"})
    )
    await store.write(readings(2))
    assert store.spooled_batches == 0


async def test_auth_failure_is_an_error_not_an_outage(fake: FakeInflux, store: InfluxStore) -> None:
    fake.write_responses.append(httpx.Response(401, json={"error": "authorization failed"}))
    with pytest.raises(TelemetryError) as exc:
        await store.write(readings(1))
    assert not isinstance(exc.value, StoreUnavailable)
    assert store.spooled_batches == 0


async def test_missing_database_is_recreated(fake: FakeInflux, store: InfluxStore) -> None:
    fake.write_responses.append(httpx.Response(404, json={"error": 'database not found: "mf"'}))
    before = len(fake.queries)
    await store.write(readings(1))
    assert fake.queries[before] == 'CREATE DATABASE "mf"'
    assert fake.lines == lines(readings(1))


async def test_batch_rejected_on_replay_goes_to_dead_letter(
    fake: FakeInflux, store: InfluxStore, tmp_path: Path
) -> None:
    fake.up, fake.ping_ok = False, False
    await store.write(readings(2))
    fake.write_responses.append(httpx.Response(400, json={"error": "partial write: field type conflict"}))
    fake.up = fake.ping_ok = True
    await drained(store)
    assert store.rejected_batches == 1
    (dead,) = (tmp_path / "mf" / "rejected").glob("*.lp")
    assert dead.read_text().split("\n") == lines(readings(2))
    assert "field type conflict" in dead.with_suffix(".err").read_text()


async def test_spool_full_is_back_pressure(fake: FakeInflux, tmp_path: Path) -> None:
    fake.up = False
    async with InfluxStore(
        "http://influx.test",
        "mf",
        spool_dir=tmp_path,
        max_spool_bytes=2000,
        probe_interval=0.01,
        transport=httpx.MockTransport(fake),
    ) as store:
        accepted = 0
        with pytest.raises(StoreUnavailable, match="full"):
            for i in range(100):
                await store.write(readings(2, 2 * i))
                accepted += 1
        assert 0 < accepted < 100
        assert store.spooled_batches == accepted
        assert store.spool_bytes <= 2000


async def test_without_spool_an_outage_raises(fake: FakeInflux) -> None:
    fake.up = False
    async with InfluxStore("http://influx.test", "mf", spool_dir=None, transport=httpx.MockTransport(fake)) as store:
        with pytest.raises(StoreUnavailable):
            await store.write(readings(1))
        with pytest.raises(StoreUnavailable):
            await store.count()


async def test_spool_left_by_a_previous_run_is_replayed_at_start(fake: FakeInflux, tmp_path: Path) -> None:
    fake.up = False
    transport = httpx.MockTransport(fake)
    async with InfluxStore("http://influx.test", "mf", spool_dir=tmp_path, transport=transport) as store:
        await store.write(readings(3))
    assert fake.lines == []
    fake.up = True
    async with InfluxStore(
        "http://influx.test", "mf", spool_dir=tmp_path, probe_interval=0.01, transport=transport
    ) as store:
        await drained(store)
    assert fake.lines == lines(readings(3))


async def test_lifecycle_errors(tmp_path: Path) -> None:
    store = InfluxStore("http://influx.test", "mf", spool_dir=tmp_path)
    with pytest.raises(TelemetryError, match="not started"):
        await store.write(readings(1))
    with pytest.raises(ValueError):
        InfluxStore("http://influx.test", "mf", retention="forever")


def test_open_store_factory(tmp_path: Path) -> None:
    assert isinstance(open_store("sqlite", path=tmp_path / "t.db"), SqliteStore)
    assert isinstance(open_store("influxdb", url="http://x", database="d", spool_dir=tmp_path), InfluxStore)
    with pytest.raises(ValueError):
        open_store("mongodb")  # type: ignore[arg-type]
