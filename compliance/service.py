"""`ComplianceService`: model checks, market layouts and scorecards, with the providers it was set up with.

The composition root builds one with `setup(...)` and hands it to the API (`ApiContext.services["compliance"]`).
Every market-facing call takes the caller's `markets` (None: all) and answers NotFound for a market outside
them, so market codes cannot be probed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from compliance.checks import check_model, spec_keys_for
from compliance.collector import collect_market_facts
from compliance.models import Entrance, MarketLayout, Zone
from compliance.providers import (
    NoSequenceStats,
    PresenceHistory,
    SequenceStats,
    SnapshotPresence,
    TelemetrySequenceStats,
)
from compliance.requirements import STANDARDS_DIR, Standard, load_standards, select_standards
from compliance.schemas import ConformanceReport, LayoutIn, LayoutPublic, ModelConformance, Scorecard, SpecKeys, ZoneIn
from compliance.scorecard import score_market
from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.models import DeviceModel, Market
from telemetry import TelemetryStore

__all__ = ["MAX_WINDOW_DAYS", "ComplianceService", "setup"]

MAX_WINDOW_DAYS = 90


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ComplianceService:
    standards: tuple[Standard, ...]
    sequence_stats: SequenceStats = field(default_factory=NoSequenceStats)
    presence: PresenceHistory = field(default_factory=SnapshotPresence)
    window_days: int = 30
    clock: Callable[[], datetime] = _now

    # ------------------------------------------------------------ models

    def check_model(
        self, kind: str, specs: Mapping[str, Any], standards: Sequence[str] | None = None
    ) -> ConformanceReport:
        try:
            chosen = select_standards(standards, self.standards)
            return check_model(kind, specs, chosen)
        except ValueError as err:
            raise InvalidRequest(str(err)) from err

    def spec_keys(self, kind: str) -> SpecKeys:
        try:
            return spec_keys_for(kind, self.standards)
        except ValueError as err:
            raise NotFound(str(err)) from err

    async def model_report(
        self, model_id: int, vendor_id: int | None = None, standards: Sequence[str] | None = None
    ) -> ModelConformance:
        """The report for a registered model; a vendor (vendor_id) sees only its own, others are NotFound."""
        query = DeviceModel.filter(id=model_id)
        if vendor_id is not None:
            query = query.filter(vendor_id=vendor_id)
        model = await query.first()
        if model is None:
            raise NotFound(f"device model {model_id} not found")
        return ModelConformance(
            model_id=model.id, vendor_id=model.vendor_id, name=model.name, kind=str(model.kind),  # type: ignore[attr-defined]
            report=self.check_model(str(model.kind), model.specs or {}, standards),
        )

    # ------------------------------------------------------------ layouts

    async def _market(self, code: str, markets: Collection[str] | None) -> None:
        if (markets is not None and code not in markets) or not await Market.exists(code=code):
            raise NotFound(f"market {code!r} not found")

    async def put_layout(self, code: str, data: LayoutIn, markets: Collection[str] | None = None) -> LayoutPublic:
        """Replace the market's layout as a whole."""
        await self._market(code, markets)
        try:
            async with in_transaction():
                layout = await MarketLayout.get_or_none(market_id=code)
                if layout is None:
                    layout = await MarketLayout.create(
                        market_id=code, floor_area_m2=data.floor_area_m2, stall_count=data.stall_count
                    )
                else:
                    layout.floor_area_m2, layout.stall_count = data.floor_area_m2, data.stall_count
                    await layout.save()
                    await Entrance.filter(layout_id=layout.id).delete()
                    await Zone.filter(layout_id=layout.id).delete()
                await Entrance.bulk_create(
                    [Entrance(layout_id=layout.id, position=n, name=name) for n, name in enumerate(data.entrances)]
                )
                await Zone.bulk_create([
                    Zone(layout_id=layout.id, position=n, kind=z.kind, name=z.name, area_m2=z.area_m2)
                    for n, z in enumerate(data.zones)
                ])
        except IntegrityError as err:
            raise Conflict(f"the layout of market {code!r} was changed at the same time; send it again") from err
        return await self.get_layout(code, markets)

    async def get_layout(self, code: str, markets: Collection[str] | None = None) -> LayoutPublic:
        await self._market(code, markets)
        layout = await MarketLayout.get_or_none(market_id=code).prefetch_related("entrances", "zones")
        if layout is None:
            raise NotFound(f"market {code!r} has no layout yet; PUT one")
        return LayoutPublic(
            market=code,
            floor_area_m2=layout.floor_area_m2,
            stall_count=layout.stall_count,
            entrances=[e.name for e in sorted(layout.entrances, key=lambda e: e.position)],
            zones=[
                ZoneIn(kind=z.kind, name=z.name, area_m2=z.area_m2)
                for z in sorted(layout.zones, key=lambda z: z.position)
            ],
            updated_at=layout.updated_at,
        )

    # ------------------------------------------------------------ scorecard

    async def scorecard(
        self, code: str, markets: Collection[str] | None = None, days: int | None = None
    ) -> Scorecard:
        await self._market(code, markets)
        window = days or self.window_days
        if not 1 <= window <= MAX_WINDOW_DAYS:
            raise InvalidRequest(f"days: between 1 and {MAX_WINDOW_DAYS}, got {window}")
        end = self.clock()
        facts = await collect_market_facts(
            code, sequence_stats=self.sequence_stats, presence=self.presence,
            start=end - timedelta(days=window), end=end, window_days=window,
        )
        return score_market(facts, self.standards, now=lambda: end)


def setup(
    *,
    telemetry: TelemetryStore | None = None,
    sequence_stats: SequenceStats | None = None,
    presence: PresenceHistory | None = None,
    standards_dir: Path = STANDARDS_DIR,
    window_days: int = 30,
) -> ComplianceService:
    """Build the service; the standards files are loaded and validated here, once.

    Sequence statistics: `sequence_stats` when given (the ingest pipeline's), else read from `telemetry`'s
    `Reading.seq`, else unknown. Presence: `presence` when given, else a snapshot of `Device.online`.
    """
    if sequence_stats is None:
        sequence_stats = TelemetrySequenceStats(telemetry) if telemetry is not None else NoSequenceStats()
    return ComplianceService(
        standards=load_standards(standards_dir),
        sequence_stats=sequence_stats,
        presence=presence or SnapshotPresence(),
        window_days=window_days,
    )
