"""Answers for EMQX's HTTP authentication and authorisation hooks (external mode with EMQX; docs/broker.md).

The same rules as the embedded broker's plugins and the Mosquitto roles: a device logs in with client id =
username = its id and its current secret, publishes only under its own `up/` and subscribes only to its own
`down/`; the platform's service account may do anything. EMQX calls `POST /api/v1/broker/emqx/authenticate`
and `…/authorize` (api/routes/broker_admin.py) and reads `{"result": "allow" | "deny"}`.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Literal

from broker import topics

if TYPE_CHECKING:
    from fleet.registry import Registry

__all__ = ["authenticate", "authorize"]

Result = Literal["allow", "deny"]


def _is_service(username: str, service_username: str) -> bool:
    return bool(service_username) and hmac.compare_digest(username.encode(), service_username.encode())


async def authenticate(
    registry: Registry, username: str, password: str, clientid: str, *, service_username: str = "",
    service_password: str = "",
) -> tuple[Result, bool]:
    """(result, is_superuser) for a CONNECT."""
    if _is_service(username, service_username):
        ok = bool(service_password) and hmac.compare_digest(password.encode(), service_password.encode())
        return ("allow", True) if ok else ("deny", False)
    if not username or clientid != username:
        return "deny", False
    device = await registry.check_device_secret(username, password)
    return ("allow", False) if device is not None else ("deny", False)


def authorize(username: str, topic: str, action: str, *, service_username: str = "") -> Result:
    """A PUBLISH (`action` publish) or SUBSCRIBE (`action` subscribe) of `username` on `topic`."""
    if _is_service(username, service_username):
        return "allow"
    if action == "publish":
        parsed = topics.parse(topic)
        ok = parsed is not None and parsed.direction == "up" and parsed.device_id == username
        return "allow" if ok else "deny"
    if action == "subscribe":
        return "allow" if topics.device_may_subscribe(username, topic) else "deny"
    return "deny"
