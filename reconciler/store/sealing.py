"""Sealing: AES-256-GCM encryption of secrets and tokens at rest, and the state key.

Owned by the store; called by the backends (:mod:`reconciler.store.sqlite`, later
PostgreSQL) when they write or read ``secrets`` and ``grants`` rows, and by
:func:`reconciler.store.open_store` to find, parse or create the state key.

A sealed blob is ``version byte || 12-byte random nonce || ciphertext+tag``. The
associated data binds each blob to the link **uid** and the field it belongs to
(:func:`secret_aad`, :func:`grant_aad`): a rename keeps it valid, while a blob
copied to another link or field fails to open. Nothing here ever puts a key or a
plaintext into a message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag

from reconciler.errors import StateError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
else:
    try:
        # The class cryptography's own ciphers.aead module is an alias of, taken from the Rust
        # bindings directly: importing ciphers.aead first runs the ciphers package, which loads
        # every cipher, mode and the "decrepit" algorithms (2 ms of each `linkctl token`).
        from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

        AESGCM = _rust_openssl.aead.AESGCM
    except (ImportError, AttributeError):  # a cryptography laid out otherwise: its public name
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
SEAL_VERSION = 1
_VERSION_BYTE = bytes([SEAL_VERSION])
KEY_ENV = "LINKCTL_STATE_KEY"
KEY_CHECK_AAD = b"linkctl/key-check"
# A fixed, public value: sealing it proves the key without revealing anything.
KEY_CHECK_PLAINTEXT = b"linkctl state key check v1"
_FINGERPRINT_INFO = b"linkctl fingerprint v1"


class SealError(StateError):
    """A sealed blob does not open: wrong key, tampered data, or moved to another row."""


def secret_aad(uid: str, field: str) -> bytes:
    """Associated data of a link's stored secret (e.g. the client secret)."""
    return b"linkctl/secret/" + uid.encode() + b"/" + field.encode()


def grant_aad(uid: str, field: str) -> bytes:
    """Associated data of a grant's token column (``access_token``, ``refresh_token``)."""
    return b"linkctl/grant/" + uid.encode() + b"/" + field.encode()


