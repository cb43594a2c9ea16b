"""Image delivery to devices over real sockets: HTTP Range (resume after a cut) and CoAP Block2."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest
from aiocoap import GET, Context, Message, resource
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from firmware.device import DownloadInterrupted, ImageDownload
from tests.integration.firmware.conftest import Ota
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(120)
IMAGE = os.urandom(256 * 1024 + 123)  # not a multiple of any block size
SHA = hashlib.sha256(IMAGE).hexdigest()


async def _device_and_image(ota: Ota, code: str) -> tuple[dict, str, str]:
    fleet = await ota.vendor_fleet(code, 0)
    secrets = await fleet.add_devices(1, simulate=False)
    image = await fleet.upload("2.0.0", IMAGE)
    device_id, secret = next(iter(secrets.items()))
    return image, device_id, secret


def _auth(device_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {device_id}:{secret}"}


async def test_a_download_cut_half_way_resumes_where_it_stopped(ota: Ota) -> None:
    image, device_id, secret = await _device_and_image(ota, "resume")
    base = str(ota.api.base_url).rstrip("/")
    download = ImageDownload(url=f"{base}/api/v1/firmware/images/{image['id']}/blob",
                             device_id=device_id, secret=secret, sha256=image["sha256"], signature=image["signature"],
                             public_key=ota.service.keypair.public_key, size=image["size"],
                             chunk_size=image["size"])  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as device_http:  # a fresh connection, like a device after the cut
        with pytest.raises(DownloadInterrupted):
            await download.fetch_next(device_http, stop_after=len(IMAGE) // 2)
    assert download.received == len(IMAGE) // 2
    before = download.transferred

    async with httpx.AsyncClient(timeout=30) as device_http:
        data = await asyncio.wait_for(download.resume(device_http), 30)
    assert download.requests == 2  # the second request asked only for the rest
    assert download.transferred - before < 0.6 * len(IMAGE)  # issue 7: < 60 % of the image transferred again
    assert hashlib.sha256(data).hexdigest() == SHA == image["sha256"]


async def test_range_answers_are_partial_with_the_hash_as_etag(ota: Ota) -> None:
    image, device_id, secret = await _device_and_image(ota, "ranges")
    url = f"/api/v1/firmware/images/{image['id']}/blob"
    response = await ota.api.get(url, headers=_auth(device_id, secret) | {"Range": "bytes=1000-1999"})
    assert response.status_code == 206
    assert response.content == IMAGE[1000:2000]
    assert response.headers["content-range"] == f"bytes 1000-1999/{len(IMAGE)}"
    assert response.headers["etag"] == f'"{SHA}"' and response.headers["accept-ranges"] == "bytes"

    tail = await ota.api.get(url, headers=_auth(device_id, secret) | {"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == IMAGE[-10:]

    whole = await ota.api.get(url, headers=_auth(device_id, secret))
    assert whole.status_code == 200 and whole.content == IMAGE

    head = await ota.api.head(url, headers=_auth(device_id, secret))
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(IMAGE) and head.content == b""


@pytest.mark.parametrize("header", [f"bytes={len(IMAGE)}-", "bytes=9-3", "bytes=0-1,5-9", "pages=1"])
async def test_a_bad_range_is_416_with_the_size(ota: Ota, header: str) -> None:
    image, device_id, secret = await _device_and_image(ota, f"bad{abs(hash(header)) % 10**6}")
    response = await ota.api.get(f"/api/v1/firmware/images/{image['id']}/blob",
                                 headers=_auth(device_id, secret) | {"Range": header})  # fmt: skip
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(IMAGE)}"


async def test_a_range_for_another_image_version_restarts_from_zero(ota: Ota) -> None:
    image, device_id, secret = await _device_and_image(ota, "ifrange")
    headers = _auth(device_id, secret) | {"Range": "bytes=100-", "If-Range": f'"{"0" * 64}"'}
    response = await ota.api.get(f"/api/v1/firmware/images/{image['id']}/blob", headers=headers)
    assert response.status_code == 200 and response.content == IMAGE


async def test_only_an_authenticated_compatible_device_may_download(ota: Ota) -> None:
    image, device_id, _secret = await _device_and_image(ota, "authdl")
    url = f"/api/v1/firmware/images/{image['id']}/blob"
    assert (await ota.api.get(url)).status_code == 401
    assert (await ota.api.get(url, headers=_auth(device_id, "wrong"))).status_code == 401
    other = await ota.vendor_fleet("authdl2", 0)
    stranger_id, stranger_secret = next(iter((await other.add_devices(1, simulate=False)).items()))
    assert (await ota.api.get(url, headers=_auth(stranger_id, stranger_secret))).status_code == 404


async def test_coap_block2_serves_the_image_block_by_block(ota: Ota) -> None:
    image, device_id, _ = await _device_and_image(ota, "coapdl")
    caller: dict[str, str | None] = {"device": device_id}  # whom the transport's OSCORE layer authenticated
    site = resource.Site()
    site.add_resource(("mf", "v1", "fw"), ota.service.coap_resource(lambda request: caller["device"]))
    port = find_free_port()
    server = await Context.create_server_context(site, bind=("127.0.0.1", port))
    client = await Context.create_client_context()
    uri = f"coap://127.0.0.1:{port}/mf/v1/fw/{image['id']}"
    try:
        whole = await asyncio.wait_for(client.request(Message(code=GET, uri=uri)).response, 60)
        assert whole.payload == IMAGE
        assert whole.opt.size2 == len(IMAGE)

        # resuming after a break is asking for the next block: block 100 of 1024 bytes
        block = Message(code=GET, uri=uri, block2=BlockOption.BlockwiseTuple(100, False, 6))
        answer = await asyncio.wait_for(client.request(block, handle_blockwise=False).response, 10)
        assert answer.payload == IMAGE[100 * 1024 : 101 * 1024]
        assert answer.opt.block2.more and answer.opt.etag == bytes.fromhex(SHA)[:8]

        last = Message(code=GET, uri=uri, block2=BlockOption.BlockwiseTuple(len(IMAGE) // 1024, False, 6))
        answer = await asyncio.wait_for(client.request(last, handle_blockwise=False).response, 10)
        assert answer.payload == IMAGE[(len(IMAGE) // 1024) * 1024 :] and not answer.opt.block2.more

        missing = await asyncio.wait_for(client.request(Message(code=GET, uri=uri + "999")).response, 10)
        assert not missing.code.is_successful()

        caller["device"] = None  # an unprotected request, or a device that may not have this image
        refused = await asyncio.wait_for(client.request(Message(code=GET, uri=uri)).response, 10)
        assert refused.code == Code.UNAUTHORIZED
    finally:
        await client.shutdown()
        await server.shutdown()
