"""Public, unauthenticated facts: health and the device-kind catalog with its JSON schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from tortoise import Tortoise

from fleet.errors import NotFound
from fleet.kinds import CATALOG, Channel, spec_for

router = APIRouter(tags=["catalog"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    conn = Tortoise.get_connection("default")
    await conn.execute_query("SELECT 1")
    return {"status": "ok", "registry": "ok"}


@router.get("/api/v1/kinds")
async def list_kinds() -> list[dict[str, Any]]:
    return [
        {"kind": s.kind.value, "title": s.title, "title_zh": s.title_zh, "transports": s.transports,
         "clauses": s.clauses}
        for s in CATALOG.values()
    ]


@router.get("/api/v1/kinds/{kind}")
async def kind_schema(kind: str) -> dict[str, Any]:
    """JSON Schemas a vendor's firmware must follow for each channel and for commands."""
    try:
        spec = spec_for(kind)
    except KeyError as err:
        raise NotFound(str(err.args[0])) from err
    schemas: dict[str, Any] = {}
    for channel in (Channel.TELEMETRY, Channel.EVENT, Channel.STATE, "command"):
        try:
            schemas[str(channel)] = spec.adapter(channel).json_schema()
        except KeyError:
            continue
    return {"kind": spec.kind.value, "title": spec.title, "title_zh": spec.title_zh, "schemas": schemas}
