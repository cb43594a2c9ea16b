"""The MQTT device client (aiomqtt, MQTT 3.1.1), exactly as docs/protocol.md asks a device to behave.

* client id = username = device_id, password = secret, clean session false, keepalive as registered;
* last will `offline` (QoS 1, retained) on `mf/v1/{market}/{device_id}/up/status`, and `online` retained
  there right after connecting; `offline` retained again on a graceful close (a clean DISCONNECT suppresses
  the will);
* subscribe to its own `down/#` at QoS 1; uplinks at QoS 1 on `up/{telemetry|event|state}`;
* `down/ack` → `link.on_ack`, `down/cmd` → `link.on_command`, `down/ota` and `down/config` → `link.on_downlink`;
* reconnects with exponential back-off after any break; the device replays its outbox when the link is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiomqtt

from simulators.topics import device_down_filter, parse, status_topic, up_topic
from simulators.transports.base import DeviceLink, LinkDown, Transport, log
from simulators.wire import Ack, Encoding, decode, encode_messages


class MqttTransport(Transport):
    name = "mqtt"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        tls: ssl.SSLContext | None = None,
        encoding: Encoding = "json",
        keepalive_s: int | None = None,
        publish_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 30.0,
    ) -> None:
        super().__init__(encoding=encoding, reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.host = host
        self.port = port
        self.tls = tls
        self.keepalive_s = keepalive_s
        self.publish_timeout_s = publish_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.connects = 0  # successful connections so far
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, link: DeviceLink) -> None:
        self.link = link
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"mqtt:{link.identity.device_id}")

    async def close(self) -> None:
        self._closing = True
        client = self._client
        if client is not None and self.connected:
            with contextlib.suppress(Exception):
                await client.publish(self._status_topic(), b"offline", qos=1, retain=True, timeout=2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_connected(False, "closed")

    def _status_topic(self) -> str:
        return status_topic(self.identity.market, self.identity.device_id)

    def _new_client(self) -> aiomqtt.Client:
        identity = self.identity
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identity.device_id,
            username=identity.device_id,
            password=identity.secret,
            clean_session=False,
            keepalive=self.keepalive_s or identity.keepalive_s,
            will=aiomqtt.Will(self._status_topic(), b"offline", qos=1, retain=True),
            tls_context=self.tls,
            timeout=self.connect_timeout_s,
        )

    async def _supervise(self) -> None:
        """Connect, serve downlinks, and reconnect after every break until closed."""
        while not self._closing:
            held = self.held_down_for()
            if held > 0:
                await asyncio.sleep(held)
                continue
            client = self._new_client()
            try:
                async with client:
                    await client.subscribe(device_down_filter(self.identity.market, self.identity.device_id), qos=1)
                    await client.publish(self._status_topic(), b"online", qos=1, retain=True)
                    self._client = client
                    self.connects += 1
                    self.reset_backoff()
                    self._set_connected(True)
                    async for message in client.messages:
                        self._dispatch(str(message.topic), bytes(message.payload or b""))
            except aiomqtt.MqttError as exc:
                self._set_connected(False, f"mqtt: {exc}")
                log.debug("%s: mqtt link lost: %s", self.identity.device_id, exc)
            finally:
                self._client = None
                self._set_connected(False, self.last_error or "disconnected")
            if self._closing:
                break
            await asyncio.sleep(max(self.backoff(), self.held_down_for()))

    def _dispatch(self, topic: str, payload: bytes) -> None:
        assert self.link is not None
        parsed = parse(topic)
        if parsed is None or parsed.direction != "down" or parsed.device_id != self.identity.device_id:
            log.warning("%s: message on a topic not ours: %s", self.identity.device_id, topic)
            return
        try:
            body = decode(payload)
        except Exception as exc:
            log.warning("%s: undecodable %s downlink: %s", self.identity.device_id, parsed.channel, exc)
            self.link.on_downlink(parsed.channel, payload)
            return
        if parsed.channel == "ack":
            try:
                ack = Ack.parse(body)
            except (TypeError, ValueError) as exc:
                log.warning("%s: bad ack %r: %s", self.identity.device_id, body, exc)
                return
            self.link.on_ack(ack)
        elif parsed.channel == "cmd":
            self.link.on_command(body)
        else:
            self.link.on_downlink(parsed.channel, body)

    # -- uplinks -------------------------------------------------------------------
    async def _publish(self, channel: str, data: bytes) -> None:
        client = self._client
        if client is None or not self.connected or self.held_down_for() > 0:
            raise LinkDown(self.last_error or "mqtt: not connected")
        topic = up_topic(self.identity.market, self.identity.device_id, channel)
        try:
            await client.publish(topic, data, qos=1, timeout=self.publish_timeout_s)
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"mqtt publish: {exc}") from exc

    async def send(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        await self._publish(channel, encode_messages(messages, self.encoding))

    async def send_raw(self, channel: str, data: bytes) -> None:
        await self._publish(channel, data)

    # -- faults --------------------------------------------------------------------
    async def drop_link(self, seconds: float) -> None:
        """Cut the TCP connection without DISCONNECT (the broker publishes the will) and stay away."""
        await super().drop_link(seconds)
        client = self._client
        if client is not None:
            sock = client._client.socket()  # the paho socket under aiomqtt
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            else:  # a websocket wrapper: ask paho to drop it
                with contextlib.suppress(Exception):
                    client._client._sock_close()
