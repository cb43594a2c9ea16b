"""Wave sizing and membership, rate limits and ramps, thresholds, abort rules, back-off, ETA."""

from __future__ import annotations

import pytest

from firmware.schemas import AbortRule, ConstantRate, ExponentialRate, WaveSpec, default_waves
from firmware.waves import (
    Counts,
    WaveVerdict,
    abort_reason,
    announce_budget,
    assign_waves,
    backoff_s,
    eta_s,
    judge_wave,
    plan_wave_sizes,
    rate_per_minute,
    rollout_order,
)


def test_default_waves_are_one_percent_canary_ten_percent_then_the_rest() -> None:
    assert plan_wave_sizes(1000, default_waves()) == [10, 100, 890]


def test_a_small_fleet_still_gets_a_canary_of_one() -> None:
    assert plan_wave_sizes(50, default_waves()) == [1, 5, 44]


def test_waves_never_take_more_than_is_left() -> None:
    assert plan_wave_sizes(3, [WaveSpec(count=2), WaveSpec(count=5), WaveSpec()]) == [2, 1, 0]


def test_the_last_wave_takes_the_rest_whatever_its_share() -> None:
    assert plan_wave_sizes(100, [WaveSpec(percent=10), WaveSpec(percent=10)]) == [10, 90]


def test_no_devices_means_empty_waves() -> None:
    assert plan_wave_sizes(0, default_waves()) == [0, 0, 0]


def test_membership_is_stable_and_covers_every_device_once() -> None:
    ids = [f"acme-SN{n:04d}" for n in range(200)]
    first = assign_waves(ids, [2, 20, 178], seed="campaign-7")
    assert first == assign_waves(list(reversed(ids)), [2, 20, 178], seed="campaign-7")
    assert sorted(d for d, _ in first) == sorted(ids)
    assert [sum(1 for _, w in first if w == i) for i in range(3)] == [2, 20, 178]


def test_canaries_are_not_simply_the_first_serials() -> None:
    ids = [f"acme-SN{n:04d}" for n in range(1000)]
    assert rollout_order(ids, "campaign-1")[:10] != ids[:10]
    assert rollout_order(ids, "campaign-1")[:10] != rollout_order(ids, "campaign-2")[:10]


def test_constant_rate_and_exponential_ramp() -> None:
    assert rate_per_minute(None, 100) is None
    assert rate_per_minute(ConstantRate(per_minute=30), 1000) == 30
    ramp = ExponentialRate(kind="exponential", base_per_minute=10, increment_factor=2, every_succeeded=5,
                           max_per_minute=100)  # fmt: skip
    assert [rate_per_minute(ramp, s) for s in (0, 4, 5, 10, 15, 20, 10_000_000)] == [10, 10, 20, 40, 80, 100, 100]


def test_budget_respects_the_sliding_minute_and_in_flight_limit() -> None:
    assert announce_budget(None, 0, 0, None, cap=500) == 500
    assert announce_budget(60, 45, 0, None, cap=500) == 15
    assert announce_budget(60, 70, 0, None, cap=500) == 0
    assert announce_budget(0.5, 0, 0, None, cap=500) == 1
    assert announce_budget(None, 0, 8, 10, cap=500) == 2
    assert announce_budget(60, 0, 12, 10, cap=500) == 0


def test_a_wave_advances_once_its_threshold_succeeded() -> None:
    assert judge_wave(10, Counts(succeeded=9, in_progress=1), 90) == WaveVerdict.ADVANCE
    assert judge_wave(10, Counts(succeeded=8, in_progress=2), 90) == WaveVerdict.WAIT
    assert judge_wave(1, Counts(succeeded=1), 100) == WaveVerdict.ADVANCE
    assert judge_wave(0, Counts(), 100) == WaveVerdict.ADVANCE


def test_a_wave_is_stuck_when_the_threshold_is_out_of_reach() -> None:
    assert judge_wave(10, Counts(succeeded=7, failed=2, pending=1), 90) == WaveVerdict.STUCK
    assert judge_wave(1, Counts(rejected=1), 100) == WaveVerdict.STUCK


def test_abort_rules_fire_only_above_the_share_after_the_minimum() -> None:
    rules = [AbortRule(failure="any", above_pct=20, min_executed=10)]
    assert abort_reason(rules, Counts(succeeded=2, failed=3)) is None  # only 5 executed
    assert abort_reason(rules, Counts(succeeded=8, failed=2)) is None  # exactly 20 %
    reason = abort_reason(rules, Counts(succeeded=7, failed=1, rejected=1, timed_out=1))
    assert reason is not None and "3 of 10" in reason and "30.0% > 20%" in reason


def test_abort_rules_count_their_own_failure_class() -> None:
    rules = [AbortRule(failure="rejected", above_pct=0, min_executed=1)]
    assert abort_reason(rules, Counts(succeeded=5, failed=5, timed_out=5)) is None
    assert abort_reason(rules, Counts(succeeded=5, rejected=1)) is not None


def test_cancelled_jobs_are_not_executed() -> None:
    rules = [AbortRule(failure="any", above_pct=10, min_executed=5)]
    assert abort_reason(rules, Counts(succeeded=1, failed=1, cancelled=100)) is None


def test_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff_s(a, 10, 60) for a in range(0, 6)] == [0, 10, 20, 40, 60, 60]


@pytest.mark.parametrize(
    ("remaining", "done", "elapsed", "rate", "expected"),
    [(0, 10, 10, None, 0.0), (100, 10, 10, None, 100.0), (100, 0, 10, None, None), (100, 0, 0, 60, 100.0),
     (100, 50, 1, 60, 100.0)],
)  # fmt: skip
def test_eta_from_pace_and_rate(remaining, done, elapsed, rate, expected) -> None:  # type: ignore[no-untyped-def]
    assert eta_s(remaining, done, elapsed, rate) == expected
