"""Plain facts about one market that the scorecard scores, and the arithmetic on them.

`compliance/collector.py` fills these from the registry, the layout and the providers; unit tests build them
by hand. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from compliance.providers import SeqSpan

__all__ = [
    "AREA_PER_CAMERA_M2",
    "LOSS_LIMIT",
    "ONLINE_FLOOR",
    "DeviceFacts",
    "EntranceCoverage",
    "LayoutFacts",
    "LossFigures",
    "MarketFacts",
    "cameras_required",
    "entrance_coverage",
    "loss_figures",
]

LOSS_LIMIT = 0.05  # SZ A.1 数据传输: 数据丢失率 < 5 %
AREA_PER_CAMERA_M2 = 60.0  # SZ 6.8.1: 每 60 m² 应安装 1 个数字式视频监控探头
#: A device counts as online over a window when it was online at least this share of it; the yardstick is SZ
#: 7.1.18 i (data access service stable ≥ 99 % of the time). On a snapshot it means "online now".
ONLINE_FLOOR = 0.99


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """One active device of the market, as the scorecard needs it."""

    id: str
    kind: str
    online: bool = False
    online_ratio: float | None = None  # share of the window online; None: use `online`
    stall: str | None = None  # stall number
    screen: str | None = None  # displays: "stall" | "public"
    entrance: str | None = None  # flow counters, thermometers: the entrance they stand at
    model_id: int | None = None
    specs: Mapping[str, Any] | None = None  # the model's specs; None: no model registered

    def is_online(self) -> bool:
        ratio = self.online_ratio if self.online_ratio is not None else (1.0 if self.online else 0.0)
        return ratio >= ONLINE_FLOOR


@dataclass(frozen=True, slots=True)
class LayoutFacts:
    floor_area_m2: float
    entrances: tuple[str, ...] = ()
    stall_count: int | None = None


@dataclass(frozen=True, slots=True)
class MarketFacts:
    market: str
    devices: tuple[DeviceFacts, ...] = ()
    layout: LayoutFacts | None = None
    registered_stalls: int = 0
    sequence_spans: Mapping[str, SeqSpan] | None = None  # None: no source can tell
    online_basis: Literal["history", "snapshot"] = "snapshot"
    sequence_basis: str = "unknown"
    window_days: int = 30

    def of_kind(self, kind: str) -> list[DeviceFacts]:
        return [d for d in self.devices if d.kind == kind]

    def screens(self, screen: str) -> list[DeviceFacts]:
        return [d for d in self.devices if d.kind == "display" and d.screen == screen]

    @property
    def stalls(self) -> int:
        """Stalls the market has: the layout's count when declared, else the stalls registered."""
        if self.layout is not None and self.layout.stall_count is not None:
            return self.layout.stall_count
        return self.registered_stalls

    @property
    def entrances(self) -> tuple[str, ...]:
        return self.layout.entrances if self.layout else ()


@dataclass(frozen=True, slots=True)
class LossFigures:
    devices: int  # devices that sent anything in the window
    expected: int
    received: int

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def rate(self) -> float:
        return self.lost / self.expected if self.expected else 0.0


def loss_figures(spans: Mapping[str, SeqSpan], device_ids: Sequence[str] | None = None) -> LossFigures | None:
    """Messages expected (from seq gaps) and received over these devices; None when none sent anything."""
    wanted = None if device_ids is None else set(device_ids)
    chosen = [s for d, s in spans.items() if wanted is None or d in wanted]
    if not chosen:
        return None
    return LossFigures(len(chosen), sum(s.expected for s in chosen), sum(s.received for s in chosen))


def cameras_required(floor_area_m2: float) -> int:
    """SZ 6.8.1: one camera per 60 m² (a started 60 m² needs one)."""
    return max(1, math.ceil(floor_area_m2 / AREA_PER_CAMERA_M2 - 1e-9))


@dataclass(frozen=True, slots=True)
class EntranceCoverage:
    covered: tuple[str, ...]
    uncovered: tuple[str, ...]
    assumed: int  # devices without an entrance label, assumed to stand at an uncovered entrance


def entrance_coverage(entrances: Sequence[str], devices: Sequence[DeviceFacts]) -> EntranceCoverage:
    """Devices labelled with an entrance cover it; the others are assumed to stand at the entrances still
    uncovered, in order, since nothing says where they are."""
    labelled = {d.entrance for d in devices if d.entrance in entrances}
    unlabelled = sum(1 for d in devices if d.entrance not in entrances)
    remaining = [e for e in entrances if e not in labelled]
    assumed = remaining[:unlabelled]
    covered = tuple(e for e in entrances if e in labelled or e in assumed)
    return EntranceCoverage(covered, tuple(remaining[unlabelled:]), len(assumed))
