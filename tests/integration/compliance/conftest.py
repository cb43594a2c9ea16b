"""A platform with the compliance app and routes, on SQLite and PostgreSQL like every registry test.

Until marketfleet/db.py lists the "compliance" tortoise app and api/app.py includes api.routes.compliance, this
module's `platform` adds both for its own tests (the same two lines the composition root will carry); once they
are wired there, both steps see them present and do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from api.auth import document_permissions
from api.routes import compliance as compliance_routes
from marketfleet import db
from tests.factories import start_test_platform


@contextlib.contextmanager
def compliance_app_registered() -> Iterator[None]:
    if "compliance" in db.APPS:
        yield
        return
    db.APPS["compliance"] = (["compliance.models"], "compliance.migrations")
    try:
        yield
    finally:
        db.APPS.pop("compliance", None)


def mount_compliance_routes(app: FastAPI) -> None:
    # FastAPI includes routers lazily: an included router is one entry holding `original_router`.
    for route in app.routes:
        if getattr(route, "original_router", None) is compliance_routes.router:
            return
        if getattr(route, "path", "").startswith("/api/v1/compliance/"):
            return
    document_permissions(compliance_routes.router)
    app.include_router(compliance_routes.router)


@pytest.fixture(scope="module")
async def platform(registry_backend: str, registry_url_factory, tmp_path_factory: pytest.TempPathFactory):
    with compliance_app_registered():
        url = registry_url_factory(registry_backend)
        async with start_test_platform(tmp_path_factory.mktemp("data"), url) as started:
            mount_compliance_routes(started.app)
            yield started
