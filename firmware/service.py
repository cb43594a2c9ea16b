"""The firmware package's one entry for the composition root: `setup(...) -> FirmwareService`.

    firmware = setup(settings.firmware, registry=registry, data_dir=settings.data_dir,
                     send=mqtt_downlink(broker.publish, down_topic))
    firmware.follow(bus.subscribe(name="firmware"))   # ota_status events from the ingest bus
    coap.mount(("mf", "v1", "fw"), firmware.coap_resource(coap.authenticated_device))
    await firmware.start()                            # the orchestrator task
    services["firmware"] = firmware                   # api/routes/firmware.py reads it from there
    ...
    await firmware.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocoap import message
from pydantic import ValidationError

from firmware.blobs import BlobStore, LocalBlobStore
from firmware.campaigns import CampaignService
from firmware.coap import FirmwareBlockSite, coap_firmware_resource
from firmware.delivery import Delivery
from firmware.errors import IllegalTransition, JobNotFound
from firmware.images import ImageCatalog
from firmware.models import FirmwareImage
from firmware.orchestrator import Clock, OrchestratorConfig, OrchestratorService, Send, StatusOutcome
from firmware.schemas import OtaStatus, SigningKeyPublic
from firmware.settings import FirmwareSettings
from firmware.signing import KeyPair, load_or_create_keypair
from fleet.errors import NotFound
from fleet.models import Device
from fleet.registry import Registry

__all__ = ["FirmwareService", "FirmwareSettings", "mqtt_downlink", "setup"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int], Awaitable[None]]
TopicFor = Callable[[str | None, str, str], str]


def mqtt_downlink(publish: Publish, topic_for: TopicFor) -> Send:
    """The orchestrator's `send`: a job announcement as JSON on `mf/v1/{market}/{device}/down/ota`, QoS 1."""

    async def send(device: Device, payload: dict[str, Any]) -> None:
        topic = topic_for(device.market_id, device.id, "ota")  # type: ignore[attr-defined]
        await publish(topic, json.dumps(payload, separators=(",", ":")).encode(), 1)

    return send


async def no_downlink(device: Device, payload: dict[str, Any]) -> None:
    """For a process without a broker (the API-only role): announcing is the ingest process's job."""
    raise ConnectionError("this process has no downlink; the OTA orchestrator runs where ingest runs")


@dataclass
class FirmwareService:
    settings: FirmwareSettings
    keypair: KeyPair
    blobs: BlobStore
    images: ImageCatalog
    campaigns: CampaignService
    orchestrator: OrchestratorService
    delivery: Delivery
    status_errors: int = 0  # statuses refused (foreign job, illegal step, malformed): the device's fault
    _feeds: list[asyncio.Task[None]] = field(default_factory=list)
    _subscriptions: list[Any] = field(default_factory=list)

    async def start(self) -> None:
        await self.orchestrator.start()

    async def aclose(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                subscription.close()
        for task in self._feeds:
            task.cancel()
        for task in self._feeds:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._feeds.clear()
        self._subscriptions.clear()
        await self.orchestrator.aclose()

    def follow(self, events: AsyncIterator[Any]) -> None:
        """Apply every `ota_status` event in `events` (envelopes from the ingest bus: `device_id`, `channel`,
        `payload`) until it ends. Statuses are applied one at a time, in order, so a job's steps never race."""
        if hasattr(events, "close"):
            self._subscriptions.append(events)
        self._feeds.append(asyncio.create_task(self._consume(events), name="firmware-status-feed"))

    async def _consume(self, events: AsyncIterator[Any]) -> None:
        async for envelope in events:
            payload = getattr(envelope, "payload", None)
            if (
                str(getattr(envelope, "channel", "")) != "event"
                or not isinstance(payload, dict)
                or payload.get("type") != "ota_status"
            ):
                continue
            try:
                await self.on_status(envelope.device_id, payload)
            except (JobNotFound, IllegalTransition, ValidationError) as err:
                self.status_errors += 1
                log.warning("ota_status from %s refused: %s", envelope.device_id, err)
            except Exception:  # a database hiccup must not end the feed; the job times out and is retried
                self.status_errors += 1
                log.exception("ota_status from %s could not be applied", envelope.device_id)

    async def __aenter__(self) -> FirmwareService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def on_status(self, device_id: str, status: OtaStatus | dict[str, Any]) -> StatusOutcome:
        """Feed one `ota_status` event (from the ingest bus) to the orchestrator."""
        return await self.orchestrator.on_status(device_id, status)

    def signing_key(self) -> SigningKeyPublic:
        return SigningKeyPublic(key_id=self.keypair.key_id, public_key=self.keypair.public_key)

    def coap_resource(self, authenticated_device: Callable[[message.Message], str | None]) -> FirmwareBlockSite:
        """The Block2 resource to mount at ("mf", "v1", "fw"): readable by a device the transport authenticated
        (`authenticated_device(request)`, OSCORE) that may fetch the image, as over HTTP."""

        async def authorise(request: message.Message, image: FirmwareImage) -> bool:
            device_id = authenticated_device(request)
            device = await Device.get_or_none(id=device_id) if device_id else None
            if device is None:
                return False
            try:
                await self.delivery.image_for(device, image.id)
            except NotFound:
                return False
            return True

        return coap_firmware_resource(self.blobs, authorise)


def setup(
    settings: FirmwareSettings,
    *,
    registry: Registry,
    data_dir: Path,
    send: Send,
    clock: Clock | None = None,
    blobs: BlobStore | None = None,
    http_base_url: str = "http://127.0.0.1:8000",
    coap_base_url: str = "coap://127.0.0.1:5683",
) -> FirmwareService:
    """Build the firmware service; `start()` runs the orchestrator. `send(device, payload)` delivers a job
    announcement to a device (MQTT `…/down/ota` or CoAP); it should return once the transport has it.
    The base URLs are where devices download from, unless the settings name others."""
    keypair = load_or_create_keypair(Path(settings.signing_key_path or data_dir / "firmware-signing.key"))
    store = blobs or LocalBlobStore(Path(settings.blob_dir or data_dir / "firmware"))
    orchestrator = OrchestratorService(
        OrchestratorConfig(
            http_base_url=settings.http_base_url or http_base_url,
            coap_base_url=settings.coap_base_url or coap_base_url,
            tick_s=settings.tick_s,
            enrol_interval_s=settings.enrol_interval_s,
            announce_batch=settings.announce_batch,
            send_concurrency=settings.send_concurrency,
            relay_batch=settings.relay_batch,
            default_timezone=settings.default_timezone,
        ),
        send=send,
        clock=clock,
    )
    return FirmwareService(
        settings=settings,
        keypair=keypair,
        blobs=store,
        images=ImageCatalog(store, keypair, settings.max_image_bytes),
        campaigns=CampaignService(orchestrator),
        orchestrator=orchestrator,
        delivery=Delivery(registry, store),
    )

