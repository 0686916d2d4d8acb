"""age v1 encryption with X25519 recipients: header, HMAC, STREAM payload, keys.

Owns the age file format (C2SP ``age.md``) for SOPS key wrapping and for
``linkctl keygen``; called by :mod:`reconciler.sops.keys` and the SOPS tree code.
Only X25519 is implemented; other recipient and identity types are refused with
their type named. Failures raise the :class:`AgeError` subclass that matches the
CCTV result classes (no match, header, HMAC, payload, armor).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reconciler.errors import CryptoError
from reconciler.sops import armor, bech32

VERSION_LINE = b"age-encryption.org/v1"
X25519_LABEL = b"age-encryption.org/v1/X25519"
CHUNK_SIZE = 64 * 1024
_TAG = 16
_ENC_CHUNK = CHUNK_SIZE + _TAG
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
IDENTITY_HRP = "AGE-SECRET-KEY-"
RECIPIENT_HRP = "age"


class AgeError(CryptoError):
    """An age file cannot be decrypted (base class; see the subclasses for the reason)."""


class NoMatch(AgeError):
    """None of the identities opens any recipient stanza."""


class HeaderFailure(AgeError):
    """The header is malformed."""


class HMACFailure(AgeError):
    """The header MAC does not verify: the header was modified."""


class PayloadFailure(AgeError):
    """The STREAM payload is truncated, modified or has trailing data."""


class ArmorFailure(AgeError):
    """The ASCII armor is malformed."""


class UnsupportedKey(AgeError):
    """A recipient or identity type this implementation does not handle."""


@dataclasses.dataclass(frozen=True, repr=False)
class X25519Identity:
    """An age X25519 identity; ``repr``/``str`` show only the public recipient."""

    secret: bytes

    @property
    def recipient(self) -> str:
        """The public ``age1…`` recipient string."""
        return bech32.encode(RECIPIENT_HRP, self.public_bytes)

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte X25519 public key."""
        return X25519PrivateKey.from_private_bytes(self.secret).public_key().public_bytes_raw()

    def encode(self) -> str:
        """The ``AGE-SECRET-KEY-1…`` text (a secret: write it only to a 0600 file)."""
        return bech32.encode(IDENTITY_HRP, self.secret)

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient!r})"

    __str__ = __repr__


def generate_identity() -> X25519Identity:
    """A fresh random X25519 identity."""
    return X25519Identity(os.urandom(32))


def describe_key_type(text: str) -> str | None:
    """Name the type of an unsupported recipient or identity string, or None if it is X25519."""
    if text.startswith("age1pq1") or text.upper().startswith("AGE-SECRET-KEY-PQ-"):
        return "post-quantum hybrid ML-KEM-768+X25519 (age1pq1…)"
    if text.startswith("age1"):
        return None if text.count("1") == 1 or _is_x25519_recipient(text) else "age plugin"
    if text.upper().startswith("AGE-PLUGIN-"):
        return "age plugin identity"
    if text.upper().startswith("AGE-SECRET-KEY-1"):
        return None
    if text.startswith(("ssh-", "ecdsa-", "sk-ssh-")):
        return "SSH (age-ssh)"
    return "unknown"


def _is_x25519_recipient(text: str) -> bool:
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error:
        return False
    return hrp == RECIPIENT_HRP and len(data) == 32


def parse_recipient(text: str) -> bytes:
    """The 32-byte public key of an ``age1…`` X25519 recipient; refuse other types by name."""
    text = text.strip()
    if text.upper().startswith("AGE-SECRET-KEY-"):  # never repeat any of it: it is a secret key
        raise UnsupportedKey(
            "an age secret key was given as a recipient; give its public key (age-keygen -y KEYFILE)"
        )
    if text.startswith("age1pq1"):
        raise UnsupportedKey(f"unsupported age recipient type: post-quantum hybrid ({text[:12]}…)")
    if text.startswith("age1") and not _is_x25519_recipient(text) and text.count("1") > 1:
        plugin = text[4 : text.index("1", 4)]
        raise UnsupportedKey(f"unsupported age recipient type: plugin {plugin!r} ({text[:16]}…)")
    if text.startswith(("ssh-", "ecdsa-", "sk-ssh-")):
        raise UnsupportedKey(f"unsupported age recipient type: SSH key ({text.split(' ')[0]})")
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error as exc:
        raise UnsupportedKey(f"invalid age recipient {text[:16]!r}…: {exc}") from None
    if hrp != RECIPIENT_HRP or len(data) != 32:
        raise UnsupportedKey(f"invalid age X25519 recipient {text[:16]!r}…")
    return data


