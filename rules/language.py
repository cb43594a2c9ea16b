"""The rule language: what a rule file (YAML) or the rules API may say, validated once, with errors a person can act on.

A rule is scope + condition + timing + what to do when it fires::

    id: locker-compartment-temperature
    name: Locker compartment outside 1–10 °C
    severity: warning
    scope: {kind: cold_locker, channel: telemetry}
    condition: {type: range, field: "compartments[].temperature_c", min: 1, max: 10, clear_margin: 0.5}
    for: 5m            # must hold this long before the alert opens (debounce)
    clear_for: 2m      # must be clear this long before it resolves itself
    message: "Locker {device_id} compartment {compartment}: {value} °C"

Every field path is checked against the payload schema of the kind and channel (`fleet.kinds`), every
duration is parsed (`rules.durations`), and every message placeholder must be a known name. docs/rules.md
is the reference; `describe_errors` turns a pydantic error into one line per problem.
"""

from __future__ import annotations

import re
import string
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleet.kinds import Channel, DeviceKind
from rules.durations import Duration
from rules.paths import FieldSpec, PathError, event_types, field_names, models_for, resolve_path

__all__ = [
    "CATEGORIES",
    "CHECKED_CONDITIONS",
    "CONDITION_TYPES",
    "PLATFORM_CATEGORY",
    "SEVERITIES",
    "Baseline",
    "Category",
    "ChangeRate",
    "Condition",
    "EscalationStep",
    "Match",
    "Metrology",
    "Missing",
    "Offline",
    "Predicate",
    "Range",
    "Rule",
    "Scope",
    "Severity",
    "TelemetrySpool",
    "Threshold",
    "describe_errors",
    "severity_rank",
]

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
# What an alert is about; roles are allowed categories (rules/routing.py), people narrow them further.
# `platform`: about the platform itself (its telemetry spool), hence about every market at once.
Category = Literal["safety", "device", "trade", "data_quality", "crowd", "platform"]
CATEGORIES: tuple[str, ...] = ("safety", "device", "trade", "data_quality", "crowd", "platform")
PLATFORM_CATEGORY = "platform"
RecipientRole = Literal["admin", "maintainer", "manager"]


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


class _Strict(BaseModel):
    # An unknown key is a typo the author wants to hear about, not something to ignore.
    model_config = ConfigDict(extra="forbid")


Op = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "exists", "missing"]
_ORDER_OPS = {">", ">=", "<", "<="}


class Predicate(_Strict):
    """One field test: `{field: reason, op: in, value: [seal_opened, parameter_changed]}`."""

    field: str
    op: Op = "=="
    value: Any = None


class Threshold(_Strict):
    """`field op value`; with `clear`, the alert clears only once the value is back past `clear` (hysteresis)."""

    type: Literal["threshold"]
    field: str
    op: Literal[">", ">=", "<", "<="]
    value: float
    clear: float | None = None


class Range(_Strict):
    """Value outside (or inside) [min, max]; `clear_margin` is the hysteresis band inside the limits."""

    type: Literal["range"]
    field: str
    min: float
    max: float
    mode: Literal["outside", "inside"] = "outside"
    clear_margin: float = Field(default=0.0, ge=0)


class ChangeRate(_Strict):
    """Change of a value faster than `limit` units per `per` between two readings of the same device."""

    type: Literal["change_rate"]
    field: str
    limit: float = Field(gt=0)
    per: Duration = timedelta(minutes=1)
    direction: Literal["up", "down", "any"] = "any"
    clear: float | None = Field(default=None, ge=0)  # rate at or below which it clears; default `limit`


class Missing(_Strict):
    """No data in scope (or no value of `field`) for `after`; clears with the next reading."""

    type: Literal["missing"]
    after: Duration
    field: str | None = None


class Offline(_Strict):
    """The device's presence is offline (the platform calls `RuleEngine.on_presence`); use `for` as grace."""

    type: Literal["offline"]


