"""External mode: an ingest worker that is an MQTT client of Mosquitto/EMQX.

    async with ExternalIngest(pipeline, host=…, port=…, username=…, password=…, group="mf-ingest") as worker:
        await worker.publish(topics.down_topic(market, device_id, "cmd"), b"…")

Each worker subscribes to `$share/{group}/mf/v1/+/+/up/#`: the broker hands every uplink to exactly one
worker of the group (round robin on Mosquitto), so several workers — processes or machines — share the load.
Mosquitto 2.0 serves `$share/` to MQTT 3.1.1 clients too (checked in tests), so 3.1.1 is the default;
`protocol="5"` is available for brokers that want it. Messages of one device may land on different workers:
de-duplication stays exact because the telemetry store is idempotent (broker/ingest.py).

The device identity comes from the topic: the broker's ACL (Mosquitto dynamic security provisioned by
broker/dynsec.py, or EMQX's ACL hook) only lets a device publish under its own `mf/v1/+/{id}/up/`. A publish on
another device's topic is dropped by the broker and never reaches ingest, so external mode cannot dead-letter
it as `forbidden_topic` (the device still gets no ack). The ack goes to `…/down/ack` of the same market segment.

The worker reconnects with backoff when the broker goes away; `connected` is set while subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self

import aiomqtt

from broker import topics
from broker.acks import AckPublisher
from broker.ingest import IngestPipeline
from broker.mqtt_socket import coalesce_paho_io
from broker.presence import PresenceTracker
from broker.uplink import Ack, Uplink

__all__ = ["ExternalIngest"]

log = logging.getLogger(__name__)


class ExternalIngest:
    def __init__(
        self,
        pipeline: IngestPipeline,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        group: str = "mf-ingest",
        client_id: str | None = None,
        presence: PresenceTracker | None = None,
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        keepalive_s: int = 30,
        clean_session: bool = True,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.pipeline = pipeline
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.group = group
        self.client_id = client_id or f"{group}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.presence = presence
        self.protocol = protocol
        self.keepalive_s = keepalive_s
        self.clean_session = clean_session
        self.reconnect_max_s = reconnect_max_s
        self.connected = asyncio.Event()
        self.received = 0
        self.via_paho = 0  # of `received`: messages that took paho's path rather than the socket fast path
        self.acks = AckPublisher(self.publish)
        self._client: aiomqtt.Client | None = None
        self._inbox: asyncio.Queue[aiomqtt.Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._routes: dict[str, tuple[str, str, str] | None] = {}
        self._replies: dict[str, Callable[[Ack], None]] = {}  # ack topic -> AckPublisher callback

    async def start(self, wait_connected_s: float | None = 10.0) -> None:
        """Start the worker; by default wait until it is subscribed (raises TimeoutError if it cannot)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"external-ingest-{self.client_id}")
        if wait_connected_s is not None:
            await asyncio.wait_for(self.connected.wait(), wait_connected_s)

    async def aclose(self) -> None:
        self._closing = True
        await self.acks.drain()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def publish(self, topic: str, data: bytes, qos: int = 1) -> None:
        """Publish as the platform (acks, commands); raises aiomqtt.MqttError while disconnected."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise aiomqtt.MqttError("not connected to the broker")
        await client.publish(topic, data, qos=qos)

    def _inbox_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's message queue, remembered so `_run` can drain it without a task per message."""
        worker = self

        class Inbox(asyncio.Queue[aiomqtt.Message]):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                worker._inbox = self

        return Inbox

    async def _run(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                client = aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username or None,
                    password=self.password or None,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5 if self.protocol == "5" else aiomqtt.ProtocolVersion.V311,
                    clean_session=None if self.protocol == "5" else self.clean_session,
                    keepalive=self.keepalive_s,
                    max_inflight_messages=1000,
                    queue_type=self._inbox_type(),
                )
                # Inbound PUBLISHes go straight from the socket buffer to `_on_publish` (MQTT 3.1.1); what the
                # fast path leaves to paho (MQTT 5, TLS, very large packets) arrives through aiomqtt below.
                coalesce_paho_io(client, self._on_publish)
                async with client:
                    self._client = client
                    await client.subscribe(topics.shared_up_filter(self.group), qos=1)
                    self.connected.set()
                    delay = 0.5
                    log.info("ingest worker %s subscribed on %s:%s", self.client_id, self.host, self.port)
                    inbox = self._inbox
                    assert inbox is not None
                    # aiomqtt's iterator costs a task and an asyncio.wait per message: wait through it for the
                    # first message of a burst, then take the rest of what paho has queued directly.
                    async for message in client.messages:
                        self.via_paho += 1
                        self._on_publish(message.topic.value, _bytes(message.payload))
                        while not inbox.empty():
                            message = inbox.get_nowait()
                            self.via_paho += 1
                            self._on_publish(message.topic.value, _bytes(message.payload))
            except aiomqtt.MqttError as err:
                if self._closing:
                    break
                log.warning("ingest worker %s: %s; reconnecting in %.1f s", self.client_id, err, delay)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    def _route(self, topic: str) -> tuple[str, str, str] | None:
        """(device id, channel, ack topic) of an uplink topic, None for anything else; cached per topic (the
        same few topics per device repeat for every message)."""
        route = self._routes.get(topic, _UNKNOWN)
        if route is _UNKNOWN:
            parsed = topics.parse(topic)
            route = None if parsed is None or parsed.direction != "up" else (
                parsed.device_id, parsed.channel, parsed.reply("ack"))
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            self._routes[topic] = route
        return route  # type: ignore[return-value]

    def _on_publish(self, topic: str, data: bytes) -> None:
        """One uplink from the broker, synchronously: queued for the pipeline (a burst becomes one batch)."""
        self.received += 1
        route = self._route(topic)
        if route is None:
            log.debug("ignoring %s", topic)
            return
        device_id, channel, ack_topic = route
        presence = self.presence
        if channel == "status":
            if presence is not None:
                presence.status(device_id, data)
            return
        if presence is not None:
            presence.seen(device_id)
        uplink = Uplink("mqtt", device_id, channel, data, topic=topic)
        pipeline = self.pipeline
        if not pipeline.admit(uplink):
            return  # over the device's rate: dead-lettered, not acknowledged
        # Past `max_pending` the uplink is queued all the same: paho has already acknowledged it to the broker
        # (PUBACK on receipt, as before), so holding it back would only move the queue elsewhere.
        reply = self._replies.get(ack_topic)
        if reply is None:
            if len(self._replies) >= _MAX_ROUTES:
                self._replies.clear()
            reply = self._replies[ack_topic] = self.acks.reply_to(ack_topic)
        pipeline.push(uplink, reply)


_UNKNOWN: Final = object()
_MAX_ROUTES: Final = 200_000


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    return str(payload).encode() if payload is not None else b""
