"""Scheduled checks on APScheduler 3, persisted in the registry, run at most once per scheduled time.

The registry is the job store. Every run of a check is a row in `rule_job_run`, unique per (job, scheduled
time), inserted before the check starts. At start each configured job's next run is computed from its last
*scheduled* run there (APScheduler's `next_run_time`): a run that fell due while the platform was down
comes up at once, and the missed runs of a job coalesce into one (`coalesce`, within `misfire_grace_time`).
Interval jobs are laid on a fixed grid (multiples of the interval since 2000-01-01 in the market timezone),
so two processes (a restart that overlaps, a second platform process on the same PostgreSQL registry)
compute the same scheduled times, and whichever inserts a run's row first does it while the other skips it.

Why not APScheduler's `SQLAlchemyJobStore`: it pickles the job into a synchronous database of its own
(SQLAlchemy plus a second file or DSN next to the registry), yet our jobs are configuration, not data. What
must outlive a restart is when each job last ran, which the run records already hold in the registry, on
SQLite and PostgreSQL alike. So the scheduler keeps its jobs in memory and needs no further dependency.
Jobs are dispatched by the executor below to the rules service by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, model_validator
from tortoise.exceptions import IntegrityError
from tortoise.functions import Max

from rules.durations import Duration
from rules.models import JobRun

__all__ = ["DEFAULT_SCHEDULES", "JobSchedule", "RulesScheduler", "scheduled_check"]

log = logging.getLogger(__name__)
Dispatch = Callable[[str, datetime], Awaitable[str]]


class JobSchedule(BaseModel):
    """`every: 2m` or `cron: "0 8 * * *"` (crontab, in the market timezone); `enabled: false` turns it off."""

    every: Duration | None = None
    cron: str | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _one(self) -> JobSchedule:
        if not self.enabled and self.every is None and self.cron is None:
            return self
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of every / cron")
        if self.cron is not None:
            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as err:
                raise ValueError(f"cron: {err}") from err
        if self.every is not None and self.every <= timedelta(0):
            raise ValueError("every: must be longer than 0s")
        return self

    def trigger(self, timezone: str) -> BaseTrigger:
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone=timezone)
        assert self.every is not None
        # A fixed grid: every process computes the same run times (see the module docstring).
        anchor = datetime(2000, 1, 1, tzinfo=ZoneInfo(timezone))
        return IntervalTrigger(seconds=self.every.total_seconds(), start_date=anchor, timezone=timezone)


DEFAULT_SCHEDULES: dict[str, JobSchedule] = {
    "offline-sweep": JobSchedule(every=timedelta(minutes=2)),
    "metrology": JobSchedule(cron="0 8 * * *"),  # every morning before trading starts
    "data-quality-report": JobSchedule(cron="15 0 * * *"),  # yesterday's report, just after midnight
    "housekeeping": JobSchedule(cron="30 3 * * *"),
}


async def scheduled_check(name: str) -> None:
    """What the job store names; the scheduler's executor dispatches by `name` and never calls this."""
    raise RuntimeError(f"scheduled check {name!r} runs only through RulesScheduler")


class _DispatchExecutor(BaseExecutor):
    """Runs a job by handing (name, scheduled time) to the rules service, honouring misfire grace."""

    def __init__(self, run: Callable[[str, datetime], Awaitable[None]]) -> None:
        super().__init__()
        self._run = run
        self.tasks: set[asyncio.Task[list[JobExecutionEvent]]] = set()

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop = scheduler._eventloop

    def shutdown(self, wait: bool = True) -> None:
        for task in self.tasks:
            task.cancel()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        task = self._loop.create_task(self._execute(job, run_times))
        self.tasks.add(task)

        def done(finished: asyncio.Task[list[JobExecutionEvent]]) -> None:
            self.tasks.discard(finished)
            if finished.cancelled():
                self._run_job_error(job.id, asyncio.CancelledError(), None)
                return
            try:
                events = finished.result()
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        task.add_done_callback(done)

    async def _execute(self, job: Any, run_times: list[datetime]) -> list[JobExecutionEvent]:
        events = []
        for run_time in run_times:
            late = datetime.now(UTC) - run_time
            if job.misfire_grace_time is not None and late > timedelta(seconds=job.misfire_grace_time):
                log.warning("scheduled check %s of %s missed by %s", job.id, run_time, late)
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                continue
            try:
                await self._run(str(job.args[0]), run_time)
            except Exception as err:
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time,
                                                exception=err, traceback=traceback.format_exc()))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time))
        return events


