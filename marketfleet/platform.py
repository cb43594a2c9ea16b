"""The composition root: turns Settings into running services and stops them in reverse order.

Each domain package exposes its own `setup`; this module only decides what runs and hands each part the
pieces it needs. Nothing else in the project builds singletons or reads the environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from accounts.service import Accounts
from api import create_app
from api.context import ApiContext
from compliance.service import setup as setup_compliance
from firmware.service import mqtt_downlink, no_downlink
from firmware.service import setup as setup_firmware
from fleet.lookups import device_cache
from fleet.registry import Registry
from marketfleet import db
from marketfleet.keys import load_or_create
from marketfleet.settings import InfluxTelemetrySettings, Settings
from rules import setup as setup_rules
from telemetry import TelemetryStore, open_store
from upstream import setup as setup_upstream

SERVICE_ACCOUNT = "mf-platform"
FIRMWARE_FEED_BUFFER = 100_000  # envelopes the OTA status feed may fall behind by (it skips all but ota_status)
RULES_FEED_BUFFER = 100_000  # envelopes the rules engine may fall behind by before the oldest are lost
UPSTREAM_FEED_BUFFER = 100_000  # events the upstream recorder may fall behind by (docs/upstream.md)
PRESENCE_LOG_BUFFER = 100_000  # presence changes the history writer may fall behind by


@dataclass
class Platform:
    settings: Settings
    registry: Registry
    admin_token: str
    app: FastAPI
    store: TelemetryStore | None = None
    services: dict[str, Any] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def aclose(self) -> None:
        await self._stack.aclose()


def master_key(settings: Settings) -> bytes:
    configured = settings.secret_key.get_secret_value()
    return (configured or load_or_create(settings.data_dir / "master.key")).encode()


def admin_token(settings: Settings) -> str:
    return settings.api.admin_token.get_secret_value() or load_or_create(settings.data_dir / "admin.token")


def service_password(settings: Settings, key: bytes) -> str:
    """The platform's own MQTT account (internal clients, ingest workers): configured, or derived."""
    configured = settings.broker.password.get_secret_value()
    return configured or hmac.new(key, b"mqtt-service-account", hashlib.sha256).hexdigest()


