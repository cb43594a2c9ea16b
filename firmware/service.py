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
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocoap import message
from pydantic import ValidationError
from tortoise.transactions import in_transaction

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
STATUS_BATCH = 500  # statuses applied in one transaction

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


def _event(is_set: bool) -> asyncio.Event:
    event = asyncio.Event()
    if is_set:
        event.set()
    return event


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
    statuses_applied: int = 0
    _feeds: list[asyncio.Task[None]] = field(default_factory=list)
    _subscriptions: list[Any] = field(default_factory=list)
    _queue: collections.deque[tuple[str, Any]] = field(default_factory=collections.deque)
    _queued: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=lambda: _event(True))
    _applier: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.orchestrator.start()
        if self._applier is None:
            self._applier = asyncio.create_task(self._apply_queued(), name="firmware-status-applier")

    async def aclose(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                subscription.close()
        tasks = [*self._feeds, *([self._applier] if self._applier is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._feeds.clear()
        self._subscriptions.clear()
        self._applier = None
        await self.orchestrator.aclose()

    def follow(self, events: AsyncIterator[Any]) -> None:
        """Apply every `ota_status` event in `events` (envelopes from the ingest bus: `device_id`, `channel`,
        `payload`) until it ends, through the same queue as `report`."""
        if hasattr(events, "close"):
            self._subscriptions.append(events)
        self._feeds.append(asyncio.create_task(self._consume(events), name="firmware-status-feed"))

    async def _consume(self, events: AsyncIterator[Any]) -> None:
        async for envelope in events:
            payload = getattr(envelope, "payload", None)
            if (
                str(getattr(envelope, "channel", "")) == "event"
                and isinstance(payload, dict)
                and payload.get("type") == "ota_status"
            ):
                self.report(envelope.device_id, payload)

    def report(self, device_id: str, status: OtaStatus | dict[str, Any]) -> None:
        """Queue one status; never waits. The queue is applied in order, so a job's steps never race."""
        self._queue.append((device_id, status))
        self._idle.clear()
        self._queued.set()

    async def _apply_queued(self) -> None:
        """Apply queued statuses in batches, each batch in one transaction: an ESL base station reports for
        hundreds of labels at once, and one commit per status would make the database the bottleneck."""
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(STATUS_BATCH, len(self._queue)))]
                try:
                    async with in_transaction():
                        await self._apply_batch(batch)
                except Exception:  # the database failed mid-batch: it rolled back, so apply one by one
                    log.warning("firmware status batch failed; applying its %s statuses one by one", len(batch))
                    for device_id, status in batch:
                        try:
                            await self._apply(device_id, status)
                        except Exception:  # the job times out and is retried; the feed goes on
                            self.status_errors += 1
                            log.exception("ota_status from %s could not be applied", device_id)
            if not self._queue:
                self._idle.set()

    async def _apply_batch(self, batch: list[tuple[str, Any]]) -> None:
        parsed: list[tuple[str, OtaStatus]] = []
        for device_id, status in batch:
            try:
                valid = status if isinstance(status, OtaStatus) else OtaStatus.model_validate(status)
                parsed.append((device_id, valid))
            except ValidationError as err:
                self.status_errors += 1
                log.warning("ota_status from %s refused: %s", device_id, err)
        leftovers = await self.orchestrator.on_statuses(parsed)
        self.statuses_applied += len(parsed) - len(leftovers)
        for device_id, status in leftovers:
            await self._apply(device_id, status)

    async def _apply(self, device_id: str, status: OtaStatus | dict[str, Any]) -> None:
        try:
            await self.orchestrator.on_status(device_id, status)
            self.statuses_applied += 1
        except (JobNotFound, IllegalTransition, ValidationError) as err:
            self.status_errors += 1
            log.warning("ota_status from %s refused: %s", device_id, err)

    async def drained(self) -> None:
        """Wait until every queued status is applied (tests, benchmarks, shutdown)."""
        if self._queue:
            self._idle.clear()
        await self._idle.wait()

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

