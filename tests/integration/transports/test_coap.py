"""The CoAP transport over real UDP sockets: OSCORE per device, uplinks into the real pipeline, Observe, Block2."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets as pysecrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap.message import Direction
from aiocoap.numbers import codes

from broker.coap import BlobResource, CoapServer
from broker.coap_security import device_client_context
from tests.integration.transports.conftest import Stack

pytestmark = pytest.mark.timeout(120)

START = datetime.now(UTC) - timedelta(minutes=1)


def message(seq: int, **payload: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": (START + timedelta(milliseconds=seq)).isoformat(), "payload": payload}


@pytest.fixture(scope="module")
async def coap(stack: Stack) -> AsyncIterator[CoapServer]:
    server = CoapServer("127.0.0.1", 0, stack.pipeline, stack.registry, state_path=stack.data_dir / "coap-a.db")
    stack.registry.listeners.append(server)
    await server.start()
    try:
        yield server
    finally:
        stack.registry.listeners.remove(server)
        await server.aclose()


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    try:
        yield ctx
    finally:
        await ctx.shutdown()


def base(server: CoapServer) -> str:
    return f"coap://127.0.0.1:{server.port}"


_DEVICE_CONTEXTS: dict[tuple[str, str], Any] = {}


def as_device(client: aiocoap.Context, server: CoapServer, device_id: str, secret: str) -> None:
    """Make `client` talk as the device. One context per device and secret for the whole module: like firmware,
    a device never starts its OSCORE sequence numbers over (the server's replay window would refuse them)."""
    ctx = _DEVICE_CONTEXTS.setdefault((device_id, secret), device_client_context(device_id, secret))
    client.client_credentials[base(server) + "/*"] = ctx


async def post(client: aiocoap.Context, server: CoapServer, path: str, body: bytes, cf: int = 50) -> aiocoap.Message:
    request = aiocoap.Message(code=codes.POST, uri=f"{base(server)}/{path}", payload=body, content_format=cf)
    async with asyncio.timeout(20):
        return await client.request(request).response


class Udp(asyncio.DatagramProtocol):
    """A bare UDP socket: what arrives is queued, nothing is interpreted."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


async def raw_exchange(port: int, datagrams: list[bytes], wait: float = 3.0) -> list[aiocoap.Message]:
    """Send datagrams from one socket; decode whatever comes back within `wait` seconds of the last one."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Udp, remote_addr=("127.0.0.1", port))
    answers: list[aiocoap.Message] = []
    try:
        for data in datagrams:
            transport.sendto(data)
        with_timeout = loop.time() + wait
        while loop.time() < with_timeout:
            try:
                async with asyncio.timeout(max(0.05, with_timeout - loop.time())):
                    data = await proto.received.get()
            except TimeoutError:
                break
            answers.append(aiocoap.Message.decode(data))
            if len(answers) >= len(datagrams):
                break
    finally:
        transport.close()
    return answers


def protected_datagram(
    device_id: str, secret_ctx: Any, channel: str, body: bytes
) -> tuple[bytes, Any]:
    """A confirmable OSCORE-protected POST as bytes (new MID and token), and the request id for the answer."""
    plain = aiocoap.Message(code=codes.POST, uri_path=("mf", "v1", device_id, "up", channel), payload=body,
                            content_format=50)
    plain.direction = Direction.OUTGOING
    protected, request_id = secret_ctx.protect(plain)
    return reencode(protected), request_id


def reencode(msg: aiocoap.Message) -> bytes:
    msg.mtype = aiocoap.CON
    msg.mid = int.from_bytes(os.urandom(2), "big")
    msg.token = os.urandom(4)
    return msg.encode()


def unprotect(secret_ctx: Any, response: aiocoap.Message, request_id: Any) -> aiocoap.Message:
    response.direction = Direction.INCOMING
    inner, _ = secret_ctx.unprotect(response, request_id)
    return inner


# ---------------------------------------------------------------- uplinks


async def test_base_station_posts_telemetry_and_it_is_stored_and_acked(
    stack: Stack, coap: CoapServer, client: aiocoap.Context
) -> None:
    device = stack.ids["bs"][0]
    as_device(client, coap, device, stack.secrets[device])

    response = await post(client, coap, f"mf/v1/{device}/up/telemetry",
                          json.dumps(message(1, labels_connected=120, queue_depth=3)).encode())
    assert response.code == codes.CHANGED, response.payload
    assert response.opt.content_format == 50
    assert json.loads(response.payload) == {"seqs": [1], "high": 1, "rejected": []}
    assert await stack.store.count(device, "esl_base_station.telemetry") == 1

    # CBOR in → CBOR ack; an array with one bad message: the good ones are stored, the bad one is rejected.
    batch = [message(2, labels_connected=121), message(3, labels_connected=-5), message(4, labels_connected=119)]
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry", cbor2.dumps(batch), cf=60)
    assert response.code == codes.CHANGED
    assert response.opt.content_format == 60
    ack = cbor2.loads(response.payload)
    assert ack["seqs"] == [2, 4] and ack["high"] == 4
    assert [(r["seq"], r["reason"]) for r in ack["rejected"]] == [(3, "schema")]
    assert await stack.store.count(device, "esl_base_station.telemetry") == 3

    # A replayed message (same seq, new OSCORE request) is acknowledged again and stored once.
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry",
                          json.dumps(message(1, labels_connected=120, queue_depth=3)).encode())
    assert json.loads(response.payload)["seqs"] == [1]
    assert await stack.store.count(device, "esl_base_station.telemetry") == 3

    # An event and a state, on their channels.
    event = {"seq": 5, "payload": {"type": "label_joined", "label_id": "L-1", "rssi_dbm": -60}}
    response = await post(client, coap, f"mf/v1/{device}/up/event", json.dumps(event).encode())
    assert json.loads(response.payload)["seqs"] == [5]
    assert await stack.store.count(device, "esl_base_station.event") == 1


