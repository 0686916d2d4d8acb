"""Tests of reconciler.store.sealing: AES-256-GCM blobs, AAD binding, key parsing and key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import StateError
from reconciler.store import sealing

KEY = bytes(range(32))


def test_seal_open_round_trip_with_fresh_nonces() -> None:
    sealer = sealing.Sealer(KEY)
    aad = sealing.secret_aad("uid1", "clientSecret")
    first = sealer.seal(b"hello", aad)
    second = sealer.seal(b"hello", aad)
    assert first != second  # random nonce
    assert first[0] == sealing.SEAL_VERSION
    assert len(first) == 1 + 12 + len(b"hello") + 16
    assert sealer.open(first, aad) == b"hello"
    assert sealer.open(second, aad) == b"hello"


def test_the_cipher_is_cryptographys_public_aes_gcm() -> None:
    # Taken from the Rust bindings for start-up speed: it must be the very class the public
    # cryptography.hazmat.primitives.ciphers.aead module names, not a look-alike.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert type(sealing.Sealer(KEY)._aead) is AESGCM


@given(st.binary(max_size=512), st.text(max_size=40), st.text(max_size=40))
def test_round_trip_property(plaintext: bytes, uid: str, field: str) -> None:
    sealer = sealing.Sealer(KEY)
    aad = sealing.grant_aad(uid, field)
    assert sealer.open(sealer.seal(plaintext, aad), aad) == plaintext


@pytest.mark.parametrize(
    "other_aad",
    [
        sealing.secret_aad("uid2", "clientSecret"),  # copied to another link
        sealing.secret_aad("uid1", "other"),  # copied to another field
        sealing.grant_aad("uid1", "clientSecret"),  # copied into a grant column
    ],
)
def test_blob_bound_to_uid_and_field(other_aad: bytes) -> None:
    sealer = sealing.Sealer(KEY)
    blob = sealer.seal(b"value", sealing.secret_aad("uid1", "clientSecret"))
    with pytest.raises(sealing.SealError):
        sealer.open(blob, other_aad)


def test_wrong_key_and_tampering_fail() -> None:
    blob = sealing.Sealer(KEY).seal(b"value", b"aad")
    with pytest.raises(sealing.SealError):
        sealing.Sealer(bytes(32)).open(blob, b"aad")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(sealing.SealError):
        sealing.Sealer(KEY).open(bytes(tampered), b"aad")
    with pytest.raises(sealing.SealError, match="unknown format"):
        sealing.Sealer(KEY).open(b"\x02" + blob[1:], b"aad")
    with pytest.raises(sealing.SealError):
        sealing.Sealer(KEY).open(b"", b"aad")


def test_seal_error_is_a_state_error_without_plaintext() -> None:
    blob = sealing.Sealer(KEY).seal(b"CANARY-plaintext", b"aad")
    with pytest.raises(StateError) as info:
        sealing.Sealer(bytes(32)).open(blob, b"aad")
    assert "CANARY" not in str(info.value)


def test_sealer_rejects_short_key() -> None:
    with pytest.raises(StateError, match="exactly 32 bytes"):
        sealing.Sealer(b"short")


def test_fingerprint_key_is_hkdf_of_state_key() -> None:
    derived = sealing.fingerprint_key(KEY)
    assert len(derived) == 32
    assert derived != KEY
    assert derived == sealing.Sealer(KEY).fingerprint_key
    assert derived != sealing.fingerprint_key(bytes(32))
    # RFC 5869 by hand (no salt = 32 zero bytes; one block): a changed derivation would
    # silently mark every link as drifted, so pin it independently of the library.
    prk = hmac.new(bytes(32), KEY, hashlib.sha256).digest()
    assert derived == hmac.new(prk, b"linkctl fingerprint v1\x01", hashlib.sha256).digest()
    assert derived.hex().startswith("173a36758672d2bf")


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(KEY).decode(),
        base64.b64encode(KEY).decode() + "\n",
        base64.b64encode(KEY).decode().rstrip("="),
        base64.urlsafe_b64encode(KEY).decode(),
        "  " + base64.urlsafe_b64encode(KEY).decode().rstrip("=") + "\r\n",
    ],
)
def test_parse_key_accepts_base64_and_base64url(text: str) -> None:
    assert sealing.parse_key(text, source="test") == KEY


def test_parse_key_accepts_keys_with_url_safe_characters() -> None:
    key = bytes([0xFB, 0xFF] * 16)  # encodes with '+' and '/' (or '-' and '_')
    assert "+" in base64.b64encode(key).decode() or "/" in base64.b64encode(key).decode()
    assert sealing.parse_key(base64.b64encode(key).decode(), source="t") == key
    assert sealing.parse_key(base64.urlsafe_b64encode(key).decode(), source="t") == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("not base64 at all!", "not valid base64"),
        (base64.b64encode(os.urandom(16)).decode(), "decodes to 16 bytes"),
        (base64.b64encode(os.urandom(33)).decode(), "decodes to 33 bytes"),
        ("é" * 44, "not valid base64"),
    ],
    ids=["empty", "not-base64", "16-bytes", "33-bytes", "non-ascii"],  # the same in every xdist worker
)
def test_parse_key_rejects_malformed_keys_without_echoing_them(text: str, message: str) -> None:
    with pytest.raises(StateError, match=message) as info:
        sealing.parse_key(text, source="$LINKCTL_STATE_KEY")
    rendered = str(info.value) + (info.value.hint or "")
    assert "$LINKCTL_STATE_KEY" in rendered
    if text.strip():
        assert text.strip() not in rendered


def test_create_key_file_is_private_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.key"
    key, created = sealing.create_key_file(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert path.read_text() == base64.b64encode(key).decode() + "\n"
    again, created_again = sealing.create_key_file(path)
    assert not created_again
    assert again == key
    assert path.read_text() == base64.b64encode(key).decode() + "\n"
    assert [p.name for p in path.parent.iterdir()] == ["state.key"]  # no temp file left


def test_read_key_prefers_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "state.key"
    path.write_text(base64.b64encode(bytes(32)).decode() + "\n")
    key, source = sealing.read_key(state_key=base64.b64encode(KEY).decode(), key_file=path)
    assert (key, source) == (KEY, "$LINKCTL_STATE_KEY")
    key, source = sealing.read_key(state_key=None, key_file=path)
    assert key == bytes(32)
    assert str(path) in source
    key, source = sealing.read_key(state_key=None, key_file=tmp_path / "absent.key")
    assert key is None
    assert "absent.key" in source
    assert "LINKCTL_STATE_KEY" in source


@pytest.mark.parametrize("key_file", [Path("/dev/zero"), Path("/")])
def test_a_key_file_that_is_not_a_regular_file_is_refused(key_file: Path) -> None:
    with pytest.raises(StateError, match="not a regular file"):
        sealing.read_key(state_key=None, key_file=key_file)
