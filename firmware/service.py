"""The firmware package's one entry for the composition root: `setup(...) -> FirmwareService`.

    firmware = setup(settings.firmware, registry=registry, data_dir=settings.data_dir, send=ota_downlink)
    await firmware.start()                      # the orchestrator task
    ctx.services["firmware"] = firmware         # api/routes/firmware.py reads it from there
    app.include_router(api.routes.firmware.router)
    coap_site.add_resource(("mf", "v1", "fw"), firmware.coap_resource(authorise=...))
    bus.on_event("ota_status", firmware.on_status)   # wherever the ingest bus delivers device events
    ...
    await firmware.aclose()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from firmware.blobs import BlobStore, LocalBlobStore
from firmware.campaigns import CampaignService
from firmware.coap import Authorise, FirmwareBlockSite, coap_firmware_resource
from firmware.delivery import Delivery
from firmware.images import ImageCatalog
from firmware.orchestrator import Clock, OrchestratorConfig, OrchestratorService, Send, StatusOutcome
from firmware.schemas import OtaStatus, SigningKeyPublic
from firmware.signing import KeyPair, load_or_create_keypair
from fleet.registry import Registry


class FirmwareSettings(BaseModel):
    """What `Settings.firmware` holds (env `MF_FIRMWARE__…`); empty paths default under the data directory."""

    blob_dir: str = Field(default="", description="image store; {data_dir}/firmware when empty")
    signing_key_path: str = Field(default="", description="Ed25519 key; {data_dir}/firmware-signing.key")
    http_base_url: str = Field(default="http://127.0.0.1:8000", description="how devices reach the API")
    coap_base_url: str = Field(default="coap://127.0.0.1:5683", description="how devices reach CoAP")
    max_image_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    tick_s: float = Field(default=1.0, gt=0, description="orchestrator pass interval (results also wake it)")
    enrol_interval_s: float = Field(default=30.0, ge=0, description="how often dynamic campaigns look for devices")
    announce_batch: int = Field(default=500, ge=1)
    send_concurrency: int = Field(default=64, ge=1)
    relay_batch: int = Field(default=200, ge=1, description="labels per ESL base-station announcement")
    default_timezone: str = Field(default="Asia/Shanghai", description="for devices not placed in a market")


@dataclass
class FirmwareService:
    settings: FirmwareSettings
    keypair: KeyPair
    blobs: BlobStore
    images: ImageCatalog
    campaigns: CampaignService
    orchestrator: OrchestratorService
    delivery: Delivery

    async def start(self) -> None:
        await self.orchestrator.start()

    async def aclose(self) -> None:
        await self.orchestrator.aclose()

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

    def coap_resource(self, authorise: Authorise | None = None) -> FirmwareBlockSite:
        """The Block2 resource to mount at ("mf", "v1", "fw")."""
        return coap_firmware_resource(self.blobs, authorise)


def setup(
    settings: FirmwareSettings,
    *,
    registry: Registry,
    data_dir: Path,
    send: Send,
    clock: Clock | None = None,
    blobs: BlobStore | None = None,
) -> FirmwareService:
    """Build the firmware service; `start()` runs the orchestrator. `send(device, payload)` delivers a job
    announcement to a device (MQTT `…/down/ota` or CoAP); it should return once the transport has it."""
    keypair = load_or_create_keypair(Path(settings.signing_key_path or data_dir / "firmware-signing.key"))
    store = blobs or LocalBlobStore(Path(settings.blob_dir or data_dir / "firmware"))
    orchestrator = OrchestratorService(
        OrchestratorConfig(
            http_base_url=settings.http_base_url,
            coap_base_url=settings.coap_base_url,
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

