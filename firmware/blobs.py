"""Where image bytes live: the `BlobStore` interface and its local-directory backend.

Images are written once under a content-derived key and read back by byte ranges (HTTP Range, CoAP Block2),
so a backend needs only put, size, ranged read and delete. An object-store backend (S3 ranged GET) fits the
same interface later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


class BlobNotFound(LookupError):
    pass


class BlobStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the chunks under `key` (replacing it atomically); returns the number of bytes."""
        ...

    async def size(self, key: str) -> int:
        """Length in bytes; BlobNotFound when absent."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """Bytes `start` … `end` (inclusive; None: to the end) in chunks."""
        ...

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        """At most `length` bytes from `start` in one piece (a CoAP block)."""
        ...

    async def delete(self, key: str) -> None: ...


class LocalBlobStore:
    """Blobs as files under one directory; writes go to a temporary name and are renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        written = 0
        handle = await asyncio.to_thread(open, partial, "wb")
        try:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
                written += len(chunk)
            await asyncio.to_thread(_flush_and_sync, handle)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        handle.close()
        await asyncio.to_thread(os.replace, partial, path)
        return written

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError as err:
            raise BlobNotFound(key) from err

    async def read(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = 65536
    ) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(open, self._path(key), "rb")
        except FileNotFoundError as err:
            raise BlobNotFound(key) from err
        try:
            await asyncio.to_thread(handle.seek, start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                want = chunk_size if left is None else min(chunk_size, left)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        return await asyncio.to_thread(_pread, self._path(key), start, length)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(key).unlink)


def _flush_and_sync(handle) -> None:  # type: ignore[no-untyped-def]
    handle.flush()
    os.fsync(handle.fileno())


def _pread(path: Path, start: int, length: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)
    except FileNotFoundError as err:
        raise BlobNotFound(str(path.name)) from err
