"""Spool: durable FIFO of batches across segments, restarts, torn tails and a size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetry.spool import Spool, SpoolFull, encode_record
from telemetry.store import StoreUnavailable, TelemetryError


def drain(spool: Spool, max_bytes: int = 1 << 20) -> list[bytes]:
    out: list[bytes] = []
    while (batch := spool.peek(max_bytes)) is not None:
        out.extend(batch.payloads)
        spool.commit(batch)
    return out


def test_fifo_across_segments(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=100) as spool:
        payloads = [f"batch-{i:03d}".encode() * 3 for i in range(50)]
        for p in payloads:
            spool.append(p)
        assert spool.pending_records == 50
        assert len(list(tmp_path.glob("*.seg"))) > 5
        assert spool.pending_payloads() == payloads
        assert drain(spool, max_bytes=64) == payloads
        assert spool.empty and spool.pending_bytes == 0
        assert list(tmp_path.glob("*.seg")) == []


def test_appends_while_draining_keep_order(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"1")
        spool.append(b"2")
        batch = spool.peek()  # seals the active segment
        assert batch is not None and batch.payloads == (b"1", b"2")
        spool.append(b"3")  # goes to a new segment
        spool.commit(batch)
        assert drain(spool) == [b"3"]


def test_peek_is_not_consuming_and_commit_must_be_in_order(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"a")
        spool.append(b"b")
        first = spool.peek(max_bytes=1)
        assert first is not None and first.payloads == (b"a",)
        assert spool.peek(max_bytes=1) == first
        spool.commit(first)
        with pytest.raises(TelemetryError):
            spool.commit(first)
        assert drain(spool) == [b"b"]


def test_survives_reopen_and_resumes_where_it_was(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(5):
            spool.append(b"%d" % i)
    with Spool(tmp_path) as spool:
        assert spool.pending_records == 5
        batch = spool.peek(max_bytes=1)
        assert batch is not None
        spool.commit(batch)
        spool.append(b"5")
        assert drain(spool) == [b"1", b"2", b"3", b"4", b"5"]


def test_torn_last_record_is_ignored_and_cut_on_recovery(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"kept-1")
        spool.append(b"kept-2")
    (segment,) = tmp_path.glob("*.seg")
    good_size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(encode_record(b"torn record")[:9])
    with Spool(tmp_path) as spool:
        assert segment.stat().st_size == good_size
        assert spool.pending_records == 2
        spool.append(b"after")
        assert drain(spool) == [b"kept-1", b"kept-2", b"after"]


def test_corrupt_record_is_skipped_on_recovery(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for p in (b"one", b"two", b"three"):
            spool.append(p)
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(encode_record(b"one")) + 12] ^= 0xFF  # first payload byte of "two"
    segment.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert spool.corrupt_records == 1
        assert drain(spool) == [b"one", b"three"]


def test_full_spool_refuses_without_writing(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=100) as spool:
        spool.append(b"x" * 40)
        before = spool.pending_bytes
        with pytest.raises(SpoolFull) as exc:
            spool.append(b"x" * 60)
        assert isinstance(exc.value, StoreUnavailable)
        assert spool.pending_bytes == before and spool.pending_records == 1
        assert drain(spool) == [b"x" * 40]
        spool.append(b"x" * 60)  # room again once drained


def test_one_spool_per_directory(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(TelemetryError, match="in use"):
        Spool(tmp_path).open()
    with Spool(tmp_path) as again:  # the lock went with the first one
        assert again.empty


def test_append_requires_open(tmp_path: Path) -> None:
    with pytest.raises(TelemetryError):
        Spool(tmp_path).append(b"x")
