"""Scheduled checks: jobs persist across a restart and run once per scheduled time; metrology alarms per owner;
the daily data-quality report."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from broker.models import DeadLetter
from fleet.models import Device, Market, MetrologyRecord, Stall, Vendor
from rules import JobSchedule, RulesSettings
from rules.models import Alert, AlertStatus, JobRun
from rules.reports import report_csv
from rules.scheduler import RulesScheduler
from tests.factories import eventually
from tests.integration.rules.conftest import FAST, forget_routing_and_state, start_service

pytestmark = pytest.mark.timeout(90)

EVERY_SECOND = {"probe": JobSchedule(every="1s")}


class Recorder:
    def __init__(self) -> None:
        self.runs: list[datetime] = []

    async def __call__(self, name: str, scheduled_for: datetime) -> str:
        self.runs.append(scheduled_for)
        return "ok"


async def test_jobs_survive_a_restart_and_a_missed_run_happens_once(platform):
    record = Recorder()
    await JobRun.filter(job="probe").delete()
    first = RulesScheduler(EVERY_SECOND, record)
    await first.start()
    await eventually(lambda: asyncio.sleep(0, result=len(record.runs) >= 2))
    await first.aclose()
    stopped, before = datetime.now(UTC), len(record.runs)
    await asyncio.sleep(2.5)  # two runs fall due while nothing is running

    second = RulesScheduler(EVERY_SECOND, record)
    restarted = datetime.now(UTC)
    await second.start()
    await eventually(lambda: asyncio.sleep(0, result=len(record.runs) >= before + 2))
    await second.aclose()

    grid = record.runs[0]
    assert all((t - grid).total_seconds() == round((t - grid).total_seconds()) for t in record.runs)  # same job
    missed = [t for t in record.runs[before:] if stopped < t < restarted]
    assert len(missed) == 1  # the missed runs coalesced into one, run late but run
    assert len(set(record.runs)) == len(record.runs)
    assert await JobRun.filter(job="probe").count() == len(record.runs)


async def test_two_schedulers_on_one_registry_run_each_scheduled_time_once(platform):
    await JobRun.filter(job="probe").delete()
    one, two = RulesScheduler(EVERY_SECOND, Recorder()), RulesScheduler(EVERY_SECOND, Recorder())
    await one.start()
    await two.start()  # e.g. a restart that overlaps the old process
    await asyncio.sleep(3.5)
    await one.aclose()
    await two.aclose()
    times = [t for _, t in one.executed + two.executed]
    assert len(times) >= 3 and len(times) == len(set(times))
    assert all(t.microsecond == 0 for t in times)  # both on the same grid, so each time was contested
    assert await JobRun.filter(job="probe").count() == len(times)


async def make_scales(today: date) -> None:
    market = await Market.create(code="MT1", name="Metrology market")
    stall_a = await Stall.create(market=market, number="A-01", holder_name="Zhang San")
    stall_b = await Stall.create(market=market, number="B-02", holder_name="Li Si")
    stall_c = await Stall.create(market=market, number="C-03")
    vendor = await Vendor.create(code="mtv", name="Scales Ltd", api_key_prefix="mtvprefix", api_key_hash="-")
    due = {"mtv-A1": (stall_a, -10), "mtv-A2": (stall_a, -1), "mtv-B1": (stall_b, -30), "mtv-B2": (stall_b, 200),
           "mtv-C1": (stall_c, 10), "mtv-X1": (None, None)}
    for device_id, (stall, days) in due.items():
        device = await Device.create(id=device_id, serial=device_id, vendor=vendor, kind="scale", market=market,
                                     stall=stall)
        if days is not None:
            await MetrologyRecord.create(device=device, certificate_no=f"C-{device_id}",
                                         verified_on=today - timedelta(days=365), due_on=today + timedelta(days=days))


async def test_metrology_raises_one_alarm_per_owner_and_clears_on_a_new_certificate(platform, tmp_path: Path):
    today = datetime.now(UTC).date()
    await make_scales(today)
    service = await start_service(tmp_path)
    try:
        await service.check_metrology(today)
        overdue = {a.element: a for a in await Alert.filter(rule_id="metrology-overdue", market="MT1")}
        assert sorted(overdue) == ["MT1/stall A-01", "MT1/stall B-02", "MT1/unassigned"]
        assert overdue["MT1/stall A-01"].value == "2"
        assert "stall A-01 (Zhang San): 2 scale(s) overdue" in overdue["MT1/stall A-01"].message
        assert "mtv-A1, mtv-A2" in overdue["MT1/stall A-01"].message
        assert "no record" in overdue["MT1/unassigned"].message
        [soon] = await Alert.filter(rule_id="metrology-due-soon", market="MT1")
        assert soon.element == "MT1/stall C-03"

        await MetrologyRecord.create(device_id="mtv-B1", certificate_no="C-new", verified_on=today,
                                     due_on=today + timedelta(days=365))
        await service.check_metrology(today)
        stall_b = await Alert.get(id=overdue["MT1/stall B-02"].id)
        assert (stall_b.status, stall_b.resolution) == (AlertStatus.RESOLVED, "auto")
        assert (await Alert.get(id=overdue["MT1/stall A-01"].id)).occurrences == 2  # still overdue: counted
    finally:
        await service.aclose()
        await forget_routing_and_state()


async def test_the_service_scheduler_runs_the_metrology_check_and_records_it(platform, tmp_path: Path):
    schedules = {"metrology": JobSchedule(every="1s"), "offline-sweep": JobSchedule(cron="0 0 1 1 *")}
    settings = RulesSettings(**{**FAST.model_dump(), "scheduler": True, "schedules": schedules})
    service = await start_service(tmp_path, settings)
    try:
        run = await eventually(lambda: JobRun.filter(job="metrology", status="ok").first())
        assert "metrology-overdue:" in run.detail and not run.manual
    finally:
        await service.aclose()
        await forget_routing_and_state()


async def test_the_daily_data_quality_report_lists_silent_devices_and_dead_letters(platform, tmp_path: Path):
    now = datetime.now(UTC)
    day = now.astimezone(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=1)  # yesterday in the market's zone
    market = await Market.create(code="DQ1", name="Data-quality market")
    vendor = await Vendor.create(code="dqv", name="Sensors Ltd", api_key_prefix="dqvprefix", api_key_hash="-")
    noon = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=4)  # noon in Shanghai
    await Device.create(id="dqv-1", serial="1", vendor=vendor, kind="env_sensor", market=market, last_seen=noon)
    await Device.create(id="dqv-2", serial="2", vendor=vendor, kind="env_sensor", market=market,
                        last_seen=noon - timedelta(days=3))
    for reason in ("schema", "schema", "too_large"):
        dead = await DeadLetter.create(transport="mqtt", device_id="dqv-1", reason=reason, detail="x")
        await DeadLetter.filter(id=dead.id).update(received_at=noon)
    service = await start_service(tmp_path)
    try:
        service.engine.sequence_gaps["dqv-1"] = 4
        written = await service.run_check("data-quality-report", now)
        assert "market reports written" in written
        csv_text = (tmp_path / "reports" / "data-quality" / "DQ1" / f"{day}.csv").read_text()
        html_text = (tmp_path / "reports" / "data-quality" / "DQ1" / f"{day}.html").read_text()
        assert f"DQ1,{day},silent,dqv-2,last_seen" in csv_text
        assert f"DQ1,{day},dead_letters,dqv-1,schema,2" in csv_text
        assert f"DQ1,{day},sequence_gaps,dqv-1,missing,4" in csv_text
        assert "Data-quality report: Data-quality market (DQ1)" in html_text
        report = await service.data_quality_report("DQ1", day)
        assert report.summary["dead letters"] == 3 and "silent" in report_csv(report)
    finally:
        await service.aclose()
        await forget_routing_and_state()
