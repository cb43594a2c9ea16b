"""`SqliteStore`: the single-file telemetry backend (development, small markets, tests).

Owns one SQLite database file and one dedicated worker thread holding the only connection to it;
every SQL statement runs on that thread, so the event loop never blocks on disk I/O and the
connection is never shared between threads.

Schema: one WITHOUT ROWID table keyed by (device_id, measurement, ts, tags), i.e. the reading's
identity, so range scans of one device channel read contiguous pages and re-writing a reading
merges its fields (like an InfluxDB point). Fields are JSON text; `ts` is integer microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from pydantic_core import PydanticSerializationError, to_json

from telemetry.reading import Aggregate, Reading, from_epoch_us, to_epoch_us
from telemetry.store import DownsampleEvery, StoreUnavailable, TelemetryError

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

_US_PER_DAY: Final = 86_400_000_000
_BUCKET_US: Final[dict[str, int]] = {"1m": 60_000_000, "1h": 3_600_000_000}

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    device_id   TEXT    NOT NULL,
    measurement TEXT    NOT NULL,
    ts          INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
    tags        TEXT    NOT NULL,  -- canonical JSON object (sorted keys) so it can be part of the key
    fields      TEXT    NOT NULL,  -- JSON object
    seq         INTEGER,
    PRIMARY KEY (device_id, measurement, ts, tags)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# json_patch merges the new fields into the stored ones, which is what InfluxDB does for a point
# written twice; seq keeps the old value when the new reading has none.
_UPSERT: Final = """
INSERT INTO readings (device_id, measurement, ts, tags, fields, seq) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, measurement, ts, tags) DO UPDATE SET
    fields = json_patch(readings.fields, excluded.fields),
    seq = coalesce(excluded.seq, readings.seq)
