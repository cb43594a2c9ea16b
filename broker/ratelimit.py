"""Per-device request limits for the request/response transports (CoAP, HTTP ingest).

A token bucket per key: `rate` tokens per second, at most `burst` saved up. `take(key)` spends one token and
answers 0.0, or — when the bucket is empty — how many seconds until the next token, which the transport sends
back (CoAP 4.29 with Max-Age, HTTP 429 with Retry-After). A misbehaving device is slowed down; the others are
not. Memory is bounded: at most `max_keys` buckets, the least recently used forgotten first (a forgotten key
starts again with a full bucket, which only ever errs on the side of letting a device through).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self, rate: float, burst: float, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self.refused = 0
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token for `key`: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            self.refused += 1
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after_s(wait: float) -> int:
        """Whole seconds to tell the device (at least 1)."""
        return max(1, math.ceil(wait))

    def __len__(self) -> int:
        return len(self._buckets)
