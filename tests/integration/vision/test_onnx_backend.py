"""The ONNX Runtime backend: the tiny seeded model exported to ONNX finds what PyTorch finds, the export is cached
beside the weights and redone when they change, and the scripted entrance counts the same through either."""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vision.config import CameraAnalytics, VisionSettings
from vision.detector import DetectorError, YoloDetector
from vision.scenes import crowd_scene, entrance_scene, random_still
from vision.worker import CameraSpec, CameraWorker

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def weights(tiny_model: Path, tmp_path_factory) -> Path:
    """A copy of the tiny model in its own folder, so its exports are this module's."""
    copy = tmp_path_factory.mktemp("weights") / "tiny.pt"
    shutil.copyfile(tiny_model, copy)
    return copy


@pytest.fixture(scope="module")
def onnx_detector(weights: Path) -> YoloDetector:
    return YoloDetector(weights, image_size=160, threads=2, backend="onnx")


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    images = [random_still(rng, 320, 240)[0] for _ in range(6)]
    images += [crowd_scene(people=4).render(t)[0] for t in (1.0, 3.0, 5.0)]
    images += [entrance_scene(entering=3, leaving=2, loop=False).render(t)[0] for t in (2.0, 4.5, 7.0)]
    return [np.ascontiguousarray(image[..., ::-1]) for image in images]  # scenes are RGB, cameras give BGR


def _same(a: Any, b: Any, box_px: float, score: float) -> None:
    assert len(a) == len(b)
    order_a, order_b = np.lexsort(a.xyxy.T[::-1]), np.lexsort(b.xyxy.T[::-1])
    assert np.allclose(a.xyxy[order_a], b.xyxy[order_b], atol=box_px)
    assert list(a.data["class_name"][order_a]) == list(b.data["class_name"][order_b])
    assert np.allclose(a.confidence[order_a], b.confidence[order_b], atol=score)


def test_the_onnx_export_finds_the_same_objects_as_pytorch(weights: Path, onnx_detector: YoloDetector) -> None:
    assert onnx_detector.backend == "onnx" and onnx_detector.path.suffix == ".onnx"
    torch_detector = YoloDetector(weights, image_size=160, threads=2)
    assert onnx_detector.names == torch_detector.names
    found = 0
    for image in _images():
        onnx_dets, _ = onnx_detector.detect(image)
        # the same letterboxed pixels through the same network and NMS: equal to float rounding
        _same(onnx_dets, torch_detector.detect(image)[0], box_px=0.05, score=1e-3)
        found += len(onnx_dets)
    assert found >= 10  # the comparison is about real detections, not empty frames


def test_the_export_is_cached_beside_the_weights_and_redone_when_they_change(
        weights: Path, onnx_detector: YoloDetector, tmp_path: Path) -> None:
    exported = onnx_detector.path
    assert exported.parent == weights.parent and exported.name.startswith("tiny.160px.")
    stamp = exported.stat().st_mtime_ns
    again = YoloDetector(weights, image_size=160, backend="onnx")
    assert again.path == exported and exported.stat().st_mtime_ns == stamp  # reused, not exported again

    changed = tmp_path / "tiny.pt"
    shutil.copyfile(weights, changed)
    first = YoloDetector(changed, image_size=160, backend="onnx").path
    import torch

    checkpoint = torch.load(changed, weights_only=False)
    next(checkpoint["model"].parameters()).data += 0.01
    torch.save(checkpoint, changed)  # new weights in the same file
    second = YoloDetector(changed, image_size=160, backend="onnx").path
    assert second != first and second.exists() and not first.exists()


