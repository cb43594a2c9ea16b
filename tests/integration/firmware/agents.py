"""In-test device agents: what a device does with a job announcement, over real HTTP.

`AgentFleet.send` is the downlink callable the orchestrator is given; each announcement starts a task that
downloads the image with Range requests from the real API server, verifies it with the platform's public key
(firmware/verify.py) and reports each step back through `on_status`, as the device's `ota_status` events would
arrive from the ingest bus. An ESL base station downloads once and reports for each of its labels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from firmware.device import DownloadInterrupted, ImageDownload
from firmware.schemas import (
    ANNOUNCEMENT,
    CancelAnnouncement,
    InstallAnnouncement,
    RelayAnnouncement,
    RollbackAnnouncement,
)
from firmware.signing import generate_keypair, sign_digest
from firmware.verify import ImageRejected
from fleet.models import Device

Report = Callable[[str, dict[str, Any]], Awaitable[Any]]
_FORGER = generate_keypair()


def forged_signature(sha256: str) -> str:
    """A well-formed Ed25519 signature over the right digest, made with a key that is not the platform's."""
    return sign_digest(sha256, _FORGER)


@dataclass
class DeviceAgent:
    device_id: str
    secret: str
    # "ok", "fail" (flash error while installing), "corrupt" (one byte damaged in transit), "forged" (the
    # announcement's signature replaced by one of another key), "silent" (never answers), "power_loss" (power
    # lost half-way through the download: it resumes after the reboot), "wrong_version" (boots back into the
    # old version and says so)
    behaviour: str = "ok"
    step_delay_s: float = 0.0
    gate: asyncio.Event | None = None  # when set: wait for it before reporting success
    start_gate: asyncio.Event | None = None  # when set: wait for it before acting on an announcement
    version: str = ""
    announcements: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    downloads: int = 0
    bytes_fetched: int = 0  # over every request, resumed ones included


class AgentFleet:
    def __init__(
        self, base_url: str, public_key: str, report: Report, chunk_size: int = 64 * 1024, max_connections: int = 100
    ) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits)
        self.public_key = public_key
        self.report = report
        self.chunk_size = chunk_size
        self.agents: dict[str, DeviceAgent] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        self.send_failures: set[str] = set()  # device ids whose downlink "broker" refuses
        # devices simulated by something else (firmware/client.py): their announcements go there instead
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}

    def add(self, device_id: str, secret: str, **kwargs: Any) -> DeviceAgent:
        agent = self.agents[device_id] = DeviceAgent(device_id, secret, **kwargs)
        return agent

    async def send(self, device: Device, payload: dict[str, Any]) -> None:
        if device.id in self.send_failures:
            raise ConnectionError("broker unreachable")
        handler = self.handlers.get(device.id)
        if handler is not None:
            task = asyncio.create_task(self._guarded(handler(payload)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        agent = self.agents.get(device.id)
        if agent is None:
            return  # a device nobody simulates: the job will time out
        agent.announcements.append(payload)
        task = asyncio.create_task(self._handle(agent, payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as err:
            self.errors.append(err)

    async def _handle(self, agent: DeviceAgent, payload: dict[str, Any]) -> None:
        try:
            job = ANNOUNCEMENT.validate_python(payload)
            if isinstance(job, CancelAnnouncement) or agent.behaviour == "silent":
                return
            if agent.start_gate is not None:
                await agent.start_gate.wait()
            if isinstance(job, RollbackAnnouncement):
                await self._status(agent.device_id, job.job_id, "rebooting", 50)
                agent.version = job.to_version
                await self._status(agent.device_id, job.job_id, "succeeded", 100)
            elif isinstance(job, RelayAnnouncement):
                await self._relay(agent, job)
            else:
                await self._install(agent, job)
        except Exception as err:  # surfaced by the tests through fleet.errors
            self.errors.append(err)

    async def _status(
        self, reporter: str, job_id: str, state: str, progress: int, reason: str | None = None,
        version: str | None = None,
    ) -> None:  # fmt: skip
        body: dict[str, Any] = {"type": "ota_status", "job_id": job_id, "state": state, "progress": progress}
        if reason:
            body["reason"] = reason
        if version:
            body["version"] = version
        agent = self.agents.get(reporter)
        if agent is not None:
            agent.reports.append(body)
        await self.report(reporter, body)

    async def _fetch(self, agent: DeviceAgent, job: InstallAnnouncement | RelayAnnouncement) -> bytes:
        image = job.image
        signature = forged_signature(image.sha256) if agent.behaviour == "forged" else image.signature
        download = ImageDownload(url=image.url, device_id=agent.device_id, secret=agent.secret, sha256=image.sha256,
                                 signature=signature, public_key=self.public_key, size=image.size,
                                 chunk_size=self.chunk_size)  # fmt: skip
        if agent.behaviour == "power_loss" and not agent.downloads:
            # The link (and the device) die half-way; what reached flash stays, the rest comes after the reboot.
            download.chunk_size = image.size
            with contextlib.suppress(DownloadInterrupted):
                await download.fetch_next(self.http, stop_after=image.size // 2)
            await asyncio.sleep(0.05)
        breaks = 0
        while not download.done:
            try:
                await download.fetch_next(self.http)
            except (httpx.TransportError, DownloadInterrupted):
                # a dropped connection (a keep-alive closed under us, a loaded server): resume, as devices do
                breaks += 1
                if breaks > 5:
                    raise
                await asyncio.sleep(0.05 * breaks)
        agent.downloads += 1
        agent.bytes_fetched += download.transferred
        if agent.behaviour == "corrupt":
            download.data[len(download.data) // 2] ^= 0xFF
        return download.verify()

    async def _install(self, agent: DeviceAgent, job: InstallAnnouncement) -> None:
        pause = agent.step_delay_s
        await self._status(agent.device_id, job.job_id, "downloading", 0)
        try:
            await self._fetch(agent, job)
        except ImageRejected as rejected:
            await self._status(agent.device_id, job.job_id, "failed", 0, rejected.reason)
            return
        await asyncio.sleep(pause)
        await self._status(agent.device_id, job.job_id, "verifying", 60)
        await asyncio.sleep(pause)
        await self._status(agent.device_id, job.job_id, "installing", 80)
        if agent.behaviour == "fail":
            await self._status(agent.device_id, job.job_id, "failed", 80, "flash_write_error: sector 12")
            return
        await asyncio.sleep(pause)
        await self._status(agent.device_id, job.job_id, "rebooting", 95)
        if agent.gate is not None:
            await agent.gate.wait()
        if agent.behaviour != "wrong_version":
            agent.version = job.image.version
        await self._status(agent.device_id, job.job_id, "succeeded", 100, version=agent.version or None)

    async def _relay(self, station: DeviceAgent, job: RelayAnnouncement) -> None:
        """A base station: fetch once, then flash and report each label over the radio."""
        for label in job.labels:
            await self._status(station.device_id, label.job_id, "downloading", 0)
        try:
            await self._fetch(station, job)
        except ImageRejected as rejected:
            for label in job.labels:
                await self._status(station.device_id, label.job_id, "failed", 0, rejected.reason)
            return
        for label in job.labels:
            for state, progress in (("verifying", 60), ("installing", 80), ("rebooting", 95), ("succeeded", 100)):
                await self._status(station.device_id, label.job_id, state, progress)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.http.aclose()