class Sealer:
    """Seals and opens blobs with one 32-byte key (AES-256-GCM)."""

    __slots__ = ("_aead", "_fingerprint_key", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StateError(f"a state key must be exactly {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self._key = key
        # Derived on first use (threads may race; both derive the same): reading a token
        # never fingerprints, so it never loads HKDF.
        self._fingerprint_key: bytes | None = None

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad`` with a fresh random nonce."""
        nonce = os.urandom(NONCE_BYTES)
        return _VERSION_BYTE + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob sealed with the same key and ``aad``; ``SealError`` otherwise."""
        blob = bytes(blob)
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != SEAL_VERSION:
            version = blob[0] if blob else None
            raise SealError(f"a sealed value has an unknown format (version {version})")
        try:
            return self._aead.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise SealError(
                "a sealed value does not open with this key and its location "
                f"({aad.decode(errors='replace')})"
            ) from None

    @property
    def fingerprint_key(self) -> bytes:
        """The HMAC key for secret fingerprints (derived; not the state key)."""
        if self._fingerprint_key is None:
            self._fingerprint_key = fingerprint_key(self._key)
        return self._fingerprint_key


def fingerprint_key(state_key: bytes) -> bytes:
    """HKDF-SHA256 of the state key with info ``linkctl fingerprint v1``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FINGERPRINT_INFO).derive(state_key)


def parse_key(text: str, *, source: str) -> bytes:
    """Decode base64 or base64url text of exactly 32 bytes; ``source`` names where it came from."""
    compact = "".join(text.split())
    hint = (
        f"{source} must hold the base64 (or base64url) encoding of exactly {KEY_BYTES} random bytes, "
        'e.g. from `python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`'
    )
    if not compact:
        raise StateError(f"the state key in {source} is empty", hint=hint)
    padded = compact + "=" * (-len(compact) % 4)
    alphabet = b"-_" if ("-" in compact or "_" in compact) else b"+/"
    try:
        key = base64.b64decode(padded.encode("ascii"), altchars=alphabet, validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise StateError(f"the state key in {source} is not valid base64", hint=hint) from None
    if len(key) != KEY_BYTES:
        raise StateError(
            f"the state key in {source} decodes to {len(key)} bytes; expected exactly {KEY_BYTES}",
            hint=hint,
        )
    return key


def encode_key(key: bytes) -> str:
    """The text form of a key as written to a key file (standard base64)."""
    return base64.b64encode(key).decode("ascii")


def generate_key() -> bytes:
    """A fresh random state key."""
    import secrets

    return secrets.token_bytes(KEY_BYTES)


def read_key(*, state_key: str | None, key_file: Path) -> tuple[bytes | None, str]:
    """The state key and a description of where it came from (env wins over the file).

    Returns ``(None, description of the places looked at)`` when neither exists.
    """
    if state_key:
        return parse_key(state_key, source=f"${KEY_ENV}"), f"${KEY_ENV}"
    try:
        text = _read_small_regular_file(key_file).decode("ascii")
    except FileNotFoundError:
        return None, f"${KEY_ENV} (not set) and the key file {key_file} (absent)"
    except UnicodeDecodeError:
        raise StateError(
            f"the state key file {key_file} is not text",
            hint="it must hold the base64 encoding of 32 bytes and a newline",
        ) from None
    except OSError as exc:
        raise StateError(f"cannot read the state key file {key_file}: {exc.strerror}") from None
    return parse_key(text, source=f"the key file {key_file}"), f"the key file {key_file}"


KEY_FILE_MAX_BYTES = 4096  # a key file is ~45 bytes; a device like /dev/zero must not be read


def _read_small_regular_file(path: Path) -> bytes:
    """The bytes of a regular file of at most ``KEY_FILE_MAX_BYTES``; anything else is refused.

    Opened non-blocking so a FIFO cannot hang the open; checked with fstat so the file
    looked at is the one read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateError(
                f"the state key file {path} is not a regular file",
                hint="point LINKCTL_STATE_KEY_FILE at the key file itself",
            )
        data = os.read(fd, KEY_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > KEY_FILE_MAX_BYTES:
        raise StateError(
            f"the state key file {path} is larger than {KEY_FILE_MAX_BYTES} bytes",
            hint="it must hold the base64 encoding of 32 bytes and a newline",
        )
    return data


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and missing parents with mode 0700 (existing dirs are left alone)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent creator got there first
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def create_key_file(path: Path) -> tuple[bytes, bool]:
    """Create a key file atomically (0600, parent 0700) unless one exists.

    Returns ``(key, created)``; when another process created the file first, its
    key is returned with ``created=False`` — an existing file is never overwritten.
    """
    make_private_dirs(path.parent)
    key = generate_key()
    import secrets

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (encode_key(key) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails when the target exists: atomic create-if-absent, complete content.
            os.link(tmp, path)
        except FileExistsError:
            existing, _ = read_key(state_key=None, key_file=path)
            if existing is None:  # pragma: no cover - removed between link() and read
                raise StateError(f"the state key file {path} vanished while it was being created") from None
            return existing, False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)
    return key, True


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (best effort on platforms without dir fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def verify_key_check(sealer: Sealer, key_check: bytes, *, store: str, key_source: str) -> None:
    """Refuse a key that does not open the store's key check (``store``: its path or URL as shown)."""
    try:
        value = sealer.open(key_check, KEY_CHECK_AAD)
    except SealError:
        value = b""
    if value != KEY_CHECK_PLAINTEXT:
        raise StateError(
            f"the state key does not match this store ({store}; key from {key_source})",
            hint="use the key this store was created with (LINKCTL_STATE_KEY or LINKCTL_STATE_KEY_FILE);"
            " linkctl never re-keys a store, so nothing was changed",
        )
