"""Standards conformance over real HTTP on a real registry: vendor model checks, layouts, market scorecards."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import httpx
import pytest

from accounts.models import Role
from accounts.permissions import GRANTS, Permission
from compliance import SeqSpan, StaticSequenceStats, setup
from fleet.models import Device
from tests.factories import ADMIN, create_vendor, device_rows, ensure_market
from tests.unit.compliance.payloads import conforming

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"
NORTH, SOUTH = "CM-NORTH", "CM-SOUTH"
SCALE, DETECTOR, STALL_SCREEN = conforming("scale"), conforming("food_detector"), conforming("stall_screen")
COUNTER = {"bidirectional": True, "history_days": 30, "network": ["wifi"], "waterproof": True}
LAYOUT = {
    "floor_area_m2": 600,
    "entrances": ["North gate", "South gate"],
    "zones": [{"kind": "vegetables", "name": "蔬菜区", "area_m2": 200}, {"kind": "aquatic", "area_m2": 80},
              {"kind": "cooked_food", "name": "熟食区", "area_m2": 40}],
}


async def login(api: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await api.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def add_user(api: httpx.AsyncClient, username: str, role: str, markets: list[str], vendor: str | None = None
                   ) -> dict[str, str]:
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "role": role, "markets": markets}
    if vendor:
        body["vendor"] = vendor
    response = await api.post("/api/v1/users", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return await login(api, username)


@pytest.fixture(scope="module")
async def seeded(api: httpx.AsyncClient) -> dict[str, Any]:
    """Market CM-NORTH with 3 stalls, a layout, and devices registered through the vendor API:
    3 scales (2 of a type-approved model), 1 flow counter for 2 entrances, 5 cameras for 600 m², stall screens
    at A01 (online) and A02 (offline), 1 online fire panel. CM-SOUTH has one scale."""
    await ensure_market(api, NORTH)
    await ensure_market(api, SOUTH)
    for number in ("A01", "A02", "A03"):
        response = await api.post(f"/api/v1/admin/markets/{NORTH}/stalls", json={"number": number}, headers=ADMIN)
        assert response.status_code == 201, response.text
    key = await create_vendor(api, "cvendor")
    other_key = await create_vendor(api, "cother")
    vendor = {"X-API-Key": key}
    models = {}
    for name, kind, specs in (
        ("Scale-OK", "scale", SCALE),
        ("Scale-NoCert", "scale", {**SCALE, "type_approval_certificate": False}),
        ("Counter-1", "flow_counter", COUNTER),
        ("Screen-21", "display", STALL_SCREEN),
    ):
        response = await api.post("/api/v1/vendor/models", json={"kind": kind, "name": name, "specs": specs},
                                  headers=vendor)
        assert response.status_code == 201, response.text
        models[name] = response.json()["id"]
    rows = [
        *device_rows(2, kind="scale", prefix="SOK", market=NORTH, model="Scale-OK"),
        *device_rows(1, kind="scale", prefix="SNC", market=NORTH, model="Scale-NoCert"),
        *device_rows(1, kind="flow_counter", prefix="CNT", market=NORTH, model="Counter-1",
                     labels={"entrance": "North gate"}),
        *device_rows(5, kind="camera", prefix="CAM", market=NORTH),
        {"serial": "SCR-A01", "kind": "display", "market": NORTH, "stall": "A01", "model": "Screen-21"},
        {"serial": "SCR-A02", "kind": "display", "market": NORTH, "stall": "A02", "model": "Screen-21"},
        *device_rows(1, kind="fire_panel", prefix="FIRE", market=NORTH),
        *device_rows(1, kind="scale", prefix="SOUTH", market=SOUTH, model="Scale-OK"),
    ]
    response = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=vendor)
    assert response.status_code == 200 and response.json()["failed"] == 0, response.text
    # Presence marks devices online as they connect; here the registry row is set as the tracker would.
    await Device.filter(id__in=["cvendor-SCR-A01", "cvendor-FIRE000000", "cvendor-SOK000000"]).update(online=True)
    response = await api.put(f"/api/v1/compliance/markets/{NORTH}/layout", json=LAYOUT, headers=ADMIN)
    assert response.status_code == 200, response.text
    return {
        "vendor": vendor,
        "other_vendor": {"X-API-Key": other_key},
        "models": models,
        "scale_ids": ["cvendor-SOK000000", "cvendor-SOK000001", "cvendor-SNC000000"],
        "manager_north": await add_user(api, "north_manager", "manager", [NORTH]),
        "manager_south": await add_user(api, "south_manager", "manager", [SOUTH]),
    }


def items(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in card["items"]}


# ---------------------------------------------------------------- vendor model checks


async def test_vendor_checks_a_conforming_detector_before_registering(api: httpx.AsyncClient, seeded) -> None:
    response = await api.post("/api/v1/compliance/check-model", json={"kind": "food_detector", "specs": DETECTOR},
                              headers=seeded["vendor"])
    assert response.status_code == 200, response.text
    assert response.json()["conforming"] is True


async def test_vendor_learns_which_clause_a_four_channel_detector_fails(api: httpx.AsyncClient, seeded) -> None:
    response = await api.post(
        "/api/v1/compliance/check-model",
        json={"kind": "food_detector", "specs": {**DETECTOR, "channels": 4}, "standards": ["SZ"]},
        headers=seeded["vendor"],
    )
    report = response.json()
    assert report["conforming"] is False and report["standards"] == ["SZ"]
    assert [(f["clause"], f["expected"], f["given"]) for f in report["failed"]] == [("SZ 6.3.1", "≥ 5 channels", 4)]


async def test_unstated_tablet_specs_come_back_as_missing(api: httpx.AsyncClient, seeded) -> None:
    response = await api.post("/api/v1/compliance/check-model",
                              json={"kind": "inspection_tablet", "specs": {"os": "android"}}, headers=seeded["vendor"])
    report = response.json()
    assert not report["failed"]
    assert {m["clause"] for m in report["missing"]} == {"SZ 6.4.2 b", "SZ 6.4.2 c", "SZ 6.4.2 d", "SZ 6.4.2 e"}


async def test_an_unknown_kind_or_standard_is_a_422(api: httpx.AsyncClient, seeded) -> None:
    for body in ({"kind": "toaster", "specs": {}}, {"kind": "scale", "specs": {}, "standards": ["XX"]}):
        response = await api.post("/api/v1/compliance/check-model", json=body, headers=seeded["vendor"])
        assert response.status_code == 422, response.text


async def test_vendor_reads_the_spec_keys_of_a_kind(api: httpx.AsyncClient, seeded) -> None:
    response = await api.get("/api/v1/compliance/spec-keys/inspection_tablet", headers=seeded["vendor"])
    keys = {k["key"]: k for k in response.json()["keys"]}
    assert keys["storage_gb"]["unit"] == "GB" and keys["storage_gb"]["clauses"] == ["SZ 6.4.2 e"]
    assert (await api.get("/api/v1/compliance/spec-keys/toaster", headers=seeded["vendor"])).status_code == 404


async def test_a_vendor_sees_the_report_of_its_own_model_only(api: httpx.AsyncClient, seeded) -> None:
    model_id = seeded["models"]["Scale-NoCert"]
    own = await api.get(f"/api/v1/compliance/vendor/models/{model_id}", headers=seeded["vendor"])
    assert own.status_code == 200, own.text
    assert [f["item"] for f in own.json()["report"]["failed"]] == ["sz-scale-type-approval"]
    other = await api.get(f"/api/v1/compliance/vendor/models/{model_id}", headers=seeded["other_vendor"])
    assert other.status_code == 404


async def test_staff_read_any_models_report(api: httpx.AsyncClient, seeded) -> None:
    model_id = seeded["models"]["Scale-OK"]
    response = await api.get(f"/api/v1/compliance/models/{model_id}", headers=seeded["manager_south"])
    assert response.status_code == 200 and response.json()["report"]["conforming"] is True
    assert (await api.get("/api/v1/compliance/models/999999", headers=ADMIN)).status_code == 404


# ---------------------------------------------------------------- layouts


async def test_admin_stores_a_layout_and_managers_read_it(api: httpx.AsyncClient, seeded) -> None:
    response = await api.get(f"/api/v1/compliance/markets/{NORTH}/layout", headers=seeded["manager_north"])
    assert response.status_code == 200, response.text
    layout = response.json()
    assert layout["floor_area_m2"] == 600 and layout["entrances"] == ["North gate", "South gate"]
    assert [z["kind"] for z in layout["zones"]] == ["vegetables", "aquatic", "cooked_food"]
    assert layout["zones"][0]["name"] == "蔬菜区"


async def test_a_layout_put_replaces_the_old_one(api: httpx.AsyncClient, seeded) -> None:
    replaced = {**LAYOUT, "entrances": ["East gate"], "zones": [], "stall_count": 7}
    assert (await api.put(f"/api/v1/compliance/markets/{SOUTH}/layout", json=LAYOUT, headers=ADMIN)).status_code == 200
    response = await api.put(f"/api/v1/compliance/markets/{SOUTH}/layout", json=replaced, headers=ADMIN)
    assert response.status_code == 200
    stored = (await api.get(f"/api/v1/compliance/markets/{SOUTH}/layout", headers=ADMIN)).json()
    assert (stored["entrances"], stored["zones"], stored["stall_count"]) == (["East gate"], [], 7)


async def test_zones_larger_than_the_floor_are_refused(api: httpx.AsyncClient, seeded) -> None:
    bad = {**LAYOUT, "zones": [{"kind": "meat", "area_m2": 700}]}
    response = await api.put(f"/api/v1/compliance/markets/{NORTH}/layout", json=bad, headers=ADMIN)
    assert response.status_code == 422 and "more than the floor area" in response.json()["detail"]


async def test_a_manager_may_not_write_a_layout(api: httpx.AsyncClient, seeded) -> None:
    response = await api.put(f"/api/v1/compliance/markets/{NORTH}/layout", json=LAYOUT,
                             headers=seeded["manager_north"])
    assert response.status_code == 403


async def test_the_layout_of_an_unknown_market_is_404(api: httpx.AsyncClient, seeded) -> None:
    response = await api.put("/api/v1/compliance/markets/NOPE/layout", json=LAYOUT, headers=ADMIN)
    assert response.status_code == 404


# ---------------------------------------------------------------- scorecard


async def test_the_scorecard_scores_each_hardware_row_from_the_registry(api: httpx.AsyncClient, seeded) -> None:
    response = await api.get(f"/api/v1/compliance/markets/{NORTH}/scorecard", headers=seeded["manager_north"])
    assert response.status_code == 200, response.text
    card = response.json()
    rows = items(card)
    expected = {
        "sz-a1-flow-counter": ("partly", 1.5),  # 2 entrances, 1 counter
        "sz-a1-scale": ("partly", 2.6),  # 2 of 3 scales type-approved: 4 × 2/3, rounded down
        "sz-a1-camera": ("partly", 1.5),  # 5 of ⌈600 / 60⌉ = 10
        "sz-a1-stall-screen": ("partly", 1.0),  # 1 of 3 stalls has an online screen
        "sz-a1-emergency": ("met", 1.0),
        "sz-a1-food-detector": ("not_met", 0.0),
        "sz-a1-inspection-tablet": ("not_met", 0.0),  # no tablet registered
        "zz-stall-screens": ("partly", 8.0),  # 2 dark stalls
        "zz-fire": ("met", 5.0),
        "zz-cameras": ("not_met", 0.0),  # none online
        "sz-a1-transmission-merchant": ("unknown", None),  # no sequence source configured
    }
    assert {k: (rows[k]["status"], rows[k]["points"]) for k in expected} == expected
    assert rows["sz-a1-flow-counter"]["evidence"]["uncovered_entrances"] == ["South gate"]
    assert rows["sz-a1-scale"]["evidence"]["failed_clauses"] == ["SZ 6.2.1"]
    assert card["online_basis"] == "snapshot"
    assert {t["section"]: t["max_points"] for t in card["totals"]}["SZ A.1 硬件设备"] == 35.0


@pytest.mark.parametrize(("received", "status", "points"), [(960, "met", 1.0), (940, "not_met", 0.0)])
async def test_the_loss_rate_comes_from_the_sequence_statistics(
    api: httpx.AsyncClient, platform, seeded, received: int, status: str, points: float
) -> None:
    """1000 messages expected over the scales: 960 received is 4 % loss (met), 940 is 6 % (not met)."""
    first, *others = seeded["scale_ids"]
    spans = {first: SeqSpan(0, 499, received - 500), **{d: SeqSpan(0, 249, 250) for d in others}}
    platform.app.state.ctx.services["compliance"] = setup(sequence_stats=StaticSequenceStats(spans, basis="test"))
    try:
        response = await api.get(f"/api/v1/compliance/markets/{NORTH}/scorecard", params={"days": 7}, headers=ADMIN)
    finally:
        platform.app.state.ctx.services.pop("compliance")
    row = items(response.json())["sz-a1-transmission-merchant"]
    assert (row["status"], row["points"]) == (status, points)
    assert (row["evidence"]["expected"], row["evidence"]["received"], row["evidence"]["window_days"]) == (
        1000, received, 7)
    assert response.json()["sequence_basis"] == "test"


async def test_a_manager_of_another_market_gets_404(api: httpx.AsyncClient, seeded) -> None:
    for path in ("scorecard", "scorecard.csv", "layout"):
        response = await api.get(f"/api/v1/compliance/markets/{NORTH}/{path}", headers=seeded["manager_south"])
        assert response.status_code == 404, (path, response.status_code)
    own = await api.get(f"/api/v1/compliance/markets/{SOUTH}/scorecard", headers=seeded["manager_south"])
    assert own.status_code == 200


async def test_the_scorecard_exports_as_csv(api: httpx.AsyncClient, seeded) -> None:
    response = await api.get(f"/api/v1/compliance/markets/{NORTH}/scorecard.csv", headers=seeded["manager_north"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    flow = next(r for r in rows if r["id"] == "sz-a1-flow-counter")
    assert (flow["status"], flow["points"], flow["max_points"]) == ("partly", "1.5", "3")
    assert flow["title_zh"] == "客流监测设备"
    assert sum(r["id"] == "total" for r in rows) == 3


async def test_every_compliance_route_allows_exactly_the_roles_the_table_grants(
    api: httpx.AsyncClient, seeded
) -> None:
    """As the project-wide role walk does: 401 anonymous, one declared permission, 403 exactly without it."""
    people = {
        "admin": ADMIN,
        "maintainer": await add_user(api, "north_maintainer", "maintainer", [NORTH]),
        "manager": seeded["manager_north"],
        "vendor": await add_user(api, "cvendor_person", "vendor", [], vendor="cvendor"),
    }
    spec = (await api.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/compliance/"):
            continue
        for method, operation in operations.items():
            url = re.sub(r"\{[^}]+\}", "x-none", path)
            assert (await api.request(method, url, json={})).status_code == 401, (method, path)
            needed = operation.get("x-permission")
            assert needed and "," not in needed, f"{method.upper()} {path} must declare exactly one permission"
            for role, headers in people.items():
                response = await api.request(method, url, json={}, headers=headers)
                allowed = Permission(needed) in GRANTS[Role(role)]
                assert (response.status_code != 403) == allowed, (method, path, role, response.status_code)
            checked += 1
    assert checked == 8
