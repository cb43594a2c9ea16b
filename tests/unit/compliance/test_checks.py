"""check_model: conforming models pass, each failed clause is named, unstated keys are missing (never passed)."""

from __future__ import annotations

from typing import Any

import pytest

from compliance.checks import check_model, spec_keys_for
from compliance.requirements import select_standards
from tests.unit.compliance.payloads import conforming

SCALE, DETECTOR, TABLET = conforming("scale"), conforming("food_detector"), conforming("inspection_tablet")
STALL_SCREEN, PUBLIC_SCREEN = conforming("stall_screen"), conforming("public_screen")


@pytest.mark.parametrize(
    ("kind", "specs"),
    [("scale", SCALE), ("food_detector", DETECTOR), ("inspection_tablet", TABLET), ("display", STALL_SCREEN),
     ("display", PUBLIC_SCREEN)],
    ids=["scale", "detector", "tablet", "stall-screen", "public-screen"],
)
def test_a_conforming_model_passes_every_item(kind: str, specs: dict[str, Any]) -> None:
    report = check_model(kind, specs)
    assert report.conforming, [r.message for r in report.failed + report.missing]
    assert report.checked == len(report.passed) and report.checked > 0
    assert not report.unrecognised_keys


def test_a_detector_with_four_channels_fails_sz_6_3_1() -> None:
    report = check_model("food_detector", {**DETECTOR, "channels": 4})
    assert not report.conforming
    [failure] = report.failed
    assert (failure.clause, failure.key, failure.expected, failure.given) == ("SZ 6.3.1", "channels", "≥ 5 channels", 4)


def test_a_weak_tablet_names_each_failed_clause() -> None:
    report = check_model("inspection_tablet", {**TABLET, "standby_h": 8, "rear_camera_mp": 5, "storage_gb": 16})
    assert {r.clause for r in report.failed} == {"SZ 6.4.2 c", "SZ 6.4.2 d", "SZ 6.4.2 e"}
    assert all(r.message.startswith(r.clause) for r in report.failed)


def test_a_scale_without_type_approval_fails_on_the_certificate_and_the_ip_rating() -> None:
    report = check_model("scale", {**SCALE, "type_approval_certificate": False, "housing_ip": "IP54"})
    assert {r.item for r in report.failed} == {"sz-scale-type-approval", "sz-scale-housing-ip"}


def test_unstated_keys_are_reported_missing_not_passed() -> None:
    report = check_model("inspection_tablet", {"os": "android"})
    assert not report.conforming
    assert {r.key for r in report.missing} == {"network", "standby_h", "rear_camera_mp", "storage_gb"}
    assert all(r.status == "missing" for r in report.missing)
    assert not report.failed


def test_an_empty_value_counts_as_unstated() -> None:
    report = check_model("scale", {**SCALE, "type_approval_certificate": ""})
    assert [r.item for r in report.missing] == ["sz-scale-type-approval"]


def test_a_value_of_the_wrong_type_is_invalid_and_fails() -> None:
    report = check_model("inspection_tablet", {**TABLET, "storage_gb": "64GB", "standby_h": True})
    statuses = {r.key: r.status for r in report.failed}
    assert statuses == {"storage_gb": "invalid", "standby_h": "invalid"}


def test_a_display_without_a_screen_role_is_told_to_state_it() -> None:
    specs = {k: v for k, v in STALL_SCREEN.items() if k != "screen"}
    report = check_model("display", specs)
    assert report.missing and {r.key for r in report.missing} == {"screen"}
    assert "SZ 6.5.3" in " ".join(r.clause for r in report.missing)


def test_stall_screen_clauses_do_not_apply_to_a_public_screen() -> None:
    report = check_model("display", PUBLIC_SCREEN)
    assert "sz-stall-screen-size" in report.not_applicable
    assert "sz-public-screen-size" in {r.item for r in report.passed}


@pytest.mark.parametrize(("size", "ok"), [(17, False), (18, True), (55, True), (56, False)])
def test_a_stall_screen_is_between_18_and_55_inches(size: float, ok: bool) -> None:
    report = check_model("display", {**STALL_SCREEN, "size_inch": size})
    assert ("sz-stall-screen-size" in {r.item for r in report.passed}) is ok


def test_recommended_items_are_advisories_and_do_not_break_conformance() -> None:
    specs = {"bidirectional": True, "history_days": 30, "network": ["wifi", "ethernet"], "waterproof": True}
    report = check_model("flow_counter", specs)
    assert report.conforming
    assert {r.clause for r in report.advisories} == {"SZ 6.9.2 e", "SZ 6.9.2 f"}


@pytest.mark.parametrize(("given", "ok"), [("IP45", True), ("IP54", False), ("IP66", True), ("IPX5", False)])
def test_ip_codes_compare_digit_by_digit(given: str, ok: bool) -> None:
    report = check_model("scale", {**SCALE, "housing_ip": given})
    assert ("sz-scale-housing-ip" not in {r.item for r in report.failed}) is ok


def test_a_fresh_area_label_needs_ip68() -> None:
    label = {"area": "fresh", "ip_rating": "IP67"}
    report = check_model("esl", label, select_standards(["BJ"]))
    assert "bj-esl-ip-fresh" in {r.item for r in report.failed}
    assert "bj-esl-ip" in {r.item for r in report.passed}


def test_camera_storage_must_be_more_than_30_days() -> None:
    report = check_model("camera", {"storage_days": 30}, select_standards(["SZ"]))
    assert "sz-camera-storage" in {r.item for r in report.failed}


def test_includes_names_what_is_lacking() -> None:
    report = check_model("env_sensor", {"network": "wifi", "sensors": ["temperature"]})
    [failure] = report.failed
    assert failure.clause == "SZ 6.12.2 b" and "humidity" in failure.message


def test_a_misspelt_key_is_pointed_out() -> None:
    report = check_model("inspection_tablet", {**TABLET, "storage_gbs": 64})
    assert report.unrecognised_keys == {"storage_gbs": ["storage_gb"]}


def test_checking_only_some_standards() -> None:
    report = check_model("scale", {}, select_standards(["BJ"]))
    assert report.standards == ["BJ"] and {r.standard for r in report.missing} == {"BJ"}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'toaster'"):
        check_model("toaster", {})


def test_spec_keys_document_type_unit_and_clauses() -> None:
    keys = {k.key: k for k in spec_keys_for("inspection_tablet").keys}
    assert keys["standby_h"].type == "number" and keys["standby_h"].unit == "h"
    assert keys["standby_h"].clauses == ["SZ 6.4.2 c"]
    display = {k.key: k for k in spec_keys_for("display").keys}
    assert display["screen"].condition and display["screen"].values == ["public", "stall"]