def parse_identity(text: str) -> X25519Identity:
    """Parse one ``AGE-SECRET-KEY-1…`` line; the message of any error never repeats the key."""
    if text.startswith("AGE-SECRET-KEY-PQ-"):
        raise UnsupportedKey("unsupported age identity type: post-quantum hybrid (AGE-SECRET-KEY-PQ-1…)")
    if text.startswith("AGE-PLUGIN-"):
        name = text[len("AGE-PLUGIN-") :].split("-", 1)[0]
        raise UnsupportedKey(f"unsupported age identity type: plugin {name.lower()!r}")
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error as exc:
        raise UnsupportedKey(f"malformed age identity: {exc}") from None
    if hrp != IDENTITY_HRP or len(data) != 32:
        raise UnsupportedKey("unknown identity type (expected AGE-SECRET-KEY-1…)")
    return X25519Identity(data)


def parse_identities(text: str) -> list[X25519Identity]:
    """Parse an identities file: ``#`` comments and blank lines skipped, one identity per line."""
    found: list[X25519Identity] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        found.append(parse_identity(line))
    return found


# -- header -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stanza:
    """One recipient stanza: its arguments and decoded body."""

    args: tuple[str, ...]
    body: bytes


@dataclasses.dataclass(frozen=True)
class Header:
    """A parsed header: stanzas, the MAC, the exact bytes the MAC covers, and the payload offset."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    payload_offset: int


def _b64_strict(data: bytes) -> bytes:
    """Decode unpadded canonical base64 or raise ValueError."""
    if any(c not in _B64 for c in data) or len(data) % 4 == 1:
        raise ValueError("invalid base64")
    try:
        raw = base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None
    if base64.b64encode(raw).rstrip(b"=") != data:
        raise ValueError("non-canonical base64")
    return raw


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def parse_header(data: bytes) -> Header:
    """Parse the binary header at the start of ``data``."""
    pos = 0

    def next_line() -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            raise HeaderFailure("age header: unexpected end of header")
        line = data[pos:end]
        pos = end + 1
        if b"\r" in line:
            raise HeaderFailure("age header: CR in header line")
        return line

    if next_line() != VERSION_LINE:
        raise HeaderFailure("age header: unsupported or missing version line")
    stanzas: list[Stanza] = []
    while True:
        line_start = pos
        line = next_line()
        if line.startswith(b"---"):
            if not line.startswith(b"--- "):
                raise HeaderFailure("age header: malformed MAC line")
            try:
                mac = _b64_strict(line[4:])
            except ValueError:
                raise HeaderFailure("age header: malformed MAC") from None
            if len(mac) != 32:
                raise HeaderFailure("age header: MAC has the wrong length")
            return Header(tuple(stanzas), mac, data[: line_start + 3], pos)
        if not line.startswith(b"-> "):
            raise HeaderFailure("age header: expected a stanza or the MAC line")
        args = line[3:].split(b" ")
        for arg in args:
            if not arg or any(c < 0x21 or c > 0x7E for c in arg):
                raise HeaderFailure("age header: invalid stanza argument")
        body_b64 = b""
        while True:
            body_line = next_line()
            if len(body_line) > 64:
                raise HeaderFailure("age header: stanza body line too long")
            body_b64 += body_line
            if len(body_line) < 64:
                break
        try:
            body = _b64_strict(body_b64)
        except ValueError:
            raise HeaderFailure("age header: invalid stanza body") from None
        stanzas.append(Stanza(tuple(a.decode("ascii") for a in args), body))


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _unwrap_x25519(stanza: Stanza, identity: X25519Identity) -> bytes | None:
    share = stanza.args[1]
    try:
        eph = _b64_strict(share.encode("ascii"))
    except ValueError:
        raise HeaderFailure("age header: invalid X25519 share") from None
    if len(eph) != 32 or len(stanza.args) != 2 or len(stanza.body) != 32:
        raise HeaderFailure("age header: malformed X25519 stanza")
    private = X25519PrivateKey.from_private_bytes(identity.secret)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph))
    except ValueError:
        # An all-zero shared secret (low-order point) is an attack, not "not for me".
        raise HeaderFailure("age header: X25519 share is a low-order point") from None
    wrap_key = _hkdf(shared, eph + identity.public_bytes, X25519_LABEL)
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(b"\0" * 12, stanza.body, None)
    except InvalidTag:
        return None


def _validate_x25519(stanza: Stanza) -> None:
    try:
        eph = _b64_strict(stanza.args[1].encode("ascii")) if len(stanza.args) > 1 else b""
    except ValueError:
        raise HeaderFailure("age header: invalid X25519 share") from None
    if len(stanza.args) != 2 or len(eph) != 32 or len(stanza.body) != 32:
        raise HeaderFailure("age header: malformed X25519 stanza")


def unwrap_file_key(header: Header, identities: Iterable[X25519Identity]) -> bytes:
    """The 16-byte file key from the first stanza an identity opens; verifies the header MAC."""
    if len(header.stanzas) > 1 and any(s.args[0] == "scrypt" for s in header.stanzas):
        # age spec: an scrypt stanza must be the only one, whatever identity is offered.
        raise HeaderFailure("age header: an scrypt stanza must be the only stanza")
    x_stanzas = [s for s in header.stanzas if s.args[0] == "X25519"]
    for stanza in x_stanzas:
        _validate_x25519(stanza)
    ids = list(identities)
    for stanza in x_stanzas:
        for identity in ids:
            file_key = _unwrap_x25519(stanza, identity)
            if file_key is not None:
                hmac_key = _hkdf(file_key, b"", b"header")
                expected = hmac.new(hmac_key, header.mac_input, hashlib.sha256).digest()
                if not hmac.compare_digest(expected, header.mac):
                    raise HMACFailure("age header MAC mismatch: the header was modified")
                return file_key
    raise NoMatch("no identity matched any of the recipients")


def iter_payload(file_key: bytes, data: bytes) -> Iterator[bytes]:
    """Decrypt the STREAM payload (``data`` = nonce || chunks), yielding plaintext chunk by chunk."""
    if len(data) < 16:
        raise HeaderFailure("age payload: missing or short nonce")
    key = _hkdf(file_key, data[:16], b"payload")
    aead = ChaCha20Poly1305(key)
    payload = memoryview(data)[16:]
    if not payload:
        raise PayloadFailure("age payload: no chunks")
    pos = 0
    counter = 0
    while True:
        chunk = bytes(payload[pos : pos + _ENC_CHUNK])
        pos += len(chunk)
        at_end = pos >= len(payload)
        if len(chunk) < _TAG:
            raise PayloadFailure("age payload: truncated chunk")
        prefix = counter.to_bytes(11, "big")
        plain: bytes | None = None
        last = False
        if len(chunk) == _ENC_CHUNK:
            # A full chunk may be the final one; only the tag tells which.
            plain = _open(aead, prefix + b"\x00", chunk)
        if plain is None:
            plain = _open(aead, prefix + b"\x01", chunk)
            last = True
        if plain is None:
            raise PayloadFailure("age payload: chunk failed authentication (truncated or modified)")
        if last and not plain and counter > 0:
            raise PayloadFailure("age payload: empty final chunk")
        yield plain
        if last and not at_end:
            raise PayloadFailure("age payload: trailing data after the final chunk")
        if at_end and not last:
            raise PayloadFailure("age payload: truncated (no final chunk)")
        if last:
            return
        counter += 1


def _open(aead: ChaCha20Poly1305, nonce: bytes, chunk: bytes) -> bytes | None:
    try:
        return aead.decrypt(nonce, chunk, None)
    except InvalidTag:
        return None


def decrypt(data: bytes, identities: Iterable[X25519Identity]) -> bytes:
    """Decrypt a binary or armored age file."""
    if armor.is_armored(data):
        try:
            data = armor.decode(data)
        except armor.ArmorError as exc:
            raise ArmorFailure(f"age armor: {exc}") from None
    header = parse_header(data)
    file_key = unwrap_file_key(header, identities)
    return b"".join(iter_payload(file_key, data[header.payload_offset :]))


def _wrap_x25519(file_key: bytes, recipient: bytes) -> bytes:
    eph = X25519PrivateKey.generate()
    eph_share = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    wrap_key = _hkdf(shared, eph_share + recipient, X25519_LABEL)
    body = ChaCha20Poly1305(wrap_key).encrypt(b"\0" * 12, file_key, None)
    return b"-> X25519 " + _b64(eph_share) + b"\n" + _wrap_body(_b64(body))


def _wrap_body(b64: bytes) -> bytes:
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")
    return b"\n".join(lines) + b"\n"


def encrypt(plaintext: bytes, recipients: Sequence[str], *, armored: bool = False) -> bytes:
    """Encrypt to one or more X25519 recipients (``age1…``); optionally ASCII-armored."""
    if not recipients:
        raise CryptoError("age: no recipients given")
    keys = [parse_recipient(r) for r in recipients]
    file_key = os.urandom(16)
    header = VERSION_LINE + b"\n" + b"".join(_wrap_x25519(file_key, k) for k in keys) + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunks: list[bytes] = []
    count = max(1, -(-len(plaintext) // CHUNK_SIZE))
    for i in range(count):
        piece = plaintext[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        flag = b"\x01" if i == count - 1 else b"\x00"
        chunks.append(aead.encrypt(i.to_bytes(11, "big") + flag, piece, None))
    out = header + b" " + _b64(mac) + b"\n" + nonce + b"".join(chunks)
    return armor.encode(out).encode("ascii") if armored else out
