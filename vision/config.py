"""What an operator configures: the worker's settings and, per camera, its lines and zones.

Coordinates are fractions of the frame (0..1, origin top left), so a configuration survives a change of
stream resolution. Validated once, when it is stored or loaded; the analytics code trusts it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float]

PRESENCE_CATEGORIES = ("goods_beyond_line", "aisle_occupied", "unlicensed_stall", "non_motor_vehicle", "littering")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_point(point: Point) -> Point:
    x, y = point
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"point {point} is outside the frame: coordinates are fractions 0..1")
    return point


class LineConfig(Strict):
    """An entrance line. Crossing it from the side on the right of start→end to the side on its left (as
    drawn on the image) counts as **in**; swap start and end to swap in and out."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^/+#]+$")
    start: Point
    end: Point
    classes: list[str] = Field(default_factory=lambda: ["person"])
    # a registered flow_counter device that publishes this line's counts as its telemetry (SZ 6.9.2 a), so
    # rules and the upward data flow see passenger flow like any counter's; none: counts stay in the flow API
    flow_device: str | None = Field(default=None, min_length=1, max_length=100)

    _points = field_validator("start", "end")(_check_point)

    @model_validator(mode="after")
    def _not_a_point(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError(f"line {self.name!r}: start and end are the same point")
        return self


class PresenceRule(Strict):
    """An object of `classes` inside the zone for at least `min_s` seconds raises `category` once per track
    (aisle occupied, goods beyond the stall line, non-motor vehicle inside, unlicensed stall, litter left)."""

    category: Literal["goods_beyond_line", "aisle_occupied", "unlicensed_stall", "non_motor_vehicle", "littering"]
    classes: list[str] = Field(min_length=1)
    min_s: float = Field(default=0.0, ge=0, le=86_400)


class PpeRule(Strict):
    """HZ 7.3.2.2: a person in this zone (a cooked-food counter) must wear every item in `required`; items are
    classes of the second (PPE) model, matched to the person by box overlap. Missing for `min_s` → event."""

    required: list[Literal["white_coat", "hat", "mask"]] = Field(
        default_factory=lambda: ["white_coat", "hat", "mask"])  # type: ignore[arg-type]
    min_s: float = Field(default=3.0, ge=0, le=3600)


class EscalatorRule(Strict):
    """Allowed direction of travel (dx, dy in frame fractions, e.g. (0, -1) = up the image). A track that
    moves more than `min_travel` (fraction of the frame) against it raises escalator_wrong_way once.

    Child alone: a person whose box is shorter than `child_height` (fraction of frame height) with no person
    taller than `adult_height` within `adult_radius` (fraction of frame width) raises child_alone_on_escalator.
    It is a size heuristic and nothing more: documented in docs/vision.md."""

    direction: Point
    min_travel: float = Field(default=0.1, gt=0, le=1)
    child_height: float | None = Field(default=None, gt=0, le=1)
    adult_height: float = Field(default=0.25, gt=0, le=1)
    adult_radius: float = Field(default=0.2, gt=0, le=1)
    min_s: float = Field(default=1.0, ge=0)

    @field_validator("direction")
    @classmethod
    def _nonzero(cls, value: Point) -> Point:
        if value == (0, 0):
            raise ValueError("direction (0, 0) has no direction")
        return value


class ZoneConfig(Strict):
    name: str = Field(min_length=1, max_length=64)
    polygon: list[Point] = Field(min_length=3, max_length=64)
    classes: list[str] = Field(default_factory=lambda: ["person"])  # what counts towards occupancy
    crowd_limit: int | None = Field(default=None, ge=0)  # BJ 5.3.15: warn above this many for crowd_hold_s
    crowd_hold_s: float = Field(default=10.0, ge=0, le=3600)
    crowd_clear_s: float = Field(default=5.0, ge=0, le=3600)  # at or below the limit this long re-arms it
    presence: list[PresenceRule] = Field(default_factory=list)
    ppe: PpeRule | None = None
    escalator: EscalatorRule | None = None

    @field_validator("polygon")
    @classmethod
    def _points_in_frame(cls, value: list[Point]) -> list[Point]:
        for point in value:
            _check_point(point)
        return value


class CameraAnalytics(Strict):
    """Per-camera analytics configuration (PUT /api/v1/vision/cameras/{id}/analytics)."""

    sample_fps: float = Field(default=2.0, gt=0, le=30)
    confidence: float = Field(default=0.35, gt=0, lt=1)
    classes: list[str] = Field(default_factory=lambda: ["person", "bicycle", "motorcycle"])
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> CameraAnalytics:
        for what, names in (("line", [x.name for x in self.lines]), ("zone", [z.name for z in self.zones])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{what} names must be unique: {', '.join(duplicates)}")
        return self


class VisionSettings(BaseModel):
    """The `[vision]` part of the settings (MF_VISION__…)."""

    model_config = ConfigDict(extra="forbid")

    # Detector weights: a .pt file, an exported .onnx, or an OpenVINO folder. Nothing is downloaded.
    model_path: str = "var/vision-models/yolov8n.pt"
    ppe_model_path: str = ""  # second model with white_coat / hat / mask classes; empty: PPE rules are off
    image_size: int = Field(default=640, ge=32, le=4096)
    # torch: run the .pt as is. onnx: export it to ONNX once (cached beside it, redone when the weights change)
    # and run it on ONNX Runtime; same post-processing, so the same detections.
    backend: Literal["torch", "onnx"] = "torch"
    device: str = "cpu"
    threads: int = Field(default=2, ge=1, le=256)  # intra-op threads of one inference (torch or ONNX Runtime)
    # inferences run side by side (model copies and executor threads); workers × threads ≈ cores
    inference_workers: int = Field(default=1, ge=1, le=64)
    telemetry_interval_s: float = Field(default=10.0, gt=0)
    flow_retention_days: int = Field(default=30, ge=1)  # SZ 6.9: 30 days of passenger flow queryable
    reconnect_max_s: float = Field(default=30.0, gt=0)
    vendor: str = "onvif"  # vendor code cameras are registered under when onboarded by ONVIF
    reload_s: float = Field(default=30.0, gt=0)  # how often the worker re-reads camera configuration
