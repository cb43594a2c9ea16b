"""Firmware updates on a simulated device: the job announcements of `down/ota` carried out as a real device
would, with the failure modes the campaign abort rules must see (issue 7).

    install   → ota_status downloading … (HTTP Range, resumable: `firmware.device.ImageDownload`) → verifying
                (SHA-256 and the platform's Ed25519 signature: a tampered image is refused with its reason) →
                installing → rebooting → succeeded, carrying the version it booted into
    relay_install (ESL base station) → fetch once, verify, report each label's job
    rollback  → rebooting → succeeded on the old version
    cancel    → a job not yet installing stops

`OtaBehaviour` says how this device misbehaves: it fails to install, loses power half-way through the download
(it comes back and resumes from where it stopped), or reports a wrong version after the reboot. Every status
goes out as an `ota_status` event through the device's outbox, so it survives a broken link like any reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from firmware.device import DownloadInterrupted, ImageDownload
from firmware.verify import ImageRejected
from simulators.generators import Emission

log = logging.getLogger("simulators.ota")


@dataclass(frozen=True, slots=True)
class OtaBehaviour:
    """How a device takes an update. Rates are probabilities per job (seeded per device)."""

    fail_install_rate: float = 0.0  # the new slot does not take: reported `failed`, reason install_failed
    power_loss_rate: float = 0.0  # power lost half-way through the download; resumes after the reboot
    wrong_version_rate: float = 0.0  # boots into something else and says so (`succeeded` with another version)
    step_s: float = 0.05  # time spent verifying / installing / rebooting (real devices take seconds to minutes)


class OtaAgent:
    """The OTA side of one `SimulatedDevice` (`device.ota`); `handle` takes each `down/ota` body."""

    def __init__(
        self,
        device: Any,
        public_key: str | Callable[[], Any] | None,
        behaviour: OtaBehaviour | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        chunk_size: int = 64 * 1024,
    ) -> None:
        self.device = device
        self._public_key = public_key
        self.behaviour = behaviour or OtaBehaviour()
        self.chunk_size = chunk_size
        self.client = client
        self.rng = random.Random(f"ota:{device.device_id}")
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self.installing: set[str] = set()
        self.log: list[dict[str, Any]] = []  # every ota_status sent, oldest first (what tests read)
        self.downloads: dict[str, ImageDownload] = {}  # job id → its download (bytes transferred, requests)

    # -- announcements ---------------------------------------------------------------------------
    def handle(self, body: Any) -> None:
        if not isinstance(body, dict):
            log.warning("%s: an OTA announcement that is not an object: %r", self.device.device_id, body)
            return
        op = body.get("op")
        if op == "cancel":
            job_id = str(body.get("job_id"))
            task = self.jobs.get(job_id)
            if task is not None and not task.done() and job_id not in self.installing:
                task.cancel()
            return
        if op not in ("install", "relay_install", "rollback"):
            log.warning("%s: unknown OTA op %r", self.device.device_id, op)
            return
        key = str(body.get("job_id") or f"relay:{body.get('campaign_id')}")
        if key in self.jobs and not self.jobs[key].done():
            return  # announced again while running (at least once delivery): one run is enough
        runner = {"install": self._install, "relay_install": self._relay_install, "rollback": self._rollback}[op]
        self.jobs[key] = asyncio.get_running_loop().create_task(runner(body), name=f"ota:{key}")

    async def aclose(self) -> None:
        for task in self.jobs.values():
            task.cancel()
        for task in self.jobs.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.jobs.clear()

    # -- the steps -------------------------------------------------------------------------------
    def _status(self, job_id: str, state: str, progress: int = 0, reason: str | None = None,
                version: str | None = None) -> None:  # fmt: skip
        payload: dict[str, Any] = {"type": "ota_status", "job_id": job_id, "state": state, "progress": progress}
        if reason:
            payload["reason"] = reason[:200]
        if version:
            payload["version"] = version
        self.log.append(payload)
        self.device.emit([Emission("event", payload)])

    async def _key(self) -> str:
        if callable(self._public_key):
            value = self._public_key()
            self._public_key = await value if asyncio.iscoroutine(value) else value
        if not self._public_key:
            raise ImageRejected("bad_signature", "this device has no platform key to verify images with")
        return str(self._public_key)

    async def _fetch(self, job_id: str, image: dict[str, Any]) -> bytes:
        """Download (resuming after a simulated power loss) and verify; ImageRejected when it must not install."""
        identity = self.device.identity
        download = ImageDownload(
            url=image["url"], device_id=identity.device_id, secret=identity.secret, sha256=image["sha256"],
            signature=image["signature"], public_key=await self._key(), size=int(image["size"]),
            chunk_size=self.chunk_size,
        )  # fmt: skip
        self.downloads[job_id] = download
        lose_power = self.rng.random() < self.behaviour.power_loss_rate
        client = self.client or httpx.AsyncClient(timeout=30)
        try:
            self._status(job_id, "downloading", 0)
            cut = download.size // 2 + download.chunk_size // 3  # power goes in the middle of a request
            while not download.done:
                stop = None
                if lose_power and download.received + download.chunk_size > cut:
                    stop = max(1, cut - download.received)
                try:
                    await download.fetch_next(client, stop_after=stop)
                except DownloadInterrupted as exc:
                    if not lose_power:
                        raise
                    lose_power = False  # power is back: reboot, then resume from the bytes in the spare slot
                    log.info("%s: power lost during download (%s); resuming", identity.device_id, exc)
                    await asyncio.sleep(self.behaviour.step_s)
                self._status(job_id, "downloading", min(60, 60 * download.received // max(1, download.size)))
            self._status(job_id, "verifying", 65)
            await asyncio.sleep(self.behaviour.step_s)
            return download.verify()
        finally:
            if self.client is None:
                await client.aclose()

    async def _install(self, body: dict[str, Any]) -> None:
        job_id = str(body["job_id"])
        image = body["image"]
        try:
            await self._fetch(job_id, image)
        except ImageRejected as exc:
            self._status(job_id, "failed", 65, exc.reason)
            return
        except (httpx.HTTPError, DownloadInterrupted) as exc:
            self._status(job_id, "failed", 0, f"download_failed: {exc}")
            return
        self.installing.add(job_id)
        try:
            self._status(job_id, "installing", 75)
            await asyncio.sleep(self.behaviour.step_s)
            if self.rng.random() < self.behaviour.fail_install_rate:
                self._status(job_id, "failed", 75, "install_failed: the spare slot did not take the image")
                return
            self._status(job_id, "rebooting", 90)
            await asyncio.sleep(self.behaviour.step_s)
            version = str(image["version"])
            if self.rng.random() < self.behaviour.wrong_version_rate:
                version = f"{self.device.state['firmware_version']}"  # fell back to the old slot
            self._boot(version)
            self._status(job_id, "succeeded", 100, version=version)
        finally:
            self.installing.discard(job_id)

    async def _relay_install(self, body: dict[str, Any]) -> None:
        labels = [(str(item["label_id"]), str(item["job_id"])) for item in body.get("labels", [])]
        if not labels:
            return
        first_job = labels[0][1]
        try:
            await self._fetch(first_job, body["image"])
        except ImageRejected as exc:
            for _, job_id in labels:
                self._status(job_id, "failed", 65, exc.reason)
            return
        except (httpx.HTTPError, DownloadInterrupted) as exc:
            for _, job_id in labels:
                self._status(job_id, "failed", 0, f"download_failed: {exc}")
            return
        for _, job_id in labels:  # flashed over the air one after another (no radio model here)
            if job_id != first_job:
                self._status(job_id, "downloading", 50)
                self._status(job_id, "verifying", 65)
            self._status(job_id, "installing", 75)
            await asyncio.sleep(self.behaviour.step_s)
            if self.rng.random() < self.behaviour.fail_install_rate:
                self._status(job_id, "failed", 75, "install_failed: the label did not take the image")
                continue
            self._status(job_id, "rebooting", 90)
            self._status(job_id, "succeeded", 100, version=str(body["image"]["version"]))

    async def _rollback(self, body: dict[str, Any]) -> None:
        job_id = str(body["job_id"])
        self._status(job_id, "rebooting", 90)
        await asyncio.sleep(self.behaviour.step_s)
        self._boot(str(body["to_version"]))
        self._status(job_id, "succeeded", 100, version=str(body["to_version"]))

    def _boot(self, version: str) -> None:
        self.device.state["firmware_version"] = version
        self.device.emit(self.device.generator.boot(self.device.now()))  # a rebooted device reports its state
