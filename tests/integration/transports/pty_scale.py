"""The scale's end of a pseudo-terminal pair, for serial gateway tests: real bytes through the tty layer."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from broker.serial_gateway import Reply, parse_reply


class Scale:
    """The scale's end of a pty pair: writes frames, reads the gateway's reply lines."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._buffer = bytearray()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                continue
            view = view[written:]

    async def line(self, within_s: float = 10.0) -> bytes:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within_s):
            while b"\n" not in self._buffer:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(self.master, lambda f=readable: f.done() or f.set_result(None))
                try:
                    await readable
                finally:
                    loop.remove_reader(self.master)
                with contextlib.suppress(BlockingIOError):
                    self._buffer += os.read(self.master, 4096)
        end = self._buffer.index(b"\n") + 1
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    async def reply(self) -> Reply:
        line = await self.line()
        reply = parse_reply(line)
        assert reply is not None, f"garbled reply {line!r}"
        return reply

    async def nothing_more(self, wait: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await self.line(within_s=wait)
