"""Accounts, sessions and the append-only audit log."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class Role(StrEnum):
    ADMIN = "admin"
    MAINTAINER = "maintainer"
    MANAGER = "manager"
    VENDOR = "vendor"


class User(Model):
    id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    display_name = fields.CharField(max_length=100, default="")
    email = fields.CharField(max_length=200, default="")
    password_hash = fields.CharField(max_length=200)  # argon2id
    role = fields.CharEnumField(Role, max_length=16)
    # Markets this person may see; empty means every market (admins, city-level maintainers).
    markets = fields.JSONField(default=list)
    vendor: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Vendor", related_name="users", null=True, on_delete=fields.CASCADE
    )
    language = fields.CharField(max_length=8, default="zh")
    active = fields.BooleanField(default=True)
    failed_logins = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "user_account"


class Session(Model):
    """A signed-in browser or API client. The token itself is never stored, only its hash."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "accounts.User", related_name="sessions", on_delete=fields.CASCADE
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    ip = fields.CharField(max_length=64, default="")

    class Meta:
        table = "user_session"


class AuditEntry(Model):
    """Who did what, when, from where (SJZ table 1 items 1.5–1.9). Rows are only ever inserted."""

    id = fields.BigIntField(primary_key=True)
    at = fields.DatetimeField(auto_now_add=True, db_index=True)
    actor = fields.CharField(max_length=100, db_index=True)  # "user:alice", "vendor:acme", "admin-token"
    role = fields.CharField(max_length=16, default="")
    action = fields.CharField(max_length=100, db_index=True)  # "login", "login_failed", "POST /api/v1/…"
    target = fields.CharField(max_length=200, default="")
    status = fields.IntField(default=0)
    ip = fields.CharField(max_length=64, default="")
    before = fields.JSONField(null=True)
    after = fields.JSONField(null=True)

    class Meta:
        table = "audit_entry"
