"""The evaluator: for-duration and hysteresis against flapping, arrays per element, timers, state round-trips."""

from __future__ import annotations

import math
import random
from datetime import timedelta

from rules.engine import RuleEngine
from tests.unit.rules.factories import (
    T0,
    ManualClock,
    builtin,
    engine_with,
    env_reading,
    envelope,
    locker,
    opened,
    rule,
    transaction,
)

HOT = {"scope": {"kind": "env_sensor"}, "condition": {"type": "threshold", "field": "temperature_c", "op": ">",
                                                       "value": 30}}


def noisy_signal(minutes: int = 120) -> list[tuple[int, float]]:
    """A sensor warming from 27 °C through 30 to 33 and back to 27, with ±1.5 °C noise: it crosses 30 dozens of
    times on the way up and on the way down."""
    rng = random.Random(7)
    readings = []
    for second in range(0, minutes * 60, 10):
        trend = 27 + 6 * math.sin(second / (minutes * 60) * math.pi)
        readings.append((second, round(trend + rng.uniform(-1.5, 1.5), 2)))
    return readings


def count_transitions(engine: RuleEngine, clock: ManualClock, readings: list[tuple[int, float]]) -> tuple[int, int]:
    opens = clears = 0
    for second, value in readings:
        clock.at(second)
        engine.tick()
        engine.process(envelope("ENV-1", "env_sensor", env_reading(value), at=second))
        for transition in engine.drain():
            opens += transition.action == "open"
            clears += transition.action == "clear"
    return opens, clears


def test_a_noisy_signal_without_debounce_flaps():
    engine, clock = engine_with(rule(**HOT))
    opens, _ = count_transitions(engine, clock, noisy_signal())
    assert opens > 10


def test_for_duration_and_hysteresis_turn_a_noisy_crossing_into_one_alert():
    damped = rule(**{**HOT, "condition": {**HOT["condition"], "clear": 28}, "for": "2m", "clear_for": "2m"})
    engine, clock = engine_with(damped)
    opens, clears = count_transitions(engine, clock, noisy_signal())
    assert (opens, clears) == (1, 1)


def test_for_duration_fires_on_the_timer_when_no_reading_follows():
    engine, clock = engine_with(rule(**HOT, **{"for": "5m"}))
    engine.process(envelope("ENV-1", "env_sensor", env_reading(35), at=0))
    clock.at(299)
    engine.tick()
    assert opened(engine.drain()) == []
    clock.at(300)
    engine.tick()
    [alert] = opened(engine.drain())
    assert alert.at == (T0 + timedelta(minutes=5)).timestamp()  # at the due time, not when found


def test_a_dip_back_to_normal_restarts_the_for_duration():
    engine, clock = engine_with(rule(**HOT, **{"for": "5m"}))
    for second, value in [(0, 35), (120, 25), (180, 35), (420, 35)]:
        clock.at(second)
        engine.tick()
        engine.process(envelope("ENV-1", "env_sensor", env_reading(value), at=second))
    assert opened(engine.drain()) == []
    clock.at(480)
    engine.tick()
    assert len(opened(engine.drain())) == 1


def test_locker_compartments_alert_one_by_one():
    engine, _ = engine_with(builtin("locker-compartment-temperature").model_copy(update={"for_": timedelta(0)}))
    engine.process(envelope("LK-1", "cold_locker", locker({1: 4.0, 2: 12.5, 3: -1.0}), at=0))
    alerts = opened(engine.drain())
    assert sorted((a.element, a.value, a.context["compartment"]) for a in alerts) == [("2", 12.5, 2), ("3", -1.0, 3)]


