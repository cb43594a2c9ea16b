"""Reading and writing the vision tables: cameras, flow per minute (30 days), events and their handling."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tortoise.transactions import in_transaction

from fleet.errors import Conflict, InvalidRequest
from fleet.errors import NotFound as FleetNotFound
from vision.config import CameraAnalytics
from vision.models import EventState, FlowMinute, VisionCamera, VisionEvent

Bucket = Literal["minute", "hour", "day"]


class NotFound(FleetNotFound):
    """No such camera or event (the API answers 404)."""


class InvalidQuery(InvalidRequest):
    """A query that cannot be answered as asked (the API answers 422 with this reason)."""


@dataclass(frozen=True)
class FlowPoint:
    start: datetime
    line: str
    count_in: int
    count_out: int


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


class VisionStore:
    def __init__(self, retention_days: int = 30) -> None:
        self.retention_days = retention_days

    # ------------------------------------------------------------ cameras

    async def save_camera(self, device_id: str, **values: Any) -> VisionCamera:
        camera = await VisionCamera.get_or_none(device_id=device_id)
        if camera is None:
            return await VisionCamera.create(device_id=device_id, **values)
        await camera.update_from_dict(values).save()
        return camera

    async def camera(self, device_id: str) -> VisionCamera:
        camera = await VisionCamera.get_or_none(device_id=device_id)
        if camera is None:
            raise NotFound(f"camera {device_id} is not known to the vision worker; onboard it first")
        return camera

    async def cameras(self, markets: frozenset[str] | None = None) -> list[VisionCamera]:
        query = VisionCamera.all().order_by("device_id")
        if markets is not None:
            query = query.filter(market__in=list(markets))
        return await query

    async def set_analytics(self, device_id: str, analytics: CameraAnalytics) -> VisionCamera:
        camera = await self.camera(device_id)
        camera.analytics = analytics.model_dump(mode="json")
        await camera.save()
        return camera

    # ------------------------------------------------------------ passenger flow

    async def add_counts(self, device_id: str, minute: datetime, counts: dict[str, tuple[int, int]]) -> None:
        """Add crossings to the minute's rows (a minute may be written several times as it fills)."""
        minute = minute_of(minute)
        async with in_transaction():
            for line, (count_in, count_out) in counts.items():
                row = await FlowMinute.get_or_none(camera=device_id, line=line, minute=minute)
                if row is None:
                    await FlowMinute.create(camera=device_id, line=line, minute=minute, count_in=count_in,
                                            count_out=count_out)
                else:
                    row.count_in += count_in
                    row.count_out += count_out
                    await row.save(update_fields=["count_in", "count_out"])

    async def flow(self, device_id: str, start: datetime, end: datetime, *, line: str | None = None,
                   bucket: Bucket = "minute") -> list[FlowPoint]:
        if end <= start:
            raise InvalidQuery("end must be after start")
        oldest = datetime.now(UTC) - timedelta(days=self.retention_days)
        if start < oldest - timedelta(days=1):
            raise InvalidQuery(f"passenger flow is kept for {self.retention_days} days; start after "
                               f"{oldest:%Y-%m-%d}")
        query = FlowMinute.filter(camera=device_id, minute__gte=start, minute__lt=end)
        if line:
            query = query.filter(line=line)
        sums: dict[tuple[datetime, str], list[int]] = defaultdict(lambda: [0, 0])
        for row in await query.order_by("minute", "line"):
            key = (_truncate(row.minute, bucket), row.line)
            sums[key][0] += row.count_in
            sums[key][1] += row.count_out
        return [FlowPoint(s, name, v[0], v[1]) for (s, name), v in sorted(sums.items())]

    async def purge(self, now: datetime | None = None) -> int:
        """Drop flow rows past retention; returns how many went."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        return await FlowMinute.filter(minute__lt=cutoff).delete()

    # ------------------------------------------------------------ events

    async def record_event(self, **values: Any) -> VisionEvent:
        return await VisionEvent.create(**values)

    async def set_evidence(self, event: VisionEvent, path: str) -> None:
        event.evidence_path = path
        await event.save(update_fields=["evidence_path"])

    async def events(self, *, camera: str | None = None, category: str | None = None,
                     state: EventState | None = None, markets: frozenset[str] | None = None,
                     limit: int = 100) -> list[VisionEvent]:
        query = VisionEvent.all()
        if camera:
            query = query.filter(camera=camera)
        if category:
            query = query.filter(category=category)
        if state:
            query = query.filter(state=state)
        if markets is not None:
            query = query.filter(market__in=list(markets))
        return await query.order_by("-id").limit(limit)

    async def event(self, event_id: int) -> VisionEvent:
        event = await VisionEvent.get_or_none(id=event_id)
        if event is None:
            raise NotFound(f"vision event {event_id} not found")
        return event

    async def handle_event(self, event_id: int, by: str, note: str = "") -> VisionEvent:
        event = await self.event(event_id)
        if event.state == EventState.HANDLED:
            raise Conflict(f"event {event_id} was already handled by {event.handled_by}")
        event.state, event.handled_by, event.handled_at, event.note = EventState.HANDLED, by, datetime.now(UTC), note
        await event.save()
        return event


def _truncate(moment: datetime, bucket: Bucket) -> datetime:
    moment = moment.astimezone(UTC)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)
