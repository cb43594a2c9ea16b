"""`coalesce_paho_io(client)`: fewer system calls for the ingest worker's MQTT connection.

paho reads a packet with three or more `recv` calls (one byte of command, the remaining length byte by byte,
then the rest) and writes every packet with its own `send` — for an ingest worker that is a PUBACK per uplink
plus the acks, a `send` each, on loopback as costly as the rest of the message's handling. Wrapping paho's plain
TCP socket in `CoalescingSocket` turns that into one `recv` per 64 KiB read and one `send` per event-loop turn:

- reads come from a buffer filled by one large `recv`; `pending()` tells aiomqtt's reader (which already asks
  SSL sockets for it) to keep parsing packets while buffered bytes remain, so a burst is handled in one wake-up;
- writes are appended to a buffer that is flushed once per loop turn (`call_soon_threadsafe`: paho sends CONNECT
  from aiomqtt's connect thread). If the kernel buffer is full the rest is retried a few ms later, in order; a
  send error is kept and raised by the next `recv`/`send`, which paho treats as a lost connection.

TLS sockets are left alone. The hook is installed on the paho client inside `aiomqtt.Client` (`_client`); if a
future aiomqtt renames it the worker keeps working without the wrapper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Any

__all__ = ["CoalescingSocket", "coalesce_paho_io"]

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_RETRY_S = 0.002


class CoalescingSocket:
    """A non-blocking socket whose reads are buffered and whose writes are flushed once per loop turn."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._rbuf = b""
        self._rpos = 0
        self._wbuf: list[bytes] = []
        self._scheduled = False
        self._error: OSError | None = None
        self.sends = 0  # real send calls, for tests and metrics

    # ------------------------------------------------------------------ reading

    def recv(self, bufsize: int) -> bytes:
        if self._error is not None:
            raise self._error
        if self._rpos >= len(self._rbuf):
            data = self._sock.recv(max(bufsize, _READ_SIZE))  # BlockingIOError / OSError go to paho as they are
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        chunk = self._rbuf[start:start + bufsize]
        self._rpos = start + len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes read from the socket that paho has not taken yet (aiomqtt keeps reading while > 0)."""
        return len(self._rbuf) - self._rpos

    # ------------------------------------------------------------------ writing

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self._error is not None:
            raise self._error
        self._wbuf.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._flush)
        return len(data)

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


def coalesce_paho_io(client: Any) -> bool:
    """Install the wrapper on an `aiomqtt.Client` before it connects; False when it cannot be installed."""
    paho = getattr(client, "_client", None)
    original = getattr(paho, "on_socket_open", None)
    if paho is None or original is None or not hasattr(paho, "_sock"):
        log.warning("aiomqtt internals changed; MQTT socket I/O is not coalesced")
        return False
    loop = asyncio.get_running_loop()

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            sock = CoalescingSocket(sock, loop)
            paho_client._sock = sock
        original(paho_client, userdata, sock)

    paho.on_socket_open = on_socket_open
    return True
