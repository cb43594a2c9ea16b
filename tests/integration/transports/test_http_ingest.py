"""HTTP ingest over real HTTP (uvicorn on a loopback port): detectors' results, generic uplinks, device auth."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import httpx
import pytest

from accounts.service import Accounts
from api import create_app
from api.context import ApiContext
from api.routes.ingest import RESULT_SEQ_BASE, result_seq, sign
from broker.models import DeadLetter
from broker.ratelimit import RateLimiter
from tests.factories import serve_api
from tests.integration.transports.conftest import Stack

pytestmark = pytest.mark.timeout(60)

TESTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


@pytest.fixture(scope="module")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ApiContext(registry=stack.registry, accounts=Accounts(), admin_token="transport-admin",
                     services={"pipeline": stack.pipeline})
    app = create_app(ctx)
    async with serve_api(app) as client:
        yield client


def result(result_id: str, channel: int = 1, passed: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "type": "test_result", "result_id": result_id, "tested_at": TESTED.isoformat(), "channel": channel,
        "sample_name": "青菜", "stall_no": "A-12", "item": "有机磷农药残留", "value": 12.5, "unit": "%",
        "limit": 50.0, "passed": passed, **extra,
    }


def bearer(stack: Stack, device: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {device}:{stack.secrets[device]}"}


def signed(stack: Stack, device: str, body: bytes, at: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {"X-MF-Timestamp": str(stamp), "X-MF-Signature": sign(stack.secrets[device], stamp, body),
            "Content-Type": "application/json"}


async def test_detector_batch_is_stored_once_with_bearer_and_hmac(stack: Stack, http: httpx.AsyncClient) -> None:
    device = stack.ids["fd"][0]
    # Five channels tested in the same second: results must not collide in the store.
    batch = [result(f"R-{n}", channel=n + 1, passed=n != 3) for n in range(5)]
    url = f"/api/v1/ingest/{device}/results"

    response = await http.post(url, json=batch, headers=bearer(stack, device))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rejected"] == []
    assert [r["status"] for r in body["results"]] == ["stored"] * 5
    assert sorted(body["seqs"]) == sorted(result_seq(f"R-{n}") for n in range(5))
    assert all(RESULT_SEQ_BASE <= s < 2 * RESULT_SEQ_BASE for s in body["seqs"])
    assert await stack.store.count(device, "food_detector.event") == 5

    # The same batch again (the detector did not see the answer): acknowledged, stored once.
    again = await http.post(url, json=batch, headers=bearer(stack, device))
    assert again.status_code == 200
    assert sorted(again.json()["seqs"]) == sorted(body["seqs"])
    assert await stack.store.count(device, "food_detector.event") == 5

    # HMAC-signed: two new results and one already stored.
    signed_batch = json.dumps([result("R-5", channel=6), result("R-6", channel=7), result("R-0")]).encode()
    response = await http.post(url, content=signed_batch, headers=signed(stack, device, signed_batch))
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["stored"] * 3
    response = await http.post(url, content=signed_batch, headers=signed(stack, device, signed_batch))
    assert response.status_code == 200
    assert await stack.store.count(device, "food_detector.event") == 7

    # Stored as the kind's event with the result's own fields.
    rows = await stack.store.range(device, "food_detector.event", TESTED - timedelta(seconds=1),
                                   TESTED + timedelta(seconds=2))
    assert sorted(r.fields["result_id"] for r in rows) == [f"R-{n}" for n in range(7)]

    # A single result object (not an array) is accepted too.
    one = await http.post(url, json=result("R-7", channel=8), headers=bearer(stack, device))
    assert one.status_code == 200 and one.json()["results"][0]["status"] == "stored"


async def test_bad_results_are_rejected_one_by_one(stack: Stack, http: httpx.AsyncClient) -> None:
    device = stack.ids["fd"][1]
    batch: list[Any] = [
        result("OK-1"),
        {k: v for k, v in result("X").items() if k != "result_id"},  # no result_id
        result("BAD-TS", tested_at="2026-11-23 08:15"),  # no zone
        result("BAD-VALUE", channel=99),  # out of range for the schema
        result("FUTURE", tested_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        "not an object",
    ]
    before = await DeadLetter.filter(transport="http", device_id=device).count()
    response = await http.post(f"/api/v1/ingest/{device}/results", json=batch, headers=bearer(stack, device))
    assert response.status_code == 200, response.text
    outcomes = response.json()["results"]
    assert [(o["status"], o.get("reason")) for o in outcomes] == [
        ("stored", None), ("rejected", "schema"), ("rejected", "schema"), ("rejected", "schema"),
        ("rejected", "future_timestamp"), ("rejected", "malformed"),
    ]
    assert "result_id" in outcomes[1]["detail"] and "tested_at" in outcomes[2]["detail"]
    assert len(response.json()["rejected"]) == 5
    assert await stack.store.count(device, "food_detector.event") == 1
    assert await DeadLetter.filter(transport="http", device_id=device).count() == before + 5


async def test_bad_credentials_are_401(stack: Stack, http: httpx.AsyncClient) -> None:
    device, other = stack.ids["fd"][2], stack.ids["fd"][0]
    url = f"/api/v1/ingest/{device}/results"
    body = json.dumps([result("A-1")]).encode()
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": f"Bearer {device}:wrong-secret"},
        {"Authorization": f"Bearer {device}"},
        {"Authorization": f"Basic {device}:{stack.secrets[device]}"},
        bearer(stack, other),  # another device's valid credential
        {**signed(stack, device, body), "X-MF-Signature": "sha256=" + "0" * 64},  # bad signature
        signed(stack, device, body + b" "),  # signed another body
        signed(stack, device, body, at=int(time.time()) - 301),  # stale
        signed(stack, device, body, at=int(time.time()) + 400),  # from the future
        {**signed(stack, device, body), "X-MF-Timestamp": "yesterday"},
        signed(stack, other, body),  # signed with another device's secret
    ]
    for headers in cases:
        response = await http.post(url, content=body, headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["detail"]
    assert await stack.store.count(device, "food_detector.event") == 0

    ok = await http.post(url, content=body, headers=signed(stack, device, body, at=int(time.time()) - 200))
    assert ok.status_code == 200

    # A revoked credential stops working at once, with either scheme.
    await stack.registry.revoke_credentials(device)
    assert (await http.post(url, content=body, headers=bearer(stack, device))).status_code == 401
    assert (await http.post(url, content=body, headers=signed(stack, device, body))).status_code == 401


async def test_generic_channel_route(stack: Stack, http: httpx.AsyncClient) -> None:
    device = stack.ids["env"][0]
    url = f"/api/v1/ingest/{device}/telemetry"
    now = datetime.now(UTC) - timedelta(seconds=30)
    one = {"seq": 1, "ts": now.isoformat(), "payload": {"temperature_c": 4.2, "humidity_pct": 81}}
    response = await http.post(url, json=one, headers=bearer(stack, device))
    assert response.status_code == 200, response.text
    assert response.json() == {"seqs": [1], "high": 1, "rejected": []}

    batch = [{"seq": 2, "payload": {"temperature_c": 4.3, "humidity_pct": 80}},
             {"seq": 3, "payload": {"temperature_c": 4.4, "humidity_pct": 180}},
             {"payload": {"temperature_c": 1.0, "humidity_pct": 1}}]
    body = cbor2.dumps(batch)
    response = await http.post(url, content=body, headers={**bearer(stack, device),
                                                           "Content-Type": "application/cbor"})
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["seqs"] == [2] and ack["high"] == 2
    assert [(r["seq"], r["reason"]) for r in ack["rejected"]] == [(3, "schema"), (None, "malformed")]
    assert await stack.store.count(device, "env_sensor.telemetry") == 2

    state = json.dumps({"seq": 4, "payload": {"firmware_version": "1.0.3"}}).encode()
    response = await http.post(f"/api/v1/ingest/{device}/state", content=state,
                               headers=signed(stack, device, state))
    assert response.status_code == 200 and response.json()["seqs"] == [4]

    headers = bearer(stack, device)
    assert (await http.post(url, content=b"{nope", headers=headers)).status_code == 422
    assert (await http.post(url, content=b'"a string"', headers=headers)).status_code == 422
    assert (await http.post(url, json=[], headers=headers)).status_code == 422
    too_many = [{"seq": 100 + i, "payload": {"temperature_c": 1, "humidity_pct": 1}} for i in range(501)]
    assert (await http.post(url, json=too_many, headers=headers)).status_code == 413
    big = json.dumps({"seq": 5, "payload": {"pad": "x" * 70_000}}).encode()
    assert (await http.post(url, content=big, headers=headers)).status_code == 413
    assert (await http.post(f"/api/v1/ingest/{device}/cmd", json=one, headers=headers)).status_code == 404


async def test_routes_are_in_openapi(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    results = spec["paths"]["/api/v1/ingest/{device_id}/results"]["post"]
    generic = spec["paths"]["/api/v1/ingest/{device_id}/{channel}"]["post"]
    assert {"401", "413", "422", "503"} <= set(results["responses"])
    assert {p["name"] for p in results["parameters"]} >= {"device_id", "authorization", "x-mf-signature",
                                                          "x-mf-timestamp"}
    assert "application/cbor" in generic["requestBody"]["content"]
    assert results["x-auth"] == generic["x-auth"] == "device"  # the role walk treats them as device routes


async def test_api_only_server_checks_credentials_then_answers_503(stack: Stack) -> None:
    """An API process without ingest (`serve --role api`): a device learns its credential is fine and to retry."""
    ctx = ApiContext(registry=stack.registry, accounts=Accounts(), admin_token="transport-admin")
    device = stack.ids["fd"][0]
    body = json.dumps([result("API-ONLY-1")]).encode()
    async with serve_api(create_app(ctx)) as client:
        url = f"/api/v1/ingest/{device}/results"
        refused = await client.post(url, content=body, headers={"Authorization": f"Bearer {device}:nope"})
        assert refused.status_code == 401
        later = await client.post(url, content=body, headers=bearer(stack, device))
        assert later.status_code == 503 and later.headers["retry-after"] == "30"
        assert "ingest is not running" in later.json()["detail"]


async def test_a_device_over_its_upload_rate_gets_429_with_retry_after(stack: Stack) -> None:
    limiter = RateLimiter(0.2, 2)
    ctx = ApiContext(registry=stack.registry, accounts=Accounts(), admin_token="transport-admin",
                     services={"pipeline": stack.pipeline, "ingest_limiter": limiter})
    noisy, quiet = stack.ids["fd"][0], stack.ids["fd"][1]
    async with serve_api(create_app(ctx)) as client:
        statuses = []
        for n in range(3):
            response = await client.post(f"/api/v1/ingest/{noisy}/results", json=[result(f"RATE-{n}")],
                                         headers=bearer(stack, noisy))
            statuses.append(response.status_code)
        assert statuses == [200, 200, 429]
        assert 1 <= int(response.headers["retry-after"]) <= 5 and "uploads/s" in response.json()["detail"]
        other = await client.post(f"/api/v1/ingest/{quiet}/results", json=[result("RATE-Q")],
                                  headers=bearer(stack, quiet))
        assert other.status_code == 200
        # Bad credentials are refused before the limit is consulted: nobody can spend a device's budget.
        forged = await client.post(f"/api/v1/ingest/{quiet}/results", json=[result("RATE-F")],
                                   headers={"Authorization": f"Bearer {quiet}:forged"})
        assert forged.status_code == 401
    assert limiter.refused == 1