def test_an_unknown_backend_or_missing_weights_is_a_clear_error(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="not one of torch, onnx"):
        YoloDetector(weights, image_size=160, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(DetectorError, match="not found"):
        YoloDetector(tmp_path / "absent.pt", backend="onnx")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="could not be exported to ONNX"):
        YoloDetector(garbage, backend="onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".export-*"))  # nothing half-written
    with pytest.raises(ValueError):
        VisionSettings(backend="tflite")
    assert VisionSettings(backend="onnx", inference_workers=2).backend == "onnx"


class NullSink:
    async def finding(self, *args: Any) -> None: ...
    async def counts(self, *args: Any) -> None: ...
    async def telemetry(self, *args: Any) -> None: ...
    async def fault(self, *args: Any) -> None: ...


async def _entrance_counts(detector: YoloDetector) -> tuple[int, int]:
    """The scripted entrance of the worker test (3 in, 2 out), sampled at 5 fps, through the worker's path."""
    scene = entrance_scene(entering=3, leaving=2, spacing_s=2.5, crossing_s=3.0, loop=False)
    analytics = CameraAnalytics(sample_fps=5, lines=[{"name": "gate", "start": (1, 0.5), "end": (0, 0.5)}])
    with ThreadPoolExecutor(1) as executor:
        spec = CameraSpec("cam", None, "http://127.0.0.1:9/none", analytics)
        worker = CameraWorker(spec, detector, NullSink(), executor)
        totals = [0, 0]
        for n in range(int(14.0 * 5)):
            image = np.ascontiguousarray(scene.render(n / 5)[0][..., ::-1])
            result = await worker.analyse(image, n / 5)
            for count_in, count_out in result.crossings.values():
                totals[0] += count_in
                totals[1] += count_out
    return totals[0], totals[1]


async def test_the_scripted_entrance_counts_exactly_the_same_with_the_onnx_backend(
        detector: YoloDetector, onnx_detector: YoloDetector) -> None:
    torch_counts = await _entrance_counts(detector)
    onnx_counts = await _entrance_counts(onnx_detector)
    assert torch_counts == (3, 2)
    assert onnx_counts == torch_counts


def test_two_inference_workers_run_side_by_side_and_find_what_one_finds(weights: Path,
                                                                        onnx_detector: YoloDetector) -> None:
    pair = YoloDetector(weights, image_size=160, threads=1, backend="onnx", workers=2)
    assert pair.workers == 2
    images = _images()
    with ThreadPoolExecutor(2) as executor:  # as the service runs them (vision.inference_workers = 2)
        side_by_side = list(executor.map(lambda image: pair.detect(image)[0], images * 2))
    for image, found in zip(images * 2, side_by_side, strict=True):
        _same(found, onnx_detector.detect(image)[0], box_px=0.05, score=1e-3)


async def test_the_worker_built_from_settings_with_the_onnx_backend_counts_the_entrance_exactly(
        registry_url_factory, tmp_path_factory, weights: Path) -> None:
    """Settings → service → ONNX detector (two inference workers) → MJPEG camera → flow API: 3 in, 2 out."""
    from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform
    from tests.integration.vision.test_worker import GATE, played
    from vision.service import VisionService
    from vision.simulator import CameraSimulator

    data = tmp_path_factory.mktemp("onnx-data")
    # Slow walkers (6 s across the frame): the count stays exact while the machine is busy with other work.
    scene = entrance_scene(entering=3, leaving=2, spacing_s=4.0, crossing_s=6.0, loop=False)
    async with start_test_platform(data, registry_url_factory("sqlite")) as platform:
        async with serve_api(platform.app) as api:
            key = await create_vendor(api, "hik")
            await ensure_market(api, "FT01")
            counter = await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={
                "devices": [{"serial": "FLOW01", "kind": "flow_counter", "market": "FT01"}]})
            assert counter.status_code in (200, 201), counter.text
            camera = CameraSimulator(scene, serial="ENT01", password="pw", hold_until_streamed=True)
            await camera.start()
            response = await api.post("/api/v1/vision/cameras", headers=ADMIN, json={
                "host": "127.0.0.1", "port": camera.port, "password": "pw", "vendor": "hik", "market": "FT01",
                "analytics": GATE})
            assert response.status_code == 201, response.text
            settings = VisionSettings(model_path=str(weights), image_size=160, backend="onnx", threads=1,
                                      inference_workers=2, telemetry_interval_s=1, reload_s=0.5)
            service = VisionService(settings, data_dir=data, mqtt_host="127.0.0.1",
                                    mqtt_port=platform.settings.broker.port, secret_for=platform.registry.device_secret)
            await service.start()
            try:
                assert service.detector is not None and service.detector.backend == "onnx"
                await played(camera, 23.0)

                async def totals() -> tuple[int, int]:
                    flow = await api.get("/api/v1/vision/cameras/hik-ENT01/flow", params={"bucket": "minute"},
                                         headers=ADMIN)
                    assert flow.status_code == 200, flow.text
                    return flow.json()["total_in"], flow.json()["total_out"]

                last: list[tuple[int, int]] = []

                async def settled() -> bool:
                    last.append(await totals())
                    return last[-1] == (3, 2)

                for _ in range(100):  # counts are written every 2 s: poll, generously
                    if await settled():
                        break
                    await asyncio.sleep(0.2)
                assert last[-1] == (3, 2)
            finally:
                await service.aclose()
                await camera.aclose()
