"""Envelopes and rules for rule tests: the engine's real input, built directly."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.envelope import Envelope
from rules.engine import RuleEngine, Transition
from rules.language import Rule
from rules.packs import BUILTIN_PACK, load_pack, parse_rule

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
_seq = itertools.count(1)


def envelope(device_id: str, kind: str, payload: dict[str, Any], *, at: float | datetime = 0.0,
             channel: str | None = None, market: str | None = "M1", seq: int | None = None) -> Envelope:
    """An envelope `at` seconds after T0 (or at a datetime); the channel follows from the payload's `type`."""
    ts = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    channel = channel or ("event" if "type" in payload else "telemetry")
    return Envelope(device_id=device_id, kind=kind, market=market, channel=channel, ts=ts,
                    seq=next(_seq) if seq is None else seq, payload=payload)


def locker(compartments: dict[int, float], doors: dict[int, str] | None = None) -> dict[str, Any]:
    doors = doors or {}
    return {"compartments": [{"compartment": n, "temperature_c": t, "door": doors.get(n, "closed_locked")}
                             for n, t in compartments.items()]}


def env_reading(temperature_c: float = 20.0, humidity_pct: float = 60.0, **extra: Any) -> dict[str, Any]:
    return {"temperature_c": temperature_c, "humidity_pct": humidity_pct, **extra}


def transaction(product: str, unit_price: float, weight_kg: float = 1.0, stall: str = "A-01") -> dict[str, Any]:
    return {"type": "transaction", "order_no": f"O{next(_seq)}", "time": T0.isoformat(), "market_code": "M1",
            "stall_no": stall, "scale_id": "S1", "product_name": product, "weight_kg": weight_kg,
            "unit_price": unit_price, "total": round(unit_price * weight_kg, 2)}


def food_result(passed: bool, result_id: str = "R1", stall: str = "B-07") -> dict[str, Any]:
    return {"type": "test_result", "result_id": result_id, "tested_at": T0.isoformat(), "channel": 1,
            "sample_name": "spinach", "stall_no": stall, "item": "organophosphate",
            "value": 62.5 if not passed else 8.0, "unit": "%", "limit": 50.0, "passed": passed}


def builtin(rule_id: str) -> Rule:
    return next(rule for rule in load_pack(BUILTIN_PACK) if rule.id == rule_id)


def rule(**data: Any) -> Rule:
    data.setdefault("id", "test-rule")
    data.setdefault("name", "Test rule")
    return parse_rule(data)


class ManualClock:
    """The engine clock in tests: seconds after T0, moved by hand."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.now = T0.timestamp() + seconds

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float) -> float:
        self.now = T0.timestamp() + seconds
        return self.now


def opened(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.action == "open"]


def engine_with(*rules: Rule, clock: ManualClock | None = None) -> tuple[RuleEngine, ManualClock]:
    clock = clock or ManualClock()
    return RuleEngine(rules, clock=clock), clock
