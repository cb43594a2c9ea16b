"""Where the scorecard's operational figures come from: sequence statistics and presence history.

Two small protocols, each with a default the platform can run today:

- `SequenceStats` — per device, the span of sequence numbers received in a window (first, last, how many
  distinct). The ingest pipeline knows this best and is expected to provide it; the default,
  `TelemetrySequenceStats`, reads the `seq` the telemetry store keeps with every reading and answers
  "unknown" (None) when the store holds no sequence numbers.
- `PresenceHistory` — per device, the share of a window it was online. Until presence keeps a history, the
  default `SnapshotPresence` answers from `Device.online` now (1.0 or 0.0) and says so (`basis = "snapshot"`).

Loss is counted from gaps: a device numbers every message (docs/protocol.md: one counter per device across all
channels), so between the first and last seq seen in a window, every missing number is a message the platform
never stored. Loss before the first or after the last seq of the window cannot be seen this way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

from fleet.models import Device
from telemetry import TelemetryStore

__all__ = [
    "NoSequenceStats",
    "PresenceHistory",
    "PresenceReport",
    "SeqSpan",
    "SequenceStats",
    "SnapshotPresence",
    "StaticPresence",
    "StaticSequenceStats",
    "TelemetrySequenceStats",
]

#: Channels whose messages the ingest pipeline stores (broker/topics.py INGEST_CHANNELS), hence whose seqs count.
STORED_CHANNELS: tuple[str, ...] = ("telemetry", "event", "state")


@dataclass(frozen=True, slots=True)
class SeqSpan:
    """Sequence numbers of one device in a window: the lowest and highest seen, and how many distinct ones."""

    first: int
    last: int
    received: int

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"last seq {self.last} is below first seq {self.first}")
        if not 0 < self.received <= self.last - self.first + 1:
            raise ValueError(f"received {self.received} does not fit the span {self.first}..{self.last}")

    @classmethod
    def from_seqs(cls, seqs: Iterable[int]) -> SeqSpan | None:
        distinct = set(seqs)
        if not distinct:
            return None
        return cls(min(distinct), max(distinct), len(distinct))

    @property
    def expected(self) -> int:
        return self.last - self.first + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received


@runtime_checkable
class SequenceStats(Protocol):
    """Per-device sequence spans over `[start, end)`.

    Returns None when this source cannot tell at all (the scorecard then reports the loss items as unknown);
    a device missing from the mapping sent nothing in the window.
    """

    #: Shown in the scorecard as where the loss figures come from.
    basis: str

    async def sequence_spans(
        self, devices: Mapping[str, str], start: datetime, end: datetime
    ) -> Mapping[str, SeqSpan] | None:
        """`devices` maps device id → kind (a store keyed by measurement needs the kind)."""
        ...


class NoSequenceStats:
    """No source of sequence numbers is configured: every loss figure is unknown."""

    basis = "unknown"

    async def sequence_spans(
        self, devices: Mapping[str, str], start: datetime, end: datetime
    ) -> Mapping[str, SeqSpan] | None:
        return None


class StaticSequenceStats:
    """Spans given up front (a report from the ingest pipeline, an import, a test)."""

    def __init__(self, spans: Mapping[str, SeqSpan], basis: str = "provided") -> None:
        self.spans = dict(spans)
        self.basis = basis

    async def sequence_spans(
        self, devices: Mapping[str, str], start: datetime, end: datetime
    ) -> Mapping[str, SeqSpan] | None:
        return {device: span for device, span in self.spans.items() if device in devices}


class TelemetrySequenceStats:
    """Spans read from a telemetry store's readings (`Reading.seq`), channel by channel.

    Reads every stored reading of the window, so it is meant for one market at a time; the ingest pipeline's
    own counters are the cheaper source when it offers them. A dead-lettered message (rejected by the
    schema) is never stored, so it counts as lost here: conservative, and a prompt to fix the device.
    """

    basis = "telemetry store (Reading.seq)"

    def __init__(self, store: TelemetryStore, page_size: int = 10_000) -> None:
        self.store = store
        self.page_size = page_size

    async def sequence_spans(
        self, devices: Mapping[str, str], start: datetime, end: datetime
    ) -> Mapping[str, SeqSpan] | None:
        spans: dict[str, SeqSpan] = {}
        readings_seen = False
        for device_id, kind in devices.items():
            seqs: set[int] = set()
            for channel in STORED_CHANNELS:
                async for seq in self._seqs(device_id, f"{kind}.{channel}", start, end):
                    readings_seen = True
                    if seq is not None:
                        seqs.add(seq)
            span = SeqSpan.from_seqs(seqs)
            if span is not None:
                spans[device_id] = span
        if readings_seen and not spans:
            return None  # readings without any seq: this store cannot tell
        return spans

    async def _seqs(
        self, device_id: str, measurement: str, start: datetime, end: datetime
    ) -> AsyncIterator[int | None]:
        cursor = start
        while cursor < end:
            page = await self.store.range(device_id, measurement, cursor, end, limit=self.page_size)
            for reading in page:
                yield reading.seq
            if len(page) < self.page_size:
                return
            last = page[-1].ts
            # Readings sharing the last timestamp (a locker's compartments) may straddle the page edge: restart
            # at that timestamp (seqs are collected in a set), unless the whole page had one timestamp.
            cursor = last if last > page[0].ts else last + timedelta(microseconds=1)


# ---------------------------------------------------------------- presence


@dataclass(frozen=True, slots=True)
class PresenceReport:
    """Share of the window each device was online (0..1), and whether it is a history or a snapshot."""

    ratios: Mapping[str, float]
    basis: Literal["history", "snapshot"]


@runtime_checkable
class PresenceHistory(Protocol):
    async def online_ratios(self, device_ids: Sequence[str], start: datetime, end: datetime) -> PresenceReport:
        """Devices absent from `ratios` have no presence record; the scorecard treats them as offline."""
        ...


class SnapshotPresence:
    """`Device.online` now, as 1.0 / 0.0: a snapshot, not a 30-day history (marked as such)."""

    async def online_ratios(self, device_ids: Sequence[str], start: datetime, end: datetime) -> PresenceReport:
        rows = await Device.filter(id__in=list(device_ids)).values_list("id", "online")
        return PresenceReport({str(i): 1.0 if online else 0.0 for i, online in rows}, "snapshot")


class StaticPresence:
    """Ratios given up front (a presence history export, a test)."""

    def __init__(self, ratios: Mapping[str, float], basis: Literal["history", "snapshot"] = "history") -> None:
        for device, ratio in ratios.items():
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"online ratio of {device} must be within 0..1, got {ratio}")
        self.ratios = dict(ratios)
        self.basis: Literal["history", "snapshot"] = basis

    async def online_ratios(self, device_ids: Sequence[str], start: datetime, end: datetime) -> PresenceReport:
        wanted = set(device_ids)
        return PresenceReport({d: r for d, r in self.ratios.items() if d in wanted}, self.basis)
