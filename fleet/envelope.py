"""The envelope: the one shape every uplink takes, whatever transport carried it.

`device_id, kind, channel, ts, seq, payload`. The transport fills `device_id` and `kind` from the
authenticated identity (never from the payload), the device supplies `seq`, `ts` and `payload`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet.kinds import Channel, DeviceKind


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    device_id: str = Field(min_length=1, max_length=64)
    kind: DeviceKind
    market: str | None = None
    channel: Channel
    ts: datetime
    seq: int = Field(ge=0, le=2**63 - 1)
    payload: dict[str, Any]
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    transport: str = "mqtt"


class DeviceMessage(BaseModel):
    """What a device puts on the wire (JSON or CBOR) for one uplink."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0, le=2**63 - 1)
    ts: datetime | None = None  # device clock; the platform's receive time when absent
    payload: dict[str, Any]
