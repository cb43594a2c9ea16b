"""What retail does with device uplinks: one handler per (kind, channel, event type).

Ingest has already validated, stored and acknowledged the uplink; the envelope arrives here from the in-process
bus. A handler that cannot use an envelope (a scanned code no product has, a transaction of an unknown market)
logs it and counts it in `UplinkStats.ignored`: the device's message is stored either way, so nothing is lost,
and one bad message never stops the loop.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from fleet.envelope import Envelope
from fleet.errors import MarketFleetError
from fleet.kinds import validate_payload
from fleet.models import Device

if TYPE_CHECKING:
    from retail.service import RetailService

__all__ = ["UplinkRouter", "UplinkStats"]

log = logging.getLogger(__name__)


@dataclass
class UplinkStats:
    handled: collections.Counter[str] = field(default_factory=collections.Counter)
    ignored: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: int = 0


class UplinkRouter:
    def __init__(self, service: RetailService) -> None:
        self.service = service
        self.stats = UplinkStats()

    async def handle(self, envelope: Envelope) -> None:
        kind, channel = str(envelope.kind), str(envelope.channel)
        if kind not in ("scale", "esl", "esl_base_station"):
            return
        try:
            model = validate_payload(kind, channel, envelope.payload)
        except (ValidationError, KeyError):
            self.stats.ignored["invalid"] += 1
            return
        name = f"{kind}.{channel}" + (f".{model.type}" if channel == "event" else "")
        handler = getattr(self, "_" + name.replace(".", "_"), None)
        if handler is None:
            return
        try:
            await handler(envelope, model)
            self.stats.handled[name] += 1
        except MarketFleetError as err:
            self.stats.ignored[name] += 1
            log.info("retail: %s from %s not used: %s", name, envelope.device_id, err)
        except Exception:
            self.stats.errors += 1
            log.exception("retail: %s from %s failed", name, envelope.device_id)

    async def handle_price_sets(self, envelopes: list[Envelope]) -> None:
        """Prices typed on scales that arrived together: looked up in their order, then written in one group
        commit (retail/prices.py), each judged by the conflict rule against what came before it."""
        name = "scale.event.price_set"
        changes, sources = [], []
        for env in envelopes:
            try:
                event = validate_payload("scale", "event", env.payload)
                changes.append(await self.service.prices.scale_change(env.device_id, event.product_code,
                                                                      event.unit_price))
                sources.append(env)
            except (ValidationError, KeyError):
                self.stats.ignored["invalid"] += 1
            except MarketFleetError as err:
                self.stats.ignored[name] += 1
                log.info("retail: %s from %s not used: %s", name, env.device_id, err)
            except Exception:
                self.stats.errors += 1
                log.exception("retail: %s from %s failed", name, env.device_id)
        results = await self.service.prices.submit_changes(changes) if changes else []
        for env, result in zip(sources, results, strict=True):
            if isinstance(result, MarketFleetError):
                self.stats.ignored[name] += 1
                log.info("retail: %s from %s not used: %s", name, env.device_id, result)
            elif isinstance(result, BaseException):
                self.stats.errors += 1
                log.error("retail: %s from %s failed", name, env.device_id, exc_info=result)
            else:
                self.stats.handled[name] += 1

    # ---------------------------------------------------------------- scales

    async def _scale_event_transaction(self, env: Envelope, sale: BaseModel) -> None:
        await self.service.ledger.record(env.device_id, sale.model_dump(), env.received_at)

    async def _scale_event_price_set(self, env: Envelope, event: Any) -> None:
        await self.service.prices.price_from_scale(env.device_id, event.product_code, event.unit_price)

    async def _scale_event_self_check(self, env: Envelope, event: Any) -> None:
        await self.service.scales.integrity(env.device_id, "self_check", ok=event.passed, details=event.details,
                                            at=_ts(env))

    async def _scale_event_tamper(self, env: Envelope, event: Any) -> None:
        await self.service.scales.integrity(env.device_id, "tamper", ok=False, reason=event.reason,
                                            details=event.details, at=_ts(env))

    async def _scale_event_calibrated(self, env: Envelope, event: Any) -> None:
        # The platform's receive time, not the scale's clock: a scale must not backdate into a grant's window.
        await self.service.scales.calibrated(env.device_id, event.model_dump(), env.received_at)

    async def _scale_state(self, env: Envelope, state: Any) -> None:
        if state.plu_version is not None:
            await self.service.prices.scale_holds(env.device_id, state.plu_version)
        await self.service.scales.anti_cheat(env.device_id, state.anti_cheat_ok)

    # ---------------------------------------------------------------- labels and base stations

    async def _esl_event_shown(self, env: Envelope, event: Any) -> None:
        await self.service.labels.confirmed(env.device_id, event.image_sha256, event.page)

    async def _esl_event_scanned(self, env: Envelope, event: Any) -> None:
        await self._bind_scanned(env.device_id, event.product_code, env.device_id)

    async def _esl_base_station_event_label_scanned(self, env: Envelope, event: Any) -> None:
        # A handheld scans through the base station: it may bind only labels of its own market.
        station = await Device.get(id=env.device_id)
        if station.market_id is None:  # type: ignore[attr-defined]
            raise MarketFleetError(f"base station {station.id} is in no market; it binds no label")
        await self._bind_scanned(event.label_id, event.product_code, env.device_id,
                                 station.market_id)  # type: ignore[attr-defined]

    async def _bind_scanned(self, label_id: str, code: str, scanner: str, market: str | None = None) -> None:
        device = await Device.get_or_none(id=label_id)
        if device is None:
            raise MarketFleetError(f"no label {label_id}; cannot bind it to {code}")
        if device.market_id is None:  # type: ignore[attr-defined]
            raise MarketFleetError(f"label {device.id} is in no market; cannot look up {code}")
        if market is not None and device.market_id != market:  # type: ignore[attr-defined]
            raise MarketFleetError(f"label {device.id} is not in {scanner}'s market {market}")
        product = await self.service.prices.find(device.market_id, code, device.stall_id)  # type: ignore[attr-defined]
        await self.service.labels.bind(device.id, product, actor=f"scan:{scanner}")

    async def _esl_event_fault(self, env: Envelope, event: Any) -> None:
        if event.code == "refresh_failed":
            await self.service.labels.refresh_failed(env.device_id)

    async def _esl_telemetry(self, env: Envelope, reading: Any) -> None:
        await self.service.labels.seen(env.device_id, battery_pct=reading.battery_pct, rssi_dbm=reading.rssi_dbm)
        if reading.base_station_id:
            await self.service.labels.roamed(env.device_id, reading.base_station_id)

    async def _esl_state(self, env: Envelope, state: Any) -> None:
        fields: dict[str, Any] = {"battery_pct": state.battery_pct, "rssi_dbm": state.rssi_dbm}
        if state.resolution:
            fields.update(width=state.resolution[0], height=state.resolution[1])
        if state.colours:
            fields["colours"] = state.colours
        await self.service.labels.seen(env.device_id, **fields)

    async def _esl_base_station_event_label_joined(self, env: Envelope, event: Any) -> None:
        await self.service.labels.roamed(event.label_id, env.device_id, event.rssi_dbm)


def _ts(env: Envelope) -> datetime:
    ts = env.ts
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
