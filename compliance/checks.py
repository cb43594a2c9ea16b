"""Checking a device model's specs against the standards' hardware parameters.

`check_model(kind, specs)` is pure: it reads the loaded standards and the specs dict, nothing else. A spec key
that is not stated is reported as *missing*, never as passed or silently skipped; a value of the wrong type
(text where a number is asked) is *invalid*, listed with the failures.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from compliance.requirements import (
    IpCode,
    Requirement,
    Standard,
    StandardItem,
    known_kinds,
    load_standards,
)
from compliance.schemas import ConformanceReport, ItemResult, ItemStatus, SpecKey, SpecKeys

__all__ = ["check_model", "evaluate_item", "items_for", "spec_keys_for"]


def items_for(kind: str, standards: Sequence[Standard] | None = None) -> list[StandardItem]:
    """Every item of these standards (all loaded ones by default) that applies to `kind`."""
    chosen = load_standards() if standards is None else standards
    return [item for standard in chosen for item in standard.items if item.kind == kind]


def check_model(
    kind: str, specs: Mapping[str, Any], standards: Sequence[Standard] | None = None
) -> ConformanceReport:
    """Check `specs` against every item for `kind`; ValueError for a kind no standard or fleet knows."""
    if kind not in known_kinds():
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(known_kinds())}")
    chosen = tuple(load_standards() if standards is None else standards)
    items = items_for(kind, chosen)
    results = [evaluate_item(item, specs) for item in items]
    failed = [r for r in results if r.level == "required" and r.status in ("failed", "invalid")]
    missing = [r for r in results if r.level == "required" and r.status == "missing"]
    advisories = [r for r in results if r.level == "recommended" and r.status in ("failed", "invalid", "missing")]
    return ConformanceReport(
        kind=kind,
        standards=[s.code for s in chosen],
        conforming=not failed and not missing,
        checked=sum(r.status != "not_applicable" for r in results),
        failed=failed,
        missing=missing,
        advisories=advisories,
        passed=[r for r in results if r.status == "passed"],
        not_applicable=[r.item for r in results if r.status == "not_applicable"],
        unrecognised_keys=_unrecognised(specs, items),
    )


def evaluate_item(item: StandardItem, specs: Mapping[str, Any]) -> ItemResult:
    """One item against the specs: passed, failed, invalid, missing or not_applicable."""
    requirement = item.requirement

    def result(status: ItemStatus, given: Any = None, message: str = "", key: str | None = None) -> ItemResult:
        return ItemResult(
            item=item.id,
            standard=item.standard,
            clause=item.clause,
            level=item.level,
            key=key or item.parameter.key,
            parameter=item.parameter.en,
            parameter_zh=item.parameter.zh,
            status=status,
            expected=requirement.describe(),
            given=given,
            message=message,
        )

    for condition_key, allowed in (item.when or {}).items():
        value = specs.get(condition_key)
        if _unstated(value):
            return result(
                "missing",
                message=f"state {condition_key!r} ({' | '.join(allowed)}) so that {item.clause} can be applied",
                key=condition_key,
            )
        if str(value).strip().lower() not in allowed:
            return result("not_applicable", given=value, key=condition_key)

    key = item.parameter.key
    value = specs.get(key)
    if _unstated(value):
        return result("missing", message=f"{key!r} is not stated; {item.clause} asks {requirement.describe()}")
    status, message = _test(requirement, value)
    if status == "failed" and not message:
        message = f"{item.clause}: {item.parameter.en} must be {requirement.describe()}, model states {_shown(value)}"
    return result(status, given=value, message=message)


def _unstated(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | dict) and len(value) == 0)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _words(value: Any) -> list[str] | None:
    """A text or a list of texts, lower-cased; None when it is neither."""
    if isinstance(value, str):
        return [value.strip().lower()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [v.strip().lower() for v in value]
    return None


def _test(requirement: Requirement, value: Any) -> tuple[ItemStatus, str]:
    match requirement.family:
        case "ip":
            try:
                given = IpCode(value)
            except ValueError as err:
                return "invalid", str(err)
            return ("passed", "") if given.at_least(IpCode(str(requirement.min))) else ("failed", "")
        case "range":
            if not _is_number(value):
                unit = f" in {requirement.unit}" if requirement.unit else ""
                return "invalid", f"expected a number{unit}, got {value!r}"
            low, high = requirement.min, requirement.max
            if low is not None and (value <= float(low) if requirement.min_exclusive else value < float(low)):
                return "failed", ""
            if high is not None and (value >= float(high) if requirement.max_exclusive else value > float(high)):
                return "failed", ""
            return "passed", ""
        case "equals":
            expected = requirement.equals
            if isinstance(expected, bool) != isinstance(value, bool):
                wanted = "true or false" if isinstance(expected, bool) else repr(expected)
                return "invalid", f"expected {wanted}, got {value!r}"
            if isinstance(expected, str) and isinstance(value, str):
                return ("passed", "") if value.strip().lower() == expected.lower() else ("failed", "")
            return ("passed", "") if value == expected else ("failed", "")
        case "one_of" | "includes":
            words = _words(value)
            if words is None:
                return "invalid", f"expected a text or a list of texts, got {value!r}"
            allowed = [w.lower() for w in (requirement.one_of or requirement.includes or ())]
            if requirement.family == "one_of":
                return ("passed", "") if any(w in allowed for w in words) else ("failed", "")
            lacking = [w for w in allowed if w not in words]
            return ("passed", "") if not lacking else ("failed", f"lacks {', '.join(lacking)}")
    # present
    return ("failed", "stated as false") if value is False else ("passed", "")


def _unrecognised(specs: Mapping[str, Any], items: Iterable[StandardItem]) -> dict[str, list[str]]:
    known = {i.parameter.key for i in items} | {k for i in items for k in (i.when or {})}
    return {
        key: difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        for key in specs
        if key not in known
    }


# ---------------------------------------------------------------- spec keys, derived from the items


def spec_keys_for(kind: str, standards: Sequence[Standard] | None = None) -> SpecKeys:
    """The spec keys a model of `kind` should state, with type, unit, accepted values and the clauses."""
    if kind not in known_kinds():
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(known_kinds())}")
    items = items_for(kind, standards)
    keys: dict[str, SpecKey] = {}
    for item in items:
        for condition_key, allowed in (item.when or {}).items():
            entry = keys.setdefault(
                condition_key,
                SpecKey(
                    key=condition_key, type="one of the given values", values=[], condition=True,
                    description=f"selects which clauses apply ({condition_key})", description_zh="适用条件",
                    items=[], clauses=[],
                ),
            )
            entry.values = sorted({*(entry.values or []), *allowed})
            _attach(entry, item)
        requirement = item.requirement
        key = item.parameter.key
        entry = keys.get(key)
        if entry is None:
            entry = keys[key] = SpecKey(
                key=key, type=_type_of(requirement), unit=None if requirement.unit == "IP" else requirement.unit,
                values=None, description=item.parameter.en, description_zh=item.parameter.zh, items=[], clauses=[],
            )
        accepted = list(requirement.one_of or requirement.includes or ())
        if accepted:
            entry.values = sorted({*(entry.values or []), *accepted})
        if isinstance(requirement.equals, str):
            entry.values = sorted({*(entry.values or []), requirement.equals})
        _attach(entry, item)
    return SpecKeys(kind=kind, keys=list(keys.values()))


def _attach(entry: SpecKey, item: StandardItem) -> None:
    entry.items.append(item.id)
    if item.clause not in entry.clauses:
        entry.clauses.append(item.clause)


def _type_of(requirement: Requirement) -> str:
    match requirement.family:
        case "ip":
            return "IP code (e.g. IP65)"
        case "range":
            return "number"
        case "equals":
            return "true/false" if isinstance(requirement.equals, bool) else "text"
        case "one_of":
            return "text or list of text"
        case "includes":
            return "list of text"
    return "text (e.g. a certificate number)"
