"""Generators: every kind × channel × event type validates against fleet.kinds, and the data looks real."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from fleet.kinds import CATALOG, Channel, DeviceKind, validate_payload
from simulators.generators import (
    GENERATORS,
    PRODUCTS,
    ColdLockerGenerator,
    EnvSensorGenerator,
    FirePanelGenerator,
    FlowCounterGenerator,
    FoodDetectorGenerator,
    ScaleGenerator,
    SchemaGenerator,
    ThermometerGenerator,
    busy,
    make_generator,
)
from simulators.wire import CHINA_TZ

# A Monday in the market's own time zone; ticks walk through two whole days.
START = datetime(2026, 11, 23, 0, 0, tzinfo=CHINA_TZ).astimezone(UTC)
ALL_KINDS = list(DeviceKind)


def run_ticks(kind: DeviceKind, ticks: int = 2880, step: timedelta = timedelta(minutes=1), seed: int = 7):
    gen = make_generator(kind, f"acme-{kind.value}-0001", "SZ-FT-001", seed)
    out = list(gen.boot(START))
    for n in range(ticks):
        out += gen.tick(START + n * step)
    return gen, out


def test_there_is_a_generator_for_every_kind() -> None:
    assert set(GENERATORS) == set(DeviceKind)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=str)
def test_every_message_validates_and_every_channel_is_used(kind: DeviceKind) -> None:
    _gen, out = run_ticks(kind)
    spec = CATALOG[kind]
    channels = Counter(e.channel for e in out)
    for emission in out:
        validate_payload(kind, emission.channel, emission.payload)
        json.dumps(emission.payload)  # plain JSON, no Decimal or datetime objects
    expected = {c.value for c in (Channel.TELEMETRY, Channel.EVENT, Channel.STATE) if getattr(spec, c.value)}
    if kind in (DeviceKind.FLOW_COUNTER, DeviceKind.ENV_SENSOR, DeviceKind.DISPLAY):
        expected.discard("event")  # their only event is a rare `fault`; checked below
    assert expected <= set(channels), (kind, channels)
    assert "telemetry" not in channels or spec.telemetry is not None


@pytest.mark.parametrize("kind", ALL_KINDS, ids=str)
def test_every_event_type_of_every_kind_validates(kind: DeviceKind) -> None:
    gen = make_generator(kind, f"acme-{kind.value}-0002", "SZ-FT-001", 1)
    gen.boot(START)
    for event_type in gen.EVENT_TYPES:
        for n in range(20):
            payload = gen.event(START + timedelta(hours=n), event_type)
            assert payload["type"] == event_type
            validate_payload(kind, "event", payload)
        validate_payload(kind, "state", gen.state_payload(START))
    with pytest.raises(ValueError, match="has no"):
        gen.event(START, "no_such_event")


def test_same_seed_same_data_different_seed_different_data() -> None:
    assert run_ticks(DeviceKind.SCALE, 200)[1] == run_ticks(DeviceKind.SCALE, 200)[1]
    assert run_ticks(DeviceKind.SCALE, 200)[1] != run_ticks(DeviceKind.SCALE, 200, seed=8)[1]


def test_unknown_kind() -> None:
    with pytest.raises(KeyError, match="toaster"):
        make_generator("toaster", "x")


def test_scale_transactions_look_real() -> None:
    _, out = run_ticks(DeviceKind.SCALE)
    sales = [e.payload for e in out if e.payload.get("type") == "transaction"]
    assert len(sales) > 1000
    known = {name for _, _, products, _ in PRODUCTS.values() for name, _, _ in products}
    order_numbers = set()
    for sale in sales:
        assert sale["product_name"] in known
        assert any("\u4e00" <= ch <= "\u9fff" for ch in sale["product_name"])  # Chinese
        expected = (Decimal(str(sale["weight_kg"])) * Decimal(str(sale["unit_price"]))).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
        assert Decimal(str(sale["total"])) == expected
        assert 0 < sale["weight_kg"] <= 5 and 1 <= sale["unit_price"] <= 100
        assert sale["market_code"] == "SZ-FT-001" and sale["stall_no"][0] in "ABCDE"
        assert sale["time"].endswith("+08:00")
        order_numbers.add(sale["order_no"])
    assert len(order_numbers) == len(sales)  # order numbers are unique
    # Busier at the morning peak than at 3 a.m.
    by_hour = Counter(datetime.fromisoformat(s["time"]).hour for s in sales)
    assert by_hour[8] > by_hour[3]


def test_scale_boot_self_checks_and_commands_change_state() -> None:
    gen = ScaleGenerator("acme-SC1", "M1", 1)
    boot = gen.boot(START)
    assert [e.channel for e in boot] == ["state", "event"] and boot[1].payload["type"] == "self_check"
    out = gen.apply_command(
        {"command": "set_plu", "version": 9, "entries": [{"product_code": "9001", "product_name": "鸡蛋",
                                                          "unit_price": "11.80"}]},
        START,
    )  # fmt: skip
    assert gen.state["plu_version"] == 9 and out[0].payload["plu_version"] == 9
    sale = gen.event(START, "transaction")
    assert (sale["product_name"], sale["unit_price"]) == ("鸡蛋", 11.8)
    until = (START + timedelta(minutes=10)).isoformat()
    out = gen.apply_command({"command": "authorise_calibration", "grant_id": "G-1", "valid_until": until}, START)
    assert out[0].payload == {**out[0].payload, "type": "calibrated", "grant_id": "G-1"}
    assert gen.state["calibrated_with"] == "G-1"
    expired = (START - timedelta(minutes=1)).isoformat()
    assert gen.apply_command({"command": "authorise_calibration", "grant_id": "G-2", "valid_until": expired},
                             START) == []  # fmt: skip
    assert gen.state["calibration_refused"] == {"grant_id": "G-2", "reason": "expired"}


def test_the_scale_calibrates_only_once_per_current_grant() -> None:
    gen = ScaleGenerator("acme-SC2", "M1", 1)
    assert gen.calibrate(START) == [] and gen.state["calibration_refused"]["reason"] == "no_grant"
    until = (START + timedelta(minutes=10)).isoformat()
    [done] = gen.apply_command({"command": "authorise_calibration", "grant_id": "G-3", "valid_until": until}, START)
    assert done.payload["grant_id"] == "G-3"
    assert gen.calibrate(START + timedelta(minutes=1)) == []  # the key pressed again with the same grant
    assert gen.state["calibration_refused"] == {"grant_id": "G-3", "reason": "reused"}


def test_env_sensor_follows_a_daily_temperature_cycle() -> None:
    gen = EnvSensorGenerator("acme-EN1", "M1", 3)
    afternoon = [gen.telemetry(datetime(2026, 7, d, 14, 0, tzinfo=CHINA_TZ))["temperature_c"] for d in range(1, 8)]
    night = [gen.telemetry(datetime(2026, 7, d, 2, 0, tzinfo=CHINA_TZ))["temperature_c"] for d in range(1, 8)]
    assert min(afternoon) > max(night)
    assert sum(afternoon) / 7 - sum(night) / 7 > 4


def test_cold_locker_mostly_in_range_sometimes_out_and_doors_move() -> None:
    gen, out = run_ticks(DeviceKind.COLD_LOCKER, ticks=6000)
    assert isinstance(gen, ColdLockerGenerator)
    temps = [c["temperature_c"] for e in out if e.channel == "telemetry" for c in e.payload["compartments"]]
    inside = sum(1 <= t <= 10 for t in temps) / len(temps)
    assert 0.9 < inside < 1.0, inside  # mostly 1–10 °C, and sometimes not
    doors = Counter(e.payload["door"] for e in out if e.payload.get("type") == "door")
    assert set(doors) == {"unlocked", "open", "closed_unlocked", "closed_locked"}
    # Some door stays open for several reports (door open too long).
    open_runs: Counter[int] = Counter()
    longest = 0
    for e in out:
        if e.channel == "telemetry":
            for c in e.payload["compartments"]:
                open_runs[c["compartment"]] = open_runs[c["compartment"]] + 1 if c["door"] == "open" else 0
                longest = max(longest, open_runs[c["compartment"]])
    assert longest >= 5


def test_cold_locker_commands() -> None:
    gen = ColdLockerGenerator("acme-CL1", "M1", 1)
    out = gen.apply_command({"command": "unlock_compartment", "compartment": 2}, START)
    assert out[0].payload == {"type": "door", "compartment": 2, "door": "unlocked"}
    gen.apply_command({"command": "disable_compartment", "compartment": 3, "disabled": True}, START)
    assert gen.state["disabled"] == [3]
    assert gen.apply_command({"command": "unlock_compartment", "compartment": 3}, START) == []


def test_fire_panel_rarely_alarms_and_alarms_clear() -> None:
    gen, out = run_ticks(DeviceKind.FIRE_PANEL, ticks=20000)
    assert isinstance(gen, FirePanelGenerator)
    alarms = [e.payload for e in out if e.payload.get("type") == "fire_alarm"]
    raised = [a for a in alarms if not a["cleared"]]
    assert 0 < len(raised) < 40  # rare
    assert len([a for a in alarms if a["cleared"]]) >= len(raised) - 1


def test_thermometer_rare_fevers_are_reported_with_the_max() -> None:
    gen, out = run_ticks(DeviceKind.THERMOMETER, ticks=20000)
    assert isinstance(gen, ThermometerGenerator)
    fevers = [e.payload for e in out if e.payload.get("type") == "fever"]
    measured = sum(e.payload["people_measured"] for e in out if e.channel == "telemetry")
    assert 0 < len(fevers) < measured * 0.002
    assert all(f["body_temp_c"] >= 37.3 for f in fevers)
    normal = [e.payload.get("max_body_temp_c") for e in out if e.channel == "telemetry"]
    assert sum(1 for t in normal if t is not None and t < 37.3) > 0.9 * sum(1 for t in normal if t)


def test_flow_counter_is_shaped_by_market_hours() -> None:
    gen = FlowCounterGenerator("acme-FC1", "M1", 1)
    peak = night = 0
    for day in range(1, 8):
        gen.state["last"] = None
        peak += gen.telemetry(datetime(2026, 7, day, 8, 0, tzinfo=CHINA_TZ))["count_in"]
        gen.state["last"] = None
        night += gen.telemetry(datetime(2026, 7, day, 3, 0, tzinfo=CHINA_TZ))["count_in"]
    assert peak > 10 * max(1, night)
    assert busy(datetime(2026, 7, 1, 8, tzinfo=CHINA_TZ)) > busy(datetime(2026, 7, 1, 13, tzinfo=CHINA_TZ))
    # period_s is the time since the previous report
    gen.state["last"] = None
    gen.telemetry(START)
    assert gen.telemetry(START + timedelta(seconds=90))["period_s"] == 90


def test_food_detector_has_5_plus_channels_and_mostly_passes() -> None:
    gen, out = run_ticks(DeviceKind.FOOD_DETECTOR, ticks=3000)
    assert isinstance(gen, FoodDetectorGenerator)
    assert gen.state["channels"] >= 5
    results = [e.payload for e in out if e.payload.get("type") == "test_result"]
    assert len(results) > 500
    passed = sum(r["passed"] for r in results) / len(results)
    assert 0.9 < passed < 1.0
    assert all((r["value"] < r["limit"]) == r["passed"] for r in results)
    assert len({r["result_id"] for r in results}) == len(results)
    assert max(r["channel"] for r in results) >= 5
    assert not [e for e in out if e.channel == "telemetry"]  # the kind has no telemetry schema


def test_esl_show_image_now_and_at_a_time() -> None:
    gen = make_generator("esl", "acme-EL1", "M1", 1)
    sha = "ab" * 32
    out = gen.apply_command({"command": "show_image", "image_sha256": sha, "url": "coap://x/img", "page": 2}, START)
    assert out[0].payload == {"type": "shown", "image_sha256": sha, "page": 2}
    assert gen.state["image_sha256"] == sha and gen.state["page"] == 2
    later = START + timedelta(seconds=30)
    sha2 = "cd" * 32
    assert gen.apply_command({"command": "show_image", "image_sha256": sha2, "url": "u", "at": later.isoformat()},
                             START) == []  # fmt: skip
    assert gen.next_due() == later and gen.due(START + timedelta(seconds=29)) == []
    shown = gen.due(later)
    assert shown[0].payload["image_sha256"] == sha2 and gen.state["image_sha256"] == sha2
    assert gen.next_due() is None


def test_display_push_content_and_generic_commands() -> None:
    gen = make_generator("display", "acme-DP1", "M1", 1)
    out = gen.apply_command({"command": "push_content", "content_id": "promo-1", "url": "http://x/p.mp4"}, START)
    assert gen.state["content_id"] == "promo-1" and out[0].payload["content_id"] == "promo-1"
    assert gen.telemetry(START)["content_id"] == "promo-1"
    gen.apply_command({"command": "reboot", "delay_s": 0}, START)
    assert gen.state["reboots"] == 1 and gen.state["last_command"] == "reboot"
    assert gen.apply_command({"command": "ping"}, START)[0].channel == "state"


def test_base_station_label_counts_follow_joins_and_leaves() -> None:
    gen, out = run_ticks(DeviceKind.ESL_BASE_STATION, ticks=500)
    joined = sum(1 for e in out if e.payload.get("type") == "label_joined")
    left = sum(1 for e in out if e.payload.get("type") == "label_left")
    assert joined > 0 and left > 0
    assert gen.telemetry(START)["labels_connected"] == len(gen.state["labels"])


def test_inspection_tablet_walks_an_assigned_patrol_stall_by_stall() -> None:
    gen = make_generator("inspection_tablet", "acme-TB1", "M1", 3)
    gen.boot(START)
    command = validate_payload("inspection_tablet", "command",
                               {"command": "assign_patrol", "patrol_id": "P-1", "route": ["A01", "B02", "C03"]})
    started = gen.apply_command(command.model_dump(mode="json"), START)
    assert started[0].payload == {"type": "patrol_started", "patrol_id": "P-1", "inspector": gen.state["inspector"],
                                  "route": ["A01", "B02", "C03"]}  # fmt: skip
    out = [e for n in range(3) for e in gen.tick(START + timedelta(minutes=n))]
    records = [e.payload for e in out if e.payload.get("type") == "patrol_record"]
    assert [r["stall_code"] for r in records] == ["A01", "B02", "C03"]
    finished = [e.payload for e in out if e.payload.get("type") == "patrol_finished"]
    assert finished == [{"type": "patrol_finished", "patrol_id": "P-1", "stalls_checked": 3,
                         "problems": sum(r["result"] == "problem" for r in records)}]  # fmt: skip
    track = [e.payload for e in out if e.channel == "telemetry" and "lat" in e.payload]
    assert track and all(p["patrol_id"] == "P-1" for p in track)  # the patrol track while walking


def test_broadcast_emergency_announcement_cuts_the_programme_and_a_normal_one_waits() -> None:
    gen = make_generator("broadcast", "acme-BC1", "M1", 3)
    gen.boot(START)
    gen.apply_command({"command": "play_announcement", "programme": "notice-1", "text": "今日菜价", "zones": [],
                       "priority": "normal", "repeat": 2}, START)  # fmt: skip
    assert gen.telemetry(START)["programme"] == "notice-1"
    assert gen.apply_command({"command": "play_announcement", "programme": "notice-2", "zones": [],
                              "priority": "normal", "repeat": 1}, START) == []  # fmt: skip
    cut = gen.apply_command({"command": "play_announcement", "programme": "fire-exit", "text": "请从东门疏散",
                             "zones": ["Z1"], "priority": "emergency", "repeat": 3}, START)  # fmt: skip
    assert [e.payload["type"] for e in cut] == ["playback_finished", "playback_started"]
    assert cut[0].payload["interrupted"] is True and cut[1].payload["zones"] == ["Z1"]
    for emission in cut:
        validate_payload("broadcast", emission.channel, emission.payload)


def test_broadcast_plays_its_timetable_at_the_local_time() -> None:
    gen = make_generator("broadcast", "acme-BC2", "M1", 3)
    gen.boot(START)
    gen.apply_command({"command": "set_schedule", "entries": [{"at": "07:30", "programme": "morning"}]}, START)
    seven_thirty = datetime(2026, 11, 23, 7, 30, tzinfo=CHINA_TZ)
    started = [e.payload for e in gen.tick(seven_thirty) if e.payload.get("type") == "playback_started"]
    assert started and started[0]["programme"] == "morning" and started[0]["scheduled"] is True


@pytest.mark.parametrize("kind", ALL_KINDS, ids=str)
def test_a_kind_without_its_own_generator_still_sends_valid_messages(kind: DeviceKind) -> None:
    gen = SchemaGenerator(f"acme-{kind.value}-9", "M1", 5, kind=kind)
    out = list(gen.boot(START))
    for n in range(30):
        out += gen.tick(START + timedelta(minutes=n))
    assert out and any(e.channel == "state" for e in out)
    for emission in out:
        validate_payload(kind, emission.channel, emission.payload)


def test_scale_prices_drift_each_morning_and_every_sale_uses_the_price_the_scale_reported() -> None:
    gen = ScaleGenerator("acme-SC-drift", "M1", 4)
    out = list(gen.boot(START))
    for n in range(10 * 24 * 4):  # ten days, a tick every 15 minutes
        out += gen.tick(START + n * timedelta(minutes=15))
    prices = {item["product_code"]: None for item in gen.state["plu"]}
    for emission in out:
        payload = emission.payload
        if payload.get("type") == "price_set":
            prices[payload["product_code"]] = payload["unit_price"]
        elif payload.get("type") == "transaction":
            known = prices[payload["product_code"]]
            assert known is None or payload["unit_price"] == known  # the platform always knows the price charged
    morning = [e.payload for e in out if e.payload.get("type") == "price_set"]
    assert len(morning) >= 9  # re-priced on (nearly) every market morning after the first
    assert len({p["unit_price"] for p in morning}) > 5  # and the prices really move


def test_price_drift_is_market_wide_and_bounded() -> None:
    from simulators.generators import price_drift

    factors = [price_drift("白菜", day) for day in range(739_000, 739_365)]
    assert all(0.75 < f < 1.25 for f in factors) and max(factors) - min(factors) > 0.1
    assert price_drift("白菜", 739_100) == price_drift("白菜", 739_100)  # every stall sees the same day
    assert price_drift("白菜", 739_100) != price_drift("排骨", 739_100)
