"""Request limits: a vendor key or an address over its budget gets 429 with Retry-After; other keys and the
health check carry on."""

from __future__ import annotations

from pathlib import Path

from tests.factories import ADMIN, serve_api, start_test_platform


async def test_a_runaway_key_and_a_flooding_address_are_slowed_down_alone(tmp_path: Path, registry_url_factory) -> None:
    limits = {"key_rate": 0.01, "key_burst": 3, "ip_rate": 0.01, "ip_burst": 8}
    async with start_test_platform(tmp_path, registry_url_factory("sqlite"), api=limits) as platform, \
            serve_api(platform.app) as api:
        keys = []
        for code in ("runaway", "calm"):  # 2 of the address's 8
            response = await api.post("/api/v1/admin/vendors", json={"code": code, "name": code}, headers=ADMIN)
            keys.append(response.json()["api_key"])
        runaway, calm = ({"X-API-Key": k} for k in keys)
        statuses = [(await api.get("/api/v1/vendor/devices", headers=runaway)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await api.get("/api/v1/vendor/devices", headers=runaway)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "API key" in refused.json()["detail"]
        assert (await api.get("/api/v1/vendor/devices", headers=calm)).status_code == 200  # its own budget

        statuses = [(await api.get("/api/v1/kinds")).status_code for _ in range(7)]  # 6 left of the address's 8
        assert statuses == [200] * 6 + [429]
        assert (await api.get("/healthz")).status_code == 200
