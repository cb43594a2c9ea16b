"""Getting image bytes to devices: who may download, and which bytes (HTTP Range, RFC 9110 §14).

A download interrupted half-way resumes with `Range: bytes=<received>-` and `If-Range: <etag>`; the ETag is the
image's SHA-256, so a device never splices bytes of two different images. The HTTP route lives in
`api/routes/firmware.py`, the CoAP Block2 resource in `firmware/coap.py`; both read through the `BlobStore`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware.blobs import BlobStore
from firmware.errors import ImageNotFound
from firmware.models import DeviceJob, FirmwareImage
from firmware.states import NOT_TERMINAL
from fleet.errors import Unauthorised
from fleet.models import Device
from fleet.registry import Registry

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ValueError):
    """The Range header names no bytes of the image (answered 416 with `Content-Range: bytes */<size>`)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a request asks for; None for the whole image. Pure."""
    if header is None or not header.strip():
        return None
    spec = header.strip().replace(" ", "")
    if "," in spec:
        raise RangeNotSatisfiable("one range per request")
    match = _RANGE.match(spec)
    if match is None or match.groups() == ("", ""):
        raise RangeNotSatisfiable(f"malformed range {header!r}; send bytes=<first>-[<last>]")
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("a suffix range of zero bytes")
        return ByteRange(max(0, size - length), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"range {header!r} lies outside the {size} bytes of the image")
    return ByteRange(start, end)


def etag_for(sha256: str) -> str:
    return f'"{sha256}"'


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """Whether a conditional range may be served: no If-Range, or it names this very image."""
    return if_range is None or if_range.strip() == etag


class Delivery:
    """Device authentication and image lookup for downloads over any transport."""

    def __init__(self, registry: Registry, blobs: BlobStore) -> None:
        self.registry = registry
        self.blobs = blobs

    async def device_for(self, authorization: str | None) -> Device:
        """The device presenting `Authorization: Bearer <device_id>:<secret>`; Unauthorised otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        device_id, sep, secret = token.strip().partition(":")
        if scheme.lower() != "bearer" or not sep or not device_id or not secret:
            raise Unauthorised("device credential required: send 'Authorization: Bearer <device_id>:<secret>'")
        device = await self.registry.check_device_secret(device_id, secret)
        if device is None:
            raise Unauthorised("unknown device, wrong secret, or device disabled")
        return device

    async def image_for(self, device: Device, image_id: int) -> FirmwareImage:
        """The image, if this device may fetch it: its model can take it, or it relays it to labels (an ESL base
        station) or has a job for it. Otherwise NotFound, so image ids cannot be probed."""
        image = await FirmwareImage.get_or_none(id=image_id)
        if image is None:
            raise ImageNotFound(f"image {image_id} not found")
        if device.model_id in image.compatible_model_ids:  # type: ignore[attr-defined]
            return image
        has_job = await DeviceJob.filter(
            relay_device_id=device.id, campaign__image_id=image.id, state__in=list(NOT_TERMINAL)
        ).exists() or await DeviceJob.filter(device_id=device.id, campaign__image_id=image.id).exists()
        if not has_job:
            raise ImageNotFound(f"image {image_id} not found")
        return image
