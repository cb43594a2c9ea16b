"""Image upload over real HTTP: validation, signing by the platform, vendor scoping."""

from __future__ import annotations

import base64
import hashlib

import pytest

from firmware.signing import generate_keypair, sign
from firmware.verify import verify_image
from tests.factories import ADMIN
from tests.integration.firmware.conftest import Ota, upload_image

pytestmark = pytest.mark.timeout(120)
IMAGE = bytes(range(256)) * 1024


async def test_an_uploaded_image_is_hashed_and_signed_with_the_platform_key(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("imgok", 0)
    image = await fleet.upload("1.4.2", IMAGE, release_notes="fixes tare drift", from_versions=">=1.0.0 <1.4.2")
    assert image["sha256"] == hashlib.sha256(IMAGE).hexdigest()
    assert image["size"] == len(IMAGE)
    assert image["compatible_model_ids"] == [fleet.model_id]
    key = (await ota.api.get("/api/v1/firmware/signing-key")).json()
    assert key["algorithm"] == "ed25519" and key["key_id"] == image["key_id"]
    verify_image(IMAGE, image["sha256"], image["signature"], key["public_key"], size=len(IMAGE))


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"version": "1.4"}, "version"), ({"version": "v1.4.2"}, "version"),
     ({"from_versions": ">=banana"}, "from_versions"), ({"sha256": "ab" * 32}, "sha256"),
     ({"compatible_models": ["nope"]}, "compatible_models[0]"), ({"model": "unknown"}, "model"),
     ({"from_version": "1.0.0"}, "from_version")],
)  # fmt: skip
async def test_uploads_with_bad_metadata_are_refused_naming_the_field(ota: Ota, fields: dict, field: str) -> None:
    fleet = await ota.vendor_fleet(f"bad{abs(hash(field + str(fields))) % 10**8}", 0)
    body = {"version": "1.4.2", "model": fleet.model} | fields
    response = await upload_image(ota.api, fleet.headers, body.pop("model"), body.pop("version"), IMAGE, **body)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_compatible_models_must_be_the_same_kind(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("kindmix", 0)
    other = await ota.api.post("/api/v1/vendor/models", json={"kind": "scale", "name": "S1"}, headers=fleet.headers)
    assert other.status_code == 201
    response = await upload_image(ota.api, fleet.headers, fleet.model, "1.0.0", IMAGE, compatible_models=["S1"])
    assert response.status_code == 422 and "scale" in response.json()["detail"]


async def test_an_image_may_declare_further_compatible_models(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("compat", 0)
    other = await ota.api.post("/api/v1/vendor/models", json={"kind": "env_sensor", "name": "M2"},
                               headers=fleet.headers)  # fmt: skip
    image = await fleet.upload("3.0.0", IMAGE, compatible_models=["M2"])
    assert image["compatible_model_ids"] == [fleet.model_id, other.json()["id"]]


async def test_a_version_is_uploaded_once(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("immut", 0)
    await fleet.upload("1.0.0", IMAGE)
    again = await upload_image(ota.api, fleet.headers, fleet.model, "1.0.0", IMAGE + b"x")
    assert again.status_code == 409


async def test_an_offline_signature_must_be_by_the_platform_key(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("offline", 0)
    platform_sig = sign(IMAGE, ota.service.keypair)
    accepted = await fleet.upload("1.0.0", IMAGE, signature=platform_sig)
    assert accepted["signature"] == platform_sig
    forged = sign(IMAGE, generate_keypair())
    refused = await upload_image(ota.api, fleet.headers, fleet.model, "1.0.1", IMAGE, signature=forged)
    assert refused.status_code == 422 and "signature" in refused.json()["detail"]
    garbage = base64.b64encode(b"x" * 64).decode()
    refused = await upload_image(ota.api, fleet.headers, fleet.model, "1.0.2", IMAGE, signature=garbage)
    assert refused.status_code == 422


async def test_an_empty_image_is_refused(ota: Ota) -> None:
    fleet = await ota.vendor_fleet("empty", 0)
    response = await upload_image(ota.api, fleet.headers, fleet.model, "1.0.0", b"")
    assert response.status_code == 422


async def test_vendors_see_only_their_images_and_operators_see_all(ota: Ota) -> None:
    mine = await ota.vendor_fleet("scopea", 0)
    theirs = await ota.vendor_fleet("scopeb", 0)
    image = await mine.upload("1.0.0", IMAGE)
    own = f"/api/v1/firmware/vendor/images/{image['id']}"
    assert (await ota.api.get(own, headers=mine.headers)).status_code == 200
    assert (await ota.api.get(own, headers=theirs.headers)).status_code == 404
    listed = (await ota.api.get("/api/v1/firmware/vendor/images", headers=theirs.headers)).json()
    assert image["id"] not in [i["id"] for i in listed]
    assert image["id"] in [i["id"] for i in (await ota.api.get("/api/v1/firmware/vendor/images",
                                                                headers=mine.headers)).json()]  # fmt: skip
    everything = (await ota.api.get("/api/v1/firmware/images", headers=ADMIN)).json()
    assert image["id"] in [i["id"] for i in everything]
    assert (await ota.api.get("/api/v1/firmware/images", headers=mine.headers)).status_code == 403


async def test_uploading_needs_a_vendor_key(ota: Ota) -> None:
    response = await upload_image(ota.api, ADMIN, "M1", "1.0.0", IMAGE)
    assert response.status_code in (401, 403)
