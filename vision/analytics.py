"""Per-camera analytics on tracked detections: line counts, zone occupancy, crowd peaks and violations.

Input per processed frame: `sv.Detections` with `tracker_id` and `data["class_name"]` (what the detector and
ByteTrack produce), the frame time in seconds and the frame size. Output: line crossings (counted per line and
direction) and `Finding`s, each raised once per track (or once per crowd episode). Geometry is supervision's
(`LineZone`, `PolygonZone`); this module only keeps the state over time that the rules need.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from vision.config import CameraAnalytics, LineConfig, ZoneConfig

_FORGET_AFTER_S = 10.0  # a track unseen this long is dropped from every rule's memory
_PPE_CATEGORY = {"white_coat": "no_white_coat", "hat": "no_hat", "mask": "no_mask"}


@dataclass(frozen=True)
class Finding:
    """Something worth an event: `category` as in fleet.kinds.VisionDetection."""

    category: str
    zone: str | None
    track_id: int | None
    count: int | None
    confidence: float
    box: tuple[float, float, float, float] | None = None  # the object that raised it, in pixels
    detail: str = ""


@dataclass
class FrameResult:
    findings: list[Finding] = field(default_factory=list)
    crossings: dict[str, tuple[int, int]] = field(default_factory=dict)  # line → (in, out) in this frame
    occupancy: dict[str, int] = field(default_factory=dict)  # zone → objects of its classes inside
    people: int = 0


def _classes(detections: sv.Detections) -> np.ndarray:
    names = detections.data.get("class_name")
    if names is None:
        return np.array([""] * len(detections))
    return np.asarray(names)


def _only(detections: sv.Detections, classes: list[str]) -> sv.Detections:
    if len(detections) == 0:
        return detections
    return detections[np.isin(_classes(detections), classes)]


class _Line:
    def __init__(self, config: LineConfig, size: tuple[int, int]) -> None:
        w, h = size
        self.config = config
        self.zone = sv.LineZone(
            start=sv.Point(config.start[0] * w, config.start[1] * h),
            end=sv.Point(config.end[0] * w, config.end[1] * h),
            triggering_anchors=[sv.Position.CENTER],
        )

    def update(self, detections: sv.Detections) -> tuple[int, int]:
        crossed_in, crossed_out = self.zone.trigger(_only(detections, self.config.classes))
        return int(crossed_in.sum()), int(crossed_out.sum())


@dataclass
class _CrowdState:
    above_since: float | None = None
    below_since: float | None = None
    raised: bool = False


class _Zone:
    def __init__(self, config: ZoneConfig, size: tuple[int, int]) -> None:
        w, h = size
        self.config, self.size = config, size
        polygon = np.array([[x * w, y * h] for x, y in config.polygon], dtype=np.int32)
        self.zone = sv.PolygonZone(polygon=polygon, triggering_anchors=(sv.Position.BOTTOM_CENTER,))
        self.crowd = _CrowdState()
        self.first_seen: dict[tuple[int, int], float] = {}  # (rule index, track) → time first inside
        self.raised: set[tuple[str, int]] = set()  # (category or category:item, track) already reported
        self.start_point: dict[int, tuple[float, float]] = {}  # escalator: where each track entered
        self.missing_since: dict[tuple[str, int], float] = {}  # ppe: (item, track) → time first missing
        self.alone_since: dict[int, float] = {}

    def update(self, detections: sv.Detections, ppe: sv.Detections | None, t: float,
               out: FrameResult) -> None:
        inside = detections[self.zone.trigger(detections)] if len(detections) else detections
        occupants = _only(inside, self.config.classes)
        out.occupancy[self.config.name] = len(occupants)
        self._crowd(len(occupants), t, occupants, out)
        for index, rule in enumerate(self.config.presence):
            self._presence(index, rule.category, rule.classes, rule.min_s, inside, t, out)
        if self.config.escalator is not None:
            self._escalator(inside, t, out)
        if self.config.ppe is not None and ppe is not None:
            self._ppe(_only(inside, ["person"]), ppe, t, out)
        self._forget(inside, t)

    def _crowd(self, count: int, t: float, occupants: sv.Detections, out: FrameResult) -> None:
        limit, state = self.config.crowd_limit, self.crowd
        if limit is None:
            return
        if count > limit:
            state.below_since = None
            if state.above_since is None:
                state.above_since = t
            if not state.raised and t - state.above_since >= self.config.crowd_hold_s:
                state.raised = True
                confidence = float(np.mean(occupants.confidence)) if occupants.confidence is not None else 1.0
                out.findings.append(Finding("crowd_peak", self.config.name, None, count, confidence,
                                            detail=f"{count} > limit {limit} for {t - state.above_since:.0f} s"))
        else:
            state.above_since = None
            if state.below_since is None:
                state.below_since = t
            if state.raised and t - state.below_since >= self.config.crowd_clear_s:
                state.raised = False

    def _presence(self, index: int, category: str, classes: list[str], min_s: float, inside: sv.Detections,
                  t: float, out: FrameResult) -> None:
        for box, track, confidence in _tracked(_only(inside, classes)):
            since = self.first_seen.setdefault((index, track), t)
            key = (f"{index}:{category}", track)
            if t - since >= min_s and key not in self.raised:
                self.raised.add(key)
                out.findings.append(Finding(category, self.config.name, track, len(inside), confidence, box,
                                            detail=f"inside for {t - since:.0f} s"))

    def _escalator(self, inside: sv.Detections, t: float, out: FrameResult) -> None:
        rule = self.config.escalator
        assert rule is not None
        w, h = self.size
        dx, dy = rule.direction
        norm = float(np.hypot(dx, dy))
        people = _only(inside, ["person"])
        tracked = list(_tracked(people))
        for box, track, confidence in tracked:
            x, y = (box[0] + box[2]) / 2 / w, box[3] / h  # feet, in frame fractions
            x0, y0 = self.start_point.setdefault(track, (x, y))
            along = ((x - x0) * dx + (y - y0) * dy) / norm
            key = ("escalator_wrong_way", track)
            if along < -rule.min_travel and key not in self.raised:
                self.raised.add(key)
                out.findings.append(Finding("escalator_wrong_way", self.config.name, track, len(people),
                                            confidence, box, detail=f"moved {-along:.2f} of the frame against "
                                            f"the escalator"))
        if rule.child_height is None:
            return
        for box, track, confidence in tracked:
            height = (box[3] - box[1]) / h
            if height >= rule.child_height:
                self.alone_since.pop(track, None)
                continue
            cx = (box[0] + box[2]) / 2 / w
            adult_near = any(
                (other[3] - other[1]) / h >= rule.adult_height
                and abs((other[0] + other[2]) / 2 / w - cx) <= rule.adult_radius
                for other, other_track, _ in tracked if other_track != track
            )
            if adult_near:
                self.alone_since.pop(track, None)
                continue
            since = self.alone_since.setdefault(track, t)
            key = ("child_alone_on_escalator", track)
            if t - since >= rule.min_s and key not in self.raised:
                self.raised.add(key)
                out.findings.append(Finding("child_alone_on_escalator", self.config.name, track, len(people),
                                            confidence, box, detail="small person, no adult-sized person near"))

    def _ppe(self, people: sv.Detections, ppe: sv.Detections, t: float, out: FrameResult) -> None:
        rule = self.config.ppe
        assert rule is not None
        items = _classes(ppe)
        centres = ppe.get_anchors_coordinates(sv.Position.CENTER) if len(ppe) else np.zeros((0, 2))
        for box, track, confidence in _tracked(people):
            x1, y1, x2, y2 = box
            worn = {str(items[i]) for i, (cx, cy) in enumerate(centres) if x1 <= cx <= x2 and y1 <= cy <= y2}
            for item in rule.required:
                key = (item, track)
                if item in worn:
                    self.missing_since.pop(key, None)
                    continue
                since = self.missing_since.setdefault(key, t)
                category = _PPE_CATEGORY[item]
                if t - since >= rule.min_s and (category, track) not in self.raised:
                    self.raised.add((category, track))
                    out.findings.append(Finding(category, self.config.name, track, len(people), confidence, box,
                                                detail=f"no {item.replace('_', ' ')} seen for {t - since:.0f} s"))

    def _forget(self, inside: sv.Detections, t: float) -> None:
        present = set(inside.tracker_id.tolist()) if inside.tracker_id is not None else set()
        for key in [k for k in self.first_seen if k[1] not in present]:
            del self.first_seen[key]  # presence timers restart when an object leaves the zone
        for key in [k for k in self.missing_since if k[1] not in present]:
            del self.missing_since[key]
        for track in [k for k in self.alone_since if k not in present]:
            del self.alone_since[track]
        self._last_seen = getattr(self, "_last_seen", {})
        for track in present:
            self._last_seen[track] = t
        for track, seen in list(self._last_seen.items()):
            if t - seen > _FORGET_AFTER_S:
                del self._last_seen[track]
                self.start_point.pop(track, None)
                self.raised = {k for k in self.raised if k[1] != track}


def _tracked(detections: sv.Detections):  # type: ignore[no-untyped-def]
    """(box, track id, confidence) of every detection that has a confirmed track."""
    if len(detections) == 0 or detections.tracker_id is None:
        return
    confidences = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    for box, track, confidence in zip(detections.xyxy, detections.tracker_id, confidences, strict=True):
        if track is None or int(track) < 0:
            continue
        yield tuple(float(v) for v in box), int(track), float(confidence)


class CameraAnalyticsEngine:
    """The analytics of one camera. Lines and zones are built for the first frame's size (and rebuilt when
    the stream's resolution changes); totals per line accumulate until `take_counts()`."""

    def __init__(self, config: CameraAnalytics) -> None:
        self.config = config
        self._size: tuple[int, int] | None = None
        self._lines: list[_Line] = []
        self._zones: list[_Zone] = []
        self.pending: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def _build(self, size: tuple[int, int]) -> None:
        self._size = size
        self._lines = [_Line(line, size) for line in self.config.lines]
        self._zones = [_Zone(zone, size) for zone in self.config.zones]

    def update(self, detections: sv.Detections, t: float, size: tuple[int, int],
               ppe: sv.Detections | None = None) -> FrameResult:
        if size != self._size:
            self._build(size)
        out = FrameResult(people=int((_classes(detections) == "person").sum()))
        for line in self._lines:
            crossed = line.update(detections)
            out.crossings[line.config.name] = crossed
            if crossed != (0, 0):
                self.pending[line.config.name][0] += crossed[0]
                self.pending[line.config.name][1] += crossed[1]
        for zone in self._zones:
            zone.update(detections, ppe, t, out)
        return out

    def take_counts(self) -> dict[str, tuple[int, int]]:
        """Line → (in, out) since the previous call."""
        counts = {name: (v[0], v[1]) for name, v in self.pending.items() if v != [0, 0]}
        self.pending.clear()
        return counts