def test_a_compartment_clears_on_its_own():
    engine, _ = engine_with(builtin("locker-compartment-temperature").model_copy(
        update={"for_": timedelta(0), "clear_for": timedelta(0)}))
    engine.process(envelope("LK-1", "cold_locker", locker({1: 12.0, 2: 12.0}), at=0))
    engine.drain()
    engine.process(envelope("LK-1", "cold_locker", locker({1: 5.0, 2: 12.0}), at=60))
    [cleared] = [t for t in engine.drain() if t.action == "clear"]
    assert cleared.element == "1" and engine.state_of("locker-compartment-temperature", "LK-1", "2") == "firing"


def test_repeats_fold_into_one_count_per_drain():
    engine, _ = engine_with(rule(**HOT))
    for second in range(0, 50, 10):
        engine.process(envelope("ENV-1", "env_sensor", env_reading(35), at=second))
    transitions = engine.drain()
    assert [(t.action, t.count) for t in transitions] == [("open", 1), ("repeat", 4)]


def test_group_by_splits_one_devices_alerts():
    engine, _ = engine_with(builtin("fire-alarm"))
    for zone in ("Z1", "Z2", "Z1"):
        engine.process(envelope("FP-1", "fire_panel", {"type": "fire_alarm", "zone": zone}))
    assert sorted(t.element for t in opened(engine.drain())) == ["Z1", "Z2"]
    engine.process(envelope("FP-1", "fire_panel", {"type": "fire_alarm", "zone": "Z1", "cleared": True}))
    assert [(t.action, t.element) for t in engine.drain()] == [("clear", "Z1")]


def test_event_alerts_without_a_clear_stay_open_until_released():
    engine, _ = engine_with(builtin("scale-tamper"))
    engine.process(envelope("SC-1", "scale", {"type": "tamper", "reason": "seal_opened"}))
    assert len(opened(engine.drain())) == 1
    engine.process(envelope("SC-1", "scale", {"type": "tamper", "reason": "zero_drift"}))
    assert opened(engine.drain()) == []  # counted on the open alert
    engine.release("scale-tamper", "SC-1", "")
    engine.process(envelope("SC-1", "scale", {"type": "tamper", "reason": "zero_drift"}))
    assert len(opened(engine.drain())) == 1


def test_resolve_after_closes_an_event_alert_when_it_stops_recurring():
    engine, clock = engine_with(builtin("crowd-peak"))
    engine.process(envelope("CAM-1", "camera", {"type": "detection", "category": "crowd_peak", "zone": "hall",
                                                "count": 300, "confidence": 0.9}, at=0))
    clock.at(14 * 60)
    engine.tick()
    assert [t.action for t in engine.drain()] == ["open"]
    clock.at(15 * 60)
    engine.tick()
    assert [t.action for t in engine.drain()] == ["clear"]


def test_change_rate_fires_on_a_fast_rise():
    fast = rule(scope={"kind": "env_sensor"}, condition={"type": "change_rate", "field": "temperature_c",
                                                          "limit": 2, "per": "1m", "direction": "up"})
    engine, _ = engine_with(fast)
    for second, value in [(0, 20.0), (60, 21.0), (120, 25.0)]:
        engine.process(envelope("ENV-1", "env_sensor", env_reading(value), at=second))
    [alert] = opened(engine.drain())
    assert alert.context["rate"] == 4.0


def test_missing_data_fires_after_silence_and_clears_with_the_next_reading():
    engine, clock = engine_with(builtin("env-data-missing"))
    engine.process(envelope("ENV-1", "env_sensor", env_reading(), at=0))
    clock.at(15 * 60)
    engine.tick()
    [alert] = opened(engine.drain())
    assert alert.value == 15.0
    engine.process(envelope("ENV-1", "env_sensor", env_reading(), at=16 * 60))
    assert [t.action for t in engine.drain()] == ["clear"]


def test_offline_presence_fires_after_its_grace_and_clears_when_back():
    engine, clock = engine_with(builtin("device-offline"))
    engine.on_presence("CAM-9", "camera", "M1", False, T0)
    clock.at(5 * 60)
    engine.tick()
    assert len(opened(engine.drain())) == 1
    engine.on_presence("CAM-9", "camera", "M1", True, T0 + timedelta(minutes=7))
    assert [t.action for t in engine.drain()] == ["clear"]


