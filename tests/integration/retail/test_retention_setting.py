"""Sales retention is an operator setting (issue 11, SZ 6.11.2 b): `retail.transaction_retention_days`, from
`MF_RETAIL__TRANSACTION_RETENTION_DAYS`, reaches the retail service the platform builds, which purges by it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from marketfleet.settings import load_settings
from retail.commands import utcnow
from retail.models import Transaction
from tests.factories import start_test_platform


def sale(order_no: str, days_ago: float) -> dict[str, object]:
    when = (utcnow() - timedelta(days=days_ago)).isoformat()
    return {"type": "transaction", "order_no": order_no, "time": when, "market_code": "SZ-FT-001", "stall_no": "B07",
            "vendor_name": "李记肉铺", "scale_id": "tv-SC99", "product_code": "3001", "product_name": "排骨",
            "weight_kg": 1.25, "unit_price": 40.0, "total": 50.0, "trace_code": "TC1"}


async def test_the_env_setting_reaches_the_platform_retail_service_and_purges_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = f"sqlite://{tmp_path / 'registry.sqlite3'}"
    async with start_test_platform(tmp_path, registry) as platform:
        retail = platform.services["retail"]
        assert retail.transaction_retention_days == 1095  # default: three years
        for order_no, days in {"env-40": 40, "env-5": 5, "env-400": 400}.items():
            await retail.ledger.record("tv-SC99", sale(order_no, days))
        assert await Transaction.filter(order_no__startswith="env-").count() == 3  # all younger than 3 years

    monkeypatch.setenv("MF_RETAIL__TRANSACTION_RETENTION_DAYS", "30")
    async with start_test_platform(tmp_path, registry) as platform:
        assert platform.settings.retail.transaction_retention_days == 30
        assert platform.services["retail"].transaction_retention_days == 30
        for _ in range(600):  # the service purges at start, in the background
            if await Transaction.filter(order_no__startswith="env-").count() == 1:
                break
            await asyncio.sleep(0.05)
        kept = await Transaction.filter(order_no__startswith="env-").values_list("order_no", flat=True)
        assert kept == ["env-5"]


@pytest.mark.parametrize("value", ["0", "-3", "three years"])
def test_a_retention_below_one_day_or_not_a_number_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MF_RETAIL__TRANSACTION_RETENTION_DAYS", value)
    with pytest.raises(ValidationError, match=r"retail\.transaction_retention_days"):
        load_settings(None, data_dir=tmp_path)