class RulesScheduler:
    def __init__(
        self,
        schedules: dict[str, JobSchedule],
        dispatch: Dispatch,
        *,
        timezone: str = "Asia/Shanghai",
        misfire_grace_s: int = 3600,
    ) -> None:
        self.schedules = {name: schedule for name, schedule in schedules.items() if schedule.enabled}
        self.dispatch = dispatch
        self.timezone, self.misfire_grace_s = timezone, misfire_grace_s
        self._scheduler: AsyncIOScheduler | None = None
        self._executor: _DispatchExecutor | None = None
        self.executed: list[tuple[str, datetime]] = []  # runs this scheduler carried out (for status and tests)

    async def _last_runs(self) -> dict[str, datetime]:
        """Each job's latest scheduled run in the registry (runs by hand are off the grid and do not count)."""
        rows = await JobRun.filter(job__in=list(self.schedules), manual=False).group_by("job").annotate(
            last=Max("scheduled_for")).values_list("job", "last")
        return {str(job): _aware(last) for job, last in rows if last is not None}

    async def start(self) -> None:
        self._executor = _DispatchExecutor(self._run)
        scheduler = AsyncIOScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": self._executor},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": self.misfire_grace_s},
            timezone=self.timezone,
        )
        last = await self._last_runs()
        now = datetime.now(ZoneInfo(self.timezone))
        for name, schedule in self.schedules.items():
            trigger = schedule.trigger(self.timezone)
            # From the last run: a due time that passed while nothing ran is in the past, so it runs at once.
            next_run = trigger.get_next_fire_time(last.get(name), now)
            scheduler.add_job(scheduled_check, trigger, args=[name], id=name, name=name, next_run_time=next_run)
        scheduler.start()
        self._scheduler = scheduler

    async def _run(self, name: str, scheduled_for: datetime, manual: bool = False) -> None:
        try:
            run = await JobRun.create(job=name, scheduled_for=scheduled_for, started_at=datetime.now(UTC),
                                      manual=manual)
        except IntegrityError:
            log.info("scheduled check %s of %s already ran", name, scheduled_for.isoformat())
            return
        self.executed.append((name, scheduled_for))
        try:
            detail = await self.dispatch(name, scheduled_for)
        except Exception as err:
            run.status, run.detail = "error", f"{type(err).__name__}: {err}"[:4000]
            raise
        else:
            run.status, run.detail = "ok", str(detail)[:4000]
        finally:
            run.finished_at = datetime.now(UTC)
            await run.save(update_fields=["status", "detail", "finished_at"])

    async def run_now(self, name: str) -> str:
        """Run a check at once, outside its schedule (recorded like a scheduled run, at the current time)."""
        if name not in self.schedules:
            raise KeyError(f"unknown scheduled check {name!r}; known: {', '.join(self.schedules)}")
        scheduled_for = datetime.now(UTC)
        await self._run(name, scheduled_for, manual=True)
        run = await JobRun.get(job=name, scheduled_for=scheduled_for)
        return run.detail

    def jobs(self) -> list[dict[str, Any]]:
        if self._scheduler is None:
            return []
        return [{"id": job.id, "trigger": str(job.trigger),
                 "next_run_time": job.next_run_time.isoformat() if job.next_run_time else None}
                for job in self._scheduler.get_jobs()]

    async def aclose(self) -> None:
        scheduler, executor = self._scheduler, self._executor
        self._scheduler = None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback
        if executor is not None:
            tasks = list(executor.tasks)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
