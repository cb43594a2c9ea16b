"""Audit middleware: every state-changing call is written to the append-only audit log.

Who (the principal the auth dependency resolved), what (method and path, and the request body with secrets
redacted as `after`), when, from where, and the outcome (status). Routes that change an existing object call
`audit_before(request, obj)` with the object as it was, which the entry keeps as `before` (secrets redacted).
Sign-ins are written by the login route itself; device uplinks (`/api/v1/ingest/…`) are telemetry, not
operations, and are not audited here.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accounts.service import audit

log = logging.getLogger(__name__)
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
NOT_AUDITED_PREFIXES = ("/api/v1/ingest/", "/api/v1/auth/login", "/login")
SECRET_WORDS = ("password", "secret", "token", "api_key", "key")
MAX_BODY = 4096


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if any(w in k.lower() for w in SECRET_WORDS) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value[:20]] + (["…"] if len(value) > 20 else [])
    return value


def audit_before(request: Request, state: Any) -> None:
    """Keep the object's state before this call's change for the audit entry (a pydantic model or plain data)."""
    data = state.model_dump(mode="json") if isinstance(state, BaseModel) else jsonable_encoder(state)
    request.state.audit_before = redact(data)


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in STATE_CHANGING
            or scope["path"].startswith(NOT_AUDITED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        status = 500

        async def capture_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_BODY:
                body.extend(message.get("body", b"")[: MAX_BODY - len(body)])
            return message

        async def capture_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, capture_receive, capture_send)
        finally:
            await self._record(scope, bytes(body), status)

    async def _record(self, scope: Scope, body: bytes, status: int) -> None:
        state = scope.get("state", {})
        principal = state.get("principal")
        try:
            after: Any = redact(json.loads(body)) if body else None
        except (ValueError, UnicodeDecodeError):
            after = {"body": f"{len(body)} bytes, not JSON"}
        client = scope.get("client") or ("", 0)
        try:
            await audit(principal, f"{scope['method']} {scope['path']}", target=scope["path"], status=status,
                        ip=str(client[0]), before=state.get("audit_before"), after=after)
        except Exception:  # the audit log must never turn a done change into an error answer
            log.exception("could not write audit entry for %s %s", scope["method"], scope["path"])
