"""Synthetic market scenes: coloured figures moving across a textured floor, with their true boxes.

No camera footage or model weights can be downloaded where MarketFleet is built and tested, so the camera
simulator, the tiny test model's training data, the tests and the benchmark all draw from this one generator.
A "person" is an upright red-to-orange body with a dark head; a "bicycle" a wide blue frame on two dark wheels.
The class names are COCO's, so analytics configured for a real COCO model work unchanged on the tiny one.
Everything is seeded: the same seed gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("person", "bicycle")

# Size of a figure relative to the frame height, so scenes scale to any resolution.
_PERSON_HW = (0.30, 0.13)
_BICYCLE_HW = (0.17, 0.30)


@dataclass(frozen=True)
class Box:
    cls: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)


@dataclass
class Walker:
    """One figure moving along straight segments through `waypoints` (fractions of width/height), from
    `start_s` for `duration_s` seconds; outside that window it is not in the scene."""

    cls: str
    waypoints: list[tuple[float, float]]
    start_s: float = 0.0
    duration_s: float = 4.0
    scale: float = 1.0
    colour: tuple[int, int, int] | None = None

    def position(self, t: float) -> tuple[float, float] | None:
        if t < self.start_s or t > self.start_s + self.duration_s:
            return None
        progress = (t - self.start_s) / self.duration_s * (len(self.waypoints) - 1)
        index = min(int(progress), len(self.waypoints) - 2)
        frac = progress - index
        (ax, ay), (bx, by) = self.waypoints[index], self.waypoints[index + 1]
        return (ax + (bx - ax) * frac, ay + (by - ay) * frac)


@dataclass
class Scene:
    """A fixed floor and the figures crossing it; `render(t)` draws the frame at `t` seconds."""

    width: int = 320
    height: int = 240
    walkers: list[Walker] = field(default_factory=list)
    seed: int = 0
    loop_s: float | None = None  # repeat the script every loop_s seconds (the simulator streams forever)
    _floor: np.ndarray | None = field(default=None, repr=False)

    def floor(self) -> np.ndarray:
        if self._floor is None:
            self._floor = _floor(self.width, self.height, np.random.default_rng(self.seed))
        return self._floor

    def render(self, t: float) -> tuple[np.ndarray, list[Box]]:
        """RGB frame (height × width × 3, uint8) and the true boxes of the figures in it."""
        if self.loop_s:
            t = t % self.loop_s
        frame = self.floor().copy()
        boxes: list[Box] = []
        for n, walker in enumerate(self.walkers):
            where = walker.position(t)
            if where is None:
                continue
            box = draw_figure(frame, walker.cls, where[0] * self.width, where[1] * self.height,
                              walker.scale, walker.colour or _default_colour(walker.cls, n))
            if box is not None:
                boxes.append(box)
        return frame, boxes


def _default_colour(cls: str, n: int) -> tuple[int, int, int]:
    if cls == "person":
        return ((210, 40, 40), (230, 110, 30), (200, 50, 120))[n % 3]
    return ((40, 80, 220), (30, 140, 200), (70, 60, 190))[n % 3]


def _floor(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Grey tiles with mild noise: enough texture that a detector cannot key on a flat background."""
    base = rng.integers(120, 170)
    ys, xs = np.mgrid[0:height, 0:width]
    tile = max(8, height // 8)
    checker = (((ys // tile) + (xs // tile)) % 2) * rng.integers(6, 18)
    gradient = (ys / max(1, height - 1)) * rng.integers(-25, 25)
    noise = rng.normal(0, 5, (height, width))
    grey = np.clip(base + checker + gradient + noise, 0, 255)
    tint = rng.integers(-8, 8, size=3)
    return np.clip(grey[..., None] + tint, 0, 255).astype(np.uint8)


def draw_figure(frame: np.ndarray, cls: str, cx: float, cy: float, scale: float,
                colour: tuple[int, int, int]) -> Box | None:
    """Draw one figure centred at (cx, cy) in pixels; returns its box clipped to the frame (None if outside)."""
    import cv2

    h_frac, w_frac = _PERSON_HW if cls == "person" else _BICYCLE_HW
    height, width = frame.shape[:2]
    bh, bw = h_frac * height * scale, w_frac * height * scale
    x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
    dark = (30, 30, 35)
    if cls == "person":
        head_r = bw * 0.33
        head_c = (int(cx), int(y1 + head_r))
        cv2.rectangle(frame, (int(x1), int(y1 + 2 * head_r)), (int(x2), int(y2)), colour, -1)
        cv2.circle(frame, head_c, max(1, int(head_r)), dark, -1)
    else:
        wheel_r = bh * 0.32
        cv2.rectangle(frame, (int(x1), int(y1)), (int(x2), int(y2 - wheel_r)), colour, -1)
        for wx in (x1 + wheel_r, x2 - wheel_r):
            cv2.circle(frame, (int(wx), int(y2 - wheel_r)), max(1, int(wheel_r)), dark, -1)
    cx1, cy1 = max(0.0, x1), max(0.0, y1)
    cx2, cy2 = min(float(width), x2), min(float(height), y2)
    if cx2 - cx1 < 2 or cy2 - cy1 < 2:
        return None
    return Box(cls, cx1, cy1, cx2, cy2)


def random_still(rng: np.random.Generator, width: int, height: int, max_figures: int = 4) -> tuple[np.ndarray,
                                                                                                      list[Box]]:
    """One training image: a random floor with 0..max_figures figures at random places, sizes and colours."""
    frame = _floor(width, height, rng)
    boxes: list[Box] = []
    for _ in range(int(rng.integers(0, max_figures + 1))):
        cls = CLASS_NAMES[int(rng.integers(0, len(CLASS_NAMES)))]
        base = np.array(_default_colour(cls, int(rng.integers(0, 3))), dtype=int)
        colour = tuple(int(c) for c in np.clip(base + rng.integers(-25, 25, size=3), 0, 255))
        box = draw_figure(frame, cls, float(rng.uniform(0.05, 0.95) * width), float(rng.uniform(0.1, 0.9) * height),
                          float(rng.uniform(0.7, 1.3)), colour)  # type: ignore[arg-type]
        if box is not None:
            boxes.append(box)
    return frame, boxes


def entrance_scene(width: int = 320, height: int = 240, *, entering: int = 2, leaving: int = 1,
                   spacing_s: float = 3.0, crossing_s: float = 4.0, seed: int = 7, loop: bool = True) -> Scene:
    """People walking down (entering) and up (leaving) across a horizontal line at mid-height, one at a time;
    `loop=False` plays the script once and then shows the empty floor (for exact counts in tests)."""
    walkers: list[Walker] = []
    t = 0.5
    lanes = [0.3, 0.5, 0.7]
    for n in range(entering + leaving):
        down = n < entering
        x = lanes[n % len(lanes)]
        path = [(x, 0.12), (x, 0.88)] if down else [(x, 0.88), (x, 0.12)]
        walkers.append(Walker("person", path, start_s=t, duration_s=crossing_s))
        t += spacing_s
    return Scene(width, height, walkers, seed=seed, loop_s=t + 1.0 if loop else None)


def crowd_scene(width: int = 320, height: int = 240, *, people: int = 4, seed: int = 11) -> Scene:
    """People milling slowly inside the frame (for occupancy and crowd peaks)."""
    rng = np.random.default_rng(seed)
    walkers = []
    for n in range(people):
        x, y = 0.15 + 0.7 * n / max(1, people - 1), float(rng.uniform(0.35, 0.65))
        walkers.append(Walker("person", [(x, y), (x + 0.03, y + 0.05), (x, y)], start_s=0, duration_s=1e9))
    return Scene(width, height, walkers, seed=seed)


def orbit(cx: float, cy: float, r: float, steps: int = 12) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(2 * math.pi * k / steps), cy + r * math.sin(2 * math.pi * k / steps))
            for k in range(steps + 1)]
