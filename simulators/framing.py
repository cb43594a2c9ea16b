"""Serial (RS-232) line framing for scales: a proposal until `docs/serial.md` (the serial gateway) fixes it.

One frame per line, both directions, 7-bit ASCII:

    MF1 <device_id> <channel> <json>*<crc16>\\r\\n

* `MF1`: protocol and version.
* `<device_id>`: the registered id (it never contains a space); the gateway refuses frames naming another
  device than the one configured on its port.
* `<channel>`: uplinks `telemetry`, `event`, `state`; downlinks `ack`, `cmd`, `ota`, `config`.
* `<json>`: the message (or an array of messages, or the ack/command) as compact JSON with non-ASCII escaped
  (`\\u767d\\u83dc`), so the line holds no CR, LF or byte above 0x7E, and is readable on a terminal.
* `*<crc16>`: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; `binascii.crc_hqx(data, 0xFFFF)`) of every byte
  from the `M` of `MF1` up to, not including, the `*`; four upper-case hex digits. The payload may contain
  `*`; the checksum is after the last one.
* A line is at most 4096 bytes; a receiver drops (and counts) lines that are longer, fail the CRC or do not
  parse, and the device's outbox replays what was not acknowledged.

The device side uses `Framing.encode`/`Framing.decode`; pass another `Framing` to `SerialTransport` to follow
whatever docs/serial.md settles on.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAGIC = "MF1"
MAX_LINE_BYTES = 4096


class FrameError(ValueError):
    """A line that is not a valid frame (bad magic, checksum, shape or JSON)."""


@dataclass(frozen=True, slots=True)
class Frame:
    device_id: str
    channel: str
    body: Any


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE."""
    return binascii.crc_hqx(data, 0xFFFF)


def mf1_encode(device_id: str, channel: str, body: Any) -> bytes:
    """One frame line, CRLF included."""
    if " " in device_id or " " in channel or not device_id or not channel:
        raise FrameError(f"device id and channel may not be empty or hold spaces: {device_id!r} {channel!r}")
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    head = f"{MAGIC} {device_id} {channel} {text}".encode("ascii")
    line = head + b"*%04X\r\n" % crc16(head)
    if len(line) > MAX_LINE_BYTES:
        raise FrameError(f"frame of {len(line)} bytes is over the {MAX_LINE_BYTES}-byte line limit")
    return line


def mf1_decode(line: bytes) -> Frame:
    """Parse one line (with or without its CRLF); FrameError when it is not a valid frame."""
    line = line.rstrip(b"\r\n")
    if len(line) > MAX_LINE_BYTES:
        raise FrameError("line too long")
    head, star, check = line.rpartition(b"*")
    if not star or len(check) != 4:
        raise FrameError("no *CRC16 at the end of the line")
    try:
        expected = int(check, 16)
    except ValueError as err:
        raise FrameError(f"CRC {check!r} is not hex") from err
    if crc16(head) != expected:
        raise FrameError(f"CRC mismatch: line says {expected:04X}, bytes give {crc16(head):04X}")
    try:
        magic, device_id, channel, text = head.decode("ascii").split(" ", 3)
    except (UnicodeDecodeError, ValueError) as err:
        raise FrameError("expected 'MF1 <device_id> <channel> <json>'") from err
    if magic != MAGIC:
        raise FrameError(f"unknown magic {magic!r}")
    try:
        body = json.loads(text)
    except ValueError as err:
        raise FrameError(f"payload is not JSON: {err}") from err
    return Frame(device_id, channel, body)


@dataclass(frozen=True, slots=True)
class Framing:
    """A serial line protocol: how a (device, channel, body) becomes bytes, and back."""

    encode: Callable[[str, str, Any], bytes] = mf1_encode
    decode: Callable[[bytes], Frame] = mf1_decode
    max_line_bytes: int = MAX_LINE_BYTES


MF1 = Framing()
