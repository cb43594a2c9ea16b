"""Frame sources: MJPEG over HTTP, JPEG snapshots polled over HTTP, RTSP and files through OpenCV.

A source runs as a task that keeps only the **latest** frame in a `FrameSlot`; the worker takes from the slot at
its sampling rate, so a slow detector skips frames instead of falling ever further behind (the skipped count is
reported). Encoded JPEG bytes are kept as they arrive and decoded only when sampled. A source that fails
reconnects with exponential backoff and says so through `on_state`; it never ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cv2
import httpx
import numpy as np

log = logging.getLogger(__name__)

StateCallback = Callable[[str, str], None]  # (state: "connected" | "lost", detail)


@dataclass
class Frame:
    data: bytes | np.ndarray  # JPEG bytes (HTTP) or a decoded BGR array (OpenCV sources)
    received: float  # monotonic time


class FrameSlot:
    """The latest frame; `put` over an untaken frame counts it as skipped."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._event = asyncio.Event()
        self.received = 0
        self.skipped = 0

    def put(self, data: bytes | np.ndarray) -> None:
        if self._frame is not None:
            self.skipped += 1
        self._frame = Frame(data, time.monotonic())
        self.received += 1
        self._event.set()

    def take(self) -> Frame | None:
        frame, self._frame = self._frame, None
        self._event.clear()
        return frame

    async def wait(self, within_s: float) -> Frame | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), within_s)
        return self.take()


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def decode(frame: Frame, reduce: int = 1) -> np.ndarray | None:
    """BGR array of a frame, or None when its bytes are not an image (a garbage frame). `reduce` 2 or 4 decodes
    JPEG at a half or a quarter of its size directly (libjpeg's DCT scaling: a third cheaper at 1/2)."""
    if isinstance(frame.data, np.ndarray):
        return frame.data
    if not frame.data:
        return None
    return cv2.imdecode(np.frombuffer(frame.data, np.uint8), _REDUCED.get(reduce, cv2.IMREAD_COLOR))


class StreamError(Exception):
    """The stream could not be opened or broke; the source reconnects."""


class FrameSource:
    """Reads `url` into `slot` forever, reconnecting with backoff (0.5 s doubling up to `reconnect_max_s`)."""

    def __init__(self, url: str, slot: FrameSlot, *, on_state: StateCallback | None = None,
                 reconnect_max_s: float = 30.0, snapshot_fps: float = 2.0, timeout_s: float = 10.0) -> None:
        self.url, self.slot = url, slot
        self.on_state = on_state or (lambda state, detail: None)
        self.reconnect_max_s, self.snapshot_fps, self.timeout_s = reconnect_max_s, snapshot_fps, timeout_s
        self.connects = 0
        self.connected = False

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._read()
                detail = "stream ended"
            except StreamError as err:
                detail = str(err)
            except (httpx.HTTPError, OSError) as err:
                detail = f"{type(err).__name__}: {err}"
            if self.connected:
                self.connected = False
                delay = 0.5  # it worked before: retry soon
                self.on_state("lost", detail)
            log.info("stream %s: %s; reconnecting in %.1f s", self.url, detail, delay)
            await asyncio.sleep(delay)
            delay = min(self.reconnect_max_s, delay * 2)

    def _connected(self) -> None:
        self.connects += 1
        if not self.connected:
            self.connected = True
            self.on_state("connected", self.url)

    async def _read(self) -> None:
        scheme = urlparse(self.url).scheme
        if scheme in ("http", "https"):
            await self._read_http()
        elif scheme in ("rtsp", "rtsps", "file", ""):
            await self._read_opencv()
        else:
            raise StreamError(f"unsupported stream URL scheme {scheme!r} (http, https, rtsp, file)")

    async def _read_http(self) -> None:
        timeout = httpx.Timeout(self.timeout_s, read=self.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
            async with http.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise StreamError(f"HTTP {response.status_code} from {self.url}")
                kind = response.headers.get("content-type", "")
                if kind.startswith("multipart/"):
                    self._connected()
                    await self._read_multipart(response, _boundary(kind))
                    return
                body = await response.aread()
            if not kind.startswith("image/"):
                raise StreamError(f"{self.url} sent {kind or 'no content type'}, not MJPEG or a JPEG snapshot")
            self._connected()
            self.slot.put(body)
            # A snapshot URL: poll it at the snapshot rate on the same connection.
            while True:
                await asyncio.sleep(1 / self.snapshot_fps)
                response = await http.get(self.url)
                if response.status_code != 200:
                    raise StreamError(f"HTTP {response.status_code} from {self.url}")
                self.slot.put(response.content)

    async def _read_multipart(self, response: httpx.Response, boundary: bytes) -> None:
        buffer = b""
        marker = b"--" + boundary
        async for chunk in response.aiter_bytes():
            buffer += chunk
            while True:
                start = buffer.find(marker)
                if start < 0:
                    buffer = buffer[-len(marker):]
                    break
                head_end = buffer.find(b"\r\n\r\n", start)
                if head_end < 0:
                    break
                headers = _headers(buffer[start + len(marker):head_end])
                body_start = head_end + 4
                length = headers.get("content-length")
                if length is not None and length.isdigit():
                    end = body_start + int(length)
                    if len(buffer) < end:
                        break
                else:
                    end = buffer.find(marker, body_start)
                    if end < 0:
                        break
                self.slot.put(buffer[body_start:end].rstrip(b"\r\n") if length is None else buffer[body_start:end])
                buffer = buffer[end:]
            if len(buffer) > 32 * 1024 * 1024:
                raise StreamError("MJPEG part larger than 32 MiB; not a camera stream")
        raise StreamError("MJPEG stream closed by the camera")

    async def _read_opencv(self) -> None:
        target = self.url.removeprefix("file://")
        is_file = urlparse(self.url).scheme in ("file", "")
        if is_file and not await asyncio.to_thread(Path(target).exists):
            raise StreamError(f"file {target} not found")
        if urlparse(self.url).scheme.startswith("rtsp"):
            # RTP over the RTSP TCP connection: no lost UDP packets, one port through the market's firewalls
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        # One thread owns the VideoCapture from open to release: OpenCV objects must not be used from two
        # threads, and a cancelled `to_thread` call would leave its thread running inside read().
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        done: asyncio.Future[str] = loop.create_future()

        def finish(result: str) -> None:
            if not done.done():
                done.set_result(result)

        def capture_loop() -> None:
            capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
            try:
                if not capture.isOpened():
                    loop.call_soon_threadsafe(finish, f"OpenCV could not open {self.url}")
                    return
                loop.call_soon_threadsafe(self._connected)
                fps = capture.get(cv2.CAP_PROP_FPS) or 0
                while not stop.is_set():
                    ok, image = capture.read()
                    if not ok:
                        loop.call_soon_threadsafe(finish, "end of file" if is_file else "RTSP stream stopped")
                        return
                    loop.call_soon_threadsafe(self.slot.put, image)
                    if is_file and fps > 0:
                        stop.wait(1 / fps)  # play a file at its own rate, like a camera would
                loop.call_soon_threadsafe(finish, "stopped")
            except RuntimeError:  # the loop closed while we were reading
                pass
            finally:
                capture.release()

        threading.Thread(target=capture_loop, name=f"capture {self.url}", daemon=True).start()
        try:
            raise StreamError(await done)
        finally:
            stop.set()


def _boundary(content_type: str) -> bytes:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').removeprefix("--").encode()
    raise StreamError(f"multipart stream without a boundary: {content_type}")


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return headers
