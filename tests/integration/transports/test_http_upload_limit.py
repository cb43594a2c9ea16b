"""HTTP ingest's per-device upload limit comes from `api.device_upload_rate` / `api.device_upload_burst`:
an operator lowers it for a noisy detector model or raises it for a gateway that batches many devices."""

from __future__ import annotations

from pathlib import Path

from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform


async def test_the_upload_limit_per_device_follows_the_settings(tmp_path: Path) -> None:
    registry = f"sqlite://{tmp_path / 'registry.sqlite3'}"
    limit = {"device_upload_rate": 0.01, "device_upload_burst": 3}
    async with start_test_platform(tmp_path, registry, api=limit, coap={"enabled": False}) as platform, \
            serve_api(platform.app) as api:  # fmt: skip
        await ensure_market(api, "UPL1")
        key = await create_vendor(api, "uplimit")
        rows = [{"serial": f"UP{n}", "kind": "env_sensor", "market": "UPL1"} for n in range(2)]
        registered = await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={"devices": rows})
        assert registered.status_code == 200, registered.text
        (first, first_secret), (second, second_secret) = [(r["device_id"], r["secret"])
                                                          for r in registered.json()["rows"]]

        async def upload(device: str, secret: str, seq: int) -> int:
            message = [{"seq": seq, "payload": {"temperature_c": 20.0, "humidity_pct": 50.0}}]
            response = await api.post(f"/api/v1/ingest/{device}/telemetry", json=message,
                                      headers={"Authorization": f"Bearer {device}:{secret}"})
            return response.status_code

        assert [await upload(first, first_secret, n) for n in range(5)] == [200, 200, 200, 429, 429]
        assert await upload(second, second_secret, 0) == 200  # the limit is per device
        assert (await api.get("/healthz", headers=ADMIN)).status_code == 200
