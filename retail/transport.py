"""Adapters from `retail.commands.CommandSender` to the platform's downlinks (built in marketfleet/platform.py).

- `MqttCommands`: `{"id": …, "command": …}` as JSON on `mf/v1/{market}/{device}/down/cmd`, QoS 1
  (docs/protocol.md), through whichever broker runs (embedded or external).
- `CoapCommands`: the CoAP server's per-device command queue, delivered as an Observe notification of
  `down/cmd` (queued while the base station is away; at least once, devices de-duplicate by `id`).
- `PlatformCommands`: what the platform uses. ESL base stations speak CoAP (fleet/kinds.py), so `relay`
  commands go over CoAP when the CoAP server runs and over MQTT otherwise; scale commands go over MQTT.

Nothing here imports a transport: the composition root hands in `publish`, `topic_for` and the services.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from retail.commands import CommandSender

__all__ = ["CoapCommands", "DeferredCommands", "MqttCommands", "PlatformCommands"]

Publish = Callable[[str, bytes, int], Awaitable[None]]
TopicFor = Callable[[str | None, str, str], str]


def _body(command: dict[str, Any]) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, **command}


class MqttCommands:
    def __init__(self, publish: Publish, topic_for: TopicFor) -> None:
        self.publish = publish
        self.topic_for = topic_for

    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None:
        data = json.dumps(_body(command), separators=(",", ":"), ensure_ascii=False, default=str).encode()
        await self.publish(self.topic_for(market, device_id, "cmd"), data, 1)


class CoapCommands:
    def __init__(self, server: Any) -> None:
        self.server = server  # broker.coap.CoapServer

    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None:
        # The CoAP payload is JSON too: make Decimals and datetimes plain strings first.
        await self.server.send_command(device_id, json.loads(json.dumps(_body(command), default=str)))


class DeferredCommands:
    """For a process without downlinks (the api role of a scale-out deployment). What retail would send is
    already recorded in the registry: a label update as the label's pending image, a price change as the
    stall's newer PLU table version. The ingest processes' sweeps (`LabelDispatcher.resend_stale`,
    `PriceBook.sync_scales`) send them from there, so nothing is sent here and nothing is lost."""

    deferred = True  # read by PriceBook: do not mark scale tables as sent

    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None:
        return None


class PlatformCommands:
    """Routes each command to a transport at the moment it is sent (services may start after retail)."""

    def __init__(self, services: Mapping[str, Any], topic_for: TopicFor) -> None:
        self.services = services
        self.topic_for = topic_for

    def _mqtt(self) -> CommandSender:
        return MqttCommands(self.services["broker"].publish, self.topic_for)

    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None:
        coap = self.services.get("coap")
        if command.get("command") == "relay" and coap is not None:
            await CoapCommands(coap).send(device_id, market, command)
        else:
            await self._mqtt().send(device_id, market, command)
