"""Frame sources against the camera simulator: RTSP (RTP/JPEG through OpenCV's FFmpeg), MJPEG and snapshots,
each reconnecting after the camera drops it."""

from __future__ import annotations

import asyncio

import pytest

from vision.scenes import entrance_scene
from vision.simulator import CameraSimulator
from vision.sources import FrameSlot, FrameSource, decode

pytestmark = pytest.mark.timeout(120)


async def _until(check, what: str, within_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(within_s * 10)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("kind", ["rtsp", "mjpeg", "snapshot"])
async def test_a_source_delivers_decodable_frames_and_reconnects_after_a_drop(kind: str) -> None:
    async with CameraSimulator(entrance_scene(), serial="SRC01", fps=10) as camera:
        url = {"rtsp": camera.rtsp_url, "mjpeg": camera.mjpeg_url, "snapshot": camera.snapshot_url}[kind]
        slot, states = FrameSlot(), []
        source = FrameSource(url, slot, on_state=lambda state, detail: states.append(state), snapshot_fps=5)
        task = asyncio.create_task(source.run())
        try:
            await _until(lambda: slot.received >= 3, "frames")
            frame = slot.take()
            assert frame is not None
            image = decode(frame)
            assert image is not None and image.shape == (240, 320, 3)
            if kind != "snapshot":  # a snapshot poll has no connection to drop
                camera.drop_streams()
                await _until(lambda: source.connects >= 2, "a reconnect")
                received = slot.received
                await _until(lambda: slot.received > received + 2, "frames after the reconnect")
                assert states[:3] == ["connected", "lost", "connected"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_an_unreachable_stream_is_retried_and_never_reported_connected() -> None:
    slot, states = FrameSlot(), []
    source = FrameSource("http://127.0.0.1:9/none.mjpeg", slot, on_state=lambda s, d: states.append(s),
                         reconnect_max_s=0.2)
    task = asyncio.create_task(source.run())
    await asyncio.sleep(1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert states == [] and slot.received == 0 and not source.connected
