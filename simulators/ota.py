"""Firmware updates on a simulated device: the job announcements of `down/ota`, carried out by the firmware
package's reference device client (`firmware.client.OtaClient`: resumable HTTP Range download, SHA-256 and
Ed25519 check, `ota_status` at every step, install / relay_install / rollback / cancel), glued to the simulated
device here: statuses go out through the device's outbox like any reading, the version it booted into becomes
its state (and it reports its state again after the reboot), and failure modes are drawn per job from seeded
rates, so a market of simulated devices gives campaign abort rules something to count (issue 7).
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

from firmware.client import Faults, OtaClient
from firmware.device import RadioModel
from simulators.generators import Emission

log = logging.getLogger("simulators.ota")


@dataclass(frozen=True, slots=True)
class OtaBehaviour:
    """How a device takes an update. Rates are probabilities per job (seeded per device)."""

    fail_install_rate: float = 0.0  # the flash write fails: `failed`, reason flash_write_error
    power_loss_rate: float = 0.0  # power lost half-way through the download; resumes after the reboot
    wrong_version_rate: float = 0.0  # the new slot does not boot: falls back and reports the old version
    corrupt_rate: float = 0.0  # a byte damaged in transit: the device refuses the image (hash_mismatch)


class OtaAgent:
    """The OTA side of one `SimulatedDevice` (`device.ota`); `handle` takes each `down/ota` body."""

    def __init__(
        self,
        device: Any,
        public_key: str | Callable[[], Any] | None,
        behaviour: OtaBehaviour | None = None,
        *,
        radio: RadioModel | None = None,
    ) -> None:
        self.device = device
        self._public_key = public_key
        self.behaviour = behaviour or OtaBehaviour()
        self.radio = radio
        self.rng = random.Random(f"ota:{device.device_id}")
        self.client: OtaClient | None = None  # one per device, so a `cancel` reaches the job it names
        self.jobs: set[asyncio.Task[None]] = set()
        self.log: list[dict[str, Any]] = []  # every ota_status sent, oldest first (what tests read)
        self._http: httpx.AsyncClient | None = None

    def handle(self, body: Any) -> None:
        if not isinstance(body, dict):
            log.warning("%s: an OTA announcement that is not an object: %r", self.device.device_id, body)
            return
        task = asyncio.get_running_loop().create_task(self._run(body), name=f"ota:{self.device.device_id}")
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    async def aclose(self) -> None:
        for task in list(self.jobs):
            task.cancel()
        for task in list(self.jobs):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _key(self) -> str | None:
        if callable(self._public_key):
            value = self._public_key()
            self._public_key = await value if asyncio.iscoroutine(value) else value
        return None if self._public_key is None else str(self._public_key)

    async def _client(self) -> OtaClient | None:
        if self.client is None:
            key = await self._key()
            if key is None:
                return None
            self._http = httpx.AsyncClient(timeout=30)
            identity = self.device.identity
            self.client = OtaClient(identity.device_id, identity.secret, key,
                                    version=str(self.device.state["firmware_version"]), report=self._report,
                                    http=self._http, radio=self.radio)  # fmt: skip
        return self.client

    def _faults(self) -> Faults:
        b, roll = self.behaviour, self.rng.random
        return Faults(fail_install=roll() < b.fail_install_rate, power_loss=roll() < b.power_loss_rate,
                      wrong_version=roll() < b.wrong_version_rate, corrupt=roll() < b.corrupt_rate)  # fmt: skip

    async def _run(self, body: dict[str, Any]) -> None:
        client = await self._client()
        if client is None:
            log.warning("%s: no platform key to verify images with; OTA job ignored", self.device.device_id)
            return
        if body.get("op") in ("install", "relay_install"):
            client.faults = self._faults()
        before = client.version
        try:
            await client.handle(body)
        except ValueError as exc:  # not an announcement the client knows
            log.warning("%s: refused OTA announcement: %s", self.device.device_id, exc)
            return
        if client.version != before:  # it rebooted into another version: that is what it is now
            self.device.state["firmware_version"] = client.version
            self.device.emit(self.device.generator.boot(self.device.now()))

    async def _report(self, payload: dict[str, Any]) -> None:
        self.log.append(payload)
        self.device.emit([Emission("event", payload)])
