"""The OTA orchestrator: one asyncio task that advances every campaign from the database, and the entry point
for device status reports.

Every decision reads the database and writes its outcome back before acting, so a restarted orchestrator
simply continues: a job announced just before a crash has a deadline, times out and is retried. The rules
themselves (wave sizes, thresholds, abort, rates, windows, the state machines) live in pure modules.

Job announcements leave through the injected `send(device, payload)`; the platform wires it to MQTT
`mf/v1/{market}/{device_id}/down/ota` or CoAP. Statuses come in through `on_status(device_id, OtaStatus)`,
which the platform wires to the ingest bus. One orchestrator runs per platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tortoise.expressions import F, Q
from tortoise.functions import Count

from firmware.errors import IllegalTransition, JobNotFound
from firmware.models import Campaign, CampaignWave, DeviceJob, FirmwareImage, JobTransition
from firmware.schemas import (
    AbortRule,
    CancelAnnouncement,
    ImageRef,
    InstallAnnouncement,
    OtaStatus,
    RelayAnnouncement,
    RelayedLabel,
    RollbackAnnouncement,
    Target,
    WaveSpec,
)
from firmware.states import (
    FINISHED_CAMPAIGN,
    IN_PROGRESS,
    NOT_TERMINAL,
    CampaignAction,
    CampaignState,
    FailureKind,
    JobOp,
    JobState,
    campaign_transition,
    classify_failure,
    device_transition,
)
from firmware.targeting import resolve
from firmware.waves import (
    Counts,
    WaveVerdict,
    abort_reason,
    announce_budget,
    backoff_s,
    judge_wave,
    rate_per_minute,
)
from firmware.windows import MaintenanceWindow, zone
from fleet.kinds import DeviceKind
from fleet.models import Device, Market

log = logging.getLogger(__name__)

Send = Callable[[Device, dict[str, Any]], Awaitable[None]]
Clock = Callable[[], datetime]
PLATFORM = "platform"


_STOPPED_WORD = {CampaignAction.CANCEL: "campaign cancelled", CampaignAction.ABORT: "campaign aborted"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class OrchestratorConfig:
    http_base_url: str = "http://127.0.0.1:8000"
    coap_base_url: str = "coap://127.0.0.1:5683"
    tick_s: float = 1.0
    enrol_interval_s: float = 30.0
    announce_batch: int = 500  # most announcements per campaign per tick
    send_concurrency: int = 64
    relay_batch: int = 200  # most labels in one base-station announcement
    default_timezone: str = "Asia/Shanghai"  # for devices not placed in a market


class StatusOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the job already is in that final state
    STALE = "stale"  # a report about an earlier attempt, or about a job cancelled meanwhile


def wire_job_id(job_id: int, attempt: int) -> str:
    return f"{job_id}.{attempt}"


def parse_wire_job_id(text: str) -> tuple[int, int]:
    head, _, attempt = text.partition(".")
    if not head.isdigit() or not attempt.isdigit():
        raise JobNotFound(f"job {text!r} not found")
    return int(head), int(attempt)


def _job_pk(text: str) -> int | None:
    try:
        return parse_wire_job_id(text)[0]
    except JobNotFound:
        return None


def campaign_counts(rows: Iterable[dict[str, Any]]) -> dict[int, Counts]:
    """Counts per wave from `(wave, state, failure, n)` rows."""
    waves: dict[int, Counts] = defaultdict(Counts)
    for row in rows:
        counts, n, state = waves[row["wave"]], row["n"], JobState(row["state"])
        if state == JobState.PENDING:
            counts.pending += n
        elif state in IN_PROGRESS:
            counts.in_progress += n
        elif state == JobState.SUCCEEDED:
            counts.succeeded += n
        elif state == JobState.CANCELLED:
            counts.cancelled += n
        elif row["failure"] == FailureKind.REJECTED:
            counts.rejected += n
        elif row["failure"] == FailureKind.TIMED_OUT:
            counts.timed_out += n
        else:
            counts.failed += n
    return waves


async def count_rows(campaign_id: int) -> list[dict[str, Any]]:
    return await (
        DeviceJob.filter(campaign_id=campaign_id)
        .annotate(n=Count("id"))
        .group_by("wave", "state", "failure")
        .values("wave", "state", "failure", "n")
    )


class OrchestratorService:
    def __init__(self, config: OrchestratorConfig, send: Send, clock: Clock | None = None) -> None:
        self.config = config
        self.send = send
        self.clock = clock or utc_now
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_enrol: dict[int, datetime] = {}
        self._images: dict[int, FirmwareImage] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="firmware-orchestrator")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Run the next tick now (a result arrived, a campaign was created or resumed)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # a failing tick must not end the loop; the next one retries from the database
                log.exception("firmware orchestrator tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_s)

    # ------------------------------------------------------------ the tick

    async def tick(self) -> None:
        """One pass: expire overdue jobs, start scheduled campaigns, advance running ones."""
        now = self.clock()
        await self._expire(now)
        for campaign in await Campaign.filter(state=CampaignState.SCHEDULED, start_at__lte=now):
            await self.move(campaign, CampaignAction.START, now)
        for campaign in await Campaign.filter(state=CampaignState.RUNNING).order_by("id"):
            try:
                await self._advance(campaign, now)
            except Exception:
                log.exception("firmware campaign %s could not advance", campaign.id)
        for campaign in await Campaign.filter(state=CampaignState.PAUSED).order_by("id"):
            # paused by a stuck wave or a person: what was in flight still reports, and may break a rule
            if not campaign.abort_rules:
                continue
            reason = abort_reason([AbortRule.model_validate(r) for r in campaign.abort_rules],
                                  sum(campaign_counts(await count_rows(campaign.id)).values(), Counts()))  # fmt: skip
            if reason:
                await self.stop_campaign(campaign, CampaignAction.ABORT, reason, now)

    async def _advance(self, campaign: Campaign, now: datetime) -> None:
        image = await self._image(campaign.image_id)  # type: ignore[attr-defined]
        waves = [WaveSpec.model_validate(w) for w in campaign.waves]
        if campaign.dynamic_enrolment and campaign.op == JobOp.INSTALL:
            await self._enrol_new(campaign, image, len(waves) - 1, now)
        per_wave = campaign_counts(await count_rows(campaign.id))
        total = sum(per_wave.values(), Counts())
        reason = abort_reason([AbortRule.model_validate(r) for r in campaign.abort_rules], total)
        if reason:
            await self.stop_campaign(campaign, CampaignAction.ABORT, reason, now)
            return

        last = len(waves) - 1
        wave = campaign.current_wave
        while wave < last:
            verdict = judge_wave(per_wave[wave].total - per_wave[wave].cancelled, per_wave[wave],
                                 waves[wave].success_threshold_pct)
            if verdict == WaveVerdict.STUCK:
                counts = per_wave[wave]
                await self.move(
                    campaign, CampaignAction.PAUSE, now,
                    f"wave {wave} ({waves[wave].name or 'unnamed'}) cannot reach its success threshold of "
                    f"{waves[wave].success_threshold_pct:g}%: {counts.succeeded} succeeded, {counts.failures} "
                    f"failed of {counts.total - counts.cancelled}; retry the failed or resume to re-check",
                )  # fmt: skip
                return
            if verdict != WaveVerdict.ADVANCE:
                break
            wave += 1
            await CampaignWave.filter(campaign_id=campaign.id, index=wave, started_at=None).update(started_at=now)
        if wave != campaign.current_wave:
            campaign.current_wave = wave
            await Campaign.filter(id=campaign.id).update(current_wave=wave)
            log.info("firmware campaign %s advanced to wave %s", campaign.id, wave)

        for index, counts in per_wave.items():
            if index <= wave and counts.open == 0:
                await CampaignWave.filter(campaign_id=campaign.id, index=index, finished_at=None).update(
                    finished_at=now
                )
        if wave == last and total.open == 0 and not campaign.dynamic_enrolment:
            summary = f"{total.succeeded} succeeded, {total.failures} failed, {total.cancelled} cancelled"
            await self.move(campaign, CampaignAction.COMPLETE, now, summary)
            return
        await self._announce(campaign, image, waves[wave], wave, total, now)

    async def _image(self, image_id: int) -> FirmwareImage:
        image = self._images.get(image_id)
        if image is None:  # images are immutable once uploaded
            image = self._images[image_id] = await FirmwareImage.get(id=image_id)
        return image

    # ------------------------------------------------------------ enrolment

    async def _enrol_new(self, campaign: Campaign, image: FirmwareImage, last_wave: int, now: datetime) -> None:
        previous = self._last_enrol.get(campaign.id)
        if previous is not None and (now - previous).total_seconds() < self.config.enrol_interval_s:
            return
        self._last_enrol[campaign.id] = now
        found = await resolve(
            Target.model_validate(campaign.target), image, exclude_campaign=campaign.id, enrolled_in=campaign.id
        )
        if not found.eligible:
            return
        await DeviceJob.bulk_create(
            [
                DeviceJob(
                    campaign_id=campaign.id, device_id=e.device_id, wave=last_wave, op=JobOp.INSTALL,
                    from_version=e.firmware_version, to_version=image.version, updated_at=now,
                )
                for e in found.eligible
            ],
            batch_size=1000,
            ignore_conflicts=True,
        )  # fmt: skip
        await CampaignWave.filter(campaign_id=campaign.id, index=last_wave).update(
            planned=F("planned") + len(found.eligible), finished_at=None
        )
        log.info("firmware campaign %s enrolled %s new devices", campaign.id, len(found.eligible))

    # ------------------------------------------------------------ announcing

    async def _announce(
        self, campaign: Campaign, image: FirmwareImage, spec: WaveSpec, wave: int, total: Counts, now: datetime
    ) -> None:
        per_minute = rate_per_minute(spec.rate, total.succeeded)
        recent = in_flight = 0
        if per_minute is not None:
            minute_ago = now - timedelta(minutes=1)
            recent = await DeviceJob.filter(campaign_id=campaign.id, announced_at__gt=minute_ago).count()
        if spec.max_in_flight is not None:
            in_flight = await DeviceJob.filter(
                campaign_id=campaign.id, state__in=list(NOT_TERMINAL), announced_at__not_isnull=True
            ).count()
        budget = announce_budget(per_minute, recent, in_flight, spec.max_in_flight, self.config.announce_batch)
        if budget <= 0:
            return
        query = DeviceJob.filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
            campaign_id=campaign.id, state=JobState.PENDING, announced_at__isnull=True, wave__lte=wave,
        )  # fmt: skip
        if campaign.maintenance_window:
            query = await self._inside_window(query, MaintenanceWindow.parse(campaign.maintenance_window), now)
            if query is None:
                return
        jobs = await query.order_by("wave", "id").limit(budget).values(
            "id", "device_id", "attempts", "op", "to_version"
        )
        if not jobs:
            return
        deadline = now + timedelta(seconds=campaign.device_timeout_s)
        ids = [job["id"] for job in jobs]
        await DeviceJob.filter(id__in=ids, state=JobState.PENDING, announced_at__isnull=True).update(
            announced_at=now, deadline_at=deadline, attempts=F("attempts") + 1, updated_at=now, reason=""
        )
        for job in jobs:
            job["attempts"] += 1
        await JobTransition.bulk_create(
            [
                JobTransition(job_id=job["id"], at=now, from_state=JobState.PENDING, to_state=JobState.PENDING,
                              attempt=job["attempts"], reason="announced", actor=PLATFORM)
                for job in jobs
            ]
        )  # fmt: skip
        devices = {d.id: d for d in await Device.filter(id__in=[job["device_id"] for job in jobs])}
        await self._deliver(campaign, image, jobs, devices, deadline, now)

    async def _inside_window(self, query: Any, window: MaintenanceWindow, now: datetime) -> Any:
        """Restrict queued jobs to devices whose market's local time is inside the window; None if none is."""
        zones = set(await Market.all().distinct().values_list("timezone", flat=True))
        open_zones = [name for name in zones if window.is_open(now, name)]
        default_open = window.is_open(now, zone(self.config.default_timezone))
        if not open_zones and not default_open:
            return None
        condition = Q(device__market__timezone__in=open_zones) if open_zones else None
        if default_open:
            unplaced = Q(device__market_id__isnull=True)
            condition = unplaced if condition is None else condition | unplaced
        return query.filter(condition)

    def _image_ref(self, image: FirmwareImage) -> ImageRef:
        return ImageRef(
            image_id=image.id, version=image.version, size=image.size, sha256=image.sha256,
            signature=image.signature, key_id=image.key_id,
            url=f"{self.config.http_base_url.rstrip('/')}/api/v1/firmware/images/{image.id}/blob",
            coap_url=f"{self.config.coap_base_url.rstrip('/')}/mf/v1/fw/{image.id}",
        )  # fmt: skip

    async def _deliver(
        self,
        campaign: Campaign,
        image: FirmwareImage,
        jobs: Sequence[dict[str, Any]],
        devices: dict[str, Device],
        deadline: datetime,
        now: datetime,
    ) -> None:
        """Send the announcements: directly to each device, or once per ESL base station for its labels."""
        ref = self._image_ref(image)
        direct: list[tuple[Device, dict[str, Any], list[dict[str, Any]]]] = []
        relayed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        undeliverable: list[tuple[dict[str, Any], str]] = []
        for job in jobs:
            device = devices.get(job["device_id"])
            if device is None:
                undeliverable.append((job, "device_removed"))
                continue
            job_id = wire_job_id(job["id"], job["attempts"])
            if job["op"] == JobOp.ROLLBACK:
                payload = RollbackAnnouncement(job_id=job_id, campaign_id=campaign.id, to_version=job["to_version"],
                                               deadline=deadline)  # fmt: skip
            elif device.kind == DeviceKind.ESL:
                # Labels have no IP link of their own: their base station fetches the image once and flashes
                # each label over the air (BJ 4.2.9), reporting each label's job on its own up/event.
                station = (device.metadata or {}).get("base_station_id")
                if station:
                    relayed[station].append(job)
                else:
                    undeliverable.append((job, "no_base_station: the label has not joined a base station"))
                continue
            else:
                payload = InstallAnnouncement(job_id=job_id, campaign_id=campaign.id, image=ref, deadline=deadline)
            direct.append((device, payload.model_dump(mode="json"), [job]))

        if relayed:
            stations = {d.id: d for d in await Device.filter(id__in=list(relayed))}
            for station_id, label_jobs in relayed.items():
                station = stations.get(station_id)
                if station is None:
                    undeliverable += [(job, f"no_base_station: {station_id} is not registered") for job in label_jobs]
                    continue
                for start in range(0, len(label_jobs), self.config.relay_batch):
                    batch = label_jobs[start : start + self.config.relay_batch]
                    await DeviceJob.filter(id__in=[j["id"] for j in batch]).update(relay_device_id=station_id)
                    payload = RelayAnnouncement(
                        campaign_id=campaign.id, image=ref, deadline=deadline,
                        labels=[RelayedLabel(label_id=j["device_id"], job_id=wire_job_id(j["id"], j["attempts"]))
                                for j in batch],
                    )  # fmt: skip
                    direct.append((station, payload.model_dump(mode="json"), batch))

        semaphore = asyncio.Semaphore(self.config.send_concurrency)

        async def send_one(device: Device, payload: dict[str, Any], batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                try:
                    await self.send(device, payload)
                except Exception as err:  # the transport's failure is this job's problem, not the tick's
                    log.warning("firmware announcement to %s failed: %s", device.id, err)
                    undeliverable.extend((job, f"send_failed: {type(err).__name__}: {err}"[:200]) for job in batch)

        await asyncio.gather(*(send_one(*item) for item in direct))
        for job, reason in undeliverable:
            await self._requeue_or_fail(job["id"], JobState.PENDING, job["attempts"], campaign, reason,
                                        FailureKind.FAILED, now)  # fmt: skip

    # ------------------------------------------------------------ timeouts and retries

    async def _expire(self, now: datetime) -> None:
        overdue = await DeviceJob.filter(
            deadline_at__lt=now, state__in=list(NOT_TERMINAL), announced_at__not_isnull=True
        ).limit(2000).values("id", "state", "attempts", "campaign_id", "announced_at")
        if not overdue:
            return
        campaigns = {c.id: c for c in await Campaign.filter(id__in=list({row["campaign_id"] for row in overdue}))}
        for row in overdue:
            campaign = campaigns[row["campaign_id"]]
            reason = f"timeout: no result within {campaign.device_timeout_s}s (last state {row['state']})"
            await self._requeue_or_fail(row["id"], JobState(row["state"]), row["attempts"], campaign, reason,
                                        FailureKind.TIMED_OUT, now)  # fmt: skip

    def _may_retry(self, campaign: Campaign, attempts: int, failure: FailureKind) -> bool:
        return (
            failure != FailureKind.REJECTED
            and attempts < campaign.max_attempts
            and campaign.state in (CampaignState.RUNNING, CampaignState.PAUSED)
        )

    async def _requeue_or_fail(
        self,
        job_id: int,
        state: JobState,
        attempts: int,
        campaign: Campaign,
        reason: str,
        failure: FailureKind,
        now: datetime,
    ) -> None:
        """After a timeout or a failed delivery: queue the job again after back-off, or fail it for good."""
        if self._may_retry(campaign, attempts, failure):
            wait = backoff_s(attempts, campaign.retry_backoff_s, campaign.retry_backoff_max_s)
            changes: dict[str, Any] = {
                "state": JobState.PENDING, "failure": None, "announced_at": None, "deadline_at": None,
                "next_attempt_at": now + timedelta(seconds=wait),
                "reason": f"{reason} (attempt {attempts} of {campaign.max_attempts}; retry in {wait:g}s)"[:200],
            }  # fmt: skip
        else:
            changes = {"state": JobState.FAILED, "failure": failure, "reason": reason[:200], "finished_at": now,
                       "deadline_at": None}  # fmt: skip
        updated = await DeviceJob.filter(id=job_id, state=state, attempts=attempts).update(updated_at=now, **changes)
        if updated:
            await JobTransition.create(job_id=job_id, at=now, from_state=state, to_state=changes["state"],
                                       attempt=attempts, reason=changes["reason"], actor=PLATFORM)  # fmt: skip

    # ------------------------------------------------------------ statuses from devices

    async def on_status(self, device_id: str, status: OtaStatus | dict[str, Any]) -> StatusOutcome:
        """Apply one `ota_status` event from `device_id` (the device itself, or the base station relaying for
        a label). Raises JobNotFound for a job that is not the device's, IllegalTransition for a step the
        state machine does not have; both are the device's error, to be dead-lettered, not retried."""
        if not isinstance(status, OtaStatus):
            status = OtaStatus.model_validate(status)
        job_pk, attempt = parse_wire_job_id(status.job_id)
        reported = JobState(status.state)
        reported_reason = status.reason
        for _ in range(5):  # a tick may change the same row meanwhile (timeout); re-read and decide again
            row = await DeviceJob.filter(id=job_pk).first().values(
                "id", "device_id", "relay_device_id", "state", "attempts", "op", "to_version", "campaign_id"
            )
            if row is None or device_id not in (row["device_id"], row["relay_device_id"]):
                raise JobNotFound(f"job {status.job_id} is not a job of device {device_id}")
            current = JobState(row["state"])
            if attempt != row["attempts"] or current == JobState.CANCELLED:
                return StatusOutcome.STALE
            if (reported == JobState.SUCCEEDED and status.version and row["to_version"]
                    and status.version != row["to_version"]):
                # The device booted into something else (the new slot failed and it fell back, or a bad build):
                # that is a failure the abort rules must count, not a success.
                reported = JobState.FAILED
                reported_reason = f"wrong_version: booted {status.version}, expected {row['to_version']}"
            if current == reported and current in (JobState.SUCCEEDED, JobState.FAILED):
                return StatusOutcome.DUPLICATE
            new_state = device_transition(current, reported, JobOp(row["op"]))
            now = self.clock()
            changes: dict[str, Any] = {"state": new_state, "progress": status.progress, "updated_at": now}
            reason = reported_reason or ""
            wake = False
            if new_state == JobState.SUCCEEDED:
                changes.update(progress=100, finished_at=now, deadline_at=None, reason=reason)
                wake = True
            elif new_state == JobState.FAILED:
                failure = classify_failure(reason or "failed")
                campaign = await Campaign.get(id=row["campaign_id"])
                reason = reason or "failed (no reason given)"
                if self._may_retry(campaign, row["attempts"], failure):
                    wait = backoff_s(row["attempts"], campaign.retry_backoff_s, campaign.retry_backoff_max_s)
                    tries = f"attempt {row['attempts']} of {campaign.max_attempts}"
                    changes.update(
                        state=JobState.PENDING, announced_at=None, deadline_at=None, failure=None,
                        next_attempt_at=now + timedelta(seconds=wait),
                        reason=f"{reason} ({tries}; retry in {wait:g}s)"[:200],
                    )  # fmt: skip
                else:
                    changes.update(failure=failure, finished_at=now, deadline_at=None, reason=reason[:200])
                wake = True
            updated = await DeviceJob.filter(id=job_pk, state=current, attempts=row["attempts"]).update(**changes)
            if not updated:
                continue
            await JobTransition.create(job_id=job_pk, at=now, from_state=current, to_state=new_state,
                                       attempt=attempt, progress=status.progress, reason=reason[:200],
                                       actor=device_id)  # fmt: skip
            if changes["state"] != new_state:  # failed, then queued again for another attempt
                await JobTransition.create(job_id=job_pk, at=now, from_state=new_state, to_state=changes["state"],
                                           attempt=attempt, reason="queued for retry", actor=PLATFORM)  # fmt: skip
            if new_state == JobState.SUCCEEDED and row["to_version"]:
                await Device.filter(id=row["device_id"]).update(firmware_version=row["to_version"])
            if wake:
                self.wake()
            return StatusOutcome.APPLIED
        raise JobNotFound(f"job {status.job_id} kept changing; report again")

    async def on_statuses(self, items: Sequence[tuple[str, OtaStatus]]) -> list[tuple[str, OtaStatus]]:
        """Apply many statuses with a few bulk statements: the plain forward steps (downloading … succeeded) of
        jobs whose whole run in `items` is such steps. Returns, in order, the statuses left for `on_status`
        one by one (failures, retries, stale or foreign reports, anything that did not apply as expected).

        An ESL base station reports five steps for each of hundreds of labels; row by row, the database would
        set the pace of a label campaign."""
        by_job: dict[int, list[tuple[str, OtaStatus]]] = defaultdict(list)
        slow_jobs: set[int] = set()
        leftovers: list[tuple[str, OtaStatus]] = []
        for device_id, status in items:
            try:
                job_pk, _ = parse_wire_job_id(status.job_id)
            except JobNotFound:
                leftovers.append((device_id, status))
                continue
            by_job[job_pk].append((device_id, status))
            if status.state == JobState.FAILED:
                slow_jobs.add(job_pk)
        fast = [pk for pk in by_job if pk not in slow_jobs]
        rows = {row["id"]: row for row in await DeviceJob.filter(id__in=fast).values(
            "id", "device_id", "relay_device_id", "state", "attempts", "op", "to_version")} if fast else {}  # fmt: skip
        now = self.clock()
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        transitions: list[JobTransition] = []
        for pk in fast:
            row, reports = rows.get(pk), by_job[pk]
            state = JobState(row["state"]) if row else None
            steps: list[tuple[JobState, JobState, int, str]] = []
            for device_id, status in reports:
                reported = JobState(status.state)
                if (row is None or device_id not in (row["device_id"], row["relay_device_id"])
                        or parse_wire_job_id(status.job_id)[1] != row["attempts"] or state is None
                        or (reported == JobState.SUCCEEDED and status.version and status.version != row["to_version"])
                        or state in (JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED)):  # fmt: skip
                    steps = []
                    break
                try:
                    new_state = device_transition(state, reported, JobOp(row["op"]))
                except IllegalTransition:
                    steps = []
                    break
                steps.append((state, new_state, status.progress, device_id))
                state = new_state
            if not steps:
                slow_jobs.add(pk)
                continue
            first, final, progress = steps[0][0], steps[-1][1], steps[-1][2]
            groups[(first, row["attempts"], final, progress, row["to_version"] if final == JobState.SUCCEEDED
                    else None)].append(pk)  # fmt: skip
            transitions += [JobTransition(job_id=pk, at=now, from_state=a, to_state=b, attempt=row["attempts"],
                                          progress=p, actor=who) for a, b, p, who in steps]  # fmt: skip
        applied: set[int] = set()
        succeeded = False
        for (first, attempts, final, progress, to_version), pks in groups.items():
            changes: dict[str, Any] = {"state": final, "progress": progress, "updated_at": now}
            if final == JobState.SUCCEEDED:
                changes.update(progress=100, finished_at=now, deadline_at=None, reason="")
            count = await DeviceJob.filter(id__in=pks, state=first, attempts=attempts).update(**changes)
            if count != len(pks):  # some changed meanwhile (a timeout): those go the slow way
                moved = set(
                    await DeviceJob.filter(id__in=pks, state=final, updated_at=now).values_list("id", flat=True)
                )
                slow_jobs.update(set(pks) - moved)
                pks = [pk for pk in pks if pk in moved]
            applied.update(pks)
            if final == JobState.SUCCEEDED and to_version:
                succeeded = True
                devices = [rows[pk]["device_id"] for pk in pks]
                await Device.filter(id__in=devices).update(firmware_version=to_version)
        if transitions:
            await JobTransition.bulk_create([t for t in transitions if t.job_id in applied], batch_size=1000)
        if succeeded:
            self.wake()
        for device_id, status in items:
            job_pk = _job_pk(status.job_id)
            if job_pk is not None and job_pk in slow_jobs and job_pk not in applied:
                leftovers.append((device_id, status))
        return leftovers

    async def current_announcement(self, device_id: str) -> dict[str, Any] | None:
        """The announcement of the device's open, announced job (for devices that poll over HTTP)."""
        job = await DeviceJob.filter(
            device_id=device_id, state__in=list(NOT_TERMINAL), announced_at__not_isnull=True
        ).order_by("-id").first()
        if job is None:
            return None
        campaign = await Campaign.get(id=job.campaign_id)  # type: ignore[attr-defined]
        job_id = wire_job_id(job.id, job.attempts)
        payload: RollbackAnnouncement | InstallAnnouncement
        if job.op == JobOp.ROLLBACK:
            payload = RollbackAnnouncement(job_id=job_id, campaign_id=campaign.id, to_version=job.to_version,
                                           deadline=job.deadline_at or self.clock())  # fmt: skip
        else:
            image = await self._image(campaign.image_id)  # type: ignore[attr-defined]
            payload = InstallAnnouncement(job_id=job_id, campaign_id=campaign.id, image=self._image_ref(image),
                                          deadline=job.deadline_at or self.clock())  # fmt: skip
        return payload.model_dump(mode="json")

    # ------------------------------------------------------------ campaign moves

    async def move(self, campaign: Campaign, action: CampaignAction, now: datetime, reason: str = "") -> Campaign:
        """Change a campaign's state as the state machine allows (raises IllegalTransition otherwise)."""
        new_state = campaign_transition(campaign.state, action)
        changes: dict[str, Any] = {"state": new_state, "state_reason": reason}
        if action == CampaignAction.START or (new_state == CampaignState.RUNNING and campaign.started_at is None):
            changes["started_at"] = now
            await CampaignWave.filter(campaign_id=campaign.id, index=campaign.current_wave, started_at=None).update(
                started_at=now
            )
        if new_state in FINISHED_CAMPAIGN:
            changes["finished_at"] = now
        elif campaign.finished_at is not None:
            changes["finished_at"] = None
        updated = await Campaign.filter(id=campaign.id, state=campaign.state).update(**changes)
        if not updated:
            raise IllegalTransition(f"campaign {campaign.id} changed meanwhile; reload it and try again")
        for name, value in changes.items():
            setattr(campaign, name, value)
        log.info("firmware campaign %s: %s -> %s %s", campaign.id, action.value, new_state.value, reason)
        if new_state == CampaignState.RUNNING:
            self.wake()
        return campaign

    async def stop_campaign(self, campaign: Campaign, action: CampaignAction, reason: str, now: datetime) -> None:
        """Cancel or abort: queued jobs are cancelled; announced jobs not yet started are told to cancel; jobs
        already installing finish (or time out) and are recorded."""
        await self.move(campaign, action, now, reason)
        why = _STOPPED_WORD[action]
        await DeviceJob.filter(campaign_id=campaign.id, state=JobState.PENDING, announced_at__isnull=True).update(
            state=JobState.CANCELLED, reason=why, finished_at=now, updated_at=now
        )
        announced = await DeviceJob.filter(
            campaign_id=campaign.id, state=JobState.PENDING, announced_at__not_isnull=True
        ).values("id", "device_id", "attempts", "relay_device_id")
        if not announced:
            return
        await DeviceJob.filter(id__in=[j["id"] for j in announced], state=JobState.PENDING).update(
            state=JobState.CANCELLED, reason=why, finished_at=now, updated_at=now,
            deadline_at=None,
        )  # fmt: skip
        targets = {d.id: d for d in await Device.filter(
            id__in=list({j["relay_device_id"] or j["device_id"] for j in announced}))}  # fmt: skip
        for job in announced:
            device = targets.get(job["relay_device_id"] or job["device_id"])
            if device is None:
                continue
            try:
                await self.send(device, CancelAnnouncement(job_id=wire_job_id(job["id"], job["attempts"])).model_dump())
            except Exception as err:  # best effort: the device ignores a job past its deadline anyway
                log.warning("firmware cancel to %s failed: %s", device.id, err)
