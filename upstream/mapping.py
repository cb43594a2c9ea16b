"""What goes upward, and under which names: pure functions from platform events to upstream records."""

from __future__ import annotations

from typing import Any

from broker.bus import PresenceChanged
from fleet.envelope import Envelope
from fleet.kinds import Channel, DeviceKind

DATA_CLASSES = ("transactions", "food_tests", "device_status", "alerts")


def records_for(event: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(data class, market, record) for each upstream record an event makes; most events make none."""
    if isinstance(event, Envelope):
        if event.channel != Channel.EVENT:
            return []
        kind, event_type = event.kind, event.payload.get("type")
        if kind == DeviceKind.SCALE and event_type == "transaction":
            return [("transactions", event.market, _device_record(event))]
        if kind == DeviceKind.FOOD_DETECTOR and event_type == "test_result":
            return [("food_tests", event.market, _device_record(event))]
        return []
    if isinstance(event, PresenceChanged):
        return [("device_status", event.market, {"device_id": event.device_id, "market": event.market,
                                                 "online": event.online, "reason": event.reason,
                                                 "at": event.at.isoformat()})]
    if isinstance(event, dict) and "alert" in event:  # a rules AlertStream message
        alert = event["alert"]
        return [("alerts", alert.get("market"), {"event": event.get("event"), **alert})]
    return []


def _device_record(envelope: Envelope) -> dict[str, Any]:
    body = {k: v for k, v in envelope.payload.items() if k != "type"}
    return {"device_id": envelope.device_id, "market": envelope.market, "seq": envelope.seq,
            "ts": envelope.ts.isoformat(), **body}


def map_fields(record: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Rename our fields to the receiver's; fields not named in `mapping` keep our names."""
    return {mapping.get(key, key): value for key, value in record.items()}
