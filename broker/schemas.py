"""API shapes of the ingest side: dead letters, presence, ingest metrics (api/routes/broker_admin.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class DeadLetterPublic(BaseModel):
    id: int
    received_at: datetime
    transport: str
    device_id: str | None = Field(description="the authenticated sender; null when it could not be identified")
    topic: str = Field(description="MQTT topic, CoAP path or HTTP path it arrived on")
    reason: str = Field(description="malformed, schema, unknown_device, oversized, future_timestamp, "
                                    "forbidden_topic, bad_signature, rate_limited")
    detail: str
    payload_text: str | None = Field(description="the first bytes as text (invalid UTF-8 replaced); null if none")
    payload_bytes: int = Field(description="how many bytes were kept (at most 1,024)")


class DeadLetterPage(BaseModel):
    total: int
    items: list[DeadLetterPublic]


class ReasonCount(BaseModel):
    reason: str
    count: int


class DeadLetterSummary(BaseModel):
    since: datetime | None
    total: int
    by_reason: list[ReasonCount]


class PresenceRow(BaseModel):
    device_id: str
    kind: str
    market: str | None
    online: bool
    last_seen: datetime | None


class PresencePage(BaseModel):
    online: int = Field(description="devices online among those matching the filter")
    total: int
    items: list[PresenceRow]


class IngestMetrics(BaseModel):
    mode: str = Field(description="embedded or external")
    ingest: dict[str, Any] = Field(description="uplinks, accepted, duplicates, readings, batches, rejected…")
    dead_letters: dict[str, int] = Field(description="dead letters in the database by reason (all time)")
    presence: dict[str, int] = Field(description="online devices now, and state changes since start")
    broker: dict[str, Any] | None = Field(default=None, description="embedded broker: sessions, subscriptions…")
    workers: dict[str, Any] | None = Field(default=None, description="external mode: per ingest worker")
    bus_dropped: dict[str, int] = Field(default_factory=dict, description="events a slow subscriber lost")
    telemetry_spool: dict[str, Any] | None = Field(
        default=None, description="InfluxDB write spool of this process: bytes, max_bytes, fill_percent, batches, "
        "refused (writes refused while full), refusing, spooling, disk_full (the disk under it has no space left); "
        "absent for SQLite telemetry")


class EmqxAuthRequest(BaseModel):
    username: str = Field(default="", max_length=128)
    password: str = Field(default="", max_length=256)
    clientid: str = Field(default="", max_length=128)


class EmqxAclRequest(BaseModel):
    username: str = Field(default="", max_length=128)
    topic: str = Field(max_length=1024)
    action: Literal["publish", "subscribe"]


class EmqxResult(BaseModel):
    result: Literal["allow", "deny"]
    is_superuser: bool = False
