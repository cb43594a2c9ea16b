"""Through the running platform: a product keeps category, origin, unit, grade and promotion and every price
change says who, when and from where; a scale's self-check and tamper reports, sent over MQTT, make its
integrity state (issue 8, items 1 and 7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.factories import ADMIN
from tests.integration.retail.test_platform import MARKET, Device, eventually, floor, scale  # noqa: F401


async def test_a_product_keeps_its_facts_and_every_price_change_who_when_and_source(
    api: httpx.AsyncClient, floor: dict[str, Device]  # noqa: F811  (the fixture imported above)
) -> None:
    body = {"market": MARKET, "stall_no": "A01", "code": "7001", "name": "阳光玫瑰葡萄", "category": "水果",
            "origin": "云南宾川", "unit": "jin", "grade": "一级", "price": "18.00", "promo_price": "15.80",
            "promo_text": "周末特价", "trace_url": "https://trace.example/7001"}
    before = datetime.now(UTC)
    created = await api.post("/api/v1/retail/products", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    product = created.json()
    changed = await api.patch(f"/api/v1/retail/products/{product['id']}", json={"price": "19.50"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    after = datetime.now(UTC)

    stored = (await api.get(f"/api/v1/retail/products/{product['id']}", headers=ADMIN)).json()
    assert {k: stored[k] for k in ("category", "origin", "unit", "grade", "promo_price", "promo_text", "price")} == {
        "category": "水果", "origin": "云南宾川", "unit": "jin", "grade": "一级", "promo_price": "15.80",
        "promo_text": "周末特价", "price": "19.50"}
    history = (await api.get(f"/api/v1/retail/products/{product['id']}/prices", headers=ADMIN)).json()
    assert [(h["source"], h["old_price"], h["new_price"], h["accepted"]) for h in history] == [
        ("api", "18.00", "19.50", True), ("api", None, "18.00", True)]
    assert all(h["actor"] == "admin-token" for h in history)
    assert all(before <= datetime.fromisoformat(h["at"]) <= after for h in history)


async def test_self_check_and_tamper_reports_make_the_scales_integrity_state(
    api: httpx.AsyncClient, scale: Device  # noqa: F811
) -> None:
    url = f"/api/v1/retail/scales/{scale.device_id}/integrity"
    await scale.publish("event", {"type": "self_check", "passed": False, "details": "printer: paper low"})
    await scale.publish("event", {"type": "tamper", "reason": "seal_opened", "details": "seal broken"})
    await scale.publish("state", {"anti_cheat_ok": False})

    async def reported(ok: bool, count: int) -> dict[str, Any] | None:
        body = (await api.get(url, headers=ADMIN)).json()
        return body if body["anti_cheat_ok"] is ok and len(body["events"]) >= count else None

    body = await eventually(lambda: reported(False, 2))
    events = {(e["type"], e["ok"]): e for e in body["events"]}
    assert events[("self_check", False)]["details"] == "printer: paper low"
    assert events[("tamper", False)]["reason"] == "seal_opened"

    await scale.publish("event", {"type": "self_check", "passed": True, "details": "ok"})
    await scale.publish("state", {"anti_cheat_ok": True})  # resealed after an authorised calibration
    body = await eventually(lambda: reported(True, 3))
    assert body["events"][0]["type"] == "self_check" and body["events"][0]["ok"] is True  # newest first
