"""A scale on a serial line (pyserial; RS-232, or a pty in tests), framed by `simulators.framing`.

The scale writes one frame per uplink and reads frames back: `ack` frames (the acknowledgement JSON) and `cmd`
frames (commands). The framing is a parameter (`Framing`) until docs/serial.md fixes the line protocol; the
default is the `MF1` proposal in `simulators/framing.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import serial

from simulators.framing import MF1, FrameError, Framing
from simulators.transports.base import DeviceLink, LinkDown, Transport, log
from simulators.wire import Ack


class SerialTransport(Transport):
    name = "serial"
    max_batch_messages = 8

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        framing: Framing = MF1,
        write_timeout_s: float = 10.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
    ) -> None:
        super().__init__(encoding="json", reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.port = port
        self.baudrate = baudrate
        self.framing = framing
        self.write_timeout_s = write_timeout_s
        # Escaped non-ASCII takes 6 bytes per character where the batcher counts UTF-8's 3: halve the budget.
        self.max_batch_bytes = (framing.max_line_bytes - 256) // 2
        self.bad_frames = 0
        self._serial: serial.Serial | None = None
        self._buffer = b""
        self._lost: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._write_lock = asyncio.Lock()

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
        self._set_connected(False, "closed")

    def _lose(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            held = self.held_down_for()
            if held > 0:
                await asyncio.sleep(held)
                continue
            try:
                port = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=self.write_timeout_s)
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
            self._line(line)
        if len(self._buffer) > 4 * self.framing.max_line_bytes:
            self._buffer = b""
            self.bad_frames += 1

    def _line(self, line: bytes) -> None:
        assert self.link is not None
        if not line.strip():
            return
        try:
            frame = self.framing.decode(line)
        except FrameError as exc:
            self.bad_frames += 1
            log.debug("%s: bad frame %r: %s", self.identity.device_id, line[:80], exc)
            return
        if frame.device_id != self.identity.device_id:
            self.bad_frames += 1
            return
        if frame.channel == "ack":
            try:
                self.link.on_ack(Ack.parse(frame.body))
            except (TypeError, ValueError):
                self.bad_frames += 1
        elif frame.channel == "cmd":
            self.link.on_command(frame.body)
        else:
            self.link.on_downlink(frame.channel, frame.body)

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
        body: Any = dict(messages[0]) if len(messages) == 1 else [dict(m) for m in messages]
        try:
            line = self.framing.encode(self.identity.device_id, channel, body)
        except FrameError as exc:
            if len(messages) > 1:  # too long for one line: one message per line
                for message in messages:
                    await self.send(channel, [message])
                return
            # One message longer than a line can never be carried: drop it like the platform would.
            self.link.on_ack(Ack.parse({"rejected": [{"seq": messages[0]["seq"], "reason": "oversized",
                                                      "detail": str(exc)}]}))  # fmt: skip
            return
        await self._write(line)

    async def send_raw(self, channel: str, data: bytes) -> None:
        await self._write(data + b"\r\n")

    async def drop_link(self, seconds: float) -> None:
        """Unplug the cable: close the port and keep it closed for `seconds`."""
        await super().drop_link(seconds)
        self._lose()
