"""CoAP Block2 delivery (RFC 7959): the resource the CoAP transport mounts at `mf/v1/fw/{image_id}`.

Each block is read from the blob store on its own, so a battery device (or an ESL base station on a lossy
link) can fetch block N after a sleep or a reboot without the server holding the image in memory: resuming is
asking for the next block number. The ETag option is the first 8 bytes of the SHA-256 and Size2 the length,
so the device knows what it is assembling. Authentication is the transport's (docs/coap.md); it may pass an
`authorise(request, image)` check that decides whether this requester may read this image.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiocoap import error, message, resource
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat

from firmware.blobs import BlobStore
from firmware.models import FirmwareImage

Authorise = Callable[[message.Message, FirmwareImage], Awaitable[bool]]
DEFAULT_SZX = 6  # 1024-byte blocks, the largest RFC 7959 block
OCTET_STREAM = ContentFormat(42)


class FirmwareBlockResource(resource.Resource):
    """One image, served block by block; `image_id=None` takes the id from the remaining path (mounted as a
    path-capable site under `mf/v1/fw`)."""

    def __init__(self, blobs: BlobStore, image_id: int | None = None, authorise: Authorise | None = None) -> None:
        super().__init__()
        self.blobs = blobs
        self.image_id = image_id
        self.authorise = authorise

    async def needs_blockwise_assembly(self, request: Any) -> bool:
        return False  # we slice blocks ourselves, straight from storage

    async def render_get(self, request: message.Message) -> message.Message:
        image = await self._image(request)
        if self.authorise is not None and not await self.authorise(request, image):
            raise error.Unauthorized("device credential required")
        block = request.opt.block2
        szx = min(block.size_exponent if block is not None else DEFAULT_SZX, DEFAULT_SZX)
        limit = getattr(request.remote, "maximum_block_size_exp", DEFAULT_SZX)
        szx = min(szx, limit if isinstance(limit, int) else DEFAULT_SZX)
        number = block.block_number if block is not None else 0
        if block is not None and block.size_exponent > szx:
            # RFC 7959 §2.4: answering with a smaller block means renumbering the requested offset
            number = (block.block_number << (block.size_exponent - szx))
        size = 2 ** (szx + 4)
        start = number * size
        if start >= image.size:
            raise error.BadRequest(f"block {number} lies beyond the {image.size} bytes of the image")
        payload = await self.blobs.read_range(image.blob_key, start, size)
        response = message.Message(code=Code.CONTENT, payload=payload, content_format=OCTET_STREAM)
        response.opt.block2 = (number, start + len(payload) < image.size, szx)
        response.opt.etag = bytes.fromhex(image.sha256)[:8]
        response.opt.size2 = image.size
        return response

    async def _image(self, request: message.Message) -> FirmwareImage:
        image_id = self.image_id
        if image_id is None:
            path = list(request.opt.uri_path)
            if len(path) != 1 or not path[0].isdigit():
                raise error.NotFound()
            image_id = int(path[0])
        image = await FirmwareImage.get_or_none(id=image_id)
        if image is None:
            raise error.NotFound()
        return image


class FirmwareBlockSite(FirmwareBlockResource, resource.PathCapable):
    """Every image under one mount point: `site.add_resource(("mf", "v1", "fw"), FirmwareBlockSite(...))`."""

    def get_link_description(self) -> dict[str, Any] | None:
        return None  # image ids are not advertised in /.well-known/core


def coap_firmware_resource(blobs: BlobStore, authorise: Authorise | None = None) -> FirmwareBlockSite:
    """The factory the CoAP transport calls: mount the result at ("mf", "v1", "fw")."""
    return FirmwareBlockSite(blobs, None, authorise)


def coap_image_resource(blobs: BlobStore, image_id: int, authorise: Authorise | None = None) -> FirmwareBlockResource:
    """One image as a fixed resource, for a transport that mounts `mf/v1/fw/<id>` per image."""
    return FirmwareBlockResource(blobs, image_id, authorise)
