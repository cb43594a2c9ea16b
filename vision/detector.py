"""Detection and tracking: an ultralytics YOLO model (weights path is a setting) and ByteTrack per camera.

ultralytics and torch are imported here only, when a detector is built: the rest of the package (config,
analytics, onboarding, the simulator) works without them. supervision 0.26+ no longer ships ByteTrack, so the
tracker is ultralytics' own `BYTETracker`, fed the detector's boxes and returned as `sv.Detections` with
`tracker_id`, which is what supervision's zones and lines take.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import supervision as sv


class DetectorError(RuntimeError):
    """The detector cannot be built (weights missing or unreadable, extra not installed)."""


class YoloDetector:
    """One loaded model, shared by every camera of the worker. `detect` is blocking (run it off the loop);
    calls are serialised, because one model object must not run two inferences at once."""

    def __init__(self, model_path: str | Path, *, image_size: int = 640, device: str = "cpu",
                 threads: int | None = None) -> None:
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
        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as err:  # ultralytics raises many types for a bad file
            raise DetectorError(f"detector weights {path} could not be loaded: {err}") from err
        self.path, self.image_size, self.device = path, image_size, device
        self.names: dict[int, str] = dict(self.model.names)
        self._lock = threading.Lock()

    def class_ids(self, names: list[str]) -> list[int]:
        return [i for i, name in self.names.items() if name in names]

    def detect(self, frame_bgr: np.ndarray, *, confidence: float = 0.35, classes: list[str] | None = None,
               iou: float = 0.5) -> tuple[sv.Detections, Any]:
        """Detections (with `class_name`) and the raw boxes the tracker takes."""
        ids = self.class_ids(classes) if classes else None
        with self._lock:
            result = self.model.predict(frame_bgr, imgsz=self.image_size, conf=confidence, iou=iou,
                                        classes=ids, device=self.device, verbose=False)[0]
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
