"""CoalescingSocket over a real socket pair: what paho reads and writes arrives whole and in order."""

from __future__ import annotations

import asyncio
import socket

import pytest

from broker.mqtt_socket import CoalescingSocket


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def _until(condition, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_small_reads_come_from_one_buffered_recv_and_pending_says_what_is_left() -> None:
    a, b = _pair()
    wrapped = CoalescingSocket(a, asyncio.get_running_loop())
    try:
        b.sendall(b"\x30\x05hello\x40\x02\x00\x01")
        await asyncio.sleep(0.01)
        assert wrapped.recv(1) == b"\x30"  # paho: command byte, then length, then the rest
        assert wrapped.pending() == 10
        assert wrapped.recv(1) == b"\x05"
        assert wrapped.recv(5) == b"hello"
        assert wrapped.recv(4) == b"\x40\x02\x00\x01"
        assert wrapped.pending() == 0
        with pytest.raises(BlockingIOError):  # nothing buffered, nothing on the socket: paho's "try again"
            wrapped.recv(1)
        b.close()
        assert wrapped.recv(1) == b""  # end of stream reaches paho as it is
    finally:
        wrapped.close()


async def test_writes_of_one_loop_turn_go_out_in_one_send_in_order() -> None:
    a, b = _pair()
    wrapped = CoalescingSocket(a, asyncio.get_running_loop())
    try:
        for i in range(100):
            assert wrapped.send(bytes([0x40, 2, 0, i])) == 4  # 100 PUBACKs
        assert wrapped.sends == 0
        await _until(lambda: wrapped.sends > 0)
        assert wrapped.sends == 1
        received = b""
        while len(received) < 400:
            await asyncio.sleep(0.005)
            try:
                received += b.recv(4096)
            except BlockingIOError:
                pass
        assert received == b"".join(bytes([0x40, 2, 0, i]) for i in range(100))
    finally:
        wrapped.close()
        b.close()


async def test_a_full_kernel_buffer_delays_but_never_reorders_or_drops() -> None:
    a, b = _pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    wrapped = CoalescingSocket(a, asyncio.get_running_loop())
    chunks = [bytes([i % 256]) * 1000 for i in range(2000)]  # ~2 MB, far beyond the socket buffers
    try:
        for chunk in chunks:
            wrapped.send(chunk)
        received = bytearray()
        while len(received) < 2_000_000:
            try:
                received += b.recv(65536)
            except BlockingIOError:
                await asyncio.sleep(0.002)
        assert bytes(received) == b"".join(chunks)
    finally:
        wrapped.close()
        b.close()


async def test_a_send_error_is_raised_to_paho_on_its_next_call() -> None:
    a, b = _pair()
    wrapped = CoalescingSocket(a, asyncio.get_running_loop())
    b.close()
    try:
        wrapped.send(b"\xc0\x00")  # PINGREQ to a peer that is gone: accepted, the flush finds out
        await _until(lambda: wrapped._error is not None)
        with pytest.raises(OSError):  # paho's read and write paths both turn this into "connection lost"
            wrapped.recv(1)
        with pytest.raises(OSError):
            wrapped.send(b"\xc0\x00")
    finally:
        wrapped.close()
