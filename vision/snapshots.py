"""The latest picture of a camera, for people: its ONVIF snapshot URI, else one frame of its MJPEG stream.

The worker runs in its own process and keeps no frames, so the dashboard asks the camera itself, with a short
timeout, and keeps each answer `CACHE_S` seconds (a grid of cameras opened by many people costs each camera one
request). A camera that does not answer, answers an error, or sends something that is not a JPEG gives
`SnapshotUnavailable` with the reason. RTSP-only cameras without a snapshot URI have no picture here: decoding
RTSP needs OpenCV, which only the `[vision]` worker installs. Plain httpx, so the API needs no vision extra.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

import httpx

CACHE_S = 2.0
TIMEOUT_S = 3.0
MAX_BYTES = 8 * 1024 * 1024  # a 4K JPEG is about 2 MiB


class SnapshotUnavailable(Exception):
    """No picture from this camera now; `str(err)` says why, for the operator."""


_cache: dict[str, tuple[float, bytes]] = {}
_locks: dict[str, asyncio.Lock] = {}


async def latest_snapshot(camera_id: str, snapshot_uri: str | None, stream_uri: str,
                          *, timeout_s: float = TIMEOUT_S) -> bytes:
    """JPEG bytes of the camera's current picture (at most `CACHE_S` old)."""
    cached = _cache.get(camera_id)
    if cached is not None and time.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    async with _locks.setdefault(camera_id, asyncio.Lock()):  # viewers arriving together share one request
        cached = _cache.get(camera_id)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        try:
            jpeg = await asyncio.wait_for(_fetch(snapshot_uri, stream_uri, timeout_s), timeout_s + 0.5)
        except TimeoutError as err:
            raise SnapshotUnavailable(f"the camera did not answer within {timeout_s:g} s") from err
        except httpx.HTTPError as err:
            raise SnapshotUnavailable(f"the camera is unreachable ({type(err).__name__}: {err})") from err
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[camera_id] = (time.monotonic(), jpeg)
        return jpeg


async def _fetch(snapshot_uri: str | None, stream_uri: str, timeout_s: float) -> bytes:
    timeout = httpx.Timeout(timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
        if snapshot_uri:
            response = await http.get(snapshot_uri)
            if response.status_code != 200:
                raise SnapshotUnavailable(f"the camera answered HTTP {response.status_code} for its snapshot")
            return _jpeg(response.content)
        if urlparse(stream_uri).scheme not in ("http", "https"):
            raise SnapshotUnavailable("the camera has no snapshot URI and streams RTSP only")
        async with http.stream("GET", stream_uri) as response:
            if response.status_code != 200:
                raise SnapshotUnavailable(f"the camera answered HTTP {response.status_code} for its stream")
            return _jpeg(await _first_part(response))


async def _first_part(response: httpx.Response) -> bytes:
    """The first JPEG of an MJPEG (multipart) stream, or the body of a single image."""
    if not response.headers.get("content-type", "").startswith("multipart/"):
        return await response.aread()
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        start = buffer.find(b"\xff\xd8")
        end = buffer.find(b"\xff\xd9", start + 2) if start >= 0 else -1
        if end >= 0:
            return buffer[start:end + 2]
        if len(buffer) > MAX_BYTES:
            break
    raise SnapshotUnavailable("the camera's stream ended before a whole picture arrived")


def _jpeg(body: bytes) -> bytes:
    if len(body) > MAX_BYTES:
        raise SnapshotUnavailable(f"the camera sent {len(body)} bytes, more than a snapshot")
    if not body.startswith(b"\xff\xd8"):
        raise SnapshotUnavailable("the camera sent no picture (empty, or not a JPEG)")
    return body
