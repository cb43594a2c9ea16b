"""Disk full under the telemetry spool for real (issue 11, crash safety): the filesystem, not the spool's own limit.

The spool directory lives on a real, tiny tmpfs (`mount -t tmpfs -o size=…`), so appends meet ENOSPC from the
kernel: partial writes, refused segment files (no inode left), no room for a fresh spool's LOCK. Shown: back-pressure
(nothing unacknowledged is kept, the process stays up), no torn record left behind, the spool-full alert and the
`disk_full` flag in the ingest metrics, and once room returns (a file elsewhere on that filesystem removed, or
InfluxDB back and the spool drained) every acknowledged reading reaches InfluxDB exactly once.

Mounting needs root (CI runs as root). As another user, run it inside a user and mount namespace:
`unshare -rm .venv/bin/python -m pytest tests/integration/telemetry/test_spool_disk_full.py`. A failed mount
fails the test (never skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from telemetry import Reading
from telemetry.spool import Spool, SpoolDiskFull, SpoolFull, decode_records, encode_record
from telemetry.sqlite import SqliteStore
from telemetry.store import StoreUnavailable, TelemetryError
from tests.factories import (
    ADMIN,
    create_vendor,
    ensure_market,
    eventually,
    sent_readings,
    serve_api,
    start_test_platform,
)
from tests.services import InfluxServer

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")


@contextlib.contextmanager
def small_filesystem(path: Path, size: str, nr_inodes: int | None = None) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `path` for the block, unmounted (lazily if still busy) afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a {size} tmpfs at {path} ({mounted.stderr.strip() or mounted.returncode}): this "
                    "test needs root, or run pytest under `unshare -rm`", pytrace=False)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def segments_decode_whole(directory: Path) -> list[bytes]:
    """Every record of every segment, asserting none is corrupt and no file ends in a torn record."""
    records: list[bytes] = []
    for segment in sorted(directory.glob("*.seg")):
        decoded = decode_records(segment.read_bytes())
        assert decoded.corrupt == 0 and not decoded.torn, (segment, decoded.corrupt, decoded.torn)
        records += decoded.records
    return records


def drain(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    while (batch := spool.peek(1 << 20)) is not None:
        out.extend(batch.payloads)
        spool.commit(batch)
    return out


def payload(n: int) -> bytes:
    """Distinct records of uneven sizes (0.7 to 2.7 KiB), so the disk fills in the middle of one."""
    return f"batch {n:05d} ".encode() + bytes([65 + n % 26]) * (700 + (n * 397) % 2000)


def test_a_full_filesystem_refuses_appends_without_a_torn_record_and_takes_them_again_with_room(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs", "256k") as fs:
        ballast = [fs / "other-1.bin", fs / "other-2.bin"]  # someone else's files on the same filesystem
        for b in ballast:
            b.write_bytes(b"\0" * 32 * 1024)
        directory = fs / "spool"
        accepted: list[bytes] = []
        spool = Spool(directory, max_bytes=1 << 30, segment_bytes=40 * 1024)  # its own limit is far away
        spool.open()
        n = 0
        with pytest.raises(SpoolDiskFull) as refused:
            while True:
                spool.append(payload(n))
                accepted.append(payload(n))
                n += 1
                assert n < 1000, "the 256 KiB filesystem never filled"
        assert isinstance(refused.value, SpoolFull) and isinstance(refused.value, StoreUnavailable)
        assert "no room on its filesystem" in str(refused.value) and spool.disk_full
        assert len(accepted) > 50  # 192 KiB were free

        # Still full: every further append is refused the same way and changes nothing on disk.
        sizes = {p: p.stat().st_size for p in directory.glob("*.seg")}
        for m in range(5):
            with pytest.raises(SpoolDiskFull):
                spool.append(payload(n + m))
        assert {p: p.stat().st_size for p in directory.glob("*.seg")} == sizes
        assert spool.pending_records == len(accepted) and spool.pending_payloads() == accepted
        assert segments_decode_whole(directory) == accepted  # the refused append left no partial record

        # A crash while appending (power cut): the process dies with a torn record at the end of a segment.
        spool.close()
        ballast[0].unlink()
        last = sorted(directory.glob("*.seg"))[-1]
        with last.open("ab") as f:
            f.write(encode_record(b"never acknowledged")[:20])
        with Spool(directory, max_bytes=1 << 30, segment_bytes=40 * 1024) as spool:
            assert spool.pending_payloads() == accepted  # the torn tail is ignored and cut off
            assert segments_decode_whole(directory) == accepted

            # Room again (a file elsewhere on the filesystem removed): appends are taken again.
            spool.append(payload(n))
            accepted.append(payload(n))
            assert not spool.disk_full
            while True:  # and refused again once that room is used up
                n += 1
                try:
                    spool.append(payload(n))
                except SpoolDiskFull:
                    break
                accepted.append(payload(n))

            # The consumer (InfluxDB back) drains everything once, in order, and frees the disk.
            assert drain(spool) == accepted
            assert list(directory.glob("*.seg")) == [] and spool.pending_bytes == 0
            spool.append(payload(n))  # and the spool works again
            assert drain(spool) == [payload(n)]


def test_no_inode_left_refuses_a_new_segment_and_a_new_spool_says_why(tmp_path: Path) -> None:
    # Inodes: the root, the spool directory, its LOCK and three segment files.
    with small_filesystem(tmp_path / "fs", "1m", nr_inodes=6) as fs:
        spool = Spool(fs / "spool", segment_bytes=512, max_bytes=1 << 30)
        spool.open()
        accepted: list[bytes] = []
        with pytest.raises(SpoolDiskFull):
            for n in range(100):
                spool.append(payload(n))  # one record per segment file (each is over 512 bytes)
                accepted.append(payload(n))
        assert len(accepted) == 3 and len(list((fs / "spool").glob("*.seg"))) == 3
        assert segments_decode_whole(fs / "spool") == accepted

        # A second process starting with its spool on this filesystem fails with one clear line.
        with pytest.raises(TelemetryError, match=r"cannot open the telemetry spool .*other: No space left"):
            Spool(fs / "other").open()

        # The consumer commits the oldest segment: its inode is free again, and so is the next append.
        batch = spool.peek(max_records=1)
        assert batch is not None and batch.payloads == (accepted[0],)
        spool.commit(batch)
        spool.append(b"after")
        assert drain(spool) == [*accepted[1:], b"after"]
        spool.close()


async def test_the_sqlite_backend_on_a_full_disk_refuses_and_keeps_every_acknowledged_reading(tmp_path: Path) -> None:
    """The SQLite telemetry backend has no spool: its database file is the store. A full disk under it is
    back-pressure too (`StoreUnavailable`, retried by ingest) and never costs a stored reading."""
    with small_filesystem(tmp_path / "fs", "512k") as fs:
        (fs / "other.bin").write_bytes(b"\0" * 128 * 1024)
        t0 = datetime.now(UTC) - timedelta(hours=1)
        stored = 0

        def batch(i: int) -> list[Reading]:
            return [Reading(f"d{j}", "env.telemetry", t0 + timedelta(seconds=i), {"x": float(i), "note": "n" * 40},
                            {"market": "M"}, seq=i) for j in range(20)]

        async with SqliteStore(fs / "telemetry.sqlite3") as store:
            with pytest.raises(StoreUnavailable, match="disk is full"):
                for i in range(10_000):
                    await store.write(batch(i))
                    stored += 1
            assert stored > 5
            with pytest.raises(StoreUnavailable):
                await store.write(batch(stored))  # still full
            assert await store.count("d0") == stored
        async with SqliteStore(fs / "telemetry.sqlite3") as store:  # reopened: intact, nothing half-written
            assert await store.count("d0") == stored
            (fs / "other.bin").unlink()  # room again
            await store.write(batch(stored))
            assert await store.count("d0") == stored + 1 and await store.count("d19") == stored + 1


# ---------------------------------------------------------------- the platform: HTTP ingest, alert, InfluxDB

MARKET = "DISKFULL"
MEASUREMENT = "env_sensor.telemetry"
PER_UPLINK = 40  # ~6 KiB of line protocol per uplink
FULL = "telemetry-spool-full"



async def _true(value: object) -> object:
    return value


async def alerts(api: httpx.AsyncClient, status: str | None = None) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/alerts", params={"rule_id": FULL} | ({"status": status} if status else {}),
                             headers=ADMIN)
    assert response.status_code == 200, response.text
    return list(response.json())


@pytest.fixture
def database(influx_server: InfluxServer) -> Iterator[str]:
    name = f"diskfull_{uuid.uuid4().hex[:10]}"
    yield name
    if not influx_server.running:
        influx_server.start()
    influx_server.query(f'DROP DATABASE "{name}"')


@contextlib.asynccontextmanager
async def platform_on(tmp_path: Path, influx_server: InfluxServer, database: str) -> AsyncIterator[tuple[Any, Any]]:
    telemetry = {"backend": "influxdb", "url": influx_server.url, "database": database}  # the 1 GiB default limit
    rules = {"spool_check_s": 0.2, "alert_flush_s": 0.05, "scheduler": False}
    registry = f"sqlite://{tmp_path / 'registry.sqlite3'}"
    async with start_test_platform(tmp_path, registry, telemetry=telemetry, rules=rules) as platform, \
            serve_api(platform.app) as api:  # fmt: skip
        yield platform, api


@pytest.mark.influx
async def test_disk_full_under_the_spool_back_pressures_alerts_and_loses_nothing_acknowledged(
    influx_server: InfluxServer, database: str, tmp_path: Path
) -> None:
    seq = 0
    accepted: set[int] = set()
    start = datetime.now(UTC) - timedelta(hours=2)

    async def send(api: httpx.AsyncClient, device_id: str, secret: str) -> int:
        nonlocal seq
        messages = []
        for _ in range(PER_UPLINK):
            messages.append({"seq": seq, "ts": (start + timedelta(seconds=seq)).isoformat(),
                             "payload": {"temperature_c": 20 + seq % 10, "humidity_pct": 50.0}})
            seq += 1
        response = await api.post(f"/api/v1/ingest/{device_id}/telemetry", json=messages,
                                  headers={"Authorization": f"Bearer {device_id}:{secret}"})
        assert response.status_code in (200, 503), response.text
        accepted.update(response.json()["seqs"])
        return response.status_code

    # The spool's whole directory tree is on a 256 KiB filesystem, shared with 64 KiB of someone else's files.
    with small_filesystem(tmp_path / "telemetry-spool", "256k") as fs:
        ballast = fs / "other.bin"
        ballast.write_bytes(b"\0" * 64 * 1024)
        spool_dir = fs / database
        try:
            async with platform_on(tmp_path, influx_server, database) as (platform, api):
                await ensure_market(api, MARKET, "Disk-full market")
                key = await create_vendor(api, "diskv")
                response = await api.post(
                    "/api/v1/vendor/devices", headers={"X-API-Key": key},
                    json={"devices": [{"serial": "DF1", "kind": "env_sensor", "market": MARKET}]})
                assert response.status_code == 200, response.text
                [row] = response.json()["rows"]
                device = (api, row["device_id"], row["secret"])
                assert await send(*device) == 200  # InfluxDB up: written directly

                await asyncio.to_thread(influx_server.stop)
                statuses = [await send(*device)]
                while statuses[-1] == 200:
                    assert len(statuses) < 80, "the 256 KiB filesystem never filled"
                    statuses.append(await send(*device))
                acknowledged = len(accepted)
                assert len(statuses) > 5  # it spooled a while before the disk was full

                # Back-pressure: refused uplinks are not acknowledged, again and again, and the process stays up.
                assert await send(*device) == 503  # the ingest pipeline retried it for a while first
                assert len(accepted) == acknowledged
                assert (await api.get("/healthz")).status_code == 200
                metrics = (await api.get("/api/v1/broker/metrics", headers=ADMIN)).json()["telemetry_spool"]
                assert metrics["refusing"] is True and metrics["disk_full"] is True
                assert metrics["refused"] >= 2 and metrics["fill_percent"] < 1  # far from its own 1 GiB limit
                [alert] = await eventually(lambda: alerts(api, "active"), what="spool-full alert")
                assert alert["severity"] == "critical" and alert["category"] == "platform"
                assert "no space left on the disk" in alert["message"], alert["message"]

                # Nothing torn: the segments hold exactly what was acknowledged while spooling.
                lines = sum(len(p.decode().splitlines()) for p in segments_decode_whole(spool_dir))
                assert lines == acknowledged - PER_UPLINK

                # Room returns (the other files are removed): ingest takes readings again, InfluxDB still away.
                ballast.unlink()
                assert await send(*device) == 200
                assert (await api.get("/api/v1/broker/metrics", headers=ADMIN)).json()["telemetry_spool"][
                    "disk_full"] is False
                while await send(*device) == 200:  # until that room is used up as well
                    assert seq < 200 * PER_UPLINK
                acknowledged = len(accepted)

            # The platform stops (a restart, or a crash that tore the last append): it starts again on that spool.
            last = sorted(spool_dir.glob("*.seg"))[-1]
            with contextlib.suppress(OSError), last.open("ab") as f:  # whatever part of a record still fits
                f.write(encode_record(b"never acknowledged" * 100)[:500])
            async with platform_on(tmp_path, influx_server, database) as (platform, api):
                device = (api, row["device_id"], row["secret"])
                spooled = platform.store.spool_status()
                assert spooled.spooling and spooled.batches * PER_UPLINK == acknowledged - PER_UPLINK
                assert segments_decode_whole(spool_dir)  # the torn tail was cut off at start

                # InfluxDB back: the spool drains, the alert resolves, every acknowledged reading arrives once.
                await asyncio.to_thread(influx_server.start)
                await eventually(lambda: _true(platform.store.spool_status().bytes == 0), within=120,
                                 what="spool drained")
                await eventually(lambda: alerts(api, "resolved"), what="spool-full alert resolved")
                assert not list(spool_dir.glob("*.seg"))
                assert await send(*device) == 200  # straight to InfluxDB again

                answer = influx_server.query(
                    f'SELECT "seq" FROM "marketfleet"."{MEASUREMENT}" WHERE "device_id" = \'{row["device_id"]}\'',
                    database)
                [series] = answer["results"][0]["series"]
                stored = [int(r[1]) for r in series["values"]]
                assert len(stored) == len(set(stored)) and set(stored) == accepted
                assert await sent_readings(platform.store, row["device_id"]) == len(accepted)
        finally:
            if not influx_server.running:
                await asyncio.to_thread(influx_server.start)
