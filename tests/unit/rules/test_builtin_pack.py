"""Every built-in rule fires on data that should trigger it and stays silent on data that should not.

Each case is a list of steps fed to an engine holding only that rule: ("env", seconds, kind, payload) is an
envelope at T0 + seconds, ("presence", seconds, online) a presence change, ("tick", seconds) the engine clock
reaching that time (timers fire). Metrology rules read the registry and are covered in
tests/integration/rules/test_scheduled_checks.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rules.packs import BUILTIN_PACK, load_pack
from tests.unit.rules.factories import (
    T0,
    builtin,
    engine_with,
    env_reading,
    envelope,
    food_result,
    locker,
    opened,
    transaction,
)

Step = tuple[Any, ...]


def every(seconds: range, kind: str, payload: dict[str, Any]) -> list[Step]:
    return [("env", s, kind, payload) for s in seconds]


def market_prices(product: str, prices: list[float], field: str = "unit_price") -> list[Step]:
    steps = []
    for n, price in enumerate(prices):
        payload = transaction(product, price) if field == "unit_price" else transaction(product, 4.0, weight_kg=price)
        steps.append(("env", n * 60, "scale", payload, f"SC-{n % 5}"))
    return steps


NORMAL_PRICES = [3.8 + (n % 5) * 0.1 for n in range(25)]
NORMAL_WEIGHTS = [1.0 + (n % 4) * 0.5 for n in range(25)]

CASES: dict[str, tuple[list[Step], list[Step]]] = {
    "locker-compartment-temperature": (
        every(range(0, 361, 60), "cold_locker", locker({1: 5.0, 2: 12.0})),
        every(range(0, 121, 60), "cold_locker", locker({1: 5.0, 2: 12.0}))
        + every(range(180, 601, 60), "cold_locker", locker({1: 5.0, 2: 8.0})),
    ),
    "locker-door-open": (
        every(range(0, 241, 30), "cold_locker", locker({1: 4.0}, {1: "open"})),
        every(range(0, 121, 30), "cold_locker", locker({1: 4.0}, {1: "open"}))
        + every(range(150, 601, 30), "cold_locker", locker({1: 4.0}, {1: "closed_locked"})),
    ),
    "fire-alarm": (
        [("env", 0, "fire_panel", {"type": "fire_alarm", "zone": "Z1"})],
        [("env", 0, "fire_panel", {"type": "fire_alarm", "zone": "Z1", "cleared": True}),
         ("env", 5, "fire_panel", {"type": "equipment_fault", "equipment": "sprinkler"})],
    ),
    "fire-equipment-fault": (
        [("env", 0, "fire_panel", {"type": "equipment_fault", "equipment": "hydrant", "zone": "Z2"})],
        [("env", 0, "fire_panel", {"type": "equipment_fault", "equipment": "hydrant", "cleared": True})],
    ),
    "fever-at-entrance": (
        [("env", 0, "thermometer", {"type": "fever", "entrance": "north", "body_temp_c": 38.1})],
        [("env", 0, "thermometer", {"type": "fever", "entrance": "north", "body_temp_c": 37.0})],
    ),
    "food-test-failed": (
        [("env", 0, "food_detector", food_result(passed=False))],
        [("env", 0, "food_detector", food_result(passed=True))],
    ),
    "env-temperature": (
        every(range(0, 661, 60), "env_sensor", env_reading(38.0)),
        every(range(0, 301, 60), "env_sensor", env_reading(38.0)) + every(range(360, 1201, 60), "env_sensor",
                                                                         env_reading(25.0)),
    ),
    "env-humidity": (
        every(range(0, 961, 60), "env_sensor", env_reading(humidity_pct=95.0)),
        every(range(0, 1801, 60), "env_sensor", env_reading(humidity_pct=88.0)),
    ),
    "env-co2": (
        every(range(0, 661, 60), "env_sensor", env_reading(co2_ppm=2500.0)),
        every(range(0, 1201, 60), "env_sensor", env_reading(co2_ppm=1200.0)),
    ),
    "env-data-missing": (
        [("env", 0, "env_sensor", env_reading()), ("tick", 16 * 60)],
        [*every(range(0, 1801, 300), "env_sensor", env_reading()), ("tick", 1801)],
    ),
    "scale-tamper": (
        [("env", 0, "scale", {"type": "tamper", "reason": "seal_opened"})],
        [("env", 0, "scale", {"type": "self_check", "passed": True})],
    ),
    "scale-unauthorised-calibration": (
        [("env", 0, "scale", {"type": "calibrated", "reference_kg": 5.0, "measured_kg": 5.02})],
        [("env", 0, "scale", {"type": "calibrated", "grant_id": "G-1", "reference_kg": 5.0, "measured_kg": 5.0})],
    ),
    "scale-self-check-failed": (
        [("env", 0, "scale", {"type": "self_check", "passed": False, "details": "load cell"})],
        [("env", 0, "scale", {"type": "self_check", "passed": True})],
    ),
    "abnormal-price": (
        market_prices("cabbage", [*NORMAL_PRICES, 12.0]),
        market_prices("cabbage", [*NORMAL_PRICES, 4.3]),
    ),
    "abnormal-volume": (
        market_prices("pork", [*NORMAL_WEIGHTS, 30.0], field="weight_kg"),
        market_prices("pork", [*NORMAL_WEIGHTS, 5.0], field="weight_kg"),
    ),
    "device-offline": (
        [("presence", 0, False), ("tick", 6 * 60)],
        [("presence", 0, False), ("presence", 120, True), ("tick", 10 * 60)],
    ),
    "crowd-peak": (
        [("env", 0, "camera", {"type": "detection", "category": "crowd_peak", "zone": "hall", "count": 420,
                               "confidence": 0.9})],
        [("env", 0, "camera", {"type": "detection", "category": "no_mask", "zone": "hall", "confidence": 0.9})],
    ),
}
SCHEDULED = {"metrology-overdue", "metrology-due-soon", "telemetry-spool-filling", "telemetry-spool-full"}


def run(rule_id: str, steps: list[Step]) -> int:
    engine, clock = engine_with(builtin(rule_id))
    fired = 0
    for step in steps:
        kind_of_step, seconds = step[0], step[1]
        clock.at(seconds)
        engine.tick()
        if kind_of_step == "env":
            device = step[4] if len(step) > 4 else "DEV-1"
            engine.process(envelope(device, step[2], step[3], at=seconds))
        elif kind_of_step == "presence":
            engine.on_presence("DEV-1", "env_sensor", "M1", step[2], T0 + timedelta(seconds=seconds))
        fired += len(opened(engine.drain()))
    engine.tick()
    return fired + len(opened(engine.drain()))


def test_every_builtin_rule_has_a_case():
    assert set(CASES) | SCHEDULED == {rule.id for rule in load_pack(BUILTIN_PACK)}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_builtin_rule_fires_on_triggering_data(rule_id):
    assert run(rule_id, CASES[rule_id][0]) >= 1


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_builtin_rule_stays_silent_on_normal_data(rule_id):
    assert run(rule_id, CASES[rule_id][1]) == 0
