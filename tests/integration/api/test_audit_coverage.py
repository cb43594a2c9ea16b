"""Audit entries for every state change (issue 11): every POST/PUT/PATCH/DELETE in the OpenAPI spec leaves one
entry naming who, what, when, from where and the outcome, and the log exports the same rows as CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import httpx

from tests.factories import ADMIN

STATE_CHANGING = ("post", "put", "patch", "delete")
# Not operations of a person: device uplinks are telemetry and sign-in writes its own login entries.
NOT_AUDITED = ("/api/v1/ingest/", "/api/v1/auth/login")


async def test_every_state_changing_route_in_the_spec_writes_an_audit_entry(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    started = datetime.now(UTC) - timedelta(seconds=1)
    called: list[tuple[str, str]] = []
    for path, operations in spec["paths"].items():
        if path.startswith(NOT_AUDITED):
            continue
        for method in operations:
            if method not in STATE_CHANGING:
                continue
            url = re.sub(r"\{[^}]+\}", "audit-probe", path)
            async with api.stream(method, url, json={}, headers=ADMIN) as response:
                called.append((f"{method.upper()} {url}", str(response.status_code)))
    assert len(called) >= 20
    entries = (await api.get("/api/v1/audit", params={"since": started.isoformat(), "limit": 10_000},
                             headers=ADMIN)).json()
    seen = {(e["action"], str(e["status"])) for e in entries}
    missing = [c for c in called if c not in seen]
    assert not missing, f"state-changing calls without an audit entry: {missing}"
    probe = [e for e in entries if "audit-probe" in e["action"]]
    assert probe and all(e["actor"] == "admin-token" or e["actor"].startswith(("user:", "admin")) for e in probe)
    assert all(e["ip"] and e["at"] for e in probe)  # from where and when


async def test_the_audit_log_exports_as_csv_with_the_same_rows_as_the_query(api: httpx.AsyncClient) -> None:
    for name in ("csv-a", "csv-b", "csv-c"):
        body = {"username": name, "password": "correct horse battery", "role": "manager"}
        assert (await api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
    params = {"action": "POST /api/v1/users", "limit": 3}
    rows = (await api.get("/api/v1/audit", params=params, headers=ADMIN)).json()
    export = await api.get("/api/v1/audit", params={**params, "format": "csv"}, headers=ADMIN)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(export.text)))
    assert [int(r["id"]) for r in table] == [r["id"] for r in rows]
    for line, row in zip(table, rows, strict=True):
        assert (line["actor"], line["action"], line["ip"], int(line["status"])) == (
            row["actor"], row["action"], row["ip"], row["status"])
        assert "before" in line and "after" in line
    assert {"csv-a", "csv-b", "csv-c"} <= {r["after"]["username"] for r in rows}
    assert all(r["after"]["password"] == "***" for r in rows)  # secrets never reach the log or its export
    bad = await api.get("/api/v1/audit", params={"format": "xml"}, headers=ADMIN)
    assert bad.status_code == 422


async def test_the_audit_log_cannot_be_changed_through_the_api(api: httpx.AsyncClient) -> None:
    """Append-only: the spec offers no way to edit or delete entries, and trying is refused."""
    spec = (await api.get("/openapi.json")).json()
    audit_ops = {(m, p) for p, ops in spec["paths"].items() if p.startswith("/api/v1/audit") for m in ops}
    assert audit_ops == {("get", "/api/v1/audit")}
    before = len((await api.get("/api/v1/audit", params={"limit": 10_000}, headers=ADMIN)).json())
    for method in ("DELETE", "PUT", "PATCH"):
        assert (await api.request(method, "/api/v1/audit", headers=ADMIN)).status_code == 405
    after = (await api.get("/api/v1/audit", params={"limit": 10_000}, headers=ADMIN)).json()
    assert len(after) >= before  # nothing went away (the refused attempts are themselves logged)
