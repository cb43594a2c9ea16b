"""The campaign's decisions, as pure functions of counts and clocks: wave sizes and membership, announcement
budget (constant or exponential rate), success thresholds, abort rules, retry back-off, ETA.

The orchestrator reads counts from the database and acts on what these return; keeping the arithmetic here
makes every rule testable without a database and keeps the orchestrator a loop of queries.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from firmware.schemas import AbortRule, ConstantRate, ExponentialRate, WaveSpec


@dataclass
class Counts:
    """Jobs of a wave or a campaign by where they stand; failures split by class."""

    pending: int = 0
    in_progress: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    timed_out: int = 0
    cancelled: int = 0

    @property
    def failures(self) -> int:
        return self.failed + self.rejected + self.timed_out

    @property
    def executed(self) -> int:
        """Jobs that ran to an end of their own (succeeded or failed); cancelled ones did not."""
        return self.succeeded + self.failures

    @property
    def open(self) -> int:
        return self.pending + self.in_progress

    @property
    def total(self) -> int:
        return self.open + self.executed + self.cancelled

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.pending + other.pending,
            self.in_progress + other.in_progress,
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.rejected + other.rejected,
            self.timed_out + other.timed_out,
            self.cancelled + other.cancelled,
        )


# ---------------------------------------------------------------- wave sizes and membership


def plan_wave_sizes(total: int, waves: Sequence[WaveSpec]) -> list[int]:
    """How many devices each wave gets. Percent and count waves are rounded up (a 1 % canary of 50 devices is
    one device, not none); the last wave takes whatever is left; a wave never takes more than is left."""
    sizes: list[int] = []
    left = total
    for index, wave in enumerate(waves):
        if index == len(waves) - 1 or (wave.percent is None and wave.count is None):
            size = left if index == len(waves) - 1 else 0
        elif wave.count is not None:
            size = min(wave.count, left)
        else:
            size = min(math.ceil(total * (wave.percent or 0) / 100 - 1e-9), left)
        sizes.append(size)
        left -= size
    return sizes


def rollout_order(device_ids: Sequence[str], seed: str) -> list[str]:
    """A stable pseudo-random order: canaries spread over markets and models instead of the first serials,
    and a restarted orchestrator (or a re-planned campaign) picks the same devices."""
    return sorted(device_ids, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).digest())


def assign_waves(device_ids: Sequence[str], sizes: Sequence[int], seed: str) -> list[tuple[str, int]]:
    """(device id, wave index) for every device, in rollout order."""
    ordered = rollout_order(device_ids, seed)
    out: list[tuple[str, int]] = []
    start = 0
    for index, size in enumerate(sizes):
        out.extend((device_id, index) for device_id in ordered[start : start + size])
        start += size
    return out


# ---------------------------------------------------------------- rate


def rate_per_minute(rate: ConstantRate | ExponentialRate | None, succeeded: int) -> float | None:
    """Announcements allowed per minute now; None: no limit. An exponential rate multiplies by its factor each
    time `every_succeeded` more devices succeeded, up to its maximum."""
    if rate is None:
        return None
    if isinstance(rate, ConstantRate):
        return rate.per_minute
    steps = succeeded // rate.every_succeeded
    # cap the exponent before the power: 2**10_000 overflows a float
    if steps * math.log(rate.increment_factor) > math.log(rate.max_per_minute / rate.base_per_minute) + 1:
        return rate.max_per_minute
    return min(rate.max_per_minute, rate.base_per_minute * rate.increment_factor**steps)


def announce_budget(
    per_minute: float | None,
    announced_last_minute: int,
    in_flight: int,
    max_in_flight: int | None,
    cap: int,
) -> int:
    """How many jobs to announce now: the rate over a sliding minute, the in-flight limit, and a batch cap."""
    budget = cap
    if per_minute is not None:
        # A rate below one per minute still lets one through once the previous one is a minute old.
        budget = min(budget, max(0, math.ceil(per_minute) - announced_last_minute))
    if max_in_flight is not None:
        budget = min(budget, max(0, max_in_flight - in_flight))
    return max(0, budget)


# ---------------------------------------------------------------- thresholds and abort rules


class WaveVerdict(StrEnum):
    ADVANCE = "advance"  # the success threshold is met: the next wave may start
    WAIT = "wait"  # not yet, but still reachable
    STUCK = "stuck"  # cannot be met any more with what is still open


def judge_wave(size: int, counts: Counts, threshold_pct: float) -> WaveVerdict:
    if size == 0 or counts.succeeded * 100 >= threshold_pct * size - 1e-9:
        return WaveVerdict.ADVANCE
    if (counts.succeeded + counts.open) * 100 < threshold_pct * size - 1e-9:
        return WaveVerdict.STUCK
    return WaveVerdict.WAIT


_RULE_WORDS = {"failed": "failed", "rejected": "were rejected", "timed_out": "timed out", "any": "failed"}


def abort_reason(rules: Sequence[AbortRule], counts: Counts) -> str | None:
    """The first abort rule that fires, as a sentence for the campaign's state reason; None if none does."""
    executed = counts.executed
    for rule in rules:
        if executed < rule.min_executed:
            continue
        bad = {
            "failed": counts.failed,
            "rejected": counts.rejected,
            "timed_out": counts.timed_out,
            "any": counts.failures,
        }[rule.failure]
        share = 100 * bad / executed
        if share > rule.above_pct:
            return (
                f"abort rule: {bad} of {executed} executed devices {_RULE_WORDS[rule.failure]} "
                f"({share:.1f}% > {rule.above_pct:g}%)"
            )
    return None


# ---------------------------------------------------------------- retries and ETA


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Wait before try `attempt + 1`: doubling from `base_s` after the first failure, at most `max_s`."""
    if attempt <= 0 or base_s <= 0:
        return 0.0
    return float(min(max_s, base_s * 2 ** min(attempt - 1, 40)))


def eta_s(remaining: int, done: int, elapsed_s: float, per_minute: float | None = None) -> float | None:
    """Seconds until `remaining` jobs are done at the pace seen so far (`done` in `elapsed_s`); before the
    first result, at the rate limit if there is one; None when nothing allows a guess."""
    if remaining <= 0:
        return 0.0
    pace = done / elapsed_s if done > 0 and elapsed_s > 0 else None
    if per_minute is not None:
        pace = min(pace, per_minute / 60) if pace is not None else per_minute / 60
    if not pace:
        return None
    return remaining / pace


def pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0
