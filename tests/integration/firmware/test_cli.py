"""`marketfleet firmware keygen/sign/verify/upload` and `marketfleet ota status`, run as real processes against
the platform's HTTP server; mistakes end in one line and exit code 2."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.factories import ADMIN
from tests.integration.firmware.conftest import Ota

pytestmark = pytest.mark.timeout(180)


async def cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """Run `marketfleet …` without blocking the event loop that serves the API."""
    environment = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfleet", *args, cwd=tmp_path, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_keygen_sign_and_verify_as_a_device_would(tmp_path: Path) -> None:
    rc, out, _ = await cli(tmp_path, "firmware", "keygen")
    assert rc == 0
    key = json.loads(out)
    assert os.stat(key["key_file"]).st_mode & 0o777 == 0o600
    rc, _, err = await cli(tmp_path, "firmware", "keygen")
    assert rc == 2 and "already exists" in err and "Traceback" not in err

    image = tmp_path / "fw.bin"
    image.write_bytes(os.urandom(10_000))
    rc, out, _ = await cli(tmp_path, "firmware", "sign", str(image))
    signed = json.loads(out)
    assert rc == 0 and signed["key_id"] == key["key_id"] and signed["size"] == 10_000
    verify = ("firmware", "verify", str(image), "--signature", signed["signature"], "--public-key", key["public_key"])
    assert (await cli(tmp_path, *verify))[0] == 0

    tampered = bytearray(image.read_bytes())
    tampered[5000] ^= 0x01
    image.write_bytes(bytes(tampered))
    rc, _, err = await cli(tmp_path, *verify)
    assert rc == 1 and "bad_signature" in err


async def test_sign_without_a_key_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "fw.bin").write_bytes(b"x")
    rc, _, err = await cli(tmp_path, "firmware", "sign", "fw.bin")
    assert rc == 2 and "marketfleet firmware keygen" in err and "Traceback" not in err


async def test_upload_and_follow_a_campaign_from_the_command_line(ota: Ota, tmp_path: Path) -> None:
    fleet = await ota.vendor_fleet("clivendor", 3)
    image = tmp_path / "fw.bin"
    image.write_bytes(os.urandom(64 * 1024))
    url = str(ota.api.base_url).rstrip("/")
    upload = ("firmware", "upload", str(image), "--model", fleet.model, "--version", "2.0.0", "--url", url,
              "--notes", "fixes the tare drift")  # fmt: skip
    rc, out, err = await cli(tmp_path, *upload, MF_VENDOR_KEY=fleet.headers["X-API-Key"])
    assert rc == 0, err
    uploaded = json.loads(out)
    assert uploaded["version"] == "2.0.0" and uploaded["size"] == 64 * 1024

    rc, _, err = await cli(tmp_path, *upload, MF_VENDOR_KEY=fleet.headers["X-API-Key"])
    assert rc == 2 and "HTTP 409" in err and "already uploaded" in err
    rc, _, err = await cli(tmp_path, "firmware", "upload", str(image), "--model", "NOPE", "--version", "2.0.1",
                           "--url", url, MF_VENDOR_KEY=fleet.headers["X-API-Key"])  # fmt: skip
    assert rc == 2 and "HTTP 422" in err and "model" in err

    campaign = await ota.campaign(name="from the cli", image_id=uploaded["id"], waves=[{"name": "all"}])
    token = ADMIN["Authorization"].removeprefix("Bearer ")
    rc, out, err = await cli(tmp_path, "ota", "status", str(campaign["id"]), "--url", url, MF_TOKEN=token)
    assert rc == 0, err
    assert f"campaign {campaign['id']} 'from the cli': completed" in out and "3 of 3 succeeded" in out
    rc, out, _ = await cli(tmp_path, "ota", "status", str(campaign["id"]), "--url", url, "--no-follow", MF_TOKEN=token)
    assert rc == 0 and "wave 0 all [done] 100.0% done: 3 ok" in out
    rc, _, err = await cli(tmp_path, "ota", "status", "999999", "--url", url, MF_TOKEN=token)
    assert rc == 2 and "HTTP 404" in err
