"""Device-side image verification: what a device (or a simulator) runs before it installs anything.

Only the standard library and PyNaCl, so firmware for a Linux-class device, a simulator or a base station can
vendor this one file. A device is provisioned with the platform's public key (`GET
/api/v1/firmware/signing-key`) and refuses an image whose size, SHA-256 or Ed25519 signature does not match the
job announcement — whatever the transport delivered.

What is signed: the 32-byte SHA-256 digest of the image, prefixed with the domain tag `MarketFleet-FW-v1\\0`
(see firmware/signing.py). Signing the digest lets a device verify while streaming to flash, without holding
the whole image in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

DOMAIN_TAG = b"MarketFleet-FW-v1\x00"


class ImageRejected(Exception):
    """The device must not install this image; `reason` is what it reports (`ota_status` state failed)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def signed_message(sha256_digest: bytes) -> bytes:
    return DOMAIN_TAG + sha256_digest


def key_id(public_key: bytes) -> str:
    """Short fingerprint naming a signing key in announcements (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageRejected("bad_signature", f"{what} is not base64") from err


def verify_digest(sha256_hex: str, signature_b64: str, public_key_b64: str) -> None:
    """Check that `signature` is the platform key's signature over this digest; raises ImageRejected."""
    try:
        digest = bytes.fromhex(sha256_hex)
    except ValueError as err:
        raise ImageRejected("hash_mismatch", "announced sha256 is not hex") from err
    key = _b64(public_key_b64, "public key")
    if len(key) != 32:
        raise ImageRejected("unknown_key", "public key is not 32 bytes")
    try:
        VerifyKey(key).verify(signed_message(digest), _b64(signature_b64, "signature"))
    except (BadSignatureError, ValueError) as err:
        raise ImageRejected("bad_signature", "Ed25519 signature does not verify with the platform key") from err


class ImageVerifier:
    """Streaming check: feed chunks as they arrive (and are written to the spare slot), then `finish()`."""

    def __init__(self, sha256_hex: str, signature_b64: str, public_key_b64: str, size: int | None = None) -> None:
        self.expected_sha256 = sha256_hex.lower()
        self.signature = signature_b64
        self.public_key = public_key_b64
        self.size = size
        self.received = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise ImageRejected("size_mismatch", f"more than the announced {self.size} bytes")
        self._hash.update(chunk)

    def finish(self) -> None:
        if self.size is not None and self.received != self.size:
            raise ImageRejected("size_mismatch", f"got {self.received} bytes, announced {self.size}")
        actual = self._hash.hexdigest()
        if not hmac.compare_digest(actual, self.expected_sha256):
            raise ImageRejected("hash_mismatch", f"sha256 {actual} differs from the announced {self.expected_sha256}")
        # The signature covers the announced digest, which the bytes were just proven to have.
        verify_digest(self.expected_sha256, self.signature, self.public_key)


def verify_image(
    data: bytes, sha256_hex: str, signature_b64: str, public_key_b64: str, size: int | None = None
) -> None:
    """Check a whole image in memory; raises ImageRejected with `hash_mismatch`, `bad_signature` …"""
    verifier = ImageVerifier(sha256_hex, signature_b64, public_key_b64, size)
    verifier.update(data)
    verifier.finish()
