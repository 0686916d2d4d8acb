"""Shamir secret sharing over GF(2^8) (AES polynomial 0x11B), as sops uses for key groups.

A share is the y-bytes followed by one x byte. Called by :mod:`reconciler.sops.tree`
to split the data key across key groups and to combine shares on decryption.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def _mul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return r


def _inv(a: int) -> int:
    # a^254 is the inverse in GF(2^8).
    result, base, exp = 1, a, 254
    while exp:
        if exp & 1:
            result = _mul(result, base)
        base = _mul(base, base)
        exp >>= 1
    return result


def split(secret: bytes, parts: int, threshold: int) -> list[bytes]:
    """Split ``secret`` into ``parts`` shares, any ``threshold`` of which recombine it."""
    if not 2 <= threshold <= parts <= 255:
        raise ValueError("need 2 <= threshold <= parts <= 255")
    coeffs = [[byte, *os.urandom(threshold - 1)] for byte in secret]
    shares: list[bytes] = []
    for x in range(1, parts + 1):
        ys = bytearray()
        for poly in coeffs:
            y = 0
            for c in reversed(poly):
                y = _mul(y, x) ^ c
            ys.append(y)
        shares.append(bytes(ys) + bytes([x]))
    return shares


def combine(shares: Sequence[bytes]) -> bytes:
    """Recombine shares (Lagrange interpolation at 0)."""
    if len(shares) < 2:
        raise ValueError("need at least two shares")
    length = len(shares[0])
    if length < 2 or any(len(s) != length for s in shares):
        raise ValueError("shares differ in length")
    xs = [s[-1] for s in shares]
    if len(set(xs)) != len(xs) or 0 in xs:
        raise ValueError("duplicate or zero share index")
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = _mul(num, xj)
                den = _mul(den, xi ^ xj)
        weights.append(_mul(num, _inv(den)))
    out = bytearray(length - 1)
    for share, w in zip(shares, weights, strict=True):
        for k in range(length - 1):
            out[k] ^= _mul(share[k], w)
    return bytes(out)