class Match(_Strict):
    """Every `where` test holds (an event of the scope's type, or a telemetry state such as a door open).

    Telemetry/state clear when the tests stop holding; events clear only on an event matching `clear_when`
    (a fire panel's `cleared: true`), after `resolve_after` without a new one, or by hand.
    """

    type: Literal["match"]
    where: list[Predicate] = []
    clear_when: list[Predicate] | None = None
    value_field: str | None = None  # the field shown as the alert's value; default: the first tested field


class Baseline(_Strict):
    """Value far from the rolling median of its group (`by`) over `window`: abnormal prices and volumes."""

    type: Literal["baseline"]
    field: str
    by: list[str] = ["market"]  # payload fields, or `market` / `device_id`
    window: Duration = timedelta(days=7)
    max_deviation: float = Field(gt=0)  # fraction of the median: 0.5 = more than 50 % away
    clear_deviation: float | None = Field(default=None, gt=0)
    direction: Literal["above", "below", "both"] = "both"
    min_samples: int = Field(default=20, ge=1)
    max_samples: int = Field(default=500, ge=10, le=10_000)


class Metrology(_Strict):
    """Scales whose verification is overdue or due within `within` (SJZ table 4); one alert per owner (stall)."""

    type: Literal["metrology"]
    state: Literal["overdue", "due_soon"] = "overdue"
    within: Duration = timedelta(days=30)
    unregistered: bool = True  # a scale with no verification record at all counts as overdue


class TelemetrySpool(_Strict):
    """The platform's own InfluxDB write spool (telemetry/spool.py), checked by the rules service every few seconds.

    `full`: the spool refuses writes (ingest is back-pressured: devices keep their data and retry); it clears
    once the spool drained below `clear_percent` (default 90) of its limit. `filling`: at `percent` (default 80)
    of the limit or more; clears below `clear_percent` (default `percent` − 10). One alert per spool and state.
    """

    type: Literal["telemetry_spool"]
    state: Literal["full", "filling"] = "filling"
    percent: float | None = Field(default=None, gt=0, le=100)
    clear_percent: float | None = Field(default=None, ge=0, lt=100)

    @model_validator(mode="after")
    def _levels(self) -> TelemetrySpool:
        if self.state == "full" and self.percent is not None:
            raise ValueError("percent: a 'full' spool is one that refuses writes; percent is for state 'filling'")
        if self.clear_percent is not None and self.clear_percent >= self.fire_percent:
            raise ValueError(f"clear_percent: must be below {self.fire_percent:g} (the level that opens the alert)")
        return self

    @property
    def fire_percent(self) -> float:
        return 100.0 if self.state == "full" else self.percent if self.percent is not None else 80.0

    @property
    def clear_below(self) -> float:
        if self.clear_percent is not None:
            return self.clear_percent
        return 90.0 if self.state == "full" else max(self.fire_percent - 10.0, 0.0)


Condition = Annotated[
    Threshold | Range | ChangeRate | Missing | Offline | Match | Baseline | Metrology | TelemetrySpool,
    Field(discriminator="type"),
]
CONDITION_TYPES = ("threshold", "range", "change_rate", "missing", "offline", "match", "baseline", "metrology",
                   "telemetry_spool")
# Conditions the rules service checks itself (scheduled or periodic), not fed by envelopes.
CHECKED_CONDITIONS = ("offline", "metrology", "telemetry_spool")
_PAYLOAD_CONDITIONS = {"threshold", "range", "change_rate", "match", "baseline"}


class EscalationStep(_Strict):
    """Still not acknowledged `after` the alert opened: raise the severity and/or tell more roles."""

    after: Duration
    severity: Severity | None = None
    notify_roles: list[RecipientRole] = []


class Scope(_Strict):
    kind: DeviceKind | None = None
    channel: Literal["telemetry", "event", "state"] = "telemetry"
    event_type: str | None = None
    markets: list[str] = []
    devices: list[str] = []
    labels: dict[str, str] = {}  # every label must match (device labels from the registry)


_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# Names every message template may use, besides the payload's own fields.
_BASE_PLACEHOLDERS = {"device_id", "market", "kind", "rule_id", "rule_name", "severity", "value", "element", "at",
                      "payload"}
