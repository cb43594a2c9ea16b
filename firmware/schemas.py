"""What goes in and out of the firmware package: uploads, campaign definitions, progress, job announcements.

The announcement models are also the device contract for `down/ota` (docs/ota.md); device-side code may parse
a downlink with `ANNOUNCEMENT.validate_python(payload)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from firmware.semver import InvalidRange, InvalidVersion, Version, VersionRange
from firmware.states import CampaignState, FailureKind, JobOp, JobState
from firmware.windows import InvalidWindow, MaintenanceWindow
from fleet.kinds import OtaStatus

__all__ = ["OtaStatus"]  # re-exported: the status event devices send is defined with the kinds (fleet/kinds.py)

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ---------------------------------------------------------------- images


class ImageUpload(Strict):
    """The form fields of an upload; the file travels beside them."""

    model: str = Field(min_length=1, max_length=100, description="name of one of the vendor's device models")
    version: str = Field(min_length=5, max_length=64, description="semantic version, e.g. 1.4.2")
    release_notes: str = Field(default="", max_length=20_000)
    compatible_models: list[str] = Field(
        default_factory=list, max_length=100, description="further models (names) that may take this image"
    )
    from_versions: str = Field(default="*", max_length=200, description="semver range a device must be on")
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN, description="checked against the upload")
    signature: str | None = Field(
        default=None, max_length=200, description="Ed25519 signature made offline with the platform key"
    )

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        try:
            Version.parse(value)
        except InvalidVersion as err:
            raise ValueError(str(err)) from err
        return value

    @field_validator("from_versions")
    @classmethod
    def _range(cls, value: str) -> str:
        try:
            return str(VersionRange.parse(value))
        except InvalidRange as err:
            raise ValueError(str(err)) from err


class ImagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    model_id: int
    version: str
    release_notes: str
    sha256: str
    size: int
    signature: str
    key_id: str
    compatible_model_ids: list[int]
    from_versions: str
    created_at: datetime


class SigningKeyPublic(BaseModel):
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    public_key: str = Field(description="base64 of the 32-byte Ed25519 public key devices are provisioned with")


# ---------------------------------------------------------------- campaigns


class ConstantRate(Strict):
    kind: Literal["constant"] = "constant"
    per_minute: float = Field(gt=0, le=1_000_000)


class ExponentialRate(Strict):
    """Start slow and speed up as devices succeed (AWS IoT Jobs' exponential rollout)."""

    kind: Literal["exponential"]
    base_per_minute: float = Field(gt=0, le=1_000_000)
    increment_factor: float = Field(default=2.0, gt=1, le=10)
    every_succeeded: int = Field(default=10, ge=1, description="multiply the rate each time this many succeed")
    max_per_minute: float = Field(default=100_000, gt=0, le=1_000_000)


RateLimit = Annotated[ConstantRate | ExponentialRate, Field(discriminator="kind")]


class WaveSpec(Strict):
    """One wave: a share of the target (percent or count; the last wave takes whatever is left)."""

    name: str = Field(default="", max_length=64)
    percent: float | None = Field(default=None, gt=0, le=100)
    count: int | None = Field(default=None, ge=1)
    success_threshold_pct: float = Field(
        default=95, ge=0, le=100, description="share of the wave that must succeed before the next wave starts"
    )
    rate: RateLimit | None = Field(default=None, description="announcements per minute; none: as fast as possible")
    max_in_flight: int | None = Field(default=None, ge=1, description="devices updating at once")

    @model_validator(mode="after")
    def _one_size(self) -> WaveSpec:
        if self.percent is not None and self.count is not None:
            raise ValueError("give a wave either percent or count, not both")
        return self


def default_waves() -> list[WaveSpec]:
    return [
        WaveSpec(name="canary", percent=1, success_threshold_pct=100),
        WaveSpec(name="early", percent=10, success_threshold_pct=95),
        WaveSpec(name="rest"),
    ]


class AbortRule(Strict):
    """Abort when more than `above_pct` of the executed devices ended in `failure`, once `min_executed` ran."""

    failure: Literal["failed", "rejected", "timed_out", "any"] = "any"
    above_pct: float = Field(ge=0, le=100)
    min_executed: int = Field(default=10, ge=1)


class Target(Strict):
    """Which devices: every given criterion must hold (models, markets, labels, explicit ids)."""

    models: list[int] = Field(default_factory=list, description="device model ids; default: the image's models")
    markets: list[str] = Field(default_factory=list, max_length=1000)
    labels: dict[str, str] = Field(default_factory=dict, description="all of these labels (key: value)")
    device_ids: list[str] = Field(default_factory=list, max_length=100_000)


class CampaignCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    image_id: int
    target: Target = Field(default_factory=Target)
    waves: list[WaveSpec] = Field(default_factory=default_waves, min_length=1, max_length=20)
    abort_rules: list[AbortRule] = Field(
        default_factory=lambda: [AbortRule(failure="any", above_pct=20, min_executed=10)], max_length=10
    )
    device_timeout_s: int = Field(default=1800, ge=1, le=7 * 86400, description="from announcement to result")
    max_attempts: int = Field(default=3, ge=1, le=20, description="tries per device for failures and timeouts")
    retry_backoff_s: float = Field(default=60, ge=0, le=86400)
    retry_backoff_max_s: float = Field(default=3600, ge=0, le=7 * 86400)
    maintenance_window: str | None = Field(default=None, description="HH:MM-HH:MM in each device's market time")
    dynamic_enrolment: bool = Field(default=False, description="devices that match later join the last wave")
    start_at: datetime | None = None

    @field_validator("maintenance_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return str(MaintenanceWindow.parse(value))
        except InvalidWindow as err:
            raise ValueError(str(err)) from err


class StateCounts(BaseModel):
    pending: int = 0
    downloading: int = 0
    verifying: int = 0
    installing: int = 0
    rebooting: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class FailureCounts(BaseModel):
    failed: int = 0
    rejected: int = 0
    timed_out: int = 0


class WaveProgress(BaseModel):
    index: int
    name: str
    planned: int
    size: int
    state: Literal["waiting", "running", "done"]
    counts: StateCounts
    failures: FailureCounts
    succeeded_pct: float
    failed_pct: float
    done_pct: float
    success_threshold_pct: float
    rate_per_minute: float | None
    eta_s: float | None
    started_at: datetime | None
    finished_at: datetime | None


class CampaignPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    image_id: int
    op: JobOp
    rollback_of_id: int | None
    state: CampaignState
    state_reason: str
    target: dict[str, Any]
    waves: list[dict[str, Any]]
    abort_rules: list[dict[str, Any]]
    device_timeout_s: int
    max_attempts: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    maintenance_window: str
    dynamic_enrolment: bool
    current_wave: int
    excluded: dict[str, int]
    created_at: datetime
    start_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class CampaignProgress(CampaignPublic):
    total: int
    counts: StateCounts
    failures: FailureCounts
    succeeded_pct: float
    failed_pct: float
    done_pct: float
    eta_s: float | None
    wave_progress: list[WaveProgress]


class RollbackResult(BaseModel):
    campaign: CampaignPublic
    devices: int = Field(description="devices with an A/B slot that will switch back")
    skipped_without_ab_slot: int


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    device_id: str
    relay_device_id: str | None
    wave: int
    op: JobOp
    state: JobState
    failure: FailureKind | None
    progress: int
    reason: str
    attempts: int
    from_version: str
    announced_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobTransitionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    at: datetime
    from_state: JobState
    to_state: JobState
    attempt: int
    progress: int
    reason: str
    actor: str


# ---------------------------------------------------------------- announcements (down/ota)


class ImageRef(BaseModel):
    image_id: int
    version: str
    size: int
    sha256: str
    signature: str
    key_id: str
    url: str = Field(description="HTTP(S) download; Range requests resume, auth 'Bearer <device_id>:<secret>'")
    coap_url: str = Field(description="CoAP Block2 download of the same bytes")


class InstallAnnouncement(BaseModel):
    op: Literal["install"] = "install"
    job_id: str
    campaign_id: int
    image: ImageRef
    deadline: datetime


class RelayedLabel(BaseModel):
    label_id: str
    job_id: str


class RelayAnnouncement(BaseModel):
    """To an ESL base station: fetch the image once, flash it to each listed label, report each label's job."""

    op: Literal["relay_install"] = "relay_install"
    campaign_id: int
    image: ImageRef
    labels: list[RelayedLabel]
    deadline: datetime


class RollbackAnnouncement(BaseModel):
    op: Literal["rollback"] = "rollback"
    job_id: str
    campaign_id: int
    to_version: str
    deadline: datetime


class CancelAnnouncement(BaseModel):
    """Abandon a job that has not started installing; a job already installing finishes and reports."""

    op: Literal["cancel"] = "cancel"
    job_id: str


Announcement = Annotated[
    InstallAnnouncement | RelayAnnouncement | RollbackAnnouncement | CancelAnnouncement, Field(discriminator="op")
]
ANNOUNCEMENT: TypeAdapter[Any] = TypeAdapter(Announcement)
