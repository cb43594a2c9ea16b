"""What a transport hands to the ingest pipeline, and what the pipeline answers.

Transports authenticate the sender and say which channel the bytes arrived on; they never parse payloads.
The pipeline decodes, validates, deduplicates, stores and answers with an `Ack` that the transport sends back
in its own way (MQTT `down/ack`, CoAP response body, HTTP response body). See docs/protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RejectReason = Literal[
    "malformed",
    "schema",
    "unknown_device",
    "oversized",
    "future_timestamp",
    "forbidden_topic",
    "bad_signature",
    "rate_limited",
]


@dataclass(frozen=True, slots=True)
class Uplink:
    transport: Literal["mqtt", "coap", "http", "serial"]
    device_id: str  # the authenticated identity, never taken from the payload
    channel: str  # "telemetry" | "event" | "state"; anything else is rejected
    body: bytes
    content_format: Literal["json", "cbor", "auto"] = "auto"
    topic: str = ""  # for dead letters: where it arrived


@dataclass(frozen=True, slots=True)
class Rejection:
    seq: int | None
    reason: RejectReason
    detail: str


@dataclass(slots=True)
class Ack:
    device_id: str
    seqs: list[int] = field(default_factory=list)  # stored now or before (duplicates are acknowledged too)
    high: int = -1  # highest seq the platform holds for the device
    rejected: list[Rejection] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "seqs": self.seqs,
            "high": self.high,
            "rejected": [{"seq": r.seq, "reason": r.reason, "detail": r.detail} for r in self.rejected],
        }
