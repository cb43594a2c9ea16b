"""rules tables in the registry database: rule definitions, engine state, alerts and their handling archive,
removal tasks, recipients, the notification outbox, and scheduled-job run records.

Alerts, events and removal tasks name devices, markets and stalls by their codes rather than by foreign key:
they are the handling archive (BJ 5.3.6, HZ 7.3.2.1) and must outlive a device that is retired and deleted,
and an owner-level alarm (metrology, per stall) has no single device.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class TaskStatus(StrEnum):
    OPEN = "open"
    ARCHIVED = "archived"  # closed, with who and what was done


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up (permanent refusal, or too many attempts)


class RuleRecord(Model):
    """One rule as data: the validated definition (rules/language.py) and where it came from."""

    id = fields.CharField(primary_key=True, max_length=64)
    definition = fields.JSONField()
    enabled = fields.BooleanField(default=True)
    source = fields.CharField(max_length=100, default="api")  # "api", "builtin", "pack:<file name>"
    version = fields.IntField(default=1)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "rule_definition"


class RuleState(Model):
    """Engine state that must survive a restart: a key's phase and timers, a rate's last reading, a baseline."""

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=400, unique=True)  # slot, rule, device, element joined by \x1f
    rule_id = fields.CharField(max_length=64, db_index=True)
    data = fields.JSONField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "rule_state"


class Alert(Model):
    """One alert, at most one open per (rule, device, element), enforced by the unique `open_key`."""

    id = fields.BigIntField(primary_key=True)
    rule_id = fields.CharField(max_length=64, db_index=True)
    rule_name = fields.CharField(max_length=200)
    category = fields.CharField(max_length=32, default="device")
    severity = fields.CharField(max_length=16, db_index=True)
    status = fields.CharEnumField(AlertStatus, max_length=16, default=AlertStatus.OPEN, db_index=True)
    # Set while open or acknowledged, NULL once resolved: NULLs never collide, so the unique index allows
    # any number of resolved alerts but one live alert per key, on SQLite and PostgreSQL alike.
    open_key = fields.CharField(max_length=300, null=True, unique=True)
    device_id = fields.CharField(max_length=64, null=True, db_index=True)
    element = fields.CharField(max_length=200, default="")
    market = fields.CharField(max_length=32, null=True, db_index=True)
    kind = fields.CharField(max_length=32, default="")
    message = fields.CharField(max_length=1000)
    # JSON text (a number, a string, a boolean): tortoise's JSONField takes a bare string for encoded JSON.
    value = fields.TextField(null=True)  # what opened it
    last_value = fields.TextField(null=True)
    occurrences = fields.IntField(default=1)
    context = fields.JSONField(default=dict)
    opened_at = fields.DatetimeField(db_index=True)
    last_seen_at = fields.DatetimeField()
    acknowledged_at = fields.DatetimeField(null=True)
    acknowledged_by = fields.CharField(max_length=100, null=True)
    resolved_at = fields.DatetimeField(null=True)
    resolved_by = fields.CharField(max_length=100, null=True)
    resolution = fields.CharField(max_length=16, null=True)  # "auto" or "manual"
    assigned_to = fields.CharField(max_length=100, null=True, db_index=True)
    escalation_level = fields.IntField(default=0)

    class Meta:
        table = "alert"


class AlertEvent(Model):
    """One step in an alert's handling (opened, acknowledged, assigned, commented, escalated, resolved)."""

    id = fields.BigIntField(primary_key=True)
    alert: fields.ForeignKeyRelation[Alert] = fields.ForeignKeyField(
        "rules.Alert", related_name="events", on_delete=fields.CASCADE
    )
    at = fields.DatetimeField(db_index=True)
    action = fields.CharField(max_length=32)
    actor = fields.CharField(max_length=100)
    comment = fields.TextField(default="")
    data = fields.JSONField(null=True)

    class Meta:
        table = "alert_event"


class RemovalTask(Model):
    """A failed food-safety test: take the product off the stall and record it (BJ 6.1.1.8, 5.3.6)."""

    id = fields.BigIntField(primary_key=True)
    alert: fields.ForeignKeyNullableRelation[Alert] = fields.ForeignKeyField(
        "rules.Alert", related_name="removal_tasks", null=True, on_delete=fields.SET_NULL
    )
    result_id = fields.CharField(max_length=150, unique=True)  # device id + the detector's result id
    device_id = fields.CharField(max_length=64)
    market = fields.CharField(max_length=32, null=True, db_index=True)
    stall_no = fields.CharField(max_length=32, null=True)
    sample_name = fields.CharField(max_length=100)
    item = fields.CharField(max_length=100)
    value = fields.FloatField()
    unit = fields.CharField(max_length=16, default="")
    limit = fields.FloatField(null=True)
    tested_at = fields.DatetimeField(null=True)
    status = fields.CharEnumField(TaskStatus, max_length=16, default=TaskStatus.OPEN, db_index=True)
    opened_at = fields.DatetimeField(auto_now_add=True)
    closed_at = fields.DatetimeField(null=True)
    closed_by = fields.CharField(max_length=100, null=True)
    action_taken = fields.TextField(default="")  # what was done: removed, destroyed, returned to supplier …

    class Meta:
        table = "removal_task"


class Recipient(Model):
    """Someone alerts are routed to: a role, markets, channels, and personal preferences."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)
    role = fields.CharField(max_length=16)  # admin | maintainer | manager
    user_id = fields.CharField(max_length=100, null=True)  # free text until it links to accounts
    markets = fields.JSONField(default=list)
    channels = fields.JSONField(default=list)  # [{type: webhook, url, secret}, {type: email, address} …]
    preferences = fields.JSONField(default=dict)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "alert_recipient"


class Delivery(Model):
    """The durable outbox: one notification to one target, retried with back-off until it is taken."""

    id = fields.BigIntField(primary_key=True)
    alert_id = fields.BigIntField(null=True, db_index=True)
    recipient_id = fields.IntField(null=True)
    event = fields.CharField(max_length=32)  # "opened", "escalated", "acknowledged", "resolved"
    channel = fields.CharField(max_length=16)  # "webhook", "email", "mqtt"
    target = fields.CharField(max_length=500)  # URL, address or topic
    body = fields.JSONField()
    status = fields.CharEnumField(DeliveryStatus, max_length=16, default=DeliveryStatus.PENDING, db_index=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(db_index=True)
    last_error = fields.CharField(max_length=500, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "alert_delivery"


class JobRun(Model):
    """One run of a scheduled check, unique per (job, scheduled time) so a run is never done twice."""

    id = fields.BigIntField(primary_key=True)
    job = fields.CharField(max_length=64)
    scheduled_for = fields.DatetimeField()
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=16, default="running")  # running | ok | error
    manual = fields.BooleanField(default=False)  # run by hand (API), off the schedule: not a grid point
    detail = fields.TextField(default="")

    class Meta:
        table = "rule_job_run"
        unique_together = (("job", "scheduled_for"),)
