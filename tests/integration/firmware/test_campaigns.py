"""Campaigns end to end: simulated devices receive announcements through the injected downlink, download over
real HTTP with Range, verify the signature, and report through `on_status`; the orchestrator runs as its task."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from firmware.errors import IllegalTransition, JobNotFound
from firmware.models import Campaign, DeviceJob, JobTransition
from firmware.orchestrator import OrchestratorService, StatusOutcome, wire_job_id
from firmware.states import FailureKind, JobState
from fleet.models import Device
from tests.factories import ADMIN, ensure_market
from tests.integration.firmware.conftest import Ota, job_of, until

pytestmark = pytest.mark.timeout(180)


def announced(ota: Ota, device_ids) -> list[str]:  # type: ignore[no-untyped-def]
    return [d for d in device_ids if ota.agents.agents[d].announcements]


async def test_the_next_wave_starts_only_when_the_canary_meets_its_threshold(ota: Ota) -> None:
    gate = asyncio.Event()
    fleet = await ota.vendor_fleet("canary", 20, gate=gate)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(
        name="canary first", image_id=image["id"],
        waves=[{"name": "canary", "count": 2, "success_threshold_pct": 100},
               {"name": "early", "percent": 25, "success_threshold_pct": 100}, {"name": "rest"}],
    )  # fmt: skip
    devices = list(ota.agents.agents) and [d for d in ota.agents.agents if d.startswith("canary-")]

    async def canaries_rebooting() -> bool:
        jobs = await DeviceJob.filter(campaign_id=campaign["id"], wave=0, state=JobState.REBOOTING).count()
        return jobs == 2

    await until(canaries_rebooting, 20, "the two canaries to reach rebooting")
    await asyncio.sleep(0.5)  # ten orchestrator ticks: nothing else may start while the canary is unfinished
    assert len(announced(ota, devices)) == 2
    progress = await ota.progress(campaign["id"])
    assert [w["state"] for w in progress["wave_progress"]] == ["running", "waiting", "waiting"]
    assert progress["wave_progress"][0]["counts"]["rebooting"] == 2 and progress["current_wave"] == 0

    gate.set()
    done = await ota.until_state(campaign["id"], "completed", within=60)
    assert len(announced(ota, devices)) == 20
    assert [w["size"] for w in done["wave_progress"]] == [2, 5, 13]
    assert all(w["succeeded_pct"] == 100 and w["state"] == "done" for w in done["wave_progress"])
    assert done["counts"]["succeeded"] == 20 and done["done_pct"] == 100 and done["eta_s"] is None
    assert set(await Device.filter(id__in=devices).values_list("firmware_version", flat=True)) == {"2.0.0"}
    assert all(a.downloads == 1 for d, a in ota.agents.agents.items() if d in devices)


async def test_an_abort_rule_stops_the_campaign_when_failures_pass_the_share(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("abort", 20, behaviour="corrupt")
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(
        name="bad image", image_id=image["id"], waves=[{"name": "all", "max_in_flight": 2}],
        abort_rules=[{"failure": "rejected", "above_pct": 10, "min_executed": 5}],
    )  # fmt: skip
    stopped = await ota.until_state(campaign["id"], "aborted", within=30)
    assert "abort rule" in stopped["state_reason"] and "rejected" in stopped["state_reason"]
    assert 5 <= stopped["failures"]["rejected"] <= 7  # at most the in-flight ones finished after the rule fired
    assert stopped["counts"]["cancelled"] >= 13
    rejected = await DeviceJob.filter(campaign_id=campaign["id"], failure=FailureKind.REJECTED).first()
    assert rejected is not None and rejected.reason == "hash_mismatch"


async def test_pause_holds_new_announcements_and_resume_continues(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("pause", 12, step_delay_s=0.05)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="pausable", image_id=image["id"],
                                  waves=[{"name": "all", "max_in_flight": 2}])  # fmt: skip
    await until(lambda: _count(campaign["id"], JobState.SUCCEEDED, at_least=2), 20, "two successes")
    paused = await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/pause", headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    await asyncio.sleep(0.5)  # in-flight devices finish; nothing new is announced
    before = sum(len(a.announcements) for a in ota.agents.agents.values() if a.device_id.startswith("pause-"))
    await asyncio.sleep(0.5)
    after = sum(len(a.announcements) for a in ota.agents.agents.values() if a.device_id.startswith("pause-"))
    assert before == after < 12
    assert (await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/pause", headers=ADMIN)).status_code == 409

    resumed = await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/resume", headers=ADMIN)
    assert resumed.json()["state"] == "running"
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["counts"]["succeeded"] == 12


async def test_cancel_stops_queued_devices_and_lets_installing_ones_finish(ota: Ota) -> None:
    gate = asyncio.Event()
    fleet = await ota.vendor_fleet("cancel", 10, gate=gate)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="cancelled", image_id=image["id"],
                                  waves=[{"name": "all", "max_in_flight": 3}])  # fmt: skip
    await until(lambda: _count(campaign["id"], JobState.REBOOTING, at_least=3), 20, "three devices rebooting")
    response = await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/cancel", headers=ADMIN)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    gate.set()
    await until(lambda: _count(campaign["id"], JobState.SUCCEEDED, at_least=3), 20, "in-flight devices to finish")
    progress = await ota.progress(campaign["id"])
    assert progress["counts"]["succeeded"] == 3 and progress["counts"]["cancelled"] == 7
    assert (await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/resume", headers=ADMIN)).status_code == 409


async def test_a_failed_canary_pauses_and_retry_failed_touches_only_the_failed(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("retry", 6)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(
        name="flaky canary", image_id=image["id"], max_attempts=1,
        waves=[{"name": "canary", "count": 3, "success_threshold_pct": 100}, {"name": "rest"}],
    )  # fmt: skip
    canary = await (
        DeviceJob.filter(campaign_id=campaign["id"], wave=0).order_by("id").values_list("device_id", flat=True)
    )
    flaky = ota.agents.agents[canary[0]]
    flaky.behaviour = "fail"
    paused = await ota.until_state(campaign["id"], "paused", within=30)
    assert "success threshold" in paused["state_reason"]
    assert paused["wave_progress"][0]["failures"]["failed"] == 1
    failed = await job_of(flaky.device_id, campaign["id"])
    assert failed.state == JobState.FAILED and failed.reason.startswith("flash_write_error")

    flaky.behaviour = "ok"
    retried = await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/retry-failed", headers=ADMIN)
    assert retried.status_code == 200 and retried.json()["retried"] == 1
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["counts"]["succeeded"] == 6
    assert len(flaky.announcements) == 2
    assert all(len(ota.agents.agents[d].announcements) == 1 for d in canary[1:])
    history = await JobTransition.filter(job_id=failed.id).order_by("id").values_list("to_state", flat=True)
    assert "failed" in history and history[-1] == "succeeded"


async def test_a_retryable_failure_is_retried_with_backoff_before_it_counts(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("backoff", 1)
    image = await fleet.upload("2.0.0")
    device = next(iter(a for d, a in ota.agents.agents.items() if d.startswith("backoff-")))
    device.behaviour = "fail"
    campaign = await ota.campaign(name="retries", image_id=image["id"], max_attempts=3, retry_backoff_s=0.1,
                                  waves=[{"name": "all"}], abort_rules=[])  # fmt: skip
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["counts"]["failed"] == 1 and len(device.announcements) == 3
    job = await job_of(device.device_id, campaign["id"])
    assert job.attempts == 3 and job.failure == FailureKind.FAILED


async def test_a_device_registered_later_joins_a_dynamic_campaign(ota: Ota) -> None:
    await ensure_market(ota.api, "DYN01")
    fleet = await ota.vendor_fleet("dynamic", 3, market="DYN01", labels={"zone": "aquatic"})
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="follow the fleet", image_id=image["id"], dynamic_enrolment=True,
                                  target={"markets": ["DYN01"], "labels": {"zone": "aquatic"}},
                                  waves=[{"name": "all"}])  # fmt: skip
    await until(lambda: _count(campaign["id"], JobState.SUCCEEDED, at_least=3), 20, "the first three")
    other_zone = await fleet.add_devices(1, market="DYN01", labels={"zone": "dry_goods"})
    newcomer = await fleet.add_devices(1, market="DYN01", labels={"zone": "aquatic"})
    await until(lambda: _count(campaign["id"], JobState.SUCCEEDED, at_least=4), 20, "the newcomer to succeed")
    assert await job_of(next(iter(newcomer)), campaign["id"])
    assert not await DeviceJob.exists(campaign_id=campaign["id"], device_id=next(iter(other_zone)))
    progress = await ota.progress(campaign["id"])
    assert progress["state"] == "running" and progress["total"] == 4  # a dynamic campaign stays open


async def test_the_maintenance_window_blocks_announcements_outside_its_hours(ota: Ota) -> None:
    await ensure_market(ota.api, "WIN01")
    fleet = await ota.vendor_fleet("window", 3, market="WIN01")
    image = await fleet.upload("2.0.0")
    ota.clock.freeze(datetime(2026, 11, 23, 4, 0, tzinfo=UTC))  # 12:00 in Shanghai: trading hours
    campaign = await ota.campaign(name="at night", image_id=image["id"], maintenance_window="22:00-06:00",
                                  waves=[{"name": "all"}])  # fmt: skip
    await asyncio.sleep(0.5)
    assert not announced(ota, [d for d in ota.agents.agents if d.startswith("window-")])
    assert (await ota.progress(campaign["id"]))["counts"]["pending"] == 3

    ota.clock.freeze(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["counts"]["succeeded"] == 3


async def test_a_silent_device_times_out_and_fails_with_the_reason(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("silent", 1, behaviour="silent")
    image = await fleet.upload("2.0.0")
    device = next(a for d, a in ota.agents.agents.items() if d.startswith("silent-"))
    start = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    ota.clock.freeze(start)
    campaign = await ota.campaign(name="nobody answers", image_id=image["id"], device_timeout_s=60, max_attempts=2,
                                  retry_backoff_s=0, waves=[{"name": "all"}], abort_rules=[])  # fmt: skip
    await until(lambda: _announcements(device, 1), 10, "the first announcement")
    ota.clock.advance(61)
    await until(lambda: _announcements(device, 2), 10, "the retry after the first timeout")
    assert device.announcements[1]["job_id"].endswith(".2")
    ota.clock.advance(61)
    done = await ota.until_state(campaign["id"], "completed", within=10)
    job = await job_of(device.device_id, campaign["id"])
    assert job.state == JobState.FAILED and job.failure == FailureKind.TIMED_OUT
    assert job.reason.startswith("timeout: no result within 60s")
    assert done["failures"]["timed_out"] == 1


async def test_an_undeliverable_announcement_fails_after_its_attempts(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("nodeliv", 1)
    image = await fleet.upload("2.0.0")
    device_id = next(d for d in ota.agents.agents if d.startswith("nodeliv-"))
    ota.agents.send_failures.add(device_id)
    campaign = await ota.campaign(name="broker down", image_id=image["id"], max_attempts=2, retry_backoff_s=0.05,
                                  waves=[{"name": "all"}], abort_rules=[])  # fmt: skip
    await ota.until_state(campaign["id"], "completed", within=20)
    job = await job_of(device_id, campaign["id"])
    assert job.state == JobState.FAILED and job.reason.startswith("send_failed") and job.attempts == 2


async def test_a_restarted_orchestrator_continues_the_campaign(ota: Ota) -> None:
    gate = asyncio.Event()
    fleet = await ota.vendor_fleet("restart", 10, gate=gate)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="survives", image_id=image["id"],
                                  waves=[{"name": "first", "count": 4, "success_threshold_pct": 100},
                                         {"name": "rest", "max_in_flight": 3}])  # fmt: skip
    await until(lambda: _count(campaign["id"], JobState.REBOOTING, at_least=4), 20, "the first wave rebooting")
    service = ota.service
    old = service.orchestrator
    await old.aclose()  # the platform goes down; devices carry on and report (the ingest bus keeps them)
    gate.set()
    await until(lambda: _count(campaign["id"], JobState.SUCCEEDED, at_least=4), 20, "the first wave's reports")
    await asyncio.sleep(0.3)
    assert (await Campaign.get(id=campaign["id"])).current_wave == 0  # nothing advances without the orchestrator

    fresh = OrchestratorService(old.config, old.send, old.clock)
    service.orchestrator = service.campaigns.orchestrator = fresh
    try:
        await fresh.start()
        done = await ota.until_state(campaign["id"], "completed", within=30)
    finally:
        await fresh.aclose()
        service.orchestrator = service.campaigns.orchestrator = old
        await old.start()
    assert done["counts"]["succeeded"] == 10
    assert all(len(a.announcements) == 1 for d, a in ota.agents.agents.items() if d.startswith("restart-"))


async def test_esl_labels_update_through_their_base_station(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("eslco", 0, kind="esl", model="L29")
    stations = await fleet.add_devices(1, kind="esl_base_station", model=None)
    station_id = next(iter(stations))
    labels = await fleet.add_devices(6, metadata={"base_station_id": station_id}, simulate=False)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="labels", image_id=image["id"], waves=[{"name": "all"}])
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["counts"]["succeeded"] == 6
    station = ota.agents.agents[station_id]
    assert station.downloads == 1 and len(station.announcements) == 1
    assert {lbl["label_id"] for lbl in station.announcements[0]["labels"]} == set(labels)
    assert set(await Device.filter(id__in=list(labels)).values_list("firmware_version", flat=True)) == {"2.0.0"}


async def test_rollback_switches_ab_devices_back_and_skips_the_others(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("rollbk", 0)
    ab = await fleet.add_devices(3, version="1.0.0", metadata={"ab_slots": True})
    single = await fleet.add_devices(2, version="1.0.0")
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="to roll back", image_id=image["id"], waves=[{"name": "all"}])
    await ota.until_state(campaign["id"], "completed", within=30)
    response = await ota.api.post(f"/api/v1/firmware/campaigns/{campaign['id']}/rollback", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["devices"] == 3 and body["skipped_without_ab_slot"] == 2
    await ota.until_state(body["campaign"]["id"], "completed", within=30)
    versions = dict(await Device.filter(id__in=[*ab, *single]).values_list("id", "firmware_version"))
    assert {versions[d] for d in ab} == {"1.0.0"} and {versions[d] for d in single} == {"2.0.0"}


async def test_incompatible_and_current_devices_are_excluded_and_counted(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("compat", 2, version="1.0.0")
    await fleet.add_devices(1, version="0.9.0")
    await fleet.add_devices(1, version="2.0.0")
    image = await fleet.upload("2.0.0", from_versions=">=1.0.0")
    campaign = await ota.campaign(name="ranges", image_id=image["id"], waves=[{"name": "all"}])
    assert campaign["excluded"] == {"from_version_not_in_range": 1, "already_current": 1}
    done = await ota.until_state(campaign["id"], "completed", within=30)
    assert done["total"] == 2


async def test_devices_cannot_make_illegal_or_foreign_reports(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("illegal", 2, behaviour="silent")
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="strict", image_id=image["id"], waves=[{"name": "all"}])
    mine, other = [d for d in ota.agents.agents if d.startswith("illegal-")]
    await until(lambda: _announcements(ota.agents.agents[mine], 1), 10, "the announcement")
    job = await job_of(mine, campaign["id"])
    wire = wire_job_id(job.id, job.attempts)
    with pytest.raises(IllegalTransition):
        await ota.service.on_status(mine, {"type": "ota_status", "job_id": wire, "state": "succeeded"})
    with pytest.raises(JobNotFound):
        await ota.service.on_status(other, {"type": "ota_status", "job_id": wire, "state": "downloading"})
    stale = wire_job_id(job.id, job.attempts + 5)
    assert await ota.service.on_status(mine, {"type": "ota_status", "job_id": stale, "state": "downloading"}) \
        == StatusOutcome.STALE  # fmt: skip
    assert await ota.service.on_status(mine, {"type": "ota_status", "job_id": wire, "state": "downloading",
                                              "progress": 10}) == StatusOutcome.APPLIED  # fmt: skip
    assert (await job_of(mine, campaign["id"])).state == JobState.DOWNLOADING


async def test_progress_reports_counts_percentages_and_eta(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("eta", 10, step_delay_s=0.02)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="measured", image_id=image["id"],
                                  waves=[{"name": "all", "rate": {"kind": "constant", "per_minute": 600},
                                          "max_in_flight": 2}])  # fmt: skip
    await until(lambda: _count(campaign["id"], JobState.SUCCEEDED, at_least=3), 20, "three successes")
    progress = await ota.progress(campaign["id"])
    wave = progress["wave_progress"][0]
    assert wave["rate_per_minute"] == 600 and wave["state"] == "running"
    assert progress["eta_s"] is not None and progress["eta_s"] > 0
    assert 0 < progress["done_pct"] < 100 and progress["succeeded_pct"] == pytest.approx(
        100 * progress["counts"]["succeeded"] / 10, abs=0.01)  # fmt: skip
    jobs = (await ota.api.get(f"/api/v1/firmware/campaigns/{campaign['id']}/jobs?state=succeeded",
                              headers=ADMIN)).json()  # fmt: skip
    assert jobs["total"] >= 3 and all(j["state"] == "succeeded" for j in jobs["items"])
    await ota.until_state(campaign["id"], "completed", within=30)


async def test_campaign_commands_need_the_firmware_permission(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("perm", 0)
    response = await ota.api.post("/api/v1/firmware/campaigns", json={"name": "x", "image_id": 1},
                                  headers=fleet.headers)  # fmt: skip
    assert response.status_code == 403
    assert (await ota.api.post("/api/v1/firmware/campaigns", json={"name": "x", "image_id": 1})).status_code == 401


async def _count(campaign_id: int, state: JobState, at_least: int) -> bool:
    return await DeviceJob.filter(campaign_id=campaign_id, state=state).count() >= at_least


async def _announcements(agent, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(agent.announcements) >= n


async def test_queued_statuses_apply_in_bulk_as_they_would_one_by_one(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("bulk", 4, behaviour="silent")
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="bulk", image_id=image["id"], waves=[{"name": "all"}], abort_rules=[],
                                  max_attempts=1)  # fmt: skip
    ids = sorted(d for d in ota.agents.agents if d.startswith("bulk-"))
    await until(lambda: _all_announced(ota, ids), 10, "every announcement")
    jobs = {d: await job_of(d, campaign["id"]) for d in ids}
    wire = {d: wire_job_id(j.id, j.attempts) for d, j in jobs.items()}

    def status(device_id: str, state: str, **extra) -> None:  # type: ignore[no-untyped-def]
        ota.service.report(device_id, {"type": "ota_status", "job_id": wire[device_id], "state": state, **extra})

    ok, failing, skipping, foreign = ids
    for state in ("downloading", "verifying", "installing", "rebooting"):
        status(ok, state, progress=50)
    status(ok, "succeeded", progress=100, version="2.0.0")
    status(failing, "downloading")
    status(failing, "failed", reason="hash_mismatch")
    status(skipping, "downloading")
    status(skipping, "succeeded")  # skips three steps: refused, the job stays downloading
    ota.service.report(ok, {"type": "ota_status", "job_id": wire[foreign], "state": "downloading"})  # not ok's job
    errors = ota.service.status_errors
    await ota.service.drained()

    states = {d: (await job_of(d, campaign["id"])).state for d in ids}
    assert states == {ok: JobState.SUCCEEDED, failing: JobState.FAILED, skipping: JobState.DOWNLOADING,
                      foreign: JobState.PENDING}  # fmt: skip
    assert ota.service.status_errors == errors + 2
    history = await JobTransition.filter(job_id=jobs[ok].id, actor=ok).values_list("to_state", flat=True)
    assert list(history) == ["downloading", "verifying", "installing", "rebooting", "succeeded"]
    assert (await Device.get(id=ok)).firmware_version == "2.0.0"
    assert (await job_of(failing, campaign["id"])).failure == FailureKind.REJECTED


async def _all_announced(ota: Ota, device_ids: list[str]) -> bool:
    return all(ota.agents.agents[d].announcements for d in device_ids)


async def test_progress_streams_as_server_sent_events_until_the_campaign_ends(ota: Ota) -> None:
    gate = asyncio.Event()
    fleet = await ota.vendor_fleet("sse", 3, gate=gate)
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="streamed", image_id=image["id"], waves=[{"name": "all"}])
    url = f"/api/v1/firmware/campaigns/{campaign['id']}/events"
    states: list[str] = []
    async with ota.api.stream("GET", url, params={"interval_s": 0.1}, headers=ADMIN) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "progress":
                progress = json.loads(line.removeprefix("data:"))
                states.append(progress["state"])
                if progress["counts"]["rebooting"] == 3:
                    gate.set()  # every device is waiting to report success: let them
            elif line.startswith("data:") and event == "end":
                assert json.loads(line.removeprefix("data:")) == {"state": "completed"}
                break
    assert states[0] == "running" and states[-1] == "completed" and len(states) >= 2
    assert (await ota.api.get(url.replace(str(campaign["id"]), "999999"), headers=ADMIN)).status_code == 404


async def test_a_devices_update_history_is_visible_within_the_callers_markets(ota: Ota) -> None:
    await ensure_market(ota.api, "HIST01")
    await ensure_market(ota.api, "HIST02")
    fleet = await ota.vendor_fleet("history", 1, market="HIST01")
    device_id = next(d for d in ota.agents.agents if d.startswith("history-"))
    image = await fleet.upload("2.0.0")
    campaign = await ota.campaign(name="history", image_id=image["id"], waves=[{"name": "all"}])
    await ota.until_state(campaign["id"], "completed", within=30)

    jobs = (await ota.api.get(f"/api/v1/firmware/devices/{device_id}/jobs", headers=ADMIN)).json()
    assert [(j["state"], j["from_version"]) for j in jobs] == [("succeeded", "1.0.0")]
    steps = (await ota.api.get(f"/api/v1/firmware/jobs/{jobs[0]['id']}/transitions", headers=ADMIN)).json()
    assert [s["to_state"] for s in steps if s["actor"] == device_id][-1] == "succeeded"

    for market in ("HIST01", "HIST02"):
        body = {"username": f"mgr{market.lower()}", "password": "correct horse battery", "role": "manager",
                "markets": [market]}  # fmt: skip
        assert (await ota.api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
    seen = {}
    for market in ("HIST01", "HIST02"):
        login = await ota.api.post("/api/v1/auth/login", json={"username": f"mgr{market.lower()}",
                                                               "password": "correct horse battery"})  # fmt: skip
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        seen[market] = (await ota.api.get(f"/api/v1/firmware/devices/{device_id}/jobs", headers=headers)).status_code
    assert seen == {"HIST01": 200, "HIST02": 404}


async def test_a_maintainer_limited_to_a_market_sees_and_steers_only_campaigns_inside_it(ota: Ota) -> None:
    """Issue 11, market scoping on every endpoint: campaigns are scoped by the markets they reach."""
    for market in ("SCOPE1", "SCOPE2"):
        await ensure_market(ota.api, market)
    fleet = await ota.vendor_fleet("scoped", 0)
    await fleet.add_devices(2, market="SCOPE1", behaviour="silent")
    await fleet.add_devices(2, market="SCOPE2", behaviour="silent")
    image = await fleet.upload("2.0.0")
    waves = [{"name": "all"}]
    mine = await ota.campaign(name="mine", image_id=image["id"], target={"markets": ["SCOPE1"]}, waves=waves)
    theirs = await ota.campaign(name="theirs", image_id=image["id"], target={"markets": ["SCOPE2"]}, waves=waves)
    await fleet.add_devices(1, market="SCOPE1", behaviour="silent")  # the others are busy in mine / theirs
    await fleet.add_devices(1, market="SCOPE2", behaviour="silent")
    both = await ota.campaign(name="both", image_id=image["id"], target={"markets": ["SCOPE1", "SCOPE2"]},
                              waves=waves)
    body = {"username": "scopedmaint", "password": "correct horse battery", "role": "maintainer",
            "markets": ["SCOPE1"]}
    assert (await ota.api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
    login = await ota.api.post("/api/v1/auth/login", json={"username": "scopedmaint",
                                                           "password": "correct horse battery"})
    me = {"Authorization": f"Bearer {login.json()['token']}"}
    base = "/api/v1/firmware/campaigns"

    listed = (await ota.api.get(base, params={"limit": 500}, headers=me)).json()
    assert {c["id"] for c in listed["items"]} == {mine["id"], both["id"]} and listed["total"] == 2
    everything = {c["id"] for c in (await ota.api.get(base, params={"limit": 500}, headers=ADMIN)).json()["items"]}
    assert {mine["id"], theirs["id"], both["id"]} <= everything
    assert (await ota.api.get(f"{base}/{theirs['id']}", headers=me)).status_code == 404
    assert (await ota.api.get(f"{base}/{theirs['id']}/jobs", headers=me)).status_code == 404
    assert (await ota.api.get(f"{base}/{mine['id']}", headers=me)).status_code == 200
    my_jobs = (await ota.api.get(f"{base}/{mine['id']}/jobs", headers=me)).json()
    assert my_jobs["total"] == 2
    seen = [j["device_id"] for j in (await ota.api.get(f"{base}/{both['id']}/jobs", headers=me)).json()["items"]]
    assert len(seen) == 1 and await Device.get(id=seen[0]).values_list("market_id", flat=True) == "SCOPE1"
    assert (await ota.api.get(f"{base}/{both['id']}/jobs", headers=ADMIN)).json()["total"] == 2
    their_job = (await ota.api.get(f"{base}/{theirs['id']}/jobs", headers=ADMIN)).json()["items"][0]
    assert (await ota.api.get(f"/api/v1/firmware/jobs/{their_job['id']}/transitions", headers=me)).status_code == 404

    assert (await ota.api.post(f"{base}/{theirs['id']}/pause", headers=me)).status_code == 404
    refused = await ota.api.post(f"{base}/{both['id']}/pause", headers=me)
    assert refused.status_code == 403 and "outside your markets" in refused.text
    assert (await ota.api.post(f"{base}/{mine['id']}/pause", headers=me)).json()["state"] == "paused"
    assert (await ota.api.get(f"{base}/{both['id']}", headers=ADMIN)).json()["state"] == "running"

    for target, code in (({}, 403), ({"markets": ["SCOPE2"]}, 403), ({"markets": ["SCOPE1"]}, 201)):
        created = await ota.api.post(base, json={"name": "new", "image_id": image["id"], "target": target,
                                                 "waves": waves}, headers=me)
        assert created.status_code == code, created.text
