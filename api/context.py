"""What the API needs from the running platform; built by `marketfleet/` and stored on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.service import Accounts
from fleet.registry import Registry


@dataclass
class ApiContext:
    registry: Registry
    accounts: Accounts
    admin_token: str
    max_bulk_devices: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    # (key_rate, key_burst, ip_rate, ip_burst) for api/ratelimit.py; None: no request limits
    rate_limits: tuple[float, float, float, float] | None = None
    # Optional services, present when the platform runs them (ingest pipeline, telemetry store …).
    services: dict[str, Any] = field(default_factory=dict)
