"""An in-process transport with a tiny platform behind it: for unit tests and dry runs without any server.

It encodes every uplink as the real transports do, then plays the platform's part of docs/protocol.md:
decodes, rejects future timestamps (`future_timestamp`, more than 5 minutes ahead) and invalid payloads
(`schema`, against the device kind), stores by seq (duplicates acknowledged again, stored once) and answers
with an acknowledgement. Garbage is recorded and never acknowledged (no seq to acknowledge).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from fleet.kinds import validate_payload
from simulators.transports.base import RequestTransport
from simulators.wire import Ack, decode, encode_messages, parse_ts, utcnow

FUTURE_LIMIT = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Uplink:
    channel: str
    data: bytes


class LoopbackTransport(RequestTransport):
    name = "loopback"

    def __init__(self, *, auto_ack: bool = True, validate: bool = True, ack_delay_s: float = 0.0) -> None:
        super().__init__(reconnect_min_s=0.05, reconnect_max_s=1.0)
        self.auto_ack = auto_ack
        self.validate = validate
        self.ack_delay_s = ack_delay_s
        self.uplinks: list[Uplink] = []
        self.raw: list[Uplink] = []
        self.stored: dict[int, dict[str, Any]] = {}  # seq → message, as a platform would keep it
        self.stored_channels: dict[int, str] = {}
        self.rejected: dict[int, str] = {}  # seq → reason
        self.malformed = 0

    def platform_ack(self, channel: str, data: bytes) -> Ack | None:
        """What the platform would answer for one uplink (None when it cannot even find a seq)."""
        try:
            body = decode(data)
        except Exception:
            self.malformed += 1
            return None
        items = body if isinstance(body, list) else [body]
        seqs: list[int] = []
        rejected: list[dict[str, Any]] = []
        now = utcnow()
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("seq"), int):
                self.malformed += 1
                continue
            seq = item["seq"]
            reason, detail = None, ""
            if item.get("ts") is not None and parse_ts(item["ts"]) > now + FUTURE_LIMIT:
                reason, detail = "future_timestamp", f"ts {item['ts']} is more than 5 minutes ahead"
            elif self.validate and self.link is not None:
                try:
                    validate_payload(self.identity.kind, channel, item.get("payload"))
                except (ValidationError, KeyError) as exc:
                    reason, detail = "schema", str(exc)[:200]
            if reason is None:
                self.stored.setdefault(seq, dict(item))
                self.stored_channels.setdefault(seq, channel)
                seqs.append(seq)
            else:
                self.rejected[seq] = reason
                rejected.append({"seq": seq, "reason": reason, "detail": detail})
        high = max(self.stored, default=None)
        return Ack.parse({"seqs": seqs, "high": high, "rejected": rejected})

    async def send(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        self._ensure_up()
        data = encode_messages(messages, self.encoding)
        self.uplinks.append(Uplink(channel, data))
        if self.auto_ack:
            ack = self.platform_ack(channel, data)
            if ack is not None:
                self._deliver(ack)

    async def send_raw(self, channel: str, data: bytes) -> None:
        self._ensure_up()
        self.raw.append(Uplink(channel, data))
        ack = self.platform_ack(channel, data)
        if ack is not None:
            self._deliver(ack)

    def _deliver(self, ack: Ack) -> None:
        assert self.link is not None
        if self.ack_delay_s > 0:
            asyncio.get_running_loop().call_later(self.ack_delay_s, self.link.on_ack, ack)
        else:
            self.link.on_ack(ack)

    def command(self, body: Any) -> None:
        """Deliver a downlink command to the device, as the platform's `down/cmd` would."""
        assert self.link is not None
        self.link.on_command(body)
