"""The upstream outbox: one row per record per target, delivered in id order."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class UpstreamRecord(Model):
    """A record waiting for (or sent to) one supervision platform. Rows are delivered strictly in id order per
    target, and kept after delivery as the proof of what was reported and when."""

    id = fields.BigIntField(primary_key=True)
    target = fields.CharField(max_length=32)
    data_class = fields.CharField(max_length=32)
    market = fields.CharField(max_length=32, null=True)
    body = fields.JSONField()
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)
    failed_at = fields.DatetimeField(null=True)  # refused for good (4xx): kept with the reason, skipped
    attempts = fields.IntField(default=0)
    last_error = fields.CharField(max_length=500, default="")

    class Meta:
        table = "upstream_record"
        indexes = (("target", "delivered_at", "failed_at", "id"),)
