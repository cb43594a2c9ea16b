"""The fleet registry's tables: markets, stalls, vendors, device models, devices, credentials, metrology."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from fleet.kinds import DeviceKind


class DeviceStatus(StrEnum):
    """Administrative state; online/offline presence is kept apart in `Device.online`."""

    ACTIVE = "active"
    DISABLED = "disabled"
    RETIRED = "retired"


class Market(Model):
    code = fields.CharField(primary_key=True, max_length=32)  # the market's code as the city registers it
    name = fields.CharField(max_length=200)
    district = fields.CharField(max_length=100, default="")
    timezone = fields.CharField(max_length=64, default="Asia/Shanghai")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "market"


class Stall(Model):
    id = fields.IntField(primary_key=True)
    market: fields.ForeignKeyRelation[Market] = fields.ForeignKeyField(
        "models.Market", related_name="stalls", on_delete=fields.CASCADE
    )
    number = fields.CharField(max_length=32)
    holder_name = fields.CharField(max_length=100, default="")  # the stall operator (经营户)
    category = fields.CharField(max_length=50, default="")

    class Meta:
        table = "stall"
        unique_together = (("market", "number"),)


class Vendor(Model):
    """A hardware vendor that onboards its devices through the registration API."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=200)
    contact = fields.CharField(max_length=200, default="")
    api_key_prefix = fields.CharField(max_length=16, unique=True)  # public lookup part of the key
    api_key_hash = fields.CharField(max_length=128)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "vendor"


class DeviceModel(Model):
    id = fields.IntField(primary_key=True)
    vendor: fields.ForeignKeyRelation[Vendor] = fields.ForeignKeyField(
        "models.Vendor", related_name="device_models", on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(DeviceKind, max_length=32)
    name = fields.CharField(max_length=100)
    firmware_line = fields.CharField(max_length=64, default="")
    specs = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "device_model"
        unique_together = (("vendor", "name"),)


class Device(Model):
    id = fields.CharField(primary_key=True, max_length=64)  # the id devices use on the wire (MQTT username, topics)
    serial = fields.CharField(max_length=64)  # the hardware serial: the device's identity for its vendor
    vendor: fields.ForeignKeyRelation[Vendor] = fields.ForeignKeyField(
        "models.Vendor", related_name="devices", on_delete=fields.RESTRICT
    )
    kind = fields.CharEnumField(DeviceKind, max_length=32, db_index=True)
    model: fields.ForeignKeyNullableRelation[DeviceModel] = fields.ForeignKeyField(
        "models.DeviceModel", related_name="devices", null=True, on_delete=fields.SET_NULL
    )
    market: fields.ForeignKeyNullableRelation[Market] = fields.ForeignKeyField(
        "models.Market", related_name="devices", null=True, on_delete=fields.SET_NULL
    )
    stall: fields.ForeignKeyNullableRelation[Stall] = fields.ForeignKeyField(
        "models.Stall", related_name="devices", null=True, on_delete=fields.SET_NULL
    )
    name = fields.CharField(max_length=200, default="")
    status = fields.CharEnumField(DeviceStatus, max_length=16, default=DeviceStatus.ACTIVE, db_index=True)
    online = fields.BooleanField(default=False, db_index=True)
    last_seen = fields.DatetimeField(null=True)
    firmware_version = fields.CharField(max_length=64, default="")
    keepalive_s = fields.IntField(default=60)
    labels = fields.JSONField(default=dict)
    metadata = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "device"
        unique_together = (("vendor", "serial"),)


class DeviceLabel(Model):
    """One label of a device as its own row, so fleets filter and campaigns target by label on any database."""

    id = fields.IntField(primary_key=True)
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="label_rows", on_delete=fields.CASCADE
    )
    key = fields.CharField(max_length=64)
    value = fields.CharField(max_length=200)

    class Meta:
        table = "device_label"
        unique_together = (("device", "key"),)
        indexes = (("key", "value"),)


class Credential(Model):
    """A device secret, stored only as a hash, at most one active per device."""

    id = fields.IntField(primary_key=True)
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="credentials", on_delete=fields.CASCADE
    )
    salt = fields.CharField(max_length=32)  # with the master key, re-derives the secret (fleet/secrets.py)
    secret_hash = fields.CharField(max_length=128)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "credential"


class MetrologyRecord(Model):
    """A scale's compulsory verification (SJZ table 4 items 7–8, 15): certificate and due date."""

    id = fields.IntField(primary_key=True)
    device: fields.ForeignKeyRelation[Device] = fields.ForeignKeyField(
        "models.Device", related_name="metrology_records", on_delete=fields.CASCADE
    )
    certificate_no = fields.CharField(max_length=64)
    verified_on = fields.DateField()
    due_on = fields.DateField(db_index=True)
    authority = fields.CharField(max_length=200, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "metrology_record"
