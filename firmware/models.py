"""Firmware tables in the registry database: images, campaigns and their waves, per-device jobs and the
history of every job's transitions. The orchestrator keeps all of its state here, so it survives a restart."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from firmware.states import CampaignState, FailureKind, JobOp, JobState


class FirmwareImage(Model):
    id = fields.IntField(primary_key=True)
    model = fields.ForeignKeyField("models.DeviceModel", related_name="firmware_images", on_delete=fields.RESTRICT)
    version = fields.CharField(max_length=64)
    release_notes = fields.TextField(default="")
    sha256 = fields.CharField(max_length=64, db_index=True)
    size = fields.BigIntField()
    signature = fields.CharField(max_length=128)  # base64 Ed25519 over the digest (firmware/verify.py)
    key_id = fields.CharField(max_length=32)  # which platform key signed it
    blob_key = fields.CharField(max_length=200)
    compatible_model_ids = fields.JSONField(default=list)  # always includes model_id
    from_versions = fields.CharField(max_length=200, default="*")  # semver range a device must be on
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "firmware_image"
        unique_together = (("model", "version"),)


class Campaign(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    image = fields.ForeignKeyField("firmware.FirmwareImage", related_name="campaigns", on_delete=fields.RESTRICT)
    op = fields.CharEnumField(JobOp, max_length=16, default=JobOp.INSTALL)
    rollback_of = fields.ForeignKeyField(
        "firmware.Campaign", related_name="rollbacks", null=True, on_delete=fields.SET_NULL
    )
    state = fields.CharEnumField(CampaignState, max_length=16, db_index=True)
    state_reason = fields.TextField(default="")
    target = fields.JSONField(default=dict)
    waves = fields.JSONField(default=list)  # list of WaveSpec
    abort_rules = fields.JSONField(default=list)
    device_timeout_s = fields.IntField(default=1800)
    max_attempts = fields.IntField(default=3)
    retry_backoff_s = fields.FloatField(default=60)
    retry_backoff_max_s = fields.FloatField(default=3600)
    maintenance_window = fields.CharField(max_length=16, default="")
    dynamic_enrolment = fields.BooleanField(default=False)
    current_wave = fields.IntField(default=0)
    excluded = fields.JSONField(default=dict)  # devices the target matched but that cannot take it, by reason
    created_at = fields.DatetimeField(auto_now_add=True)
    start_at = fields.DatetimeField(null=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "firmware_campaign"


class CampaignWave(Model):
    id = fields.IntField(primary_key=True)
    campaign = fields.ForeignKeyField("firmware.Campaign", related_name="wave_rows", on_delete=fields.CASCADE)
    index = fields.IntField()
    planned = fields.IntField(default=0)  # devices at planning; dynamic enrolment grows the last wave
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "firmware_campaign_wave"
        unique_together = (("campaign", "index"),)


class DeviceJob(Model):
    """One device's update within a campaign. On the wire it is `<id>.<attempts>`, so a report from an
    earlier attempt (a device that woke up late) is recognised and ignored."""

    id = fields.IntField(primary_key=True)
    campaign = fields.ForeignKeyField("firmware.Campaign", related_name="jobs", on_delete=fields.CASCADE)
    device = fields.ForeignKeyField("models.Device", related_name="firmware_jobs", on_delete=fields.CASCADE)
    relay_device_id = fields.CharField(max_length=64, null=True)  # the ESL base station that relays it
    wave = fields.IntField(default=0)
    op = fields.CharEnumField(JobOp, max_length=16, default=JobOp.INSTALL)
    state = fields.CharEnumField(JobState, max_length=16, default=JobState.PENDING)
    failure = fields.CharEnumField(FailureKind, max_length=16, null=True)
    progress = fields.SmallIntField(default=0)
    reason = fields.CharField(max_length=200, default="")
    attempts = fields.IntField(default=0)  # announcements so far
    from_version = fields.CharField(max_length=64, default="")  # what the device ran when the job began
    to_version = fields.CharField(max_length=64, default="")  # what it runs after success (recorded on the device)
    next_attempt_at = fields.DatetimeField(null=True)  # back-off: not announced before this
    announced_at = fields.DatetimeField(null=True)  # null while queued
    deadline_at = fields.DatetimeField(null=True, db_index=True)
    finished_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "firmware_device_job"
        unique_together = (("campaign", "device"),)
        indexes = (("campaign_id", "state"), ("device_id", "state"))


class JobTransition(Model):
    """Every state change of a job, with the reason: the per-device update history."""

    id = fields.BigIntField(primary_key=True)
    job = fields.ForeignKeyField("firmware.DeviceJob", related_name="transitions", on_delete=fields.CASCADE)
    at = fields.DatetimeField()
    from_state = fields.CharEnumField(JobState, max_length=16)
    to_state = fields.CharEnumField(JobState, max_length=16)
    attempt = fields.IntField(default=0)
    progress = fields.SmallIntField(default=0)
    reason = fields.CharField(max_length=200, default="")
    actor = fields.CharField(max_length=64, default="")  # reporting device id, or "platform"

    class Meta:
        table = "firmware_job_transition"
