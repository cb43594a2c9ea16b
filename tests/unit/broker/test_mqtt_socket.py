"""CoalescingSocket over a real socket pair: what paho reads and writes arrives whole and in order, and the
inbound PUBLISH fast path reads exactly what paho encodes (generated packets, any chunking)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import paho.mqtt.client as paho_mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.mqtt_socket import HEAD_EMPTY, HEAD_INCOMPLETE, HEAD_OTHER, CoalescingSocket, split_publishes


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


# ---------------------------------------------------------------- the inbound PUBLISH fast path

_PINGRESP = b"\xd0\x00"


def _paho(**kwargs) -> paho_mqtt.Client:  # type: ignore[no-untyped-def]
    return paho_mqtt.Client(paho_mqtt.CallbackAPIVersion.VERSION2, protocol=paho_mqtt.MQTTv311, **kwargs)


def _encode_publish(topic: str, payload: bytes, qos: int, mid: int, retain: bool = False, dup: bool = False) -> bytes:
    """The PUBLISH packet exactly as paho encodes it."""
    encoder = _paho()
    captured: list[bytes] = []
    encoder._packet_queue = lambda command, packet, mid, qos, info=None: captured.append(bytes(packet))  # type: ignore[method-assign]
    encoder._sock = object()  # type: ignore[assignment]  # "connected": paho encodes only then
    encoder._send_publish(mid, topic.encode(), payload, qos, retain, dup)
    encoder._sock = None
    assert len(captured) == 1
    return captured[0]


_topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=80)
# sizes around the remaining-length boundaries (127, 16,383) matter most
_payloads = st.one_of(st.binary(max_size=300), st.integers(100, 17_000).map(lambda n: bytes([n % 251]) * n))
_publishes = st.tuples(_topics, _payloads, st.sampled_from([0, 1]), st.integers(1, 65535), st.booleans(),
                       st.booleans())


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(_publishes, min_size=1, max_size=12))
def test_split_publishes_reads_back_what_paho_encodes(packets: list[tuple[str, bytes, int, int, bool, bool]]) -> None:
    stream = b"".join(_encode_publish(*p) for p in packets)
    messages, ids, pos, head = split_publishes(stream, 0)
    assert head == HEAD_EMPTY and pos == len(stream)
    assert [(t.decode(), payload) for t, payload in messages] == [(t, payload) for t, payload, *_ in packets]
    assert [int.from_bytes(i, "big") for i in ids] == [mid for _, _, qos, mid, _, _ in packets if qos == 1]
    # every proper prefix stops at a packet boundary and says that the next packet is incomplete
    for cut in range(len(stream)) if len(stream) < 400 else range(0, len(stream), 97):
        part, _ids, end, head = split_publishes(stream[:cut], 0)
        assert head in (HEAD_INCOMPLETE, HEAD_EMPTY)
        assert part == messages[:len(part)]
        assert (head == HEAD_EMPTY) == (end == cut)


def test_split_publishes_leaves_other_packets_qos2_and_malformed_headers_to_paho() -> None:
    qos1 = _encode_publish("mf/v1/M1/d1/up/telemetry", b"{}", 1, 7)
    for other in (
        _PINGRESP,
        b"\x40\x02\x00\x07",  # PUBACK
        _encode_publish("mf/v1/M1/d1/up/telemetry", b"{}", 2, 9),  # QoS 2 needs paho's PUBREC/PUBREL state
        b"\x36\x04\x00\x01a\x00",  # QoS 3: malformed
        b"\x32\xff\xff\xff\xff\x01",  # five length bytes: malformed
        b"\x32\x03\x00\x05a",  # topic longer than the packet
        b"\x32\x00",  # no room for a topic length
    ):
        messages, ids, pos, head = split_publishes(qos1 + other + qos1, 0)
        assert (len(messages), ids, pos, head) == (1, [b"\x00\x07"], len(qos1), HEAD_OTHER), other
    huge = _encode_publish("t", b"x" * (1 << 20), 1, 1)  # over the buffering limit: streamed by paho
    assert split_publishes(huge[:1000], 0)[3] == HEAD_OTHER


class _Reader:
    """A paho client reading from a socket pair through the fast path, driven like aiomqtt's reader."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.a, self.b = _pair()
        self.fast: list[tuple[str, bytes]] = []
        self.slow: list[tuple[str, bytes]] = []
        self.paho = _paho()
        self.paho.on_message = lambda _c, _u, m: self.slow.append((m.topic, bytes(m.payload)))
        self.sock = CoalescingSocket(self.a, self.loop, paho=self.paho,
                                     on_publish=lambda t, p: self.fast.append((t, p)))
        self.paho._sock = self.sock  # type: ignore[assignment]

    def feed(self, data: bytes) -> None:
        self.b.sendall(data)
        while True:  # aiomqtt's reader callback
            assert self.paho.loop_read() == paho_mqtt.MQTT_ERR_SUCCESS
            if self.sock.pending() > 0:
                continue
            break

    def written(self) -> bytes:
        self.sock._flush()
        out = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := self.b.recv(65536):
                out += chunk
        return out

    def close(self) -> None:
        self.sock.close()
        self.b.close()
        self.loop.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(st.one_of(_publishes, st.just(None)), min_size=1, max_size=15), data=st.data())