_EXTRA_PLACEHOLDERS: dict[str, set[str]] = {
    "threshold": {"threshold"},
    "range": {"min", "max"},
    "change_rate": {"rate", "limit"},
    "missing": {"since", "minutes"},
    "offline": {"since", "minutes"},
    "match": set(),
    "baseline": {"baseline", "deviation_pct", "samples"},
    "metrology": {"owner", "holder", "stall", "count", "devices", "due_on"},
    "telemetry_spool": {"host", "directory", "fill_percent", "spool_bytes", "max_bytes", "batches", "refused",
                        "reason"},
}
_DEFAULT_MESSAGES = {
    "threshold": "{rule_name}: {device_id} {field} = {value} ({op} {threshold})",
    "range": "{rule_name}: {device_id} {field} = {value} (allowed {min}–{max})",
    "change_rate": "{rule_name}: {device_id} {field} changing at {rate} per {per} (limit {limit})",
    "missing": "{rule_name}: no data from {device_id} for {minutes} min",
    "offline": "{rule_name}: {device_id} offline since {since}",
    "match": "{rule_name}: {device_id}",
    "baseline": "{rule_name}: {device_id} {field} = {value}, {deviation_pct} % from the median {baseline}",
    "metrology": "{rule_name}: {owner}: {count} scale(s) ({devices}), due {due_on}",
    "telemetry_spool": "{rule_name}: {host} spool {directory} at {fill_percent} % of {max_bytes} bytes "
                       "({batches} batches waiting for InfluxDB)",
}


