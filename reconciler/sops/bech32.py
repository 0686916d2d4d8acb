"""Bech32 (BIP-173 without the 90-character limit) for age keys; used by :mod:`.age`."""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """A string is not valid Bech32 (the message never echoes the string: it may be a secret key)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATORS):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise Bech32Error("invalid data value")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        # Padding must be shorter than one input group and all zero.
        raise Bech32Error("non-zero or overlong padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under ``hrp``; the case of ``hrp`` decides the case of the result."""
    upper = hrp.isupper()
    low_hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, True)
    check = _polymod([*_hrp_expand(low_hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    text = low_hrp + "1" + "".join(CHARSET[v] for v in values + checksum)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string into (hrp, data); the hrp is returned in the string's case."""
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed case")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("invalid character")
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise Bech32Error("separator misplaced")
    hrp = text[:pos]
    low = text.lower()
    try:
        values = [_CHARSET_INDEX[c] for c in low[pos + 1 :]]
    except KeyError:
        raise Bech32Error("invalid data character") from None
    if _polymod([*_hrp_expand(hrp.lower()), *values]) != 1:
        raise Bech32Error("invalid checksum")
    data = bytes(_convert_bits(values[:-6], 5, 8, False))
    return hrp, data
