"""Vision: detector frames/s on the CPU, PyTorch vs ONNX export, and cameras at 1 fps with analytics on.

The YOLOv8 nano architecture is built from its YAML (`yolov8n.yaml`): random weights, but exactly the compute of
the pretrained model, which cannot be downloaded here. Frames are synthetic 1280×720 market scenes encoded as
JPEG, as a camera sends them. Baseline in the same run: PyTorch at 640 px with all threads; `vs baseline` is
frames/s over the baseline's frames/s (above 1 is faster).

"cameras at 1 fps" is the whole per-frame path of the worker — JPEG decode, detector, ByteTrack, supervision
lines and zones, the analytics rules — run back to back for `frames` frames: how many cameras sampled once a
second this machine keeps up with.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console


def _frames(count: int) -> list[bytes]:
    from vision.scenes import crowd_scene

    scene = crowd_scene(width=1280, height=720, people=8)
    frames = []
    for n in range(count):
        image, _ = scene.render(n * 0.5)
        _, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        frames.append(jpeg.tobytes())
    return frames


def _time(fn: Any, frames: list[np.ndarray], warmup: int = 2) -> float:
    for frame in frames[:warmup]:
        fn(frame)
    began = time.perf_counter()
    for frame in frames:
        fn(frame)
    return (time.perf_counter() - began) / len(frames)


async def run(console: Console, quick: bool = False) -> list[dict[str, Any]]:
    import torch

    from vision.detector import YoloDetector
    from vision.training import quiet_ultralytics

    quiet_ultralytics()
    from ultralytics import YOLO

    cores = len(os.sched_getaffinity(0))
    count = 6 if quick else 20
    jpegs = _frames(count)
    images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "yolov8n.pt"
        YOLO("yolov8n.yaml").save(weights)
        baseline_fps = 0.0
        torch.set_num_threads(cores)
        for imgsz in (640, 320):
            detector = YoloDetector(weights, image_size=imgsz, threads=cores)
            seconds = _time(lambda f, d=detector: d.detect(f, confidence=0.25), images)
            baseline_fps = baseline_fps or 1 / seconds
            rows.append({"case": f"yolov8n PyTorch {imgsz} px, {cores} threads", "ms/frame": seconds * 1000,
                         "frames/s": 1 / seconds, "vs baseline": (1 / seconds) / baseline_fps})
            torch.set_num_threads(1)
            seconds = _time(lambda f, d=detector: d.detect(f, confidence=0.25), images[: max(4, count // 2)])
            torch.set_num_threads(cores)
            rows.append({"case": f"yolov8n PyTorch {imgsz} px, 1 thread (per core)", "ms/frame": seconds * 1000,
                         "frames/s": 1 / seconds, "vs baseline": (1 / seconds) / baseline_fps})
        for imgsz in (640, 320):
            try:
                exported = YOLO(str(weights)).export(format="onnx", imgsz=imgsz, simplify=False, verbose=False)
            except Exception as err:  # onnx/onnxruntime not installed: say so in the table
                rows.append({"case": f"yolov8n ONNX {imgsz} px", "note": f"export failed: {err}"[:80]})
                continue
            detector = YoloDetector(exported, image_size=imgsz)
            seconds = _time(lambda f, d=detector: d.detect(f, confidence=0.25), images)
            rows.append({"case": f"yolov8n ONNX Runtime {imgsz} px, {cores} threads", "ms/frame": seconds * 1000,
                         "frames/s": 1 / seconds, "vs baseline": (1 / seconds) / baseline_fps})
            os.replace(exported, Path(tmp) / f"yolov8n-{imgsz}.onnx")
        for imgsz in (640, 320):
            seconds = await _pipeline(YoloDetector(weights, image_size=imgsz, threads=cores), jpegs)
            rows.append({"case": f"whole worker path, yolov8n {imgsz} px", "ms/frame": seconds * 1000,
                         "frames/s": 1 / seconds, "vs baseline": (1 / seconds) / baseline_fps,
                         "cameras at 1 fps": int(1 / seconds)})
    return rows


async def _pipeline(detector: Any, jpegs: list[bytes]) -> float:
    """Seconds per frame through decode → detect → track → analytics, with one line and two zones."""
    from concurrent.futures import ThreadPoolExecutor

    from vision.config import CameraAnalytics
    from vision.sources import Frame
    from vision.worker import CameraSpec, CameraWorker

    class NullSink:
        async def finding(self, *args: Any) -> None: ...
        async def counts(self, *args: Any) -> None: ...
        async def telemetry(self, *args: Any) -> None: ...
        async def fault(self, *args: Any) -> None: ...

    analytics = CameraAnalytics(
        lines=[{"name": "gate", "start": (1, 0.5), "end": (0, 0.5)}],
        zones=[{"name": "hall", "polygon": [(0, 0), (1, 0), (1, 1), (0, 1)], "crowd_limit": 5, "crowd_hold_s": 5},
               {"name": "escalator", "polygon": [(0.6, 0), (1, 0), (1, 1), (0.6, 1)],
                "escalator": {"direction": (0, -1)}}])
    with ThreadPoolExecutor(1) as executor:
        worker = CameraWorker(CameraSpec("bench-cam", None, "http://127.0.0.1:9/none", analytics), detector,
                              NullSink(), executor)
        for jpeg in jpegs[:2]:
            image = worker.decode(Frame(jpeg, 0.0))
            assert image is not None
            await worker.analyse(image, 0.0)
        began = time.perf_counter()
        for n, jpeg in enumerate(jpegs):
            image = worker.decode(Frame(jpeg, 0.0))
            assert image is not None
            await worker.analyse(image, float(n))
        return (time.perf_counter() - began) / len(jpegs)
