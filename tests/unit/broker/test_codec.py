"""Decoding uplink bodies: JSON/CBOR detection, arrays, per-message errors that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.codec import MessageError, UplinkError, _load, decode_uplink, detect_format, parse_message, parse_ts
from fleet.envelope import DeviceMessage

pytestmark = pytest.mark.timeout(30)


def test_json_is_detected_by_first_non_space_byte() -> None:
    assert detect_format(b'  \n{"seq": 1}') == "json"
    assert detect_format(b" [1]") == "json"
    assert detect_format(cbor2.dumps({"seq": 1})) == "cbor"


def test_single_json_message_decodes_with_rfc3339_time() -> None:
    body = json.dumps({"seq": 7, "ts": "2026-11-23T08:15:02.120Z", "payload": {"a": 1}}).encode()
    [message] = decode_uplink(body)
    assert isinstance(message, DeviceMessage)
    assert message.seq == 7
    assert message.ts == datetime(2026, 11, 23, 8, 15, 2, 120000, tzinfo=UTC)
    assert message.payload == {"a": 1}


def test_epoch_milliseconds_and_offsets_become_utc() -> None:
    assert parse_ts(1_700_000_000_123) == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert parse_ts("2026-11-23T16:15:02+08:00") == datetime(2026, 11, 23, 8, 15, 2, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2026-11-23T08:15:02", "2026-11-23", "yesterday", 1.5, True, -1])
def test_timestamps_without_zone_or_of_wrong_type_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_ts(bad)


def test_cbor_array_decodes_with_native_datetime() -> None:
    ts = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    body = cbor2.dumps([{"seq": 1, "ts": ts, "payload": {}}, {"seq": 2, "ts": 1_700_000_000_000, "payload": {}}])
    messages = decode_uplink(body)
    assert [m.seq for m in messages] == [1, 2]  # type: ignore[union-attr]
    assert messages[0].ts == ts  # type: ignore[union-attr]


def test_one_bad_message_in_an_array_does_not_spoil_the_others() -> None:
    body = json.dumps([
        {"seq": 1, "payload": {}},
        {"seq": 2, "payload": {}, "extra": 1},
        {"seq": "3", "payload": {}},
        {"seq": 4, "payload": []},
        {"seq": 5, "ts": "noon", "payload": {}},
        {"payload": {}},
        42,
    ]).encode()
    results = decode_uplink(body)
    assert isinstance(results[0], DeviceMessage)
    errors = results[1:]
    assert all(isinstance(e, MessageError) for e in errors)
    details = [e.detail for e in errors]  # type: ignore[union-attr]
    assert details[0].startswith("[1].extra: unknown field")
    assert details[1].startswith("[2].seq: must be an integer")
    assert details[2].startswith("[3].payload: must be an object")
    assert details[3].startswith("[4].ts: not RFC 3339")
    assert details[4] == "[5].seq: field required"
    assert details[5].startswith("[6]: must be an object")
    # the seq is reported when it was readable, so the device can drop the message from its outbox
    assert [e.seq for e in errors] == [2, None, 4, 5, None, None]  # type: ignore[union-attr]


def test_seq_must_be_a_non_negative_int64() -> None:
    for seq in (-1, 2**63, 1.0, True):
        [result] = decode_uplink(json.dumps({"seq": seq, "payload": {}}).encode())
        assert isinstance(result, MessageError), seq


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed"),
        (b"\xff\xfe\x00", "malformed"),
        (b"", "malformed"),
        (b"[]", "malformed"),
        (b'"just a string"', "malformed"),
        (cbor2.dumps({"seq": 1, "payload": {}}) + b"\x00", "malformed"),
        (json.dumps([{"seq": i, "payload": {}} for i in range(501)]).encode(), "oversized"),
    ],
)
def test_unreadable_bodies_raise_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(UplinkError) as err:
        decode_uplink(body)
    assert err.value.reason == reason


def test_explicit_content_format_overrides_detection() -> None:
    with pytest.raises(UplinkError):
        decode_uplink(b'{"seq": 1, "payload": {}}', "cbor")


def test_decoded_messages_are_the_models_model_construct_would_build() -> None:
    from fleet.envelope import DeviceMessage

    for obj in ({"seq": 3, "ts": 1_795_000_000_123, "payload": {"t": 1.5}}, {"seq": 0, "payload": {}}):
        fast = parse_message(obj, None)
        slow = DeviceMessage.model_construct(seq=obj["seq"], ts=fast.ts, payload=obj["payload"])  # type: ignore[union-attr]
        assert isinstance(fast, DeviceMessage)
        assert fast == slow
        assert fast.model_fields_set == slow.model_fields_set
        assert fast.model_dump_json() == slow.model_dump_json()
        assert fast.model_copy(update={"seq": 9}).seq == 9


# ---------------------------------------------------------------- the fast JSON parser answers as json.loads

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_json_values, indent=st.sampled_from([None, 1]))
def test_any_json_document_decodes_as_json_loads_reads_it(value: object, indent: int | None) -> None:
    body = json.dumps({"seq": 1, "payload": {"v": value}}, indent=indent).encode()
    assert decode_uplink(body) == [parse_message(json.loads(body), None)]


def _json_loads_answer(body: bytes) -> tuple[str, object]:
    """The answer of a body when it was parsed with json.loads alone: its value, or the detail devices got."""
    try:
        return "value", repr(json.loads(body))
    except UnicodeDecodeError as err:
        return "error", f"body is not UTF-8 JSON: {err.reason} at byte {err.start}"
    except json.JSONDecodeError as err:
        return "error", f"body is not JSON: {err.msg} at line {err.lineno} column {err.colno}"
    except RecursionError:
        return "error", "body is not JSON: nested too deeply"


@settings(max_examples=400, deadline=None)
@given(body=st.one_of(
    st.binary(max_size=40).map(lambda b: b"{" + b),
    st.text(max_size=40).map(lambda t: ("{" + t).encode("utf-8", "surrogatepass")),
    st.sampled_from([b'{"a":"\\ud800"}', b'\xef\xbb\xbf{"a":1}', '{"a":1}'.encode("utf-16"), b"[" * 300 + b"]" * 300,
                     b'{"a":NaN}', b'{"a":1} x', b'{"a":"\xed\xa0\x80"}', b'{"a":"x\ny"}', b"[1,]"]),
))
def test_odd_bodies_get_the_same_value_or_error_text_as_with_json_loads_alone(body: bytes) -> None:
    try:
        answer: tuple[str, object] = ("value", repr(_load(body, "json")))
    except UplinkError as err:
        answer = ("error", err.detail)
    assert answer == _json_loads_answer(body)
