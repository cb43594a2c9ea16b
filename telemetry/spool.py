"""An append-only, crash-safe on-disk queue of opaque batches (the InfluxDB write spool).

Owns one directory: segment files `<number>.seg`, each a sequence of records, plus a `LOCK`
file (flock) so two processes never drain the same spool. A record is

    magic b"MFS1" | u32 payload length | u32 CRC32 of (length bytes + payload) | payload

little-endian. `append` fsyncs before returning, so an acknowledged batch survives a crash. On
open, a torn last record (short header or payload, from a crash mid-append) is cut off; a record
whose CRC doesn't match is skipped and logged. A failed append (ENOSPC mid-record, a failed fsync) truncates
the segment back to its last whole record, so a full disk never leaves a torn record behind; ENOSPC/EDQUOT is
reported as `SpoolDiskFull`, back-pressure like the spool's own limit.

Order: records are consumed strictly in append order. The consumer `peek`s the oldest records,
hands them on, then `commit`s; a segment file is deleted only once all its records are committed.
A crash between hand-on and commit replays those records again (at-least-once), which is why
the spool only carries batches whose replay is idempotent.

Blocking file I/O throughout: callers on an event loop run these methods in a worker thread.
All public methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from telemetry.store import StoreUnavailable, TelemetryError

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "Spool",
    "SpoolBatch",
    "SpoolDiskFull",
    "SpoolFull",
    "SpoolStatus",
    "decode_records",
    "encode_record",
]

log = logging.getLogger(__name__)

MAGIC: Final = b"MFS1"
_HEADER: Final = struct.Struct("<4sII")
HEADER_SIZE: Final = _HEADER.size
_MAX_RECORD: Final = 1 << 30  # a length beyond this is corruption, not data
_SUFFIX: Final = ".seg"


class SpoolFull(StoreUnavailable):
    """Appending would take the spool past its size limit (back-pressure, nothing was written)."""


class SpoolDiskFull(SpoolFull):
    """The filesystem under the spool has no room (ENOSPC, EDQUOT) before the spool reached its own limit.

    Back-pressure exactly like `SpoolFull`: the record was not kept (any part of it that reached the file was cut
    off again), and the spool takes appends again as soon as the filesystem has room.
    """


_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """How full a store's write spool is, for metrics and the rules' `telemetry_spool` check."""

    directory: str
    bytes: int  # on disk now
    max_bytes: int  # the limit past which appends are refused
    batches: int  # waiting for the backend
    refused: int  # appends refused for lack of room since the store started
    refusing: bool  # the latest append was refused (back-pressure on ingest now)
    spooling: bool  # writes go to the spool (backend unreachable, or a backlog replaying)
    disk_full: bool = False  # the latest append was refused because the filesystem itself is full

    @property
    def fill_percent(self) -> float:
        return round(100.0 * self.bytes / self.max_bytes, 1)

    def as_dict(self) -> dict[str, object]:
        return {"directory": self.directory, "bytes": self.bytes, "max_bytes": self.max_bytes,
                "fill_percent": self.fill_percent, "batches": self.batches, "refused": self.refused,
                "refusing": self.refusing, "spooling": self.spooling, "disk_full": self.disk_full}


def encode_record(payload: bytes) -> bytes:
    """Frame `payload` as one spool record."""
    length = struct.pack("<I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return _HEADER.pack(MAGIC, len(payload), crc) + payload


@dataclass(frozen=True, slots=True)
class DecodeResult:
    records: list[bytes]
    valid_end: int  # offset just past the last intact record: where a torn tail starts
    corrupt: int  # records skipped for a CRC mismatch
    torn: bool  # data after valid_end that isn't a complete record


def decode_records(data: bytes) -> DecodeResult:
    """Parse a segment's bytes: intact records in order, skipping CRC failures, stopping at a torn tail."""
    records: list[bytes] = []
    offset = corrupt = 0
    valid_end = 0
    size = len(data)
    while offset < size:
        if size - offset < HEADER_SIZE:
            break
        magic, length, crc = _HEADER.unpack_from(data, offset)
        if magic != MAGIC or length > _MAX_RECORD:
            # Framing is lost (e.g. a zero-filled tail after a crash): nothing after can be trusted.
            break
        start = offset + HEADER_SIZE
        end = start + length
        if end > size:
            break
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<I", length))) != crc:
            corrupt += 1
        else:
            records.append(payload)
        offset = valid_end = end
    return DecodeResult(records, valid_end, corrupt, valid_end < size)


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Records handed out by `Spool.peek`, to be `commit`ted once they were delivered."""

    segment: int
    first: int  # index of the first record within the segment
    payloads: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.payloads)


@dataclass(slots=True)
class _Segment:
    number: int
    size: int  # bytes on disk
    count: int  # intact records
    records: list[bytes] | None = None  # loaded lazily when the segment reaches the head


class Spool:
    """See the module docstring. `max_bytes` bounds the disk used; `segment_bytes` the file size."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: bool = True,
    ) -> None:
        if max_bytes < 1 or segment_bytes < 1:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._mutex = threading.RLock()
        self._sealed: list[_Segment] = []  # oldest first
        self._active: _Segment | None = None
        self._active_file: io.FileIO | None = None  # unbuffered: a failed write leaves no bytes behind in Python
        self._cursor = 0  # records of the head segment already committed
        self._next_number = 1
        self._lock_fd: int | None = None
        self.corrupt_records = 0
        self.disk_full = False  # the latest append failed for lack of room on the filesystem

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        with self._mutex:
            if self._lock_fd is not None:
                return
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:  # a full or read-only disk at start: say which directory, not a traceback
                raise TelemetryError(f"cannot open the telemetry spool {self.directory}: {err.strerror}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise TelemetryError(f"spool {self.directory} is in use by another process") from None
            self._lock_fd = fd
            for number, path in self._segment_files():
                self._recover(number, path)
                self._next_number = number + 1

    def close(self) -> None:
        with self._mutex:
            self._seal_active()
            self._sealed.clear()
            self._cursor = 0
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> Spool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _segment_files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                found.append((int(path.stem), path))
            except ValueError:
                log.warning("ignoring stray file %s in spool", path)
        return sorted(found)

    def _recover(self, number: int, path: Path) -> None:
        data = path.read_bytes()
        result = decode_records(data)
        if result.torn:
            # Only the segment being appended to at a crash can have a torn tail: those bytes were
            # never acknowledged. Cut them off so the file holds whole records only.
            log.warning(
                "spool segment %s: ignoring %d bytes of torn record at offset %d",
                path,
                len(data) - result.valid_end,
                result.valid_end,
            )
            with path.open("r+b") as f:
                f.truncate(result.valid_end)
                os.fsync(f.fileno())
        if result.corrupt:
            log.error("spool segment %s: skipped %d records with a bad CRC", path, result.corrupt)
            self.corrupt_records += result.corrupt
        if not result.records:
            path.unlink()
            return
        # Records are re-read when the segment reaches the head: a full spool can be larger than RAM.
        self._sealed.append(_Segment(number, result.valid_end, len(result.records)))

    # ------------------------------------------------------------------ metrics

    @property
    def pending_records(self) -> int:
        """Records appended and not yet committed."""
        with self._mutex:
            total = sum(s.count for s in self._sealed) - self._cursor
            if self._active is not None:
                total += self._active.count
            return total

    @property
    def pending_bytes(self) -> int:
        """Bytes the spool occupies on disk (a head segment counts fully until deleted)."""
        with self._mutex:
            total = sum(s.size for s in self._sealed)
            if self._active is not None:
                total += self._active.size
            return total

    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    # ------------------------------------------------------------------ producer

    def append(self, payload: bytes) -> None:
        """Durably add one record; raises `SpoolFull` (writing nothing) past `max_bytes`, and `SpoolDiskFull`
        (keeping nothing) when the filesystem has no room. Other OSErrors propagate, also keeping nothing."""
        record = encode_record(payload)
        with self._mutex:
            if self._lock_fd is None:
                raise TelemetryError("spool is not open")
            if self.pending_bytes + len(record) > self.max_bytes:
                raise SpoolFull(
                    f"telemetry spool {self.directory} is full "
                    f"({self.pending_bytes} + {len(record)} > {self.max_bytes} bytes)"
                )
            try:
                if self._active is None:
                    self._start_segment()
                self._write(record)
            except OSError as err:
                if err.errno not in _DISK_FULL:
                    raise
                self.disk_full = True
                raise SpoolDiskFull(
                    f"telemetry spool {self.directory}: no room on its filesystem ({err.strerror}); "
                    f"{self.pending_bytes} bytes spooled, limit {self.max_bytes}"
                ) from err
            self.disk_full = False
            assert self._active is not None
            if self._active.size >= self.segment_bytes:
                self._seal_active()

    def _write(self, record: bytes) -> None:
        """Write and fsync `record` at the end of the active segment, or leave the segment as it was."""
        assert self._active is not None and self._active_file is not None
        f, good = self._active_file, self._active.size
        try:
            view = memoryview(record)
            while view:  # a nearly full filesystem takes part of a write, then refuses the rest
                written = f.write(view)
                view = view[written or 0 :]
            if self._fsync:
                os.fsync(f.fileno())
        except OSError:
            self._rewind(good)
            raise
        self._active.size = good + len(record)
        self._active.count += 1

    def _rewind(self, good: int) -> None:
        """Cut off what a failed append left after the last whole record, so the file never holds a torn one.

        Truncating needs no free space. If even that fails, seal the segment: decoding ignores a torn tail, and
        the next append starts a clean file.
        """
        assert self._active is not None and self._active_file is not None
        fd = self._active_file.fileno()
        try:
            os.ftruncate(fd, good)
            os.lseek(fd, good, os.SEEK_SET)
            if self._fsync:
                os.fsync(fd)
        except OSError as err:
            log.warning("spool segment %d: cannot cut off a failed append (%s); sealing it", self._active.number, err)
            self._seal_active()

    def _start_segment(self) -> None:
        number = self._next_number
        self._next_number += 1
        path = self._path(number)
        f = io.FileIO(path, "xb")  # ENOSPC here (no inode or directory block) leaves no segment behind
        self._active_file = f
        self._active = _Segment(number, 0, 0)
        if self._fsync:
            # Make the new directory entry itself durable, or a crash could lose the whole file.
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _seal_active(self) -> None:
        if self._active_file is not None:
            with contextlib.suppress(OSError):
                self._active_file.close()
            self._active_file = None
        if self._active is not None:
            if self._active.count:
                self._sealed.append(self._active)
            else:
                with contextlib.suppress(OSError):
                    self._path(self._active.number).unlink()
            self._active = None

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{_SUFFIX}"

    # ------------------------------------------------------------------ consumer

    def peek(self, max_bytes: int = 4 << 20, max_records: int | None = None) -> SpoolBatch | None:
        """The oldest uncommitted records of one segment (at least one, then up to `max_bytes`).

        Seals the active segment when it is all that is left, so producers move on to a new file
        while the consumer drains this one.
        """
        with self._mutex:
            while True:
                if not self._sealed:
                    if self._active is None or not self._active.count:
                        return None
                    self._seal_active()
                head = self._sealed[0]
                if head.records is None:
                    head.records = self._load(head)
                pending = head.records[self._cursor :]
                if pending:
                    break
                # Nothing left in it (the file changed under us): drop it and look at the next one.
                self._drop_head()
            payloads: list[bytes] = []
            size = 0
            for payload in pending:
                if payloads and (
                    size + len(payload) > max_bytes or (max_records is not None and len(payloads) >= max_records)
                ):
                    break
                payloads.append(payload)
                size += len(payload)
            return SpoolBatch(head.number, self._cursor, tuple(payloads))

    def _load(self, segment: _Segment) -> list[bytes]:
        result = decode_records(self._path(segment.number).read_bytes())
        if result.corrupt:
            log.error("spool segment %d: skipped %d records with a bad CRC", segment.number, result.corrupt)
            self.corrupt_records += result.corrupt
        segment.count = len(result.records)
        return result.records

    def commit(self, batch: SpoolBatch) -> None:
        """Mark `batch` delivered; deletes its segment file once every record in it is delivered."""
        with self._mutex:
            if not self._sealed or self._sealed[0].number != batch.segment or self._cursor != batch.first:
                raise TelemetryError("spool commit out of order")
            self._cursor += len(batch.payloads)
            if self._cursor >= self._sealed[0].count:
                self._drop_head()

    def _drop_head(self) -> None:
        head = self._sealed.pop(0)
        self._cursor = 0
        with contextlib.suppress(FileNotFoundError):
            self._path(head.number).unlink()

    def pending_payloads(self) -> list[bytes]:
        """Every uncommitted payload in order, without consuming (for inspection and tests)."""
        with self._mutex:
            out: list[bytes] = []
            for i, segment in enumerate(self._sealed):
                records = segment.records
                if records is None:
                    records = decode_records(self._path(segment.number).read_bytes()).records
                out.extend(records[self._cursor if i == 0 else 0 :])
            if self._active is not None and self._active.count:
                out.extend(decode_records(self._path(self._active.number).read_bytes()).records)
            return out
