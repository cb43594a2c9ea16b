"""A scale on a serial line (pyserial; RS-232, or a pty in tests), speaking the gateway's line protocol
(docs/serial.md, `broker.serial_gateway`): one frame per message, `MF1|device|channel|seq|base64|CRC`, answered
by `ACK|seq|high|CRC` or `NAK|seq|reason|CRC`.

* `ACK`: stored (now or before) → the seq leaves the outbox;
* `NAK` with a final reason (`schema`, `malformed`, …) → dropped from the outbox, as a rejection;
* `NAK` `crc`/`frame`/`busy`, a garbled reply or none within `reply_timeout_s` → sent again (stop and wait is
  what docs/serial.md asks; the device's in-flight window lets a few frames go back to back).

The line carries no commands (RS-232 scales get their PLU table over the network); authentication is by wiring.
`port` is a device path / pyserial URL, or an open file descriptor (the master end of a pty in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import serial

from broker.serial_gateway import encode_frame, parse_reply
from simulators.transports.base import DeviceLink, LinkDown, Transport
from simulators.wire import Ack, encode

MAX_LINE_BYTES = 90_000  # the gateway's default: 64 KiB body × 4/3 + 200


class _FdPort:
    """A raw file descriptor with the few pyserial methods the transport uses (a pty master in tests)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    @property
    def in_waiting(self) -> int:
        return 4096

    def read(self, size: int) -> bytes:
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                continue

    def close(self) -> None:
        """The fd belongs to whoever passed it in (closing a pty master would end the pty)."""


class SerialTransport(Transport):
    name = "serial"
    max_batch_messages = 8  # frames written back to back; the gateway answers them in order

    def __init__(
        self,
        port: str | int,
        *,
        baudrate: int = 9600,
        reply_timeout_s: float = 2.0,
        write_timeout_s: float = 10.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
    ) -> None:
        super().__init__(encoding="json", reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.port = port
        self.baudrate = baudrate
        self.reply_timeout_s = reply_timeout_s
        self.write_timeout_s = write_timeout_s
        self.bad_replies = 0
        self.naks: dict[str, int] = {}
        self._serial: Any = None
        self._buffer = b""
        self._lost: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._write_lock = asyncio.Lock()
        self._timers: dict[int, asyncio.TimerHandle] = {}

    async def start(self, link: DeviceLink) -> None:
        self.link = link
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"serial:{self.port}")

    async def close(self) -> None:
        self._closing = True
        self._lose()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._set_connected(False, "closed")

    def _lose(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _open(self) -> Any:
        if isinstance(self.port, int):
            return _FdPort(self.port)
        return serial.serial_for_url(self.port, self.baudrate, timeout=0, write_timeout=self.write_timeout_s)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            held = self.held_down_for()
            if held > 0:
                await asyncio.sleep(held)
                continue
            try:
                port = self._open()
            except (serial.SerialException, OSError) as exc:
                self.last_error = f"serial: {exc}"
                await asyncio.sleep(self.backoff())
                continue
            self._serial, self._buffer = port, b""
            self._lost = loop.create_future()
            loop.add_reader(port.fileno(), self._readable)
            self.reset_backoff()
            self._set_connected(True)
            try:
                await self._lost
            finally:
                with contextlib.suppress(Exception):
                    loop.remove_reader(port.fileno())
                async with self._write_lock:
                    self._serial = None
                    with contextlib.suppress(Exception):
                        port.close()
                self._set_connected(False, self.last_error or "port closed")
            if not self._closing:
                await asyncio.sleep(max(self.backoff(), self.held_down_for()))

    def _readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            self.last_error = f"serial read: {exc}"
            self._lose()
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._reply(line)
        if len(self._buffer) > MAX_LINE_BYTES:
            self._buffer = b""
            self.bad_replies += 1

    def _reply(self, line: bytes) -> None:
        assert self.link is not None
        if not line.strip():
            return
        reply = parse_reply(line)
        if reply is None:  # garbled on the way back: the frame's timer resends it
            self.bad_replies += 1
            return
        if reply.seq is not None and (timer := self._timers.pop(reply.seq, None)) is not None:
            timer.cancel()
        if reply.kind == "ACK" and reply.seq is not None:
            self.link.on_ack(Ack(seqs=(reply.seq,), high=reply.high))
            return
        self.naks[reply.reason or "?"] = self.naks.get(reply.reason or "?", 0) + 1
        if reply.seq is None:
            return  # "NAK|-|frame": it could not tell which frame; timers resend what is unanswered
        if reply.retry:
            self._resend([reply.seq])
        else:
            self.link.on_ack(Ack.parse({"rejected": [{"seq": reply.seq, "reason": reply.reason or "malformed"}]}))

    def _resend(self, seqs: list[int]) -> None:
        """Ask the device to send these seqs again now (NAK crc/frame/busy, or no reply in time)."""
        retry = getattr(self.link, "on_retry", None)
        if retry is not None:
            retry(seqs)

    def _expect_reply(self, seq: int) -> None:
        loop = asyncio.get_running_loop()
        if (old := self._timers.pop(seq, None)) is not None:
            old.cancel()
        self._timers[seq] = loop.call_later(self.reply_timeout_s, self._no_reply, seq)

    def _no_reply(self, seq: int) -> None:
        self._timers.pop(seq, None)
        if self.connected:
            self._resend([seq])

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            port = self._serial
            if port is None or not self.connected or self.held_down_for() > 0:
                raise LinkDown(self.last_error or "serial port not open")
            try:
                await asyncio.to_thread(port.write, data)
            except (serial.SerialException, OSError) as exc:
                self.last_error = f"serial write: {exc}"
                self._lose()
                raise LinkDown(self.last_error) from exc

    async def send(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        assert self.link is not None
        for message in messages:  # one message per frame (docs/serial.md)
            seq = int(message["seq"])
            frame = encode_frame(self.identity.device_id, channel, seq, encode(dict(message)))
            if len(frame) > MAX_LINE_BYTES:  # can never be carried: drop it as the gateway would
                self.link.on_ack(Ack.parse({"rejected": [{"seq": seq, "reason": "oversized"}]}))
                continue
            await self._write(frame)
            self._expect_reply(seq)

    async def send_raw(self, channel: str, data: bytes) -> None:
        await self._write(data.replace(b"\n", b" ") + b"\r\n")

    async def drop_link(self, seconds: float) -> None:
        """Unplug the cable: close the port and keep it closed for `seconds`."""
        await super().drop_link(seconds)
        self._lose()
