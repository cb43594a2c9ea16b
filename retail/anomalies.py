"""Abnormal-order checks for scale transactions (BJ 5.3.1.3: abnormal orders flagged automatically).

`check(sale, context)` is pure: the ledger gathers what it needs (was the order number seen, the product's
price, recent prices) and stores the codes it returns with the transaction. Codes:

- `total_mismatch`: total ≠ weight × unit price beyond rounding (`total_tolerance`, default 0.01 yuan)
- `duplicate_order_no`: the scale already reported this order number
- `clock_off`: the scale's time differs from the platform's receive time by more than `max_clock_skew`
- `weight_at_edge`: weight below the scale's minimum or above 95 % of its maximum capacity
- `price_outlier`: unit price far (default > 50 %) from the product's list price, or from the median of the
  stall's recent sales of that product when it has no list price
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

__all__ = ["CODES", "AnomalyLimits", "SaleContext", "SaleFacts", "check"]

CODES: Final = ("total_mismatch", "duplicate_order_no", "clock_off", "weight_at_edge", "price_outlier")


@dataclass(frozen=True)
class AnomalyLimits:
    total_tolerance: Decimal = Decimal("0.01")
    max_clock_skew: timedelta = timedelta(minutes=5)
    min_weight_kg: Decimal = Decimal("0.020")  # 20 e at e = 1 g: below it the scale's error dominates
    max_capacity_kg: Decimal = Decimal("30")
    edge_fraction: Decimal = Decimal("0.95")
    price_deviation: Decimal = Decimal("0.5")
    min_history: int = 5


@dataclass(frozen=True)
class SaleFacts:
    weight_kg: Decimal
    unit_price: Decimal
    total: Decimal
    time: datetime
    received_at: datetime


@dataclass(frozen=True)
class SaleContext:
    order_seen: bool = False
    list_price: Decimal | None = None
    recent_prices: list[Decimal] = field(default_factory=list)
    max_capacity_kg: Decimal | None = None  # from the scale's model specs, when known


def expected_total(weight_kg: Decimal, unit_price: Decimal) -> Decimal:
    return (weight_kg * unit_price).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def check(sale: SaleFacts, context: SaleContext, limits: AnomalyLimits = AnomalyLimits()) -> list[str]:
    flags: list[str] = []
    if abs(sale.total - expected_total(sale.weight_kg, sale.unit_price)) > limits.total_tolerance:
        flags.append("total_mismatch")
    if context.order_seen:
        flags.append("duplicate_order_no")
    if abs(sale.time - sale.received_at) > limits.max_clock_skew:
        flags.append("clock_off")
    capacity = context.max_capacity_kg or limits.max_capacity_kg
    if sale.weight_kg < limits.min_weight_kg or sale.weight_kg > capacity * limits.edge_fraction:
        flags.append("weight_at_edge")
    reference = context.list_price
    if reference is None and len(context.recent_prices) >= limits.min_history:
        reference = Decimal(statistics.median(context.recent_prices))
    if reference is not None and reference > 0:
        if abs(sale.unit_price - reference) / reference > limits.price_deviation:
            flags.append("price_outlier")
    return flags
