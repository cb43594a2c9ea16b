"""OSCORE (RFC 8613) for the CoAP transport: per-device security contexts keyed from the device credential.

Every device has its own OSCORE security context, derived on demand from the secret the registry issued to it
(`Registry.device_secret` re-derives it from the master key; nothing extra is stored per device):

    master secret = HKDF-SHA256(salt="", IKM=UTF-8(device secret), info="marketfleet/oscore/v1", L=16)
    master salt   = ""  (empty)
    ID context    = UTF-8(device id)              (sent as "kid context" in every request)
    sender ID     = 0x01 on the device, 0x00 on the platform (so recipient ID 0x00 / 0x01)
    AEAD          = AES-CCM-16-64-128 (COSE 10), HKDF SHA-256, replay window 32

The ID context carries the device id, so the server finds the context in a dict without trying keys, and the
device id takes part in the key derivation (RFC 8613 §3.2.1), so a secret cannot be replayed under another
id. Rotating or revoking the credential changes or removes the master secret: the platform drops the cached
context at once when told (`CredentialListener`) and re-derives it at the latest after `recheck_s`.

Replay protection survives restarts: `OscoreStateStore` keeps, per device, the platform's next sender sequence
number (reserved ahead in growing chunks, RFC 8613 Appendix B.1.1) and the replay window. While a context is in
use its stored window is marked "unknown"; a clean shutdown (or evicting the context from the cache) writes the
real window back. After a crash (window "unknown") or for a device without stored state, the first request is
answered with a protected 4.01 carrying an Echo option (Appendix B.1.2), and only the request repeated with
that Echo re-initialises the window: a replay from before the restart is never accepted. See docs/coap.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from aiocoap import oscore
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEVICE_SENDER_ID",
    "OSCORE_INFO",
    "PLATFORM_SENDER_ID",
    "DeviceContexts",
    "DeviceSecretSource",
    "DeviceSecurityContext",
    "OscoreStateStore",
    "RegistrySecretSource",
    "derive_master_secret",
    "device_client_context",
]

log = logging.getLogger(__name__)

OSCORE_INFO: Final = b"marketfleet/oscore/v1"
MASTER_SALT: Final = b""
DEVICE_SENDER_ID: Final = b"\x01"
PLATFORM_SENDER_ID: Final = b"\x00"
ALGORITHM: Final = "AES-CCM-16-64-128"
HASH: Final = "sha256"
WINDOW_SIZE: Final = 32
# Sequence numbers are reserved (persisted ahead of use) in chunks that double up to this limit.
SEQNO_CHUNK_START: Final = 16
SEQNO_CHUNK_LIMIT: Final = 4096


def derive_master_secret(device_secret: str) -> bytes:
    """The OSCORE master secret of a device: HKDF-SHA256 of its registry secret with a fixed label."""
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=OSCORE_INFO).derive(device_secret.encode())


class DeviceSecretSource(Protocol):
    """Where device secrets come from: `fleet.registry.Registry` fits; None for unknown or revoked devices."""

    async def device_secret(self, device_id: str) -> str | None: ...


class RegistrySecretSource:
    """`Registry.device_secret`, refusing devices that are not active (disabled or retired), like MQTT does."""

    def __init__(self, registry: DeviceSecretSource) -> None:
        self.registry = registry

    async def device_secret(self, device_id: str) -> str | None:
        from fleet.models import Device, DeviceStatus

        secret = await self.registry.device_secret(device_id)
        if secret is None:
            return None
        status = await Device.filter(id=device_id).values_list("status", flat=True)
        if not status or str(getattr(status[0], "value", status[0])) != DeviceStatus.ACTIVE.value:
            return None
        return secret


# ---------------------------------------------------------------- persisted state


class OscoreStateStore:
    """Sequence numbers and replay windows per device, in a small SQLite file (one CoAP server per file).

    Writes are rare (a sequence-number chunk reservation, the first request of a device after start-up, the
    window written back at shutdown), so they are done synchronously, each its own durable transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS oscore_state (device_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, "
            "next_to_send INTEGER NOT NULL, received TEXT NOT NULL, updated_at REAL NOT NULL)"
        )
        self.writes = 0

    def load(self, device_id: str, key_id: str) -> tuple[int, dict[str, int] | None] | None:
        """(next sequence number, window or None when 'unknown') for this key; None when nothing is stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT key_id, next_to_send, received FROM oscore_state WHERE device_id = ?", (device_id,)
            ).fetchone()
        if row is None or row[0] != key_id:
            return None  # never seen, or a new credential: new keys, no old state applies
        received = json.loads(row[2])
        window = received if isinstance(received, dict) else None
        return int(row[1]), window

    _UPSERT: Final = (
        "INSERT INTO oscore_state (device_id, key_id, next_to_send, received, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET key_id = excluded.key_id, "
        "next_to_send = excluded.next_to_send, received = excluded.received, updated_at = excluded.updated_at"
    )

    def save(self, device_id: str, key_id: str, next_to_send: int, window: dict[str, int] | None) -> None:
        self.save_many([(device_id, key_id, next_to_send, window)])

    def save_many(self, rows: list[tuple[str, str, int, dict[str, int] | None]]) -> None:
        """Write several devices' state in one durable transaction (shutdown writes every window back)."""
        if not rows:
            return
        now = time.time()
        params = [(d, k, n, json.dumps(w if w is not None else "unknown"), now) for d, k, n, w in rows]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(self._UPSERT, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.writes += 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---------------------------------------------------------------- one device's context


class DeviceSecurityContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """The OSCORE context between the platform and one device, for either role.

    On the platform (`role="platform"`) it persists through an `OscoreStateStore`; devices (and the tests)
    use `role="device"`, where `store` is optional and the sequence number lives in memory unless given.
    """

    alg_aead = oscore.algorithms[ALGORITHM]
    hashfun = oscore.hashfunctions[HASH]

    def __init__(
        self,
        device_id: str,
        device_secret: str,
        *,
        role: Literal["platform", "device"] = "platform",
        store: OscoreStateStore | None = None,
        sender_sequence_number: int = 0,
    ) -> None:
        self.device_id = device_id
        self.id_context = device_id.encode()
        if role == "platform":
            self.sender_id, self.recipient_id = PLATFORM_SENDER_ID, DEVICE_SENDER_ID
        else:
            self.sender_id, self.recipient_id = DEVICE_SENDER_ID, PLATFORM_SENDER_ID
        master_secret = derive_master_secret(device_secret)
        self.derive_keys(MASTER_SALT, master_secret)
        self.key_id = hashlib.sha256(b"marketfleet/oscore/key-id\x00" + master_secret).hexdigest()[:16]
        self.authenticated_claims = [device_id]
        self.store = store
        self.retired = False
        self.loaded_at = time.monotonic()
        self.recipient_replay_window = oscore.ReplayWindow(WINDOW_SIZE, self._window_changed)
        # Appendix B.1.2: while the window is unknown, requests are answered with 4.01 + this Echo value.
        self.echo_recovery: bytes | None = secrets.token_bytes(8)
        self._chunk = SEQNO_CHUNK_START
        self._window_persisted = False
        stored = store.load(device_id, self.key_id) if store is not None else None
        if store is None:
            self.sender_sequence_number = sender_sequence_number
            self.recipient_replay_window.initialize_empty()
            self._persisted_seqno = oscore.MAX_SEQNO
            self.echo_recovery = None
        elif stored is None:
            # Nothing stored for this key: never trust an empty window (the state may have been lost), so the
            # first request goes through Echo. (Our own sequence numbers cannot be recovered that way: losing
            # the state file means rotating the credentials of CoAP devices, see docs/coap.md.)
            self.sender_sequence_number = 0
            self._persisted_seqno = 0
            self._save()
        else:
            next_to_send, window = stored
            self.sender_sequence_number = next_to_send
            self._persisted_seqno = next_to_send
            if window is not None:
                self.recipient_replay_window.initialize_from_persisted(window)
                self._window_persisted = True

    def __repr__(self) -> str:
        return f"<DeviceSecurityContext {self.device_id!r} sender={self.sender_id.hex()}>"

    # ---------------------------------------------------------------- persistence hooks

    def post_seqnoincrease(self) -> None:
        if self.store is None or self.sender_sequence_number <= self._persisted_seqno:
            return
        self._persisted_seqno = min(self.sender_sequence_number + self._chunk, oscore.MAX_SEQNO)
        self._chunk = min(self._chunk * 2, SEQNO_CHUNK_LIMIT)
        self._save()

    def _window_changed(self) -> None:
        if self._window_persisted:
            # From now on the stored window is stale: mark it unknown before acting on the request.
            self._window_persisted = False
            self._save()

    def _row(self) -> tuple[str, str, int, dict[str, int] | None]:
        window = self.recipient_replay_window.persist() if self._window_persisted else None
        return (self.device_id, self.key_id, self._persisted_seqno, window)

    def _save(self) -> None:
        if self.store is not None:
            self.store.save_many([self._row()])

    def exact_state(self) -> tuple[str, str, int, dict[str, int] | None] | None:
        """The state to write back at a clean stop (no Echo round trip needed afterwards); None if not stored."""
        if self.store is None:
            return None
        if self.recipient_replay_window.is_initialized():
            self._window_persisted = True
        self._persisted_seqno = self.sender_sequence_number
        return self._row()

    def persist(self) -> None:
        """Write the exact state back now."""
        row = self.exact_state()
        if row is not None and self.store is not None:
            self.store.save_many([row])

    def retire(self) -> None:
        """Write the state back and stop using this context (dropped or evicted from the cache).

        A newer context for the device may be loaded from the stored state; this one must then never protect
        again (its sequence numbers would overlap the new one's), so new sequence numbers are refused."""
        self.persist()
        self.store = None
        self.retired = True

    def new_sequence_number(self) -> int:
        if self.retired:
            raise oscore.ContextUnavailable("security context retired")
        return int(super().new_sequence_number())

    # ---------------------------------------------------------------- lookup (server side)

    def get_oscore_context_for(self, unprotected: dict[int, Any]) -> DeviceSecurityContext | None:
        if (
            unprotected.get(oscore.COSE_KID) == self.recipient_id
            and unprotected.get(oscore.COSE_KID_CONTEXT) == self.id_context
        ):
            return self
        return None


def device_client_context(
    device_id: str, device_secret: str, *, sender_sequence_number: int = 0
) -> DeviceSecurityContext:
    """The device side of the context (for simulators, tests and as a reference for firmware).

    Firmware must persist its sender sequence number the same way (reserve ahead, never reuse one)."""
    return DeviceSecurityContext(
        device_id, device_secret, role="device", sender_sequence_number=sender_sequence_number
    )


# ---------------------------------------------------------------- the platform's cache of contexts


class DeviceContexts:
    """Platform-side contexts per device, created on demand from the secret source, LRU-bounded.

    Quacks like the `server_credentials` aiocoap's `OscoreSiteWrapper` consults (`find_oscore`, `get`,
    `find_all_used_contextless_oscore_kid`); `find_oscore` is synchronous, so `prepare()` must have loaded the
    device's context (one registry read) before the wrapper looks it up.
    """

    def __init__(
        self,
        secrets_source: DeviceSecretSource,
        store: OscoreStateStore,
        *,
        recheck_s: float = 300.0,
        negative_ttl_s: float = 5.0,
        max_contexts: int = 100_000,
    ) -> None:
        self.source = secrets_source
        self.store = store
        self.recheck_s = recheck_s
        self.negative_ttl_s = negative_ttl_s
        self.max_contexts = max_contexts
        self._contexts: collections.OrderedDict[str, DeviceSecurityContext] = collections.OrderedDict()
        self._unknown: dict[str, float] = {}  # device -> monotonic time until which it is known to be refused
        self._loading: dict[str, asyncio.Future[DeviceSecurityContext | None]] = {}
        self.loads = 0

    def __len__(self) -> int:
        return len(self._contexts)

    async def prepare(self, unprotected: dict[int, Any]) -> DeviceSecurityContext | None:
        """Make sure the context an incoming request names is loaded (or known not to exist)."""
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        if not isinstance(kid_context, bytes) or unprotected.get(oscore.COSE_KID) != DEVICE_SENDER_ID:
            return None
        try:
            device_id = kid_context.decode()
        except UnicodeDecodeError:
            return None
        if not device_id or len(device_id) > 64:
            return None
        return await self.get_context(device_id)

    async def get_context(self, device_id: str) -> DeviceSecurityContext | None:
        now = time.monotonic()
        ctx = self._contexts.get(device_id)
        if ctx is not None and now - ctx.loaded_at < self.recheck_s:
            self._contexts.move_to_end(device_id)
            return ctx
        if ctx is None and self._unknown.get(device_id, 0.0) > now:
            return None
        pending = self._loading.get(device_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[DeviceSecurityContext | None] = asyncio.get_running_loop().create_future()
        self._loading[device_id] = future
        try:
            result = await self._load(device_id, ctx)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: waiters get it, nobody is warned twice
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self._loading.pop(device_id, None)

    async def _load(self, device_id: str, cached: DeviceSecurityContext | None) -> DeviceSecurityContext | None:
        self.loads += 1
        secret = await self.source.device_secret(device_id)
        if secret is None:
            self.drop(device_id)
            if len(self._unknown) > self.max_contexts:
                self._unknown.clear()
            self._unknown[device_id] = time.monotonic() + self.negative_ttl_s
            return None
        self._unknown.pop(device_id, None)
        if cached is not None and cached.key_id == _key_id(secret) and self._contexts.get(device_id) is cached:
            cached.loaded_at = time.monotonic()
            self._contexts.move_to_end(device_id)
            return cached
        self.drop(device_id)
        ctx = DeviceSecurityContext(device_id, secret, role="platform", store=self.store)
        self._contexts[device_id] = ctx
        while len(self._contexts) > self.max_contexts:
            _, old = self._contexts.popitem(last=False)
            with contextlib.suppress(Exception):
                old.retire()
        return ctx

    def drop(self, device_id: str) -> None:
        """Forget a device's context (credential rotated or revoked); its state is written back first."""
        ctx = self._contexts.pop(device_id, None)
        if ctx is not None:
            with contextlib.suppress(Exception):
                ctx.retire()
        self._unknown.pop(device_id, None)

    def is_cached(self, unprotected: dict[int, Any]) -> bool:
        """True when `prepare` would answer from memory (a fresh context, or a device recently found unknown),
        False when it would ask the registry."""
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        if not isinstance(kid_context, bytes) or unprotected.get(oscore.COSE_KID) != DEVICE_SENDER_ID:
            return True  # refused without a look-up
        try:
            device_id = kid_context.decode()
        except UnicodeDecodeError:
            return True
        now = time.monotonic()
        ctx = self._contexts.get(device_id)
        if ctx is not None:
            return now - ctx.loaded_at < self.recheck_s
        return self._unknown.get(device_id, 0.0) > now or not device_id or len(device_id) > 64

    def is_current(self, ctx: DeviceSecurityContext) -> bool:
        """False once the context was dropped (revoked or rotated) while a request or observation used it."""
        return self._contexts.get(ctx.device_id) is ctx

    def persist_all(self) -> None:
        """Write every context's exact state back in one transaction (e.g. a periodic checkpoint)."""
        rows = [row for ctx in self._contexts.values() if (row := ctx.exact_state()) is not None]
        try:
            self.store.save_many(rows)
        except Exception:
            log.exception("could not persist the OSCORE state of %d devices", len(rows))

    def close(self) -> None:
        """Clean shutdown: write every exact state back, then retire all contexts (they never protect again)."""
        self.persist_all()
        for ctx in self._contexts.values():
            ctx.store = None
            ctx.retired = True
        self._contexts.clear()

    # ---------------------------------------------------------------- aiocoap's server_credentials interface

    def find_oscore(self, unprotected: dict[int, Any]) -> DeviceSecurityContext:
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        if isinstance(kid_context, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                ctx = self._contexts.get(kid_context.decode())
                if ctx is not None and ctx.get_oscore_context_for(unprotected) is not None:
                    return ctx
        raise KeyError("no security context")

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        return set()

    def get(self, _key: str, default: Any = None) -> Any:
        return default  # no EDHOC credentials


def _key_id(secret: str) -> str:
    return hashlib.sha256(b"marketfleet/oscore/key-id\x00" + derive_master_secret(secret)).hexdigest()[:16]

