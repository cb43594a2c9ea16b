"""What goes in and out of the retail API (api/routes/retail.py)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retail.models import PriceSource, ScheduleState

Price = Annotated[Decimal, Field(ge=0, lt=10_000, max_digits=6, decimal_places=2)]  # what a label can show


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductCreate(Strict):
    market: str = Field(min_length=1, max_length=32)
    stall_no: str | None = Field(default=None, max_length=32)
    code: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")
    name: str = Field(min_length=1, max_length=100)
    category: str = Field(default="", max_length=50)
    origin: str = Field(default="", max_length=100)
    unit: str = Field(default="kg", min_length=1, max_length=16)
    grade: str = Field(default="", max_length=32)
    price: Price
    promo_price: Price | None = None
    promo_text: str = Field(default="", max_length=100)
    trace_url: str = Field(default="", max_length=300)


class ProductUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    category: str | None = Field(default=None, max_length=50)
    origin: str | None = Field(default=None, max_length=100)
    unit: str | None = Field(default=None, min_length=1, max_length=16)
    grade: str | None = Field(default=None, max_length=32)
    price: Price | None = None
    promo_price: Price | None = None
    promo_text: str | None = Field(default=None, max_length=100)
    trace_url: str | None = Field(default=None, max_length=300)

    def changes(self) -> dict[str, Any]:
        """Only what the caller sent; `promo_price: null` sent explicitly ends a promotion."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None or k == "promo_price"}


class PriceListItem(Strict):
    product_id: int
    price: Price | None = None
    promo_price: Price | None = None
    promo_text: str | None = Field(default=None, max_length=100)

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if k != "product_id"}


class PriceListIn(Strict):
    """Many price changes in one call: one write for all of them, then every bound label and scale."""

    items: list[PriceListItem] = Field(min_length=1, max_length=5000)


class PriceListResult(BaseModel):
    updated: int
    labels: int


class ProductPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    market_id: str
    stall_id: int | None
    code: str
    name: str
    category: str
    origin: str
    unit: str
    grade: str
    price: Decimal
    promo_price: Decimal | None
    promo_text: str
    trace_url: str
    plu_version: int
    updated_at: datetime


class PriceChangePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    source: PriceSource
    actor: str
    old_price: Decimal | None
    new_price: Decimal
    old_promo_price: Decimal | None
    new_promo_price: Decimal | None
    accepted: bool
    note: str
    at: datetime


class ScheduleCreate(Strict):
    at: datetime
    price: Price
    promo_price: Price | None = None
    promo_text: str = Field(default="", max_length=100)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-11-25T08:00:00+08:00): the label switches at that instant")
        return value


class SchedulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    product_id: int
    at: datetime
    price: Decimal
    promo_price: Decimal | None
    promo_text: str
    state: ScheduleState
    created_by: str
    applied_at: datetime | None


class BindingIn(Strict):
    product_id: int


class FlashIn(Strict):
    colour: Literal["red", "green", "blue", "white"] = "green"
    seconds: int = Field(default=10, ge=1, le=600)


class PageIn(Strict):
    page: int = Field(ge=0, le=7)


class LabelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    device_id: str
    market_id: str | None
    product_id: int | None
    width: int
    height: int
    colours: str
    page: int
    base_station_id: str | None
    shown: dict[str, str]
    pending_sha256: str | None
    pending_since: datetime | None
    battery_pct: float | None
    rssi_dbm: int | None
    bound_at: datetime | None
    bound_by: str
    last_ack_at: datetime | None


class TransactionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    scale_id: str
    order_no: str
    market_code: str
    stall_no: str
    vendor_name: str
    product_code: str
    product_name: str
    weight_kg: Decimal
    unit_price: Decimal
    total: Decimal
    trace_code: str
    time: datetime
    day: date
    received_at: datetime
    flags: list[str]


class Totals(BaseModel):
    count: int
    weight_kg: Decimal
    amount: Decimal


class TransactionPage(BaseModel):
    items: list[TransactionPublic]
    totals: Totals


class Receipt(BaseModel):
    transaction_id: int
    lines: list[str]
    text: str
    qr: str


class GrantIn(Strict):
    minutes: int = Field(default=15, ge=1, le=120)
    reason: str = Field(default="", max_length=300)


class GrantPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    scale_id: str
    granted_by: str
    reason: str
    granted_at: datetime
    valid_until: datetime
    used_at: datetime | None


class CalibrationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    scale_id: str
    grant_id: str | None
    accepted: bool
    refusal: str
    reference_kg: float
    measured_kg: float
    at: datetime


class IntegrityEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    type: str
    ok: bool
    reason: str
    details: str
    at: datetime


class IntegrityPublic(BaseModel):
    anti_cheat_ok: bool
    events: list[IntegrityEventPublic]


class DueScale(BaseModel):
    device_id: str
    name: str
    market: str | None
    stall_no: str | None
    owner: str
    certificate_no: str
    due_on: date
    days_left: int


class OwnerGroup(BaseModel):
    owner: str
    scales: list[DueScale]


class MetrologyDue(BaseModel):
    today: date
    overdue: list[OwnerGroup]
    due_soon: list[OwnerGroup]
    overdue_count: int
    due_soon_count: int
