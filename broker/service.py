"""`setup(params, registry, store) -> BrokerService`: the MQTT side and the ingest pipeline, wired and started.

    service = setup(settings.broker, registry, store)     # any object with BrokerParams' attribute names
    await service.start()
    sub = service.bus.subscribe(kinds=(Envelope,))           # rules, dashboard …
    await service.publish(topics.down_topic(market, device_id, "cmd"), payload)
    await service.aclose()

`mode="embedded"`: amqtt in this process (broker/embedded.py). `mode="external"`: `workers` ingest clients of
Mosquitto/EMQX sharing `$share/{shared_group}/…` (broker/external.py) and, when dynsec admin credentials are
given, the Mosquitto dynamic-security provisioner (broker/dynsec.py), reconciled at start. In both modes the
service registers its credential listeners on `registry.listeners` (and removes them on close), so revoking a
credential disconnects the device and rotating one takes effect at once. Nothing here knows about FastAPI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from broker.amqtt_plugins import BrokerHub
from broker.bus import EnvelopeBus
from broker.directory import DeviceDirectory
from broker.dynsec import DynsecProvisioner, ReconcileReport
from broker.embedded import EmbeddedBroker, TlsListener
from broker.external import ExternalIngest
from broker.ingest import IngestPipeline
from broker.presence import PresenceTracker

if TYPE_CHECKING:
    from fleet.registry import Registry
    from telemetry import TelemetryStore

__all__ = ["BrokerParams", "BrokerService", "setup"]

log = logging.getLogger(__name__)


@dataclass
class BrokerParams:
    """The broker settings (`marketfleet.settings.BrokerSettings` has the same names) plus a few extras."""

    mode: Literal["embedded", "external"] = "embedded"
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""  # the platform's service account (internal clients, ingest workers)
    password: str = ""
    shared_group: str = "mf-ingest"
    max_payload_bytes: int = 64 * 1024
    keepalive_s: int = 60
    # per-device MQTT uplinks per second and burst; beyond: dead-lettered `rate_limited`, not acknowledged.
    # 0 here (library use, benchmarks): no limit; the platform passes the setting (100/s, burst 2,000).
    device_rate_per_s: float = 0.0
    device_burst: int = 2000
    # external mode only
    workers: int = 1
    admin_username: str = ""  # Mosquitto dynsec admin; empty: broker accounts are managed elsewhere (EMQX)
    admin_password: str = ""
    reconcile_on_start: bool = True
    # MQTT over TLS on the embedded broker (docs/security.md); empty cert: no TLS listener
    tls_port: int = 8883
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_only: bool = False
    # presence
    presence_flush_s: float = 2.0
    presence_sweep_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> BrokerParams:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if hasattr(settings, f.name):
                value = getattr(settings, f.name)
                values[f.name] = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        values.update(overrides)
        return cls(**values)


class BrokerService:
    def __init__(self, params: BrokerParams, registry: Registry, store: TelemetryStore) -> None:
        self.params = params
        self.registry = registry
        self.store = store
        self.bus = EnvelopeBus()
        self.directory = DeviceDirectory()
        self.pipeline = IngestPipeline(store, self.directory, params.max_payload_bytes, bus=self.bus,
                                       mqtt_rate_per_s=params.device_rate_per_s, mqtt_burst=params.device_burst)
        self.presence = PresenceTracker(
            self.bus, self.directory, flush_interval_s=params.presence_flush_s,
            sweep_interval_s=params.presence_sweep_s, default_keepalive_s=params.keepalive_s,
        )
        self.hub: BrokerHub | None = None
        self.embedded: EmbeddedBroker | None = None
        self.workers: list[ExternalIngest] = []
        self.provisioner: DynsecProvisioner | None = None
        self.reconcile_report: ReconcileReport | None = None
        self._listeners: list[Any] = []
        if params.mode == "embedded":
            self.hub = BrokerHub(
                self.pipeline, registry=registry, directory=self.directory, presence=self.presence,
                service_username=params.username, service_password=params.password,
            )
            tls = TlsListener(params.tls_port, params.tls_cert_file, params.tls_key_file, params.tls_only) \
                if params.tls_cert_file else None
            self.embedded = EmbeddedBroker(self.hub, host=params.host, port=params.port, tls=tls)
        elif params.mode == "external":
            if params.admin_username:
                self.provisioner = DynsecProvisioner(
                    host=params.host, port=params.port, admin_username=params.admin_username,
                    admin_password=params.admin_password, service_username=params.username,
                    service_password=params.password, share_group=params.shared_group,
                )
            self.workers = [
                ExternalIngest(
                    self.pipeline, host=params.host, port=params.port, username=params.username,
                    password=params.password, group=params.shared_group, presence=self.presence,
                )
                for _ in range(max(1, params.workers))
            ]
        else:
            raise ValueError(f"broker mode must be 'embedded' or 'external', not {params.mode!r}")

    async def start(self) -> None:
        await self.pipeline.start()
        await self.presence.start()
        self._listen(self.directory)
        if self.embedded is not None:
            self._listen(self.hub)
            await self.embedded.start()
        if self.provisioner is not None:
            await self.provisioner.start()
            self._listen(self.provisioner)
            if self.params.reconcile_on_start:
                self.reconcile_report = await self.provisioner.reconcile(self.registry)
        for worker in self.workers:
            await worker.start()

    def _listen(self, listener: Any) -> None:
        self.registry.listeners.append(listener)
        self._listeners.append(listener)

    async def aclose(self) -> None:
        for listener in self._listeners:
            if listener in self.registry.listeners:
                self.registry.listeners.remove(listener)
        self._listeners.clear()
        for worker in self.workers:
            await worker.aclose()
        if self.embedded is not None:
            await self.embedded.aclose()
        await self.pipeline.aclose()
        await self.presence.aclose()
        if self.provisioner is not None:
            await self.provisioner.aclose()
        self.bus.close()

    async def __aenter__(self) -> BrokerService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def publish(self, topic: str, data: bytes, qos: int = 1) -> None:
        """Send a downlink (command, config, OTA job) through whichever broker is in use."""
        if self.embedded is not None:
            await self.embedded.publish(topic, data, qos)
            return
        for worker in self.workers:
            if worker.connected.is_set():
                await worker.publish(topic, data, qos)
                return
        raise ConnectionError("no ingest worker is connected to the external broker")

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: ingest, bus drops, presence, broker."""
        out: dict[str, Any] = {"ingest": self.pipeline.stats.as_dict(), "bus_dropped": self.bus.dropped(),
                               "presence_changes": self.presence.changes}
        if self.embedded is not None and self.embedded.broker is not None:
            broker = self.embedded.broker
            out["broker"] = {"sessions": len(broker.sessions), "connections": broker.connection_count,
                             "subscriptions": len(broker.index), "refused": broker.refused,
                             "deliveries": broker.deliveries}
        if self.workers:
            out["workers"] = {w.client_id: {"received": w.received, "connected": w.connected.is_set()}
                              for w in self.workers}
        return out


def setup(params: Any, registry: Registry, store: TelemetryStore, **overrides: Any) -> BrokerService:
    """Build (not start) the broker service from `BrokerParams` or anything with the same attribute names."""
    resolved = params if isinstance(params, BrokerParams) and not overrides else BrokerParams.from_settings(
        params, **overrides
    )
    return BrokerService(resolved, registry, store)
