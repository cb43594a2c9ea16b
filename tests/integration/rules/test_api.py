"""The rules API over real HTTP (uvicorn), on SQLite and PostgreSQL: rules, alerts, SSE, recipients, packs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml

from api.routes import rules as rules_routes
from fleet.models import Market
from rules import RulesService
from tests.factories import ADMIN, eventually
from tests.integration.rules.conftest import forget_routing_and_state, start_service
from tests.unit.rules.factories import env_reading, envelope, food_result

pytestmark = pytest.mark.timeout(90)

HOT = {"id": "api-hot", "name": "Hall too hot", "scope": {"kind": "env_sensor"},
       "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 30, "clear": 28}}


@pytest.fixture(scope="module")
async def rules_api(platform, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RulesService]:
    """The rules service the API serves; the router is added only if the app does not include it yet."""
    ctx = platform.app.state.ctx
    previous = ctx.services.get("rules")
    service = await start_service(tmp_path_factory.mktemp("rules-api"))
    ctx.services["rules"] = service
    if not any(getattr(route, "path", None) == "/api/v1/rules" for route in platform.app.routes):
        platform.app.include_router(rules_routes.router)
    try:
        yield service
    finally:
        await service.aclose()
        await forget_routing_and_state()
        if previous is None:
            ctx.services.pop("rules", None)
        else:
            ctx.services["rules"] = previous


def now() -> datetime:
    return datetime.now(UTC)


async def test_the_api_needs_a_credential(api: httpx.AsyncClient, rules_api: RulesService):
    assert (await api.get("/api/v1/alerts")).status_code == 401


async def test_rules_are_created_read_changed_and_deleted(api: httpx.AsyncClient, rules_api: RulesService):
    created = await api.post("/api/v1/rules", json={**HOT, "for": "5m"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["definition"]["for"] == "5m"
    assert (await api.post("/api/v1/rules", json=HOT, headers=ADMIN)).status_code == 409
    changed = await api.put("/api/v1/rules/api-hot", json={**HOT, "severity": "critical"}, headers=ADMIN)
    assert (changed.json()["version"], changed.json()["definition"]["severity"]) == (2, "critical")
    assert rules_api.engine.rules["api-hot"].rule.severity == "critical"
    listed = (await api.get("/api/v1/rules", headers=ADMIN)).json()
    assert {"api-hot", "fire-alarm", "food-test-failed"} <= {r["id"] for r in listed}
    assert (await api.delete("/api/v1/rules/api-hot", headers=ADMIN)).status_code == 204
    assert (await api.get("/api/v1/rules/api-hot", headers=ADMIN)).status_code == 404
    assert "api-hot" not in rules_api.engine.rules


async def test_deleting_a_builtin_rule_disables_it(api: httpx.AsyncClient, rules_api: RulesService):
    assert (await api.delete("/api/v1/rules/env-co2", headers=ADMIN)).status_code == 204
    assert (await api.get("/api/v1/rules/env-co2", headers=ADMIN)).json()["enabled"] is False
    assert "env-co2" not in rules_api.engine.rules


@pytest.mark.parametrize(("change", "expected"), [
    ({"for": "5 parsecs"}, "for: bad duration '5 parsecs': unknown unit 'parsecs'"),
    ({"colour": "red"}, "colour: unknown field"),
    ({"scope": {"kind": "toaster"}}, "scope.kind: unknown value 'toaster'"),
    ({"condition": {**HOT["condition"], "field": "temp"}}, "condition.field: field 'temp' does not exist"),
])
async def test_an_invalid_rule_is_refused_naming_the_problem(api: httpx.AsyncClient, rules_api: RulesService,
                                                             change, expected):
    response = await api.post("/api/v1/rules", json={**HOT, "id": "api-bad", **change}, headers=ADMIN)
    assert response.status_code == 422
    assert expected in response.json()["detail"]


async def test_validate_answers_with_the_problems(api: httpx.AsyncClient, rules_api: RulesService):
    good = (await api.post("/api/v1/rules/validate", json=HOT, headers=ADMIN)).json()
    bad = (await api.post("/api/v1/rules/validate", json={**HOT, "message": "{nope}"}, headers=ADMIN)).json()
    assert good["valid"] and good["rule"]["condition"]["clear"] == 28
    assert not bad["valid"] and bad["problems"][0].startswith("message: unknown placeholder {nope}")


async def test_dry_run_counts_firings_over_given_readings(api: httpx.AsyncClient, rules_api: RulesService):
    start = now() - timedelta(days=1)
    readings = [envelope("ENV-DRY", "env_sensor", env_reading(35 if 6 <= n < 12 else 20),
                         at=start + timedelta(minutes=n)).model_dump(mode="json") for n in range(30)]
    body = {"rule": {**HOT, "id": "api-dry", "for": "3m"}, "envelopes": readings}
    result = (await api.post("/api/v1/rules/dry-run", json=body, headers=ADMIN)).json()
    assert (result["envelopes"], result["fired"], result["resolved"]) == (30, 1, 1)
    assert result["firings"][0]["device_id"] == "ENV-DRY"


async def test_alerts_are_listed_acknowledged_assigned_commented_and_resolved(api: httpx.AsyncClient,
                                                                             rules_api: RulesService):
    await rules_api.create_rule({**HOT, "id": "api-handle"})
    rules_api.process(envelope("ENV-API1", "env_sensor", env_reading(33), at=now()))

    async def listed() -> list[dict]:
        response = await api.get("/api/v1/alerts", params={"device_id": "ENV-API1", "status": "active"},
                                 headers=ADMIN)
        return response.json()

    [alert] = await eventually(listed)
    path = f"/api/v1/alerts/{alert['id']}"
    assert (await api.post(f"{path}/ack", json={"comment": "seen"}, headers=ADMIN)).json()["status"] == "acknowledged"
    assert (await api.post(f"{path}/ack", json={}, headers=ADMIN)).status_code == 409
    assigned = await api.post(f"{path}/assign", json={"assignee": "wang", "comment": "yours"}, headers=ADMIN)
    assert assigned.json()["assigned_to"] == "wang"
    await api.post(f"{path}/comment", json={"comment": "fan replaced"}, headers=ADMIN)
    resolved = await api.post(f"{path}/resolve", json={"comment": "ok now"}, headers=ADMIN)
    assert (resolved.json()["status"], resolved.json()["resolved_by"]) == ("resolved", "admin-token")
    detail = (await api.get(path, headers=ADMIN)).json()
    assert [e["action"] for e in detail["events"]] == ["opened", "acknowledged", "assigned", "commented", "resolved"]
    assert detail["value"] == 33


async def test_the_stream_carries_alert_changes(api: httpx.AsyncClient, rules_api: RulesService):
    await rules_api.create_rule({**HOT, "id": "api-stream"})
    async with asyncio.timeout(20), api.stream("GET", "/api/v1/alerts/stream", params={"market": "SSE1"},
                                               headers=ADMIN) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        while (await anext(lines)) != ": connected":
            pass
        rules_api.process(envelope("ENV-SSE", "env_sensor", env_reading(31), market="SSE1", at=now()))
        opened = await next_event(lines, "api-stream")
        assert (opened["event"], opened["alert"]["device_id"]) == ("alert.opened", "ENV-SSE")
        await api.post(f"/api/v1/alerts/{opened['alert']['id']}/ack", json={"comment": "on it"}, headers=ADMIN)
        acknowledged = await next_event(lines, "api-stream")
        assert (acknowledged["event"], acknowledged["comment"]) == ("alert.acknowledged", "on it")


async def next_event(lines: AsyncIterator[str], rule_id: str) -> dict:
    """The next change of an alert of `rule_id` (other rules of this module may fire on the same reading)."""
    async for line in lines:
        if line.startswith("data: "):
            message = json.loads(line.removeprefix("data: "))
            if message["alert"]["rule_id"] == rule_id:
                return message
    raise AssertionError("stream ended")


async def test_recipients_hide_their_webhook_secret(api: httpx.AsyncClient, rules_api: RulesService):
    body = {"name": "Market office", "role": "manager", "markets": ["M1"],
            "channels": [{"type": "webhook", "url": "https://ops.example/hook", "secret": "0123456789abcdef"},
                         {"type": "email", "address": "office@market.test"}],
            "preferences": {"severities": ["critical"], "quiet_hours": {"start": "22:00", "end": "07:00"}}}
    created = await api.post("/api/v1/recipients", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert created.json()["channels"][0]["secret"] == "***"
    shown = (await api.get(f"/api/v1/recipients/{rid}", headers=ADMIN)).json()
    shown["name"] = "Market office (north)"
    for key in ("id", "created_at"):
        shown.pop(key)
    assert (await api.put(f"/api/v1/recipients/{rid}", json=shown, headers=ADMIN)).status_code == 200
    view = rules_api.router.recipient(rid)
    assert view is not None and view.channels[0]["secret"] == "0123456789abcdef"  # "***" kept the stored one
    refused = await api.post("/api/v1/recipients", json={**body, "markets": []}, headers=ADMIN)
    assert refused.status_code == 422 and "a manager receives alerts of their own markets" in refused.text
    assert (await api.delete(f"/api/v1/recipients/{rid}", headers=ADMIN)).status_code == 204


async def test_a_person_sets_their_own_notifications_within_their_role(api: httpx.AsyncClient,
                                                                        rules_api: RulesService):
    await Market.get_or_create(code="M-MINE", defaults={"name": "Mine"})
    await Market.get_or_create(code="M-OTHER", defaults={"name": "Other"})
    person = {"username": "wangfang", "password": "correct horse battery", "role": "manager",
              "markets": ["M-MINE"]}
    assert (await api.post("/api/v1/users", json=person, headers=ADMIN)).status_code == 201
    login = await api.post("/api/v1/auth/login", json={"username": "wangfang", "password": person["password"]})
    me = {"Authorization": f"Bearer {login.json()['token']}"}
    assert (await api.get("/api/v1/me/notifications", headers=me)).status_code == 404  # nothing set yet

    wanted = {"channels": [{"type": "email", "address": "wang@market.test"}, {"type": "sse"}],
              "preferences": {"severities": ["critical"], "kinds": ["fire_panel", "cold_locker"]}}
    saved = await api.put("/api/v1/me/notifications", json=wanted, headers=me)
    assert saved.status_code == 200, saved.text
    assert (saved.json()["role"], saved.json()["markets"]) == ("manager", ["M-MINE"])  # from the account
    view = rules_api.router.recipient(saved.json()["id"])
    assert view is not None
    mine = {"category": "safety", "severity": "critical", "kind": "fire_panel", "market": "M-MINE"}
    assert view.wants(mine)
    assert not view.wants({**mine, "market": "M-OTHER"})  # the role's markets bound it
    assert not view.wants({**mine, "severity": "warning"})  # the person's own choice

    widened = {**wanted, "preferences": {"markets": ["M-OTHER"]}}
    refused = await api.put("/api/v1/me/notifications", json=widened, headers=me)
    assert refused.status_code == 422 and "M-OTHER outside the recipient's markets" in refused.text
    again = await api.put("/api/v1/me/notifications", json={**wanted, "active": False}, headers=me)
    assert again.json()["id"] == saved.json()["id"]  # one setting per person, replaced
    token_only = await api.put("/api/v1/me/notifications", json=wanted, headers=ADMIN)
    assert token_only.status_code == 422 and "only a person's account" in token_only.text


async def test_rule_packs_export_and_import_as_yaml(api: httpx.AsyncClient, rules_api: RulesService):
    exported = await api.get("/api/v1/rule-packs/export", params={"source": "builtin"}, headers=ADMIN)
    assert exported.headers["content-type"].startswith("application/yaml")
    pack = yaml.safe_load(exported.text)
    assert "fire-alarm" in {r["id"] for r in pack["rules"]}
    mine = {"name": "north-market", "rules": [{**HOT, "id": "pack-hot", "scope": {"kind": "env_sensor",
                                                                                 "markets": ["NORTH"]}}]}
    imported = await api.post("/api/v1/rule-packs/import", content=yaml.safe_dump(mine), headers=ADMIN)
    assert imported.json() == {"created": 1, "updated": 0, "unchanged": 0}
    assert (await api.get("/api/v1/rules/pack-hot", headers=ADMIN)).json()["source"] == "pack:north-market"
    broken = {"rules": [{**HOT, "id": "pack-broken", "for": "soon"}]}
    refused = await api.post("/api/v1/rule-packs/import", content=yaml.safe_dump(broken), headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["detail"].startswith("rules[0] (pack-broken).for:")


async def test_removal_tasks_are_listed_and_closed(api: httpx.AsyncClient, rules_api: RulesService):
    rules_api.process(envelope("FD-API", "food_detector", food_result(False, "R-API", stall="E-05"), at=now()))

    async def open_tasks() -> list[dict]:
        tasks = (await api.get("/api/v1/removal-tasks", params={"status": "open"}, headers=ADMIN)).json()
        return [t for t in tasks if t["device_id"] == "FD-API"]

    [task] = await eventually(open_tasks)
    closed = await api.post(f"/api/v1/removal-tasks/{task['id']}/close",
                            json={"action_taken": "removed 3 kg, destroyed"}, headers=ADMIN)
    assert (closed.json()["status"], closed.json()["closed_by"]) == ("archived", "admin-token")
    again = await api.post(f"/api/v1/removal-tasks/{task['id']}/close", json={"action_taken": "x"}, headers=ADMIN)
    assert again.status_code == 409


async def test_the_data_quality_report_is_served_as_html_csv_and_json(api: httpx.AsyncClient,
                                                                     rules_api: RulesService):
    await Market.get_or_create(code="RPT", defaults={"name": "Report market"})
    params = {"market": "RPT", "day": str(now().date())}
    html = await api.get("/api/v1/reports/data-quality", params=params, headers=ADMIN)
    assert html.status_code == 200 and "Report market" in html.text
    csv_text = (await api.get("/api/v1/reports/data-quality", params={**params, "format": "csv"}, headers=ADMIN)).text
    assert csv_text.startswith("market,day,section,subject,measure,value")
    data = (await api.get("/api/v1/reports/data-quality", params={**params, "format": "json"}, headers=ADMIN)).json()
    assert data["summary"]["devices"] == 0
    missing = await api.get("/api/v1/reports/data-quality", params={**params, "market": "NOPE"}, headers=ADMIN)
    assert missing.status_code == 404


async def test_scheduled_checks_can_be_listed_and_run_now(api: httpx.AsyncClient, rules_api: RulesService):
    status = (await api.get("/api/v1/rule-jobs", headers=ADMIN)).json()
    assert status["rules"] >= 15
    ran = await api.post("/api/v1/rule-jobs/metrology/run", headers=ADMIN)
    assert ran.status_code == 200 and "metrology-overdue" in ran.json()["detail"]
    assert (await api.post("/api/v1/rule-jobs/nope/run", headers=ADMIN)).status_code == 404
