"""OSCORE contexts of the CoAP transport without sockets: derivation, protection, replay state across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import aiocoap
import pytest
from aiocoap import oscore
from aiocoap.message import Direction
from aiocoap.numbers import codes

from broker.coap_security import (
    DEVICE_SENDER_ID,
    DeviceContexts,
    DeviceSecurityContext,
    OscoreStateStore,
    derive_master_secret,
    device_client_context,
)

DEVICE = "acme-BS1"
SECRET = "s" * 43


def through_bytes(message: aiocoap.Message) -> aiocoap.Message:
    message.mtype, message.mid = aiocoap.CON, 1
    wire = aiocoap.Message.decode(message.encode())
    wire.direction = Direction.INCOMING
    return wire


def request(
    ctx: DeviceSecurityContext, payload: bytes = b"{}", echo: bytes | None = None
) -> tuple[aiocoap.Message, object]:
    plain = aiocoap.Message(code=codes.POST, uri_path=("mf", "v1", DEVICE, "up", "telemetry"), payload=payload,
                            echo=echo)
    plain.direction = Direction.OUTGOING
    protected, request_id = ctx.protect(plain)
    return through_bytes(protected), request_id


def test_master_secret_is_deterministic_and_per_secret() -> None:
    assert derive_master_secret(SECRET) == derive_master_secret(SECRET)
    assert derive_master_secret(SECRET) != derive_master_secret(SECRET[:-1] + "t")
    assert len(derive_master_secret(SECRET)) == 16


def test_request_and_response_round_trip(tmp_path: Path) -> None:
    device = device_client_context(DEVICE, SECRET)
    platform = DeviceSecurityContext(DEVICE, SECRET, store=OscoreStateStore(tmp_path / "s.db"))
    wire, _ = request(device, b'{"seq":1}')
    assert oscore.verify_start(wire) == {oscore.COSE_PIV: b"\x00", oscore.COSE_KID: DEVICE_SENDER_ID,
                                         oscore.COSE_KID_CONTEXT: DEVICE.encode()}
    # A context without stored state never trusts its window: the first request earns an Echo challenge.
    with pytest.raises(oscore.ReplayErrorWithEcho) as challenge:
        platform.unprotect(wire)
    echo = challenge.value.echo
    wire, device_request = request(device, b'{"seq":1}', echo=echo)
    plain, platform_request = platform.unprotect(wire)
    assert plain.payload == b'{"seq":1}' and plain.opt.uri_path == ("mf", "v1", DEVICE, "up", "telemetry")

    answer = aiocoap.Message(code=codes.CHANGED, payload=b'{"seqs":[1]}')
    answer.direction = Direction.OUTGOING
    protected, _ = platform.protect(answer, platform_request)
    unprotected, _ = device.unprotect(through_bytes(protected), device_request)
    assert unprotected.payload == b'{"seqs":[1]}'

    with pytest.raises(oscore.ReplayError):
        platform.unprotect(wire)  # the same request again
    wrong = device_client_context(DEVICE, SECRET[:-1] + "x", sender_sequence_number=50)
    wire, _ = request(wrong)
    with pytest.raises(oscore.ProtectionInvalid):
        platform.unprotect(wire)


def test_state_survives_a_clean_restart_and_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    device = device_client_context(DEVICE, SECRET, sender_sequence_number=10)
    store = OscoreStateStore(path)
    platform = DeviceSecurityContext(DEVICE, SECRET, store=store)
    with pytest.raises(oscore.ReplayErrorWithEcho) as challenge:
        platform.unprotect(request(device)[0])
    old, _ = request(device, echo=challenge.value.echo)
    platform.unprotect(old)

    # While running, the stored window is "unknown": a crash now would force Echo again.
    crashed = DeviceSecurityContext(DEVICE, SECRET, store=OscoreStateStore(path))
    assert not crashed.recipient_replay_window.is_initialized()

    platform.persist()  # clean shutdown
    store.close()
    restarted = DeviceSecurityContext(DEVICE, SECRET, store=OscoreStateStore(path))
    assert restarted.recipient_replay_window.is_initialized()
    with pytest.raises(oscore.ReplayError):
        restarted.unprotect(old)
    restarted.unprotect(request(device)[0])  # the next number: accepted without a round trip

    # A rotated credential is a new key: none of the old state applies (and the new one starts with Echo).
    rotated = DeviceSecurityContext(DEVICE, SECRET + "2", store=OscoreStateStore(path))
    assert rotated.key_id != restarted.key_id
    assert not rotated.recipient_replay_window.is_initialized()


def test_own_sequence_numbers_are_reserved_ahead(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = OscoreStateStore(path)
    platform = DeviceSecurityContext(DEVICE, SECRET, store=store)
    used = [platform.new_sequence_number() for _ in range(100)]
    assert used == list(range(100))
    writes = store.writes
    assert writes < 10  # reserved in growing chunks, not one write per number
    # Without a clean shutdown, a restart continues beyond every number that may have been used.
    again = DeviceSecurityContext(DEVICE, SECRET, store=OscoreStateStore(path))
    assert again.sender_sequence_number >= 100
    stored = json.loads(
        OscoreStateStore(path)._db.execute("SELECT received FROM oscore_state").fetchone()[0]
    )
    assert stored == "unknown"


class Secrets:
    def __init__(self) -> None:
        self.secrets = {DEVICE: SECRET}
        self.calls = 0

    async def device_secret(self, device_id: str) -> str | None:
        self.calls += 1
        return self.secrets.get(device_id)


async def test_contexts_are_loaded_once_and_dropped_on_revocation(tmp_path: Path) -> None:
    source = Secrets()
    contexts = DeviceContexts(source, OscoreStateStore(tmp_path / "s.db"), max_contexts=2)
    unprotected = {oscore.COSE_KID: DEVICE_SENDER_ID, oscore.COSE_KID_CONTEXT: DEVICE.encode()}
    ctx = await contexts.prepare(unprotected)
    assert ctx is not None and contexts.find_oscore(unprotected) is ctx
    assert await contexts.prepare(unprotected) is ctx and source.calls == 1
    assert await contexts.prepare({oscore.COSE_KID: b"\x07", oscore.COSE_KID_CONTEXT: DEVICE.encode()}) is None
    assert await contexts.prepare({oscore.COSE_KID: DEVICE_SENDER_ID, oscore.COSE_KID_CONTEXT: b"\xff"}) is None

    contexts.drop(DEVICE)
    del source.secrets[DEVICE]
    assert not contexts.is_current(ctx)
    with pytest.raises(oscore.ContextUnavailable):
        ctx.new_sequence_number()  # a retired context never protects again
    assert await contexts.prepare(unprotected) is None
    with pytest.raises(KeyError):
        contexts.find_oscore(unprotected)
    calls = source.calls
    assert await contexts.prepare(unprotected) is None and source.calls == calls  # negative cache

    for n in range(3):  # LRU bound
        source.secrets[f"acme-{n}"] = SECRET
        assert await contexts.get_context(f"acme-{n}") is not None
    assert len(contexts) == 2


def test_docs_test_vector() -> None:
    """The OSCORE test vector in docs/coap.md, for firmware authors."""
    secret = "dGVzdC12ZWN0b3Itc2VjcmV0LWZvci1kb2NzLTAxMjM"
    assert derive_master_secret(secret).hex() == "a727eaa9d56e8323676315df192183a9"
    ctx = device_client_context("acme-BS000", secret)
    assert (ctx.sender_id, ctx.recipient_id, ctx.id_context) == (b"\x01", b"\x00", b"acme-BS000")
    assert ctx.sender_key.hex() == "5fb6ef4b922222a2e3d4436a17eec4db"
    assert ctx.recipient_key.hex() == "71b54dc3be591fadda132f3c29e39134"
    assert ctx.common_iv.hex() == "7c0bb382c39560cf352b2c744a"
