"""A minimal asyncio MQTT 3.1.1 client for tests and benchmarks: thousands of connections in one process.

paho/aiomqtt cost a thread-safe client object and callbacks per connection; the broker tests need 5,000 idle
devices and fast publishers, so this speaks the wire protocol directly: CONNECT (with will), SUBSCRIBE,
PUBLISH QoS 0/1 (many in flight), PUBACK, PINGREQ, DISCONNECT. Incoming PUBLISHes land in `messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass

__all__ = ["Will", "WireClient", "WireError"]

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


class WireError(ConnectionError):
    pass


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    length = len(body)
    header = bytearray([(kind << 4) | flags])
    while True:
        byte = length % 128
        length //= 128
        header.append(byte | 0x80 if length else byte)
        if not length:
            break
    return bytes(header) + body


def encode_publish(topic: str, payload: bytes, qos: int, packet_id: int = 0, retain: bool = False) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(PUBLISH, (qos << 1) | int(retain), body)


class WireClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.connack: asyncio.Future[tuple[int, int]] | None = None
        self._waiters: dict[tuple[int, int], asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.session_present = False

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if (PUBACK, self._next_id) not in self._waiters and (SUBACK, self._next_id) not in self._waiters:
                return self._next_id
        raise WireError("no free packet id")

    async def connect(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        clean_session: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        within: float = 10.0,
    ) -> int:
        """Open the socket and CONNECT; returns the CONNACK return code (0 accepted, 5 not authorised)."""
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
        flags = 0x02 if clean_session else 0
        payload = _str(client_id)
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
            payload += _str(will.topic) + _str(will.payload)
        if username is not None:
            flags |= 0x80
            payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
        loop = asyncio.get_running_loop()
        self.connack = loop.create_future()
        self._reader_task = asyncio.create_task(self._read_loop())
        self.writer.write(_packet(CONNECT, 0, body))
        try:
            present, rc = await asyncio.wait_for(self.connack, within)
        except (TimeoutError, WireError):
            await self.abort()
            raise
        self.session_present = bool(present)
        if rc != 0:
            await self.abort()
        return rc

    async def subscribe(self, filters: list[tuple[str, int]], within: float = 10.0) -> list[int]:
        """SUBSCRIBE; returns the SUBACK codes (granted QoS, or 0x80 refused)."""
        packet_id = self._packet_id()
        body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([q]) for f, q in filters)
        waiter = self._expect(SUBACK, packet_id)
        self._write(_packet(SUBSCRIBE, 0x02, body))
        return list(await asyncio.wait_for(waiter, within))

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[bytes]:
        """Send a PUBLISH; the future resolves at its PUBACK (at once for QoS 0)."""
        if qos == 0:
            self._write(encode_publish(topic, payload, 0, retain=retain))
            done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            done.set_result(b"")
            return done
        packet_id = self._packet_id()
        waiter = self._expect(PUBACK, packet_id)
        self._write(encode_publish(topic, payload, qos, packet_id, retain))
        return waiter

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, within: float = 10.0
    ) -> None:
        await asyncio.wait_for(self.publish_nowait(topic, payload, qos, retain), within)

    async def drain(self) -> None:
        if self.writer is not None:
            await self.writer.drain()

    async def ping(self) -> None:
        self._write(_packet(PINGREQ, 0, b""))

    async def disconnect(self) -> None:
        """Clean DISCONNECT (no will)."""
        if self.writer is not None and not self.writer.is_closing():
            with contextlib.suppress(Exception):
                self.writer.write(_packet(DISCONNECT, 0, b""))
                await self.writer.drain()
        await self.abort()

    async def abort(self) -> None:
        """Drop the socket without DISCONNECT (the broker publishes the will)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.transport.abort()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_waiters(WireError("connection closed"))
        self.closed.set()

    # ---------------------------------------------------------------- internals

    def _write(self, data: bytes) -> None:
        if self.writer is None or self.writer.is_closing():
            raise WireError("not connected")
        self.writer.write(data)

    def _expect(self, kind: int, packet_id: int) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters[(kind, packet_id)] = future
        return future

    def _fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved
        if self.connack is not None and not self.connack.done():
            self.connack.set_exception(error)
            self.connack.exception()

    async def _read_loop(self) -> None:
        reader = self.reader
        assert reader is not None
        try:
            while True:
                first = await reader.readexactly(1)
                length, multiplier = 0, 1
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length += (byte & 0x7F) * multiplier
                    if not byte & 0x80:
                        break
                    multiplier *= 128
                body = await reader.readexactly(length) if length else b""
                self._handle(first[0] >> 4, first[0] & 0x0F, body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._fail_waiters(WireError("connection closed by the broker"))
            self.closed.set()

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == CONNACK:
            if self.connack is not None and not self.connack.done():
                self.connack.set_result((body[0] & 1, body[1]))
        elif kind == PUBLISH:
            qos = (flags >> 1) & 3
            (topic_len,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + topic_len].decode()
            offset = 2 + topic_len
            if qos:
                (packet_id,) = struct.unpack_from("!H", body, offset)
                offset += 2
                self._write(_packet(PUBACK, 0, struct.pack("!H", packet_id)))
            self.messages.put_nowait((topic, body[offset:]))
        elif kind in (PUBACK, SUBACK):
            (packet_id,) = struct.unpack_from("!H", body)
            future = self._waiters.pop((kind, packet_id), None)
            if future is not None and not future.done():
                future.set_result(body[2:])
