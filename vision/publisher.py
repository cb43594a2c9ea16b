"""The device side of one camera: an MQTT link that speaks docs/protocol.md like any device's firmware.

Connects with the camera's device credential (client id = username = device id), sets the retained
`offline` last will, publishes `online`, and sends messages with a per-device sequence number (persisted in a
small file, so it survives restarts). Every message stays in an in-memory outbox until the platform's
`down/ack` lists its seq as stored or rejected; after a reconnect the outbox is sent again (duplicates are
dropped by the platform by seq). The outbox holds at most `max_outbox` messages; beyond that the oldest go
(the worker's own store keeps events and counts regardless).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

log = logging.getLogger(__name__)

PREFIX = "mf/v1"


def topic(market: str | None, device_id: str, direction: str, channel: str) -> str:
    return f"{PREFIX}/{market or '_'}/{device_id}/{direction}/{channel}"


class DeviceLink:
    def __init__(self, *, host: str, port: int, device_id: str, secret: str, market: str | None,
                 seq_file: Path, keepalive_s: int = 60, max_outbox: int = 10_000) -> None:
        self.host, self.port, self.device_id, self.secret = host, port, device_id, secret
        self.market, self.seq_file, self.keepalive_s, self.max_outbox = market, seq_file, keepalive_s, max_outbox
        self.outbox: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self.acked: set[int] = set()
        self.rejected: dict[int, str] = {}
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._seq = self._load_seq()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _load_seq(self) -> int:
        try:
            return int(self.seq_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _next_seq(self) -> int:
        self._seq += 1
        self.seq_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.seq_file.with_suffix(".tmp")
        tmp.write_text(str(self._seq))
        tmp.replace(self.seq_file)
        return self._seq

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.device_id}")

    async def aclose(self) -> None:
        self._closing = True
        client = self._client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self._status_topic, "offline", qos=1, retain=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task

    @property
    def _status_topic(self) -> str:
        return topic(self.market, self.device_id, "up", "status")

    async def send(self, channel: str, payload: dict[str, Any], ts: datetime | None = None) -> int:
        """Queue one message on `channel` (telemetry, event, state); returns its seq."""
        seq = self._next_seq()
        message = {"seq": seq, "ts": (ts or datetime.now(UTC)).isoformat(), "payload": payload}
        body = json.dumps(message, separators=(",", ":")).encode()
        self.outbox[seq] = (topic(self.market, self.device_id, "up", channel), body)
        while len(self.outbox) > self.max_outbox:
            self.outbox.popitem(last=False)
        client = self._client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.outbox[seq][0], body, qos=1)
        return seq

    async def _run(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.device_id, username=self.device_id,
                    password=self.secret, keepalive=self.keepalive_s, clean_session=False,
                    will=aiomqtt.Will(self._status_topic, "offline", qos=1, retain=True),
                ) as client:
                    self._client = client
                    await client.subscribe(topic(self.market, self.device_id, "down", "#"), qos=1)
                    await client.publish(self._status_topic, "online", qos=1, retain=True)
                    self.connected.set()
                    delay = 0.5
                    for _, (where, body) in list(self.outbox.items()):
                        await client.publish(where, body, qos=1)
                    async for message in client.messages:
                        if str(message.topic).endswith("/down/ack"):
                            self._ack(message.payload)
            except aiomqtt.MqttError as err:
                log.warning("camera %s: MQTT %s; reconnecting in %.1f s", self.device_id, err, delay)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    def _ack(self, payload: Any) -> None:
        try:
            ack = json.loads(bytes(payload))
        except (TypeError, ValueError):
            return
        for seq in ack.get("seqs", []):
            self.outbox.pop(seq, None)
            self.acked.add(seq)
        for item in ack.get("rejected", []):
            seq = item.get("seq")
            self.outbox.pop(seq, None)
            self.rejected[seq] = f"{item.get('reason')}: {item.get('detail', '')}"
            log.error("camera %s: platform rejected message %s: %s", self.device_id, seq, self.rejected[seq])
