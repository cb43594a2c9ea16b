"""Analytics on scripted tracks: exact line counts, one crowd peak per episode, escalator direction, presence
rules, PPE and the child-alone heuristic. Detections are built the way the worker builds them (boxes, track
ids, class names), so the real supervision geometry runs."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from vision.analytics import CameraAnalyticsEngine
from vision.config import CameraAnalytics

SIZE = (320, 240)


def frame(*objects: tuple[int, str, float, float, float, float]) -> sv.Detections:
    """objects: (track, class, cx, cy, w, h) in frame fractions."""
    if not objects:
        return sv.Detections.empty()
    w, h = SIZE
    boxes = [[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
             for _, _, cx, cy, bw, bh in objects]
    return sv.Detections(
        xyxy=np.array(boxes, dtype=float), confidence=np.full(len(objects), 0.9),
        class_id=np.zeros(len(objects), dtype=int), tracker_id=np.array([o[0] for o in objects]),
        data={"class_name": np.array([o[1] for o in objects])},
    )


def walk(engine: CameraAnalyticsEngine, track: int, cls: str, start: tuple[float, float],
         end: tuple[float, float], steps: int = 10, t0: float = 0.0, dt: float = 0.5):
    findings = []
    for k in range(steps + 1):
        x = start[0] + (end[0] - start[0]) * k / steps
        y = start[1] + (end[1] - start[1]) * k / steps
        findings += engine.update(frame((track, cls, x, y, 0.08, 0.2)), t0 + k * dt, SIZE).findings
    return findings


ENTRANCE = CameraAnalytics(lines=[{"name": "gate", "start": (1.0, 0.5), "end": (0.0, 0.5)}])


def test_scripted_crossings_give_exact_in_and_out_counts() -> None:
    engine = CameraAnalyticsEngine(ENTRANCE)
    for n in range(3):  # three walk in (downwards)
        walk(engine, 10 + n, "person", (0.3, 0.1), (0.3, 0.9), t0=n * 10)
    for n in range(2):  # two walk out
        walk(engine, 20 + n, "person", (0.6, 0.9), (0.6, 0.1), t0=40 + n * 10)
    assert engine.take_counts() == {"gate": (3, 2)}
    assert engine.take_counts() == {}  # taken once


def test_a_person_who_turns_back_before_the_line_is_not_counted_and_bicycles_are_not_people() -> None:
    engine = CameraAnalyticsEngine(ENTRANCE)
    walk(engine, 1, "person", (0.3, 0.1), (0.3, 0.4))
    walk(engine, 1, "person", (0.3, 0.4), (0.3, 0.1), t0=5)
    walk(engine, 2, "bicycle", (0.5, 0.1), (0.5, 0.9), t0=10)
    assert engine.take_counts() == {}


CROWD = CameraAnalytics(zones=[{"name": "hall", "polygon": [(0, 0), (1, 0), (1, 1), (0, 1)], "crowd_limit": 3,
                                "crowd_hold_s": 5, "crowd_clear_s": 3}])


def crowd(n: int) -> sv.Detections:
    return frame(*[(k, "person", 0.1 + 0.15 * k, 0.5, 0.08, 0.2) for k in range(n)])


def test_a_crowd_above_the_limit_for_the_hold_time_raises_exactly_one_peak() -> None:
    engine = CameraAnalyticsEngine(CROWD)
    findings = []
    for step in range(40):  # 20 s of 5 people, limit 3, hold 5 s
        findings += engine.update(crowd(5), step * 0.5, SIZE).findings
    assert [(f.category, f.zone, f.count) for f in findings] == [("crowd_peak", "hall", 5)]


def test_a_crowd_shorter_than_the_hold_time_raises_nothing_and_a_new_episode_raises_again() -> None:
    engine = CameraAnalyticsEngine(CROWD)
    t, findings = 0.0, []
    for n, seconds in ((5, 4), (2, 10), (5, 6), (1, 4), (5, 6)):
        for _ in range(int(seconds * 2)):
            findings += engine.update(crowd(n), t, SIZE).findings
            t += 0.5
    assert [f.category for f in findings] == ["crowd_peak", "crowd_peak"]  # episodes 2 and 3, not the first


def test_occupancy_counts_only_objects_inside_the_zone() -> None:
    config = CameraAnalytics(zones=[{"name": "left", "polygon": [(0, 0), (0.5, 0), (0.5, 1), (0, 1)]}])
    result = CameraAnalyticsEngine(config).update(crowd(6), 0, SIZE)  # x = .1 .25 .4 | .55 .7 .85
    assert result.occupancy == {"left": 3}


ESCALATOR = CameraAnalytics(zones=[{"name": "escalator", "polygon": [(0.2, 0), (0.8, 0), (0.8, 1), (0.2, 1)],
                                    "escalator": {"direction": (0, -1), "min_travel": 0.15}}])


def test_a_wrong_way_track_on_the_escalator_raises_one_event_and_a_right_way_one_none() -> None:
    engine = CameraAnalyticsEngine(ESCALATOR)
    right_way = walk(engine, 1, "person", (0.5, 0.8), (0.5, 0.2))
    wrong_way = walk(engine, 2, "person", (0.5, 0.2), (0.5, 0.8), t0=10)
    assert right_way == []
    assert [(f.category, f.track_id) for f in wrong_way] == [("escalator_wrong_way", 2)]


def test_presence_rules_raise_once_per_track_after_their_dwell_time() -> None:
    config = CameraAnalytics(zones=[{"name": "aisle", "polygon": [(0, 0), (1, 0), (1, 1), (0, 1)], "presence": [
        {"category": "non_motor_vehicle", "classes": ["bicycle", "motorcycle"]},
        {"category": "aisle_occupied", "classes": ["person", "bicycle"], "min_s": 30},
    ]}])
    engine = CameraAnalyticsEngine(config)
    findings = []
    for step in range(80):  # a bicycle parked 40 s, a person walking through quickly
        objects = [(1, "bicycle", 0.5, 0.5, 0.2, 0.15)]
        if step < 6:
            objects.append((2, "person", 0.1 + step * 0.1, 0.3, 0.08, 0.2))
        findings += engine.update(frame(*objects), step * 0.5, SIZE).findings
    assert [(f.category, f.track_id) for f in findings] == [("non_motor_vehicle", 1), ("aisle_occupied", 1)]


def test_a_cook_without_a_mask_is_reported_and_one_wearing_all_three_items_is_not() -> None:
    config = CameraAnalytics(zones=[{"name": "cooked-food", "polygon": [(0, 0), (1, 0), (1, 1), (0, 1)],
                                     "ppe": {"min_s": 2}}])
    engine = CameraAnalyticsEngine(config)
    people = frame((1, "person", 0.3, 0.5, 0.15, 0.5), (2, "person", 0.7, 0.5, 0.15, 0.5))
    w, h = SIZE
    items = [("white_coat", 0.3, 0.55), ("hat", 0.3, 0.3), ("mask", 0.3, 0.38),
             ("white_coat", 0.7, 0.55), ("hat", 0.7, 0.3)]  # person 2 has no mask
    ppe = sv.Detections(xyxy=np.array([[x * w - 5, y * h - 5, x * w + 5, y * h + 5] for _, x, y in items]),
                        confidence=np.full(len(items), 0.8), class_id=np.zeros(len(items), dtype=int),
                        data={"class_name": np.array([name for name, _, _ in items])})
    findings = []
    for step in range(10):
        findings += engine.update(people, step * 0.5, SIZE, ppe=ppe).findings
    assert [(f.category, f.track_id) for f in findings] == [("no_mask", 2)]


def test_a_small_person_alone_on_the_escalator_is_reported_but_not_with_an_adult_beside() -> None:
    config = CameraAnalytics(zones=[{"name": "escalator", "polygon": [(0, 0), (1, 0), (1, 1), (0, 1)],
                                     "escalator": {"direction": (0, -1), "child_height": 0.15,
                                                   "adult_height": 0.25, "adult_radius": 0.2, "min_s": 1}}])
    alone, accompanied = CameraAnalyticsEngine(config), CameraAnalyticsEngine(config)
    found_alone, found_accompanied = [], []
    for step in range(6):
        y = 0.8 - step * 0.05
        found_alone += alone.update(frame((1, "person", 0.5, y, 0.05, 0.1)), step * 0.5, SIZE).findings
        found_accompanied += accompanied.update(
            frame((1, "person", 0.5, y, 0.05, 0.1), (2, "person", 0.6, y - 0.05, 0.08, 0.3)), step * 0.5, SIZE
        ).findings
    assert [f.category for f in found_alone] == ["child_alone_on_escalator"]
    assert found_accompanied == []


@pytest.mark.parametrize("bad, message", [
    ({"lines": [{"name": "a", "start": (0, 0.5), "end": (1.5, 0.5)}]}, "outside the frame"),
    ({"lines": [{"name": "a", "start": (0.5, 0.5), "end": (0.5, 0.5)}]}, "same point"),
    ({"zones": [{"name": "z", "polygon": [(0, 0), (1, 1)]}]}, "at least 3"),
    ({"zones": [{"name": "z", "polygon": [(0, 0), (1, 0), (1, 1)]}] * 2}, "unique"),
    ({"zones": [{"name": "z", "polygon": [(0, 0), (1, 0), (1, 1)], "escalator": {"direction": (0, 0)}}]},
     "no direction"),
])
def test_bad_configuration_is_refused_with_the_reason(bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CameraAnalytics.model_validate(bad)
