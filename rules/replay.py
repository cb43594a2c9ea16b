"""Dry-run: how often would a rule have fired over past data? The rule runs in a private engine whose clock
is the replayed readings' time, so for-durations, hysteresis and timers behave exactly as they would live.

`dry_run` takes any async iterator of envelopes in time order; `envelopes_from_store` is the small adapter
that turns a `TelemetryStore`'s readings (the storage mapping of broker/readings.py: `{kind}.{channel}`
measurements, flattened fields, one reading per array element tagged with the element) back into envelopes.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.envelope import Envelope
from fleet.errors import InvalidRequest
from fleet.kinds import Channel, DeviceKind
from rules.alerts import render_message
from rules.engine import RuleEngine
from rules.language import CHECKED_CONDITIONS, Rule
from rules.paths import field_names
from rules.schemas import DryRunFiring, DryRunResult
from telemetry import Reading, TelemetryStore

__all__ = ["dry_run", "envelopes_from_store", "replay_devices"]


async def dry_run(rule: Rule, envelopes: AsyncIterable[Envelope], *, sample: int = 50,
                  devices: dict[str, tuple[str | None, dict[str, str]]] | None = None,
                  start: datetime | None = None, end: datetime | None = None) -> DryRunResult:
    if rule.condition.type in CHECKED_CONDITIONS:
        raise InvalidRequest(f"dry-run replays readings; a {rule.condition.type} rule does not read them")
    now = [start.timestamp() if start else 0.0]
    engine = RuleEngine([rule.model_copy(update={"enabled": True})], clock=lambda: now[0], track_sequences=False)
    if devices:
        engine.set_devices(devices)
    result = DryRunResult(rule_id=rule.id, start=start, end=end, envelopes=0, fired=0, resolved=0, occurrences=0,
                          by_device={}, firings=[])
    open_firings: dict[tuple[str, str], DryRunFiring] = {}
    first: datetime | None = None
    last: datetime | None = None

    def collect() -> None:
        for tr in engine.drain():
            key = (tr.device_id, tr.element)
            at = datetime.fromtimestamp(tr.at, UTC)
            if tr.action == "open":
                result.fired += 1
                result.occurrences += 1
                result.by_device[tr.device_id] = result.by_device.get(tr.device_id, 0) + 1
                if len(result.firings) < sample:
                    firing = DryRunFiring(device_id=tr.device_id, element=tr.element, opened_at=at, value=tr.value,
                                          message=render_message(rule.template, tr.context or {}))
                    result.firings.append(firing)
                    open_firings[key] = firing
            elif tr.action == "repeat":
                result.occurrences += tr.count
            else:
                result.resolved += 1
                firing = open_firings.pop(key, None)
                if firing is not None:
                    firing.resolved_at = at
            if tr.action == "open" and not rule.resolves_automatically:
                engine.release(rule.id, tr.device_id, tr.element)  # as if handled: the next one counts again

    async for envelope in envelopes:
        t = envelope.ts.timestamp()
        if first is None:
            first = envelope.ts
        last = envelope.ts
        engine.tick(t)  # timers that came due before this reading
        now[0] = max(now[0], t)
        engine.process(envelope)
        result.envelopes += 1
        collect()
    horizon = end or last
    if horizon is not None:
        now[0] = max(now[0], horizon.timestamp())
        engine.tick(now[0])
        collect()
    result.start, result.end = start or first, end or last
    return result


def _payload(kind: DeviceKind, channel: Channel, group: list[Reading]) -> dict[str, Any]:
    """Rebuild one message's payload from its readings (one per array element, or a single one)."""
    head = group[0]
    payload: dict[str, Any] = {}
    event_type = head.tags.get("event_type")
    if event_type:
        payload["type"] = event_type
    names = field_names(kind, channel, event_type) if channel != Channel.EVENT or event_type else []
    arrays = {name.split("[].", 1)[0] for name in names if "[]." in name}
    element_fields = {name.split("[].", 1)[1].split(".")[0] for name in names if "[]." in name}
    array = next(iter(arrays), None)
    for key, value in head.fields.items():
        if array and key.split(".")[0] in element_fields:
            continue
        _put(payload, key, value)
    if array:
        tag = array[:-1] if array.endswith("s") else array
        elements = []
        for reading in group:
            element: dict[str, Any] = {}
            if tag in reading.tags:
                raw = reading.tags[tag]
                element[tag] = int(raw) if raw.isdigit() else raw
            for key, value in reading.fields.items():
                if key.split(".")[0] in element_fields:
                    _put(element, key, value)
            elements.append(element)
        payload[array] = elements
    return payload


