"""The rule engine: envelopes and presence changes in, alert transitions (open / repeat / clear) out.

`RuleEngine.process(envelope)` is synchronous and touches no database: rules are indexed by
(kind, channel, event type, market), conditions are precompiled closures (rules/conditions.py), and the
per-key state (for-duration timers, hysteresis, rates, baselines) lives in dicts. What changes is marked
dirty; `rules/state.py` writes it to the `rule_state` table in batches and `restore()` reads it back at
start, so a for-duration that was half-way through when the platform stopped still fires at its original
due time. Transitions queue up in the engine; `rules/alerts.py` drains them into alerts.

Keys are (device_id, element): element is the array element ("3" for compartment 3), the `group_by`
values, or "" — one open alert per (rule, device, element).

Time: readings are judged at their own timestamp (`envelope.ts`), so a replay (dry-run, a device emptying
its outbox) behaves as it did live; timers that nothing else advances (a for-duration reached with no new
reading, missing data, presence) are fired by a deadline heap against the engine clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleet.envelope import Envelope
from rules.conditions import RollingMedian, compile_decide, compile_field, compile_match
from rules.language import Baseline, ChangeRate, Match, Missing, Range, Rule, Threshold
from rules.paths import MISSING

__all__ = ["CompiledRule", "KeyState", "RuleEngine", "Transition"]

PENDING, FIRING, CLEARING, WATCH = 1, 2, 3, 4
PHASE_NAMES = {PENDING: "pending", FIRING: "firing", CLEARING: "clearing", WATCH: "watching"}
Key = tuple[str, str]


class KeyState:
    """What the engine remembers about one (rule, device, element) that is not idle."""

    __slots__ = (
        "device_id",
        "due",
        "elem",
        "element",
        "extra",
        "fired_at",
        "kind",
        "market",
        "payload",
        "phase",
        "repeats",
        "since",
        "timer",
        "value",
    )

    def __init__(self, device_id: str, element: str) -> None:
        self.device_id, self.element = device_id, element
        self.phase = 0
        self.since = self.due = self.fired_at = 0.0
        self.timer: float | None = None  # due time of this key's live heap entry
        self.value: Any = None
        self.payload: dict[str, Any] | None = None
        self.elem: dict[str, Any] | None = None
        self.extra: dict[str, Any] | None = None
        self.market: str | None = None
        self.kind: str | None = None
        self.repeats = 0  # occurrences since the alert writer last looked

    def dump(self) -> dict[str, Any]:
        return {"p": self.phase, "s": self.since, "d": self.due, "f": self.fired_at, "v": self.value,
                "pl": self.payload, "el": self.elem, "x": self.extra, "m": self.market, "k": self.kind}

    @classmethod
    def load(cls, device_id: str, element: str, data: dict[str, Any]) -> KeyState:
        st = cls(device_id, element)
        st.phase, st.since, st.due = int(data["p"]), float(data["s"]), float(data["d"])
        st.fired_at, st.value = float(data.get("f") or 0.0), data.get("v")
        st.payload, st.elem, st.extra = data.get("pl"), data.get("el"), data.get("x")
        st.market, st.kind = data.get("m"), data.get("k")
        return st


@dataclass(slots=True)
class Transition:
    """One change the alert writer must record. `count` is the number of occurrences a repeat stands for."""

    action: str  # "open" | "repeat" | "clear"
    rule: CompiledRule
    device_id: str
    element: str
    market: str | None
    kind: str | None
    value: Any
    at: float
    context: dict[str, Any] | None = None
    count: int = 1


Evaluator = Callable[[Envelope, dict[str, Any], "str | None", float], None]


class CompiledRule:
    """A rule ready to evaluate: its closure, its timing in seconds, and the states of its keys."""

    __slots__ = (
        "active",
        "auto_resolve",
        "aux",
        "clear_for_s",
        "ctype",
        "evaluate",
        "for_s",
        "id",
        "per_occurrence",
        "resolve_after_s",
        "rule",
        "scope_ok",
        "states",
        "static_context",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.id = rule.id
        self.active = True
        self.ctype = rule.condition.type
        self.for_s = rule.for_.total_seconds()
        self.clear_for_s = rule.clear_for.total_seconds()
        self.resolve_after_s = rule.resolve_after.total_seconds() if rule.resolve_after else 0.0
        self.auto_resolve = rule.resolves_automatically
        self.per_occurrence = bool(rule.actions)  # each occurrence carries its own payload (removal tasks)
        self.states: dict[Key, KeyState] = {}
        self.aux: dict[Any, Any] = {}
        self.evaluate: Evaluator | None = None
        self.scope_ok: Callable[[str], bool] | None = None
        self.static_context = _static_context(rule)


def _static_context(rule: Rule) -> dict[str, Any]:
    cond = rule.condition
    ctx: dict[str, Any] = {"rule_id": rule.id, "rule_name": rule.name, "severity": rule.severity}
    if isinstance(cond, Threshold):
        ctx.update(field=cond.field, op=cond.op, threshold=f"{cond.value:g}")
    elif isinstance(cond, Range):
        ctx.update(field=cond.field, op=cond.mode, min=f"{cond.min:g}", max=f"{cond.max:g}")
    elif isinstance(cond, ChangeRate):
        ctx.update(field=cond.field, op=cond.direction, limit=f"{cond.limit:g}",
                   per=f"{cond.per.total_seconds():g}s")
    elif isinstance(cond, Baseline):
        ctx.update(field=cond.field, op=cond.direction)
    elif isinstance(cond, Missing):
        ctx.update(field=cond.field or "data", op="missing")
    return ctx


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class RuleEngine:
    """Evaluates rules; see the module docstring. Not thread-safe: call it from the event loop's thread."""

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        clock: Callable[[], float] = time.time,
        on_transition: Callable[[], None] | None = None,
        track_sequences: bool = True,
    ) -> None:
        self._clock = clock
        self.on_transition = on_transition
        self._track_sequences = track_sequences
        self._rules: dict[str, CompiledRule] = {}
        self._index: dict[tuple[Any, ...], list[CompiledRule]] = {}
        self._plans: dict[tuple[Any, ...], tuple[CompiledRule, ...]] = {}
        self._offline: list[CompiledRule] = []
        self._heap: list[tuple[float, int, CompiledRule, Key]] = []
        self._counter = itertools.count()
        self._transitions: deque[Transition] = deque()
        self._repeat_queue: list[tuple[CompiledRule, Key, KeyState]] = []
        self._dirty: set[tuple[str, Key]] = set()
        self._dirty_aux: set[tuple[str, str, Any]] = set()
        self._dropped: set[str] = set()
        self._devices: dict[str, tuple[str | None, dict[str, str]]] = {}
        self._kinds: dict[str, str] = {}
        self._last_seq: dict[tuple[str, str], int] = {}
        self.sequence_gaps: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sleep_until = math.inf
        self.set_rules(rules)

    # ------------------------------------------------------------ rules

    @property
    def rules(self) -> dict[str, CompiledRule]:
        return self._rules

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace the rule set; keys of rules that keep their id and condition type keep their state."""
        wanted = {rule.id: rule for rule in rules if rule.enabled}
        for rule_id in list(self._rules):
            if rule_id not in wanted:
                self.remove_rule(rule_id)
        for rule in wanted.values():
            self.upsert_rule(rule)

    def upsert_rule(self, rule: Rule) -> None:
        old = self._rules.get(rule.id)
        if not rule.enabled:
            if old is not None:
                self.remove_rule(rule.id)
            return
        compiled = CompiledRule(rule)
        self._build(compiled)
        if old is not None:
            old.active = False
            if old.ctype == compiled.ctype and old.rule.group_by == rule.group_by:
                compiled.states, compiled.aux = old.states, old.aux
                for key, st in compiled.states.items():
                    st.timer = None
                    self._rearm(compiled, key, st)
            else:
                self._dropped.add(rule.id)
        self._rules[rule.id] = compiled
        self._reindex()

    def remove_rule(self, rule_id: str) -> None:
        old = self._rules.pop(rule_id, None)
        if old is not None:
            old.active = False
            self._dropped.add(rule_id)
            self._reindex()

    def _reindex(self) -> None:
        self._index.clear()
        self._plans.clear()
        self._offline = []
        for compiled in self._rules.values():
            scope = compiled.rule.scope
            if compiled.ctype == "offline":
                self._offline.append(compiled)
                continue
            if compiled.evaluate is None:
                continue  # checked by the service (metrology, telemetry_spool): fed by apply_snapshot/apply_check
            kind = scope.kind.value if scope.kind else None
            channel = scope.channel if kind or compiled.ctype != "missing" else None
            for market in scope.markets or [None]:
                self._index.setdefault((kind, channel, scope.event_type, market), []).append(compiled)

    def _plan(self, key: tuple[Any, ...]) -> tuple[CompiledRule, ...]:
        kind, channel, event_type, market = key
        found: list[CompiledRule] = []
        for k, c in ((kind, channel), (None, None)):
            for t in {event_type, None}:
                for m in {market, None}:
                    found += self._index.get((k, c, t, m), ())
        plan = tuple(sorted(set(found), key=lambda r: r.id))
        self._plans[key] = plan
        return plan

    def _scope_check(self, rule: Rule) -> Callable[[str], bool] | None:
        devices = frozenset(rule.scope.devices)
        labels = tuple(rule.scope.labels.items())
        if not devices and not labels:
            return None
        known = self._devices

        def scope_ok(device_id: str) -> bool:
            if devices and device_id not in devices:
                return False
            if labels:
                entry = known.get(device_id)
                if entry is None:
                    return False
                have = entry[1]
                return all(have.get(k) == v for k, v in labels)
            return True

        return scope_ok

    # ------------------------------------------------------------ devices (labels and markets for scopes)

    def set_devices(self, devices: dict[str, tuple[str | None, dict[str, str]]],
                    kinds: dict[str, str] | None = None) -> None:
        """Device id → (market, labels), from the registry; label-scoped rules match only known devices.
        `kinds` (device id → kind) lets `on_presence` be called without the kind."""
        self._devices = dict(devices)
        if kinds is not None:
            self._kinds = dict(kinds)
        self._plans.clear()
        for compiled in self._rules.values():
            compiled.scope_ok = self._scope_check(compiled.rule)

    def update_device(self, device_id: str, market: str | None, labels: dict[str, str]) -> None:
        self._devices[device_id] = (market, dict(labels))

    # ------------------------------------------------------------ evaluation

    def process(self, envelope: Envelope) -> None:
        """Evaluate every rule in scope of one envelope. Synchronous, no I/O."""
        payload = envelope.payload
        device_id = envelope.device_id
        channel = envelope.channel
        if device_id not in self._kinds:
            self._kinds[device_id] = envelope.kind
        if self._track_sequences:
            seq_key = (device_id, channel)
            last = self._last_seq.get(seq_key)
            seq = envelope.seq
            if last is None or seq > last:
                if last is not None and seq > last + 1:
                    self.sequence_gaps[device_id] = self.sequence_gaps.get(device_id, 0) + seq - last - 1
                self._last_seq[seq_key] = seq
        market = envelope.market
        if market is None:
            entry = self._devices.get(device_id)
            market = entry[0] if entry else None
        event_type = payload.get("type") if channel == "event" else None
        if event_type is not None and type(event_type) is not str:
            event_type = None
        plan_key = (envelope.kind, channel, event_type, market)
        plan = self._plans.get(plan_key)
        if plan is None:
            plan = self._plan(plan_key)
        if not plan:
            return
        t = envelope.ts.timestamp()
        for compiled in plan:
            scope_ok = compiled.scope_ok
            if scope_ok is not None and not scope_ok(device_id):
                continue
            compiled.evaluate(envelope, payload, market, t)  # type: ignore[misc]

    def on_presence(self, device_id: str, kind: str | None, market: str | None, online: bool, at: datetime) -> None:
        """A device went online or offline (the platform's presence tracker calls this). Without `kind`, the
        kind the registry (`set_devices`) or the device's last envelope gave is used."""
        t = at.timestamp()
        if kind is None:
            kind = self._kinds.get(device_id)
        if market is None:
            entry = self._devices.get(device_id)
            market = entry[0] if entry else None
        for compiled in self._offline:
            scope = compiled.rule.scope
            if scope.kind is not None and scope.kind != kind:
                continue
            if scope.markets and market not in scope.markets:
                continue
            if compiled.scope_ok is not None and not compiled.scope_ok(device_id):
                continue
            key = (device_id, "")
            st = compiled.states.get(key)
            if online:
                if st is not None:
                    self._step(compiled, key, st, -1, 0, t, kind, {}, None, market)
            elif st is None or st.phase == CLEARING:
                self._step(compiled, key, st, 1, 0, t, kind, {}, None, market)

    def apply_snapshot(self, rule_id: str, matches: dict[str, tuple[Any, dict[str, Any]]], at: float) -> None:
        """A scheduled check's result: element → (value, context) that hold now; the rest clear."""
        compiled = self._rules.get(rule_id)
        if compiled is None:
            return
        for element, (value, context) in matches.items():
            key = ("", element)
            market = context.get("market")
            self._step(compiled, key, compiled.states.get(key), 1, value, at, "scale", context, None, market)
        for key, st in list(compiled.states.items()):
            if key[1] not in matches:
                self._step(compiled, key, st, -1, st.value, at, "scale", st.payload or {}, None, st.market)

    def apply_check(self, rule_id: str, element: str, holds: bool, value: Any, context: dict[str, Any],
                    at: float) -> None:
        """A periodic check's verdict on one element (e.g. this process's telemetry spool). Unlike
        `apply_snapshot`, other elements stay as they are: several processes each check their own element
        of the same rule. While it keeps holding, nothing is recorded again (no repeat per check)."""
        compiled = self._rules.get(rule_id)
        if compiled is None:
            return
        key = ("", element)
        st = compiled.states.get(key)
        if holds:
            verdict = 1 if st is None or st.phase == CLEARING else 0
        else:
            verdict = -1
        self._step(compiled, key, st, verdict, value, at, None, context, None, None)

    def release(self, rule_id: str, device_id: str, element: str) -> None:
        """The alert was resolved by hand: forget the key, so the next occurrence opens a new alert."""
        compiled = self._rules.get(rule_id)
        if compiled is not None and compiled.states.pop((device_id, element), None) is not None:
            self._dirty.add((rule_id, (device_id, element)))

    # ------------------------------------------------------------ evaluators (one closure per rule)

    def _build(self, compiled: CompiledRule) -> None:
        rule = compiled.rule
        compiled.scope_ok = self._scope_check(rule)
        cond = rule.condition
        if isinstance(cond, Threshold | Range):
            compiled.evaluate = self._numeric(compiled, cond.field)
        elif isinstance(cond, Match):
            compiled.evaluate = self._match(compiled)
        elif isinstance(cond, ChangeRate):
            compiled.evaluate = self._change_rate(compiled, cond)
        elif isinstance(cond, Baseline):
            compiled.evaluate = self._baseline(compiled, cond)
        elif isinstance(cond, Missing):
            compiled.evaluate = self._missing(compiled, cond)

    def _grouper(self, rule: Rule) -> Callable[[dict[str, Any]], str] | None:
        if not rule.group_by:
            return None
        getters = [compile_field(rule, name)[1] for name in rule.group_by]
        if len(getters) == 1:
            only = getters[0]
            return lambda payload: _text(only(payload))
        return lambda payload: "/".join(_text(get(payload)) for get in getters)

    def _numeric(self, compiled: CompiledRule, path: str) -> Evaluator:
        spec, get = compile_field(compiled.rule, path)
        decide = compile_decide(compiled.rule)
        states, step, group = compiled.states, self._step, self._grouper(compiled.rule)
        if spec.array:
            array, key_field = spec.array, spec.element_key

            def evaluate_elements(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
                elements = payload.get(array)
                if not elements:
                    return
                prefix = group(payload) + "/" if group else ""
                for idx, elem in enumerate(elements):
                    if type(elem) is not dict:
                        continue
                    value = get(elem)
                    if value is MISSING:
                        continue
                    verdict = decide(value)
                    if verdict != 1 and not states:
                        continue
                    key = (env.device_id, prefix + _text(elem.get(key_field, idx) if key_field else idx))
                    st = states.get(key)
                    if st is None and verdict != 1:
                        continue
                    step(compiled, key, st, verdict, value, t, env.kind, payload, elem, market)

            return evaluate_elements

        def evaluate(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
            value = get(payload)
            if value is MISSING:
                return
            verdict = decide(value)
            if verdict != 1 and not states:
                return
            key = (env.device_id, group(payload) if group else "")
            st = states.get(key)
            if st is None and verdict != 1:
                return
            step(compiled, key, st, verdict, value, t, env.kind, payload, None, market)

        return evaluate

    def _match(self, compiled: CompiledRule) -> Evaluator:
        rule = compiled.rule
        cond = rule.condition
        assert isinstance(cond, Match)
        decide = compile_match(rule)
        states, step, group = compiled.states, self._step, self._grouper(rule)
        specs = [compile_field(rule, p.field) for p in [*cond.where, *(cond.clear_when or [])]]
        if cond.value_field:
            specs.insert(0, compile_field(rule, cond.value_field))
        arrays = [spec for spec, _ in specs if spec.array]
        shown = specs[0][1] if specs else None  # the alert's value: `value_field`, else the first tested field
        shown_on_element = bool(specs and specs[0][0].array)
        if arrays:
            array, key_field = arrays[0].array, arrays[0].element_key

            def evaluate_elements(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
                elements = payload.get(array)  # type: ignore[arg-type]
                if not elements:
                    return
                prefix = group(payload) + "/" if group else ""
                for idx, elem in enumerate(elements):
                    if type(elem) is not dict:
                        continue
                    verdict = decide(payload, elem)
                    if verdict != 1 and not states:
                        continue
                    key = (env.device_id, prefix + _text(elem.get(key_field, idx) if key_field else idx))
                    st = states.get(key)
                    if st is None and verdict != 1:
                        continue
                    value = shown(elem if shown_on_element else payload) if shown else None
                    step(compiled, key, st, verdict, None if value is MISSING else value, t, env.kind, payload,
                         elem, market)

            return evaluate_elements

        def evaluate(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
            verdict = decide(payload, None)
            if verdict == 0 or (verdict != 1 and not states):
                return
            key = (env.device_id, group(payload) if group else "")
            st = states.get(key)
            if st is None and verdict != 1:
                return
            value = shown(payload) if shown else None
            step(compiled, key, st, verdict, None if value is MISSING else value, t, env.kind, payload, None,
                 market)

        return evaluate

    def _change_rate(self, compiled: CompiledRule, cond: ChangeRate) -> Evaluator:
        spec, get = compile_field(compiled.rule, cond.field)
        if spec.array:
            raise ValueError("change_rate on array elements is not supported")
        states, aux, step, group = compiled.states, compiled.aux, self._step, self._grouper(compiled.rule)
        per, limit = cond.per.total_seconds(), cond.limit
        clear = cond.clear if cond.clear is not None else limit
        sign = {"up": 1, "down": -1}.get(cond.direction, 0)
        dirty_aux, rule_id = self._dirty_aux, compiled.id

        def evaluate(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
            value = get(payload)
            if value is MISSING:
                return
            key = (env.device_id, group(payload) if group else "")
            previous = aux.get(key)
            aux[key] = (t, value)
            dirty_aux.add(("r", rule_id, key))
            if previous is None or t <= previous[0]:
                return
            rate = (value - previous[1]) / (t - previous[0]) * per
            measured = rate * sign if sign else abs(rate)
            verdict = 1 if measured > limit else (-1 if measured <= clear else 0)
            st = states.get(key)
            if st is None and verdict != 1:
                return
            step(compiled, key, st, verdict, value, t, env.kind, payload, None, market,
                 {"rate": round(rate, 4)})

        return evaluate

    def _baseline(self, compiled: CompiledRule, cond: Baseline) -> Evaluator:
        rule = compiled.rule
        _, get = compile_field(rule, cond.field)
        by: list[Callable[[Envelope, dict[str, Any], str | None], Any]] = []
        for name in cond.by:
            if name == "market":
                by.append(lambda env, payload, market: market)
            elif name == "device_id":
                by.append(lambda env, payload, market: env.device_id)
            else:
                getter = compile_field(rule, name)[1]
                by.append(lambda env, payload, market, getter=getter: getter(payload))
        states, groups, step, group = compiled.states, compiled.aux, self._step, self._grouper(rule)
        window, limit, least = cond.window.total_seconds(), cond.max_samples, cond.min_samples
        high = cond.max_deviation
        low = cond.clear_deviation if cond.clear_deviation is not None else high
        sign = {"above": 1, "below": -1}.get(cond.direction, 0)
        dirty_aux, rule_id = self._dirty_aux, compiled.id

        def evaluate(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
            value = get(payload)
            if value is MISSING:
                return
            group_key = "|".join(_text(f(env, payload, market)) for f in by)
            median = groups.get(group_key)
            if median is None:
                median = groups[group_key] = RollingMedian(window, limit)
            middle, samples = median.median(t)
            median.add(t, value)
            dirty_aux.add(("b", rule_id, group_key))
            if middle is None or samples < least or middle == 0:
                return
            deviation = (value - middle) / abs(middle)
            measured = deviation * sign if sign else abs(deviation)
            verdict = 1 if measured > high else (-1 if measured <= low else 0)
            if verdict != 1 and not states:
                return
            key = (env.device_id, group(payload) if group else "")
            st = states.get(key)
            if st is None and verdict != 1:
                return
            extra = {"baseline": round(middle, 4), "deviation_pct": round(deviation * 100, 1), "samples": samples}
            step(compiled, key, st, verdict, value, t, env.kind, payload, None, market, extra)

        return evaluate

    def _missing(self, compiled: CompiledRule, cond: Missing) -> Evaluator:
        get = compile_field(compiled.rule, cond.field)[1] if cond.field else None
        after = cond.after.total_seconds()
        states = compiled.states

        def evaluate(env: Envelope, payload: dict[str, Any], market: str | None, t: float) -> None:
            if get is not None and get(payload) in (MISSING, None):
                return
            key = (env.device_id, "")
            st = states.get(key)
            if st is None:
                st = states[key] = KeyState(env.device_id, "")
                st.phase, st.kind, st.market = WATCH, env.kind, market
                self._dirty.add((compiled.id, key))
            elif st.phase == FIRING:
                self._resolve(compiled, key, st, t, round((t - st.since) / 60, 1))
                st = states[key] = KeyState(env.device_id, "")
                st.phase, st.kind, st.market = WATCH, env.kind, market
            if t > st.since:
                st.since, st.due = t, t + after
                self._dirty_aux.add(("s", compiled.id, key))
            self._arm(compiled, key, st, st.due)

        return evaluate

    # ------------------------------------------------------------ the state machine

    def _step(
        self,
        compiled: CompiledRule,
        key: Key,
        st: KeyState | None,
        verdict: int,
        value: Any,
        t: float,
        kind: str | None,
        payload: dict[str, Any],
        elem: dict[str, Any] | None,
        market: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if st is None:
            if verdict != 1:
                return
            st = compiled.states[key] = KeyState(key[0], key[1])
            st.value, st.payload, st.elem, st.extra = value, payload, elem, extra
            st.since, st.market, st.kind = t, market, kind
            if compiled.for_s <= 0:
                self._fire(compiled, key, st, t)
            else:
                st.phase, st.due = PENDING, t + compiled.for_s
                self._dirty.add((compiled.id, key))
                self._arm(compiled, key, st, st.due)
            return
        phase = st.phase
        if phase == PENDING:
            if verdict == -1:
                del compiled.states[key]
                self._dirty.add((compiled.id, key))
                return
            if verdict == 1:
                st.value, st.payload, st.elem, st.extra = value, payload, elem, extra
            if t >= st.due:
                self._fire(compiled, key, st, t)
        elif phase == FIRING:
            if verdict == 1:
                self._repeat(compiled, key, st, value, t, payload, elem, extra)
            elif verdict == -1 and compiled.auto_resolve:
                if compiled.clear_for_s <= 0:
                    self._resolve(compiled, key, st, t, value)
                else:
                    st.phase, st.due = CLEARING, t + compiled.clear_for_s
                    st.value = value
                    self._dirty.add((compiled.id, key))
                    self._arm(compiled, key, st, st.due)
        elif phase == CLEARING:
            if verdict == 1:
                st.phase = FIRING
                st.due = t + compiled.resolve_after_s if compiled.resolve_after_s else 0.0
                self._dirty.add((compiled.id, key))
                self._repeat(compiled, key, st, value, t, payload, elem, extra)
            elif t >= st.due:
                self._resolve(compiled, key, st, t, value)

    def _fire(self, compiled: CompiledRule, key: Key, st: KeyState, t: float) -> None:
        st.phase, st.fired_at = FIRING, t
        st.due = t + compiled.resolve_after_s if compiled.resolve_after_s else 0.0
        self._dirty.add((compiled.id, key))
        if st.due:
            self._arm(compiled, key, st, st.due)
        self._transitions.append(Transition("open", compiled, st.device_id, st.element, st.market, st.kind,
                                            _plain(st.value), t, self._context(compiled, st, t)))
        if self.on_transition is not None:
            self.on_transition()

    def _repeat(self, compiled: CompiledRule, key: Key, st: KeyState, value: Any, t: float,
                payload: dict[str, Any], elem: dict[str, Any] | None, extra: dict[str, Any] | None) -> None:
        st.value, st.payload, st.elem, st.extra = value, payload, elem, extra
        if compiled.resolve_after_s:
            st.due = t + compiled.resolve_after_s
            self._arm(compiled, key, st, st.due)
        if compiled.per_occurrence:
            self._transitions.append(Transition("repeat", compiled, st.device_id, st.element, st.market, st.kind,
                                                _plain(value), t, self._context(compiled, st, t)))
            if self.on_transition is not None:
                self.on_transition()
            return
        st.repeats += 1
        if st.repeats == 1:
            self._repeat_queue.append((compiled, key, st))

    def _resolve(self, compiled: CompiledRule, key: Key, st: KeyState, t: float, value: Any) -> None:
        self._flush_repeats(compiled, st)
        compiled.states.pop(key, None)
        self._dirty.add((compiled.id, key))
        self._transitions.append(Transition("clear", compiled, st.device_id, st.element, st.market, st.kind,
                                            _plain(value), t))
        if self.on_transition is not None:
            self.on_transition()

    def _flush_repeats(self, compiled: CompiledRule, st: KeyState) -> None:
        if st.repeats:
            self._transitions.append(Transition("repeat", compiled, st.device_id, st.element, st.market, st.kind,
                                                _plain(st.value), self._clock(), None, st.repeats))
            st.repeats = 0

    def _context(self, compiled: CompiledRule, st: KeyState, t: float) -> dict[str, Any]:
        ctx: dict[str, Any] = dict(st.payload) if st.payload else {}
        if st.elem:
            ctx.update(st.elem)
        if st.extra:
            ctx.update(st.extra)
        ctx.update(compiled.static_context)
        ctx.update(payload=st.payload or {}, device_id=st.device_id, market=st.market or "", kind=st.kind or "",
                   element=st.element,
                   value=_plain(st.value), at=iso(t), since=iso(st.since),
                   minutes=round(max(0.0, t - st.since) / 60, 1))
        return ctx

    # ------------------------------------------------------------ timers

    def _arm(self, compiled: CompiledRule, key: Key, st: KeyState, due: float) -> None:
        if st.timer is None or due < st.timer:
            st.timer = due
            heapq.heappush(self._heap, (due, next(self._counter), compiled, key))
            if due < self._sleep_until:
                self._wake.set()

    def _rearm(self, compiled: CompiledRule, key: Key, st: KeyState) -> None:
        if st.phase in (PENDING, CLEARING, WATCH) or (st.phase == FIRING and compiled.resolve_after_s and st.due):
            self._arm(compiled, key, st, st.due)

    def tick(self, now: float | None = None) -> None:
        """Fire every timer due by `now` (the engine clock when None): for-durations, clears, missing data."""
        now = self._clock() if now is None else now
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, compiled, key = heapq.heappop(heap)
            if not compiled.active:
                continue
            st = compiled.states.get(key)
            if st is None or st.timer != due:
                continue
            st.timer = None
            if st.due > now:
                self._rearm(compiled, key, st)
                continue
            if st.phase == PENDING:
                self._fire(compiled, key, st, st.due)  # at the due time itself, also when found late
            elif st.phase == CLEARING:
                self._resolve(compiled, key, st, st.due, st.value)
            elif st.phase == WATCH:
                st.value = round((st.due - st.since) / 60, 1)
                self._fire(compiled, key, st, st.due)
            elif st.phase == FIRING and compiled.resolve_after_s and st.due:
                self._resolve(compiled, key, st, st.due, st.value)

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    async def _run_timers(self) -> None:
        while True:
            now = self._clock()
            self.tick(now)
            upcoming = self._heap[0][0] if self._heap else now + 1.0
            delay = min(max(upcoming - now, 0.0), 1.0)
            self._sleep_until = now + delay
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._sleep_until = math.inf

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run_timers(), name="rules-timers")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ------------------------------------------------------------ output for the alert writer and the state store

    def drain(self) -> list[Transition]:
        """Transitions since the last drain, in order, with repeats of firing keys folded into one each."""
        for compiled, _, st in self._repeat_queue:
            if compiled.active and st.phase in (FIRING, CLEARING):
                self._flush_repeats(compiled, st)
            else:
                st.repeats = 0
        self._repeat_queue.clear()
        out = list(self._transitions)
        self._transitions.clear()
        return out

    def pending_transitions(self) -> int:
        return len(self._transitions) + len(self._repeat_queue)

    def take_dirty(
        self, include_aux: bool
    ) -> tuple[list[tuple[str, str, str, str, Any]], list[tuple[str, str, str, str]], set[str]]:
        """(upserts, deletes, dropped rule ids) of persisted state since the last call.

        Rows are (slot, rule_id, device_id, element[, data]); slot `s` is a key's state, `r` a change-rate's
        last reading, `b` a baseline group. Auxiliary rows are collected only with `include_aux` (they change
        with nearly every reading, so they are written less often).
        """
        upserts: list[tuple[str, str, str, str, Any]] = []
        deletes: list[tuple[str, str, str, str]] = []
        dropped, self._dropped = self._dropped, set()
        dirty, self._dirty = self._dirty, set()
        for rule_id, key in dirty:
            compiled = self._rules.get(rule_id)
            st = compiled.states.get(key) if compiled is not None else None
            if st is None:
                deletes.append(("s", rule_id, key[0], key[1]))
            else:
                upserts.append(("s", rule_id, key[0], key[1], st.dump()))
        if include_aux:
            aux, self._dirty_aux = self._dirty_aux, set()
            for slot, rule_id, key in aux:
                compiled = self._rules.get(rule_id)
                if compiled is None:
                    continue
                if slot == "s":
                    st = compiled.states.get(key)
                    if st is not None:
                        upserts.append(("s", rule_id, key[0], key[1], st.dump()))
                elif slot == "r" and key in compiled.aux:
                    upserts.append(("r", rule_id, key[0], key[1], list(compiled.aux[key])))
                elif slot == "b" and key in compiled.aux:
                    upserts.append(("b", rule_id, "", key, compiled.aux[key].dump()))
        return upserts, deletes, dropped

    def requeue(self, upserts: list[tuple[str, str, str, str, Any]], deletes: list[tuple[str, str, str, str]],
                dropped: set[str]) -> None:
        """Mark rows from `take_dirty` dirty again (writing them failed)."""
        self._dropped |= dropped
        for slot, rule_id, device_id, element, *_ in [*upserts, *deletes]:
            if slot == "s":
                self._dirty.add((rule_id, (device_id, element)))
            elif slot == "r":
                self._dirty_aux.add(("r", rule_id, (device_id, element)))
            else:
                self._dirty_aux.add(("b", rule_id, element))

    def restore(self, rows: Iterable[tuple[str, str, str, str, Any]]) -> list[tuple[str, str, str]]:
        """Load persisted rows (see `take_dirty`); returns the (rule, device, element) keys that are firing."""
        firing: list[tuple[str, str, str]] = []
        for slot, rule_id, device_id, element, data in rows:
            compiled = self._rules.get(rule_id)
            if compiled is None:
                self._dropped.add(rule_id)
                continue
            if slot == "s":
                st = KeyState.load(device_id, element, data)
                cond = compiled.rule.condition
                if st.phase == WATCH and isinstance(cond, Missing):
                    # Silence is only evidence while the platform listened: a fresh window after a restart.
                    st.due = max(st.due, self._clock() + cond.after.total_seconds())
                compiled.states[(device_id, element)] = st
                self._rearm(compiled, (device_id, element), st)
                if st.phase in (FIRING, CLEARING):
                    firing.append((rule_id, device_id, element))
            elif slot == "r":
                compiled.aux[(device_id, element)] = (float(data[0]), float(data[1]))
            elif slot == "b" and isinstance(compiled.rule.condition, Baseline):
                cond = compiled.rule.condition
                compiled.aux[element] = RollingMedian.load(cond.window.total_seconds(), cond.max_samples, data)
        return firing

    def state_of(self, rule_id: str, device_id: str, element: str = "") -> str | None:
        """The phase name of a key ("pending", "firing" …), None when idle: for the API and tests."""
        compiled = self._rules.get(rule_id)
        st = compiled.states.get((device_id, element)) if compiled else None
        return PHASE_NAMES.get(st.phase) if st else None

    def take_sequence_gaps(self) -> dict[str, int]:
        gaps, self.sequence_gaps = self.sequence_gaps, {}
        return gaps


def _text(value: Any) -> str:
    if value is MISSING or value is None:
        return ""
    return value if type(value) is str else str(value)
