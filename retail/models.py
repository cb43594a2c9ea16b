"""Retail tables in the registry database: products and their price history, timed price changes, shelf
labels and what they show, the scale transaction ledger, scale integrity and calibration grants.

Devices are referenced by their id as a plain column (not a foreign key) where rows are many and written by
ingest (transactions, integrity events): the ledger must keep a sale even after its scale is retired.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class PriceSource(StrEnum):
    """Where a price change came from (the price history keeps it for every change)."""

    DASHBOARD = "dashboard"
    API = "api"
    SCALE = "scale"
    SCHEDULE = "schedule"


class ScheduleState(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    CANCELLED = "cancelled"


class Product(Model):
    """A product a stall sells, with its current price and promotion."""

    id = fields.IntField(primary_key=True)
    market: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Market", related_name="products", on_delete=fields.CASCADE
    )
    stall: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Stall", related_name="products", null=True, on_delete=fields.SET_NULL
    )
    code = fields.CharField(max_length=32)  # the PLU code scales and label scans use
    name = fields.CharField(max_length=100)
    category = fields.CharField(max_length=50, default="")
    origin = fields.CharField(max_length=100, default="")
    unit = fields.CharField(max_length=16, default="kg")
    grade = fields.CharField(max_length=32, default="")
    price = fields.DecimalField(max_digits=12, decimal_places=2)
    promo_price = fields.DecimalField(max_digits=12, decimal_places=2, null=True)
    promo_text = fields.CharField(max_length=100, default="")
    trace_url = fields.CharField(max_length=300, default="")
    # Version of the stall's PLU table in which the platform last changed this product: a scale's own price
    # change counts only if the scale had seen that version (the conflict rule, docs/retail.md).
    plu_version = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "retail_product"
        unique_together = (("market", "stall", "code"),)


class PriceChange(Model):
    """One entry of a product's price history: who, when, from where, from what to what."""

    id = fields.BigIntField(primary_key=True)
    product: fields.ForeignKeyRelation[Product] = fields.ForeignKeyField(
        "retail.Product", related_name="price_changes", on_delete=fields.CASCADE
    )
    source = fields.CharEnumField(PriceSource, max_length=16)
    actor = fields.CharField(max_length=100)  # user:alice, admin-token, scale device id, schedule:12
    old_price = fields.DecimalField(max_digits=12, decimal_places=2, null=True)
    new_price = fields.DecimalField(max_digits=12, decimal_places=2)
    old_promo_price = fields.DecimalField(max_digits=12, decimal_places=2, null=True)
    new_promo_price = fields.DecimalField(max_digits=12, decimal_places=2, null=True)
    accepted = fields.BooleanField(default=True)  # False: refused by the conflict rule (kept for the record)
    note = fields.CharField(max_length=300, default="")
    at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "retail_price_change"


class ScheduledPrice(Model):
    """A timed price change (a promotion starting or ending) that labels hold and switch to at `at`."""

    id = fields.IntField(primary_key=True)
    product: fields.ForeignKeyRelation[Product] = fields.ForeignKeyField(
        "retail.Product", related_name="schedules", on_delete=fields.CASCADE
    )
    at = fields.DatetimeField(db_index=True)
    price = fields.DecimalField(max_digits=12, decimal_places=2)
    promo_price = fields.DecimalField(max_digits=12, decimal_places=2, null=True)
    promo_text = fields.CharField(max_length=100, default="")
    state = fields.CharEnumField(ScheduleState, max_length=16, default=ScheduleState.PENDING, db_index=True)
    created_by = fields.CharField(max_length=100)
    created_at = fields.DatetimeField(auto_now_add=True)
    applied_at = fields.DatetimeField(null=True)

    class Meta:
        table = "retail_scheduled_price"


