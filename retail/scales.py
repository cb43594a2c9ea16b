"""Scale integrity: self-check and anti-cheat reports (BJ 4.2.4), calibration only with a server authorisation
(SZ 6.2.7), and metrology due dates (SJZ table 4 items 7–8, 15).

A calibration grant is time-limited (at most `MAX_GRANT`), single-use and for one scale. The platform sends
it to the scale (`authorise_calibration`); the scale refuses to calibrate without a current one, and names the
grant in its `calibrated` event. The platform accepts that event only if the grant exists, is for that
scale, was still valid at the calibration's time and was not used before; every calibration is recorded,
accepted or refused, and a refused one counts as a tamper report.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from fleet.errors import InvalidRequest, NotFound
from fleet.models import Device, MetrologyRecord
from retail.commands import Clock, CommandSender
from retail.models import Calibration, CalibrationGrant, IntegrityEvent, ScalePlu

__all__ = ["MAX_GRANT", "ScaleDesk"]

MAX_GRANT = timedelta(hours=2)


@dataclass(frozen=True)
class DueItem:
    device_id: str
    name: str
    market: str | None
    stall_no: str | None
    owner: str
    certificate_no: str
    due_on: date
    days_left: int


class ScaleDesk:
    def __init__(self, sender: CommandSender, clock: Clock) -> None:
        self.sender = sender
        self.clock = clock

    async def _scale(self, scale_id: str, markets: frozenset[str] | None = None) -> Device:
        device = await Device.get_or_none(id=scale_id)
        if device is None or device.kind != "scale" or (markets is not None and device.market_id not in markets):  # type: ignore[attr-defined]
            raise NotFound(f"no scale {scale_id!r}")
        return device

    # ---------------------------------------------------------------- calibration (SZ 6.2.7)

    async def grant_calibration(self, scale_id: str, minutes: int, actor: str, reason: str = "",
                                markets: frozenset[str] | None = None) -> CalibrationGrant:
        scale = await self._scale(scale_id, markets)
        if not 1 <= minutes <= MAX_GRANT.total_seconds() // 60:
            raise InvalidRequest(f"minutes: between 1 and {int(MAX_GRANT.total_seconds() // 60)}")
        now = self.clock()
        grant = await CalibrationGrant.create(
            id=secrets.token_urlsafe(18), scale_id=scale.id, granted_by=actor, reason=reason, granted_at=now,
            valid_until=now + timedelta(minutes=minutes),
        )
        await self.sender.send(scale.id, scale.market_id, {  # type: ignore[attr-defined]
            "command": "authorise_calibration", "grant_id": grant.id, "valid_until": grant.valid_until.isoformat(),
        })
        return grant

    async def calibrated(self, scale_id: str, event: dict[str, Any], at: datetime) -> Calibration:
        """The scale's `calibrated` event: accepted with a valid grant, else recorded as refused (and tamper)."""
        grant_id = event.get("grant_id")
        refusal = ""
        grant = await CalibrationGrant.get_or_none(id=grant_id) if grant_id else None
        if not grant_id:
            refusal = "no_grant"
        elif grant is None:
            refusal = "unknown_grant"
        elif grant.scale_id != scale_id:
            refusal = "other_scale"
        elif grant.used_at is not None:
            refusal = "reused"
        elif at > grant.valid_until:
            refusal = "expired"
        if grant is not None and not refusal:
            # Claim the grant with a conditional update so two events racing for it cannot both win.
            claimed = await CalibrationGrant.filter(id=grant.id, used_at__isnull=True).update(used_at=at)
            if not claimed:
                refusal = "reused"
        record = await Calibration.create(scale_id=scale_id, grant_id=grant_id, accepted=not refusal, refusal=refusal,
                                          reference_kg=float(event["reference_kg"]),
                                          measured_kg=float(event["measured_kg"]), at=at)
        if refusal:
            await self.integrity(scale_id, "tamper", ok=False, reason="unauthorised_calibration",
                                 details=f"calibration refused: {refusal}", at=at)
        return record

    async def calibrations(self, scale_id: str, markets: frozenset[str] | None = None) -> list[Calibration]:
        await self._scale(scale_id, markets)
        return await Calibration.filter(scale_id=scale_id).order_by("-at", "-id")

    async def grants(self, scale_id: str, markets: frozenset[str] | None = None) -> list[CalibrationGrant]:
        await self._scale(scale_id, markets)
        return await CalibrationGrant.filter(scale_id=scale_id).order_by("-granted_at")

    # ---------------------------------------------------------------- self-check and anti-cheat (BJ 4.2.4)

    async def integrity(self, scale_id: str, type_: str, *, ok: bool, reason: str = "", details: str = "",
                        at: datetime) -> IntegrityEvent:
        event = await IntegrityEvent.create(scale_id=scale_id, type=type_, ok=ok, reason=reason,
                                            details=details[:500], at=at)
        if type_ == "tamper":
            await self.anti_cheat(scale_id, ok)
        return event

    async def anti_cheat(self, scale_id: str, ok: bool) -> None:
        plu, _ = await ScalePlu.get_or_create(scale_id=scale_id)
        if plu.anti_cheat_ok != ok:
            plu.anti_cheat_ok = ok
            await plu.save(update_fields=["anti_cheat_ok"])

    async def integrity_log(self, scale_id: str, markets: frozenset[str] | None = None) -> dict[str, Any]:
        await self._scale(scale_id, markets)
        plu = await ScalePlu.get_or_none(scale_id=scale_id)
        events = await IntegrityEvent.filter(scale_id=scale_id).order_by("-at", "-id").limit(200)
        return {"anti_cheat_ok": plu.anti_cheat_ok if plu else True, "events": events}

    # ---------------------------------------------------------------- metrology (SJZ table 4)

    async def metrology_due(self, within_days: int, market: str | None = None,
                            markets: frozenset[str] | None = None) -> dict[str, Any]:
        """Scales whose verification is overdue or due within `within_days`, grouped per owner (the stall's
        holder, else the market). A scale without any certificate counts as overdue."""
        if not 0 <= within_days <= 366:
            raise InvalidRequest("within_days: between 0 and 366")
        today = self.clock().date()
        query = Device.filter(kind="scale").exclude(status="retired").prefetch_related("stall")
        if market:
            if markets is not None and market not in markets:
                raise NotFound(f"no market {market!r}")
            query = query.filter(market_id=market)
        elif markets is not None:
            query = query.filter(market_id__in=list(markets))
        scales = await query
        latest: dict[str, MetrologyRecord] = {}
        for record in await MetrologyRecord.filter(device_id__in=[s.id for s in scales]).order_by("verified_on", "id"):
            latest[record.device_id] = record  # type: ignore[attr-defined]
        overdue: list[DueItem] = []
        due_soon: list[DueItem] = []
        for scale in scales:
            record = latest.get(scale.id)
            due_on = record.due_on if record else today - timedelta(days=1)
            owner = (scale.stall.holder_name if scale.stall else "") or (scale.market_id or "-")  # type: ignore[attr-defined]
            item = DueItem(scale.id, scale.name, scale.market_id, scale.stall.number if scale.stall else None,  # type: ignore[attr-defined]
                           owner, record.certificate_no if record else "", due_on, (due_on - today).days)
            if due_on < today:
                overdue.append(item)
            elif (due_on - today).days <= within_days:
                due_soon.append(item)
        return {"today": today, "overdue": _by_owner(overdue), "due_soon": _by_owner(due_soon),
                "overdue_count": len(overdue), "due_soon_count": len(due_soon)}


def _by_owner(items: list[DueItem]) -> list[dict[str, Any]]:
    groups: dict[str, list[DueItem]] = {}
    for item in sorted(items, key=lambda i: (i.owner, i.due_on)):
        groups.setdefault(item.owner, []).append(item)
    return [{"owner": owner, "scales": [i.__dict__ for i in group]} for owner, group in groups.items()]
