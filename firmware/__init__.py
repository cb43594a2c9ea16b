"""Firmware and OTA: signed images, campaigns in waves, delivery over HTTP Range and CoAP Block2, and each
device's update state. See docs/ota.md.

Public API (imported lazily, so device-side code can import `firmware.verify` without the platform):

* `setup(settings, registry=…, data_dir=…, send=…) -> FirmwareService`, `FirmwareSettings`
* `OrchestratorService` (`on_status(device_id, OtaStatus)`), `CampaignService`, `ImageCatalog`
* `BlobStore`, `LocalBlobStore`; `generate_keypair`, `sign` (and `firmware.signing.verify`)
* device side (no platform imports): `verify_image`, `ImageVerifier`, `ImageRejected`, `ImageDownload`,
  `OtaClient` with `Faults`, `RadioModel`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "setup": "firmware.service",
    "FirmwareService": "firmware.service",
    "FirmwareSettings": "firmware.settings",
    "mqtt_downlink": "firmware.service",
    "OrchestratorService": "firmware.orchestrator",
    "StatusOutcome": "firmware.orchestrator",
    "CampaignService": "firmware.campaigns",
    "ImageCatalog": "firmware.images",
    "BlobStore": "firmware.blobs",
    "LocalBlobStore": "firmware.blobs",
    "generate_keypair": "firmware.signing",
    "sign": "firmware.signing",
    "verify_image": "firmware.verify",
    "ImageVerifier": "firmware.verify",
    "ImageRejected": "firmware.verify",
    "coap_firmware_resource": "firmware.coap",
    "OtaClient": "firmware.client",
    "Faults": "firmware.client",
    "RadioModel": "firmware.device",
    "ImageDownload": "firmware.device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