class ShelfLabel(Model):
    """An electronic shelf label's binding and what the platform knows it shows."""

    device_id = fields.CharField(primary_key=True, max_length=64)
    market_id = fields.CharField(max_length=32, null=True, db_index=True)
    product: fields.ForeignKeyNullableRelation[Product] = fields.ForeignKeyField(
        "retail.Product", related_name="labels", null=True, on_delete=fields.SET_NULL
    )
    width = fields.IntField(default=296)
    height = fields.IntField(default=128)
    colours = fields.CharField(max_length=8, default="bwr")
    page = fields.IntField(default=0)
    base_station_id = fields.CharField(max_length=64, null=True, db_index=True)
    # What each page shows as the label confirmed it ({page: sha256}); the diff base of the next update.
    shown = fields.JSONField(default=dict)
    pending_sha256 = fields.CharField(max_length=64, null=True)  # sent, not yet confirmed
    pending_since = fields.DatetimeField(null=True)
    battery_pct = fields.FloatField(null=True)
    rssi_dbm = fields.IntField(null=True)
    bound_at = fields.DatetimeField(null=True)
    bound_by = fields.CharField(max_length=100, default="")
    last_ack_at = fields.DatetimeField(null=True)

    class Meta:
        table = "retail_shelf_label"


class LabelFrame(Model):
    """A rendered page image, by content hash: the base a diff frame is computed against."""

    sha256 = fields.CharField(primary_key=True, max_length=64)
    width = fields.IntField()
    height = fields.IntField()
    colours = fields.CharField(max_length=8)
    planes = fields.BinaryField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "retail_label_frame"


class Transaction(Model):
    """One sale from a traceable scale (BJ 5.3.5 a), with what the anomaly checks found."""

    id = fields.BigIntField(primary_key=True)
    scale_id = fields.CharField(max_length=64, db_index=True)
    order_no = fields.CharField(max_length=64, db_index=True)
    market_code = fields.CharField(max_length=32)
    stall_no = fields.CharField(max_length=32)
    vendor_name = fields.CharField(max_length=100, default="")
    product_code = fields.CharField(max_length=32, default="")
    product_name = fields.CharField(max_length=100)
    weight_kg = fields.DecimalField(max_digits=10, decimal_places=3)
    unit_price = fields.DecimalField(max_digits=12, decimal_places=2)
    total = fields.DecimalField(max_digits=12, decimal_places=2)
    trace_code = fields.CharField(max_length=64, default="")
    time = fields.DatetimeField()  # the scale's clock
    day = fields.DateField()  # the market's local business day of `time`
    received_at = fields.DatetimeField()
    flags = fields.JSONField(default=list)  # anomaly codes (retail/anomalies.py), empty when normal
    flagged = fields.BooleanField(default=False, db_index=True)

    class Meta:
        table = "retail_transaction"
        indexes = (("market_code", "stall_no", "day"), ("market_code", "day", "product_code"), ("scale_id", "time"))


class IntegrityEvent(Model):
    """A scale's self-check or anti-cheat report (BJ 4.2.4)."""

    id = fields.BigIntField(primary_key=True)
    scale_id = fields.CharField(max_length=64, db_index=True)
    type = fields.CharField(max_length=16)  # self_check, tamper
    ok = fields.BooleanField()
    reason = fields.CharField(max_length=64, default="")
    details = fields.CharField(max_length=500, default="")
    at = fields.DatetimeField()

    class Meta:
        table = "retail_integrity_event"


class CalibrationGrant(Model):
    """A server authorisation to calibrate one scale: time-limited and single-use (SZ 6.2.7)."""

    id = fields.CharField(primary_key=True, max_length=64)  # random, sent to the scale as grant_id
    scale_id = fields.CharField(max_length=64, db_index=True)
    granted_by = fields.CharField(max_length=100)
    reason = fields.CharField(max_length=300, default="")
    granted_at = fields.DatetimeField()
    valid_until = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "retail_calibration_grant"


class Calibration(Model):
    """Every calibration a scale reported, accepted or refused, with the grant it named."""

    id = fields.BigIntField(primary_key=True)
    scale_id = fields.CharField(max_length=64, db_index=True)
    grant_id = fields.CharField(max_length=64, null=True)
    accepted = fields.BooleanField()
    refusal = fields.CharField(max_length=64, default="")  # no_grant, unknown_grant, other_scale, expired, reused
    reference_kg = fields.FloatField()
    measured_kg = fields.FloatField()
    at = fields.DatetimeField()

    class Meta:
        table = "retail_calibration"


class ScalePlu(Model):
    """The PLU table version the platform sent a scale and the one the scale reports it holds."""

    scale_id = fields.CharField(primary_key=True, max_length=64)
    sent_version = fields.IntField(default=0)
    held_version = fields.IntField(default=0)
    sent_at = fields.DatetimeField(null=True)
    anti_cheat_ok = fields.BooleanField(default=True)

    class Meta:
        table = "retail_scale_plu"
