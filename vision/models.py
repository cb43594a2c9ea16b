"""vision tables in the registry database: cameras' analytics configuration, passenger flow per minute,
and vision events with their evidence and handling state.

Tortoise app "vision" (migrations in vision/migrations). Cameras are named by device id rather than by foreign
key: flow history and the handling archive (HZ 7.3.2.1) outlive a camera that is replaced.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class EventState(StrEnum):
    OPEN = "open"
    HANDLED = "handled"


class VisionCamera(Model):
    """A camera the vision worker watches: where its stream is and what to analyse."""

    device_id = fields.CharField(primary_key=True, max_length=100)
    market = fields.CharField(max_length=32, null=True)
    name = fields.CharField(max_length=200, default="")
    manufacturer = fields.CharField(max_length=100, default="")
    model = fields.CharField(max_length=100, default="")
    onvif_host = fields.CharField(max_length=255, default="")
    onvif_port = fields.IntField(default=80)
    profile = fields.CharField(max_length=64, default="")
    stream_uri = fields.CharField(max_length=1000)
    snapshot_uri = fields.CharField(max_length=1000, null=True)
    analytics = fields.JSONField(default=dict)
    enabled = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "vision_camera"


class FlowMinute(Model):
    """People crossing one entrance line during one minute, both directions (SZ 6.9)."""

    id = fields.BigIntField(primary_key=True)
    camera = fields.CharField(max_length=100)
    line = fields.CharField(max_length=64)
    minute = fields.DatetimeField()
    count_in = fields.IntField(default=0)
    count_out = fields.IntField(default=0)

    class Meta:
        table = "vision_flow_minute"
        unique_together = (("camera", "line", "minute"),)
        indexes = (("minute",),)


class VisionEvent(Model):
    """A crowd peak or violation seen by a camera, with its evidence image and how it was handled."""

    id = fields.BigIntField(primary_key=True)
    camera = fields.CharField(max_length=100, db_index=True)
    market = fields.CharField(max_length=32, null=True)
    category = fields.CharField(max_length=40)
    zone = fields.CharField(max_length=64, null=True)
    track_id = fields.IntField(null=True)
    count = fields.IntField(null=True)
    confidence = fields.FloatField()
    detail = fields.CharField(max_length=500, default="")
    evidence_path = fields.CharField(max_length=1000, null=True)
    state = fields.CharEnumField(EventState, default=EventState.OPEN)
    handled_by = fields.CharField(max_length=100, null=True)
    handled_at = fields.DatetimeField(null=True)
    note = fields.CharField(max_length=1000, default="")
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "vision_event"
