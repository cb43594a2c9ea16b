"""Audit entries of changes to existing objects keep the object as it was (`before`, secrets redacted) next to
what was asked (`after`) - issue 11: who changed what from what to what."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import ADMIN, create_vendor, device_rows, ensure_market


async def last_entry(api: httpx.AsyncClient, action: str) -> dict[str, Any]:
    rows = (await api.get("/api/v1/audit", params={"action": action, "limit": 1}, headers=ADMIN)).json()
    assert rows, f"no audit entry for {action}"
    assert rows[0]["action"] == action
    return rows[0]


async def test_a_device_change_keeps_the_old_and_the_new_values(api: httpx.AsyncClient) -> None:
    await ensure_market(api, "M-AUDB")
    key = await create_vendor(api, "auditbefore")
    rows = device_rows(1, kind="scale", prefix="AB", market="M-AUDB")
    assert (await api.post("/api/v1/vendor/devices", json={"devices": rows},
                           headers={"X-API-Key": key})).status_code == 200
    device = "auditbefore-AB000000"
    first = {"name": "scale at the door", "labels": {"floor": "1"}}
    response = await api.patch(f"/api/v1/admin/devices/{device}", json=first, headers=ADMIN)
    assert response.status_code == 200, response.text
    second = {"name": "scale at the back", "labels": {"floor": "2"}}
    assert (await api.patch(f"/api/v1/admin/devices/{device}", json=second, headers=ADMIN)).status_code == 200

    entry = await last_entry(api, f"PATCH /api/v1/admin/devices/{device}")
    assert entry["status"] == 200
    assert entry["after"] == second
    before = entry["before"]
    assert (before["name"], before["labels"], before["market_id"]) == ("scale at the door", {"floor": "1"}, "M-AUDB")


async def test_a_price_change_keeps_the_old_price(api: httpx.AsyncClient) -> None:
    await ensure_market(api, "M-AUDB")
    product = {"market": "M-AUDB", "code": "AB-1", "name": "白菜", "price": "3.20"}
    created = await api.post("/api/v1/retail/products", json=product, headers=ADMIN)
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]
    changed = await api.patch(f"/api/v1/retail/products/{product_id}", json={"price": "2.80", "name": "大白菜"},
                              headers=ADMIN)
    assert changed.status_code == 200, changed.text

    entry = await last_entry(api, f"PATCH /api/v1/retail/products/{product_id}")
    assert entry["after"] == {"price": "2.80", "name": "大白菜"}
    assert entry["before"]["name"] == "白菜"
    assert float(entry["before"]["price"]) == 3.2


async def test_disabling_a_person_keeps_their_account_as_it_was_without_secrets(api: httpx.AsyncClient) -> None:
    body = {"username": "audit-before-1", "password": "correct horse battery", "role": "manager",
            "markets": ["M-AUDB"]}
    assert (await api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
    assert (await api.post("/api/v1/users/audit-before-1/disable", headers=ADMIN)).status_code == 200

    entry = await last_entry(api, "POST /api/v1/users/audit-before-1/disable")
    before = entry["before"]
    assert (before["username"], before["role"], before["markets"], before["active"]) == (
        "audit-before-1", "manager", ["M-AUDB"], True)
    assert "password" not in str(before) or before.get("password") == "***"
    listed = {u["username"]: u for u in (await api.get("/api/v1/users", headers=ADMIN)).json()}
    assert listed["audit-before-1"]["active"] is False


async def test_a_change_to_something_that_does_not_exist_still_leaves_an_entry_without_before(
    api: httpx.AsyncClient,
) -> None:
    missing = await api.patch("/api/v1/admin/devices/nobody-NOPE", json={"name": "x"}, headers=ADMIN)
    assert missing.status_code == 404
    entry = await last_entry(api, "PATCH /api/v1/admin/devices/nobody-NOPE")
    assert entry["status"] == 404 and entry["before"] is None and entry["after"] == {"name": "x"}


async def test_a_rule_change_keeps_the_rule_as_it_was(api: httpx.AsyncClient) -> None:
    rule = {"id": "audit-before-hot", "name": "Hall too hot", "scope": {"kind": "env_sensor"},
            "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 30, "clear": 28}}
    created = await api.post("/api/v1/rules", json=rule, headers=ADMIN)
    assert created.status_code == 201, created.text
    changed = {**rule, "severity": "critical", "name": "Hall far too hot"}
    assert (await api.put("/api/v1/rules/audit-before-hot", json=changed, headers=ADMIN)).status_code == 200

    entry = await last_entry(api, "PUT /api/v1/rules/audit-before-hot")
    assert entry["after"]["name"] == "Hall far too hot" and entry["after"]["severity"] == "critical"
    assert entry["before"]["version"] == 1
    assert entry["before"]["definition"]["name"] == "Hall too hot"
    assert entry["before"]["definition"].get("severity") != "critical"  # the default then, left out


async def test_a_layout_replacement_keeps_the_old_layout_and_the_first_one_has_no_before(
    api: httpx.AsyncClient,
) -> None:
    await ensure_market(api, "M-AUDL")
    url = "/api/v1/compliance/markets/M-AUDL/layout"
    first = {"floor_area_m2": 600, "entrances": ["North gate"], "zones": [{"kind": "aquatic", "area_m2": 80}]}
    assert (await api.put(url, json=first, headers=ADMIN)).status_code == 200
    assert (await last_entry(api, f"PUT {url}"))["before"] is None  # nothing was there yet
    second = {"floor_area_m2": 650, "entrances": ["East gate"], "zones": []}
    assert (await api.put(url, json=second, headers=ADMIN)).status_code == 200

    entry = await last_entry(api, f"PUT {url}")
    assert entry["after"] == second
    assert (entry["before"]["floor_area_m2"], entry["before"]["entrances"]) == (600, ["North gate"])
    assert [z["kind"] for z in entry["before"]["zones"]] == ["aquatic"]
