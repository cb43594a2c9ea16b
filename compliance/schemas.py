"""What goes in and out of the compliance package: conformance reports, market layouts, scorecards."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CheckModelRequest",
    "ConformanceReport",
    "ItemResult",
    "ItemStatus",
    "LayoutIn",
    "LayoutPublic",
    "ModelConformance",
    "ScoreItem",
    "ScoreStatus",
    "Scorecard",
    "ScorecardTotal",
    "SpecKey",
    "SpecKeys",
    "ZoneIn",
    "ZoneKind",
]

ItemStatus = Literal["passed", "failed", "invalid", "missing", "not_applicable"]
ScoreStatus = Literal["met", "partly", "not_met", "unknown"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ---------------------------------------------------------------- model conformance


class ItemResult(BaseModel):
    """One standards item checked against a model's specs."""

    item: str
    standard: str
    clause: str
    level: Literal["required", "recommended"]
    key: str = Field(description="the spec key the item reads (for `missing` on a condition: the condition's key)")
    parameter: str
    parameter_zh: str
    status: ItemStatus
    expected: str
    given: Any = None
    message: str = ""


class ConformanceReport(BaseModel):
    """Whether a model's specs meet the standards' hardware parameters for its kind.

    `conforming` is true when no *required* item failed, was invalid or is missing. Recommended items (宜) that
    are not met are listed in `advisories` and do not affect `conforming`.
    """

    kind: str
    standards: list[str]
    conforming: bool
    checked: int = Field(description="items that apply to this kind and these specs")
    failed: list[ItemResult] = Field(description="required items not met, or stated with a value of the wrong type")
    missing: list[ItemResult] = Field(description="required items whose spec key is not stated")
    advisories: list[ItemResult] = Field(description="recommended (宜) items not met or not stated")
    passed: list[ItemResult]
    not_applicable: list[str] = Field(default_factory=list, description="item ids whose `when` condition is false")
    unrecognised_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="stated keys no item reads, with close known keys (typos?)"
    )


class CheckModelRequest(Strict):
    kind: str = Field(min_length=1, max_length=32)
    specs: dict[str, Any] = Field(default_factory=dict)
    standards: list[str] | None = Field(default=None, description="standard codes to check (default: all)")


class ModelConformance(BaseModel):
    model_id: int
    vendor_id: int
    name: str
    kind: str
    report: ConformanceReport


class SpecKey(BaseModel):
    key: str
    type: str = Field(description="number, IP code, true/false, text, list of text, or one of the given values")
    unit: str | None = None
    values: list[str] | None = Field(default=None, description="the values items accept, where they list them")
    description: str
    description_zh: str
    items: list[str] = Field(description="ids of the items that read this key")
    clauses: list[str]
    condition: bool = Field(default=False, description="selects which items apply (e.g. screen: stall | public)")


class SpecKeys(BaseModel):
    kind: str
    keys: list[SpecKey]


# ---------------------------------------------------------------- market layout


class ZoneKind(StrEnum):
    """Trading and service areas, after SZ 5.1.3 and 6.8.2 a."""

    VEGETABLES = "vegetables"
    FRUIT = "fruit"
    MEAT = "meat"  # 畜禽肉类
    POULTRY_EGGS = "poultry_eggs"
    AQUATIC = "aquatic"  # 水产
    COOKED_FOOD = "cooked_food"  # 熟食
    DAIRY = "dairy"
    PICKLED = "pickled"  # 腌制品
    CONDIMENTS = "condiments"  # 酱菜调味品
    GRAIN_OIL = "grain_oil"  # 粮油制品
    DRY_GOODS = "dry_goods"  # 干货
    TESTING_ROOM = "testing_room"  # 快速检测室
    PUBLIC = "public"
    PARKING = "parking"
    OTHER = "other"


class ZoneIn(Strict):
    kind: ZoneKind
    name: str = Field(default="", max_length=100)
    area_m2: float = Field(gt=0, le=1_000_000)


class LayoutIn(Strict):
    """What the scorecard needs to know of a market's floor plan."""

    floor_area_m2: float = Field(
        gt=0, le=1_000_000, description="business floor area; SZ 6.8.1 asks one camera per 60 m²"
    )
    entrances: list[str] = Field(
        default_factory=list, max_length=100, description="entrance names; SZ 6.9.1 asks one flow counter each"
    )
    zones: list[ZoneIn] = Field(default_factory=list, max_length=200)
    stall_count: int | None = Field(
        default=None, ge=0, le=100_000, description="stalls in operation; default: the stalls registered"
    )

    @field_validator("entrances")
    @classmethod
    def _entrance_names(cls, names: list[str]) -> list[str]:
        cleaned = [n.strip() for n in names]
        for index, name in enumerate(cleaned):
            if not name or len(name) > 64:
                raise ValueError(f"entrances[{index}]: a name of 1 to 64 characters")
        repeated = sorted({n for n in cleaned if cleaned.count(n) > 1})
        if repeated:
            raise ValueError(f"entrance names repeat: {', '.join(repeated)}")
        return cleaned

    @model_validator(mode="after")
    def _zones_fit(self) -> LayoutIn:
        total = sum(z.area_m2 for z in self.zones)
        if total > self.floor_area_m2 * 1.0001:
            raise ValueError(f"zones cover {total:g} m², more than the floor area of {self.floor_area_m2:g} m²")
        return self


class LayoutPublic(LayoutIn):
    market: str
    updated_at: datetime


# ---------------------------------------------------------------- scorecard


class ScoreItem(BaseModel):
    """One scored line of an evaluation table, computed from the registry, presence and telemetry."""

    id: str
    source: Literal["SZ", "ZZ"]
    section: str = Field(description="the table's section, e.g. 'SZ A.1 硬件设备'")
    clause: str = Field(description="the table's row and the clauses it refers to")
    title: str
    title_zh: str
    max_points: float
    points: float | None = Field(description="None when the item cannot be judged from the platform's data")
    status: ScoreStatus
    evidence: dict[str, Any] = Field(default_factory=dict)
    action: str = Field(default="", description="what to do to gain the missing points")
    scoring: str = Field(description="how the points are computed")


class ScorecardTotal(BaseModel):
    section: str
    points: float
    max_points: float
    unknown_points: float = Field(description="points of items that cannot be judged from the platform's data")


class Scorecard(BaseModel):
    market: str
    generated_at: datetime
    window_days: int
    online_basis: Literal["history", "snapshot"] = Field(
        description="'snapshot': online rates are the current Device.online, not a 30-day history"
    )
    sequence_basis: str = Field(description="where the data-loss figures come from, or 'unknown'")
    items: list[ScoreItem]
    totals: list[ScorecardTotal]