def test_abnormal_price_compares_with_the_markets_median_for_that_product():
    engine, _ = engine_with(builtin("abnormal-price"))
    for n in range(30):
        engine.process(envelope(f"SC-{n % 3}", "scale", transaction("cabbage", 4.0 + (n % 3) * 0.1), at=n))
        engine.process(envelope(f"SC-{n % 3}", "scale", transaction("beef", 80.0), at=n))
    engine.process(envelope("SC-1", "scale", transaction("cabbage", 9.0), at=100))
    engine.process(envelope("SC-1", "scale", transaction("beef", 82.0), at=101))
    [alert] = opened(engine.drain())
    assert (alert.element, alert.value, alert.context["baseline"]) == ("cabbage", 9.0, 4.1)


def test_label_scope_matches_only_labelled_devices():
    aquatic = rule(**{**HOT, "scope": {"kind": "env_sensor", "labels": {"zone": "aquatic"}}})
    engine, _ = engine_with(aquatic)
    engine.set_devices({"ENV-1": ("M1", {"zone": "aquatic"}), "ENV-2": ("M1", {"zone": "dry"})})
    for device in ("ENV-1", "ENV-2", "ENV-3"):
        engine.process(envelope(device, "env_sensor", env_reading(35)))
    assert [t.device_id for t in opened(engine.drain())] == ["ENV-1"]


def test_market_scope_uses_the_registry_market_when_the_envelope_has_none():
    north = rule(**{**HOT, "scope": {"kind": "env_sensor", "markets": ["NORTH"]}})
    engine, _ = engine_with(north)
    engine.set_devices({"ENV-1": ("NORTH", {}), "ENV-2": ("SOUTH", {})})
    for device in ("ENV-1", "ENV-2"):
        engine.process(envelope(device, "env_sensor", env_reading(35), market=None))
    assert [(t.device_id, t.market) for t in opened(engine.drain())] == [("ENV-1", "NORTH")]


def test_pending_state_survives_a_round_trip_through_storage():
    clock = ManualClock()
    slow = rule(**HOT, **{"for": "10m"})
    first = RuleEngine([slow], clock=clock)
    first.process(envelope("ENV-1", "env_sensor", env_reading(35), at=0))
    upserts, _, _ = first.take_dirty(include_aux=True)
    second = RuleEngine([slow], clock=clock)
    second.restore(upserts)
    clock.at(10 * 60)
    second.tick()
    [alert] = opened(second.drain())
    assert alert.at == (T0 + timedelta(minutes=10)).timestamp()


def test_baselines_survive_a_round_trip_through_storage():
    clock = ManualClock()
    first = RuleEngine([builtin("abnormal-price")], clock=clock)
    for n in range(25):
        first.process(envelope("SC-1", "scale", transaction("cabbage", 4.0), at=n))
    upserts, _, _ = first.take_dirty(include_aux=True)
    second = RuleEngine([builtin("abnormal-price")], clock=clock)
    second.restore(upserts)
    second.process(envelope("SC-1", "scale", transaction("cabbage", 10.0), at=30))
    assert len(opened(second.drain())) == 1


def test_sequence_gaps_are_counted_per_device():
    engine = RuleEngine()
    for seq in (1, 2, 5, 6, 10):
        engine.process(envelope("ENV-1", "env_sensor", env_reading(), seq=seq))
    assert engine.take_sequence_gaps() == {"ENV-1": 5}


def test_a_rule_update_keeps_the_state_of_its_keys():
    engine, _ = engine_with(rule(**HOT))
    engine.process(envelope("ENV-1", "env_sensor", env_reading(35)))
    engine.drain()
    engine.upsert_rule(rule(**HOT, severity="critical"))
    assert engine.state_of("test-rule", "ENV-1") == "firing"
