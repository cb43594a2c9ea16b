"""Wire helpers: acks, encodings, timestamps, garbage, batching, and the MF1 serial framing."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import cbor2
import pytest

from simulators.framing import MF1, FrameError, crc16, mf1_decode, mf1_encode
from simulators.transports.http import sign
from simulators.wire import Ack, batches, decode, encode, encode_messages, garbage, parse_ts, rfc3339


def test_ack_parse_collects_stored_and_rejected() -> None:
    ack = Ack.parse(
        {"seqs": [1040, 1041, 1042], "high": 1042,
         "rejected": [{"seq": 1039, "reason": "schema", "detail": "payload.humidity_pct: …"},
                      {"seq": None, "reason": "malformed", "detail": "not JSON"}]}
    )  # fmt: skip
    assert ack.seqs == (1040, 1041, 1042) and ack.high == 1042
    assert ack.done == {1039, 1040, 1041, 1042}
    assert [r.reason for r in ack.rejected] == ["schema", "malformed"]
    assert Ack.parse(json.dumps(ack.to_json()).encode()).done == ack.done
    assert Ack.parse({}).done == set()
    with pytest.raises(ValueError):
        Ack.parse([1, 2])


def test_encodings() -> None:
    messages = [{"seq": 1, "payload": {"product_name": "五花肉"}}, {"seq": 2, "payload": {}}]
    assert json.loads(encode_messages(messages[:1])) == messages[0]  # one message: an object
    assert json.loads(encode_messages(messages)) == messages  # several: an array
    assert "五花肉".encode() in encode_messages(messages)  # UTF-8, not \\u escapes
    assert cbor2.loads(encode_messages(messages, "cbor")) == messages
    assert decode(encode(messages, "cbor"), 60) == messages
    assert decode(encode(messages, "cbor")) == messages  # sniffed


def test_timestamps() -> None:
    moment = datetime(2026, 11, 23, 8, 15, 2, 120000, tzinfo=UTC)
    assert rfc3339(moment) == "2026-11-23T08:15:02.120Z"
    assert parse_ts("2026-11-23T08:15:02.120Z") == moment
    assert parse_ts(int(moment.timestamp() * 1000)) == moment


def test_garbage_is_neither_json_nor_cbor_nor_utf8() -> None:
    rng = random.Random(1)
    for size in (1, 2, 8, 64, 300):
        data = garbage(rng, size)
        assert len(data) == size
        with pytest.raises(ValueError):
            json.loads(data)
        with pytest.raises(UnicodeDecodeError):
            data.decode()
        with pytest.raises(Exception):  # noqa: B017 - cbor2 raises CBORDecodeError subclasses
            cbor2.loads(data)


def test_batches_split_by_channel_count_and_size_keeping_order() -> None:
    items = [("t", 10)] * 5 + [("e", 10)] * 2 + [("t", 600)] * 3
    out = batches(items, channel_of=lambda i: i[0], size_of=lambda i: i[1], max_messages=3, max_bytes=1000)
    assert [[c for c, _ in b] for b in out] == [["t"] * 3, ["t"] * 2, ["e"] * 2, ["t"], ["t"], ["t"]]
    assert [i for b in out for i in b] == items


def test_hmac_signature_matches_the_protocol() -> None:
    import hashlib
    import hmac

    body = b'[{"type":"test_result"}]'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1700000000, body) == f"sha256={expected}"


def test_mf1_frame_round_trip_is_ascii_with_crc() -> None:
    message = {"seq": 7, "ts": "2026-11-23T08:15:02.120Z",
               "payload": {"type": "transaction", "product_name": "白菜", "note": "a*b\r\n"}}  # fmt: skip
    line = mf1_encode("acme-SC0001", "event", message)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    assert line.isascii() and b"\\u767d\\u83dc" in line
    head, _, check = line.rstrip(b"\r\n").rpartition(b"*")
    assert head.startswith(b"MF1 acme-SC0001 event {") and int(check, 16) == crc16(head)
    frame = mf1_decode(line)
    assert (frame.device_id, frame.channel, frame.body) == ("acme-SC0001", "event", message)
    assert MF1.decode(MF1.encode("d", "ack", {"seqs": [7]})).body == {"seqs": [7]}
    assert crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value


@pytest.mark.parametrize(
    "line",
    [
        b"MF1 dev event {}*0000\r\n",  # wrong CRC
        b"MF1 dev event {}\r\n",  # no CRC
        b"XX1 dev event {}*" + b"%04X" % crc16(b"XX1 dev event {}"),  # bad magic
        b"MF1 dev event {nope}*" + b"%04X" % crc16(b"MF1 dev event {nope}"),  # not JSON
        b"MF1 dev*" + b"%04X" % crc16(b"MF1 dev"),  # too few fields
        b"\xff\xfe garbage",
    ],
)
def test_mf1_refuses_bad_lines(line: bytes) -> None:
    with pytest.raises(FrameError):
        mf1_decode(line)


def test_mf1_refuses_spaces_and_overlong_frames() -> None:
    with pytest.raises(FrameError):
        mf1_encode("has space", "event", {})
    with pytest.raises(FrameError):
        mf1_encode("dev", "event", {"x": "y" * 5000})
