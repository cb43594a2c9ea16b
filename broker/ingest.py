"""`IngestPipeline`: from an authenticated `Uplink` to stored readings, dead letters and an `Ack`.

Per uplink: size check → decode (broker/codec.py) → per message: shape, timestamp, the kind's schema for the
channel (the `fleet.kinds` validator, looked up once per kind and channel), de-duplication → readings
(broker/readings.py). Uplinks are batched (broker/batcher.py): one `TelemetryStore.write` and one dead-letter
insert per batch, then every uplink's future resolves with its `Ack`. Rejected messages are dead-lettered and
listed in `ack.rejected`; nothing a device sends can make `submit` raise or stop ingest.

De-duplication is exact because the *store* is idempotent: a message's readings have a deterministic identity
(`readings.point_time`), so a replay — on this worker, or on another one sharing the device's messages through
`$share/` — rewrites identical points. The per-device `SeqWindow` is only a fast path that skips the write for
replays this worker has just seen; `IngestCursor` rows keep the highest stored seq per (device, channel) for the
ack's `high`, written in batches (`cursor_flush_s`), never per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError
from tortoise import Tortoise

from broker.batcher import Batcher
from broker.bus import EnvelopeBus
from broker.codec import MessageError, UplinkError, decode_uplink
from broker.directory import DeviceInfo, DeviceLookup
from broker.models import DeadLetter, IngestCursor
from broker.ratelimit import RateLimiter
from broker.readings import readings_for
from broker.topics import INGEST_CHANNELS
from broker.uplink import Ack, Rejection, RejectReason, Uplink
from fleet.envelope import Envelope
from fleet.kinds import spec_for
from telemetry import Reading, StoreUnavailable, TelemetryStore, WriteRejected

__all__ = ["IngestPipeline", "IngestStats", "SeqWindow"]

log = logging.getLogger(__name__)

DEAD_LETTER_BYTES: Final = 1024


# ---------------------------------------------------------------- counters


@dataclass(slots=True)
class IngestStats:
    """Counters for metrics; messages are counted once each, uplinks separately."""

    uplinks: int = 0
    accepted: int = 0  # messages stored by this worker
    duplicates: int = 0  # messages acknowledged again without a write (fast path)
    readings: int = 0  # readings written
    batches: int = 0
    store_failures: int = 0  # batches whose write failed after retries: not acknowledged
    dead_letters_lost: int = 0  # dead letters that could not be inserted
    rejected: Counter[str] = field(default_factory=Counter)  # by RejectReason

    def as_dict(self) -> dict[str, Any]:
        return {
            "uplinks": self.uplinks,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "readings": self.readings,
            "batches": self.batches,
            "store_failures": self.store_failures,
            "dead_letters_lost": self.dead_letters_lost,
            "rejected": dict(self.rejected),
        }


# ---------------------------------------------------------------- the fast-path window


class SeqWindow:
    """The last `size` seqs seen per device, as a bitmask below the device's highest seq.

    `seen` is exact inside the window and False outside it (older seqs go to the idempotent store). About
    200 bytes per device, so 100,000 devices cost ~20 MB.
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._full = (1 << size) - 1
        self._state: dict[str, tuple[int, int]] = {}  # device -> (highest seq, mask; bit i = high - i seen)

    def seen(self, device_id: str, seq: int) -> bool:
        state = self._state.get(device_id)
        if state is None:
            return False
        high, mask = state
        distance = high - seq
        return 0 <= distance < self.size and bool((mask >> distance) & 1)

    def add(self, device_id: str, seq: int) -> None:
        state = self._state.get(device_id)
        if state is None:
            self._state[device_id] = (seq, 1)
            return
        high, mask = state
        if seq > high:
            shift = seq - high
            mask = ((mask << shift) | 1) & self._full if shift < self.size else 1
            self._state[device_id] = (seq, mask)
        elif high - seq < self.size:
            self._state[device_id] = (high, mask | (1 << (high - seq)))

    def high(self, device_id: str) -> int:
        state = self._state.get(device_id)
        return state[0] if state is not None else -1

    def forget(self, device_id: str) -> None:
        self._state.pop(device_id, None)

    def __len__(self) -> int:
        return len(self._state)


# ---------------------------------------------------------------- the pipeline


@dataclass(slots=True)
class _Accepted:
    seq: int
    channel: str
    ts: datetime
    payload: dict[str, Any]
    readings: list[Reading]


