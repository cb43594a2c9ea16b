"""Fault modes a simulated device can be put through, scheduled or injected on demand.

Each fault fires first `at_s` seconds after the device starts running and, when `every_s` is set, again every
`every_s` seconds. `SimulatedDevice.inject(fault)` applies one at once.

* `DropLink(seconds)`: break the link as a pulled cable would (MQTT: TCP cut without DISCONNECT, so the broker
  publishes the will) and keep it down; the device keeps producing into its outbox and replays on reconnect.
* `Garbage(count, size)`: send bytes that are neither JSON nor CBOR (the platform dead-letters them as
  `malformed`; nothing gets acknowledged, nothing leaves the outbox).
* `SkewClock(seconds, duration_s)`: the device clock runs `seconds` ahead (`ts` in the future; more than five
  minutes is rejected as `future_timestamp` and dropped from the outbox), for `duration_s` or for good.
* `Burst(count)`: produce `count` messages at once (they go out in batches, as arrays).
* `OutOfRange(duration_s)`: the device measures something a rule must catch, for `duration_s` (or until
  cleared): an environment sensor 45 °C / 95 % / 2,500 ppm CO₂, a cold locker's compartment 1 at 14 °C (SZ 6.14.4
  asks 1–10 °C), a fire panel in alarm, a thermometer reporting a fever, a scale selling at ten times its price.
  Kinds without such a reading ignore it. The messages stay schema-valid: this is data, not garbage.
* `FailedTest(count)`: a food-safety detector reports `count` failed rapid tests now (value above the limit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float = 0.0
    every_s: float | None = None


@dataclass(frozen=True, slots=True)
class DropLink(Fault):
    seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Garbage(Fault):
    count: int = 1
    size: int = 64
    channel: str = "telemetry"


@dataclass(frozen=True, slots=True)
class SkewClock(Fault):
    seconds: float = 600.0
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class Burst(Fault):
    count: int = 100


@dataclass(frozen=True, slots=True)
class OutOfRange(Fault):
    duration_s: float | None = 60.0


@dataclass(frozen=True, slots=True)
class FailedTest(Fault):
    count: int = 1


FAULT_TYPES: dict[str, type[Fault]] = {"drop": DropLink, "garbage": Garbage, "skew": SkewClock, "burst": Burst}
#: Faults by the names the command line uses (`--fault out_of_range:cold_locker`).
NAMED_FAULTS: dict[str, type[Fault]] = {
    "offline": DropLink, "garbage": Garbage, "skew": SkewClock, "burst": Burst, "out_of_range": OutOfRange,
    "failed_test": FailedTest,
}  # fmt: skip


def random_fault(rng: random.Random, within_s: float) -> Fault:
    """One fault of a random type at a random moment within the first `within_s` seconds (for chaos runs)."""
    at = rng.uniform(0.1, max(0.2, within_s * 0.8))
    choice = rng.choice(list(FAULT_TYPES))
    if choice == "drop":
        return DropLink(at_s=at, seconds=round(rng.uniform(2, max(3, within_s * 0.2)), 1))
    if choice == "garbage":
        return Garbage(at_s=at, count=rng.randint(1, 3), size=rng.randint(8, 256))
    if choice == "skew":
        return SkewClock(at_s=at, seconds=rng.choice([-3600.0, 120.0, 900.0, 86400.0]),
                         duration_s=round(rng.uniform(1, max(2, within_s * 0.2)), 1))  # fmt: skip
    return Burst(at_s=at, count=rng.randint(20, 200))
