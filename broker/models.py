"""Rows the transports keep in the registry database: dead letters and per-device ingest progress."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class DeadLetter(Model):
    """An uplink that could not be accepted, kept with the reason so a vendor can fix the device."""

    id = fields.BigIntField(primary_key=True)
    received_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    transport = fields.CharField(max_length=16)
    device_id = fields.CharField(max_length=64, null=True, db_index=True)
    topic = fields.CharField(max_length=255, default="")
    reason = fields.CharField(max_length=64, db_index=True)  # machine-readable class, e.g. "schema"
    detail = fields.TextField(default="")
    payload = fields.BinaryField(null=True)  # first bytes of what arrived, for debugging

    class Meta:
        table = "dead_letter"


class IngestCursor(Model):
    """Highest sequence number durably stored per device and channel: the dedupe and ack watermark."""

    device_id = fields.CharField(max_length=64)
    channel = fields.CharField(max_length=16)
    last_seq = fields.BigIntField(default=-1)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "ingest_cursor"
        unique_together = (("device_id", "channel"),)