class Rule(_Strict):
    """One rule. `for` (an alias: `for` is a Python keyword) is the for-duration."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    enabled: bool = True
    category: Category = "device"
    severity: Severity = "warning"
    scope: Scope = Scope()
    condition: Condition
    for_: Duration = Field(default=timedelta(0), alias="for")
    clear_for: Duration = timedelta(0)
    resolve_after: Duration | None = None  # event alerts: resolve when no new occurrence for this long
    group_by: list[str] = []  # payload fields that split one device's alerts (fire zone, stall …)
    auto_resolve: bool | None = None  # default: yes, except for events without clear_when and baselines
    message: str = Field(default="", max_length=1000)
    actions: list[Literal["removal_task"]] = []
    escalation: list[EscalationStep] = []
    clauses: list[str] = []  # the standards' clauses the rule implements, for the archive

    @property
    def condition_type(self) -> str:
        return self.condition.type

    @property
    def resolves_automatically(self) -> bool:
        if self.auto_resolve is not None:
            return self.auto_resolve
        if self.scope.channel == "event" and self.condition.type in ("match", "baseline"):
            return isinstance(self.condition, Match) and self.condition.clear_when is not None
        return True

    @property
    def template(self) -> str:
        return self.message or _DEFAULT_MESSAGES[self.condition.type]

    @model_validator(mode="after")
    def _check_against_catalog(self) -> Rule:
        _check_rule(self)
        return self

    def dump(self) -> dict[str, Any]:
        """The rule as plain data, defaults left out: what a rule pack file holds."""
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data["condition"] = self.condition.model_dump(mode="json", exclude_defaults=True) | {
            "type": self.condition.type
        }
        return {"id": self.id, "name": self.name, **{k: v for k, v in data.items() if k not in ("id", "name")}}


# ---------------------------------------------------------------- checks against the catalog


def _check_rule(rule: Rule) -> None:
    cond, scope = rule.condition, rule.scope
    problems: list[str] = []
    kind = scope.kind
    channel = Channel(scope.channel)
    if scope.event_type is not None and scope.channel != "event":
        problems.append("scope.event_type: only for channel 'event'")
    if cond.type in _PAYLOAD_CONDITIONS and kind is None:
        problems.append(f"scope.kind: a {cond.type} condition reads payload fields, so the rule needs a kind")
    if isinstance(cond, Missing) and cond.field is not None and kind is None:
        problems.append("scope.kind: a missing condition with a field needs a kind")
    if isinstance(cond, Metrology) and kind not in (None, DeviceKind.SCALE):
        problems.append("scope.kind: metrology rules are about scales")
    if isinstance(cond, TelemetrySpool) and (kind is not None or scope.markets or scope.devices or scope.labels):
        problems.append("scope: a telemetry_spool rule watches the platform itself; leave its scope empty")
    if isinstance(cond, Missing) and cond.after <= timedelta(0):
        problems.append("condition.after: must be longer than 0s")
    if problems:
        raise ValueError("; ".join(problems))

    fields_seen: dict[str, FieldSpec] = {}

    def field(loc: str, path: str, numeric: bool = False) -> FieldSpec:
        if kind is None:
            raise ValueError(f"{loc}: field paths need scope.kind")
        try:
            spec = resolve_path(kind, channel, scope.event_type, path)
        except PathError as err:
            raise ValueError(f"{loc}: {err}") from None
        if numeric and spec.type != "number":
            raise ValueError(f"{loc}: field {path!r} is {spec.type}, not a number")
        fields_seen[loc] = spec
        return spec

    if kind is not None and cond.type not in CHECKED_CONDITIONS:
        try:
            models_for(kind, channel, scope.event_type)
        except PathError as err:
            raise ValueError(f"scope: {err}") from None
    if isinstance(cond, Threshold):
        field("condition.field", cond.field, numeric=True)
        if cond.clear is not None:
            above = cond.op in (">", ">=")
            if (above and cond.clear > cond.value) or (not above and cond.clear < cond.value):
                side = "at or below" if above else "at or above"
                raise ValueError(f"condition.clear: must be {side} the threshold {cond.value:g} for op "
                                 f"{cond.op!r}, got {cond.clear:g}")
    elif isinstance(cond, Range):
        field("condition.field", cond.field, numeric=True)
        if cond.min >= cond.max:
            raise ValueError(f"condition.min: must be below max ({cond.min:g} >= {cond.max:g})")
        if cond.mode == "outside" and cond.clear_margin * 2 >= cond.max - cond.min:
            raise ValueError("condition.clear_margin: the band must leave room inside min–max")
    elif isinstance(cond, ChangeRate):
        if field("condition.field", cond.field, numeric=True).array:
            raise ValueError(f"condition.field: a change_rate follows one value per device, not array elements "
                             f"({cond.field!r}); use a range or threshold on the elements")
        if cond.per <= timedelta(0):
            raise ValueError("condition.per: must be longer than 0s")
    elif isinstance(cond, Missing) and cond.field is not None:
        field("condition.field", cond.field)
    elif isinstance(cond, Baseline):
        spec = field("condition.field", cond.field, numeric=True)
        if spec.array:
            raise ValueError("condition.field: baselines work on scalar fields, not array elements")
        for n, name in enumerate(cond.by):
            if name not in ("market", "device_id"):
                if field(f"condition.by[{n}]", name).array:
                    raise ValueError(f"condition.by[{n}]: must be a scalar field")
        if cond.clear_deviation is not None and cond.clear_deviation > cond.max_deviation:
            raise ValueError("condition.clear_deviation: must not exceed max_deviation")
    elif isinstance(cond, Match):
        for label, predicates in (("where", cond.where), ("clear_when", cond.clear_when or [])):
            for n, pred in enumerate(predicates):
                _check_predicate(f"condition.{label}[{n}]", pred, field(f"condition.{label}[{n}].field", pred.field))
        if cond.value_field is not None:
            field("condition.value_field", cond.value_field)
        if cond.clear_when is not None and not cond.clear_when:
            raise ValueError("condition.clear_when: give at least one test, or leave it out")
    if scope.event_type is not None and kind is not None and scope.event_type not in event_types(kind):
        raise ValueError(f"scope.event_type: kind {kind.value} has no event type {scope.event_type!r}; known: "
                         f"{', '.join(event_types(kind))}")
    for n, name in enumerate(rule.group_by):
        if field(f"group_by[{n}]", name).array:
            raise ValueError(f"group_by[{n}]: array elements are keyed by themselves; group by scalar fields")
    arrays = {spec.array for spec in fields_seen.values() if spec.array}
    if len(arrays) > 1:
        raise ValueError(f"condition: one rule may walk one array, this one names {', '.join(sorted(arrays))}")
    if rule.actions and not (kind == DeviceKind.FOOD_DETECTOR and scope.event_type == "test_result"):
        raise ValueError("actions: removal_task needs scope kind food_detector, channel event, event_type "
                         "test_result")
    if rule.resolve_after is not None and rule.resolve_after <= timedelta(0):
        raise ValueError("resolve_after: must be longer than 0s")
    last = timedelta(0)
    for n, step in enumerate(rule.escalation):
        if step.after <= last:
            raise ValueError(f"escalation[{n}].after: steps must come in increasing time")
        last = step.after
    _check_template(rule, next(iter(arrays), None))


def _check_predicate(loc: str, pred: Predicate, spec: FieldSpec) -> None:
    if pred.op in ("exists", "missing"):
        return
    if pred.op in ("in", "not_in"):
        if not isinstance(pred.value, list) or not pred.value:
            raise ValueError(f"{loc}.value: op {pred.op!r} needs a non-empty list")
        values = pred.value
    else:
        values = [pred.value]
    if pred.op in _ORDER_OPS and spec.type != "number":
        raise ValueError(f"{loc}.op: {pred.op!r} compares numbers; field {pred.field!r} is {spec.type}")
    for value in values:
        if pred.op in _ORDER_OPS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{loc}.value: {value!r} is not a number")
        if spec.choices is not None and value is not None and value not in spec.choices:
            choices = ", ".join(repr(c) for c in spec.choices)
            raise ValueError(f"{loc}.value: {value!r} is not a value of {pred.field!r}; one of {choices}")


def _check_template(rule: Rule, array: str | None) -> None:
    allowed = _BASE_PLACEHOLDERS | _EXTRA_PLACEHOLDERS[rule.condition.type]
    cond = rule.condition
    if hasattr(cond, "field"):
        allowed |= {"field", "op"}
    if isinstance(cond, ChangeRate):
        allowed.add("per")
    kind = rule.scope.kind
    if kind is not None and cond.type not in CHECKED_CONDITIONS:
        names = field_names(kind, Channel(rule.scope.channel), rule.scope.event_type)
        for name in names:
            if "[]." in name:
                head, _, rest = name.partition("[].")
                allowed.add(head)
                if head == array:
                    allowed.add(rest.split(".")[0])
            else:
                allowed.add(name.split(".")[0])
    try:
        parsed = list(string.Formatter().parse(rule.template))
    except ValueError as err:
        raise ValueError(f"message: {err} (write a literal brace as '{{{{' or '}}}}')") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ValueError("message: placeholders need a name, e.g. {device_id} or {value}")
        if root not in allowed:
            raise ValueError(f"message: unknown placeholder {{{root}}}; known: {', '.join(sorted(allowed))}")


# ---------------------------------------------------------------- error text


def describe_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: `condition.field: field 'temp' does not exist …`, tags of unions left out."""
    lines = []
    for error in err.errors():
        loc = [str(p) for p in error.get("loc", ()) if str(p) not in CONDITION_TYPES and
               str(p) not in ("sse", "mqtt", "webhook", "email")]
        path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")
        kind, msg = error.get("type", ""), str(error.get("msg", "invalid"))
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "required field missing"
        elif kind == "union_tag_invalid":
            ctx = error.get("ctx", {})
            msg = f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        elif kind == "enum":
            msg = f"unknown value {error.get('input')!r}; expected {error.get('ctx', {}).get('expected')}"
        msg = msg.removeprefix("Value error, ")
        where = ".".join(p for p in (prefix, path) if p)
        if not path and kind == "value_error":  # a whole-rule check: the message names the field itself
            lines.append(f"{prefix}.{msg}" if prefix else msg)
        else:
            lines.append(f"{where}: {msg}" if where else msg)
    return lines
