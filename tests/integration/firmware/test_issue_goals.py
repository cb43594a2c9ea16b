"""What issue 7 asks to see: devices refuse tampered or wrongly signed images and say why; a canary with 10 %
failures aborts the campaign before the second wave while a clean one completes; a device that loses power
mid-download resumes; a device that boots the old version counts as a failure."""

from __future__ import annotations

import asyncio

import pytest

from firmware.models import DeviceJob
from firmware.states import FailureKind, JobState
from fleet.models import Device
from tests.integration.firmware.conftest import Ota, job_of

pytestmark = pytest.mark.timeout(180)

CANARY_WAVES = [
    {"name": "canary", "count": 10, "success_threshold_pct": 100},
    {"name": "early", "count": 10, "success_threshold_pct": 95},
    {"name": "rest"},
]
ABORT_ABOVE_5_PCT = [{"failure": "any", "above_pct": 5, "min_executed": 10}]


@pytest.mark.parametrize(("behaviour", "reason"), [("corrupt", "hash_mismatch"), ("forged", "bad_signature")])
async def test_a_tampered_or_wrongly_signed_image_is_refused_and_reported(
    ota: Ota, behaviour: str, reason: str
) -> None:
    fleet = await ota.vendor_fleet(f"tamper{behaviour[:3]}", 1, behaviour=behaviour)
    image = await fleet.upload("2.0.0")
    device = next(a for d, a in ota.agents.agents.items() if d.startswith(fleet.code + "-"))
    campaign = await ota.campaign(name="tampered", image_id=image["id"], waves=[{"name": "all"}], abort_rules=[])
    done = await ota.until_state(campaign["id"], "completed", within=30)
    job = await job_of(device.device_id, campaign["id"])
    assert job.state == JobState.FAILED and job.failure == FailureKind.REJECTED and job.reason == reason
    assert job.attempts == 1  # a refused image is not offered again: retrying cannot help
    assert device.reports[-1] == {"type": "ota_status", "job_id": f"{job.id}.1", "state": "failed", "progress": 0,
                                  "reason": reason}  # fmt: skip
    assert done["failures"]["rejected"] == 1
    assert (await Device.get(id=device.device_id)).firmware_version == "1.0.0"


async def _canary_campaign(ota: Ota, code: str, failing: int) -> tuple[dict, list[str]]:
    """40 devices, waves of 10 / 10 / 20; `failing` canary devices fail to flash the image."""
    start = asyncio.Event()
    fleet = await ota.vendor_fleet(code, 40, start_gate=start)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name=f"canary {failing}", image_id=image["id"], waves=CANARY_WAVES,
                                  abort_rules=ABORT_ABOVE_5_PCT, max_attempts=1)  # fmt: skip
    canary = await DeviceJob.filter(campaign_id=campaign["id"], wave=0).values_list("device_id", flat=True)
    for device_id in list(canary)[:failing]:
        ota.agents.agents[device_id].behaviour = "fail"
    start.set()
    later = await DeviceJob.filter(campaign_id=campaign["id"], wave__gt=0).values_list("device_id", flat=True)
    return campaign, list(later)


async def test_a_canary_with_ten_percent_failures_aborts_before_the_second_wave(ota: Ota) -> None:
    campaign, later = await _canary_campaign(ota, "canary10", failing=1)
    stopped = await ota.until_state(campaign["id"], "aborted", within=60)
    assert "abort rule: 1 of 10 executed devices failed (10.0% > 5%)" in stopped["state_reason"]
    assert [w["counts"]["succeeded"] + w["failures"]["failed"] for w in stopped["wave_progress"]] == [10, 0, 0]
    assert not any(ota.agents.agents[d].announcements for d in later)
    assert stopped["counts"]["cancelled"] == 30 and stopped["current_wave"] == 0


async def test_a_canary_without_failures_lets_the_campaign_complete(ota: Ota) -> None:
    campaign, later = await _canary_campaign(ota, "canary0", failing=0)
    done = await ota.until_state(campaign["id"], "completed", within=90)
    assert done["counts"]["succeeded"] == 40 and [w["size"] for w in done["wave_progress"]] == [10, 10, 20]
    assert all(len(ota.agents.agents[d].announcements) == 1 for d in later)


async def test_a_device_that_loses_power_mid_download_resumes_from_there(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("powerloss", 1, behaviour="power_loss")
    image = await fleet.upload("2.0.0")
    device = next(a for d, a in ota.agents.agents.items() if d.startswith("powerloss-"))
    campaign = await ota.campaign(name="brown-out", image_id=image["id"], waves=[{"name": "all"}])
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["counts"]["succeeded"] == 1 and len(device.announcements) == 1
    assert device.bytes_fetched < 1.6 * image["size"]  # the second half only, not the whole image again


async def test_a_device_that_boots_the_old_version_fails_its_job(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("wrongver", 1, behaviour="wrong_version")
    image = await fleet.upload("2.0.0")
    device = next(a for d, a in ota.agents.agents.items() if d.startswith("wrongver-"))
    campaign = await ota.campaign(name="bad boot", image_id=image["id"], waves=[{"name": "all"}],
                                  max_attempts=1, abort_rules=[])  # fmt: skip
    done = await ota.until_state(campaign["id"], "completed", within=30)
    job = await job_of(device.device_id, campaign["id"])
    assert job.state == JobState.FAILED and job.failure == FailureKind.FAILED
    assert job.reason == "wrong_version: booted 1.0.0, expected 2.0.0"
    assert done["failures"]["failed"] == 1
    assert (await Device.get(id=device.device_id)).firmware_version == "1.0.0"
