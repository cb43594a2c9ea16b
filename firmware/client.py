"""A device's OTA client, for simulators and Linux-class devices: takes a job announcement from `down/ota`,
downloads (HTTP Range, resuming after breaks), verifies, "installs" and reports every step as `ota_status`.

Nothing of the platform: httpx, firmware/verify.py, firmware/device.py and the announcement models. The device
supplies `report(payload)`, which puts an `ota_status` event on its own uplink (its outbox, its `seq`). `Faults`
make it misbehave the ways real devices do, so campaigns' thresholds and abort rules have something to catch.

    client = OtaClient(device_id, secret, public_key, version="1.0.0", report=device.send_event, http=http)
    await client.handle(json.loads(down_ota_payload))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from firmware.device import DownloadInterrupted, ImageDownload, RadioModel
from firmware.schemas import (
    ANNOUNCEMENT,
    CancelAnnouncement,
    ImageRef,
    InstallAnnouncement,
    RelayAnnouncement,
    RollbackAnnouncement,
)
from firmware.verify import ImageRejected

Report = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Faults:
    """Ways to fail, each as a real device does."""

    fail_install: bool = False  # the flash write fails: failed, "flash_write_error" (retried by the platform)
    corrupt: bool = False  # one byte damaged in transit: the device refuses it, "hash_mismatch"
    forged_signature: str | None = None  # a signature (base64) swapped into the announcement: "bad_signature"
    power_loss: bool = False  # power lost half-way through the first download; after the reboot it resumes
    wrong_version: bool = False  # the new slot does not boot: falls back and reports the old version
    silent: bool = False  # never answers (the platform times the job out)


@dataclass
class OtaClient:
    device_id: str
    secret: str
    public_key: str  # the platform's, from GET /api/v1/firmware/signing-key
    version: str
    report: Report
    http: httpx.AsyncClient
    faults: Faults = field(default_factory=Faults)
    radio: RadioModel | None = None  # an ESL base station: how long flashing a label takes
    time_scale: float = 0.0  # 1.0: sleep the radio's real time; 0: none (benchmarks, tests)
    chunk_size: int = 64 * 1024
    max_breaks: int = 5
    downloads: int = 0
    bytes_fetched: int = 0  # over every request, resumed ones included
    cancelled: set[str] = field(default_factory=set)

    async def handle(self, payload: dict[str, Any]) -> None:
        """Act on one announcement until its job is finished (or refused); invalid payloads raise ValueError."""
        job = ANNOUNCEMENT.validate_python(payload)
        if isinstance(job, CancelAnnouncement):
            self.cancelled.add(job.job_id)
            return
        if self.faults.silent:
            return
        if isinstance(job, RollbackAnnouncement):
            await self._status(job.job_id, "rebooting", 50)
            self.version = job.to_version
            await self._status(job.job_id, "succeeded", 100, version=self.version)
        elif isinstance(job, RelayAnnouncement):
            await self._relay(job)
        else:
            await self._install(job)

    async def _status(self, job_id: str, state: str, progress: int, **extra: Any) -> None:
        await self.report({"type": "ota_status", "job_id": job_id, "state": state, "progress": progress,
                           **{k: v for k, v in extra.items() if v is not None}})  # fmt: skip

    async def fetch(self, image: ImageRef) -> bytes:
        """The image, verified against the announcement; raises ImageRejected when it must not be installed."""
        signature = self.faults.forged_signature or image.signature
        download = ImageDownload(url=image.url, device_id=self.device_id, secret=self.secret, sha256=image.sha256,
                                 signature=signature, public_key=self.public_key, size=image.size,
                                 chunk_size=self.chunk_size)  # fmt: skip
        if self.faults.power_loss and not self.downloads:
            download.chunk_size = image.size
            try:
                await download.fetch_next(self.http, stop_after=image.size // 2)
            except DownloadInterrupted:
                pass  # what reached flash stays; the rest comes after the reboot
            download.chunk_size = self.chunk_size
        breaks = 0
        while not download.done:
            try:
                await download.fetch_next(self.http)
            except (httpx.TransportError, DownloadInterrupted):
                breaks += 1  # a dropped link: resume from what arrived
                if breaks > self.max_breaks:
                    raise
                await asyncio.sleep(0.05 * breaks)
        self.downloads += 1
        self.bytes_fetched += download.transferred
        if self.faults.corrupt:
            download.data[len(download.data) // 2] ^= 0xFF
        return download.verify()

    async def _install(self, job: InstallAnnouncement) -> None:
        await self._status(job.job_id, "downloading", 0)
        try:
            await self.fetch(job.image)
        except ImageRejected as refused:
            await self._status(job.job_id, "failed", 0, reason=refused.reason)
            return
        except (httpx.HTTPError, DownloadInterrupted) as err:
            await self._status(job.job_id, "failed", 0, reason=f"download_failed: {err}"[:200])
            return
        if job.job_id in self.cancelled:
            return
        await self._status(job.job_id, "verifying", 60)
        await self._status(job.job_id, "installing", 80)
        if self.faults.fail_install:
            await self._status(job.job_id, "failed", 80, reason="flash_write_error: write verify failed")
            return
        await self._status(job.job_id, "rebooting", 95)
        if not self.faults.wrong_version:
            self.version = job.image.version
        await self._status(job.job_id, "succeeded", 100, version=self.version)

    async def _relay(self, job: RelayAnnouncement) -> None:
        """An ESL base station: fetch once, flash the labels over the radio (`radio.channels` at a time)."""
        for label in job.labels:
            await self._status(label.job_id, "downloading", 0)
        try:
            await self.fetch(job.image)
        except (ImageRejected, httpx.HTTPError, DownloadInterrupted) as err:
            reason = err.reason if isinstance(err, ImageRejected) else f"download_failed: {err}"[:200]
            for label in job.labels:
                await self._status(label.job_id, "failed", 0, reason=reason)
            return
        channels = asyncio.Semaphore(self.radio.channels if self.radio else len(job.labels) or 1)
        airtime = self.radio.label_seconds(job.image.size) * self.time_scale if self.radio else 0.0

        async def flash(job_id: str) -> None:
            async with channels:
                await self._status(job_id, "verifying", 60)
                await self._status(job_id, "installing", 80)
                if airtime:
                    await asyncio.sleep(airtime)
                await self._status(job_id, "rebooting", 95)
                await self._status(job_id, "succeeded", 100, version=job.image.version)

        await asyncio.gather(*(flash(label.job_id) for label in job.labels))
