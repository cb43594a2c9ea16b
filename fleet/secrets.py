"""Issuing and checking secrets: vendor API keys and device credentials.

A device secret is diversified from the platform's master key (`HMAC(master, "<device>:<salt>")`, the key
diversification ESL and smart-card fleets use): the registry stores only the salt and a hash, yet the platform
can re-derive a device's secret when it must provision it again into an external broker (Mosquitto's
dynamic security after drift) or use it as the CoAP/OSCORE and HTTP-signature key. Losing the master key
means rotating every device; keep it like any other root key (docs/security.md).

Both are 256-bit random values the platform generates, so a fast keyed hash (SHA-256) is enough to make the
stored form useless to a thief; slow password hashes (argon2) exist for low-entropy human passwords and would
cost ~50 ms per MQTT CONNECT, which a market reconnecting 5,000 devices cannot afford.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_KEY_PREFIX = "mfk"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_salt() -> str:
    return secrets.token_hex(8)


def derive_device_secret(master_key: bytes, device_id: str, salt: str) -> str:
    digest = hmac.new(master_key, f"{device_id}:{salt}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


@dataclass(frozen=True)
class ApiKey:
    """`mfk_<lookup>_<secret>`: the lookup part finds the vendor row, the secret part is checked by hash."""

    lookup: str
    secret: str

    def __str__(self) -> str:
        return f"{API_KEY_PREFIX}_{self.lookup}_{self.secret}"

    @classmethod
    def generate(cls) -> ApiKey:
        return cls(lookup=secrets.token_hex(6), secret=new_secret())

    @classmethod
    def parse(cls, text: str) -> ApiKey | None:
        parts = text.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
            return None
        return cls(lookup=parts[1], secret=parts[2])
