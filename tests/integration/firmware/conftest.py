"""A running firmware service on the test platform (SQLite and PostgreSQL), its routes on the real HTTP server,
and simulated devices that answer job announcements.

The platform's own firmware service (if its composition root built one) is stopped and replaced for the module
by one whose downlink is the simulated devices and whose clock a test can move; the router is the platform's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.routes import firmware as firmware_routes
from firmware.models import Campaign, DeviceJob
from firmware.service import FirmwareService, FirmwareSettings, setup
from firmware.states import CampaignState
from tests.factories import ADMIN, create_vendor
from tests.integration.firmware.agents import AgentFleet

OPEN_CAMPAIGNS = [CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.SCHEDULED]


class SettableClock:
    """Real time by default; a test may freeze it or move it (maintenance windows, timeouts)."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or datetime.now(UTC)

    def freeze(self, at: datetime) -> None:
        self.frozen = at

    def advance(self, seconds: float) -> None:
        self.frozen = self() + timedelta(seconds=seconds)

    def reset(self) -> None:
        self.frozen = None


@dataclass
class Ota:
    service: FirmwareService
    agents: AgentFleet
    clock: SettableClock
    api: httpx.AsyncClient

    async def vendor_fleet(
        self,
        code: str,
        count: int,
        *,
        kind: str = "env_sensor",
        model: str = "M1",
        version: str = "1.0.0",
        market: str | None = None,
        labels: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        simulate: bool = True,
        **agent: Any,
    ) -> Fleet:
        """A vendor with one model and `count` devices on `version`, each simulated by an agent."""
        key = await create_vendor(self.api, code)
        headers = {"X-API-Key": key}
        response = await self.api.post("/api/v1/vendor/models", json={"kind": kind, "name": model}, headers=headers)
        assert response.status_code == 201, response.text
        fleet = Fleet(self, code, headers, response.json()["id"], kind, model)
        if count:
            await fleet.add_devices(count, version=version, market=market, labels=labels, metadata=metadata,
                                    simulate=simulate, **agent)  # fmt: skip
        return fleet

    async def campaign(self, **body: Any) -> dict[str, Any]:
        response = await self.api.post("/api/v1/firmware/campaigns", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def progress(self, campaign_id: int) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/firmware/campaigns/{campaign_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def until_state(self, campaign_id: int, *states: str, within: float = 20) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            progress = await self.progress(campaign_id)
            return progress if progress["state"] in states else None

        return await until(reached, within, f"campaign {campaign_id} to reach {states}")


@dataclass
class Fleet:
    ota: Ota
    code: str
    headers: dict[str, str]
    model_id: int
    kind: str
    model: str
    serial_no: int = 0

    async def add_devices(self, count: int, *, version: str = "1.0.0", market: str | None = None,
                          labels: dict[str, str] | None = None, metadata: dict[str, Any] | None = None,
                          kind: str | None = None, model: str | None = "", simulate: bool = True,
                          **agent: Any) -> dict[str, str]:  # fmt: skip
        rows = []
        for _ in range(count):
            self.serial_no += 1
            row: dict[str, Any] = {
                "serial": f"S{self.serial_no:05d}", "kind": kind or self.kind, "firmware_version": version,
                "labels": labels or {}, "metadata": metadata or {},
            }  # fmt: skip
            if model is not None:
                row["model"] = model or self.model
            if market:
                row["market"] = market
            rows.append(row)
        response = await self.ota.api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=self.headers)
        assert response.status_code == 200 and response.json()["failed"] == 0, response.text
        secrets = {r["device_id"]: r["secret"] for r in response.json()["rows"]}
        if simulate:
            for device_id, secret in secrets.items():
                self.ota.agents.add(device_id, secret, version=version, **agent)
        return secrets

    async def upload(self, version: str = "2.0.0", image: bytes | None = None, **fields: Any) -> dict[str, Any]:
        response = await upload_image(self.ota.api, self.headers, self.model, version, image, **fields)
        assert response.status_code == 201, response.text
        return dict(response.json())


async def upload_image(
    api: httpx.AsyncClient, headers: dict[str, str], model: str, version: str, image: bytes | None = None,
    **fields: Any,
) -> httpx.Response:  # fmt: skip
    data: dict[str, Any] = {"model": model, "version": version, **fields}
    blob = image if image is not None else bytes(range(256)) * 1024  # 256 KiB
    return await api.post("/api/v1/firmware/images", data=data, files={"file": ("fw.bin", blob)}, headers=headers)


async def until(
    probe: Callable[[], Awaitable[Any]], within: float = 20, what: str = "condition", interval: float = 0.05
) -> Any:
    """Poll `probe` until it returns something truthy; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="module")
async def ota_service(platform, api, tmp_path_factory) -> AsyncIterator[Ota]:  # type: ignore[no-untyped-def]
    clock = SettableClock()
    agents: list[AgentFleet] = []

    async def send(device, payload):  # type: ignore[no-untyped-def]
        await agents[0].send(device, payload)

    base_url = str(api.base_url).rstrip("/")
    service = setup(
        FirmwareSettings(http_base_url=base_url, tick_s=0.05, enrol_interval_s=0.1),
        registry=platform.registry,
        data_dir=tmp_path_factory.mktemp("firmware"),
        send=send,
        clock=clock,
    )
    agents.append(AgentFleet(base_url, service.keypair.public_key, service.on_status))
    services = platform.app.state.ctx.services
    original = services.get("firmware")
    if original is not None:
        await original.aclose()  # one orchestrator per database
    if not any(getattr(r, "path", "").startswith(firmware_routes.router.prefix) for r in platform.app.routes):
        platform.app.include_router(firmware_routes.router)
    services["firmware"] = service
    await service.start()
    try:
        yield Ota(service, agents[0], clock, api)
    finally:
        await service.aclose()
        await agents[0].aclose()
        if original is not None:
            services["firmware"] = original
        else:
            services.pop("firmware", None)


@pytest.fixture
async def ota(ota_service: Ota) -> AsyncIterator[Ota]:
    """Per test: real time, no campaign left open afterwards, and no agent error unnoticed."""
    ota_service.clock.reset()
    ota_service.agents.errors.clear()
    yield ota_service
    ota_service.clock.reset()
    for campaign in await Campaign.filter(state__in=OPEN_CAMPAIGNS):
        with contextlib.suppress(Exception):
            await ota_service.service.campaigns.cancel(campaign.id)
    errors = list(ota_service.agents.errors)
    assert not errors, f"device agents failed: {errors!r}"


async def job_of(device_id: str, campaign_id: int) -> DeviceJob:
    return await DeviceJob.get(device_id=device_id, campaign_id=campaign_id)
