"""What each role may do. One table, read by every endpoint through `api.auth.require(permission)`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from accounts.models import Role


class Permission(StrEnum):
    FLEET_READ = "fleet:read"
    FLEET_WRITE = "fleet:write"  # devices, markets, stalls, metrology, credentials of any vendor
    PLATFORM_ADMIN = "platform:admin"  # markets, vendors, people
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"  # acknowledge, resolve, assign, close removal tasks
    RULES_WRITE = "rules:write"
    FIRMWARE_WRITE = "firmware:write"  # campaigns
    REPORTS_READ = "reports:read"
    AUDIT_READ = "audit:read"
    VENDOR_SELF = "vendor:self"  # the vendor registration API, on the vendor's own devices only
    PRICES_WRITE = "prices:write"  # products, prices, timed changes, shelf-label binding and LED (docs/retail.md)
    CALIBRATION_GRANT = "calibration:grant"  # authorise one scale's calibration (SZ 6.2.7)


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission) - {Permission.VENDOR_SELF},
    Role.MAINTAINER: frozenset(
        {
            Permission.FLEET_READ,
            Permission.FLEET_WRITE,
            Permission.ALERTS_READ,
            Permission.ALERTS_WRITE,
            Permission.FIRMWARE_WRITE,
            Permission.REPORTS_READ,
            Permission.PRICES_WRITE,
            Permission.CALIBRATION_GRANT,
        }
    ),
    Role.MANAGER: frozenset(
        {Permission.FLEET_READ, Permission.ALERTS_READ, Permission.ALERTS_WRITE, Permission.REPORTS_READ,
         Permission.PRICES_WRITE}
    ),
    Role.VENDOR: frozenset({Permission.VENDOR_SELF}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling, resolved once per request."""

    actor: str  # for the audit log: "user:alice", "vendor:acme", "admin-token"
    role: Role
    markets: frozenset[str] | None = None  # None: every market
    vendor_id: int | None = None
    user_id: int | None = None

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def sees_market(self, market: str | None) -> bool:
        return self.markets is None or (market is not None and market in self.markets)
