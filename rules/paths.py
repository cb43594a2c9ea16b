"""Field paths in rules (`temperature_c`, `compartments[].temperature_c`) checked against the kind catalog.

A rule names payload fields as paths; this module resolves a path against the payload schema that
`fleet.kinds` declares for the rule's kind and channel (and event type), so a rule that names a field the
device never sends is refused when it is written, not silently never fires. It also compiles a path into a
getter over the raw payload dict the engine sees (JSON values: a Decimal may arrive as a number or a string).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from fleet.kinds import CATALOG, Channel, DeviceKind

__all__ = [
    "MISSING",
    "FieldSpec",
    "PathError",
    "compile_getter",
    "event_types",
    "field_names",
    "resolve_path",
    "to_number",
]

FieldType = Literal["number", "bool", "string", "datetime", "object", "list"]


class PathError(ValueError):
    """A path that does not exist in the schema; the message lists what does."""


@dataclass(frozen=True)
class FieldSpec:
    path: str
    type: FieldType
    choices: tuple[Any, ...] | None = None  # the allowed values of a Literal field
    array: str | None = None  # "compartments" when the path runs through a list of objects
    rest: str | None = None  # the part after "[]." (the element's own path)
    element_key: str | None = None  # the element field that names it ("compartment"), else the index
    default: Any = None  # the schema's default, what an omitted field means (MISSING when it has none)


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
    return annotation


def _variants(schema: Any) -> list[type[BaseModel]]:
    """The payload models a channel's schema allows (one, or the members of a discriminated union)."""
    if schema is None:
        return []
    schema = _strip_optional(schema)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return [schema]
    if typing.get_origin(schema) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(schema) for m in _variants(a)]
    return []


def _event_type_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    return field.default if field is not None and isinstance(field.default, str) else None


def _schema(kind: DeviceKind, channel: Channel) -> Any:
    spec = CATALOG[kind]
    return {Channel.TELEMETRY: spec.telemetry, Channel.EVENT: spec.event, Channel.STATE: spec.state}.get(channel)


def channels_of(kind: DeviceKind) -> list[str]:
    return [c.value for c in (Channel.TELEMETRY, Channel.EVENT, Channel.STATE) if _schema(kind, c) is not None]


def event_types(kind: DeviceKind) -> list[str]:
    return [t for m in _variants(_schema(kind, Channel.EVENT)) if (t := _event_type_of(m))]


def models_for(kind: DeviceKind, channel: Channel, event_type: str | None = None) -> list[type[BaseModel]]:
    """The payload models a rule scoped so may see; raises PathError when the channel or type is unknown."""
    schema = _schema(kind, channel)
    if schema is None:
        raise PathError(f"kind {kind.value} has no {channel.value} channel; it reports on: "
                        f"{', '.join(channels_of(kind))}")
    variants = _variants(schema)
    if event_type is not None:
        variants = [m for m in variants if _event_type_of(m) == event_type]
        if not variants:
            raise PathError(f"kind {kind.value} has no event type {event_type!r}; known: "
                            f"{', '.join(event_types(kind))}")
    return variants


def _classify(annotation: Any) -> tuple[FieldType, tuple[Any, ...] | None, type[BaseModel] | None]:
    """(type, choices, element/child model) of one annotation."""
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if all(isinstance(c, bool) for c in choices):
            return "bool", choices, None
        return "string", choices, None
    if annotation is bool:
        return "bool", None, None
    if annotation in (int, float, Decimal):
        return "number", None, None
    if annotation in (datetime, date):
        return "datetime", None, None
    if annotation is str:
        return "string", None, None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object", None, annotation
    if origin in (list, tuple):
        args = [_strip_optional(a) for a in typing.get_args(annotation)]
        if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return "list", None, args[0]
        return "list", None, None
    return "object", None, None


def _names(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        ftype, _, child = _classify(field.annotation)
        if ftype == "object" and child is not None:
            out += _names(child, f"{prefix}{name}.")
        elif ftype == "list" and child is not None:
            out += _names(child, f"{prefix}{name}[].")
        else:
            out.append(prefix + name)
    return out


def field_names(kind: DeviceKind, channel: Channel, event_type: str | None = None) -> list[str]:
    """Every addressable path of the scope's payloads, in schema order, without duplicates."""
    seen: dict[str, None] = {}
    for model in models_for(kind, channel, event_type):
        for name in _names(model):
            seen.setdefault(name, None)
    return list(seen)


def _default_of(field: Any) -> Any:
    """A payload leaves out fields at their default (ingest keeps the raw payload): rules read the default."""
    default = field.default
    if field.is_required() or field.default_factory is not None or default is None:
        return MISSING
    if isinstance(default, Decimal):
        return float(default)
    return default


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


def _resolve_in(model: type[BaseModel], parts: list[str], path: str, array: str | None) -> FieldSpec | None:
    head, *tail = parts
    is_array = head.endswith("[]")
    name = head[:-2] if is_array else head
    field = model.model_fields.get(name)
    if field is None:
        return None
    ftype, choices, child = _classify(field.annotation)
    if is_array:
        if ftype != "list" or child is None or array is not None or not tail:
            return None
        key = _singular(name) if _singular(name) in child.model_fields else None
        inner = _resolve_in(child, tail, path, name)
        if inner is None:
            return None
        return FieldSpec(path, inner.type, inner.choices, name, ".".join(tail), key, inner.default)
    if not tail:
        if ftype == "list" and child is not None:
            return None  # a list of objects is addressed element-wise: name[].field
        return FieldSpec(path, ftype, choices, default=_default_of(field))
    if ftype != "object" or child is None:
        return None
    return _resolve_in(child, tail, path, array)


def resolve_path(kind: DeviceKind, channel: Channel, event_type: str | None, path: str) -> FieldSpec:
    """The field a path names in the scope's payload schema; PathError lists the known paths otherwise."""
    parts = path.split(".")
    if not path or any(not p or p == "[]" for p in parts):
        raise PathError(f"field path {path!r} is malformed; write e.g. 'temperature_c' or "
                        "'compartments[].temperature_c'")
    for model in models_for(kind, channel, event_type):
        found = _resolve_in(model, parts, path, None)
        if found is not None:
            return found
    where = f"{kind.value} {channel.value}" + (f" ({event_type})" if event_type else "")
    raise PathError(f"field {path!r} does not exist in {where} payloads; known fields: "
                    f"{', '.join(field_names(kind, channel, event_type))}")


def to_number(value: Any) -> float | None:
    """A payload value as a number (Decimals arrive as numbers or strings); None when it is not one."""
    kind = type(value)
    if kind is float or kind is int:
        return value  # type: ignore[no-any-return]
    if value is None or kind is bool:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def compile_getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """A getter for a dotted path inside one dict (a payload, or one element of an array); MISSING if absent."""
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]

        def get_one(data: dict[str, Any]) -> Any:
            return data.get(key, MISSING)

        return get_one

    def get_nested(data: dict[str, Any]) -> Any:
        value: Any = data
        for part in parts:
            if not isinstance(value, dict):
                return MISSING
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        return value

    return get_nested
