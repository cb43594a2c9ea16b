"""A small market floor for retail tests: base stations with their labels, and scales, behind one
`CommandSender`.

Labels are `retail.esl_codec.LabelScreen`s — the same decoder the ESL simulator uses — so a test checks the
pixels a label would really show. Every command the platform sends is queued; `deliver()` hands relayed
commands to the label in range of that base station (others are lost on the air, like a label that roamed
away or is offline), and the devices' answers go back to the platform as envelopes, the way ingest passes
them on. Clocks are explicit: the platform and every label read `clock.now`, which tests move by hand.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.envelope import Envelope
from fleet.kinds import validate_payload
from retail.esl_codec import LabelScreen
from retail.service import RetailService


@dataclass
class ManualClock:
    now_value: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 2, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now_value

    def advance(self, seconds: float) -> datetime:
        self.now_value += timedelta(seconds=seconds)
        return self.now_value


@dataclass
class SimLabel:
    device_id: str
    station: str | None
    screen: LabelScreen
    online: bool = True
    clock_offset: timedelta = timedelta(0)  # the label's own clock drifts from the platform's


@dataclass
class SimScale:
    device_id: str
    plu_version: int = 0
    plu: dict[str, str] = field(default_factory=dict)
    grant: tuple[str, datetime] | None = None
    refused: list[str] = field(default_factory=list)


class Floor:
    """Implements `retail.commands.CommandSender`; `service` is set once the RetailService exists."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.service: RetailService | None = None
        self.labels: dict[str, SimLabel] = {}
        self.stations: set[str] = set()
        self.scales: dict[str, SimScale] = {}
        self.queue: list[tuple[str, dict[str, Any]]] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.lost: list[tuple[str, dict[str, Any]]] = []
        self._seq = itertools.count(1)

    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None:
        validate_payload(self._kind(device_id), "command", command)  # the platform sends only valid commands
        if command["command"] == "relay":
            validate_payload("esl", "command", command["payload"])
        self.queue.append((device_id, command))
        self.sent.append((device_id, command))

    def _kind(self, device_id: str) -> str:
        if device_id in self.scales:
            return "scale"
        return "esl_base_station" if device_id in self.stations else "esl"

    def add_label(self, device_id: str, station: str | None, width: int = 296, height: int = 128,
                  colours: str = "bwr") -> SimLabel:
        label = SimLabel(device_id, station, LabelScreen(width, height, colours))
        if station:
            self.stations.add(station)
        self.labels[device_id] = label
        return label

    def add_scale(self, device_id: str) -> SimScale:
        self.scales[device_id] = SimScale(device_id)
        return self.scales[device_id]

    async def deliver(self) -> int:
        """Hand every queued command to its device and pass the answers to the platform; repeats until quiet."""
        delivered = 0
        while self.queue:
            batch, self.queue = self.queue, []
            for device_id, command in batch:
                answers = self._apply(device_id, command)
                if answers is None:
                    self.lost.append((device_id, command))
                    continue
                delivered += 1
                for sender, channel, payload in answers:
                    await self.uplink(sender, channel, payload)
        return delivered

    async def tick_labels(self) -> None:
        """Each label looks at its own clock: timed changes switch; only online labels can report it now."""
        for label in self.labels.values():
            events = label.screen.tick(self.clock() + label.clock_offset)
            if label.online:
                for event in events:
                    await self.uplink(label.device_id, "event", event)

    async def uplink(self, device_id: str, channel: str, payload: dict[str, Any]) -> None:
        kind = self._kind(device_id)
        validate_payload(kind, channel, payload)
        assert self.service is not None
        await self.service.handle(Envelope(device_id=device_id, kind=kind, channel=channel, ts=self.clock(),
                                           seq=next(self._seq), payload=payload, received_at=self.clock()))

    def _apply(self, device_id: str, command: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]] | None:
        name = command["command"]
        if name == "relay":
            label = self.labels.get(command["label_id"])
            if label is None or label.station != device_id or not label.online:
                return None  # out of this station's range, or asleep
            events = label.screen.apply(command["payload"], self.clock() + label.clock_offset)
            return [(label.device_id, "event", e) for e in events]
        scale = self.scales.get(device_id)
        if scale is None:
            return None
        if name == "set_plu":
            scale.plu_version = command["version"]
            scale.plu = {e["product_code"]: str(e["unit_price"]) for e in command["entries"]}
            return [(device_id, "state", {"plu_version": scale.plu_version})]
        if name == "authorise_calibration":
            scale.grant = (command["grant_id"], datetime.fromisoformat(command["valid_until"]))
            return []
        return []
