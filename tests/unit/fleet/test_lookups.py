"""The lookup cache's own rules: bounded, entries expire, and a read that raced a change is not kept."""

from __future__ import annotations

from fleet.lookups import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl_and_the_cache_keeps_at_most_its_size() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(max_entries=2, ttl_s=2.0, clock=clock)
    cache.put("a", 1, cache.token())
    cache.put("b", 2, cache.token())
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3, cache.token())
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    clock.now += 2.0
    assert cache.get("a") is None and cache.get("c") is None and len(cache) == 0


def test_a_value_read_before_an_invalidation_is_not_cached() -> None:
    cache: TtlCache[str, str] = TtlCache(max_entries=10, ttl_s=60.0, clock=Clock())
    token = cache.token()  # a lookup starts reading the database …
    cache.invalidate("dev")  # … a change to the device commits meanwhile …
    cache.put("dev", "before the change", token)  # … the lookup's older copy must not be served later
    assert cache.get("dev") is None
    cache.put("dev", "after", cache.token())
    cache.invalidate("dev")
    assert cache.get("dev") is None


def test_size_or_ttl_zero_turns_it_off() -> None:
    for cache in (TtlCache[str, int](0, 5.0), TtlCache[str, int](10, 0.0)):
        cache.put("a", 1, cache.token())
        assert not cache.enabled and cache.get("a") is None and len(cache) == 0
