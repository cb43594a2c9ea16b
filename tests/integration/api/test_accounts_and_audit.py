"""People, roles and the audit log over real HTTP: every route in the OpenAPI spec against every role."""

from __future__ import annotations

import re

import httpx
import pytest

from accounts.models import AuditEntry
from accounts.permissions import GRANTS, Permission
from tests.factories import ADMIN, create_vendor, device_rows, ensure_market

PASSWORD = "correct horse battery"
ROLES = ("admin", "maintainer", "manager", "vendor")


async def login(api: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = await api.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture(scope="module")
async def people(api: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """One signed-in person per role; the manager and maintainer only see market M-NORTH."""
    await ensure_market(api, "M-NORTH")
    await ensure_market(api, "M-SOUTH")
    vendor_key = await create_vendor(api, "rolevendor")
    rows = device_rows(3, kind="scale", prefix="N", market="M-NORTH") + device_rows(
        3, kind="scale", prefix="S", market="M-SOUTH"
    )
    assert (await api.post("/api/v1/vendor/devices", json={"devices": rows},
                           headers={"X-API-Key": vendor_key})).status_code == 200
    markets = {"admin": [], "maintainer": ["M-NORTH"], "manager": ["M-NORTH"], "vendor": []}
    headers = {}
    for role in ROLES:
        body = {"username": f"{role}1", "password": PASSWORD, "role": role, "markets": markets[role]}
        if role == "vendor":
            body["vendor"] = "rolevendor"
        assert (await api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
        headers[role] = await login(api, f"{role}1")
    return headers


async def test_every_route_allows_exactly_the_roles_the_table_grants(api: httpx.AsyncClient, people) -> None:
    """Walk the OpenAPI spec: each operation answers 401 without credentials, and 403 exactly for roles
    lacking the permission its dependency names (404/422 are fine: the caller got past authorisation)."""
    spec = (await api.get("/openapi.json")).json()
    public = {"/healthz", "/api/v1/kinds", "/api/v1/kinds/{kind}", "/api/v1/auth/login", "/api/v1/auth/logout",
              "/api/v1/auth/me"}
    # Device routes authenticate the device (its secret or HMAC, x-auth: device), never a person: 401 for all.
    # x-auth: public marks what anyone may read (the firmware signing key: it only verifies).
    public |= {path for path, ops in spec["paths"].items()
               if all(op.get("x-auth") in ("device", "public") for op in ops.values())}
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            url = re.sub(r"\{[^}]+\}", "x-none", path)
            anonymous = await api.request(method, url, json={})
            if path in public:
                assert anonymous.status_code != 403, (method, path)
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
            needed = operation.get("x-permission")
            assert needed, f"{method.upper()} {path} does not declare its permission"
            for role in ROLES:
                # Streamed: the status is all this needs, and an event stream (alerts) never ends by itself.
                async with api.stream(method, url, json={}, headers=people[role]) as response:
                    pass
                allowed = Permission(needed) in GRANTS[_role(role)]
                assert (response.status_code != 403) == allowed, (method, path, role, response.status_code)
                assert response.status_code != 401, (method, path, role)
            checked += 1
    assert checked >= 20


def _role(name: str):
    from accounts.models import Role

    return Role(name)


async def test_market_scoped_people_see_only_their_markets(api: httpx.AsyncClient, people) -> None:
    listing = (await api.get("/api/v1/admin/devices", params={"q": "rolevendor"}, headers=people["manager"])).json()
    assert {d["market_id"] for d in listing["items"]} == {"M-NORTH"} and listing["total"] == 3
    south = "rolevendor-S000000"
    assert (await api.get(f"/api/v1/admin/devices/{south}", headers=people["manager"])).status_code == 404
    assert (await api.get(f"/api/v1/admin/devices/{south}", headers=people["admin"])).status_code == 200
    markets = (await api.get("/api/v1/admin/markets", headers=people["maintainer"])).json()
    assert [m["code"] for m in markets] == ["M-NORTH"]


async def test_vendor_person_sees_only_own_devices(api: httpx.AsyncClient, people) -> None:
    listing = (await api.get("/api/v1/vendor/devices", headers=people["vendor"])).json()
    assert listing["total"] == 6 and all(d["id"].startswith("rolevendor-") for d in listing["items"])


async def test_wrong_password_is_refused_and_repeated_failures_lock_the_account(api: httpx.AsyncClient) -> None:
    body = {"username": "lockme", "password": PASSWORD, "role": "manager"}
    assert (await api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
    for _ in range(5):
        bad = await api.post("/api/v1/auth/login", json={"username": "lockme", "password": "nope"})
        assert bad.status_code == 401
    locked = await api.post("/api/v1/auth/login", json={"username": "lockme", "password": PASSWORD})
    assert locked.status_code == 401 and "locked" in locked.json()["detail"]
    assert await AuditEntry.filter(actor="user:lockme", action="login_failed").count() == 5
    assert await AuditEntry.filter(actor="user:lockme", action="login_locked").count() == 1


async def test_state_changes_are_audited_with_actor_and_redacted_body(api: httpx.AsyncClient, people) -> None:
    body = {"username": "audited", "password": PASSWORD, "role": "manager"}
    assert (await api.post("/api/v1/users", json=body, headers=people["admin"])).status_code == 201
    denied = await api.post("/api/v1/admin/markets", json={"code": "M-X", "name": "x"}, headers=people["manager"])
    assert denied.status_code == 403
    entries = (await api.get("/api/v1/audit", params={"action": "/api/v1/users"}, headers=ADMIN)).json()
    created = next(e for e in entries if e["after"] and e["after"].get("username") == "audited")
    assert created["actor"] == "user:admin1" and created["status"] == 201 and created["ip"]
    assert created["after"]["password"] == "***"
    refused = (await api.get("/api/v1/audit", params={"actor": "user:manager1"}, headers=ADMIN)).json()
    assert any(e["action"] == "POST /api/v1/admin/markets" and e["status"] == 403 for e in refused)
    csv_export = await api.get("/api/v1/audit", params={"format": "csv", "limit": 5}, headers=ADMIN)
    assert csv_export.headers["content-type"].startswith("text/csv") and "actor" in csv_export.text.splitlines()[0]
    assert (await api.get("/api/v1/audit", headers=people["manager"])).status_code == 403
