"""The MQTT topic scheme of docs/protocol.md: building and parsing topics, and the filters built from them.

    mf/v1/{market}/{device_id}/up/{telemetry|event|state|status}
    mf/v1/{market}/{device_id}/down/{cmd|ota|config|ack}

`market` is the market code, or `_` while the device is not placed in a market. Segments may not contain
`/`, `+`, `#` or NUL, and may not be empty (registry serials and codes are restricted to make that true).
Parsing never raises: a topic that is not ours gives `None`, so transports can dead-letter it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

PREFIX: Final = "mf/v1"
NO_MARKET: Final = "_"

Direction = Literal["up", "down"]
UP_CHANNELS: Final = frozenset({"telemetry", "event", "state", "status", "ack"})
# Channels whose messages go to the ingest pipeline; `status` goes to presence instead.
INGEST_CHANNELS: Final = frozenset({"telemetry", "event", "state"})
DOWN_CHANNELS: Final = frozenset({"cmd", "ota", "config", "ack"})

#: Every device uplink, on any market (what an ingest worker subscribes to).
UP_FILTER: Final = f"{PREFIX}/+/+/up/#"
#: Every downlink (what the platform's service account may publish to).
DOWN_FILTER: Final = f"{PREFIX}/+/+/down/#"


class TopicError(ValueError):
    """A topic (or a segment meant for one) that the scheme does not allow."""


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """A parsed `mf/v1/…` topic. `market` is None for `_` (no market)."""

    market: str | None
    device_id: str
    direction: Direction
    channel: str

    @property
    def market_segment(self) -> str:
        return self.market or NO_MARKET

    def reply(self, channel: str) -> str:
        """The downlink topic of the same device and market segment, e.g. `down/ack` for an uplink."""
        return down_topic(self.market, self.device_id, channel)


def _segment(value: str, what: str) -> str:
    if not value or "/" in value or "+" in value or "#" in value or "\x00" in value:
        raise TopicError(f"{what} {value!r} cannot be a topic segment (empty, or has '/', '+', '#' or NUL)")
    return value


def _market(market: str | None) -> str:
    return NO_MARKET if not market else _segment(market, "market")


def up_topic(market: str | None, device_id: str, channel: str) -> str:
    if channel not in UP_CHANNELS:
        raise TopicError(f"unknown uplink channel {channel!r}; expected one of {sorted(UP_CHANNELS)}")
    return f"{PREFIX}/{_market(market)}/{_segment(device_id, 'device id')}/up/{channel}"


def down_topic(market: str | None, device_id: str, channel: str) -> str:
    if channel not in DOWN_CHANNELS:
        raise TopicError(f"unknown downlink channel {channel!r}; expected one of {sorted(DOWN_CHANNELS)}")
    return f"{PREFIX}/{_market(market)}/{_segment(device_id, 'device id')}/down/{channel}"


def status_topic(market: str | None, device_id: str) -> str:
    """Retained `online`/`offline`; also the device's last-will topic."""
    return up_topic(market, device_id, "status")


def device_down_filter(market: str | None, device_id: str) -> str:
    """What a device subscribes to: all of its own downlinks."""
    return f"{PREFIX}/{_market(market)}/{_segment(device_id, 'device id')}/down/#"


def shared_up_filter(group: str) -> str:
    """The `$share/` subscription that splits uplinks across the ingest workers of `group`."""
    return f"$share/{_segment(group, 'share group')}/{UP_FILTER}"


def parse(topic: str) -> DeviceTopic | None:
    """The parts of a device topic, or None when `topic` is not one (wrong prefix, depth, direction, channel)."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "mf" or parts[1] != "v1":
        return None
    _, _, market, device_id, direction, channel = parts
    if not market or not device_id or "+" in topic or "#" in topic:
        return None
    if direction == "up":
        if channel not in UP_CHANNELS:
            return None
    elif direction == "down":
        if channel not in DOWN_CHANNELS:
            return None
    else:
        return None
    return DeviceTopic(None if market == NO_MARKET else market, device_id, direction, channel)  # type: ignore[arg-type]


def device_may_subscribe(device_id: str, topic_filter: str) -> bool:
    """True when `topic_filter` can only ever match downlinks of `device_id`.

    Allowed: `mf/v1/{market|+}/{device_id}/down/{channel|+|#}`. A `+` in the market position is harmless
    (the device id segment pins the device); `#` or `+` in the device position is not.
    """
    parts = topic_filter.split("/")
    if len(parts) != 6 or parts[0] != "mf" or parts[1] != "v1":
        return False
    _, _, market, dev, direction, channel = parts
    if dev != device_id or direction != "down" or not market or "#" in market:
        return False
    if market != "+" and "+" in market:
        return False
    return channel in ("#", "+") or channel in DOWN_CHANNELS


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+` one level, `#` the rest) with the `$`-topic rule of MQTT-4.7.2-1."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, level in enumerate(f_parts):
        if level == "#":
            return i == len(f_parts) - 1
        if i >= len(t_parts) or (level != "+" and level != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)
