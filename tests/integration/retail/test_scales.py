"""Scales: price sync with labels (and the conflict rule), the transaction ledger and its anomaly flags,
calibration only with a valid server authorisation, metrology due lists."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from fleet.schemas import MetrologyCreate
from retail.ledger import LedgerQuery
from retail.models import Calibration, IntegrityEvent, PriceSource
from retail.render import LabelSpec, price_box, read_price
from tests.integration.retail.conftest import MARKET, Retail

SPEC = LabelSpec(296, 128, "bwr")


async def _bound(retail: Retail, code: str, label_id: str, price: str = "12.00"):
    product = await retail.service.prices.create_product(
        MARKET, {"code": code, "name": "五花肉", "price": Decimal(price), "stall_no": "A03"}, "user:test",
        PriceSource.API,
    )
    sim = retail.floor.add_label(label_id, "tv-BS00")
    await retail.floor.uplink("tv-BS00", "event", {"type": "label_joined", "label_id": label_id, "rssi_dbm": -50})
    await retail.service.labels.bind(label_id, product, actor="user:test")
    await retail.floor.deliver()  # labels show it, the stall's scales receive the PLU table and report it
    return product, sim


async def test_price_set_on_a_scale_shows_on_the_bound_label_and_the_platform(retail: Retail) -> None:
    product, sim = await _bound(retail, "2001", "tv-EL0010")
    await retail.floor.uplink("tv-SC00", "event", {"type": "price_set", "product_code": "2001", "unit_price": 13.5})
    await retail.floor.deliver()
    await product.refresh_from_db()
    assert product.price == Decimal("13.50")
    assert read_price(sim.screen.image, price_box(SPEC)) == Decimal("13.50")
    change = (await retail.service.prices.history(product))[0]
    assert (change.source, change.actor, change.accepted) == (PriceSource.SCALE, "tv-SC00", True)
    # the stall's other scales follow; the scale of another stall does not
    assert retail.floor.scales["tv-SC01"].plu["2001"] == "13.50"
    assert "2001" not in retail.floor.scales["tv-SC99"].plu


async def test_price_set_in_the_dashboard_shows_on_scale_and_label(retail: Retail) -> None:
    product, sim = await _bound(retail, "2002", "tv-EL0011")
    await retail.service.prices.update(product, {"price": Decimal("15.80")}, "user:manager", PriceSource.DASHBOARD)
    await retail.floor.deliver()
    assert read_price(sim.screen.image, price_box(SPEC)) == Decimal("15.80")
    for scale in ("tv-SC00", "tv-SC01", "tv-SC02"):
        assert retail.floor.scales[scale].plu["2002"] == "15.80"
        assert retail.floor.scales[scale].plu_version == product.plu_version


async def test_a_scale_price_based_on_an_old_table_is_refused_and_the_platform_price_stands(retail: Retail) -> None:
    product, _ = await _bound(retail, "2003", "tv-EL0012")
    await retail.service.prices.update(product, {"price": Decimal("16.00")}, "user:manager", PriceSource.DASHBOARD)
    retail.floor.queue.clear()  # the new table has not reached the scales yet
    await retail.floor.uplink("tv-SC02", "event", {"type": "price_set", "product_code": "2003", "unit_price": 11})
    await product.refresh_from_db()
    assert product.price == Decimal("16.00")
    refused = (await retail.service.prices.history(product))[0]
    assert (refused.source, refused.accepted, refused.new_price) == (PriceSource.SCALE, False, Decimal("11.00"))
    assert "stale" in refused.note
    await retail.floor.deliver()
    assert retail.floor.scales["tv-SC02"].plu["2003"] == "16.00"  # the scale is shown the price that stands


# ---------------------------------------------------------------- the ledger


def _sale(order_no: str, **changes):
    sale = {"type": "transaction", "order_no": order_no, "time": "2026-11-23T10:00:00+08:00", "market_code": MARKET,
            "stall_no": "B07", "vendor_name": "李记肉铺", "scale_id": "tv-SC99", "product_code": "3001",
            "product_name": "排骨", "weight_kg": 1.25, "unit_price": 40.0, "total": 50.0, "trace_code": "TC1"}
    return {**sale, **changes}


async def test_every_kind_of_abnormal_order_is_flagged_and_valid_ones_are_not(retail: Retail) -> None:
    await retail.service.prices.create_product(
        MARKET, {"code": "3001", "name": "排骨", "price": Decimal("40.00"), "stall_no": "B07"}, "user:t",
        PriceSource.API,
    )
    cases = {
        "ok-1": ({}, []),
        "ok-2": ({"weight_kg": 0.333, "unit_price": 40.0, "total": 13.32}, []),
        "bad-total": ({"total": 55.0}, ["total_mismatch"]),
        "ok-1 ": ({}, []),  # a different order number (trailing space is part of it)
        "bad-clock": ({"time": "2026-11-23T11:30:00+08:00"}, ["clock_off"]),
        "bad-edge": ({"weight_kg": 29.9, "total": 1196.0}, ["weight_at_edge"]),
        "bad-tiny": ({"weight_kg": 0.005, "total": 0.2}, ["weight_at_edge"]),
        "bad-price": ({"unit_price": 4.0, "total": 5.0}, ["price_outlier"]),
    }
    for order_no, (changes, expected) in cases.items():
        row = await retail.service.ledger.record("tv-SC99", _sale(order_no, **changes))
        assert row.flags == expected, order_no
    duplicate = await retail.service.ledger.record("tv-SC99", _sale("ok-1"))
    assert duplicate.flags == ["duplicate_order_no"]


async def test_the_ledger_answers_per_stall_day_and_product_with_totals(retail: Retail) -> None:
    for n, (code, weight, price) in enumerate([("4001", 1.0, 10.0), ("4001", 2.0, 10.0), ("4002", 0.5, 30.0)]):
        await retail.floor.uplink("tv-SC99", "event", _sale(f"L{n}", stall_no="C01", product_code=code,
                                                             weight_kg=weight, unit_price=price,
                                                             total=round(weight * price, 2)))
    day = date(2026, 11, 23)
    items, totals = await retail.service.ledger.list(LedgerQuery(market=MARKET, stall_no="C01", day=day))
    assert len(items) == 3 and totals == {"count": 3, "weight_kg": "3.500", "amount": "45.00"}
    _, product_totals = await retail.service.ledger.list(LedgerQuery(stall_no="C01", product_code="4001"))
    assert product_totals["amount"] == "30.00"
    by_product = await retail.service.ledger.summary(LedgerQuery(stall_no="C01", day=day), by="product")
    assert [(r["product"], r["count"], r["amount"]) for r in by_product] == [("4001", 2, "30.00"), ("4002", 1, "15.00")]
    receipt = await retail.service.ledger.receipt(items[-1])
    assert "合计 10.00 元" in receipt["text"] and receipt["qr"].startswith(f"MF-TRACE:{MARKET}:C01:L0")
    _, other_day = await retail.service.ledger.list(LedgerQuery(stall_no="C01", day=day + timedelta(days=1)))
    assert other_day["count"] == 0


# ---------------------------------------------------------------- calibration (SZ 6.2.7)


def _calibrated(grant_id: str | None):
    return {"type": "calibrated", "grant_id": grant_id, "reference_kg": 10.0, "measured_kg": 10.002}


async def test_calibration_needs_a_valid_single_use_grant_for_that_scale(retail: Retail) -> None:
    desk = retail.service.scales
    grant = await desk.grant_calibration("tv-SC01", 10, actor="user:maint")
    await retail.floor.deliver()
    assert retail.floor.scales["tv-SC01"].grant[0] == grant.id  # the scale received the authorisation

    await retail.floor.uplink("tv-SC01", "event", _calibrated(None))
    await retail.floor.uplink("tv-SC02", "event", _calibrated(grant.id))  # another scale's grant
    await retail.floor.uplink("tv-SC01", "event", _calibrated("made-up"))
    await retail.floor.uplink("tv-SC01", "event", _calibrated(grant.id))  # valid
    await retail.floor.uplink("tv-SC01", "event", _calibrated(grant.id))  # reused
    expired = await desk.grant_calibration("tv-SC01", 5, actor="user:maint")
    retail.clock.advance(6 * 60)
    await retail.floor.uplink("tv-SC01", "event", _calibrated(expired.id))

    rows = await Calibration.filter(scale_id__in=["tv-SC01", "tv-SC02"]).order_by("id")
    assert [(r.scale_id, r.accepted, r.refusal) for r in rows] == [
        ("tv-SC01", False, "no_grant"), ("tv-SC02", False, "other_scale"), ("tv-SC01", False, "unknown_grant"),
        ("tv-SC01", True, ""), ("tv-SC01", False, "reused"), ("tv-SC01", False, "expired"),
    ]
    tampers = await IntegrityEvent.filter(scale_id="tv-SC01", type="tamper").count()
    assert tampers == 4 and (await desk.integrity_log("tv-SC01"))["anti_cheat_ok"] is False


async def test_a_grant_longer_than_allowed_is_refused(retail: Retail) -> None:
    from fleet.errors import InvalidRequest, NotFound

    with pytest.raises(InvalidRequest, match="minutes"):
        await retail.service.scales.grant_calibration("tv-SC01", 600, actor="user:maint")
    with pytest.raises(NotFound):
        await retail.service.scales.grant_calibration("tv-EL0000", 5, actor="user:maint")  # not a scale


# ---------------------------------------------------------------- metrology (SJZ table 4)


async def test_overdue_and_due_soon_scales_are_listed_per_owner(retail: Retail) -> None:
    today = retail.clock().date()
    await retail.registry.add_metrology_record("tv-SC00", MetrologyCreate(
        certificate_no="JD-1", verified_on=today - timedelta(days=400), due_on=today - timedelta(days=35)))
    await retail.registry.add_metrology_record("tv-SC01", MetrologyCreate(
        certificate_no="JD-2", verified_on=today - timedelta(days=340), due_on=today + timedelta(days=20)))
    await retail.registry.add_metrology_record("tv-SC02", MetrologyCreate(
        certificate_no="JD-3", verified_on=today, due_on=today + timedelta(days=365)))
    due = await retail.service.scales.metrology_due(30, market=MARKET)
    overdue = {s["device_id"] for group in due["overdue"] for s in group["scales"]}
    soon = {s["device_id"]: group["owner"] for group in due["due_soon"] for s in group["scales"]}
    assert "tv-SC00" in overdue and "tv-SC99" in overdue  # SC99 has no certificate at all
    assert soon == {"tv-SC01": "王记蔬菜"}
    assert "tv-SC02" not in overdue | set(soon)


async def test_a_change_made_without_downlinks_reaches_scales_and_labels_through_the_sweeps(retail: Retail) -> None:
    """An api process (scale-out) records the change; the ingest process's sweeps send it."""
    from retail.service import RetailService
    from retail.transport import DeferredCommands

    product, sim = await _bound(retail, "2004", "tv-EL0013")
    api_process = RetailService(DeferredCommands(), retail.clock)
    await api_process.prices.update(await api_process.prices.get(product.id), {"price": Decimal("19.90")},
                                    "user:manager", PriceSource.API)
    assert retail.floor.queue == []  # nothing went out from the api process
    assert await retail.service.prices.sync_scales() == 3  # the stall's three scales were behind
    retail.clock.advance(retail.service.resend_after_s)
    assert await retail.service.labels.resend_stale(retail.service.resend_after_s) >= 1
    await retail.floor.deliver()
    assert retail.floor.scales["tv-SC00"].plu["2004"] == "19.90"
    assert read_price(sim.screen.image, price_box(SPEC)) == Decimal("19.90")
    assert await retail.service.prices.sync_scales() == 0  # up to date: nothing more to send


async def test_a_timed_change_is_applied_once_by_several_processes(retail: Retail) -> None:
    from retail.models import ScheduledPrice
    from retail.service import RetailService

    product, _ = await _bound(retail, "2005", "tv-EL0014")
    at = retail.clock() + timedelta(minutes=5)
    item = await retail.service.prices.schedule(product, at, Decimal("10.00"), None, "", "user:test")
    other = RetailService(retail.floor, retail.clock)
    retail.clock.now_value = at
    first, second = await retail.service.prices.apply_due(), await other.prices.apply_due()
    assert [i.id for i in first + second] == [item.id]
    assert (await ScheduledPrice.get(id=item.id)).state.value == "applied"
    history = await retail.service.prices.history(product)
    assert sum(1 for h in history if h.source == PriceSource.SCHEDULE) == 1
