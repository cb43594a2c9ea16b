"""Vision: detector speed on the CPU, PyTorch vs the ONNX Runtime backend, and cameras at 1 fps on 2 cores.

The YOLOv8 nano architecture is built from its YAML (`yolov8n.yaml`): random weights, but exactly the compute of
the pretrained model, which cannot be downloaded here. Frames are synthetic 1280×720 market scenes encoded as
JPEG, as a camera sends them. Baseline in the same run: PyTorch at 640 px with all threads; `vs baseline` is
frames/s over the baseline's frames/s (above 1 is faster). Each backend runs through `YoloDetector` as the worker
builds it (`vision.backend`), so the ONNX rows include the export cache and the same post-processing.

`cpu ms/frame` is the process's CPU time per frame (all threads), which a shared, loaded machine inflates far
less than wall time. "cameras at 1 fps on 2 cores" = 2 cores × 1000 ms / cpu ms per frame of the whole worker
path — JPEG decode, detector, ByteTrack, supervision lines and zones, the analytics rules — if both cores are
kept busy; "sustained cameras" = 1000 ms / wall ms per frame, what the worker actually kept up with here, with one
inference of 2 threads at a time, or with one single-threaded inference per core (`vision.inference_workers`)
and 4 cameras side by side.
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

SIZES = (640, 416, 320)


def _frames(count: int) -> list[bytes]:
    from vision.scenes import crowd_scene

    scene = crowd_scene(width=1280, height=720, people=8)
    frames = []
    for n in range(count):
        image, _ = scene.render(n * 0.5)
        _, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        frames.append(jpeg.tobytes())
    return frames


def _time(fn: Any, frames: list[Any], warmup: int = 2) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) per frame."""
    for frame in frames[:warmup]:
        fn(frame)
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        fn(frame)
    return (time.perf_counter() - wall) / len(frames), (time.process_time() - cpu) / len(frames)


def _row(case: str, backend: str, wall: float, cpu: float, baseline_fps: float, **extra: Any) -> dict[str, Any]:
    return {"case": case, "backend": backend, "ms/frame": wall * 1000, "cpu ms/frame": cpu * 1000,
            "frames/s": 1 / wall, "vs baseline": (1 / wall) / baseline_fps, **extra}


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
    console.print(f"load average before: {os.getloadavg()[0]:.1f} on {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "yolov8n.pt"
        YOLO("yolov8n.yaml").save(weights)
        baseline_fps = 0.0
        # torch and onnx alternate per size, so a load change on the shared machine hits both alike
        for imgsz in SIZES:
            torch_fps = 0.0
            for backend in ("torch", "onnx"):
                detector = YoloDetector(weights, image_size=imgsz, threads=cores, backend=backend)
                wall, cpu = _time(lambda f, d=detector: d.detect(f, confidence=0.25), images)
                baseline_fps = baseline_fps or 1 / wall
                torch_fps = torch_fps or 1 / wall
                rows.append(_row(f"detector {imgsz} px, {cores} threads", backend, wall, cpu, baseline_fps,
                                 **{"onnx/torch": (1 / wall) / torch_fps}))
                detector = YoloDetector(weights, image_size=imgsz, threads=1, backend=backend)  # torch: 1 thread
                wall, cpu = _time(lambda f, d=detector: d.detect(f, confidence=0.25), images[: max(4, count // 2)])
                torch.set_num_threads(cores)
                rows.append(_row(f"detector {imgsz} px, 1 thread (per core)", backend, wall, cpu, baseline_fps))
        for imgsz in SIZES:
            torch_cpu = 0.0
            for backend in ("torch", "onnx"):
                detector = YoloDetector(weights, image_size=imgsz, threads=cores, backend=backend)
                wall, cpu = await _pipeline(detector, jpegs)
                torch_cpu = torch_cpu or cpu
                rows.append(_row(f"whole worker path {imgsz} px, 1 inference × {cores} threads", backend, wall, cpu,
                                 baseline_fps, **{"onnx/torch": torch_cpu / cpu,
                                                  "cameras at 1 fps on 2 cores": int(2 / cpu),
                                                  "sustained cameras": int(1 / wall)}))
        # what the service does with inference_workers = cores, threads = 1: one inference per core
        for imgsz in SIZES:
            torch_wall = 0.0
            for backend in ("torch", "onnx"):
                detector = YoloDetector(weights, image_size=imgsz, threads=1, backend=backend, workers=cores)
                wall, cpu = await _pipeline(detector, jpegs, cameras=cores * 2)
                torch_wall = torch_wall or wall
                rows.append(_row(f"whole worker path {imgsz} px, {cores} inferences × 1 thread", backend, wall,
                                 cpu, baseline_fps, **{"onnx/torch": torch_wall / wall,
                                                       "cameras at 1 fps on 2 cores": int(2 / cpu),
                                                       "sustained cameras": int(1 / wall)}))
                torch.set_num_threads(cores)
    console.print(f"load average after: {os.getloadavg()[0]:.1f}; onnx/torch: frames/s ratio (detector rows), "
                  "CPU-time ratio (1 inference rows), frames/s ratio (side-by-side rows); sustained cameras: "
                  "1 s / wall time per frame, what this (shared) machine kept up with")
    return rows


async def _pipeline(detector: Any, jpegs: list[bytes], cameras: int = 1) -> tuple[float, float]:
    """(wall, CPU) seconds per frame through decode → detect → track → analytics, with one line and two zones;
    `cameras` workers run side by side on an executor of `detector.workers` threads, as the service runs them."""
    import asyncio
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

    async def play(worker: CameraWorker, frames: list[bytes]) -> None:
        for n, jpeg in enumerate(frames):
            image = worker.decode(Frame(jpeg, 0.0))
            assert image is not None
            await worker.analyse(image, float(n))

    with ThreadPoolExecutor(detector.workers) as executor:
        workers = [CameraWorker(CameraSpec(f"bench-cam{n}", None, "http://127.0.0.1:9/none", analytics), detector,
                                NullSink(), executor) for n in range(cameras)]
        await asyncio.gather(*(play(worker, jpegs[:2]) for worker in workers))
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(play(worker, jpegs) for worker in workers))
        frames = len(jpegs) * cameras
        return (time.perf_counter() - wall) / frames, (time.process_time() - cpu) / frames
