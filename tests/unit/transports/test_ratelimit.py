"""Per-device token buckets (broker/ratelimit.py) on a controlled clock."""

from __future__ import annotations

import pytest

from broker.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate_and_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: the next token comes in 1/rate s
    assert limiter.take("b") == 0.0  # another device is not affected
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    clock.now += 60
    assert [limiter.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled to the burst, not beyond
    assert limiter.refused == 3
    assert RateLimiter.retry_after_s(0.01) == 1 and RateLimiter.retry_after_s(2.2) == 3


def test_memory_is_bounded_and_forgetting_only_lets_through() -> None:
    limiter = RateLimiter(1.0, 1, max_keys=100, clock=Clock())
    for n in range(1000):
        assert limiter.take(f"d{n}") == 0.0
    assert len(limiter) == 100
    assert limiter.take("d999") > 0  # recent keys are kept


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 5), (1, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)
