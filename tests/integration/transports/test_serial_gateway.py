"""The serial scale gateway over pseudo-terminal pairs: real bytes through a tty, real pipeline and store."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.models import DeadLetter
from broker.serial_gateway import Reply, SerialGateway, SerialPortConfig, encode_frame
from tests.integration.transports.conftest import Stack
from tests.integration.transports.pty_scale import Scale

pytestmark = pytest.mark.timeout(60)

NOW = datetime.now(UTC) - timedelta(minutes=1)


def frame(device_id: str, seq: int, payload: dict[str, Any], channel: str = "telemetry") -> bytes:
    body = json.dumps({"seq": seq, "ts": (NOW + timedelta(seconds=seq)).isoformat(), "payload": payload}).encode()
    return encode_frame(device_id, channel, seq, body)


@pytest.fixture(scope="module")
def scales() -> Iterator[tuple[Scale, Scale]]:
    pair = (Scale(), Scale())
    try:
        yield pair
    finally:
        for scale in pair:
            scale.close()


@pytest.fixture(scope="module")
async def gateway(stack: Stack, scales: tuple[Scale, Scale]) -> AsyncIterator[SerialGateway]:
    first, second = scales
    ports = [
        SerialPortConfig(first.path, frozenset(stack.ids["sc"][:2]), baudrate=115200, name="counter-1"),
        SerialPortConfig(second.path, frozenset(stack.ids["sc"][2:]), baudrate=9600, name="counter-2"),
    ]
    gw = SerialGateway(ports, stack.pipeline, dead_letters_per_minute=1000)
    await gw.start()
    try:
        async with asyncio.timeout(10):
            await gw.wait_open()
        yield gw
    finally:
        await gw.aclose()


async def test_frames_are_stored_and_acked(stack: Stack, scales: tuple[Scale, Scale], gateway: SerialGateway) -> None:
    scale, other = scales
    device = stack.ids["sc"][0]
    scale.send(frame(device, 1, {"load_kg": 1.25, "stable": True}))
    assert await scale.reply() == Reply("ACK", 1, high=1)
    scale.send(frame(device, 2, {"load_kg": 0.0}) + frame(device, 3, {"firmware_version": "2.1.0",
                                                                       "paper_ok": False}, channel="state"))
    assert await scale.reply() == Reply("ACK", 2, high=2)
    assert await scale.reply() == Reply("ACK", 3, high=3)
    sale = {
        "type": "transaction", "order_no": "A-1", "time": NOW.isoformat(), "market_code": "m1", "stall_no": "12",
        "scale_id": device, "product_name": "白菜", "weight_kg": "1.250", "unit_price": "3.20", "total": "4.00",
    }
    scale.send(frame(device, 4, sale, channel="event"))
    assert await scale.reply() == Reply("ACK", 4, high=4)
    assert await stack.store.count(device, "scale.telemetry") == 2
    assert await stack.store.count(device, "scale.state") == 1
    assert await stack.store.count(device, "scale.event") == 1

    # A retransmission (the scale missed the ACK) is acknowledged again and stored once.
    scale.send(frame(device, 1, {"load_kg": 1.25, "stable": True}))
    assert await scale.reply() == Reply("ACK", 1, high=4)
    assert await stack.store.count(device, "scale.telemetry") == 2

    # The second port, at another baud rate, with its own scale.
    other_device = stack.ids["sc"][2]
    other.send(frame(other_device, 7, {"load_kg": 12.5}))
    assert await other.reply() == Reply("ACK", 7, high=7)
    assert gateway.stats()["counter-1"]["acked"] == 5


async def test_corrupted_crc_is_naked_dead_lettered_and_the_next_frame_stored(
    stack: Stack, scales: tuple[Scale, Scale], gateway: SerialGateway
) -> None:
    scale, _ = scales
    device = stack.ids["sc"][1]
    good = frame(device, 10, {"load_kg": 2.5})
    corrupted = bytearray(good)
    corrupted[30] ^= 0x01  # one flipped bit inside the base64 body
    before = await DeadLetter.filter(transport="serial").count()

    scale.send(bytes(corrupted))
    nak = await scale.reply()
    assert nak == Reply("NAK", 10, reason="crc") and nak.retry
    letter = await DeadLetter.filter(transport="serial").order_by("-id").first()
    assert letter is not None and letter.device_id == device and "CRC" in letter.detail
    assert await DeadLetter.filter(transport="serial").count() == before + 1
    assert await stack.store.count(device, "scale.telemetry") == 0

    scale.send(good)  # the scale resends after the NAK
    assert await scale.reply() == Reply("ACK", 10, high=10)
    assert await stack.store.count(device, "scale.telemetry") == 1


async def test_garbage_never_stops_the_gateway(
    stack: Stack, scales: tuple[Scale, Scale], gateway: SerialGateway
) -> None:
    scale, _ = scales
    device = stack.ids["sc"][0]
    cases: list[tuple[bytes, str]] = [
        (os.urandom(200).replace(b"\n", b"") + b"\r\n", "frame"),  # line noise
        (b"MF1|" + bytes(range(1, 10)) + b"\r\n", "frame"),
        (b"\xff\xfe" * 20 + b"|ABCD\r\n", "frame"),
        (encode_frame(device, "telemetry", 20, b"{}").replace(b"MF1", b"MF9"), "frame"),  # CRC over MF9 is wrong
    ]
    for data, reason in cases:
        scale.send(data)
        reply = await scale.reply()
        assert reply.kind == "NAK" and reply.reason in (reason, "crc"), (data, reply)

    # An overlong line (no newline for > max_line_bytes), then a normal frame.
    scale.send(b"A" * (gateway.max_line_bytes + 10))
    scale.send(b"tail of the long line\r\n")
    reply = await scale.reply()
    assert reply == Reply("NAK", None, reason="frame")

    # Frames that are well-formed but refused: each NAK says why, and the reason says whether to resend.
    unknown = stack.ids["sc"][2]  # wired to the other port
    scale.send(frame(unknown, 1, {"load_kg": 1.0}))
    reply = await scale.reply()
    assert reply == Reply("NAK", 1, reason="unknown_device") and not reply.retry
    scale.send(frame(device, 30, {"load_kg": 5000}))  # out of range for the kind's schema
    assert await scale.reply() == Reply("NAK", 30, reason="schema")
    body = json.dumps({"seq": 32, "payload": {"load_kg": 1.0}}).encode()
    scale.send(encode_frame(device, "telemetry", 31, body))  # clear seq differs from the message's
    assert await scale.reply() == Reply("NAK", 31, reason="malformed")
    scale.send(encode_frame(device, "telemetry", 33, b"not json at all"))
    assert await scale.reply() == Reply("NAK", 33, reason="malformed")
    scale.send(encode_frame(device, "commands", 34, json.dumps({"seq": 34, "payload": {}}).encode()))
    assert await scale.reply() == Reply("NAK", 34, reason="forbidden_topic")
    head = f"MF1|{device}|telemetry|35|".encode() + base64.b64encode(b'{"seq":35') + b"!!|"
    scale.send(head + b"0000\r\n")
    assert (await scale.reply()).reason == "crc"
    scale.send(b"\r\n")  # blank lines are keep-alives: no answer
    await scale.nothing_more()

    scale.send(frame(device, 40, {"load_kg": 3.0}))
    assert await scale.reply() == Reply("ACK", 40, high=40)
    stats = gateway.stats()["counter-1"]
    assert stats["naked"]["frame"] + stats["naked"]["crc"] >= 7 and stats["errors"] == 0


async def test_an_unplugged_adapter_is_reopened_when_it_comes_back(stack: Stack, tmp_path: Path) -> None:
    """The port path is a symlink (like /dev/serial/by-id/…); the pty behind it vanishes and a new one appears."""
    device = stack.ids["sc"][0]
    link = tmp_path / "usb-scale-port0"
    first = Scale()
    link.symlink_to(first.path)
    gateway = SerialGateway([SerialPortConfig(str(link), frozenset({device}), name="usb")], stack.pipeline,
                            reopen_s=0.1)
    await gateway.start()
    second = Scale()
    try:
        async with asyncio.timeout(10):
            await gateway.wait_open()
        first.send(frame(device, 50, {"load_kg": 1.0}))
        assert await first.reply() == Reply("ACK", 50, high=50)

        reopened = gateway.ports["usb"].opened
        reopened.clear()
        first.close()  # unplugged: the gateway's reads fail, it keeps retrying the path
        link.unlink()
        link.symlink_to(second.path)  # plugged in again (a new tty behind the same by-id name)
        async with asyncio.timeout(20):
            await reopened.wait()
        assert gateway.stats()["usb"]["opens"] == 2
        second.send(frame(device, 51, {"load_kg": 2.0}))
        assert await second.reply() == Reply("ACK", 51, high=51)
        assert gateway.stats()["usb"]["errors"] >= 1
    finally:
        await gateway.aclose()
        second.close()
