"""The platform's firmware signing key (Ed25519, PyNaCl): create, store, sign, verify.

These are the functions behind `marketfleet firmware keygen` and `marketfleet firmware sign`. The platform
signs every uploaded image with its key unless the upload carries a signature made offline with the same key
(for operators who keep the private key off the server). Keys are base64 text: the private key is the 32-byte
seed, the public key the 32-byte verify key. Devices verify with firmware/verify.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from firmware.verify import ImageRejected, key_id, signed_message, verify_digest


class SigningKeyError(ValueError):
    """A key file or key text that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class KeyPair:
    private_key: str  # base64 of the 32-byte seed: keep secret
    public_key: str  # base64 of the 32-byte verify key: provision devices with it

    @property
    def key_id(self) -> str:
        return key_id(base64.b64decode(self.public_key))

    def __repr__(self) -> str:  # never print the private key in a traceback or log
        return f"KeyPair(key_id={self.key_id!r})"


def generate_keypair() -> KeyPair:
    key = SigningKey.generate()
    return KeyPair(
        private_key=base64.b64encode(bytes(key)).decode(),
        public_key=base64.b64encode(bytes(key.verify_key)).decode(),
    )


def _signing_key(key: KeyPair | str | bytes) -> SigningKey:
    if isinstance(key, KeyPair):
        key = key.private_key
    if isinstance(key, str):
        try:
            key = base64.b64decode(key.strip(), validate=True)
        except ValueError as err:
            raise SigningKeyError("private key is not base64") from err
    if len(key) != 32:
        raise SigningKeyError(f"an Ed25519 private key is 32 bytes, got {len(key)}")
    return SigningKey(key)


def sign_digest(sha256_hex: str, key: KeyPair | str | bytes) -> str:
    """Signature (base64) over an image's SHA-256 digest given as hex."""
    signed = _signing_key(key).sign(signed_message(bytes.fromhex(sha256_hex)))
    return base64.b64encode(signed.signature).decode()


def sign(image_bytes: bytes, key: KeyPair | str | bytes) -> str:
    """Signature (base64) of an image with the platform's private key."""
    return sign_digest(hashlib.sha256(image_bytes).hexdigest(), key)


def verify(image_bytes: bytes, signature: str, public_key: str) -> bool:
    """Whether `signature` is the key's signature of these bytes."""
    try:
        verify_digest(hashlib.sha256(image_bytes).hexdigest(), signature, public_key)
    except ImageRejected:
        return False
    return True


def save_keypair(pair: KeyPair, path: Path) -> None:
    """Write the key file (private key only: the public key derives from it), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(pair.private_key + "\n")


def load_keypair(path: Path) -> KeyPair:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as err:
        raise SigningKeyError(f"no signing key at {path}; create one with `marketfleet firmware keygen`") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SigningKeyError(f"cannot read signing key {path}: {err}") from err
    key = _signing_key(text)
    return KeyPair(private_key=text, public_key=base64.b64encode(bytes(key.verify_key)).decode())


def load_or_create_keypair(path: Path) -> KeyPair:
    if path.exists():
        return load_keypair(path)
    pair = generate_keypair()
    save_keypair(pair, path)
    return pair
