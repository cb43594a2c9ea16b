"""The standards' hardware parameters as data: the schema of `compliance/standards/*.yaml` and its loader.

Each YAML file is one standard (SZ, BJ, HZ, ZZ …); each item names the clause it encodes, the device kind it
applies to, the spec key a device model states the parameter under, and the requirement (min / max / equals /
one_of / includes / present). Files are validated once, at load; a bad file is a `StandardsInvalid` naming the
file and the offending item, so a typo in a clause never ships silently.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleet.kinds import DeviceKind

__all__ = [
    "STANDARDS_DIR",
    "IpCode",
    "Parameter",
    "Requirement",
    "Standard",
    "StandardItem",
    "StandardsInvalid",
    "known_kinds",
    "load_standard_file",
    "load_standards",
    "select_standards",
]

STANDARDS_DIR = Path(__file__).parent / "standards"


_KEY = r"^[a-z][a-z0-9_]*$"
_IP = re.compile(r"^IP([0-6X])([0-9X])K?$", re.IGNORECASE)


def known_kinds() -> tuple[str, ...]:
    """Every kind a standards item may name: the fleet catalog's kinds."""
    return tuple(k.value for k in DeviceKind)


class StandardsInvalid(ValueError):
    """A standards file does not match the schema; the message names the file and the item."""


class IpCode:
    """An IEC 60529 / GB/T 4208 protection code such as IP65; 'X' (not rated) compares below every digit."""

    __slots__ = ("solids", "text", "water")

    def __init__(self, text: str) -> None:
        match = _IP.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not an IP code: {text!r} (expected e.g. 'IP65')")
        self.text = text.strip().upper()
        self.solids = -1 if match.group(1).upper() == "X" else int(match.group(1))
        self.water = -1 if match.group(2).upper() == "X" else int(match.group(2))

    def at_least(self, other: IpCode) -> bool:
        """Both digits at least the other's: IP54 is not 'at least IP45' (its water digit is lower)."""
        return self.solids >= other.solids and self.water >= other.water

    def __str__(self) -> str:
        return self.text


class Parameter(BaseModel):
    """What is measured: the spec key a model states it under, and its name in English and in the standard."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=_KEY)
    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)


class Requirement(BaseModel):
    """Exactly one family of test: a range (min and/or max), equals, one_of, includes, or present.

    - `min`/`max`: numbers (inclusive unless `*_exclusive`), or IP codes when `unit` is "IP" (min only).
    - `equals`: the stated value must be exactly this (a bool is never taken for a number).
    - `one_of`: a string value must be one of these; a list value must contain at least one of them.
    - `includes`: a list value must contain all of these.
    - `present`: the value must be stated (non-empty, not false), e.g. a certificate number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | str | None = None
    max: float | str | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    equals: bool | int | float | str | None = None
    one_of: tuple[str, ...] | None = Field(default=None, min_length=1)
    includes: tuple[str, ...] | None = Field(default=None, min_length=1)
    present: Literal[True] | None = None
    unit: str | None = None

    @model_validator(mode="after")
    def _one_family(self) -> Requirement:
        families = [
            name
            for name, used in (
                ("range", self.min is not None or self.max is not None),
                ("equals", "equals" in self.model_fields_set),
                ("one_of", self.one_of is not None),
                ("includes", self.includes is not None),
                ("present", self.present is not None),
            )
            if used
        ]
        if len(families) != 1:
            raise ValueError(
                f"a requirement needs exactly one of min/max, equals, one_of, includes, present; got {families}"
            )
        if self.unit == "IP":
            if self.max is not None or not isinstance(self.min, str):
                raise ValueError("an IP requirement states only `min`, as a code such as 'IP65'")
            IpCode(self.min)
        else:
            for bound in (self.min, self.max):
                if isinstance(bound, str):
                    raise ValueError(f"bound {bound!r} must be a number (strings only for unit: IP)")
            if self.min is not None and self.max is not None and float(self.min) > float(self.max):
                raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @property
    def family(self) -> str:
        if self.min is not None or self.max is not None:
            return "ip" if self.unit == "IP" else "range"
        if "equals" in self.model_fields_set:
            return "equals"
        if self.one_of is not None:
            return "one_of"
        if self.includes is not None:
            return "includes"
        return "present"

    def describe(self) -> str:
        """The requirement as a person reads it: '≥ 10 h', '18–55 inch', 'one of: vga, hdmi'."""
        unit = f" {self.unit}" if self.unit and self.unit != "IP" else ""
        match self.family:
            case "ip":
                return f"≥ {self.min} (each digit)"
            case "range":
                low = f"{'>' if self.min_exclusive else '≥'} {_num(self.min)}{unit}" if self.min is not None else ""
                high = f"{'<' if self.max_exclusive else '≤'} {_num(self.max)}{unit}" if self.max is not None else ""
                if low and high and not self.min_exclusive and not self.max_exclusive:
                    return f"{_num(self.min)}–{_num(self.max)}{unit}"
                return " and ".join(p for p in (low, high) if p)
            case "equals":
                return f"= {_literal(self.equals)}"
            case "one_of":
                return f"one of: {', '.join(self.one_of or ())}"
            case "includes":
                return f"includes all of: {', '.join(self.includes or ())}"
        return "stated"


