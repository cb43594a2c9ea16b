"""The transaction ledger: every scale sale stored, checked for anomalies, queryable per stall, day and product
with totals, and printable as a receipt with its traceability code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.functions import Count, Sum

from fleet.errors import InvalidRequest, NotFound
from fleet.kinds import validate_payload
from fleet.models import Device, Market
from retail.anomalies import AnomalyLimits, SaleContext, SaleFacts, check
from retail.commands import Clock
from retail.models import Product, Transaction

__all__ = ["Ledger", "LedgerQuery"]

RECENT_PRICES = 20
GROUPS = {"stall": "stall_no", "product": "product_code", "scale": "scale_id", "day": "day"}


@dataclass(frozen=True)
class LedgerQuery:
    market: str | None = None
    stall_no: str | None = None
    day: date | None = None
    product_code: str | None = None
    scale_id: str | None = None
    flagged: bool | None = None
    markets: frozenset[str] | None = None  # the caller's scope; None: every market

    def filters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.market:
            if self.markets is not None and self.market not in self.markets:
                raise NotFound(f"no market {self.market!r}")
            out["market_code"] = self.market
        elif self.markets is not None:
            out["market_code__in"] = list(self.markets)
        for key, column in (("stall_no", "stall_no"), ("day", "day"), ("product_code", "product_code"),
                            ("scale_id", "scale_id"), ("flagged", "flagged")):
            value = getattr(self, key)
            if value is not None:
                out[column] = value
        return out


class Ledger:
    def __init__(self, clock: Clock, limits: AnomalyLimits | None = None) -> None:
        self.clock = clock
        self.limits = limits or AnomalyLimits()
        self._tz: dict[str, ZoneInfo] = {}

    async def record(self, scale_id: str, sale: dict[str, Any], received_at: datetime | None = None) -> Transaction:
        """Store one `transaction` event of a scale with its anomaly flags; ValidationError if it is not one."""
        received = received_at or self.clock()
        sale = validate_payload("scale", "event", {**sale, "type": "transaction"}).model_dump()
        when: datetime = sale["time"]
        weight, price, total = sale["weight_kg"], sale["unit_price"], sale["total"]
        market = sale["market_code"]
        code = sale.get("product_code") or ""
        context = SaleContext(
            order_seen=await Transaction.exists(scale_id=scale_id, order_no=sale["order_no"]),
            list_price=await self._list_price(market, sale["stall_no"], code),
            recent_prices=await self._recent_prices(market, sale["stall_no"], code),
            max_capacity_kg=await self._capacity(scale_id),
        )
        flags = check(SaleFacts(weight, price, total, when, received), context, self.limits)
        return await Transaction.create(
            scale_id=scale_id, order_no=sale["order_no"], market_code=market, stall_no=sale["stall_no"],
            vendor_name=sale.get("vendor_name") or "", product_code=code, product_name=sale["product_name"],
            weight_kg=weight, unit_price=price, total=total, trace_code=sale.get("trace_code") or "", time=when,
            day=await self._business_day(market, when), received_at=received, flags=flags, flagged=bool(flags),
        )

    async def purge(self, keep_days: int) -> int:
        """Delete sales older than `keep_days` by the scale's clock (SZ 6.11.2 b: three years by default);
        returns how many went."""
        if keep_days < 1:
            raise ValueError("keep_days must be at least 1")
        cutoff = self.clock() - timedelta(days=keep_days)
        return await Transaction.filter(time__lt=cutoff).delete()

    async def list(
        self, query: LedgerQuery, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[Transaction], dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit: between 1 and 1000")
        base = Transaction.filter(**query.filters())
        items = await base.order_by("-time", "-id").offset(offset).limit(limit)
        return items, await self._totals(base)

    async def summary(self, query: LedgerQuery, by: str) -> list[dict[str, Any]]:
        """Totals grouped by stall, product, scale or day."""
        if by not in GROUPS:
            raise InvalidRequest(f"by: one of {', '.join(GROUPS)}")
        column = GROUPS[by]
        rows = await (
            Transaction.filter(**query.filters())
            .annotate(count=Count("id"), weight_kg=Sum("weight_kg"), amount=Sum("total"))
            .group_by(column)
            .order_by(column)
            .values(column, "count", "weight_kg", "amount")
        )
        return [{by: row[column], "count": row["count"], "weight_kg": _dec(row["weight_kg"], "0.001"),
                 "amount": _dec(row["amount"], "0.01")} for row in rows]

    async def get(self, transaction_id: int, markets: frozenset[str] | None = None) -> Transaction:
        row = await Transaction.get_or_none(id=transaction_id)
        if row is None or (markets is not None and row.market_code not in markets):
            raise NotFound(f"no transaction {transaction_id}")
        return row

    def trace_payload(self, row: Transaction) -> str:
        """What the receipt's QR code holds: enough for a shopper or inspector to trace the sale."""
        return f"MF-TRACE:{row.market_code}:{row.stall_no}:{row.order_no}:{row.trace_code or '-'}"

    async def receipt(self, row: Transaction) -> dict[str, Any]:
        market = await Market.get_or_none(code=row.market_code)
        lines = [
            market.name if market else row.market_code,
            f"摊位 {row.stall_no} {row.vendor_name}".strip(),
            f"单号 {row.order_no}",
            f"时间 {row.time.astimezone(self._zone(market)).strftime('%Y-%m-%d %H:%M:%S')}",
            f"{row.product_name}  {row.weight_kg} kg × {row.unit_price} 元/kg",
            f"合计 {row.total} 元",
            f"溯源码 {row.trace_code or '-'}",
        ]
        return {"transaction_id": row.id, "lines": lines, "text": "\n".join(lines), "qr": self.trace_payload(row)}

    async def _totals(self, query: Any) -> dict[str, Any]:
        row = await query.annotate(count=Count("id"), weight_kg=Sum("weight_kg"), amount=Sum("total")).first().values(
            "count", "weight_kg", "amount"
        )
        row = row or {}
        return {"count": row.get("count") or 0, "weight_kg": _dec(row.get("weight_kg"), "0.001"),
                "amount": _dec(row.get("amount"), "0.01")}

    async def _list_price(self, market: str, stall_no: str, code: str) -> Decimal | None:
        if not code:
            return None
        product = await Product.filter(market_id=market, stall__number=stall_no, code=code).first()
        if product is None:
            return None
        return product.promo_price if product.promo_price is not None else product.price

    async def _recent_prices(self, market: str, stall_no: str, code: str) -> list[Decimal]:
        if not code:
            return []
        rows = await (Transaction.filter(market_code=market, stall_no=stall_no, product_code=code, flagged=False)
                      .order_by("-id").limit(RECENT_PRICES).values_list("unit_price", flat=True))
        return [Decimal(str(v)) for v in rows]

    async def _capacity(self, scale_id: str) -> Decimal | None:
        device = await Device.get_or_none(id=scale_id).prefetch_related("model")
        specs = device.model.specs if device is not None and device.model is not None else {}
        value = (specs or {}).get("max_kg") or (specs or {}).get("max_capacity_kg")
        return Decimal(str(value)) if value else None

    async def _business_day(self, market: str, when: datetime) -> date:
        row = await Market.get_or_none(code=market)
        return when.astimezone(self._zone(row)).date()

    def _zone(self, market: Market | None) -> ZoneInfo:
        name = market.timezone if market is not None else "Asia/Shanghai"
        if name not in self._tz:
            self._tz[name] = ZoneInfo(name)
        return self._tz[name]


def _dec(value: Any, quantum: str) -> str:
    return str(Decimal(str(value or 0)).quantize(Decimal(quantum)))
