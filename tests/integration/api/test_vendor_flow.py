"""The vendor registration flow over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import httpx

from fleet.models import Credential, Device
from tests.factories import ADMIN, create_vendor, device_rows, ensure_market


async def test_vendor_flow_end_to_end(api: httpx.AsyncClient, platform) -> None:
    key = await create_vendor(api, "acme")
    headers = {"X-API-Key": key}

    response = await api.post("/api/v1/vendor/devices", json={"devices": device_rows(1000)}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["existing"], body["failed"]) == (1000, 0, 0)
    secrets = {row["device_id"]: row["secret"] for row in body["rows"]}
    assert len(secrets) == 1000 and all(secrets.values())
    device_id, first_secret = next(iter(secrets.items()))
    assert await platform.registry.check_device_secret(device_id, first_secret) is not None

    # Idempotent by serial, and the secret is never shown a second time.
    again = (await api.post("/api/v1/vendor/devices", json={"devices": device_rows(1000)}, headers=headers)).json()
    assert (again["created"], again["existing"]) == (0, 1000)
    assert all(row["secret"] is None for row in again["rows"])
    assert await Device.filter(vendor__code="acme").count() == 1000

    rotated = await api.post(f"/api/v1/vendor/devices/{device_id}/credentials/rotate", headers=headers)
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != first_secret
    assert await platform.registry.check_device_secret(device_id, first_secret) is None
    assert await platform.registry.check_device_secret(device_id, new_secret) is not None

    creds = (await api.get(f"/api/v1/vendor/devices/{device_id}/credentials", headers=headers)).json()
    assert [c["revoked_at"] is not None for c in creds] == [True, False]
    assert all("secret" not in c and "secret_hash" not in c for c in creds)

    revoked = await api.post(f"/api/v1/vendor/devices/{device_id}/credentials/revoke", headers=headers)
    assert revoked.json() == {"revoked": 1}
    assert await platform.registry.check_device_secret(device_id, new_secret) is None


async def test_secrets_are_stored_only_as_hashes(api: httpx.AsyncClient) -> None:
    key = await create_vendor(api, "hashco")
    body = {"devices": device_rows(3, prefix="H")}
    rows = (await api.post("/api/v1/vendor/devices", json=body, headers={"X-API-Key": key})).json()["rows"]
    for row in rows:
        stored = await Credential.get(device_id=row["device_id"])
        assert row["secret"] not in (stored.secret_hash, stored.salt)


async def test_another_vendor_cannot_see_or_change_devices(api: httpx.AsyncClient) -> None:
    owner = {"X-API-Key": await create_vendor(api, "owner")}
    other = {"X-API-Key": await create_vendor(api, "other")}
    rows = (await api.post("/api/v1/vendor/devices", json={"devices": device_rows(5, prefix="O")}, headers=owner))
    device_id = rows.json()["rows"][0]["device_id"]

    assert (await api.get(f"/api/v1/vendor/devices/{device_id}", headers=other)).status_code == 404
    for action in ("rotate", "revoke"):
        response = await api.post(f"/api/v1/vendor/devices/{device_id}/credentials/{action}", headers=other)
        assert response.status_code == 404
    listing = (await api.get("/api/v1/vendor/devices", headers=other)).json()
    assert listing["total"] == 0
    assert (await api.get(f"/api/v1/vendor/devices/{device_id}", headers=owner)).status_code == 200


async def test_bad_or_missing_key_is_401(api: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-API-Key": "mfk_nothere_nothing"}, {"X-API-Key": "garbage"}):
        response = await api.get("/api/v1/vendor/devices", headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"]
    assert (await api.get("/api/v1/admin/devices")).status_code == 401
    assert (await api.get("/api/v1/admin/devices", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_bad_rows_are_refused_naming_row_and_field_and_nothing_is_written(api: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": await create_vendor(api, "badin")}
    before = await Device.filter(vendor__code="badin").count()

    cases = {
        "devices[2].serial": [*device_rows(2, prefix="D"), {"serial": "D000000", "kind": "scale"}],
        "devices[1].kind": [{"serial": "K1", "kind": "scale"}, {"serial": "K2", "kind": "toaster"}],
        "devices[0].keepalive_s": [{"serial": "T1", "kind": "scale", "keepalive_s": "soon"}],
        "devices[0].labels": [{"serial": "T2", "kind": "scale", "labels": ["not", "a", "map"]}],
        "devices[0].serial": [{"serial": "has/slash", "kind": "scale"}],
    }
    for field, devices in cases.items():
        response = await api.post("/api/v1/vendor/devices", json={"devices": devices}, headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["detail"], (field, response.json())

    too_many = await api.post("/api/v1/vendor/devices", json={"devices": device_rows(10_001)}, headers=headers)
    assert too_many.status_code == 422
    assert "at most 10000" in too_many.json()["detail"]

    not_utf8 = await api.post(
        "/api/v1/vendor/devices",
        content=b'{"devices": [{"serial": "\xff\xfe", "kind": "scale"}]}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert not_utf8.status_code == 400
    assert "UTF-8" in not_utf8.json()["detail"]

    not_json = await api.post(
        "/api/v1/vendor/devices",
        content=b"serial,kind\n1,scale",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert await Device.filter(vendor__code="badin").count() == before


async def test_rows_that_cannot_be_placed_are_reported_and_the_rest_registered(api: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": await create_vendor(api, "partial")}
    await ensure_market(api, "M-PART")
    model = await api.post("/api/v1/vendor/models", json={"kind": "scale", "name": "TS-30"}, headers=headers)
    assert model.status_code == 201
    devices = [
        {"serial": "P1", "kind": "scale", "model": "TS-30", "market": "M-PART"},
        {"serial": "P2", "kind": "scale", "model": "NO-SUCH"},
        {"serial": "P3", "kind": "scale", "market": "NOWHERE"},
        {"serial": "P4", "kind": "esl", "model": "TS-30"},
        {"serial": "P5", "kind": "esl"},
    ]
    body = (await api.post("/api/v1/vendor/devices", json={"devices": devices}, headers=headers)).json()
    statuses = [row["status"] for row in body["rows"]]
    assert statuses == ["created", "error", "error", "error", "created"]
    assert "devices[1].model" in body["rows"][1]["error"]
    assert "devices[2].market" in body["rows"][2]["error"]
    assert "devices[3].kind" in body["rows"][3]["error"]
    assert sorted(await Device.filter(vendor__code="partial").values_list("serial", flat=True)) == ["P1", "P5"]


async def test_admin_lists_and_filters_the_whole_fleet_with_paging(api: httpx.AsyncClient) -> None:
    await ensure_market(api, "M-LIST")
    headers = {"X-API-Key": await create_vendor(api, "lister")}
    devices = device_rows(30, kind="scale", prefix="LS", market="M-LIST") + device_rows(20, kind="camera", prefix="LC")
    devices[0]["name"] = "Entrance north scale"
    devices[1]["labels"] = {"zone": "aquatic"}
    assert (await api.post("/api/v1/vendor/devices", json={"devices": devices}, headers=headers)).status_code == 200

    async def listing(**params: object) -> dict:
        response = await api.get("/api/v1/admin/devices", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    assert (await listing(kind="scale", market="M-LIST"))["total"] == 30
    assert (await listing(kind="camera", q="lister-LC"))["total"] == 20
    assert [d["serial"] for d in (await listing(q="entrance north"))["items"]] == ["LS000000"]
    assert [d["serial"] for d in (await listing(label="zone=aquatic"))["items"]] == ["LS000001"]
    page1 = await listing(q="lister-", limit=20, offset=0)
    page3 = await listing(q="lister-", limit=20, offset=40)
    assert page1["total"] == 50 and len(page1["items"]) == 20 and len(page3["items"]) == 10
    assert not {d["id"] for d in page1["items"]} & {d["id"] for d in page3["items"]}
    bad = await api.get("/api/v1/admin/devices", params={"kind": "toaster"}, headers=ADMIN)
    assert bad.status_code == 422 and "kind" in bad.json()["detail"]


async def test_health_docs_and_kind_schemas_answer(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json()["status"] == "ok"
    assert (await api.get("/docs")).status_code == 200
    spec = (await api.get("/openapi.json")).json()
    assert "/api/v1/vendor/devices" in spec["paths"]
    scale = (await api.get("/api/v1/kinds/scale")).json()
    transaction = json.dumps(scale["schemas"]["event"])
    for field in ("order_no", "market_code", "stall_no", "scale_id", "product_name", "weight_kg", "unit_price"):
        assert field in transaction
    assert (await api.get("/api/v1/kinds/toaster")).status_code == 404
    assert len((await api.get("/api/v1/kinds")).json()) == 13


async def test_oversized_body_is_413(api: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": await create_vendor(api, "bigbody"), "Content-Type": "application/json"}
    response = await api.post("/api/v1/vendor/devices", content=b" " * (17 * 1024 * 1024), headers=headers)
    assert response.status_code == 413
