"""Conditions compiled to small closures, once per rule, so evaluating an envelope is a few dict look-ups.

A *verdict* is what one reading says about a rule: `1` the condition holds (raise), `-1` it is clear (lower),
`0` neither (inside a hysteresis band, or an event that neither raises nor clears). The engine's state
machine (rules/engine.py) turns verdicts into alerts; nothing here keeps state except `RollingMedian`.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from typing import Any

from fleet.kinds import Channel
from rules.language import Match, Predicate, Range, Rule, Threshold
from rules.paths import MISSING, FieldSpec, compile_getter, resolve_path, to_number

__all__ = ["Getter", "RollingMedian", "compile_decide", "compile_field", "compile_predicates"]

Getter = Callable[[dict[str, Any]], Any]


def compile_field(rule: Rule, path: str) -> tuple[FieldSpec, Getter]:
    """The field's spec and a getter over the dict it lives in (the payload, or one array element)."""
    assert rule.scope.kind is not None
    spec = resolve_path(rule.scope.kind, Channel(rule.scope.channel), rule.scope.event_type, path)
    get = compile_getter(spec.rest if spec.array else path)
    if spec.default is not MISSING and spec.default is not None:
        raw, default = get, spec.default

        def get(data: dict[str, Any]) -> Any:
            value = raw(data)
            return default if value is MISSING else value
    if spec.type != "number":
        return spec, get

    def get_number(data: dict[str, Any]) -> Any:
        value = to_number(get(data))
        return MISSING if value is None else value

    return spec, get_number


def _test(op: str, expected: Any) -> Callable[[Any], bool]:
    if op == "exists":
        return lambda v: v is not MISSING and v is not None
    if op == "missing":
        return lambda v: v is MISSING or v is None
    if op == "in":
        allowed = list(expected)
        return lambda v: v is not MISSING and v in allowed
    if op == "not_in":
        banned = list(expected)
        return lambda v: v is not MISSING and v not in banned
    if op == "==":
        return lambda v: v is not MISSING and v == expected
    if op == "!=":
        return lambda v: v is not MISSING and v != expected
    if op == ">":
        return lambda v: v is not MISSING and v > expected
    if op == ">=":
        return lambda v: v is not MISSING and v >= expected
    if op == "<":
        return lambda v: v is not MISSING and v < expected
    if op == "<=":
        return lambda v: v is not MISSING and v <= expected
    raise ValueError(f"unknown op {op!r}")


def compile_predicates(
    rule: Rule, predicates: list[Predicate]
) -> Callable[[dict[str, Any], dict[str, Any] | None], bool]:
    """All tests of a `where` list as one function of (payload, element); element tests read the element."""
    tests: list[tuple[bool, Getter, Callable[[Any], bool]]] = []
    for pred in predicates:
        spec, get = compile_field(rule, pred.field)
        tests.append((spec.array is not None, get, _test(pred.op, pred.value)))
    if not tests:
        return lambda payload, element: True
    if len(tests) == 1 and not tests[0][0]:
        _, get1, test1 = tests[0]
        return lambda payload, element: test1(get1(payload))

    def all_hold(payload: dict[str, Any], element: dict[str, Any] | None) -> bool:
        for on_element, get, test in tests:
            source = element if on_element else payload
            if source is None or not test(get(source)):
                return False
        return True

    return all_hold


def compile_decide(rule: Rule) -> Callable[[Any], int]:
    """Verdict of one numeric value for threshold and range conditions."""
    cond = rule.condition
    if isinstance(cond, Threshold):
        limit = cond.value
        clear = cond.clear
        if cond.op == ">":
            if clear is None:
                return lambda v: 1 if v > limit else -1
            return lambda v: 1 if v > limit else (-1 if v <= clear else 0)
        if cond.op == ">=":
            if clear is None:
                return lambda v: 1 if v >= limit else -1
            return lambda v: 1 if v >= limit else (-1 if v <= clear else 0)
        if cond.op == "<":
            if clear is None:
                return lambda v: 1 if v < limit else -1
            return lambda v: 1 if v < limit else (-1 if v >= clear else 0)
        if clear is None:
            return lambda v: 1 if v <= limit else -1
        return lambda v: 1 if v <= limit else (-1 if v >= clear else 0)
    if isinstance(cond, Range):
        lo, hi, margin = cond.min, cond.max, cond.clear_margin
        if cond.mode == "outside":
            clear_lo, clear_hi = lo + margin, hi - margin
            return lambda v: 1 if (v < lo or v > hi) else (-1 if clear_lo <= v <= clear_hi else 0)
        return lambda v: 1 if lo <= v <= hi else (-1 if (v < lo - margin or v > hi + margin) else 0)
    raise TypeError(f"no numeric verdict for {cond.type}")


def compile_match(rule: Rule) -> Callable[[dict[str, Any], dict[str, Any] | None], int]:
    cond = rule.condition
    assert isinstance(cond, Match)
    holds = compile_predicates(rule, cond.where)
    if cond.clear_when is not None:
        clears = compile_predicates(rule, cond.clear_when)
        return lambda p, e: 1 if holds(p, e) else (-1 if clears(p, e) else 0)
    if rule.scope.channel == "event":
        return lambda p, e: 1 if holds(p, e) else 0  # another event says nothing about this one
    return lambda p, e: 1 if holds(p, e) else -1


class RollingMedian:
    """Median of the values of the last `window` seconds (at most `limit` of them), O(limit) per insert."""

    __slots__ = ("limit", "ordered", "samples", "window")

    def __init__(self, window: float, limit: int) -> None:
        self.window, self.limit = window, limit
        self.samples: deque[tuple[float, float]] = deque()
        self.ordered: list[float] = []

    def add(self, t: float, value: float) -> None:
        horizon = t - self.window
        samples, ordered = self.samples, self.ordered
        while samples and (samples[0][0] < horizon or len(samples) >= self.limit):
            _, old = samples.popleft()
            del ordered[bisect.bisect_left(ordered, old)]
        samples.append((t, value))
        bisect.insort(ordered, value)

    def median(self, t: float) -> tuple[float | None, int]:
        horizon = t - self.window
        samples, ordered = self.samples, self.ordered
        while samples and samples[0][0] < horizon:
            _, old = samples.popleft()
            del ordered[bisect.bisect_left(ordered, old)]
        n = len(ordered)
        if not n:
            return None, 0
        mid = n // 2
        return (ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2), n

    def dump(self) -> list[list[float]]:
        return [[t, v] for t, v in self.samples]

    @classmethod
    def load(cls, window: float, limit: int, data: list[list[float]]) -> RollingMedian:
        median = cls(window, limit)
        for t, v in data:
            median.add(float(t), float(v))
        return median