def test_every_publish_reaches_the_handler_once_in_order_in_any_chunking(
    packets: list[tuple[str, bytes, int, int, bool, bool] | None], data: st.DataObject
) -> None:
    """PUBLISHes interleaved with PINGRESPs (paho's), cut into random chunks: each PUBLISH arrives once, in
    order, through the fast path; each QoS 1 one is acknowledged with its packet id; paho stays in step."""
    stream = b"".join(_PINGRESP if p is None else _encode_publish(*p) for p in packets)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=8)))
    reader = _Reader()
    try:
        start = 0
        for cut in [*cuts, len(stream)]:
            if cut > start:
                reader.feed(stream[start:cut])
                start = cut
        expected = [(t, payload) for p in packets if p is not None for t, payload, *_ in [p]]
        assert reader.fast == expected and reader.slow == []
        acks = reader.written()
        assert acks == b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for p in packets if p is not None
                                for _, _, qos, mid, _, _ in [p] if qos == 1)
        assert reader.paho._in_packet["command"] == 0 and reader.sock.pending() == 0
    finally:
        reader.close()


def test_what_the_fast_path_leaves_to_paho_still_arrives_once_and_in_order() -> None:
    big = bytes(range(256)) * 4200  # > 1 MiB: paho streams it
    packets = [("a/1", b"one", 1, 1), ("a/2", big, 1, 2), ("a/3", b"three", 0, 0), ("a/4", b"four", 1, 4)]
    stream = b"".join(_encode_publish(*p) for p in packets)
    reader = _Reader()
    try:
        for start in range(0, len(stream), 50_000):
            reader.feed(stream[start:start + 50_000])
        assert reader.fast == [("a/1", b"one"), ("a/3", b"three"), ("a/4", b"four")]
        assert reader.slow == [("a/2", big)]
        acks = reader.written()
        assert sorted(acks[i:i + 4] for i in range(0, len(acks), 4)) == [
            b"\x40\x02\x00\x01", b"\x40\x02\x00\x02", b"\x40\x02\x00\x04"]
    finally:
        reader.close()


def test_the_fast_path_keeps_paho_keepalive_clock_and_survives_a_failing_handler() -> None:
    reader = _Reader()
    calls: list[str] = []

    def handler(topic: str, payload: bytes) -> None:
        calls.append(topic)
        if topic == "boom":
            raise RuntimeError("handler bug")

    reader.sock._on_publish = handler
    try:
        reader.paho._last_bytes_received = 0.0
        reader.feed(_encode_publish("boom", b"x", 1, 1) + _encode_publish("ok", b"y", 1, 2)
                    + b"\x32\x06\x00\x02\xff\xfe\x00\x03")  # a topic that is not UTF-8: dropped, acknowledged
        assert calls == ["boom", "ok"]
        assert reader.paho._last_bytes_received > 0.0
        assert reader.written() == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03"
        reader.b.close()
        assert reader.paho.loop_read() == paho_mqtt.MQTT_ERR_CONN_LOST  # end of stream still reaches paho
    finally:
        reader.sock.close()
        reader.loop.close()
