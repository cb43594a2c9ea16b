"""Reference device-side download: resumable HTTP Range fetch with streaming verification.

For simulators and Linux-class devices (httpx + firmware/verify.py, nothing of the platform). The bytes received
so far live in `ImageDownload.data` (a real device writes them to its spare slot and keeps the offset in
flash); after a break, `resume()` asks for `Range: bytes=<received>-` with `If-Range: <etag>`, so it continues
where it stopped, or starts over if the image behind the URL changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from firmware.verify import ImageRejected, ImageVerifier


class DownloadInterrupted(Exception):
    """The transfer broke off; call `resume()` to continue from `received`."""


@dataclass
class ImageDownload:
    url: str
    device_id: str
    secret: str
    sha256: str
    signature: str
    public_key: str
    size: int
    chunk_size: int = 64 * 1024  # bytes per Range request
    data: bytearray = field(default_factory=bytearray)
    etag: str | None = None
    requests: int = 0
    transferred: int = 0  # body bytes received over every request, so resumed and repeated bytes count

    @property
    def received(self) -> int:
        return len(self.data)

    @property
    def done(self) -> bool:
        return self.received >= self.size

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.device_id}:{self.secret}"}
        if self.received:
            headers["If-Range"] = self.etag or f'"{self.sha256}"'
        return headers

    async def fetch_next(self, client: httpx.AsyncClient, stop_after: int | None = None) -> None:
        """One Range request for the next chunk; `stop_after` bytes simulates a link that breaks mid-body."""
        end = min(self.size, self.received + self.chunk_size) - 1
        headers = self._headers() | {"Range": f"bytes={self.received}-{end}"}
        self.requests += 1
        async with client.stream("GET", self.url, headers=headers) as response:
            if response.status_code == 200:
                self.data.clear()  # the image changed (If-Range failed) or ranges are ignored: start over
            elif response.status_code != 206:
                await response.aread()
                raise DownloadInterrupted(f"HTTP {response.status_code}: {response.text[:200]}")
            self.etag = response.headers.get("etag", self.etag)
            got = 0
            async for chunk in response.aiter_bytes():
                if stop_after is not None and got + len(chunk) >= stop_after:
                    self.data += chunk[: stop_after - got]
                    self.transferred += stop_after - got
                    raise DownloadInterrupted(f"link broke after {self.received} bytes")
                self.data += chunk
                got += len(chunk)
                self.transferred += len(chunk)

    async def resume(self, client: httpx.AsyncClient) -> bytes:
        """Fetch the rest, then verify; raises ImageRejected when the bytes are not the signed image."""
        while not self.done:
            await self.fetch_next(client)
        return self.verify()

    def verify(self) -> bytes:
        if self.etag is not None and self.etag.strip('"') != self.sha256:
            raise ImageRejected("hash_mismatch", f"server ETag {self.etag} is not the announced image")
        verifier = ImageVerifier(self.sha256, self.signature, self.public_key, self.size)
        verifier.update(bytes(self.data))
        verifier.finish()
        return bytes(self.data)


@dataclass(frozen=True)
class RadioModel:
    """How long an ESL base station takes to flash one label over the air, for simulators and for reading the
    benchmark: the label link's bitrate, the share of it left after framing, acks and retries, how many labels a
    station flashes at once, and the fixed time per label (waking on the next beacon, verifying, rebooting).

    The defaults are a 2.4 GHz proprietary ESL radio (vendors quote 100 kbit/s to 1 Mbit/s) at 250 kbit/s, half
    of it useful, four labels per station at once, 15 s fixed: a 256 KiB image then takes ~32 s per label.
    """

    bitrate_bps: float = 250_000
    efficiency: float = 0.5
    channels: int = 4
    per_label_s: float = 15.0

    def label_seconds(self, image_bytes: int) -> float:
        return image_bytes * 8 / (self.bitrate_bps * self.efficiency) + self.per_label_s

    def labels_per_hour(self, stations: int, image_bytes: int) -> float:
        return stations * self.channels * 3600 / self.label_seconds(image_bytes)

    def describe(self) -> str:
        return (f"{self.bitrate_bps / 1000:g} kbit/s x {self.efficiency:g}, {self.channels} labels at once per "
                f"station, +{self.per_label_s:g} s per label")  # fmt: skip
