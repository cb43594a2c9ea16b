"""Accounts: create people, check passwords (argon2id), throttle guessing, issue and resolve sessions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from accounts.models import AuditEntry, Role, Session, User
from accounts.permissions import Principal
from fleet.errors import Conflict, InvalidRequest, NotFound, Unauthorised
from fleet.models import Market, Vendor

SESSION_PREFIX = "mfs_"
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=5)
SESSION_TTL = timedelta(hours=12)
_hasher = PasswordHasher()
# Verifying against this keeps an unknown username as slow as a wrong password (no user enumeration).
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    username: str = Field(pattern=r"^[a-zA-Z0-9_.@-]{2,64}$")
    password: str = Field(min_length=10, max_length=200)
    role: Role
    display_name: str = Field(default="", max_length=100)
    email: str = Field(default="", max_length=200)
    markets: list[str] = Field(default_factory=list)
    vendor: str | None = Field(default=None, description="vendor code; required for the vendor role")
    language: str = Field(default="zh", pattern=r"^(zh|en)$")

    @model_validator(mode="after")
    def _vendor_role_needs_vendor(self) -> UserCreate:
        if (self.role == Role.VENDOR) != (self.vendor is not None):
            raise ValueError("vendor: required for role 'vendor' and only for it")
        return self


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    display_name: str
    email: str
    role: Role
    markets: list[str]
    vendor_id: int | None
    language: str
    active: bool
    created_at: datetime


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_for(user: User) -> Principal:
    return Principal(
        actor=f"user:{user.username}",
        role=user.role,
        markets=frozenset(user.markets) if user.markets else None,
        vendor_id=user.vendor_id,  # type: ignore[attr-defined]
        user_id=user.id,
    )


@dataclass
class Accounts:
    # Per-address failed-login counts: slows a guesser spreading attempts over many usernames.
    _ip_failures: dict[str, list[datetime]] = field(default_factory=dict)

    async def create_user(self, data: UserCreate) -> User:
        if await User.exists(username=data.username):
            raise Conflict(f"username {data.username!r} is taken")
        unknown = set(data.markets) - set(await Market.filter(code__in=data.markets).values_list("code", flat=True))
        if unknown:
            raise InvalidRequest(f"markets: unknown market(s) {', '.join(sorted(unknown))}")
        vendor = None
        if data.vendor:
            vendor = await Vendor.get_or_none(code=data.vendor)
            if vendor is None:
                raise InvalidRequest(f"vendor: unknown vendor {data.vendor!r}")
        fields = data.model_dump(exclude={"password", "vendor"})
        return await User.create(**fields, vendor=vendor, password_hash=_hasher.hash(data.password))

    async def ensure_bootstrap_admin(self, password: str) -> None:
        """The first start creates `admin`, whose password is the admin token, so someone can sign in."""
        if not await User.exists():
            await User.create(username="admin", display_name="Administrator", role=Role.ADMIN,
                              password_hash=_hasher.hash(password))

    async def login(self, username: str, password: str, ip: str = "") -> tuple[str, User]:
        """A new session token for valid credentials; every outcome is written to the audit log."""
        now = datetime.now(UTC)
        recent = [t for t in self._ip_failures.get(ip, []) if now - t < LOCKOUT]
        self._ip_failures[ip] = recent
        if len(recent) >= MAX_FAILED_LOGINS * 4:
            await self._audit_login(username, ip, "login_throttled", 429)
            raise Unauthorised("too many failed sign-ins from this address; wait a few minutes")
        user = await User.get_or_none(username=username)
        if user is not None and user.locked_until and user.locked_until > now:
            await self._audit_login(username, ip, "login_locked", 401)
            raise Unauthorised("account locked after repeated failed sign-ins; try again in a few minutes")
        if not self._password_ok(user, password) or user is None or not user.active:
            recent.append(now)
            if user is not None:
                user.failed_logins += 1
                if user.failed_logins >= MAX_FAILED_LOGINS:
                    user.locked_until, user.failed_logins = now + LOCKOUT, 0
                await user.save(update_fields=["failed_logins", "locked_until"])
            await self._audit_login(username, ip, "login_failed", 401)
            raise Unauthorised("wrong username or password")
        user.failed_logins, user.locked_until = 0, None
        await user.save(update_fields=["failed_logins", "locked_until"])
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        await Session.create(user=user, token_hash=_token_hash(token), expires_at=now + SESSION_TTL, ip=ip)
        await self._audit_login(username, ip, "login", 200, role=user.role)
        return token, user

    @staticmethod
    def _password_ok(user: User | None, password: str) -> bool:
        try:
            return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _audit_login(self, username: str, ip: str, action: str, status: int, role: str = "") -> None:
        await AuditEntry.create(actor=f"user:{username}", role=role, action=action, status=status, ip=ip)

    async def principal_for_token(self, token: str) -> Principal | None:
        if not token.startswith(SESSION_PREFIX):
            return None
        session = await Session.get_or_none(token_hash=_token_hash(token)).prefetch_related("user")
        if session is None or session.expires_at <= datetime.now(UTC) or not session.user.active:
            return None
        return principal_for(session.user)

    async def logout(self, token: str) -> None:
        await Session.filter(token_hash=_token_hash(token)).delete()

    async def list_users(self) -> list[User]:
        return await User.all().order_by("username")

    async def set_active(self, username: str, active: bool) -> User:
        user = await User.get_or_none(username=username)
        if user is None:
            raise NotFound(f"user {username!r} not found")
        user.active = active
        await user.save(update_fields=["active"])
        if not active:
            await Session.filter(user=user).delete()
        return user


async def audit(principal: Principal | None, action: str, *, target: str = "", status: int = 200,
                ip: str = "", before: Any = None, after: Any = None) -> None:
    await AuditEntry.create(
        actor=principal.actor if principal else "anonymous",
        role=principal.role.value if principal else "",
        action=action[:100],
        target=target[:200],
        status=status,
        ip=ip,
        before=before,
        after=after,
    )
