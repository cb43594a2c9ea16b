"""The compliance app's tables: the floor-plan facts of a market that the scorecard needs.

Tortoise app "compliance" (migrations in compliance/migrations); markets are the fleet app's ("models.Market").
A layout is replaced as a whole by `PUT …/layout`, so entrances and zones have no identity of their own beyond
their position in the list.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from compliance.schemas import ZoneKind


class MarketLayout(Model):
    """Floor area and stall count of one market, as declared by the market manager."""

    id = fields.IntField(primary_key=True)
    market: fields.OneToOneRelation = fields.OneToOneField(
        "models.Market", related_name="compliance_layout", on_delete=fields.CASCADE
    )
    floor_area_m2 = fields.FloatField()
    stall_count = fields.IntField(null=True)  # None: count the stalls registered in the fleet registry
    updated_at = fields.DatetimeField(auto_now=True)

    entrances: fields.ReverseRelation[Entrance]
    zones: fields.ReverseRelation[Zone]

    class Meta:
        table = "compliance_market_layout"


class Entrance(Model):
    """A public entrance of the market (SZ 6.9.1 asks one flow counter at each)."""

    id = fields.IntField(primary_key=True)
    layout: fields.ForeignKeyRelation[MarketLayout] = fields.ForeignKeyField(
        "compliance.MarketLayout", related_name="entrances", on_delete=fields.CASCADE
    )
    position = fields.IntField()
    name = fields.CharField(max_length=64)

    class Meta:
        table = "compliance_entrance"
        unique_together = (("layout", "name"),)


class Zone(Model):
    """A trading or service area of the market with its area (SZ 5.1.3 layout, 6.8.2 a monitored areas)."""

    id = fields.IntField(primary_key=True)
    layout: fields.ForeignKeyRelation[MarketLayout] = fields.ForeignKeyField(
        "compliance.MarketLayout", related_name="zones", on_delete=fields.CASCADE
    )
    position = fields.IntField()
    kind = fields.CharEnumField(ZoneKind, max_length=32)
    name = fields.CharField(max_length=100, default="")
    area_m2 = fields.FloatField()

    class Meta:
        table = "compliance_zone"