@dataclass(slots=True)
class _Work:
    """One uplink while its batch is processed."""

    uplink: Uplink
    ack: Ack
    info: DeviceInfo | None = None
    accepted: list[_Accepted] = field(default_factory=list)
    replayed: list[int] = field(default_factory=list)  # seqs the window says are stored already


class IngestPipeline:
    """Validate, de-duplicate, store and acknowledge uplinks from every transport.

    `device_lookup` is usually a `broker.directory.DeviceDirectory`. The pipeline writes `DeadLetter` and
    `IngestCursor` rows through tortoise, so the registry database must be open (`write_db=False` turns that
    off for tools that run without one).
    """

    def __init__(
        self,
        store: TelemetryStore,
        device_lookup: DeviceLookup,
        max_payload_bytes: int = 64 * 1024,
        future_tolerance_s: float = 300,
        *,
        bus: EnvelopeBus | None = None,
        window_size: int = 1024,
        max_delay_s: float = 0.005,
        max_batch_uplinks: int = 500,
        max_pending: int = 20_000,
        store_retry_s: float = 10.0,
        cursor_flush_s: float = 1.0,
        write_db: bool = True,
        mqtt_rate_per_s: float | None = None,
        mqtt_burst: int = 200,
    ) -> None:
        self.store = store
        self.devices = device_lookup
        self.max_payload_bytes = max_payload_bytes
        self.future_tolerance = timedelta(seconds=future_tolerance_s)
        self.bus = bus if bus is not None else EnvelopeBus()
        self.window = SeqWindow(window_size)
        self.stats = IngestStats()
        self.store_retry_s = store_retry_s
        self.cursor_flush_s = cursor_flush_s
        self.write_db = write_db
        self._validators: dict[tuple[str, str], Callable[[Any], Any]] = {}
        # MQTT's per-device limit (HTTP and CoAP limit at their transports, answering 429 / 4.29)
        self.mqtt_limiter = RateLimiter(mqtt_rate_per_s, mqtt_burst) if mqtt_rate_per_s else None
        self._limited_noted: dict[str, tuple[float, int]] = {}  # device -> (last dead letter, refused since)
        self._highs: dict[str, int] = {}  # device -> highest seq known stored (cursor rows + this worker)
        self._dirty_cursors: dict[tuple[str, str], int] = {}
        self._pending_dead: list[DeadLetter] = []  # from transports (e.g. forbidden topics), written with a batch
        self._last_cursor_flush = time.monotonic()
        self._cursor_task: asyncio.Task[None] | None = None
        self._stop_cursors = asyncio.Event()
        self._batcher: Batcher[Uplink, Ack] = Batcher(
            self._process,
            lambda uplink, _exc: Ack(uplink.device_id, high=self._highs.get(uplink.device_id, -1)),
            max_delay_s=max_delay_s,
            max_items=max_batch_uplinks,
            max_pending=max_pending,
            size=lambda uplink: len(uplink.body),
            name="ingest-batcher",
        )
        self._started = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._batcher.start()
        if self.write_db:
            self._stop_cursors = asyncio.Event()
            self._cursor_task = asyncio.create_task(self._cursor_loop(), name="ingest-cursor-flush")

    async def aclose(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._batcher.aclose()
        if self._cursor_task is not None:
            # Asked to stop, not cancelled: a cancel inside a SQLite bulk write would leave the shared connection
            # in an open transaction, and the next writer (rules, the final flush below) would fail.
            self._stop_cursors.set()
            await self._cursor_task
            self._cursor_task = None
        await self.flush_dead_letters()
        await self.flush_cursors()

    async def __aenter__(self) -> IngestPipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- entry points

    async def submit(self, uplink: Uplink) -> Ack:
        """Process one uplink (batched with others) and return its acknowledgement. Never raises for bad input."""
        return await (await self._batcher.enqueue(uplink))

    async def enqueue(self, uplink: Uplink) -> asyncio.Future[Ack]:
        """Queue an uplink (waiting while the queue is full); the future resolves with its Ack."""
        return await self._batcher.enqueue(uplink)

    def enqueue_nowait(self, uplink: Uplink) -> asyncio.Future[Ack]:
        """Queue an uplink without waiting (check `has_room` first, or the queue grows past `max_pending`)."""
        return self._batcher.enqueue_nowait(uplink)

    def push(self, uplink: Uplink, reply: Callable[[Ack], None]) -> None:
        """Queue an uplink without waiting; `reply(ack)` runs from the batch task once its batch is stored (or
        failed). For transports that take thousands of uplinks a second: no future per uplink."""
        self._batcher.push(uplink, reply)

    @property
    def has_room(self) -> bool:
        return self._batcher.has_room

    @property
    def pending(self) -> int:
        return self._batcher.pending

    def high(self, device_id: str) -> int:
        return self._highs.get(device_id, -1)

    def dead_letter(self, uplink: Uplink, reason: RejectReason, detail: str) -> Rejection:
        """Record an uplink a transport refused before ingest (e.g. `forbidden_topic`); written in batches."""
        self.stats.rejected[reason] += 1
        self._pending_dead.append(_dead_letter(uplink, reason, detail, uplink.body))
        return Rejection(None, reason, detail)

    def admit(self, uplink: Uplink) -> bool:
        """MQTT transports ask before queueing: False when the device has used up its token bucket. The uplink
        is then dropped unacknowledged (the device keeps it in its outbox and sends it again later), counted
        and dead-lettered as `rate_limited` - at most one dead letter per device and second, so that a flood
        cannot flood the registry database either. Other devices are not affected."""
        limiter = self.mqtt_limiter
        if limiter is None or limiter.take(uplink.device_id) == 0.0:
            return True
        self.stats.rejected["rate_limited"] += 1
        now = time.monotonic()
        last, refused = self._limited_noted.get(uplink.device_id, (float("-inf"), 0))
        if now - last < 1.0:
            self._limited_noted[uplink.device_id] = (last, refused + 1)
            return False
        if len(self._limited_noted) > 100_000:
            self._limited_noted.clear()
        self._limited_noted[uplink.device_id] = (now, 0)
        more = f"; {refused} more refused since the last such dead letter" if refused else ""
        self._pending_dead.append(_dead_letter(
            uplink, "rate_limited", f"rate limited: more than {limiter.rate:g} uplinks/s (burst "
            f"{limiter.burst:g}) from this device; not acknowledged, send it again later{more}", uplink.body))
        return False

    # ---------------------------------------------------------------- one batch

    async def _process(self, uplinks: list[Uplink]) -> list[Ack]:
        stats = self.stats
        stats.batches += 1
        stats.uplinks += len(uplinks)
        now = datetime.now(UTC)
        works = [_Work(u, Ack(u.device_id)) for u in uplinks]
        dead, self._pending_dead = self._pending_dead, []
        device_ids = {u.device_id for u in uplinks}
        try:
            devices = await self.devices.get_many(device_ids)
        except Exception:
            # Registry unreachable: answer nothing (the devices keep their outbox and replay later).
            log.exception("device lookup failed; %d uplinks left unacknowledged", len(uplinks))
            stats.store_failures += 1
            return [self._bare_ack(u.device_id) for u in uplinks]
        await self._load_highs([d for d in device_ids if d in devices])

        in_batch: set[tuple[str, int]] = set()
        for work in works:
            work.info = devices.get(work.uplink.device_id)
            self._check_uplink(work, now, in_batch, dead)

        readings = [r for work in works for acc in work.accepted for r in acc.readings]
        stored = await self._write(readings, works, dead)
        if dead:
            await self._insert_dead_letters(dead)
        return [self._finish(work, stored) for work in works]

    def _check_uplink(self, work: _Work, now: datetime, in_batch: set[tuple[str, int]], dead: list[DeadLetter]) -> None:
        uplink = work.uplink
        info = work.info
        if len(uplink.body) > self.max_payload_bytes:
            self._reject(work, None, "oversized", f"uplink of {len(uplink.body)} bytes; at most "
                         f"{self.max_payload_bytes}", uplink.body, dead)
            return
        if info is None:
            self._reject(work, None, "unknown_device", f"device {uplink.device_id!r} is not registered",
                         uplink.body, dead)
            return
        if not info.active:
            self._reject(work, None, "unknown_device", f"device {uplink.device_id!r} is {info.status}",
                         uplink.body, dead)
            return
        if uplink.channel not in INGEST_CHANNELS:
            self._reject(work, None, "forbidden_topic", f"channel {uplink.channel!r}: uplinks go to telemetry, "
                         "event or state", uplink.body, dead)
            return
        try:
            messages = decode_uplink(uplink.body, uplink.content_format)
        except UplinkError as err:
            self._reject(work, None, err.reason, err.detail, uplink.body, dead)
            return
        limit = now + self.future_tolerance
        device_id = uplink.device_id
        channel = uplink.channel
        for message in messages:
            if isinstance(message, MessageError):
                self._reject(work, message.seq, "malformed", message.detail, _encode(message.raw), dead)
                continue
            seq = message.seq
            ts = message.ts or now
            if ts > limit:
                self._reject(work, seq, "future_timestamp", f"ts: {ts.isoformat()} is more than "
                             f"{int(self.future_tolerance.total_seconds())} s ahead of the platform clock",
                             _encode_message(message), dead)
                continue
            key = (device_id, seq)
            if key in in_batch or self.window.seen(device_id, seq):
                work.replayed.append(seq)
                continue
            try:
                model = self._validator(info.kind, channel)(message.payload)
            except ValidationError as err:
                self._reject(work, seq, "schema", _validation_detail(err, message.payload), _encode_message(message),
                             dead)
                continue
            except KeyError as err:
                self._reject(work, seq, "schema", str(err.args[0]) if err.args else str(err),
                             _encode_message(message), dead)
                continue
            try:
                readings = readings_for(device_id, info.kind, info.market, channel, seq, ts, model)
            except (ValueError, TypeError) as err:
                self._reject(work, seq, "schema", f"payload: {err}", _encode_message(message), dead)
                continue
            in_batch.add(key)
            work.accepted.append(_Accepted(seq, channel, ts, message.payload, readings))

    def _validator(self, kind: str, channel: str) -> Callable[[Any], Any]:
        """`fleet.kinds.validate_payload` without its per-message catalog look-ups (KeyError as it raises)."""
        validate = self._validators.get((kind, channel))
        if validate is None:
            # the core validator itself: TypeAdapter.validate_python adds a Python call with default options
            validate = spec_for(kind).adapter(channel).validator.validate_python
            self._validators[(kind, channel)] = validate
        return validate

    def _reject(
        self, work: _Work, seq: int | None, reason: RejectReason, detail: str, payload: bytes, dead: list[DeadLetter]
    ) -> None:
        self.stats.rejected[reason] += 1
        work.ack.rejected.append(Rejection(seq, reason, detail))
        dead.append(_dead_letter(work.uplink, reason, detail, payload))

    async def _write(self, readings: list[Reading], works: list[_Work], dead: list[DeadLetter]) -> bool:
        """Store the batch; True when every accepted message is durable (the rest was dead-lettered)."""
        if not readings:
            return True
        deadline = time.monotonic() + self.store_retry_s
        delay = 0.05
        while True:
            try:
                await self.store.write(readings)
                self.stats.readings += len(readings)
                return True
            except StoreUnavailable as err:
                if time.monotonic() + delay > deadline:
                    log.error("telemetry store unavailable for %.0f s, batch not acknowledged: %s",
                              self.store_retry_s, err)
                    self.stats.store_failures += 1
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except WriteRejected as err:
                log.warning("store refused a batch (%s); writing message by message to find the bad one", err)
                return await self._write_isolated(works, dead)

    async def _write_isolated(self, works: list[_Work], dead: list[DeadLetter]) -> bool:
        for work in works:
            kept: list[_Accepted] = []
            for acc in work.accepted:
                try:
                    if acc.readings:
                        await self.store.write(acc.readings)
                        self.stats.readings += len(acc.readings)
                    kept.append(acc)
                except WriteRejected as err:
                    self._reject(work, acc.seq, "schema", f"payload: the store refused it: {err}",
                                 _encode({"seq": acc.seq, "payload": acc.payload}), dead)
                except StoreUnavailable:
                    self.stats.store_failures += 1
                    return False
            work.accepted = kept
        return True

    def _finish(self, work: _Work, stored: bool) -> Ack:
        ack = work.ack
        info = work.info
        device_id = work.uplink.device_id
        seqs: list[int] = []
        if stored and work.accepted:
            bus = self.bus if self.bus.has_subscribers else None
            received = datetime.now(UTC)
            for acc in work.accepted:
                seqs.append(acc.seq)
                self.window.add(device_id, acc.seq)
                key = (device_id, acc.channel)
                if acc.seq > self._dirty_cursors.get(key, -1):
                    self._dirty_cursors[key] = acc.seq
                if bus is not None and info is not None:
                    bus.publish(Envelope.model_construct(
                        device_id=device_id, kind=info.kind, market=info.market, channel=acc.channel,
                        ts=acc.ts, seq=acc.seq, payload=acc.payload, received_at=received,
                        transport=work.uplink.transport,
                    ))
            self.stats.accepted += len(work.accepted)
        if work.replayed:
            # Duplicates of messages stored earlier are acknowledged again; duplicates of a message written in
            # this very batch only if that write succeeded.
            for seq in work.replayed:
                if stored or self.window.seen(device_id, seq):
                    seqs.append(seq)
            self.stats.duplicates += len(work.replayed)
        if seqs:
            high = max(self._highs.get(device_id, -1), max(seqs))
            self._highs[device_id] = high
        ack.seqs = seqs
        ack.high = self._highs.get(device_id, -1)
        return ack

    def _bare_ack(self, device_id: str) -> Ack:
        return Ack(device_id, high=self._highs.get(device_id, -1))

    # ---------------------------------------------------------------- registry rows

    async def _insert_dead_letters(self, dead: list[DeadLetter]) -> None:
        if not self.write_db:
            return
        try:
            await DeadLetter.bulk_create(dead, batch_size=500)
        except Exception:
            self.stats.dead_letters_lost += len(dead)
            log.exception("could not insert %d dead letters", len(dead))

    async def _load_highs(self, device_ids: list[str]) -> None:
        missing = [d for d in device_ids if d not in self._highs]
        if not missing:
            return
        for device_id in missing:
            self._highs[device_id] = -1
        if not self.write_db:
            return
        try:
            rows = await IngestCursor.filter(device_id__in=missing).values("device_id", "last_seq")
        except Exception:
            log.exception("could not read ingest cursors")
            return
        for row in rows:
            if row["last_seq"] > self._highs.get(row["device_id"], -1):
                self._highs[row["device_id"]] = row["last_seq"]

    async def _cursor_loop(self) -> None:
        while not self._stop_cursors.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_cursors.wait(), self.cursor_flush_s)
            if self._stop_cursors.is_set():
                return  # aclose() does the last flush
            try:
                await self.flush_dead_letters()
                await self.flush_cursors()
            except Exception:
                log.exception("ingest cursor flush failed; retrying")

    async def flush_dead_letters(self) -> None:
        """Insert dead letters recorded by transports since the last batch."""
        if self._pending_dead:
            dead, self._pending_dead = self._pending_dead, []
            await self._insert_dead_letters(dead)

    async def flush_cursors(self) -> None:
        """Write the highest stored seq per (device, channel) in one statement, keeping the larger value."""
        if not self._dirty_cursors or not self.write_db:
            return
        dirty, self._dirty_cursors = self._dirty_cursors, {}
        conn = Tortoise.get_connection("default")
        dialect = conn.capabilities.dialect
        params = "?, ?, ?, ?" if dialect == "sqlite" else "$1, $2, $3, $4"
        sql = (
            f"INSERT INTO ingest_cursor (device_id, channel, last_seq, updated_at) VALUES ({params}) "
            "ON CONFLICT (device_id, channel) DO UPDATE SET "
            "last_seq = CASE WHEN excluded.last_seq > ingest_cursor.last_seq "
            "THEN excluded.last_seq ELSE ingest_cursor.last_seq END, updated_at = excluded.updated_at"
        )
        now = datetime.now(UTC)
        stamp: Any = now.isoformat(sep=" ") if dialect == "sqlite" else now
        rows = [[device_id, channel, seq, stamp] for (device_id, channel), seq in dirty.items()]
        try:
            await conn.execute_many(sql, rows)
        except Exception:
            for key, seq in dirty.items():  # keep them for the next flush
                if seq > self._dirty_cursors.get(key, -1):
                    self._dirty_cursors[key] = seq
            raise
        self._last_cursor_flush = time.monotonic()


def _dead_letter(uplink: Uplink, reason: str, detail: str, payload: bytes) -> DeadLetter:
    return DeadLetter(
        transport=uplink.transport,
        device_id=uplink.device_id[:64],
        topic=uplink.topic[:255],
        reason=reason,
        detail=detail,
        payload=bytes(payload[:DEAD_LETTER_BYTES]),
    )


def _validation_detail(err: ValidationError, payload: dict[str, Any]) -> str:
    """`payload.<field>: <problem>` for the first error (pydantic's discriminator step left out of the path)."""
    errors = err.errors(include_url=False)
    if not errors:
        return str(err)
    first = errors[0]
    parts = list(first.get("loc", ()))
    if parts and parts[0] in (payload.get("type"), payload.get("command")) and isinstance(parts[0], str):
        parts = parts[1:]
    loc = ".".join(str(part) for part in ("payload", *parts))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first.get('msg', 'invalid')}{more}"


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")).encode()[:DEAD_LETTER_BYTES]
    except (TypeError, ValueError):
        return repr(value).encode()[:DEAD_LETTER_BYTES]


def _encode_message(message: Any) -> bytes:
    return _encode({"seq": message.seq, "ts": message.ts, "payload": message.payload})
