"""What goes on the wire: message encoding, timestamps, acknowledgements and garbage (docs/protocol.md)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import cbor2

Encoding = Literal["json", "cbor"]

#: Wire limits of docs/protocol.md (the broker's default `MF_BROKER__MAX_PAYLOAD_BYTES` is 64 KiB).
MAX_UPLINK_BYTES = 64 * 1024
MAX_BATCH_MESSAGES = 500

#: China has one zone and no daylight saving; markets keep Beijing time.
CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

CONTENT_FORMAT = {"json": 50, "cbor": 60}


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-11-23T08:15:02.120Z`: RFC 3339, UTC, millisecond precision."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_iso(moment: datetime) -> str:
    """Market-local time with its offset (`2026-11-23T16:15:02+08:00`), as scales print it."""
    return moment.astimezone(CHINA_TZ).isoformat(timespec="seconds")


def parse_ts(value: str | int | float) -> datetime:
    """A message `ts` back as an aware datetime (RFC 3339 string or epoch milliseconds)."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def encode(body: Any, encoding: Encoding = "json") -> bytes:
    """One message or an array of messages as JSON (UTF-8, compact) or CBOR."""
    if encoding == "cbor":
        return cbor2.dumps(body)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def encode_messages(messages: Sequence[Mapping[str, Any]], encoding: Encoding = "json") -> bytes:
    """A single message as an object, several as an array (both allowed by the protocol)."""
    body: Any = dict(messages[0]) if len(messages) == 1 else [dict(m) for m in messages]
    return encode(body, encoding)


def decode(data: bytes, content_format: int | None = None) -> Any:
    """JSON or CBOR (by CoAP content format when known, else JSON first)."""
    if content_format == CONTENT_FORMAT["cbor"]:
        return cbor2.loads(data)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        if content_format == CONTENT_FORMAT["json"]:
            raise
        return cbor2.loads(data)


def garbage(rng: random.Random, size: int = 64) -> bytes:
    """Bytes that are neither JSON nor CBOR nor UTF-8.

    0xFF first: an invalid UTF-8 start byte (so not JSON) and CBOR's lone 'break' code (so not CBOR).
    """
    return b"\xff" + bytes(rng.getrandbits(8) for _ in range(max(0, size - 1)))


@dataclass(frozen=True, slots=True)
class Rejected:
    seq: int | None
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """A decoded acknowledgement: `{"seqs": [...], "high": n, "rejected": [{"seq", "reason", "detail"}]}`."""

    seqs: tuple[int, ...] = ()
    high: int | None = None
    rejected: tuple[Rejected, ...] = field(default_factory=tuple)

    @property
    def done(self) -> set[int]:
        """Every seq the device may drop from its outbox: stored, or rejected for good."""
        return set(self.seqs) | {r.seq for r in self.rejected if r.seq is not None}

    @classmethod
    def parse(cls, body: Any) -> Ack:
        """From the decoded JSON/CBOR body; tolerant of missing keys, strict about types."""
        if isinstance(body, bytes | bytearray):
            body = decode(bytes(body))
        if not isinstance(body, Mapping):
            raise ValueError(f"an acknowledgement is an object, got {type(body).__name__}")
        seqs = tuple(int(s) for s in body.get("seqs") or ())
        high = body.get("high")
        rejected = tuple(
            Rejected(
                None if r.get("seq") is None else int(r["seq"]),
                str(r.get("reason", "")),
                str(r.get("detail", "")),
            )
            for r in body.get("rejected") or ()
            if isinstance(r, Mapping)
        )
        return cls(seqs, None if high is None else int(high), rejected)

    def to_json(self) -> dict[str, Any]:
        return {
            "seqs": list(self.seqs),
            "high": -1 if self.high is None else self.high,
            "rejected": [{"seq": r.seq, "reason": r.reason, "detail": r.detail} for r in self.rejected],
        }


def batches(
    items: Iterable[Any],
    *,
    channel_of: Any,
    size_of: Any,
    max_messages: int = 50,
    max_bytes: int = MAX_UPLINK_BYTES - 1024,
) -> list[list[Any]]:
    """Split `items` (in order) into runs of the same channel, each within the message and byte limits."""
    out: list[list[Any]] = []
    current: list[Any] = []
    current_channel: str | None = None
    current_bytes = 0
    for item in items:
        channel = channel_of(item)
        size = size_of(item) + 1
        if current and (
            channel != current_channel or len(current) >= max_messages or current_bytes + size > max_bytes
        ):
            out.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_channel = channel
        current_bytes += size
    if current:
        out.append(current)
    return out
