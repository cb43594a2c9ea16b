"""Which devices a campaign reaches: the target's criteria as one registry query, then what each matched device
may take (model, from-version range, already current, busy in another campaign)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tortoise.expressions import Subquery
from tortoise.queryset import QuerySet

from firmware.models import DeviceJob, FirmwareImage
from firmware.schemas import Target
from firmware.semver import InvalidVersion, Version, VersionRange
from firmware.states import NOT_TERMINAL
from fleet.models import Device, DeviceLabel, DeviceStatus

# SQLite allows 32,766 bound variables per statement; stay far below it.
_IN_CHUNK = 5000


@dataclass
class Eligible:
    device_id: str
    firmware_version: str


@dataclass
class Resolution:
    eligible: list[Eligible] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)


def target_query(target: Target, image: FirmwareImage, device_ids: list[str] | None = None) -> QuerySet[Device]:
    """Active devices matching every criterion of the target (the image's models when none are named)."""
    query = Device.filter(status=DeviceStatus.ACTIVE, model_id__in=target.models or image.compatible_model_ids)
    if target.markets:
        query = query.filter(market_id__in=target.markets)
    for key, value in target.labels.items():
        query = query.filter(id__in=Subquery(DeviceLabel.filter(key=key, value=value).values("device_id")))
    if device_ids is not None:
        query = query.filter(id__in=device_ids)
    return query


def incompatibility(image: FirmwareImage, model_id: int | None, firmware_version: str) -> str | None:
    """Why a device cannot take the image (an `excluded` key), or None if it can."""
    if model_id is None or model_id not in image.compatible_model_ids:
        return "incompatible_model"
    if firmware_version == image.version:
        return "already_current"
    try:
        current = Version.parse(firmware_version)
    except InvalidVersion:
        return "unknown_version" if VersionRange.parse(image.from_versions).text != "*" else None
    if current not in VersionRange.parse(image.from_versions):
        return "from_version_not_in_range"
    return None


async def resolve(
    target: Target, image: FirmwareImage, *, exclude_campaign: int | None = None, enrolled_in: int | None = None
) -> Resolution:
    """Devices the target matches, split into those that may take the image and those excluded (by reason).

    `enrolled_in`: leave out devices that already have a job in that campaign (dynamic enrolment).
    `exclude_campaign`: a job of that campaign does not make a device busy.
    """
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(target.device_ids) if target.device_ids else [None]:
        query = target_query(target, image, chunk)
        if enrolled_in is not None:
            query = query.exclude(id__in=Subquery(DeviceJob.filter(campaign_id=enrolled_in).values("device_id")))
        rows += await query.order_by("id").values("id", "model_id", "firmware_version")
    busy = await _busy({row["id"] for row in rows}, exclude_campaign)
    result = Resolution()
    if target.device_ids:
        missing = len(set(target.device_ids)) - len(rows)
        if missing > 0 and enrolled_in is None:
            result.excluded["not_matched"] += missing
    for row in rows:
        reason = incompatibility(image, row["model_id"], row["firmware_version"] or "")
        if reason is None and row["id"] in busy:
            reason = "busy_in_other_campaign"
        if reason:
            result.excluded[reason] += 1
        else:
            result.eligible.append(Eligible(row["id"], row["firmware_version"] or ""))
    return result


async def _busy(device_ids: set[str], exclude_campaign: int | None) -> set[str]:
    """Devices with an unfinished job in another campaign: one update at a time per device."""
    busy: set[str] = set()
    for chunk in _chunks(sorted(device_ids)):
        query = DeviceJob.filter(device_id__in=chunk, state__in=list(NOT_TERMINAL))
        if exclude_campaign is not None:
            query = query.exclude(campaign_id=exclude_campaign)
        busy.update(await query.values_list("device_id", flat=True))  # type: ignore[arg-type]
    return busy


def _chunks(items: Iterable[str]) -> list[list[str]]:
    items = list(items)
    return [items[i : i + _IN_CHUNK] for i in range(0, len(items), _IN_CHUNK)]


def supports_ab_slots(device_metadata: dict[str, Any], model_specs: dict[str, Any] | None) -> bool:
    """A/B (dual-bank) devices can switch back to the previous image: the device's metadata or its model's
    specs say `ab_slots: true`."""
    if "ab_slots" in (device_metadata or {}):
        return bool(device_metadata["ab_slots"])
    return bool((model_specs or {}).get("ab_slots"))
