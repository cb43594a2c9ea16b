"""Abnormal orders through the running platform: a scale publishes its sales over MQTT with its own credentials,
ingest hands them to the ledger, and the HTTP API shows each kind of abnormal order flagged and the valid ones
not (issue 8, BJ 6.3.2 / SZ 6.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.factories import ADMIN
from tests.integration.retail.test_platform import MARKET, Device, _product, eventually, floor, scale  # noqa: F401


def _sale(order_no: str, when: datetime, **changes: Any) -> dict[str, Any]:
    sale = {"type": "transaction", "order_no": order_no, "time": when.isoformat(), "market_code": MARKET,
            "stall_no": "A01", "scale_id": "rtv-SC1", "product_code": "5301", "product_name": "排骨",
            "weight_kg": 1.25, "unit_price": 40.0, "total": 50.0, "trace_code": "TC-FLAGS"}
    return {**sale, **changes}


async def test_each_kind_of_abnormal_order_sent_by_a_scale_is_flagged_and_valid_ones_are_not(
    api: httpx.AsyncClient, scale: Device  # noqa: F811  (the fixture imported above)
) -> None:
    await _product(api, "5301", "40.00")  # the list price the outlier check compares with
    now = datetime.now(UTC)
    cases: dict[str, tuple[dict[str, Any], list[str]]] = {
        "FL-ok-1": ({}, []),
        "FL-ok-2": ({"weight_kg": 0.333, "total": 13.32}, []),  # 13.32 is 0.333 × 40 rounded to the fen
        "FL-total": ({"total": 55.0}, ["total_mismatch"]),
        "FL-clock": ({"time": (now - timedelta(minutes=90)).isoformat()}, ["clock_off"]),  # scale clock far off
        "FL-heavy": ({"weight_kg": 29.9, "total": 1196.0}, ["weight_at_edge"]),  # at the top of the range
        "FL-tiny": ({"weight_kg": 0.005, "total": 0.2}, ["weight_at_edge"]),  # below the minimum
        "FL-price": ({"unit_price": 4.0, "total": 5.0}, ["price_outlier"]),  # a tenth of the list price
    }
    for order_no, (changes, _) in cases.items():
        await scale.publish("event", _sale(order_no, now, **changes))
    await scale.publish("event", _sale("FL-ok-1", now))  # the same order number again

    async def all_recorded() -> list[dict[str, Any]] | None:
        page = (await api.get("/api/v1/retail/transactions", params={"market": MARKET, "product_code": "5301"},
                              headers=ADMIN)).json()
        return page["items"] if page["totals"]["count"] == len(cases) + 1 else None

    items = await eventually(all_recorded)
    by_order: dict[str, list[list[str]]] = {}
    for item in sorted(items, key=lambda t: t["id"]):
        by_order.setdefault(item["order_no"], []).append(item["flags"])
    assert by_order.pop("FL-ok-1") == [[], ["duplicate_order_no"]]  # the first is valid, the repeat is flagged
    assert {order: flags[0] for order, flags in by_order.items()} == {o: f for o, (_, f) in cases.items()
                                                                      if o != "FL-ok-1"}
    flagged = (await api.get("/api/v1/retail/transactions", params={"market": MARKET, "product_code": "5301",
                                                                    "flagged": "true"}, headers=ADMIN)).json()
    assert sorted(t["order_no"] for t in flagged["items"]) == sorted(
        ["FL-clock", "FL-heavy", "FL-ok-1", "FL-price", "FL-tiny", "FL-total"])
