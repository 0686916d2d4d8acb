"""Strict ASCII armor (RFC 7468 PEM, ``AGE ENCRYPTED FILE``) for age files; used by :mod:`.age`."""

from __future__ import annotations

import base64
import binascii

BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
END = "-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
# age tolerates a little whitespace around the block, not an unbounded amount.
_MAX_WHITESPACE = 1024
_WHITESPACE = " \t\r\n"


class ArmorError(ValueError):
    """The armor is malformed."""


def is_armored(data: bytes) -> bool:
    """Whether ``data`` starts (after whitespace) with the age armor BEGIN line."""
    return data.lstrip(_WHITESPACE.encode()).startswith(BEGIN.encode())


def encode(data: bytes) -> str:
    """Armor ``data``: 64-column padded base64 between BEGIN/END lines, LF after every line."""
    b64 = base64.b64encode(data).decode("ascii")
    lines = [BEGIN] + [b64[i : i + COLUMNS] for i in range(0, len(b64), COLUMNS)] + [END]
    return "\n".join(lines) + "\n"


def decode(data: bytes | str) -> bytes:
    """Strictly de-armor an age file; raise :class:`ArmorError` on any deviation."""
    if isinstance(data, bytes):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ArmorError("armor contains non-ASCII bytes") from None
    else:
        text = data
    stripped_front = text.lstrip(_WHITESPACE)
    stripped = stripped_front.rstrip(_WHITESPACE)
    if len(text) - len(stripped_front) > _MAX_WHITESPACE:
        raise ArmorError("too much leading whitespace")
    if len(stripped_front) - len(stripped) > _MAX_WHITESPACE:
        raise ArmorError("too much trailing whitespace")
    lines = stripped.replace("\r\n", "\n").split("\n")
    if len(lines) < 2 or lines[0] != BEGIN:
        raise ArmorError("missing or wrong BEGIN line")
    if lines[-1] != END:
        raise ArmorError("missing or wrong END line")
    body = lines[1:-1]
    if not body:
        return b""
    for line in body[:-1]:
        if len(line) != COLUMNS:
            raise ArmorError("armor line is not 64 columns")
    last = body[-1]
    if not last or len(last) > COLUMNS:
        raise ArmorError("bad last armor line")
    b64 = "".join(body)
    if any(c not in _B64_ALPHABET for c in b64):
        raise ArmorError("invalid base64 character in armor")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ArmorError("invalid base64 in armor") from None
    if base64.b64encode(raw).decode("ascii") != b64:
        raise ArmorError("non-canonical base64 in armor")
    return raw


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
