"""The serial line protocol's framing (docs/serial.md): CRC, frames, replies."""

from __future__ import annotations

import base64

import pytest

from broker.serial_gateway import RETRY_REASONS, Reply, crc16_ccitt, encode_frame, encode_reply, parse_reply


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
