"""How retail reaches devices: one small interface, so the domain does not know which transport carries it.

`CommandSender.send(device_id, market, command)` delivers one command (a dict with a `command`
discriminator, valid for the device's kind) to a device's `down/cmd`. Labels are reached through their base
station: the command for the label is wrapped in the base station's `relay` command (`relay_to_label`).
retail/transport.py adapts the broker's MQTT publish and the CoAP server's command queue to it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = ["Clock", "CommandSender", "relay_to_label", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class CommandSender(Protocol):
    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None: ...


def relay_to_label(label_id: str, command: dict[str, Any]) -> dict[str, Any]:
    """The base station command that hands `command` to one of its labels over the radio."""
    return {"command": "relay", "label_id": label_id, "payload": command}