def _num(value: float | str | None) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class StandardItem(BaseModel):
    """One checkable hardware parameter of one clause."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=80)
    clause: str = Field(pattern=r"^(SZ|BJ|HZ|ZZ|SJZ) \S.*$", description="e.g. 'SZ 6.4.2 c'")
    kind: str
    level: Literal["required", "recommended"] = "required"  # 应 / 宜 (or 不宜小于)
    parameter: Parameter
    requirement: Requirement
    when: dict[str, tuple[str, ...]] | None = Field(
        default=None, description="applies only when each of these spec keys has one of the listed values"
    )
    wording: str = Field(min_length=1, description="the clause's own words, as in the seed")
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _when_as_tuples(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("when"), dict):
            data = {**data, "when": {k: (v,) if isinstance(v, str) else v for k, v in data["when"].items()}}
        return data

    @model_validator(mode="after")
    def _known_kind(self) -> StandardItem:
        if self.kind not in known_kinds():
            raise ValueError(f"kind {self.kind!r} is unknown; known kinds: {', '.join(known_kinds())}")
        return self

    @property
    def standard(self) -> str:
        return self.clause.split(" ", 1)[0]


class Standard(BaseModel):
    """One standard's file: what it is, where its text is, and its checkable items."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: Literal["SZ", "BJ", "HZ", "ZZ", "SJZ"]
    designation: str = Field(min_length=1)  # e.g. "DB4403/T 228—2022"
    title: str = Field(min_length=1)
    title_en: str = Field(min_length=1)
    status: Literal["published", "draft", "scoring rules"]
    seed: str = Field(min_length=1, description="file under shared/seeds holding the text")
    items: tuple[StandardItem, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _items_belong(self) -> Standard:
        seen: set[str] = set()
        for item in self.items:
            if item.standard != self.code:
                raise ValueError(f"item {item.id}: clause {item.clause!r} does not start with {self.code!r}")
            if item.id in seen:
                raise ValueError(f"item id {item.id!r} repeats")
            seen.add(item.id)
        return self


def load_standard_file(path: Path) -> Standard:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Standard.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = _locate(data, first.get("loc", ()))
        raise StandardsInvalid(f"{path.name}: {where}{first.get('msg')} ({len(err.errors())} problem(s))") from err
    except yaml.YAMLError as err:
        raise StandardsInvalid(f"{path.name}: not valid YAML: {err}") from err


def _locate(data: Any, loc: Sequence[Any]) -> str:
    """'items[3] (sz-tablet-standby).requirement: ' for an error inside an item."""
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        try:
            item_id = data["items"][loc[1]].get("id", "?")
        except (KeyError, IndexError, TypeError, AttributeError):
            item_id = "?"
        rest = ".".join(str(p) for p in loc[2:])
        return f"items[{loc[1]}] ({item_id}){'.' + rest if rest else ''}: "
    return ".".join(str(p) for p in loc) + ": " if loc else ""


@functools.cache
def load_standards(directory: Path = STANDARDS_DIR) -> tuple[Standard, ...]:
    """Every standard under `directory`, ordered by code; item ids are unique across all of them."""
    standards = tuple(sorted((load_standard_file(p) for p in sorted(directory.glob("*.yaml"))), key=lambda s: s.code))
    ids: dict[str, str] = {}
    for standard in standards:
        for item in standard.items:
            if item.id in ids:
                raise StandardsInvalid(f"item id {item.id!r} appears in both {ids[item.id]} and {standard.code}")
            ids[item.id] = standard.code
    return standards


def select_standards(codes: Iterable[str] | None, standards: Sequence[Standard] | None = None) -> tuple[Standard, ...]:
    """The loaded standards with these codes (all when None or empty); ValueError names an unknown code."""
    available = tuple(standards) if standards is not None else load_standards()
    wanted = [c.strip().upper() for c in codes or () if c.strip()]
    if not wanted:
        return available
    by_code = {s.code: s for s in available}
    unknown = [c for c in wanted if c not in by_code]
    if unknown:
        raise ValueError(f"unknown standard(s) {', '.join(unknown)}; known: {', '.join(by_code)}")
    return tuple(by_code[c] for c in dict.fromkeys(wanted))
