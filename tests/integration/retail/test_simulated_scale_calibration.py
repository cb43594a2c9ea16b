"""Calibration with the scale simulator (`simulators.ScaleGenerator` in a `MarketSimulation`, over MQTT to the
running platform, SZ 6.2.7): the simulated scale refuses its calibrate key without a current grant and a second
time with the same grant; a grant made through the API reaches it and the calibration is recorded; a scale whose
firmware ignores the rule is refused by the platform and flagged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from retail.models import CalibrationGrant
from simulators import Emission, Endpoints, MarketSimulation, register_market_devices
from simulators.wire import rfc3339
from tests.factories import ADMIN

MARKET = "RT-CAL"


async def _until(check: Callable[[], Any], within_s: float = 60.0) -> Any:
    """Poll a condition the platform reaches asynchronously (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(within_s):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.05)


@dataclass
class Rig:
    scale: Any
    calibrations: Callable[[int], Awaitable[list[dict[str, Any]] | None]]


@contextlib.asynccontextmanager
async def simulated_scale(api: httpx.AsyncClient, platform, tmp_path: Path, market: str,  # type: ignore[no-untyped-def]
                          vendor: str) -> AsyncIterator[Rig]:
    """One simulated scale registered through the API, connected over MQTT and acknowledged once; `calibrations(n)`
    answers the platform's calibration records once there are `n` of them."""
    creds = await register_market_devices(str(api.base_url), ADMIN["Authorization"].removeprefix("Bearer "),
                                          {"scale": 1}, market=market, vendor_code=vendor)
    endpoints = Endpoints(mqtt_port=platform.settings.broker.port, coap_port=platform.services["coap"].port,
                          api_url=str(api.base_url).rstrip("/"))
    sim = MarketSimulation(creds, endpoints, outbox_path=tmp_path / "outbox.sqlite3", console=Console(quiet=True),
                           ack_timeout_s=5.0, intervals={"scale": 3600})
    [scale] = sim.devices
    url = f"/api/v1/retail/scales/{scale.device_id}/calibrations"

    async def calibrations(count: int) -> list[dict[str, Any]] | None:
        rows = (await api.get(url, headers=ADMIN)).json()
        return rows if len(rows) == count else None

    await sim.start()
    try:
        await _until(lambda: scale.connected and scale.stats.acked >= 1)
        yield Rig(scale, calibrations)
    finally:
        await sim.stop(drain_s=10)
        sim.close()


async def test_the_simulated_scale_calibrates_only_with_a_grant_and_every_calibration_is_recorded(
    api: httpx.AsyncClient, platform, tmp_path: Path
) -> None:
    async with simulated_scale(api, platform, tmp_path, MARKET, "rtcal") as rig:
        scale, calibrations = rig.scale, rig.calibrations
        assert scale.generator.calibrate(scale.now()) == []  # the calibrate key, no grant: refused on the scale
        assert scale.state["calibration_refused"]["reason"] == "no_grant"

        response = await api.post(f"/api/v1/retail/scales/{scale.device_id}/calibration-grants",
                                  json={"minutes": 10, "reason": "annual check"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        grant = response.json()["id"]
        [accepted] = await _until(lambda: calibrations(1))  # sent to the scale, it calibrated, reported it
        assert (accepted["grant_id"], accepted["accepted"], accepted["refusal"]) == (grant, True, "")
        assert scale.state["calibrated_with"] == grant

        assert scale.generator.calibrate(scale.now()) == []  # the same grant again: refused on the scale
        assert scale.state["calibration_refused"] == {"grant_id": grant, "reason": "reused"}

        # Firmware that ignores the rule reports calibrations anyway: the platform refuses and records them.
        for grant_id in (grant, None):
            scale.emit([Emission("event", {"type": "calibrated", "grant_id": grant_id, "reference_kg": 10.0,
                                           "measured_kg": 10.003})])
        rows = await _until(lambda: calibrations(3))
    assert sorted((r["accepted"], r["refusal"]) for r in rows) == [(False, "no_grant"), (False, "reused"),
                                                                   (True, "")]
    integrity = (await api.get(f"/api/v1/retail/scales/{scale.device_id}/integrity", headers=ADMIN)).json()
    assert integrity["anti_cheat_ok"] is False


async def test_a_calibration_with_an_expired_grant_is_refused_over_mqtt_and_a_fresh_grant_works(
    api: httpx.AsyncClient, platform, tmp_path: Path
) -> None:
    """A grant the scale holds whose window the platform has closed (its `valid_until` moved into the past in the
    registry, the state an expired grant is in, without waiting): the scale's own clock still lets it calibrate,
    the platform refuses the event, records it as refused and as a tamper report, and the grant stays unused."""
    async with simulated_scale(api, platform, tmp_path, f"{MARKET}-EXP", "rtcalexp") as rig:
        scale, calibrations = rig.scale, rig.calibrations
        granted = datetime.now(UTC) - timedelta(minutes=20)
        stale = await CalibrationGrant.create(id="expired-grant-1", scale_id=scale.device_id, granted_by="user:maint",
                                              reason="annual check", granted_at=granted,
                                              valid_until=granted + timedelta(minutes=30))
        # The scale received it while it was valid (its copy still says so: the scale's clock is no authority).
        scale.state["calibration_grant"] = {"grant_id": stale.id, "valid_until": rfc3339(stale.valid_until)}
        await CalibrationGrant.filter(id=stale.id).update(valid_until=granted + timedelta(minutes=15))  # expired
        calibrated = scale.generator.calibrate(scale.now())
        assert [e.channel for e in calibrated] == ["event"], scale.state.get("calibration_refused")
        scale.emit(calibrated)

        [refused] = await _until(lambda: calibrations(1))
        assert (refused["grant_id"], refused["accepted"], refused["refusal"]) == (stale.id, False, "expired")
        assert (await CalibrationGrant.get(id=stale.id)).used_at is None  # an expired grant is never consumed
        integrity = (await api.get(f"/api/v1/retail/scales/{scale.device_id}/integrity", headers=ADMIN)).json()
        assert integrity["anti_cheat_ok"] is False
        assert any(e["type"] == "tamper" and e["reason"] == "unauthorised_calibration" and "expired" in e["details"]
                   for e in integrity["events"]), integrity

        response = await api.post(f"/api/v1/retail/scales/{scale.device_id}/calibration-grants",
                                  json={"minutes": 10, "reason": "after the expired one"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        fresh = response.json()["id"]
        rows = await _until(lambda: calibrations(2))  # sent to the scale over MQTT, it calibrated, reported it
    assert sorted((r["grant_id"], r["accepted"], r["refusal"]) for r in rows) == sorted(
        [(stale.id, False, "expired"), (fresh, True, "")])
    assert scale.state["calibrated_with"] == fresh
    assert (await CalibrationGrant.get(id=fresh)).used_at is not None
