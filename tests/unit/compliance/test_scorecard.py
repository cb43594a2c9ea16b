"""Scoring from plain facts: quantities per entrance / area / stall, model criteria, data loss, ZZ rows."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.facts import DeviceFacts, LayoutFacts, MarketFacts, cameras_required, entrance_coverage, loss_figures
from compliance.providers import SeqSpan
from compliance.schemas import ScoreItem
from compliance.scorecard import ROWS, score_market
from tests.unit.compliance.payloads import conforming

SCALE, DETECTOR, STALL_SCREEN = conforming("scale"), conforming("food_detector"), conforming("stall_screen")
LAYOUT = LayoutFacts(floor_area_m2=600, entrances=("North gate", "South gate"), stall_count=None)


def item(facts: MarketFacts, row_id: str) -> ScoreItem:
    card = score_market(facts)
    return next(i for i in card.items if i.id == row_id)


def device(id: str, kind: str, **extra: Any) -> DeviceFacts:
    return DeviceFacts(id=id, kind=kind, **extra)


def test_two_entrances_and_one_flow_counter_is_partly_met() -> None:
    facts = MarketFacts("M1", (device("c1", "flow_counter", entrance="North gate"),), LAYOUT)
    row = item(facts, "sz-a1-flow-counter")
    assert (row.status, row.points, row.max_points) == ("partly", 1.5, 3.0)
    assert row.evidence["uncovered_entrances"] == ["South gate"]
    assert "South gate" in row.action


def test_a_counter_without_entrance_label_is_assumed_at_an_uncovered_entrance() -> None:
    counters = (device("c1", "flow_counter", entrance="South gate"), device("c2", "flow_counter"))
    row = item(MarketFacts("M1", counters, LAYOUT), "sz-a1-flow-counter")
    assert (row.status, row.points, row.evidence["counters_without_entrance_label"]) == ("met", 3.0, 1)


def test_flow_counters_without_declared_entrances_are_unknown() -> None:
    row = item(MarketFacts("M1", (device("c1", "flow_counter"),)), "sz-a1-flow-counter")
    assert (row.status, row.points) == ("unknown", None)


@pytest.mark.parametrize(("area", "required"), [(60, 1), (61, 2), (600, 10), (10, 1)])
def test_one_camera_per_started_60_square_metres(area: float, required: int) -> None:
    assert cameras_required(area) == required


def test_five_cameras_for_600_square_metres_score_half() -> None:
    cameras = tuple(device(f"cam{n}", "camera") for n in range(5))
    row = item(MarketFacts("M1", cameras, LAYOUT), "sz-a1-camera")
    assert (row.status, row.points, row.evidence["cameras_required"]) == ("partly", 1.5, 10)


def test_a_camera_model_shown_to_fail_reduces_the_points() -> None:
    bad = {"resolution_mp": 2}
    cameras = tuple(device(f"cam{n}", "camera", model_id=1 if n < 5 else None, specs=bad if n < 5 else None)
                    for n in range(10))
    row = item(MarketFacts("M1", cameras, LAYOUT), "sz-a1-camera")
    assert row.points == 1.5 and row.evidence["models_failing"] == 5
    assert "SZ 6.8.2 e" in row.evidence["failed_clauses"]


def test_scales_score_by_the_share_whose_model_proves_type_approval() -> None:
    scales = (device("s1", "scale", model_id=1, specs=SCALE), device("s2", "scale", model_id=1, specs=SCALE),
              device("s3", "scale", model_id=2, specs={**SCALE, "type_approval_certificate": False}),
              device("s4", "scale"))
    row = item(MarketFacts("M1", scales), "sz-a1-scale")
    assert (row.status, row.points) == ("partly", 2.0)
    assert (row.evidence["models_conforming"], row.evidence["models_failing"], row.evidence["models_unverified"]) == (
        2, 1, 1)


def test_scales_without_any_specs_are_unknown_not_zero() -> None:
    row = item(MarketFacts("M1", (device("s1", "scale"),)), "sz-a1-scale")
    assert (row.status, row.points) == ("unknown", None)


def test_no_scale_at_all_scores_nothing() -> None:
    row = item(MarketFacts("M1"), "sz-a1-scale")
    assert (row.status, row.points) == ("not_met", 0.0)


def test_a_four_channel_detector_earns_nothing() -> None:
    row = item(MarketFacts("M1", (device("d1", "food_detector", model_id=3, specs={**DETECTOR, "channels": 4}),)),
               "sz-a1-food-detector")
    assert (row.status, row.points, row.evidence["failed_clauses"]) == ("not_met", 0.0, ["SZ 6.3.1"])


def test_a_market_without_tablets_or_broadcast_loses_those_points() -> None:
    for row_id in ("sz-a1-inspection-tablet", "sz-a1-broadcast"):
        row = item(MarketFacts("M1"), row_id)
        assert (row.status, row.points) == ("not_met", 0.0), row_id


def test_a_registered_broadcast_system_with_a_conforming_model_scores() -> None:
    specs = {"gbt_50526": True, "transmission": "wired_constant_voltage", "expandable_sources": ["mp3", "radio"],
             "timed_playback": True}
    row = item(MarketFacts("M1", (device("b1", "broadcast", model_id=9, specs=specs),)), "sz-a1-broadcast")
    assert (row.status, row.points) == ("met", 3.0), row.evidence


def test_every_stall_needs_an_online_screen() -> None:
    screens = (device("d1", "display", screen="stall", stall="A01", online=True, model_id=7, specs=STALL_SCREEN),
               device("d2", "display", screen="stall", stall="A02", online=False),
               device("d3", "display", screen="stall", online=True))
    facts = MarketFacts("M1", screens, LayoutFacts(600, (), stall_count=4))
    row = item(facts, "sz-a1-stall-screen")
    assert (row.status, row.points) == ("partly", 0.7)  # 1 of 4 stalls: 3 × 0.25 rounded down
    assert row.evidence["screens_offline"] == 1 and row.evidence["screens_unassigned"] == 1
    zz = item(facts, "zz-stall-screens")
    assert (zz.points, zz.evidence["stalls_dark"]) == (7.0, 3)


def test_registered_stalls_count_when_the_layout_does_not_say() -> None:
    screens = (device("d1", "display", screen="stall", stall="A01", online=True),)
    row = item(MarketFacts("M1", screens, registered_stalls=1), "sz-a1-stall-screen")
    assert (row.status, row.points) == ("met", 3.0)


def test_an_online_ratio_below_the_floor_counts_as_offline() -> None:
    screens = (device("d1", "display", screen="stall", stall="A01", online=True, online_ratio=0.9),)
    row = item(MarketFacts("M1", screens, registered_stalls=1, online_basis="history"), "zz-stall-screens")
    assert row.points == 9.0


@pytest.mark.parametrize(("received", "status", "points"), [(960, "met", 1.0), (950, "not_met", 0.0),
                                                            (940, "not_met", 0.0), (1000, "met", 1.0)])
def test_data_loss_below_five_percent_scores_the_transmission_row(received: int, status: str, points: float) -> None:
    scale = device("s1", "scale")
    facts = MarketFacts("M1", (scale,), sequence_spans={"s1": SeqSpan(0, 999, received)}, sequence_basis="provided")
    row = item(facts, "sz-a1-transmission-merchant")
    assert (row.status, row.points, row.evidence["expected"], row.evidence["received"]) == (
        status, points, 1000, received)
    assert row.evidence["loss_rate_pct"] == round((1000 - received) / 10, 2)


def test_loss_is_unknown_without_a_sequence_source() -> None:
    row = item(MarketFacts("M1", (device("s1", "scale"),)), "sz-a1-transmission-management")
    assert (row.status, row.points, row.evidence["reason"]) == ("unknown", None, "no sequence-number source")


def test_loss_is_summed_over_devices() -> None:
    spans = {"a": SeqSpan(0, 99, 100), "b": SeqSpan(10, 909, 810), "c": SeqSpan(5, 5, 1)}
    figures = loss_figures(spans, ["a", "b"])
    assert figures is not None and (figures.expected, figures.received, figures.devices) == (1000, 910, 2)
    assert figures.rate == pytest.approx(0.09)


def test_zz_rows_are_all_or_nothing() -> None:
    panels = (device("f1", "fire_panel", online=True), device("f2", "fire_panel", online=False))
    facts = MarketFacts("M1", panels, LAYOUT)
    assert (item(facts, "zz-fire").status, item(facts, "zz-fire").points) == ("partly", 0.0)
    assert (item(facts, "zz-fire-warning").status, item(facts, "zz-fire-warning").points) == ("met", 2.0)


def test_thermal_imaging_needs_a_thermometer_at_every_entrance() -> None:
    thermometers = (device("t1", "thermometer", entrance="North gate", online=True),
                    device("t2", "thermometer", entrance="South gate", online=True, model_id=9,
                           specs={"thermal_imaging": False}))
    row = item(MarketFacts("M1", thermometers, LAYOUT), "zz-thermal")
    assert (row.status, row.points, row.evidence["uncovered_entrances"]) == ("partly", 0.0, ["South gate"])


def test_totals_add_up_and_keep_unknown_points_apart() -> None:
    card = score_market(MarketFacts("M1"))
    totals = {t.section: t for t in card.totals}
    assert totals["SZ A.1 硬件设备"].max_points == 35.0
    assert totals["SZ A.1 数据传输"].max_points == 3.0
    assert sum(t.max_points for t in card.totals) == sum(r.max_points for r in ROWS.values())
    assert totals["SZ A.1 硬件设备"].unknown_points >= 3 + 3 + 1.5  # network, machine room, other devices


def test_entrance_coverage_prefers_labels() -> None:
    coverage = entrance_coverage(["A", "B", "C"], [device("x", "flow_counter", entrance="C"),
                                                   device("y", "flow_counter", entrance="nowhere")])
    assert (coverage.covered, coverage.uncovered, coverage.assumed) == (("A", "C"), ("B",), 1)
