"""Wire helpers: acks, encodings, timestamps, garbage, batching, HMAC signatures."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import cbor2
import pytest

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
