"""Detection and tracking: an ultralytics YOLO model (weights path is a setting) and ByteTrack per camera.

ultralytics and torch are imported here only, when a detector is built: the rest of the package (config,
analytics, onboarding, the simulator) works without them. supervision 0.26+ no longer ships ByteTrack, so the
tracker is ultralytics' own `BYTETracker`, fed the detector's boxes and returned as `sv.Detections` with
`tracker_id`, which is what supervision's zones and lines take.

Two inference backends behind the one `YoloDetector`: `torch` runs the .pt weights, `onnx` runs them exported to
ONNX (cached next to the weights, re-exported when the weights change) on ONNX Runtime. Both go through the same
ultralytics `predict` — letterbox, NMS, class filter, confidence — so tracking, lines and zones see the same
detections whichever runs.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import supervision as sv


class DetectorError(RuntimeError):
    """The detector cannot be built (weights missing or unreadable, extra not installed)."""


Backend = Literal["torch", "onnx"]


def onnx_export(weights: Path, image_size: int) -> Path:
    """The ONNX export of `weights` at `image_size`, cached beside them as `<stem>.<size>px.<sha>.onnx`: the
    weights' hash is in the name, so changed weights are exported again (older exports of them are removed).
    Exported in a scratch folder and moved in whole, so a concurrent worker never loads a half-written file."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    target = weights.with_name(f"{weights.stem}.{image_size}px.{digest}.onnx")
    if target.exists():
        return target
    from ultralytics import YOLO

    try:
        with tempfile.TemporaryDirectory(dir=weights.parent, prefix=".export-") as scratch:
            copy = Path(scratch) / weights.name
            shutil.copyfile(weights, copy)
            # Dynamic input shape: ultralytics then letterboxes a frame as it does for PyTorch (the long side to
            # image_size, the short one padded to a multiple of 32), so the graph sees the very same pixels. A
            # static graph pads every frame to a square: 1.7× the pixels of a 16:9 frame, and other detections.
            exported = Path(YOLO(str(copy), task="detect").export(format="onnx", imgsz=image_size, dynamic=True,
                                                                   simplify=False, verbose=False))
            os.replace(exported, target)
    except OSError as err:
        raise DetectorError(f"cannot write the ONNX export of {weights} next to it ({err}); export it with "
                            "`marketfleet vision train --export onnx` or make the folder writable") from err
    except ModuleNotFoundError as err:
        raise DetectorError(f"the onnx backend needs {err.name}: pip install 'marketfleet[vision]'") from err
    for stale in weights.parent.glob(f"{weights.stem}.{image_size}px.*.onnx"):
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


class YoloDetector:
    """The loaded model, shared by every camera of the worker. `detect` is blocking (run it off the loop). One
    model object must not run two inferences at once, so `workers` copies are loaded and each call takes a free
    one: on a 2-core machine two single-threaded inferences side by side use both cores, where one inference
    with two intra-op threads leaves much of the second idle (see BENCHMARKS.md, vision)."""

    def __init__(self, model_path: str | Path, *, image_size: int = 640, device: str = "cpu",
                 threads: int | None = None, backend: Backend = "torch", workers: int = 1) -> None:
        path = Path(model_path)
        if not path.exists():
            raise DetectorError(
                f"detector weights {path} not found: set vision.model_path (MF_VISION__MODEL_PATH) to a .pt, "
                ".onnx or OpenVINO model; nothing is downloaded"
            )
        try:
            from vision.training import quiet_ultralytics

            quiet_ultralytics()
            import torch
            from ultralytics import YOLO
        except ModuleNotFoundError as err:
            raise DetectorError(f"the detector needs the vision extra ({err.name} is missing): "
                                "pip install 'marketfleet[vision]'") from err
        if threads:
            torch.set_num_threads(threads)
        if backend not in ("torch", "onnx"):
            raise DetectorError(f"vision.backend {backend!r} is not one of torch, onnx")
        self.weights = path
        if backend == "onnx" and path.suffix == ".pt":
            try:
                path = onnx_export(path, image_size)
            except DetectorError:
                raise
            except Exception as err:  # a .pt ultralytics cannot export
                raise DetectorError(f"detector weights {path} could not be exported to ONNX: {err}") from err
        # a file already exported (.onnx, OpenVINO folder) runs on its own runtime whatever the setting says
        self.backend = "onnx" if path.suffix == ".onnx" else "torch" if path.suffix == ".pt" else path.suffix
        try:
            models = [YOLO(str(path), task="detect") for _ in range(max(1, workers))]
        except Exception as err:  # ultralytics raises many types for a bad file
            raise DetectorError(f"detector weights {path} could not be loaded: {err}") from err
        self.path, self.image_size, self.device, self.workers = path, image_size, device, len(models)
        self.model = models[0]
        self.names: dict[int, str] = dict(self.model.names)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for model in models:
            if self.backend == "onnx" and device == "cpu":
                self._tune_onnx(model, threads or 1)
            self._idle.put(model)

    def _tune_onnx(self, model: Any, threads: int) -> None:
        """ultralytics builds its ONNX Runtime session with default options: one spinning intra-op thread per
        core. Rebuilt with the `threads` setting and spinning off, so idle inference threads do not burn the
        cores the frame decoding and the other workers on the machine need."""
        import onnxruntime

        blank = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        model.predict(blank, imgsz=self.image_size, device=self.device, verbose=False)  # builds the predictor
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model.predictor.model.backend.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"])

    def class_ids(self, names: list[str]) -> list[int]:
        return [i for i, name in self.names.items() if name in names]

    def detect(self, frame_bgr: np.ndarray, *, confidence: float = 0.35, classes: list[str] | None = None,
               iou: float = 0.5) -> tuple[sv.Detections, Any]:
        """Detections (with `class_name`) and the raw boxes the tracker takes."""
        ids = self.class_ids(classes) if classes else None
        model = self._idle.get()  # waits while all copies are busy
        try:
            result = model.predict(frame_bgr, imgsz=self.image_size, conf=confidence, iou=iou, classes=ids,
                                   device=self.device, verbose=False)[0]
        finally:
            self._idle.put(model)
        detections = sv.Detections.from_ultralytics(result)
        return detections, result.boxes.cpu().numpy()


class Tracker:
    """ByteTrack state of one camera."""

    def __init__(self, frame_rate: float, names: dict[int, str]) -> None:
        from ultralytics.trackers.byte_tracker import BYTETracker

        buffer = max(5, round(frame_rate * 3))  # keep a lost track ~3 s, whatever the sampling rate
        self.names = names
        self._tracker = BYTETracker(SimpleNamespace(
            track_high_thresh=0.25, track_low_thresh=0.1, new_track_thresh=0.25, track_buffer=buffer,
            match_thresh=0.8, fuse_score=True,
        ))

    def update(self, boxes: Any, frame_bgr: np.ndarray | None = None) -> sv.Detections:
        rows = self._tracker.update(boxes, frame_bgr)
        if len(rows) == 0:
            return sv.Detections.empty()
        rows = np.asarray(rows, dtype=float)
        class_ids = rows[:, 6].astype(int)
        return sv.Detections(
            xyxy=rows[:, :4], confidence=rows[:, 5], class_id=class_ids, tracker_id=rows[:, 4].astype(int),
            data={"class_name": np.array([self.names.get(int(c), str(c)) for c in class_ids])},
        )
