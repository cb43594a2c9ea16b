"""Standards conformance: the seed standards' hardware parameters as data, model checks, market layouts and
the market scorecard (SZ DB4403/T 228—2022 appendix A, Zhengzhou scoring rules). See docs/compliance.md.

Typical use::

    from compliance import check_model, setup

    report = check_model("food_detector", {"channels": 4, ...})   # report.failed names SZ 6.3.1
    service = setup(telemetry=store, sequence_stats=ingest_stats)  # composition root
    card = await service.scorecard("M-NORTH")
"""

from __future__ import annotations

from compliance.checks import check_model, evaluate_item, items_for, spec_keys_for
from compliance.facts import LOSS_LIMIT, ONLINE_FLOOR, DeviceFacts, LayoutFacts, LossFigures, MarketFacts, loss_figures
from compliance.providers import (
    NoSequenceStats,
    PresenceHistory,
    PresenceReport,
    SeqSpan,
    SequenceStats,
    SnapshotPresence,
    StaticPresence,
    StaticSequenceStats,
    TelemetrySequenceStats,
)
from compliance.requirements import (
    Requirement,
    Standard,
    StandardItem,
    StandardsInvalid,
    load_standard_file,
    load_standards,
    select_standards,
)
from compliance.schemas import (
    ConformanceReport,
    ItemResult,
    LayoutIn,
    LayoutPublic,
    ModelConformance,
    Scorecard,
    ScoreItem,
    SpecKeys,
    ZoneKind,
)
from compliance.scorecard import score_market
from compliance.service import ComplianceService, setup

__all__ = [
    "LOSS_LIMIT",
    "ONLINE_FLOOR",
    "ComplianceService",
    "ConformanceReport",
    "DeviceFacts",
    "ItemResult",
    "LayoutFacts",
    "LayoutIn",
    "LayoutPublic",
    "LossFigures",
    "MarketFacts",
    "ModelConformance",
    "NoSequenceStats",
    "PresenceHistory",
    "PresenceReport",
    "Requirement",
    "ScoreItem",
    "Scorecard",
    "SeqSpan",
    "SequenceStats",
    "SnapshotPresence",
    "SpecKeys",
    "Standard",
    "StandardItem",
    "StandardsInvalid",
    "StaticPresence",
    "StaticSequenceStats",
    "TelemetrySequenceStats",
    "ZoneKind",
    "check_model",
    "evaluate_item",
    "items_for",
    "load_standard_file",
    "load_standards",
    "loss_figures",
    "score_market",
    "select_standards",
    "setup",
    "spec_keys_for",
]
