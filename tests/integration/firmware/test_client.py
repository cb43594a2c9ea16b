"""firmware/client.py, the device-side OTA client simulators use: it updates, refuses a tampered image, resumes
after losing power, reports a failed boot, and relays to ESL labels at the pace of its radio model."""

from __future__ import annotations

from typing import Any

import pytest

from firmware.client import Faults, OtaClient
from firmware.device import RadioModel
from firmware.states import FailureKind, JobState
from fleet.models import Device
from tests.integration.firmware.conftest import Ota, job_of

pytestmark = pytest.mark.timeout(120)


def _client(ota: Ota, device_id: str, secret: str, **kwargs: Any) -> OtaClient:
    async def report(payload: dict[str, Any]) -> None:
        await ota.service.on_status(device_id, payload)  # what ingest does with the device's up/event

    client = OtaClient(device_id, secret, ota.service.keypair.public_key, "1.0.0", report, ota.agents.http, **kwargs)
    ota.agents.handlers[device_id] = client.handle
    return client


async def test_the_client_updates_refuses_resumes_and_reports_a_failed_boot(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("otaclient", 0)
    secrets = await fleet.add_devices(4, simulate=False)
    ok, corrupt, power, boot = sorted(secrets)
    clients = {
        ok: _client(ota, ok, secrets[ok]),
        corrupt: _client(ota, corrupt, secrets[corrupt], faults=Faults(corrupt=True)),
        power: _client(ota, power, secrets[power], faults=Faults(power_loss=True)),
        boot: _client(ota, boot, secrets[boot], faults=Faults(wrong_version=True)),
    }
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="client", image_id=image["id"], waves=[{"name": "all"}], abort_rules=[],
                                  max_attempts=1)  # fmt: skip
    done = await ota.until_state(campaign["id"], "completed", within=60)
    assert done["counts"]["succeeded"] == 2 and done["failures"] == {"failed": 1, "rejected": 1, "timed_out": 0}
    refused = await job_of(corrupt, campaign["id"])
    assert refused.failure == FailureKind.REJECTED and refused.reason == "hash_mismatch"
    assert (await job_of(boot, campaign["id"])).reason == "wrong_version: booted 1.0.0, expected 2.0.0"
    assert clients[power].bytes_fetched < 1.6 * image["size"] and clients[power].version == "2.0.0"
    versions = dict(await Device.filter(id__in=list(secrets)).values_list("id", "firmware_version"))
    assert versions == {ok: "2.0.0", corrupt: "1.0.0", power: "2.0.0", boot: "1.0.0"}


async def test_a_base_station_client_relays_to_its_labels(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("otarelay", 0, kind="esl", model="L42")
    station_id, secret = next(iter((await fleet.add_devices(1, kind="esl_base_station", model=None,
                                                            simulate=False)).items()))  # fmt: skip
    labels = await fleet.add_devices(7, metadata={"base_station_id": station_id}, simulate=False)
    station = _client(ota, station_id, secret, radio=RadioModel(channels=2), time_scale=0.0)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="labels", image_id=image["id"], waves=[{"name": "all"}])
    done = await ota.until_state(campaign["id"], "completed", within=60)
    assert done["counts"]["succeeded"] == 7 and station.downloads == 1
    assert {(await job_of(label, campaign["id"])).state for label in labels} == {JobState.SUCCEEDED}
    assert set(await Device.filter(id__in=list(labels)).values_list("firmware_version", flat=True)) == {"2.0.0"}