def build_store(settings: Settings) -> TelemetryStore:
    t = settings.telemetry
    if isinstance(t, InfluxTelemetrySettings):
        return open_store(
            "influxdb", url=t.url, database=t.database, username=t.username or None,
            password=t.password.get_secret_value() or None, retention=t.retention,
            spool_dir=str(settings.data_dir / "telemetry-spool"), max_batch=t.batch_size,
            max_spool_bytes=t.spool_max_bytes, spool_segment_bytes=min(16 << 20, t.spool_max_bytes // 8),
        )
    return open_store("sqlite", path=settings.telemetry_sqlite_path, retention_days=t.retention_days)


async def start_platform(settings: Settings, *, ingest: bool = True, scheduler: bool = True) -> Platform:
    """Open the registry and telemetry store, start the broker/ingest side (unless `ingest=False`: the api and
    scheduler roles) and the scheduled work (unless `scheduler=False`: the api and ingest roles), build the API.
    `marketfleet serve --role` picks these (docs/scale-out.md)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.AsyncExitStack()
    try:
        await db.connect(settings.registry_url)
        stack.push_async_callback(db.close)
        key = master_key(settings)
        registry = Registry(master_key=key, lookups=device_cache(settings.api.lookup_cache_size,
                                                                 settings.api.lookup_cache_ttl_s))
        token = admin_token(settings)
        accounts = Accounts()
        await accounts.ensure_bootstrap_admin(token)

        store = build_store(settings)
        await store.start()
        stack.push_async_callback(store.aclose)
        services: dict[str, Any] = {"store": store}
        # The scorecard's data-loss rate comes from the sequence numbers of stored readings (docs/compliance.md).
        services["compliance"] = setup_compliance(telemetry=store)

        # Rules run in every role (the API serves alerts); where ingest runs they follow the bus below.
        async def publish_alert(topic: str, data: bytes) -> None:
            await services["broker"].publish(topic, data)

        rules_service = setup_rules(
            settings.rules if scheduler else settings.rules.model_copy(update={"scheduler": False}),
            data_dir=settings.data_dir, timezone=settings.market_timezone, telemetry=store,
            publish=publish_alert if ingest else None,
        )
        if not ingest:  # the engine runs where ingest does: announce its alerts from the registry here
            rules_service.mirror_alerts()
        await rules_service.start()
        stack.push_async_callback(rules_service.aclose)
        services["rules"] = rules_service

        # Upward data flow (docs/upstream.md): alerts from the rules here, device events from the bus below.
        upstream_service = setup_upstream(settings.upstream) if settings.upstream.targets else None
        if upstream_service is not None:
            upstream_service.follow(rules_service.stream.subscribe())
            await upstream_service.start(send=scheduler)  # one sender per target: the scheduler role's
            stack.push_async_callback(upstream_service.aclose)  # closes after the broker: its last events go too
            services["upstream"] = upstream_service

        if ingest:
            from broker.service import setup as setup_broker

            broker = setup_broker(
                settings.broker, registry, store,
                username=settings.broker.username or SERVICE_ACCOUNT, password=service_password(settings, key),
                tls_port=settings.tls.mqtt_port, tls_cert_file=settings.tls.cert_file,
                tls_key_file=settings.tls.key_file, tls_only=settings.tls.only,
            )
            # Subscribed before the broker starts, so nothing an early device replays escapes the rules.
            rules_service.follow(broker.bus.subscribe(maxsize=RULES_FEED_BUFFER, name="rules"))
            if upstream_service is not None:
                from broker.bus import PresenceChanged
                from fleet.envelope import Envelope

                upstream_service.follow(broker.bus.subscribe(
                    maxsize=UPSTREAM_FEED_BUFFER, kinds=(Envelope, PresenceChanged), name="upstream"))
            # The ledger must see every scale transaction, also those devices replay the moment the broker is up.
            retail_feed = broker.bus.subscribe(maxsize=100_000, name="retail")
            # Likewise OTA statuses (a status replayed then would otherwise time its job out and retry it).
            firmware_feed = broker.bus.subscribe(maxsize=FIRMWARE_FEED_BUFFER, name="firmware") \
                if settings.firmware.enabled else None
            # Presence history for the device page (broker/presence_log.py): every change, into the store.
            from broker.bus import PresenceChanged as _PresenceChanged
            from broker.presence_log import PresenceLog

            presence_log = PresenceLog(store, broker.bus.subscribe(
                maxsize=PRESENCE_LOG_BUFFER, kinds=(_PresenceChanged,), name="presence-log"))
            presence_log.start()
            stack.push_async_callback(presence_log.aclose)  # after the broker closes: its last changes are kept
            await broker.start()
            stack.push_async_callback(broker.aclose)
            services.update(broker=broker, pipeline=broker.pipeline, bus=broker.bus)
            from broker.transports import start_transports

            services.update(await start_transports(settings, registry, broker.pipeline, stack, broker.presence))

        if not ingest and settings.broker.mode == "external" and settings.broker.admin_username:
            # An api process registers, rotates and revokes devices too: it provisions Mosquitto itself, so a
            # device registered through it connects at once (ingest processes reconcile at their start).
            from broker.dynsec import DynsecProvisioner

            b = settings.broker
            provisioner = DynsecProvisioner(
                host=b.host, port=b.port, admin_username=b.admin_username,
                admin_password=b.admin_password.get_secret_value(), service_username=b.username or SERVICE_ACCOUNT,
                service_password=service_password(settings, key), share_group=b.shared_group,
            )
            await provisioner.start()
            stack.push_async_callback(provisioner.aclose)
            registry.listeners.append(provisioner)
            services["provisioner"] = provisioner

        # Firmware: campaigns are managed in every role; the orchestrator, its MQTT downlink and the feed of
        # ota_status events run where ingest runs (one orchestrator per fleet).
        firmware_service = setup_firmware(
            settings.firmware, registry=registry, data_dir=settings.data_dir,
            send=_ota_downlink(services["broker"]) if ingest else no_downlink,
            http_base_url=f"http://{settings.api.host}:{settings.api.port}",
            coap_base_url=f"coap://{settings.coap.host}:{settings.coap.port}",
        )
        if ingest and settings.firmware.enabled:
            firmware_service.follow(firmware_feed)
            if "coap" in services:  # CoAP Block2 downloads for constrained devices and ESL base stations
                coap = services["coap"]
                coap.mount(("mf", "v1", "fw"), firmware_service.coap_resource(coap.authenticated_device))
            await firmware_service.start()
        stack.push_async_callback(firmware_service.aclose)
        services["firmware"] = firmware_service

        # Retail (docs/retail.md): prices, shelf labels, the scale ledger. Where ingest runs it follows the bus,
        # sends to labels and scales, and runs its sweeps (timed price changes, label re-sends, scale tables); an
        # api process records changes, which those sweeps send (retail.transport.DeferredCommands).
        from broker.topics import down_topic
        from retail.service import setup as setup_retail
        from retail.transport import DeferredCommands, PlatformCommands

        retail_service = setup_retail(PlatformCommands(services, down_topic) if ingest else DeferredCommands(),
                                      transaction_retention_days=settings.retail.transaction_retention_days)
        if ingest:
            await retail_service.start(retail_feed)
        stack.push_async_callback(retail_service.aclose)
        services["retail"] = retail_service

        ctx = ApiContext(
            registry=registry, accounts=accounts, admin_token=token,
            max_bulk_devices=settings.api.max_bulk_devices, services=services,
            rate_limits=(a.key_rate, a.key_burst, a.ip_rate, a.ip_burst) if (a := settings.api).rate_limits else None,
        )
        app = create_app(ctx)
    except BaseException:
        await stack.aclose()
        raise
    return Platform(settings=settings, registry=registry, admin_token=token, app=app, store=store,
                    services=services, _stack=stack)


def _ota_downlink(broker: Any) -> Any:
    from broker.topics import down_topic

    return mqtt_downlink(broker.publish, down_topic)


@contextlib.asynccontextmanager
async def running_platform(settings: Settings, *, ingest: bool = True, scheduler: bool = True
                           ) -> AsyncIterator[Platform]:
    platform = await start_platform(settings, ingest=ingest, scheduler=scheduler)
    try:
        yield platform
    finally:
        await platform.aclose()
