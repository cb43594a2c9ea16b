"""The embedded MQTT broker: amqtt 0.12.1 in this process, ingest on its message hook.

    hub = BrokerHub(pipeline, registry=registry, directory=directory, presence=presence,
                    service_username="mf-platform", service_password="…")
    async with EmbeddedBroker(hub, host="127.0.0.1", port=1883) as mqtt:
        await mqtt.publish(topics.down_topic(market, device_id, "cmd"), b'{"id": …}')

`IndexedBroker` (broker/amqtt_broker.py) replaces amqtt's linear subscription matching; the plugins
(broker/amqtt_plugins.py) authenticate against the registry, enforce the device topic ACL and feed the
pipeline. Register `hub` as a registry `CredentialListener` so a revocation closes the device's connection.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from broker.acks import AckPublisher
from broker.amqtt_broker import IndexedBroker
from broker.amqtt_plugins import BrokerHub, HubPlugin

__all__ = ["GC_THRESHOLD", "PLUGINS", "EmbeddedBroker", "TlsListener", "broker_config", "tune_gc"]

log = logging.getLogger(__name__)

PLUGINS = {
    "broker.amqtt_plugins.RegistryAuthPlugin": {},
    "broker.amqtt_plugins.DeviceTopicACL": {},
    "broker.amqtt_plugins.IngestPlugin": {},
}


#: CPython's collector thresholds for a process holding a market's connections. With the defaults (700, 10, 10)
#: every few hundred allocations start a collection, and the full ones — each walking every object of every
#: connection — came every ~25 % of heap growth: 18 of them while 5,000 devices connected, 2.4 s of CPU
#: (40 % of the connect storm) and more while ingesting. With these: 1 (BENCHMARKS.md, broker section).
GC_THRESHOLD: Final = (20_000, 50, 20)
_CPYTHON_DEFAULT_THRESHOLD: Final = (700, 10, 10)


def tune_gc(threshold: tuple[int, int, int] | None = GC_THRESHOLD) -> bool:
    """Raise the collector's thresholds for a broker process, unless someone already chose their own."""
    if threshold is None or gc.get_threshold() != _CPYTHON_DEFAULT_THRESHOLD:
        return False
    gc.set_threshold(*threshold)
    log.info("garbage collector thresholds set to %s for the embedded broker", threshold)
    return True


@dataclass(frozen=True)
class TlsListener:
    """MQTT over TLS (8883) with the platform's certificate; `only` drops the plain listener."""

    port: int
    cert_file: str
    key_file: str
    only: bool = False


def broker_config(
    host: str, port: int, *, max_connections: int = 0, session_expiry_s: int | None = 7 * 86_400,
    tls: TlsListener | None = None,
) -> dict[str, Any]:
    """amqtt config of the embedded broker (plugins listed here replace amqtt's defaults)."""
    plain = {"type": "tcp", "bind": f"{host}:{port}", "max_connections": max_connections}
    listeners: dict[str, Any] = {"default": plain}
    if tls is not None:
        secured = {"type": "tcp", "bind": f"{host}:{tls.port}", "max_connections": max_connections, "ssl": True,
                   "certfile": tls.cert_file, "keyfile": tls.key_file}
        # amqtt needs a listener named "default"; in TLS-only mode that is the TLS one and nothing is plain.
        listeners = {"default": secured} if tls.only else {"default": plain, "tls": secured}
    return {
        "listeners": listeners,
        "timeout_disconnect_delay": 0,
        # amqtt #123: a persistent session of a device that never returns is dropped after this long.
        "session_expiry_interval": session_expiry_s,
        "plugins": {path: dict(cfg) for path, cfg in PLUGINS.items()},
    }


class EmbeddedBroker:
    def __init__(
        self,
        hub: BrokerHub,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        max_connections: int = 0,
        session_expiry_s: int | None = 7 * 86_400,
        max_offline_messages: int = 1000,
        tls: TlsListener | None = None,
        gc_threshold: tuple[int, int, int] | None = GC_THRESHOLD,
    ) -> None:
        self.hub = hub
        self.gc_threshold = gc_threshold
        self.tls = tls
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.session_expiry_s = session_expiry_s
        self.max_offline_messages = max_offline_messages
        self.broker: IndexedBroker | None = None

    async def start(self) -> None:
        if self.broker is not None:
            return
        tune_gc(self.gc_threshold)
        broker = IndexedBroker(
            broker_config(self.host, self.port, max_connections=self.max_connections,
                          session_expiry_s=self.session_expiry_s, tls=self.tls),
            max_offline_messages=self.max_offline_messages,
        )
        for plugin in broker.plugins_manager.plugins:
            if isinstance(plugin, HubPlugin):
                plugin.bind(self.hub)
        self.hub.broker = broker
        if self.hub.acks is None:
            self.hub.acks = AckPublisher(self.hub.publish)
        if self.hub.presence is not None:
            broker.activity_hook = self.hub.presence.seen
        await broker.start()
        if self.port == 0:
            server = broker._servers["default"].instance
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.broker = broker
        log.info("embedded MQTT broker listening on %s:%s", self.host, self.port)

    async def aclose(self) -> None:
        broker, self.broker = self.broker, None
        if broker is None:
            return
        if self.hub.acks is not None:
            await self.hub.acks.drain()
        await broker.shutdown()
        if self.hub.broker is broker:
            self.hub.broker = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def publish(self, topic: str, data: bytes, qos: int = 1) -> None:
        """Publish from the platform (commands, config) to whoever subscribed, e.g. one device's down/cmd."""
        await self.hub.publish(topic, data, qos)

    @property
    def running(self) -> bool:
        return self.broker is not None
