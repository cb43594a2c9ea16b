"""`coalesce_paho_io(client, on_publish)`: less work per packet on the ingest worker's MQTT connection.

paho reads a packet with three or more `recv` calls (one byte of command, the remaining length byte by byte,
then the rest) and writes every packet with its own `send` — for an ingest worker that is a PUBACK per uplink
plus the acks, a `send` each, on loopback as costly as the rest of the message's handling. Wrapping paho's plain
TCP socket in `CoalescingSocket` turns that into one `recv` per 64 KiB read and one `send` per event-loop turn:

- reads come from a buffer filled by one large `recv`; `pending()` tells aiomqtt's reader (which already asks
  SSL sockets for it) to keep parsing packets while buffered bytes remain, so a burst is handled in one wake-up;
- writes are appended to a buffer that is flushed once per loop turn (`call_soon_threadsafe`: paho sends CONNECT
  from aiomqtt's connect thread). If the kernel buffer is full the rest is retried a few ms later, in order; a
  send error is kept and raised by the next `recv`/`send`, which paho treats as a lost connection.

**Inbound PUBLISH fast path** (`on_publish`, MQTT 3.1.1 only). Even with whole packets in a buffer, paho's
per-packet Python (a dict of read state, `MQTTMessage`, logging calls, aiomqtt's `Message` and queue) was about
a third of the worker's CPU per uplink. So when paho asks for the first byte of a new packet, the wrapper looks
at the buffer itself: every *complete* PUBLISH at its head with QoS 0 or 1 is split (fixed header, topic,
packet id, payload — the 3.1.1 layout, nothing optional), handed to `on_publish(topic, payload)` and, for QoS 1,
answered with a PUBACK (4 bytes, queued with the others of the turn) — the same order and the same PUBACK-on-
receipt that paho uses (the application ack to the device still follows the store write). Everything else —
CONNACK, SUBACK, PUBACK of our own publishes, PINGRESP, QoS 2, a malformed header, a PUBLISH larger than
`_MAX_FAST_PACKET` — is left in the buffer and read by paho byte for byte as before, so paho keeps the whole
protocol state (keepalive included: the wrapper refreshes paho's last-received time). A PUBLISH whose tail has
not arrived yet stays buffered (`pending()` is 0 then) until the next read. MQTT 5 (properties, topic aliases)
and TLS connections keep paho's path. The fast path's parser is checked against paho's own packet encoding with
generated packets (tests/unit/broker/test_mqtt_socket.py).

The hook is installed on the paho client inside `aiomqtt.Client` (`_client`, plus paho's `_in_packet`,
`_protocol` and `_last_bytes_received`); if a future aiomqtt or paho renames them the worker keeps working
without the wrapper (a warning says so) and messages arrive through aiomqtt's iterator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as paho_mqtt

__all__ = ["CoalescingSocket", "PublishHandler", "coalesce_paho_io", "split_publishes"]

log = logging.getLogger(__name__)

_READ_SIZE: Final = 65536
_RETRY_S: Final = 0.002
_MAX_FAST_PACKET: Final = 1 << 20  # larger PUBLISHes are streamed by paho instead of buffered here
_MAX_READS: Final = 8  # socket reads per wake-up in the fast path, so a flood cannot starve the loop
_PUBACK: Final = b"\x40\x02"
_clock: Final = getattr(paho_mqtt, "time_func", time.monotonic)  # paho's keepalive clock

PublishHandler = Callable[[str, bytes], None]

# split_publishes' verdict on the byte at the head of the buffer once it stops
HEAD_EMPTY: Final = 0  # nothing left
HEAD_INCOMPLETE: Final = 1  # a PUBLISH whose rest has not arrived
HEAD_OTHER: Final = 2  # a packet for paho (not a QoS 0/1 PUBLISH, malformed, or too large to buffer)


def split_publishes(buf: bytes, pos: int) -> tuple[list[tuple[bytes, bytes]], list[bytes], int, int]:
    """Complete MQTT 3.1.1 QoS 0/1 PUBLISH packets at `buf[pos:]`.

    Returns ([(topic bytes, payload)], [packet id bytes of the QoS 1 ones], position after them, HEAD_*).
    """
    end = len(buf)
    messages: list[tuple[bytes, bytes]] = []
    ids: list[bytes] = []
    while pos < end:
        first = buf[pos]
        if first >> 4 != 3 or first & 0x04:  # not a PUBLISH, or QoS 2/3
            return messages, ids, pos, HEAD_OTHER
        i = pos + 1
        length = 0
        shift = 0
        while True:
            if i >= end:
                return messages, ids, pos, HEAD_INCOMPLETE
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 28:  # a fifth length byte: malformed, paho refuses it
                return messages, ids, pos, HEAD_OTHER
        packet_end = i + length
        if packet_end > end:
            return messages, ids, pos, HEAD_INCOMPLETE if length <= _MAX_FAST_PACKET else HEAD_OTHER
        topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1]) if length >= 2 else end + 1
        payload_start = topic_end + 2 if first & 0x02 else topic_end
        if payload_start > packet_end:
            return messages, ids, pos, HEAD_OTHER  # topic (or packet id) overruns the packet: paho's error
        if first & 0x02:
            ids.append(buf[topic_end:payload_start])
        messages.append((buf[i + 2:topic_end], buf[payload_start:packet_end]))
        pos = packet_end
    return messages, ids, pos, HEAD_EMPTY


class CoalescingSocket:
    """A non-blocking socket whose reads are buffered and whose writes are flushed once per loop turn.

    With `paho` and `on_publish` given, QoS 0/1 PUBLISH packets are taken from the read buffer directly (module
    docstring); `paho` is the paho client whose `_in_packet` says when it is between packets.
    """

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        *,
        paho: Any = None,
        on_publish: PublishHandler | None = None,
    ) -> None:
        self._sock = sock
        self._loop = loop
        self._rbuf = b""
        self._rpos = 0
        self._wbuf: list[bytes] = []
        self._scheduled = False
        self._error: OSError | None = None
        self._paho = paho if on_publish is not None else None
        self._on_publish = on_publish
        self._waiting = False  # the buffer's head is an incomplete PUBLISH: read more before parsing again
        self.sends = 0  # real send calls, for tests and metrics
        self.fast_publishes = 0  # PUBLISH packets taken by the fast path

    # ------------------------------------------------------------------ reading

    def recv(self, bufsize: int) -> bytes:
        if self._error is not None:
            raise self._error
        if self._paho is not None and bufsize == 1 and self._paho._in_packet["command"] == 0:
            return self._recv_between_packets()
        if self._rpos >= len(self._rbuf):
            data = self._sock.recv(max(bufsize, _READ_SIZE))  # BlockingIOError / OSError go to paho as they are
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        chunk = self._rbuf[start:start + bufsize]
        self._rpos = start + len(chunk)
        return chunk

    def _recv_between_packets(self) -> bytes:
        """paho wants a packet's first byte: deliver the PUBLISHes at the head ourselves, then give paho the
        first byte of whatever else comes (or 'try again' when nothing else is there)."""
        for _ in range(_MAX_READS):
            if self._waiting or self._rpos >= len(self._rbuf):
                data = self._sock.recv(_READ_SIZE)  # BlockingIOError / OSError go to paho as they are
                if not data:
                    return data  # end of stream (an incomplete packet dies with the connection, as in paho)
                self._rbuf = self._rbuf[self._rpos:] + data if self._rpos < len(self._rbuf) else data
                self._rpos = 0
                self._waiting = False
                self._paho._last_bytes_received = _clock()  # keepalive: we read, paho did not
            head = self._take_publishes()
            if head == HEAD_OTHER:
                start = self._rpos
                self._rpos = start + 1
                return self._rbuf[start:start + 1]
            if head == HEAD_INCOMPLETE:
                self._waiting = True
        raise BlockingIOError  # read budget spent; the loop calls again while the socket has data

    def _take_publishes(self) -> int:
        messages, ids, self._rpos, head = split_publishes(self._rbuf, self._rpos)
        if messages:
            self.fast_publishes += len(messages)
            handler = self._on_publish
            assert handler is not None
            for topic, payload in messages:
                try:
                    handler(topic.decode(), payload)
                except UnicodeDecodeError:
                    log.warning("dropping a PUBLISH whose topic is not UTF-8: %r", topic[:100])
                except Exception:
                    log.exception("PUBLISH handler failed on %r", topic[:100])
            if ids:
                # Out now rather than at the end of the loop turn: the broker sends a client only so many
                # unacknowledged QoS 1 messages (Mosquitto's max_inflight_messages, 20 by default), and a batch
                # that the pipeline runs before the next turn would hold up the next ones.
                self._queue(b"".join([_PUBACK + packet_id for packet_id in ids]))
                self._flush()
        return head

    def pending(self) -> int:
        """Bytes read from the socket that paho can take now (aiomqtt keeps reading while > 0)."""
        return 0 if self._waiting else len(self._rbuf) - self._rpos

    # ------------------------------------------------------------------ writing

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self._error is not None:
            raise self._error
        self._queue(bytes(data))
        return len(data)

    def _queue(self, data: bytes) -> None:
        self._wbuf.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._wbuf or self._error is not None:
            return
        data = self._wbuf[0] if len(self._wbuf) == 1 else b"".join(self._wbuf)
        self._wbuf.clear()
        try:
            sent = self._sock.send(data)
            self.sends += 1
        except BlockingIOError:
            sent = 0
        except OSError as err:
            self._error = err
            return
        if sent < len(data):
            # Kernel buffer full: keep the rest first in line and try again shortly.
            self._wbuf.insert(0, data[sent:])
            self._scheduled = True
            self._loop.call_later(_RETRY_S, self._flush)

    # ------------------------------------------------------------------ the rest is the socket's

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._wbuf and self._error is None:
                self._sock.send(b"".join(self._wbuf))  # best effort (e.g. DISCONNECT)
        self._wbuf.clear()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def coalesce_paho_io(client: Any, on_publish: PublishHandler | None = None) -> bool:
    """Install the wrapper on an `aiomqtt.Client` before it connects; False when it cannot be installed.

    With `on_publish`, inbound QoS 0/1 PUBLISHes of an MQTT 3.1.1 connection go to it instead of through paho
    and aiomqtt's message queue (which still delivers anything the fast path leaves to paho)."""
    paho = getattr(client, "_client", None)
    original = getattr(paho, "on_socket_open", None)
    if paho is None or original is None or not hasattr(paho, "_sock"):
        log.warning("aiomqtt internals changed; MQTT socket I/O is not coalesced")
        return False
    fast = on_publish is not None and _fast_path_possible(paho)
    loop = asyncio.get_running_loop()

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            _no_delay(sock)
            sock = CoalescingSocket(sock, loop, paho=paho_client if fast else None,
                                    on_publish=on_publish if fast else None)
            paho_client._sock = sock
        original(paho_client, userdata, sock)

    paho.on_socket_open = on_socket_open
    return True


def _no_delay(sock: socket.socket) -> None:
    """TCP_NODELAY (paho leaves Nagle on): the writes are already coalesced per loop turn, so Nagle can only hold a
    small one (an ack, PUBACKs) back until the broker ACKs the previous one. (No measurable change in the bench,
    whose rate stays the same with or without it; it removes a latency source that does not need to be there.)"""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _fast_path_possible(paho: Any) -> bool:
    packet = getattr(paho, "_in_packet", None)
    if not isinstance(packet, dict) or "command" not in packet or not hasattr(paho, "_last_bytes_received"):
        log.warning("paho internals changed; inbound PUBLISHes take paho's path")
        return False
    return getattr(paho, "_protocol", None) in (paho_mqtt.MQTTv31, paho_mqtt.MQTTv311)
