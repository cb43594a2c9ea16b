"""The picture the dashboard shows of a camera (vision/snapshots.py), from a simulated camera over real HTTP: its
snapshot URI, else the first frame of its MJPEG stream; a clear reason when there is none."""

from __future__ import annotations

import pytest

from vision.scenes import entrance_scene
from vision.simulator import CameraSimulator
from vision.snapshots import SnapshotUnavailable, latest_snapshot

pytestmark = pytest.mark.timeout(60)


async def test_the_snapshot_uri_gives_the_cameras_current_jpeg() -> None:
    async with CameraSimulator(entrance_scene(), serial="SNAP01") as camera:
        jpeg = await latest_snapshot("snap-1", camera.snapshot_url, camera.mjpeg_url)
    assert jpeg[:2] == b"\xff\xd8" and jpeg.endswith(b"\xff\xd9")


async def test_without_a_snapshot_uri_the_first_frame_of_the_mjpeg_stream_is_taken() -> None:
    async with CameraSimulator(entrance_scene(), serial="SNAP02") as camera:
        jpeg = await latest_snapshot("snap-2", None, camera.mjpeg_url)
    assert jpeg[:2] == b"\xff\xd8" and jpeg.endswith(b"\xff\xd9")


async def test_a_camera_that_is_gone_or_answers_no_picture_says_why() -> None:
    async with CameraSimulator(entrance_scene(), serial="SNAP03") as camera:
        with pytest.raises(SnapshotUnavailable, match="HTTP 405"):  # the SOAP endpoint answers POST only
            await latest_snapshot("snap-3", camera.device_url, camera.mjpeg_url)
        with pytest.raises(SnapshotUnavailable, match="RTSP only"):
            await latest_snapshot("snap-4", None, camera.rtsp_url)
        address = camera.snapshot_url
    with pytest.raises(SnapshotUnavailable, match="unreachable"):
        await latest_snapshot("snap-5", address, "")
