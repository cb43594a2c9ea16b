"""The serial line protocol's framing (docs/serial.md): CRC, frames, replies."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.serial_gateway import (
    RETRY_REASONS,
    FrameError,
    Reply,
    crc16_ccitt,
    encode_frame,
    encode_reply,
    parse_frame,
    parse_reply,
)


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1  # the catalogue's check value for CRC-16/CCITT-FALSE
    assert crc16_ccitt(b"") == 0xFFFF


def test_frame_layout() -> None:
    frame = encode_frame("acme-SC1", "telemetry", 42, b'{"seq":42,"payload":{}}')
    assert frame.endswith(b"\r\n")
    head, _, crc = frame.rstrip(b"\r\n").rpartition(b"|")
    version, device, channel, seq, body = head.split(b"|")
    assert (version, device, channel, seq) == (b"MF1", b"acme-SC1", b"telemetry", b"42")
    assert base64.b64decode(body) == b'{"seq":42,"payload":{}}'
    assert int(crc, 16) == crc16_ccitt(head + b"|") and crc == crc.upper() and len(crc) == 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (encode_reply("ACK", 7, 9), Reply("ACK", 7, high=9)),
        (encode_reply("ACK", 0, -1), Reply("ACK", 0, high=-1)),
        (encode_reply("NAK", 7, "crc"), Reply("NAK", 7, reason="crc")),
        (encode_reply("NAK", None, "frame"), Reply("NAK", None, reason="frame")),
    ],
)
def test_replies_round_trip(line: bytes, expected: Reply) -> None:
    assert parse_reply(line) == expected


def test_garbled_replies_are_none() -> None:
    good = encode_reply("ACK", 7, 9)
    assert parse_reply(good.replace(b"7", b"8", 1)) is None  # CRC no longer matches
    for line in (b"", b"ACK|7\r\n", b"ACK|7|9|ZZZZ\r\n", b"\xff\xfe|0000\r\n", b"HELLO|1|2|0000\r\n"):
        assert parse_reply(line) is None


def test_retry_semantics() -> None:
    assert RETRY_REASONS == {"crc", "frame", "busy"}
    assert Reply("NAK", 1, reason="busy").retry
    assert not Reply("NAK", 1, reason="schema").retry
    assert not Reply("ACK", 1, high=1).retry


def test_docs_example_frame_and_replies() -> None:
    """The examples in docs/serial.md, byte for byte."""
    body = b'{"seq":1042,"ts":"2026-11-23T08:15:02.120Z","payload":{"load_kg":1.25,"stable":true}}'
    assert encode_frame("acme-SC000", "telemetry", 1042, body) == (
        b"MF1|acme-SC000|telemetry|1042|eyJzZXEiOjEwNDIsInRzIjoiMjAyNi0xMS0yM1QwODoxNTowMi4xMjBaIiwicGF5bG9hZCI6eyJs"
        b"b2FkX2tnIjoxLjI1LCJzdGFibGUiOnRydWV9fQ==|9A01\r\n"
    )
    assert encode_reply("ACK", 1042, 1042) == b"ACK|1042|1042|A04E\r\n"
    assert encode_reply("NAK", 1042, "crc") == b"NAK|1042|crc|E855\r\n"
    assert encode_reply("NAK", None, "frame") == b"NAK|-|frame|8F84\r\n"


# ---------------------------------------------------------------- the parser never fails in another way

DEVICES = frozenset({"acme-SC000"})
LIMITS = {"devices": DEVICES, "port_name": "counter-1", "max_line_bytes": 4096, "max_payload_bytes": 1024}
GOOD = encode_frame("acme-SC000", "telemetry", 40, b'{"seq":40,"payload":{"load_kg":1.25}}').rstrip(b"\r\n")


def test_a_valid_frame_parses_and_its_crc_is_exact() -> None:
    frame = parse_frame(GOOD, **LIMITS)
    assert (frame.device_id, frame.channel, frame.seq) == ("acme-SC000", "telemetry", 40)
    assert GOOD.endswith(b"|23DB")  # letters in the CRC: the bit-flip test below covers 'D' -> 'd' too
    with pytest.raises(FrameError) as lower:
        parse_frame(GOOD[:-4] + b"23db", **LIMITS)
    assert lower.value.reason == "frame"
    assert parse_reply(b"ACK|7|9|" + encode_reply("ACK", 7, 9)[-6:-2].lower()) is None


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_a_frame_error_never_a_crash(line: bytes) -> None:
    with pytest.raises(FrameError) as refused:
        parse_frame(line, **LIMITS)
    assert refused.value.reason in {"frame", "crc", "malformed", "unknown_device", "oversized"}


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD) * 8 - 1))
def test_every_single_bit_error_is_caught(bit: int) -> None:
    """Line noise flipping any one bit never yields an accepted frame (CRC-16 catches every 1-bit error)."""
    damaged = bytearray(GOOD)
    damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError) as refused:
        parse_frame(bytes(damaged), **LIMITS)
    assert refused.value.reason in RETRY_REASONS  # the scale sends it again


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.sampled_from(["telemetry", "event", "state", "x"]),
       st.integers(min_value=0, max_value=2**63 - 1))
def test_well_framed_junk_bodies_are_refused_with_a_final_reason(body: bytes, channel: str, seq: int) -> None:
    """A correct frame around a body that is not one message with this seq: dropped (not retried) or accepted."""
    line = encode_frame("acme-SC000", channel, seq, body).rstrip(b"\r\n")
    try:
        frame = parse_frame(line, **LIMITS)
    except FrameError as err:
        assert err.reason in {"malformed", "oversized"} and err.seq == seq
    else:
        assert frame.body == body and frame.seq == seq  # the pipeline judges the rest (schema, malformed)
