"""The topic and path names the simulators use, in one place.

MQTT topics come from `broker.topics` (the platform's own topic scheme, so simulator and broker cannot drift).
The CoAP paths of docs/protocol.md carry no market segment and are built here. Every other simulator module
imports topic names from this module only; if the broker's scheme moves, this is the one file to change.
"""

from __future__ import annotations

from broker.topics import (
    DOWN_CHANNELS,
    INGEST_CHANNELS,
    NO_MARKET,
    PREFIX,
    device_down_filter,
    down_topic,
    parse,
    status_topic,
    up_topic,
)

__all__ = [
    "DOWN_CHANNELS",
    "INGEST_CHANNELS",
    "NO_MARKET",
    "PREFIX",
    "coap_down_path",
    "coap_up_path",
    "device_down_filter",
    "down_topic",
    "http_ingest_path",
    "http_results_path",
    "parse",
    "status_topic",
    "up_topic",
]


def coap_up_path(device_id: str, channel: str) -> str:
    """`mf/v1/{device_id}/up/{channel}` (no leading slash; CoAP Uri-Path segments)."""
    return f"{PREFIX}/{device_id}/up/{channel}"


def coap_down_path(device_id: str, channel: str = "cmd") -> str:
    """`mf/v1/{device_id}/down/{channel}`: the resource a device observes for commands."""
    return f"{PREFIX}/{device_id}/down/{channel}"


def http_results_path(device_id: str) -> str:
    """The food-detector results endpoint (a JSON array of `test_result` payloads)."""
    return f"/api/v1/ingest/{device_id}/results"


def http_ingest_path(device_id: str, channel: str) -> str:
    """The generic HTTP ingest endpoint (a message or an array of messages, answered with an ack)."""
    return f"/api/v1/ingest/{device_id}/{channel}"
