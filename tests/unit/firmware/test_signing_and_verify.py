"""Signing with the platform key, and the device-side verifier refusing anything else."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from firmware.signing import (
    SigningKeyError,
    generate_keypair,
    load_keypair,
    load_or_create_keypair,
    sign,
    verify,
)
from firmware.verify import ImageRejected, ImageVerifier, verify_image

IMAGE = os.urandom(256 * 1024)
KEYS = generate_keypair()
SHA = hashlib.sha256(IMAGE).hexdigest()
SIGNATURE = sign(IMAGE, KEYS)


def test_a_signed_image_verifies() -> None:
    assert verify(IMAGE, SIGNATURE, KEYS.public_key)
    verify_image(IMAGE, SHA, SIGNATURE, KEYS.public_key, size=len(IMAGE))


def test_one_flipped_byte_is_a_hash_mismatch() -> None:
    corrupted = bytearray(IMAGE)
    corrupted[1234] ^= 0x01
    with pytest.raises(ImageRejected) as caught:
        verify_image(bytes(corrupted), SHA, SIGNATURE, KEYS.public_key)
    assert caught.value.reason == "hash_mismatch"


def test_a_signature_by_another_key_is_refused() -> None:
    forged = sign(IMAGE, generate_keypair())
    assert not verify(IMAGE, forged, KEYS.public_key)
    with pytest.raises(ImageRejected) as caught:
        verify_image(IMAGE, SHA, forged, KEYS.public_key)
    assert caught.value.reason == "bad_signature"


def test_a_consistent_but_unsigned_replacement_is_refused() -> None:
    # An attacker who swaps the image *and* its announced hash still cannot produce the signature.
    evil = os.urandom(1024)
    with pytest.raises(ImageRejected) as caught:
        verify_image(evil, hashlib.sha256(evil).hexdigest(), SIGNATURE, KEYS.public_key)
    assert caught.value.reason == "bad_signature"


def test_garbage_signature_text_is_a_bad_signature() -> None:
    with pytest.raises(ImageRejected) as caught:
        verify_image(IMAGE, SHA, "not base64 !!", KEYS.public_key)
    assert caught.value.reason == "bad_signature"


def test_a_truncated_stream_is_a_size_mismatch() -> None:
    verifier = ImageVerifier(SHA, SIGNATURE, KEYS.public_key, size=len(IMAGE))
    verifier.update(IMAGE[:1000])
    with pytest.raises(ImageRejected) as caught:
        verifier.finish()
    assert caught.value.reason == "size_mismatch"


def test_streaming_in_chunks_equals_whole() -> None:
    verifier = ImageVerifier(SHA, SIGNATURE, KEYS.public_key, size=len(IMAGE))
    for start in range(0, len(IMAGE), 4096):
        verifier.update(IMAGE[start : start + 4096])
    verifier.finish()


def test_key_files_round_trip_and_are_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "firmware.key"
    created = load_or_create_keypair(path)
    assert load_or_create_keypair(path) == created == load_keypair(path)
    assert path.stat().st_mode & 0o077 == 0
    assert created.private_key not in repr(created)


def test_a_broken_key_file_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("c2hvcnQ=\n")
    with pytest.raises(SigningKeyError, match="32 bytes"):
        load_keypair(path)
    with pytest.raises(SigningKeyError, match="keygen"):
        load_keypair(tmp_path / "missing.key")
