"""What goes in and out of the rules API: alerts, their history, removal tasks, recipients, dry-run results.

The rule definition itself is `rules.language.Rule`; this module holds the other resources' shapes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.kinds import DeviceKind
from rules.language import Category, RecipientRole, Severity
from rules.models import Alert

__all__ = [
    "AlertDetail",
    "AlertEventPublic",
    "AlertFilter",
    "AlertPublic",
    "AssignBody",
    "CloseTaskBody",
    "CommentBody",
    "DryRunFiring",
    "DryRunResult",
    "EmailChannel",
    "MqttChannel",
    "Preferences",
    "QuietHours",
    "RecipientChannel",
    "RecipientCreate",
    "RecipientPublic",
    "RemovalTaskPublic",
    "SseChannel",
    "WebhookChannel",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- alerts


class AlertPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    rule_id: str
    rule_name: str
    category: str
    severity: str
    status: str
    device_id: str | None
    element: str
    market: str | None
    kind: str
    message: str
    value: Any = None
    last_value: Any = None
    occurrences: int
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    assigned_to: str | None = None
    escalation_level: int = 0
    context: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        if isinstance(data, Alert):  # values are stored as JSON text
            row = {name: getattr(data, name) for name in AlertPublic.model_fields}
            for name in ("value", "last_value"):
                row[name] = json.loads(row[name]) if row[name] is not None else None
            return row
        return data


class AlertEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    action: str
    actor: str
    comment: str
    data: Any = None


class AlertDetail(AlertPublic):
    events: list[AlertEventPublic] = []


class AlertFilter(_Strict):
    status: Literal["open", "acknowledged", "resolved", "active"] | None = None  # active: open or acknowledged
    severity: Severity | None = None
    market: str | None = None
    rule_id: str | None = None
    device_id: str | None = None
    category: Category | None = None
    assigned_to: str | None = None
    since: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class CommentBody(_Strict):
    comment: str = Field(default="", max_length=4000)


class AssignBody(_Strict):
    assignee: str = Field(min_length=1, max_length=100)  # a person's user id (free text until accounts link)
    comment: str = Field(default="", max_length=4000)


class RemovalTaskPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    alert_id: int | None
    result_id: str
    device_id: str
    market: str | None
    stall_no: str | None
    sample_name: str
    item: str
    value: float
    unit: str
    limit: float | None
    tested_at: datetime | None
    status: str
    opened_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    action_taken: str


class CloseTaskBody(_Strict):
    action_taken: str = Field(min_length=1, max_length=4000)  # what was done with the product
    comment: str = Field(default="", max_length=4000)


# ---------------------------------------------------------------- recipients

KEEP_SECRET = "***"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class SseChannel(_Strict):
    type: Literal["sse"]


class MqttChannel(_Strict):
    type: Literal["mqtt"]  # the platform publishes on mf/v1/{market}/alerts/{severity}


class WebhookChannel(_Strict):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://", max_length=500)
    # HMAC-SHA256 key for the signature header; "***" (as the API shows it) in an update keeps the stored one.
    secret: str = Field(max_length=200)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value != KEEP_SECRET and len(value) < 16:
            raise ValueError("a webhook secret needs at least 16 characters")
        return value


class EmailChannel(_Strict):
    type: Literal["email"]
    address: str = Field(max_length=200)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value


RecipientChannel = Annotated[SseChannel | MqttChannel | WebhookChannel | EmailChannel, Field(discriminator="type")]


class QuietHours(_Strict):
    """Local time window (may cross midnight) when non-critical notifications wait; critical ones go at once."""

    start: str
    end: str
    timezone: str | None = None  # the platform's market timezone when absent

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day like '22:00'")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise ValueError(f"unknown timezone {value!r}") from err
        return value


class Preferences(_Strict):
    """What a person wants, inside what the role allows; empty lists mean no narrowing."""

    severities: list[Severity] = []
    kinds: list[DeviceKind] = []
    markets: list[str] = []
    categories: list[Category] = []
    quiet_hours: QuietHours | None = None


class RecipientCreate(_Strict):
    name: str = Field(min_length=1, max_length=100)
    role: RecipientRole
    user_id: str | None = Field(default=None, max_length=100)
    markets: list[str] = []  # a manager must name markets; empty for admins / city-wide maintainers = all
    channels: list[RecipientChannel] = Field(min_length=1)
    preferences: Preferences = Preferences()
    active: bool = True

    @model_validator(mode="after")
    def _inside_role(self) -> RecipientCreate:
        if self.role == "manager" and not self.markets:
            raise ValueError("markets: a manager receives alerts of their own markets; name at least one")
        if self.markets:
            outside = sorted(set(self.preferences.markets) - set(self.markets))
            if outside:
                raise ValueError(f"preferences.markets: {', '.join(outside)} outside the recipient's markets")
        if self.role == "maintainer":
            from rules.routing import ROLE_CATEGORIES  # the one table of what each role may receive

            outside = sorted(set(self.preferences.categories) - ROLE_CATEGORIES["maintainer"])
            if outside:
                raise ValueError(f"preferences.categories: a maintainer does not receive {', '.join(outside)}")
        return self


class MyNotifications(_Strict):
    """What a person sets for themselves: where and what. Their role and markets come from their account, so
    the settings can narrow what the role allows but never widen it."""

    channels: list[RecipientChannel] = Field(min_length=1)
    preferences: Preferences = Preferences()
    active: bool = True


class RecipientPublic(BaseModel):
    id: int
    name: str
    role: str
    user_id: str | None
    markets: list[str]
    channels: list[dict[str, Any]]  # webhook secrets shown as "***"
    preferences: dict[str, Any]
    active: bool
    created_at: datetime


# ---------------------------------------------------------------- dry-run


class DryRunFiring(BaseModel):
    device_id: str
    element: str
    opened_at: datetime
    resolved_at: datetime | None = None
    value: Any = None
    message: str


class DryRunResult(BaseModel):
    rule_id: str
    start: datetime | None
    end: datetime | None
    envelopes: int
    fired: int  # alerts that would have opened
    resolved: int
    occurrences: int  # every reading/event that matched while an alert was open, opening ones included
    by_device: dict[str, int]
    firings: list[DryRunFiring]  # the first ones, at most `sample`
