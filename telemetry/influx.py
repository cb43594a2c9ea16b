"""`InfluxStore`: the production telemetry backend, InfluxDB 1.x over its HTTP API, with a disk spool.

Owns one httpx.AsyncClient to one InfluxDB, the database + retention policy it writes to
(created/adjusted at start), the on-disk spool (telemetry/spool.py) that keeps acknowledged
writes while InfluxDB is unreachable, and the background task that replays the spool.

Write path and ordering:
- Readings become line protocol (`influxql.line_for`), `max_batch` lines per POST /write.
- If InfluxDB can't take a batch (connection error, timeout, 5xx, 429), the batch is appended to
  the spool (fsynced) and `write()` returns normally: the data is durable, on our disk.
- From then until the spool is empty again, every new batch also goes to the spool, so InfluxDB
  receives batches in the order `write()` accepted them (later writes of the same point win).
- The replay task probes /ping, re-POSTs spooled batches oldest first and deletes a segment only
  after InfluxDB accepted all of it. Replay is at-least-once (a crash between POST and commit, or
  a timed-out POST that did land, sends a batch twice); that is harmless because an identical
  point written twice is still one point in InfluxDB.
- InfluxDB refusing the data (4xx) is never spooled: a direct write raises `WriteRejected`
  naming the line; a spooled batch that is refused on replay goes to `<spool>/rejected/`.

Errors from httpx and InfluxDB are translated here, once, into telemetry.store's hierarchy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx

from telemetry import influxql
from telemetry.influxql import quote_ident, quote_string
from telemetry.reading import Aggregate, Reading, from_epoch_ns, to_epoch_us
from telemetry.spool import Spool, SpoolFull, SpoolStatus
from telemetry.store import DownsampleEvery, StoreUnavailable, TelemetryError, WriteRejected

__all__ = ["InfluxStore"]

log = logging.getLogger(__name__)

_EVERY: Final = ("1m", "1h")
_RETRYABLE_STATUS: Final = frozenset({408, 429})
# Readings per batch above which line-protocol encoding moves off the event loop (~15 µs each).
_ENCODE_IN_THREAD: Final = 500
# Device ids per `latest` query: keeps the WHERE clause (and the GET URL) a sane size.
_IDS_PER_QUERY: Final = 200


class _DatabaseMissing(TelemetryError):
    """InfluxDB lost our database (dropped, or a fresh server): re-run setup and retry once."""


class InfluxStore:
    """TelemetryStore on InfluxDB 1.x.

    url, database, username, password: the server (auth is sent as HTTP basic auth when given).
    retention: InfluxQL duration of the retention policy (`156w`, `30d`, `INF`); enforced at every
        start, and changed at run time by `set_retention`.
    spool_dir: root of the write spool; this store uses `<spool_dir>/<database>`. None disables the
        spool: `write()` then raises `StoreUnavailable` whenever InfluxDB is unreachable.
    max_spool_bytes: beyond this the spool refuses, and `write()` raises `StoreUnavailable`.
    max_batch: lines per POST /write.
    probe_interval: seconds between /ping probes while a spool backlog waits for InfluxDB.
    transport: an httpx transport (tests use httpx.MockTransport).
    """

    def __init__(
        self,
        url: str,
        database: str,
        username: str | None = None,
        password: str | None = None,
        retention: str = "156w",
        spool_dir: str | os.PathLike[str] | None = "var/telemetry-spool",
        *,
        retention_policy: str = "marketfleet",
        max_spool_bytes: int = 1 << 30,
        spool_segment_bytes: int = 16 << 20,
        max_batch: int = 5000,
        timeout: float = 10.0,
        probe_interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not database:
            raise ValueError("database must be a non-empty name")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._retention_seconds = influxql.duration_seconds(retention)  # validates early
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self._retention = retention
        self._auth = (username, password or "") if username else None
        self._max_batch = max_batch
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._transport = transport
        self.spool_dir = Path(spool_dir) / database if spool_dir is not None else None
        self._spool = (
            Spool(self.spool_dir, max_bytes=max_spool_bytes, segment_bytes=spool_segment_bytes)
            if self.spool_dir is not None
            else None
        )
        self._client: httpx.AsyncClient | None = None
        self._started = False
        self._closed = False
        self._setup_done = False
        self._setup_lock = asyncio.Lock()
        # Guards `_spooling` together with spool appends, so no batch can slip into the spool after
        # the replayer decided it was empty, and none can bypass a backlog.
        self._lock = asyncio.Lock()
        self._spooling = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._replayer: asyncio.Task[None] | None = None
        self.rejected_batches = 0
        self.replayed_batches = 0
        self.refused_batches = 0  # SpoolFull: nothing written, the caller was told to retry later
        self._refusing = False

    # ------------------------------------------------------------------ metrics

    @property
    def spooled_batches(self) -> int:
        """Batches waiting in the spool for InfluxDB."""
        return self._spool.pending_records if self._spool is not None else 0

    @property
    def spool_bytes(self) -> int:
        """Bytes the spool occupies on disk."""
        return self._spool.pending_bytes if self._spool is not None else 0

    @property
    def spooling(self) -> bool:
        """True while writes go to the spool (InfluxDB unreachable, or a backlog is replaying)."""
        return self._spooling

    def spool_status(self) -> SpoolStatus | None:
        """The spool's fill level (None without a spool): metrics and the `telemetry_spool` alert read it."""
        if self._spool is None or self.spool_dir is None:
            return None
        return SpoolStatus(
            directory=str(self.spool_dir.resolve()), bytes=self._spool.pending_bytes,
            max_bytes=self._spool.max_bytes, batches=self._spool.pending_records, refused=self.refused_batches,
            refusing=self._refusing, spooling=self._spooling, disk_full=self._refusing and self._spool.disk_full,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the spool and HTTP client, then set up database + retention policy.

        An unreachable InfluxDB does not fail `start()`: setup is retried before the next request
        (and by the replayer), and writes meanwhile go to the spool.
        """
        if self._closed:
            raise TelemetryError("InfluxStore is closed")
        if self._started:
            return
        self._started = True
        self._client = httpx.AsyncClient(
            base_url=self.url,
            auth=self._auth,
            timeout=self._timeout,
            transport=self._transport,
            trust_env=False,  # a proxy from the environment has no business between us and InfluxDB
        )
        if self._spool is not None:
            await asyncio.to_thread(self._spool.open)
            if not self._spool.empty:
                log.warning(
                    "telemetry spool %s holds %d batches from before; replaying",
                    self.spool_dir,
                    self._spool.pending_records,
                )
                self._enter_spooling()
        try:
            await self._ensure_setup()
        except StoreUnavailable as err:
            log.warning("InfluxDB at %s unavailable at start (%s); will retry", self.url, err)

    async def aclose(self) -> None:
        """Stop replaying and close; a remaining backlog stays on disk for the next start."""
        if self._closed:
            return
        self._closed = True
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self._client is not None:
            await self._client.aclose()
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close)

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

    async def wait_drained(self) -> None:
        """Wait until the spool backlog reached InfluxDB (bound it with `asyncio.timeout`)."""
        await self._drained.wait()

    # ------------------------------------------------------------------ HTTP edge

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._closed:
            raise TelemetryError("InfluxStore is closed" if self._closed else "InfluxStore is not started")
        return self._client

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:  # connect/read errors and timeouts
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {err!r}") from err
        status = response.status_code
        if status >= 500 or status in _RETRYABLE_STATUS:
            raise StoreUnavailable(f"InfluxDB at {self.url} answered {status}: {_error_text(response)}")
        if status in (401, 403):
            raise TelemetryError(f"InfluxDB at {self.url} refused our credentials ({status})")
        return response

    async def _ping(self) -> bool:
        try:
            response = await self._http.get("/ping", timeout=min(self._timeout, 5.0))
        except httpx.TransportError:
            return False
        return response.status_code == 204

    async def _query(self, q: str, *, write: bool = False) -> list[dict[str, Any]]:
        """Run InfluxQL statement(s) → one result dict per statement (each may carry an "error")."""
        params = {"db": self.database, "epoch": "ns"}
        if write:  # DDL must be POSTed
            response = await self._request("POST", "/query", params=params, data={"q": q})
        else:
            response = await self._request("GET", "/query", params={**params, "q": q})
        try:
            body = response.json()
        except ValueError as err:
            raise TelemetryError(f"InfluxDB answered {response.status_code} with non-JSON") from err
        if response.status_code != 200 or "error" in body:
            raise TelemetryError(f"InfluxQL failed ({response.status_code}): {body.get('error')}: {q}")
        results: list[dict[str, Any]] = body.get("results") or []
        return results

    async def _select(self, q: str) -> list[dict[str, Any]]:
        results = await self._query(q)
        for result in results:
            if "error" in result:
                error = result["error"]
                if "database not found" in error:
                    self._setup_done = False
                raise TelemetryError(f"InfluxQL error: {error}: {q}")
        return results

    async def _ensure_setup(self) -> None:
        if self._setup_done:
            return
        async with self._setup_lock:
            if self._setup_done:
                return
            db, rp = quote_ident(self.database), quote_ident(self.retention_policy)
            self._check(await self._query(f"CREATE DATABASE {db}", write=True))
            shard = influxql.shard_duration(self._retention_seconds)
            spec = f"DURATION {self._retention} REPLICATION 1 SHARD DURATION {shard} DEFAULT"
            results = await self._query(f"CREATE RETENTION POLICY {rp} ON {db} {spec}", write=True)
            if results and "already exists" in results[0].get("error", ""):
                results = await self._query(f"ALTER RETENTION POLICY {rp} ON {db} {spec}", write=True)
            self._check(results)
            self._setup_done = True

    @staticmethod
    def _check(results: list[dict[str, Any]]) -> None:
        for result in results:
            if "error" in result:
                raise TelemetryError(f"InfluxDB setup failed: {result['error']}")

    async def _post_write(self, body: str) -> None:
        """One POST /write; raises StoreUnavailable (retry later) or WriteRejected (bad data)."""
        await self._ensure_setup()
        try:
            await self._post_write_once(body)
        except _DatabaseMissing:
            self._setup_done = False
            await self._ensure_setup()
            await self._post_write_once(body)

    async def _post_write_once(self, body: str) -> None:
        response = await self._request(
            "POST",
            "/write",
            params={"db": self.database, "rp": self.retention_policy, "precision": "ns"},
            content=body.encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        if response.status_code == 204:
            return
        message = _error_text(response)
        if response.status_code == 404 and "database not found" in message:
            raise _DatabaseMissing(message)
        if "points beyond retention policy" in message:
            # The rest of the batch was stored; readings older than the retention would be deleted
            # anyway, so a late backfill is not an error (SqliteStore drops them the same way).
            log.warning("InfluxDB dropped readings older than the retention: %s", message)
            return
        line = influxql.offending_line(message, body)
        raise WriteRejected(
            f"InfluxDB rejected the batch ({response.status_code}): {message}" + (f"; line: {line}" if line else ""),
            line=line,
            status=response.status_code,
        )

    # ------------------------------------------------------------------ write + spool

    async def write(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        self._http  # noqa: B018 - raises if not started/closed, before anything is spooled
        if len(readings) > _ENCODE_IN_THREAD:
            bodies = await asyncio.to_thread(self._encode, readings)
        else:
            bodies = self._encode(readings)
        for body in bodies:
            await self._write_body(body)

    def _encode(self, readings: Sequence[Reading]) -> list[str]:
        line_for = influxql.line_for
        step = self._max_batch
        return [_utf8_safe("\n".join([line_for(r) for r in readings[i : i + step]]))
                for i in range(0, len(readings), step)]

    async def _write_body(self, body: str) -> None:
        if self._spool is not None and self._spooling:
            async with self._lock:
                if self._spooling:
                    await self._spool_append(body)
                    return
        try:
            await self._post_write(body)
        except StoreUnavailable as err:
            if self._spool is None:
                raise
            async with self._lock:
                await self._spool_append(body)  # SpoolFull (a StoreUnavailable) propagates
                if not self._spooling:
                    log.warning("InfluxDB unavailable (%s); spooling writes to %s", err, self.spool_dir)
                    self._enter_spooling()

    async def _spool_append(self, body: str) -> None:
        assert self._spool is not None
        try:
            await asyncio.to_thread(self._spool.append, body.encode())
        except SpoolFull:
            self.refused_batches += 1
            self._refusing = True
            raise
        except OSError as err:
            raise StoreUnavailable(f"cannot write the telemetry spool {self.spool_dir}: {err}") from err
        self._refusing = False

    def _enter_spooling(self) -> None:
        self._spooling = True
        self._drained.clear()
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.create_task(self._replay_loop(), name="telemetry-influx-replay")

    async def _replay_loop(self) -> None:
        assert self._spool is not None
        spool = self._spool
        error_delay = self._probe_interval
        while True:
            try:
                if not await self._ping():
                    await asyncio.sleep(self._probe_interval)
                    continue
                async with self._lock:
                    batch = await asyncio.to_thread(spool.peek, 4 << 20)
                    if batch is None:
                        self._spooling = self._refusing = False
                        self._drained.set()
                        log.info("telemetry spool drained; writing to InfluxDB directly again")
                        return
                body = b"\n".join(batch.payloads).decode()
                try:
                    await self._post_write(body)
                except WriteRejected as err:
                    self._dead_letter(batch.segment, batch.first, body, err)
                await asyncio.to_thread(spool.commit, batch)
                self.replayed_batches += len(batch.payloads)
                error_delay = self._probe_interval
            except StoreUnavailable as err:
                log.info("spool replay paused: %s", err)
                await asyncio.sleep(self._probe_interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never die with a backlog: log, back off (up to 30 s, e.g. for bad credentials), retry.
                log.exception("spool replay failed; retrying in %.1fs", error_delay)
                await asyncio.sleep(error_delay)
                error_delay = min(error_delay * 2, max(self._probe_interval, 30.0))

    def _dead_letter(self, segment: int, first: int, body: str, err: WriteRejected) -> None:
        assert self.spool_dir is not None
        self.rejected_batches += 1
        directory = self.spool_dir / "rejected"
        directory.mkdir(exist_ok=True)
        stem = f"{int(time.time())}-{segment:012d}-{first:06d}"
        (directory / f"{stem}.lp").write_text(body, encoding="utf-8")
        (directory / f"{stem}.err").write_text(str(err), encoding="utf-8")
        log.error("InfluxDB rejected a spooled batch (%s); kept in %s", err, directory / f"{stem}.lp")

    # ------------------------------------------------------------------ queries

    def _from(self, measurement: str | None) -> str:
        rp = quote_ident(self.retention_policy)
        return f"{rp}.{quote_ident(measurement)}" if measurement is not None else f"{rp}./.*/"

    async def _readings_query(self, measurement: str | None, select: str) -> list[Reading]:
        on = f" FROM {quote_ident(measurement)}" if measurement is not None else ""
        await self._ensure_setup()
        results = await self._select(f"SHOW TAG KEYS{on}; SHOW FIELD KEYS{on}; {select}")
        return influxql.parse_readings(
            influxql.series_of(results[2]), influxql.tag_keys(results[0]), influxql.field_types(results[1])
        )

    async def range(
        self, device_id: str, measurement: str, start: datetime, end: datetime, limit: int = 10000
    ) -> list[Reading]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        return await self._readings_query(
            measurement,
            f"SELECT * FROM {self._from(measurement)} WHERE {_device_is(device_id)} AND {_time_range(start, end)} "
            f"ORDER BY time ASC LIMIT {int(limit)}",
        )

    async def latest(
        self, device_ids: Sequence[str] | None = None, measurement: str | None = None
    ) -> dict[str, Reading]:
        if isinstance(device_ids, str):
            raise TypeError("device_ids must be a sequence of ids, not a str")
        if device_ids is None:
            chunks: list[list[str] | None] = [None]
        else:
            unique = list(dict.fromkeys(device_ids))
            chunks = [unique[i : i + _IDS_PER_QUERY] for i in range(0, len(unique), _IDS_PER_QUERY)]
        best: dict[str, Reading] = {}
        for chunk in chunks:
            where = f" WHERE {' OR '.join(_device_is(d) for d in chunk)}" if chunk else ""
            # Not LAST(*): with several fields it returns each field's last value (possibly from
            # different points) stamped with time 0. ORDER BY time DESC LIMIT 1 per device group
            # returns the newest whole point.
            readings = await self._readings_query(
                measurement,
                f'SELECT * FROM {self._from(measurement)}{where} GROUP BY "device_id" ORDER BY time DESC LIMIT 1',
            )
            for reading in readings:  # one per (measurement, device): keep each device's newest
                current = best.get(reading.device_id)
                if current is None or reading.ts > current.ts:
                    best[reading.device_id] = reading
        return best

    async def downsample(
        self,
        device_id: str,
        measurement: str,
        field: str,
        start: datetime,
        end: datetime,
        every: DownsampleEvery,
    ) -> list[Aggregate]:
        if every not in _EVERY:
            raise ValueError(f"every must be one of {list(_EVERY)}, got {every!r}")
        f = quote_ident(field)
        await self._ensure_setup()
        results = await self._query(
            f"SHOW FIELD KEYS FROM {quote_ident(measurement)}; "
            f"SELECT MEAN({f}), MIN({f}), MAX({f}), COUNT({f}) FROM {self._from(measurement)} "
            f"WHERE {_device_is(device_id)} AND {_time_range(start, end)} GROUP BY time({every}) fill(none)"
        )
        kind = influxql.field_types(results[0]).get(measurement, {}).get(field) if results else None
        if kind not in ("float", "integer"):
            return []  # absent or non-numeric: nothing to aggregate (as in SqliteStore)
        if "error" in results[1]:
            raise TelemetryError(f"InfluxQL error: {results[1]['error']}")
        out = []
        for s in influxql.series_of(results[1]):
            for ts, mean, lo, hi, n in s.get("values") or ():
                if n:
                    out.append(Aggregate(from_epoch_ns(ts), field, float(mean), float(lo), float(hi), int(n)))
        return out

    async def count(self, device_id: str | None = None, measurement: str | None = None) -> int:
        where = f" WHERE {_device_is(device_id)}" if device_id is not None else ""
        await self._ensure_setup()
        results = await self._select(f"SELECT COUNT(*) FROM {self._from(measurement)}{where} GROUP BY *")
        # COUNT(*) counts values per field; a series' points = its largest field count. Exact as
        # long as the points of one series (device, measurement, tags) share their field keys.
        return sum(
            max((v for v in row[1:] if v is not None), default=0)
            for s in influxql.series_of(results[0])
            for row in s.get("values") or ()
        )

    async def export(self, batch: int = 5000) -> AsyncIterator[list[Reading]]:
        """Every reading, channel by channel (measurement × device), in time order.

        Pages by `time >= last` and drops what the previous page already gave at that instant: one
        device channel may hold several points at the same time (different tag sets), so `time > last`
        could skip some and OFFSET would rescan from the start on every page."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        await self._ensure_setup()
        measurements = influxql.series_of((await self._select("SHOW MEASUREMENTS"))[0])
        for name in (row[0] for s in measurements for row in s.get("values") or ()):
            shown = await self._select(f'SHOW TAG VALUES FROM {quote_ident(name)} WITH KEY = "device_id"')
            for device_id in (row[1] for s in influxql.series_of(shown[0]) for row in s.get("values") or ()):
                async for page in self._export_channel(name, device_id, batch):
                    yield page

    async def _export_channel(self, measurement: str, device_id: str, batch: int) -> AsyncIterator[list[Reading]]:
        last_ns: int | None = None
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()  # identities already given at last_ns
        while True:
            since = f" AND time >= {last_ns}" if last_ns is not None else ""
            limit = batch + len(seen)
            page = await self._readings_query(
                measurement,
                f"SELECT * FROM {self._from(measurement)} WHERE {_device_is(device_id)}{since} "
                f"ORDER BY time ASC LIMIT {limit}",
            )
            fresh = [r for r in page if (to_epoch_us(r.ts) * 1000 != last_ns or _identity(r) not in seen)]
            if not fresh:
                return
            yield fresh
            newest = to_epoch_us(fresh[-1].ts) * 1000
            seen = {_identity(r) for r in page if to_epoch_us(r.ts) * 1000 == newest} | (
                seen if newest == last_ns else set())
            last_ns = newest
            if len(page) < limit:
                return

    async def set_retention(self, days: int) -> None:
        """ALTER the retention policy. InfluxDB drops readings older than it at write time at once,
        and already stored ones when its retention service next runs (every 30 min by default),
        a whole shard group at a time."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError(f"retention days must be an int >= 1, got {days!r}")
        await self._ensure_setup()
        duration = f"{days}d"
        shard = influxql.shard_duration(days * 86_400)
        self._check(
            await self._query(
                f"ALTER RETENTION POLICY {quote_ident(self.retention_policy)} ON {quote_ident(self.database)} "
                f"DURATION {duration} SHARD DURATION {shard} DEFAULT",
                write=True,
            )
        )
        self._retention, self._retention_seconds = duration, days * 86_400


def _device_is(device_id: str) -> str:
    return f'"device_id" = {quote_string(device_id)}'


def _identity(reading: Reading) -> tuple[str, tuple[tuple[str, str], ...]]:
    return reading.measurement, tuple(sorted(reading.tags.items()))


def _time_range(start: datetime, end: datetime) -> str:
    # Integer literals compared with `time` are epoch nanoseconds.
    return f"time >= {to_epoch_us(start) * 1000} AND time < {to_epoch_us(end) * 1000}"


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return response.text.strip()[:500]


def _utf8_safe(body: str) -> str:
    """Line protocol must be UTF-8; a string with a lone surrogate (JSON allows the escape) cannot be. Such
    characters are written as their `\\udXXX` escape text, so the rest of the batch is stored and nothing is
    replayed for ever (the SQLite store keeps them exactly)."""
    if body.isascii():
        return body
    try:
        body.encode()
    except UnicodeEncodeError:
        return body.encode("utf-8", "backslashreplace").decode()
    return body