async def test_malformed_and_unknown_paths_get_diagnostics(
    stack: Stack, coap: CoapServer, client: aiocoap.Context
) -> None:
    device = stack.ids["bs"][1]
    as_device(client, coap, device, stack.secrets[device])
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry", b"{not json")
    assert response.code == codes.BAD_REQUEST
    assert b"not JSON" in response.payload
    response = await post(client, coap, f"mf/v1/{device}/up/commands", json.dumps(message(1)).encode())
    assert response.code == codes.NOT_FOUND
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry", b"<xml/>", cf=41)
    assert response.code == codes.UNSUPPORTED_CONTENT_FORMAT
    # Another device's path with this device's context: authenticated, but not allowed there.
    other = stack.ids["bs"][2]
    response = await post(client, coap, f"mf/v1/{other}/up/telemetry", json.dumps(message(1)).encode())
    assert response.code == codes.FORBIDDEN


async def test_oversized_uplink_is_413_and_the_server_keeps_serving(
    stack: Stack, coap: CoapServer, client: aiocoap.Context
) -> None:
    device = stack.ids["bs"][1]
    as_device(client, coap, device, stack.secrets[device])
    big = json.dumps({"seq": 9, "payload": {"labels_connected": 1, "pad": "x" * 70_000}}).encode()
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry", big)  # sent with Block1
    assert response.code == codes.REQUEST_ENTITY_TOO_LARGE
    assert response.opt.size1 == stack.pipeline.max_payload_bytes
    assert b"at most" in response.payload or b"larger than" in response.payload
    # A 5 KiB uplink (Block1-assembled) is fine.
    medium = [message(10 + i, labels_connected=i) for i in range(60)]
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry", json.dumps(medium).encode())
    assert response.code == codes.CHANGED
    assert json.loads(response.payload)["seqs"] == list(range(10, 70))


async def test_garbage_datagrams_never_stop_the_server(
    stack: Stack, coap: CoapServer, client: aiocoap.Context
) -> None:
    rng = pysecrets.SystemRandom()
    garbage = [os.urandom(rng.randint(1, 1400)) for _ in range(200)]
    # Valid CoAP headers with nonsense inside: a CON POST with a random OSCORE option and random payload.
    for _ in range(50):
        msg = aiocoap.Message(code=codes.POST, uri_path=("mf", "v1", "acme-BS000", "up", "x"), payload=os.urandom(64))
        msg.opt.oscore = os.urandom(rng.randint(1, 12))
        garbage.append(reencode(msg))
    # An unprotected 4 KiB POST in one datagram, and a plain GET of the command resource.
    plain = aiocoap.Message(code=codes.POST, uri_path=("mf", "v1", "acme-BS000", "up", "telemetry"),
                            payload=b"{" + b" " * 4000 + b"}")
    answers = await raw_exchange(coap.port, [reencode(plain)])
    assert answers and answers[0].code == codes.UNAUTHORIZED
    await raw_exchange(coap.port, garbage, wait=1.0)

    device = stack.ids["bs"][2]
    as_device(client, coap, device, stack.secrets[device])
    body = json.dumps(message(1, labels_connected=1)).encode()
    response = await post(client, coap, f"mf/v1/{device}/up/telemetry", body)
    assert response.code == codes.CHANGED


# ---------------------------------------------------------------- authentication


async def test_wrong_and_revoked_credentials_are_refused(stack: Stack, coap: CoapServer) -> None:
    device = stack.ids["bs"][3]
    body = json.dumps(message(1, labels_connected=7)).encode()

    wrong = device_client_context(device, "not-the-secret-" + "x" * 28)
    datagram, _ = protected_datagram(device, wrong, "telemetry", body)
    [answer] = await raw_exchange(coap.port, [datagram])
    assert answer.code == codes.UNAUTHORIZED
    assert answer.opt.oscore is None  # refused in the clear: we hold no key to protect it with

    unknown = device_client_context("acme-NOPE", "x" * 43)
    datagram, _ = protected_datagram("acme-NOPE", unknown, "telemetry", body)
    [answer] = await raw_exchange(coap.port, [datagram])
    assert answer.code == codes.UNAUTHORIZED

    # The right secret works (first contact answers 4.01 + Echo inside OSCORE, which the client repeats).
    right = _DEVICE_CONTEXTS.setdefault((device, stack.secrets[device]),
                                        device_client_context(device, stack.secrets[device]))
    datagram, request_id = protected_datagram(device, right, "telemetry", body)
    [answer] = await raw_exchange(coap.port, [datagram])
    first = unprotect(right, answer, request_id)
    assert first.code == codes.UNAUTHORIZED and first.opt.echo is not None
    plain = aiocoap.Message(code=codes.POST, uri_path=("mf", "v1", device, "up", "telemetry"), payload=body,
                            content_format=50, echo=first.opt.echo)
    plain.direction = Direction.OUTGOING
    protected, request_id = right.protect(plain)
    [answer] = await raw_exchange(coap.port, [reencode(protected)])
    stored = unprotect(right, answer, request_id)
    assert stored.code == codes.CHANGED and json.loads(stored.payload)["seqs"] == [1]

    # Replaying the captured datagram (new MID and token, same OSCORE sequence number) is refused.
    protected.mid = None
    [answer] = await raw_exchange(coap.port, [reencode(protected)])
    assert answer.code == codes.UNAUTHORIZED and b"replay" in answer.payload

    # Revocation takes effect at once.
    await stack.registry.revoke_credentials(device)
    datagram, _ = protected_datagram(device, right, "telemetry", json.dumps(message(2, labels_connected=7)).encode())
    [answer] = await raw_exchange(coap.port, [datagram])
    assert answer.code == codes.UNAUTHORIZED
    assert await stack.store.count(device, "esl_base_station.telemetry") == 1

    # A rotated secret works again; the old one does not.
    new_secret = await stack.registry.rotate_credential(device)
    stack.secrets[device] = new_secret
    client = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    try:
        as_device(client, coap, device, new_secret)
        response = await post(client, coap, f"mf/v1/{device}/up/telemetry",
                              json.dumps(message(3, labels_connected=8)).encode())
        assert response.code == codes.CHANGED
    finally:
        await client.shutdown()
    datagram, _ = protected_datagram(device, device_client_context(device, stack.secrets[device] + "x"),
                                     "telemetry", body)
    [answer] = await raw_exchange(coap.port, [datagram])
    assert answer.code == codes.UNAUTHORIZED


async def test_replay_window_survives_a_restart(stack: Stack) -> None:
    device = stack.ids["bs"][0]
    state = stack.data_dir / "coap-restart.db"
    ctx = device_client_context(device, stack.secrets[device], sender_sequence_number=1000)
    body = json.dumps(message(200, labels_connected=1)).encode()

    async def send(server: CoapServer, protected: aiocoap.Message, request_id: Any) -> aiocoap.Message:
        [answer] = await raw_exchange(server.port, [reencode(protected)])
        if answer.opt.oscore is None:
            return answer
        return unprotect(ctx, answer, request_id)

    def protect(echo: bytes | None = None) -> tuple[aiocoap.Message, Any]:
        plain = aiocoap.Message(code=codes.POST, uri_path=("mf", "v1", device, "up", "telemetry"), payload=body,
                                content_format=50, echo=echo)
        plain.direction = Direction.OUTGOING
        return ctx.protect(plain)

    first = CoapServer("127.0.0.1", 0, stack.pipeline, stack.registry, state_path=state)
    await first.start()
    try:
        protected, rid = protect()
        challenge = await send(first, protected, rid)
        assert challenge.code == codes.UNAUTHORIZED and challenge.opt.echo
        captured, rid = protect(challenge.opt.echo)
        assert (await send(first, captured, rid)).code == codes.CHANGED

        # A crash: a second server opens the same state while the first still runs (nothing written back).
        crashed = CoapServer("127.0.0.1", 0, stack.pipeline, stack.registry, state_path=state)
        await crashed.start()
        try:
            answer = await send(crashed, captured, rid)
            # Window unknown after a crash: the replay only earns an Echo challenge, it is never processed.
            assert answer.code == codes.UNAUTHORIZED and answer.opt.echo is not None
        finally:
            await crashed.aclose()
    finally:
        await first.aclose()  # clean shutdown writes the window back

    second = CoapServer("127.0.0.1", 0, stack.pipeline, stack.registry, state_path=state)
    await second.start()
    try:
        answer = await send(second, captured, rid)
        assert answer.code == codes.UNAUTHORIZED and b"replay" in answer.payload
        fresh, rid = protect()
        answer = await send(second, fresh, rid)  # the next number is accepted at once: no Echo after a clean stop
        assert answer.code == codes.CHANGED, answer
    finally:
        await second.aclose()


# ---------------------------------------------------------------- commands (Observe)


async def test_observe_delivers_commands_queued_and_live(
    stack: Stack, coap: CoapServer, client: aiocoap.Context
) -> None:
    device = stack.ids["bs"][2]
    as_device(client, coap, device, stack.secrets[device])
    queued_id = await coap.send_command(device, {"command": "ping"})
    assert coap.pending_commands(device) == 1

    request = client.request(aiocoap.Message(code=codes.GET, uri=f"{base(coap)}/mf/v1/{device}/down/cmd", observe=0))
    async with asyncio.timeout(20):
        first = await request.response
        assert first.code == codes.CONTENT
        assert json.loads(first.payload) == {"command": "ping", "id": queued_id}
        assert coap.observing(device) and coap.pending_commands(device) == 0

        live_id = await coap.send_command(device, {"command": "relay", "label_id": "L-7", "payload": {"page": 2}})
        received = []
        async for notification in request.observation:
            received.append(json.loads(notification.payload))
            if len(received) == 1:
                await coap.send_command(device, {"command": "reboot", "delay_s": 5, "id": "fixed-id"})
            if len(received) == 2:
                break
    request.observation.cancel()
    assert received[0] == {"command": "relay", "label_id": "L-7", "payload": {"page": 2}, "id": live_id}
    assert received[1]["id"] == "fixed-id"


async def test_command_poll_without_observe(stack: Stack, coap: CoapServer, client: aiocoap.Context) -> None:
    device = stack.ids["bs"][3]
    as_device(client, coap, device, stack.secrets[device])
    get = aiocoap.Message(code=codes.GET, uri=f"{base(coap)}/mf/v1/{device}/down/cmd")
    async with asyncio.timeout(20):
        empty = await client.request(get).response
        assert empty.code == codes.CONTENT and empty.payload == b""
        await coap.send_command(device, {"command": "ping"})
        got = await client.request(aiocoap.Message(code=codes.GET, uri=get.get_request_uri())).response
    assert json.loads(got.payload)["command"] == "ping"
    assert coap.pending_commands(device) == 0


# ---------------------------------------------------------------- Block2


async def test_block2_image_matches_its_hash(coap: CoapServer, client: aiocoap.Context) -> None:
    image = os.urandom(256 * 1024)
    resource = BlobResource(image)
    coap.mount(("esl", "img", "abc.bin"), resource)
    async with asyncio.timeout(60):
        response = await client.request(aiocoap.Message(code=codes.GET, uri=f"{base(coap)}/esl/img/abc.bin")).response
    assert response.code == codes.CONTENT
    assert len(response.payload) == len(image)
    assert hashlib.sha256(response.payload).hexdigest() == resource.sha256 == hashlib.sha256(image).hexdigest()
    for shadowing in (("mf", "v1"), ("mf", "v1", "acme-BS000"), ("mf", "v1", "acme-BS000", "up")):
        with pytest.raises(ValueError):
            coap.mount(shadowing, resource)
    coap.mount(("mf", "v1", "fw", "1"), resource)  # device ids contain '-', so mf/v1/fw/… is free
    async with asyncio.timeout(60):
        response = await client.request(aiocoap.Message(code=codes.GET, uri=f"{base(coap)}/mf/v1/fw/1")).response
    assert hashlib.sha256(response.payload).hexdigest() == resource.sha256


# ---------------------------------------------------------------- per-device request limit


async def test_a_device_over_its_rate_gets_4_29_with_max_age_and_others_do_not(stack: Stack) -> None:
    server = CoapServer("127.0.0.1", 0, stack.pipeline, stack.registry, state_path=stack.data_dir / "coap-rate.db",
                        device_rate_per_s=0.5, device_burst=3)
    await server.start()
    client = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    noisy, quiet = stack.ids["bs"][0], stack.ids["bs"][1]
    for device in (noisy, quiet):
        client.client_credentials[f"{base(server)}/mf/v1/{device}/*"] = _DEVICE_CONTEXTS.setdefault(
            (device, stack.secrets[device]), device_client_context(device, stack.secrets[device]))
    try:
        stored_before = await stack.store.count(noisy, "esl_base_station.telemetry")
        codes_seen = []
        for n in range(5):
            response = await post(client, server, f"mf/v1/{noisy}/up/telemetry",
                                  json.dumps(message(300 + n, labels_connected=n)).encode())
            codes_seen.append(response.code)
        assert codes_seen[:3] == [codes.CHANGED] * 3
        assert codes_seen[3:] == [codes.TOO_MANY_REQUESTS] * 2
        assert response.opt.max_age is not None and 1 <= response.opt.max_age <= 2
        assert b"requests/s" in response.payload
        # Refused uplinks were not stored (the device keeps them in its outbox and sends them later).
        assert await stack.store.count(noisy, "esl_base_station.telemetry") == stored_before + 3
        ok = await post(client, server, f"mf/v1/{quiet}/up/telemetry",
                        json.dumps(message(300, labels_connected=1)).encode())
        assert ok.code == codes.CHANGED
        assert server.stats.refused["rate"] == 2
    finally:
        await client.shutdown()
        await server.aclose()


async def test_a_flood_of_made_up_devices_is_throttled_per_address_and_known_devices_go_on(stack: Stack) -> None:
    server = CoapServer("127.0.0.1", 0, stack.pipeline, stack.registry,
                        state_path=stack.data_dir / "coap-flood.db", lookups_per_host_per_s=0.5, lookup_burst=20)
    await server.start()
    client = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    device = stack.ids["bs"][2]
    as_device(client, server, device, stack.secrets[device])
    try:
        first = await post(client, server, f"mf/v1/{device}/up/telemetry",
                           json.dumps(message(400, labels_connected=1)).encode())
        assert first.code == codes.CHANGED  # its context is now in memory
        body = json.dumps(message(1, labels_connected=1)).encode()
        flood = [protected_datagram(f"acme-FAKE{n}", device_client_context(f"acme-FAKE{n}", "x" * 43),
                                    "telemetry", body)[0] for n in range(40)]
        answers = await raw_exchange(server.port, flood, wait=5.0)
        refused = [a for a in answers if a.code == codes.UNAUTHORIZED]
        throttled = [a for a in answers if a.code == codes.SERVICE_UNAVAILABLE]
        assert len(answers) == 40 and len(refused) + len(throttled) == 40
        assert len(refused) <= 20 and len(throttled) >= 20  # at most the burst reached the registry
        assert all(a.opt.max_age and a.opt.max_age >= 1 for a in throttled)
        # The device the platform already knows is not held up by the flood from its address.
        again = await post(client, server, f"mf/v1/{device}/up/telemetry",
                           json.dumps(message(401, labels_connected=2)).encode())
        assert again.code == codes.CHANGED
    finally:
        await client.shutdown()
        await server.aclose()
