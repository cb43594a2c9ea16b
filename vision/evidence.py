"""Evidence images: the frame an event was raised on, with every tracked box, the configured lines and zones,
the object that raised it highlighted, and a caption (category, zone, count, time)."""

from __future__ import annotations

from datetime import UTC, datetime

import cv2
import numpy as np
import supervision as sv

from vision.analytics import Finding, FrameResult
from vision.config import CameraAnalytics

_RED, _YELLOW, _WHITE, _BLACK = (40, 40, 230), (0, 210, 255), (255, 255, 255), (0, 0, 0)


def render_evidence(image: np.ndarray, tracked: sv.Detections, finding: Finding, config: CameraAnalytics,
                    result: FrameResult, quality: int = 85) -> bytes:
    """JPEG bytes of the annotated frame (BGR in)."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    for zone in config.zones:
        points = np.array([[x * width, y * height] for x, y in zone.polygon], dtype=np.int32)
        cv2.polylines(canvas, [points], True, _RED if zone.name == finding.zone else _YELLOW, 2)
        cv2.putText(canvas, f"{zone.name}: {result.occupancy.get(zone.name, 0)}", tuple(points[0] + [4, 14]),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, _WHITE, 1, cv2.LINE_AA)
    for line in config.lines:
        start = (int(line.start[0] * width), int(line.start[1] * height))
        end = (int(line.end[0] * width), int(line.end[1] * height))
        cv2.line(canvas, start, end, _YELLOW, 2)
    if len(tracked):
        labels = [f"#{t} {c} {p:.2f}" for t, c, p in zip(
            tracked.tracker_id, tracked.data.get("class_name", [""] * len(tracked)), tracked.confidence,
            strict=False)]
        canvas = sv.BoxAnnotator(thickness=1).annotate(canvas, tracked)
        canvas = sv.LabelAnnotator(text_scale=0.35, text_thickness=1, text_padding=2).annotate(
            canvas, tracked, labels=labels)
    if finding.box is not None:
        x1, y1, x2, y2 = (int(v) for v in finding.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _RED, 3)
    caption = f"{finding.category} {finding.zone or ''} n={finding.count if finding.count is not None else '-'} " \
              f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    cv2.rectangle(canvas, (0, height - 18), (width, height), _BLACK, -1)
    cv2.putText(canvas, caption, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _WHITE, 1, cv2.LINE_AA)
    ok, jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes() if ok else b""
