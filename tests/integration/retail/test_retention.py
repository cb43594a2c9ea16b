"""Retention of sales (issue 11, SZ 6.11.2 b): the ledger keeps three years of transactions by default and the
retail service deletes older ones by itself, at start and hourly; younger sales stay queryable."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from retail.models import Transaction
from retail.service import RetailService
from tests.integration.retail.conftest import MARKET, Retail


def sale(order_no: str, when: str) -> dict[str, object]:
    return {"type": "transaction", "order_no": order_no, "time": when, "market_code": MARKET, "stall_no": "B07",
            "vendor_name": "李记肉铺", "scale_id": "tv-SC99", "product_code": "3001", "product_name": "排骨",
            "weight_kg": 1.25, "unit_price": 40.0, "total": 50.0, "trace_code": "TC1"}


def iso(retail: Retail, days_ago: float) -> str:
    return (retail.clock() - timedelta(days=days_ago)).isoformat()


async def test_sales_older_than_three_years_are_purged_and_younger_ones_kept(retail: Retail) -> None:
    await Transaction.filter(scale_id="tv-SC99", order_no__startswith="ret-").delete()
    ledger = retail.service.ledger
    ages = {"ret-old": 1100, "ret-edge": 1094, "ret-year": 365, "ret-today": 0.1}
    for order_no, days in ages.items():
        await ledger.record("tv-SC99", sale(order_no, iso(retail, days)))
    assert retail.service.transaction_retention_days == 1095  # the default: three years

    assert await ledger.purge(1095) == 1
    kept = await Transaction.filter(order_no__startswith="ret-").values_list("order_no", flat=True)
    assert sorted(kept) == ["ret-edge", "ret-today", "ret-year"]
    assert await ledger.purge(1095) == 0  # nothing more to do

    retail.clock.advance(timedelta(days=2).total_seconds())  # two days later the 1,094-day-old sale is past three years
    assert await ledger.purge(1095) == 1
    kept = await Transaction.filter(order_no__startswith="ret-").values_list("order_no", flat=True)
    assert sorted(kept) == ["ret-today", "ret-year"]


async def test_the_service_purges_by_itself_when_it_starts(retail: Retail) -> None:
    await Transaction.filter(order_no__startswith="svc-").delete()
    await retail.service.ledger.record("tv-SC99", sale("svc-old", iso(retail, 40)))
    await retail.service.ledger.record("tv-SC99", sale("svc-new", iso(retail, 5)))
    service = RetailService(retail.floor, retail.clock, transaction_retention_days=30)
    await service.start()
    try:
        for _ in range(400):
            if not await Transaction.exists(order_no="svc-old"):
                break
            await asyncio.sleep(0.05)
        assert not await Transaction.exists(order_no="svc-old")
        assert await Transaction.exists(order_no="svc-new")
    finally:
        await service.aclose()
