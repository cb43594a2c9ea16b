"""Campaign commands and views: create, pause, resume, cancel, retry the failed, roll back; progress per wave.

The orchestrator (firmware/orchestrator.py) does the running; this module only changes what it reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from firmware.errors import CampaignNotFound, IllegalTransition, JobNotFound
from firmware.models import Campaign, CampaignWave, DeviceJob, FirmwareImage, JobTransition
from firmware.orchestrator import OrchestratorService, campaign_counts, count_rows
from firmware.schemas import (
    CampaignCreate,
    CampaignProgress,
    CampaignPublic,
    FailureCounts,
    RollbackResult,
    StateCounts,
    WaveProgress,
    WaveSpec,
)
from firmware.scope import ensure_owned, visible_ids
from firmware.states import CampaignAction, CampaignState, JobOp, JobState
from firmware.targeting import resolve, supports_ab_slots
from firmware.waves import Counts, assign_waves, eta_s, pct, plan_wave_sizes, rate_per_minute
from fleet.errors import InvalidRequest
from fleet.models import Device, DeviceModel, Market


class CampaignService:
    def __init__(self, orchestrator: OrchestratorService) -> None:
        self.orchestrator = orchestrator

    @property
    def now(self) -> datetime:
        return self.orchestrator.clock()

    # ------------------------------------------------------------ commands

    async def create(self, data: CampaignCreate) -> Campaign:
        """Plan a campaign: resolve the target, size the waves, queue one job per eligible device."""
        image = await FirmwareImage.get_or_none(id=data.image_id)
        if image is None:
            raise InvalidRequest(f"image_id: no image {data.image_id}")
        if data.target.models:
            known = set(await DeviceModel.filter(id__in=data.target.models).values_list("id", flat=True))
            unknown = [m for m in data.target.models if m not in known]
            if unknown:
                raise InvalidRequest(f"target.models: no device model {unknown[0]}")
        if data.target.markets:
            known_markets = set(await Market.filter(code__in=data.target.markets).values_list("code", flat=True))
            unknown_markets = [m for m in data.target.markets if m not in known_markets]
            if unknown_markets:
                raise InvalidRequest(f"target.markets: no market {unknown_markets[0]!r}")
        now = self.now
        scheduled = data.start_at is not None and data.start_at > now
        found = await resolve(data.target, image)
        sizes = plan_wave_sizes(len(found.eligible), data.waves)
        versions = {e.device_id: e.firmware_version for e in found.eligible}
        async with in_transaction():
            campaign = await Campaign.create(
                name=data.name,
                image=image,
                op=JobOp.INSTALL,
                state=CampaignState.SCHEDULED if scheduled else CampaignState.RUNNING,
                target=data.target.model_dump(mode="json"),
                waves=[w.model_dump(mode="json") for w in data.waves],
                abort_rules=[r.model_dump(mode="json") for r in data.abort_rules],
                device_timeout_s=data.device_timeout_s,
                max_attempts=data.max_attempts,
                retry_backoff_s=data.retry_backoff_s,
                retry_backoff_max_s=data.retry_backoff_max_s,
                maintenance_window=data.maintenance_window or "",
                dynamic_enrolment=data.dynamic_enrolment,
                excluded=dict(found.excluded),
                start_at=data.start_at,
                started_at=None if scheduled else now,
            )
            await CampaignWave.bulk_create(
                [
                    CampaignWave(campaign=campaign, index=i, planned=size, started_at=None if scheduled or i else now)
                    for i, size in enumerate(sizes)
                ]
            )
            await DeviceJob.bulk_create(
                [
                    DeviceJob(campaign=campaign, device_id=device_id, wave=wave, op=JobOp.INSTALL,
                              from_version=versions[device_id], to_version=image.version, updated_at=now)
                    for device_id, wave in assign_waves(list(versions), sizes, seed=f"campaign-{campaign.id}")
                ],
                batch_size=1000,
            )  # fmt: skip
        self.orchestrator.wake()
        return campaign

    async def get(self, campaign_id: int) -> Campaign:
        campaign = await Campaign.get_or_none(id=campaign_id)
        if campaign is None:
            raise CampaignNotFound(f"campaign {campaign_id} not found")
        return campaign

    async def list(
        self, state: CampaignState | None = None, limit: int = 50, offset: int = 0,
        markets: frozenset[str] | None = None,
    ) -> tuple[int, list[Campaign]]:
        """Newest first; with `markets`, only campaigns touching one of them (firmware/scope.py)."""
        query = Campaign.all() if state is None else Campaign.filter(state=state)
        if markets is not None:
            query = query.filter(id__in=sorted(await visible_ids(markets)))
        return await query.count(), await query.order_by("-id").offset(offset).limit(limit)

    async def pause(self, campaign_id: int, reason: str = "paused by an operator") -> Campaign:
        return await self.orchestrator.move(await self.get(campaign_id), CampaignAction.PAUSE, self.now, reason)

    async def resume(self, campaign_id: int) -> Campaign:
        return await self.orchestrator.move(await self.get(campaign_id), CampaignAction.RESUME, self.now)

    async def cancel(self, campaign_id: int, reason: str = "cancelled by an operator") -> Campaign:
        campaign = await self.get(campaign_id)
        await self.orchestrator.stop_campaign(campaign, CampaignAction.CANCEL, reason, self.now)
        return campaign

    async def ensure_owned(self, campaign_id: int, markets: frozenset[str] | None) -> None:
        """For callers without the firmware package at hand (the dashboard): see firmware/scope.py."""
        await ensure_owned(campaign_id, markets)

    async def retry_failed(self, campaign_id: int) -> tuple[Campaign, int]:
        """Queue every failed job again with fresh attempts; the campaign runs again. Returns how many."""
        campaign = await self.get(campaign_id)
        now = self.now
        failed = await DeviceJob.filter(campaign_id=campaign.id, state=JobState.FAILED).values_list("id", flat=True)
        if not failed:
            raise IllegalTransition(f"campaign {campaign.id} has no failed devices to retry")
        await self.orchestrator.move(campaign, CampaignAction.RETRY_FAILED, now, f"retrying {len(failed)} failed")
        await DeviceJob.filter(id__in=failed, state=JobState.FAILED).update(
            state=JobState.PENDING, failure=None, attempts=0, progress=0, announced_at=None, deadline_at=None,
            next_attempt_at=None, finished_at=None, updated_at=now, reason="retry of the failed",
        )  # fmt: skip
        await JobTransition.bulk_create(
            [JobTransition(job_id=i, at=now, from_state=JobState.FAILED, to_state=JobState.PENDING,
                           reason="retry of the failed", actor="platform") for i in failed]
        )  # fmt: skip
        self.orchestrator.wake()
        return campaign, len(failed)

    async def rollback(self, campaign_id: int) -> RollbackResult:
        """Switch every device that took this campaign's image back to its other A/B slot (a campaign of its
        own). Devices without an A/B slot are counted, not touched: they need a campaign with the old image."""
        original = await self.get(campaign_id)
        if original.op != JobOp.INSTALL:
            raise IllegalTransition("a rollback campaign cannot itself be rolled back")
        now = self.now
        if original.state in (CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.SCHEDULED):
            await self.orchestrator.stop_campaign(original, CampaignAction.CANCEL, "rolled back", now)
        done = await DeviceJob.filter(campaign_id=original.id, state=JobState.SUCCEEDED).values(
            "device_id", "from_version", "to_version"
        )
        devices = {d.id: d for d in await Device.filter(id__in=[j["device_id"] for j in done])}
        specs = {m.id: m.specs for m in await DeviceModel.filter(id__in=list({d.model_id for d in devices.values()}))}  # type: ignore[attr-defined]
        capable = [
            j for j in done
            if j["from_version"] and j["device_id"] in devices
            and supports_ab_slots(devices[j["device_id"]].metadata, specs.get(devices[j["device_id"]].model_id))  # type: ignore[attr-defined]
        ]  # fmt: skip
        async with in_transaction():
            campaign = await Campaign.create(
                name=f"rollback of {original.name}"[:200],
                image_id=original.image_id,  # type: ignore[attr-defined]
                op=JobOp.ROLLBACK,
                rollback_of=original,
                state=CampaignState.RUNNING,
                target={"device_ids": [j["device_id"] for j in capable]},
                waves=[WaveSpec(name="rollback", success_threshold_pct=0).model_dump(mode="json")],
                abort_rules=[],
                device_timeout_s=original.device_timeout_s,
                max_attempts=original.max_attempts,
                retry_backoff_s=original.retry_backoff_s,
                retry_backoff_max_s=original.retry_backoff_max_s,
                maintenance_window=original.maintenance_window,
                excluded={"without_ab_slot": len(done) - len(capable)} if len(done) > len(capable) else {},
                started_at=now,
            )
            await CampaignWave.create(campaign=campaign, index=0, planned=len(capable), started_at=now)
            await DeviceJob.bulk_create(
                [DeviceJob(campaign=campaign, device_id=j["device_id"], op=JobOp.ROLLBACK, from_version=j["to_version"],
                           to_version=j["from_version"], updated_at=now) for j in capable],
                batch_size=1000,
            )  # fmt: skip
        self.orchestrator.wake()
        return RollbackResult(
            campaign=CampaignPublic.model_validate(campaign),
            devices=len(capable),
            skipped_without_ab_slot=len(done) - len(capable),
        )

    # ------------------------------------------------------------ views

    async def jobs(
        self,
        campaign_id: int,
        state: JobState | None = None,
        wave: int | None = None,
        limit: int = 100,
        offset: int = 0,
        markets: frozenset[str] | None = None,
    ) -> tuple[int, list[DeviceJob]]:
        """A campaign's jobs; with `markets`, only those of devices in them."""
        await self.get(campaign_id)
        query = DeviceJob.filter(campaign_id=campaign_id)
        if markets is not None:
            query = query.filter(device__market_id__in=sorted(markets))
        if state is not None:
            query = query.filter(state=state)
        if wave is not None:
            query = query.filter(wave=wave)
        return await query.count(), await query.order_by("id").offset(offset).limit(limit)

    async def device_jobs(self, device_id: str) -> list[DeviceJob]:
        return await DeviceJob.filter(device_id=device_id).order_by("-id").limit(200)

    async def transitions(self, job_id: int) -> list[JobTransition]:
        if not await DeviceJob.exists(id=job_id):
            raise JobNotFound(f"job {job_id} not found")
        return await JobTransition.filter(job_id=job_id).order_by("id")

    async def progress(self, campaign_id: int) -> CampaignProgress:
        """Counts, percentages and ETA for the campaign and each wave."""
        campaign = await self.get(campaign_id)
        now = self.now
        rows = await count_rows(campaign.id)
        per_wave = campaign_counts(rows)
        states: dict[int, dict[str, int]] = {}
        for row in rows:
            states.setdefault(row["wave"], {}).setdefault(row["state"], 0)
            states[row["wave"]][row["state"]] += row["n"]
        total = sum(per_wave.values(), Counts())
        waves = [WaveSpec.model_validate(w) for w in campaign.waves]
        wave_rows = {w.index: w for w in await CampaignWave.filter(campaign_id=campaign.id)}
        running = campaign.state == CampaignState.RUNNING
        current_rate = rate_per_minute(waves[campaign.current_wave].rate, total.succeeded) if waves else None

        progress: list[WaveProgress] = []
        for index, spec in enumerate(waves):
            counts, row = per_wave.get(index, Counts()), wave_rows.get(index)
            size = counts.total
            started = row.started_at if row else None
            finished = row.finished_at if row else None
            state = "done" if finished and counts.open == 0 else "running" if started else "waiting"
            elapsed = ((finished or now) - started).total_seconds() if started else 0.0
            rate = rate_per_minute(spec.rate, total.succeeded)
            progress.append(
                WaveProgress(
                    index=index, name=spec.name, planned=row.planned if row else 0, size=size, state=state,
                    counts=StateCounts(**states.get(index, {})), failures=_failures(counts),
                    succeeded_pct=pct(counts.succeeded, size), failed_pct=pct(counts.failures, size),
                    done_pct=pct(size - counts.open, size), success_threshold_pct=spec.success_threshold_pct,
                    rate_per_minute=rate,
                    eta_s=eta_s(counts.open, counts.executed, elapsed, rate) if started and running else None,
                    started_at=started, finished_at=finished,
                )
            )  # fmt: skip

        merged: dict[str, int] = {}
        for per_state in states.values():
            for name, n in per_state.items():
                merged[name] = merged.get(name, 0) + n
        elapsed = (now - campaign.started_at).total_seconds() if campaign.started_at else 0.0
        eta = eta_s(total.open, total.executed, elapsed, current_rate) if running else None
        if running and total.open == 0:
            eta = 0.0
        return CampaignProgress(
            **_public(campaign),
            total=total.total,
            counts=StateCounts(**merged),
            failures=_failures(total),
            succeeded_pct=pct(total.succeeded, total.total),
            failed_pct=pct(total.failures, total.total),
            done_pct=pct(total.total - total.open, total.total),
            eta_s=eta,
            wave_progress=progress,
        )


def _failures(counts: Counts) -> FailureCounts:
    return FailureCounts(failed=counts.failed, rejected=counts.rejected, timed_out=counts.timed_out)


def _public(campaign: Campaign) -> dict[str, Any]:
    return CampaignPublic.model_validate(campaign).model_dump()
