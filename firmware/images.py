"""The image catalog: vendors upload images for their own models; the platform hashes, signs and stores them."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator

from tortoise.exceptions import IntegrityError

from firmware.blobs import BlobStore
from firmware.errors import ImageInvalid, ImageNotFound
from firmware.models import FirmwareImage
from firmware.schemas import ImageUpload
from firmware.signing import KeyPair, sign_digest
from firmware.verify import ImageRejected, verify_digest
from fleet.errors import Conflict
from fleet.models import DeviceModel, Vendor


class ImageCatalog:
    def __init__(self, blobs: BlobStore, keypair: KeyPair, max_image_bytes: int) -> None:
        self.blobs = blobs
        self.keypair = keypair
        self.max_image_bytes = max_image_bytes

    async def upload(self, vendor: Vendor, meta: ImageUpload, chunks: AsyncIterable[bytes]) -> FirmwareImage:
        """Store an image for one of the vendor's models; validated before and after the bytes arrive."""
        model = await DeviceModel.get_or_none(vendor=vendor, name=meta.model)
        if model is None:
            raise ImageInvalid(f"model: no model {meta.model!r} registered by this vendor")
        compatible = [model.id]
        for index, name in enumerate(meta.compatible_models):
            other = await DeviceModel.get_or_none(vendor=vendor, name=name)
            if other is None:
                raise ImageInvalid(f"compatible_models[{index}]: no model {name!r} registered by this vendor")
            if other.kind != model.kind:
                raise ImageInvalid(
                    f"compatible_models[{index}]: {name!r} is a {other.kind} model, {meta.model!r} a {model.kind}"
                )
            if other.id not in compatible:
                compatible.append(other.id)
        if await FirmwareImage.exists(model=model, version=meta.version):
            raise Conflict(f"version: {meta.version} of {meta.model!r} is already uploaded; versions are immutable")

        blob_key = f"images/{model.id}/{meta.version}-{secrets.token_hex(6)}.bin"
        digest = hashlib.sha256()
        size = await self.blobs.put(blob_key, self._hashed(chunks, digest))
        try:
            sha256 = digest.hexdigest()
            if size == 0:
                raise ImageInvalid("file: the image is empty")
            if meta.sha256 and meta.sha256 != sha256:
                raise ImageInvalid(f"sha256: the upload's SHA-256 is {sha256}, not the declared {meta.sha256}")
            if meta.signature:
                try:
                    verify_digest(sha256, meta.signature, self.keypair.public_key)
                except ImageRejected as err:
                    raise ImageInvalid(f"signature: {err.detail or err.reason}") from err
                signature = meta.signature
            else:
                signature = sign_digest(sha256, self.keypair)
            return await FirmwareImage.create(
                model=model,
                version=meta.version,
                release_notes=meta.release_notes,
                sha256=sha256,
                size=size,
                signature=signature,
                key_id=self.keypair.key_id,
                blob_key=blob_key,
                compatible_model_ids=compatible,
                from_versions=meta.from_versions,
            )
        except IntegrityError as err:
            await self.blobs.delete(blob_key)
            raise Conflict(f"version: {meta.version} of {meta.model!r} was uploaded concurrently") from err
        except BaseException:
            await self.blobs.delete(blob_key)
            raise

    async def _hashed(self, chunks: AsyncIterable[bytes], digest: hashlib._Hash) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_image_bytes:
                raise ImageInvalid(f"file: larger than the limit of {self.max_image_bytes} bytes")
            digest.update(chunk)
            yield chunk

    async def get(self, image_id: int, vendor_id: int | None = None) -> FirmwareImage:
        """An image; with `vendor_id`, only one of that vendor's (another vendor's is NotFound)."""
        query = FirmwareImage.filter(id=image_id)
        if vendor_id is not None:
            query = query.filter(model__vendor_id=vendor_id)
        image = await query.first()
        if image is None:
            raise ImageNotFound(f"image {image_id} not found")
        return image

    async def list(self, vendor_id: int | None = None, model_id: int | None = None) -> list[FirmwareImage]:
        query = FirmwareImage.all()
        if vendor_id is not None:
            query = query.filter(model__vendor_id=vendor_id)
        if model_id is not None:
            query = query.filter(model_id=model_id)
        return await query.order_by("-id")
