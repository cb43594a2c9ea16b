"""The composition root: turns Settings into running services and stops them in reverse order.

Each domain package exposes its own setup; this module only decides what runs and hands each part the
pieces it needs. Nothing else in the project builds singletons or reads the environment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from accounts.service import Accounts
from api import create_app
from api.context import ApiContext
from fleet.registry import Registry
from marketfleet import db
from marketfleet.keys import load_or_create
from marketfleet.settings import Settings


@dataclass
class Platform:
    settings: Settings
    registry: Registry
    admin_token: str
    app: FastAPI
    services: dict[str, Any] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def aclose(self) -> None:
        await self._stack.aclose()


def master_key(settings: Settings) -> bytes:
    configured = settings.secret_key.get_secret_value()
    return (configured or load_or_create(settings.data_dir / "master.key")).encode()


def admin_token(settings: Settings) -> str:
    return settings.api.admin_token.get_secret_value() or load_or_create(settings.data_dir / "admin.token")


async def start_platform(settings: Settings) -> Platform:
    """Open the registry and build the API; transports and stores are added as they are configured."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await db.connect(settings.registry_url)
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(db.close)
    registry = Registry(master_key=master_key(settings))
    token = admin_token(settings)
    accounts = Accounts()
    await accounts.ensure_bootstrap_admin(token)
    ctx = ApiContext(
        registry=registry, accounts=accounts, admin_token=token, max_bulk_devices=settings.api.max_bulk_devices
    )
    app = create_app(ctx)
    return Platform(settings=settings, registry=registry, admin_token=token, app=app, _stack=stack)


@contextlib.asynccontextmanager
async def running_platform(settings: Settings) -> AsyncIterator[Platform]:
    platform = await start_platform(settings)
    try:
        yield platform
    finally:
        await platform.aclose()