# Field names the storage mapping suffixed with "_" (reserved by the store, or clashing with a tag).
_RENAMED = {"time", "seq", "device_id", "kind", "market", "event_type", "compartment", "idx"}


def _put(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    name = parts[-1]
    if name.endswith("_") and name.rstrip("_") in _RENAMED:
        name = name.rstrip("_")
    target[name] = value


async def _device_envelopes(store: TelemetryStore, device_id: str, kind: DeviceKind, channel: Channel,
                            start: datetime, end: datetime, market: str | None,
                            page: int) -> AsyncIterator[Envelope]:
    measurement = f"{kind.value}.{channel.value}"
    cursor = start
    while cursor < end:
        readings = await store.range(device_id, measurement, cursor, end, limit=page)
        if not readings:
            return
        # A page may end inside one message's group of element readings: keep only whole groups.
        complete = readings if len(readings) < page else [r for r in readings if r.ts < readings[-1].ts]
        if not complete:
            complete = readings
        group: list[Reading] = []
        for reading in complete:
            if group and (reading.ts != group[0].ts or reading.seq != group[0].seq):
                yield _envelope(device_id, kind, channel, market, group)
                group = []
            group.append(reading)
        if group:
            yield _envelope(device_id, kind, channel, market, group)
        if len(readings) < page:
            return
        cursor = complete[-1].ts + _ONE_US


def _envelope(device_id: str, kind: DeviceKind, channel: Channel, market: str | None,
              group: list[Reading]) -> Envelope:
    head = group[0]
    seq = head.seq if head.seq is not None and head.seq >= 0 else 0
    # The store's time is the device time to the millisecond plus seq % 1000 µs (broker/readings.py).
    ts = head.ts - timedelta(microseconds=seq % 1000)
    return Envelope(device_id=device_id, kind=kind, market=head.tags.get("market", market), channel=channel,
                    ts=ts, seq=seq, payload=_payload(kind, channel, group), received_at=ts, transport="replay")


async def envelopes_from_store(store: TelemetryStore, device_ids: Sequence[str], kind: DeviceKind,
                               channel: Channel, start: datetime, end: datetime, *,
                               markets: dict[str, str | None] | None = None,
                               page: int = 10_000) -> AsyncIterator[Envelope]:
    """The devices' envelopes of one kind and channel in [start, end), merged in time order."""
    streams = [_device_envelopes(store, d, kind, channel, start, end, (markets or {}).get(d), page)
               for d in device_ids]
    heap: list[tuple[datetime, int, Envelope]] = []
    for n, stream in enumerate(streams):
        first = await anext(stream, None)
        if first is not None:
            heapq.heappush(heap, (first.ts, n, first))
    while heap:
        _, n, envelope = heapq.heappop(heap)
        yield envelope
        following = await anext(streams[n], None)
        if following is not None:
            heapq.heappush(heap, (following.ts, n, following))


async def replay_devices(rule: Rule) -> dict[str, tuple[str | None, dict[str, str]]]:
    """The registry's devices in the rule's scope: id → (market, labels)."""
    from fleet.models import Device, DeviceStatus

    scope = rule.scope
    query = Device.exclude(status=DeviceStatus.RETIRED)
    if scope.kind is not None:
        query = query.filter(kind=scope.kind)
    if scope.markets:
        query = query.filter(market_id__in=scope.markets)
    if scope.devices:
        query = query.filter(id__in=scope.devices)
    found = {}
    for device_id, market, labels in await query.values_list("id", "market_id", "labels"):
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if all(labels.get(k) == v for k, v in scope.labels.items()):
            found[device_id] = (market, labels)
    return found


_ONE_US = timedelta(microseconds=1)
