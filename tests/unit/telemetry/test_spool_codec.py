"""The spool record format: length + CRC framing, torn and corrupt records."""

from __future__ import annotations

import struct

from telemetry.spool import HEADER_SIZE, MAGIC, decode_records, encode_record


def test_round_trip() -> None:
    payloads = [b"", b"a", b"m,device_id=x f=1 1\nm,device_id=y f=2 2", bytes(range(256)) * 10]
    data = b"".join(encode_record(p) for p in payloads)
    result = decode_records(data)
    assert result.records == payloads
    assert result.valid_end == len(data)
    assert not result.torn and result.corrupt == 0


def test_header_layout() -> None:
    record = encode_record(b"xyz")
    assert record[:4] == MAGIC
    assert struct.unpack_from("<I", record, 4)[0] == 3
    assert len(record) == HEADER_SIZE + 3


def test_every_torn_tail_is_ignored() -> None:
    good = encode_record(b"first") + encode_record(b"second")
    last = encode_record(b"third record that was being written")
    for cut in range(1, len(last)):
        result = decode_records(good + last[:cut])
        assert result.records == [b"first", b"second"]
        assert result.valid_end == len(good)
        assert result.torn


def test_corrupt_payload_is_skipped_and_later_records_kept() -> None:
    bad = bytearray(encode_record(b"flipped"))
    bad[-1] ^= 0xFF
    data = encode_record(b"one") + bytes(bad) + encode_record(b"three")
    result = decode_records(data)
    assert result.records == [b"one", b"three"]
    assert result.corrupt == 1
    assert not result.torn


def test_zero_filled_tail_stops_decoding() -> None:
    data = encode_record(b"one") + b"\0" * 64
    result = decode_records(data)
    assert result.records == [b"one"]
    assert result.torn


def test_absurd_length_is_treated_as_lost_framing() -> None:
    data = encode_record(b"one") + MAGIC + struct.pack("<II", 0xFFFFFFFF, 0) + b"junk"
    result = decode_records(data)
    assert result.records == [b"one"] and result.torn