"""

_ROW_COLUMNS: Final = "device_id, measurement, ts, tags, fields, seq"

_encode_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_tags = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode
_decode = json.loads
_TAGS_CACHE_MAX: Final = 4096


_ascii_fields = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
_ascii_tags = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False).encode


def _fields_text(fields: dict[str, Any]) -> str:
    """The fields as a JSON object: pydantic-core's encoder (~7x faster). A string with a lone surrogate (JSON
    allows the escape) cannot be UTF-8: such fields are written as ASCII JSON escapes, which read back the same.
    Floats may be spelled differently (0.00001 vs 1e-05), never valued differently."""
    try:
        return to_json(fields).decode()
    except (PydanticSerializationError, ValueError):
        return _ascii_fields(fields)


def _row_to_reading(row: tuple[Any, ...]) -> Reading:
    device_id, measurement, ts, tags, fields, seq = row
    return Reading(device_id, measurement, from_epoch_us(ts), _decode(fields), _decode(tags), seq)


def _json_path(field: str) -> str | None:
    """A JSON path selecting the top-level key `field`, or None if SQLite's path syntax can't express it."""
    if '"' in field or "\\" in field:
        return None
    return f'$."{field}"'


class SqliteStore:
    """TelemetryStore on a local SQLite file (WAL mode, one writer thread).

    `retention_days`: if given, overrides the retention stored in the file by `set_retention`.
    `retention_interval`: seconds between automatic `apply_retention()` runs (None: only on demand).
    `synchronous`: SQLite's `PRAGMA synchronous`; see `_open_sync` for why NORMAL is the default.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        retention_days: int | None = None,
        retention_interval: float | None = 3600.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if retention_days is not None and retention_days < 1:
            raise ValueError("retention_days must be >= 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = Path(path)
        self._retention_days = retention_days
        self._retention_interval = retention_interval
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._tags_texts: dict[tuple[tuple[str, str], ...], str] = {}  # used on the connection's thread only
        self._executor: ThreadPoolExecutor | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        async with self._start_lock:
            if self._closed:
                raise TelemetryError("SqliteStore is closed")
            if self._executor is not None:
                return
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemetry-sqlite")
            try:
                await self._call(self._open_sync)
            except BaseException:
                self._executor.shutdown(wait=False)
                self._executor = None
                raise
            if self._retention_interval is not None:
                self._retention_task = asyncio.create_task(
                    self._retention_loop(self._retention_interval), name="telemetry-sqlite-retention"
                )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        executor, self._executor = self._executor, None
        if executor is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(executor, self._close_sync)
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(*args)` on the connection's thread, translating sqlite3 errors exactly once."""
        executor = self._executor
        if executor is None:
            raise TelemetryError("SqliteStore is closed" if self._closed else "SqliteStore is not started")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, partial(fn, *args))
        except sqlite3.OperationalError as err:
            # locked, busy, disk full, I/O error, can't open: conditions that may clear up.
            raise StoreUnavailable(f"sqlite {self.path}: {err}") from err
        except sqlite3.Error as err:
            raise TelemetryError(f"sqlite {self.path}: {err}") from err

    # ------------------------------------------------------------------ worker-thread side

    def _open_sync(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch is exactly one transaction.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # With WAL, synchronous=NORMAL fsyncs only at checkpoints, not at each commit. A commit
            # is still an append to the WAL file that the OS holds, so it survives a crash of this
            # process (the durability `write()` promises to the ingest pipeline); only an OS crash or
            # power loss can lose the last commits, never corrupt the file. FULL closes that gap at
            # one fsync per batch.
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            if self._retention_days is None:
                row = conn.execute("SELECT value FROM meta WHERE key = 'retention_days'").fetchone()
                self._retention_days = int(row[0]) if row else None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @property
    def _db(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise TelemetryError("SqliteStore is not open")
        return conn

    def _cutoff_us(self) -> int | None:
        days = self._retention_days
        if days is None:
            return None
        return to_epoch_us(datetime.now(UTC)) - days * _US_PER_DAY

    def _tags_text(self, tags: dict[str, str]) -> str:
        """Canonical tags JSON, remembered: a device's tags are the same in every reading (ingest's hot path)."""
        key = tuple(tags.items())
        text = self._tags_texts.get(key)
        if text is None:
            text = _encode_tags(tags)
            try:
                text.encode()
            except UnicodeEncodeError:  # a lone surrogate: ASCII escapes (UTF-8 text stays as it always was)
                text = _ascii_tags(tags)
            if len(self._tags_texts) >= _TAGS_CACHE_MAX:
                self._tags_texts.clear()
            self._tags_texts[key] = text
        return text

    def _write_sync(self, readings: Sequence[Reading]) -> None:
        cutoff = self._cutoff_us()
        tags_text = self._tags_text
        rows = [
            (
                r.device_id,
                r.measurement,
                to_epoch_us(r.ts),
                tags_text(r.tags) if r.tags else "{}",
                _fields_text(r.fields),
                r.seq,
            )
            for r in readings
        ]
        if cutoff is not None:
            kept = [row for row in rows if row[2] >= cutoff]
            if len(kept) != len(rows):
                # InfluxDB drops points beyond its retention policy at write time; do the same so
                # both backends behave alike for late (backfilled) data.
                log.warning(
                    "dropped %d readings older than the %d-day retention", len(rows) - len(kept), self._retention_days
                )
                rows = kept
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_UPSERT, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _range_sync(self, device_id: str, measurement: str, start: int, end: int, limit: int) -> list[Reading]:
        cur = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM readings WHERE device_id = ? AND measurement = ? "
            "AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            (device_id, measurement, start, end, limit),
        )
        return [_row_to_reading(row) for row in cur]

    def _pairs(self, device_ids: Sequence[str] | None) -> Iterator[tuple[str, str]]:
        """Every (device_id, measurement) present, by skip-scanning the primary key.

        One index seek per distinct pair instead of a scan of every row: a market has thousands of
        devices but millions of readings.
        """
        db = self._db
        if device_ids is None:
            row = db.execute(
                "SELECT device_id, measurement FROM readings ORDER BY device_id, measurement LIMIT 1"
            ).fetchone()
            while row is not None:
                yield row
                row = db.execute(
                    "SELECT device_id, measurement FROM readings WHERE (device_id, measurement) > (?, ?) "
                    "ORDER BY device_id, measurement LIMIT 1",
                    row,
                ).fetchone()
            return
        for device_id in dict.fromkeys(device_ids):
            row = db.execute(
                "SELECT measurement FROM readings WHERE device_id = ? ORDER BY measurement LIMIT 1",
                (device_id,),
            ).fetchone()
            while row is not None:
                yield device_id, row[0]
                row = db.execute(
                    "SELECT measurement FROM readings WHERE device_id = ? AND measurement > ? "
                    "ORDER BY measurement LIMIT 1",
                    (device_id, row[0]),
                ).fetchone()

    def _devices(self) -> Iterator[str]:
        db = self._db
        row = db.execute("SELECT device_id FROM readings ORDER BY device_id LIMIT 1").fetchone()
        while row is not None:
            yield row[0]
            row = db.execute(
                "SELECT device_id FROM readings WHERE device_id > ? ORDER BY device_id LIMIT 1", row
            ).fetchone()

    def _latest_sync(self, device_ids: Sequence[str] | None, measurement: str | None) -> dict[str, Reading]:
        db = self._db
        best: dict[str, tuple[Any, ...]] = {}
        if measurement is not None:
            devices = self._devices() if device_ids is None else dict.fromkeys(device_ids)
            pairs: Iterator[tuple[str, str]] = ((d, measurement) for d in devices)
        else:
            pairs = self._pairs(device_ids)
        for device_id, meas in list(pairs):
            row = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM readings WHERE device_id = ? AND measurement = ? ORDER BY ts DESC LIMIT 1",
                (device_id, meas),
            ).fetchone()
            if row is not None and (device_id not in best or row[2] > best[device_id][2]):
                best[device_id] = row
        return {device_id: _row_to_reading(row) for device_id, row in best.items()}

    def _downsample_sync(
        self, device_id: str, measurement: str, field: str, start: int, end: int, bucket: int
    ) -> list[Aggregate]:
        path = _json_path(field)
        if path is not None:
            source = (
                "SELECT ts, json_extract(fields, :path) AS v FROM readings "
                "WHERE device_id = :device AND measurement = :meas AND ts >= :start AND ts < :end "
                "AND json_type(fields, :path) IN ('integer', 'real')"
            )
        else:
            # Keys SQLite's JSON path syntax can't quote: match the key exactly with json_each.
            source = (
                "SELECT r.ts AS ts, j.value AS v FROM readings AS r, json_each(r.fields) AS j "
                "WHERE r.device_id = :device AND r.measurement = :meas AND r.ts >= :start AND r.ts < :end "
                "AND j.key = :field AND j.type IN ('integer', 'real')"
            )
        # ((ts % b) + b) % b is a floor modulo, so buckets stay epoch-aligned before 1970 too.
        sql = (
            "SELECT ts - ((ts % :b) + :b) % :b AS bucket, AVG(v), MIN(v), MAX(v), COUNT(v) "
            f"FROM ({source}) GROUP BY bucket ORDER BY bucket"
        )
        params = {
            "path": path,
            "field": field,
            "device": device_id,
            "meas": measurement,
            "start": start,
            "end": end,
            "b": bucket,
        }
        return [
            Aggregate(from_epoch_us(b), field, float(mean), float(lo), float(hi), int(n))
            for b, mean, lo, hi, n in self._db.execute(sql, params)
        ]

    def _count_sync(self, device_id: str | None, measurement: str | None) -> int:
        where, params = [], []
        if device_id is not None:
            where.append("device_id = ?")
            params.append(device_id)
        if measurement is not None:
            where.append("measurement = ?")
            params.append(measurement)
        sql = "SELECT COUNT(*) FROM readings" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._db.execute(sql, params).fetchone()[0])

    def _set_retention_sync(self, days: int) -> None:
        self._retention_days = days
        db = self._db
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('retention_days', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(days),),
        )

    def _apply_retention_sync(self) -> int:
        cutoff = self._cutoff_us()
        if cutoff is None:
            return 0
        db = self._db
        deleted = 0
        pairs = list(self._pairs(None))
        # Short transactions (a few hundred channels each) so ingest writes interleave.
        for i in range(0, len(pairs), 256):
            db.execute("BEGIN IMMEDIATE")
            try:
                for device_id, meas in pairs[i : i + 256]:
                    deleted += db.execute(
                        "DELETE FROM readings WHERE device_id = ? AND measurement = ? AND ts < ?",
                        (device_id, meas, cutoff),
                    ).rowcount
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return deleted

    # ------------------------------------------------------------------ TelemetryStore

    async def write(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        await self._call(self._write_sync, readings)

    async def range(
        self, device_id: str, measurement: str, start: datetime, end: datetime, limit: int = 10000
    ) -> list[Reading]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        return await self._call(self._range_sync, device_id, measurement, to_epoch_us(start), to_epoch_us(end), limit)

    async def latest(
        self, device_ids: Sequence[str] | None = None, measurement: str | None = None
    ) -> dict[str, Reading]:
        if device_ids is not None:
            if isinstance(device_ids, str):
                raise TypeError("device_ids must be a sequence of ids, not a str")
            if not device_ids:
                return {}
        return await self._call(self._latest_sync, device_ids, measurement)

    async def downsample(
        self,
        device_id: str,
        measurement: str,
        field: str,
        start: datetime,
        end: datetime,
        every: DownsampleEvery,
    ) -> list[Aggregate]:
        try:
            bucket = _BUCKET_US[every]
        except KeyError:
            raise ValueError(f"every must be one of {sorted(_BUCKET_US)}, got {every!r}") from None
        return await self._call(
            self._downsample_sync, device_id, measurement, field, to_epoch_us(start), to_epoch_us(end), bucket
        )

    async def count(self, device_id: str | None = None, measurement: str | None = None) -> int:
        return await self._call(self._count_sync, device_id, measurement)

    async def export(self, batch: int = 5000) -> AsyncIterator[list[Reading]]:
        """Every reading in primary-key order, by keyset paging (no OFFSET: each page is one index seek)."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        after: tuple[Any, ...] | None = None
        while True:
            rows = await self._call(self._export_sync, after, batch)
            if not rows:
                return
            after = rows[-1][:4]
            yield [_row_to_reading(row) for row in rows]

    def _export_sync(self, after: tuple[Any, ...] | None, batch: int) -> list[tuple[Any, ...]]:
        where = "WHERE (device_id, measurement, ts, tags) > (?, ?, ?, ?) " if after else ""
        return self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM readings {where}ORDER BY device_id, measurement, ts, tags LIMIT ?",
            (*(after or ()), batch),
        ).fetchall()

    async def set_retention(self, days: int) -> None:
        """Persist the retention in the file and delete what is already older (see `apply_retention`)."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError(f"retention days must be an int >= 1, got {days!r}")
        await self._call(self._set_retention_sync, days)
        await self.apply_retention()

    async def apply_retention(self) -> int:
        """Delete readings older than the retention now; returns how many were deleted."""
        started = time.monotonic()
        deleted = await self._call(self._apply_retention_sync)
        if deleted:
            log.info("retention deleted %d readings in %.2fs", deleted, time.monotonic() - started)
        return deleted

    async def _retention_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.apply_retention()
            except TelemetryError:
                # A locked/full database now must not kill the loop; the next run retries.
                log.exception("periodic retention failed")
