"""Encrypted values: a typed leaf as the bytes sops encrypts, ``ENC[AES256_GCM,…]`` strings and back.

Go's formatting (floats, RFC 3339 times, booleans) is reproduced here so that values, their
AAD and the MAC match what sops writes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import math
import os
import re
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.sops import yamlv3

IV_SIZE = 32
_INT_RE = re.compile(r"[+-]?[0-9]+")
_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
         "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip
_RFC3339_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|z|[+-]\d{2}:\d{2})")


def go_float(value: float) -> str:
    """Go ``strconv.FormatFloat(f, 'f', -1, 64)``: shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(decimal.Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def to_bytes(value: Any) -> bytes:
    """The bytes sops encrypts and hashes for a typed leaf."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        if not yamlv3.INT64_MIN <= value <= yamlv3.INT64_MAX:
            raise ValueError("integer outside the int64 range (sops: unknown type uint64)")
        return str(value).encode("ascii")
    if isinstance(value, float):
        return go_float(value).encode("ascii")
    if isinstance(value, dt.datetime):
        return yamlv3.format_time(value).encode("ascii")
    if isinstance(value, bytes):
        return value
    raise ValueError(f"unsupported value type {type(value).__name__}")


def type_name(value: Any) -> str:
    """The ``type:`` field sops writes for a leaf."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.datetime):
        return "time"
    if isinstance(value, bytes):
        return "bytes"
    raise ValueError(f"unsupported value type {type(value).__name__}")


def from_bytes(kind: str, raw: bytes) -> Any:
    """The leaf of ``type:`` ``kind`` whose decrypted bytes are ``raw`` (ValueError if it is none)."""
    text = raw.decode("utf-8")
    if kind == "str":
        return text
    if kind == "int":
        if not _INT_RE.fullmatch(text):
            raise ValueError("bad int")
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return _BOOL[text]
    if kind == "time":
        parsed = parse_rfc3339(text)
        if parsed is None:
            raise ValueError("bad time")
        return parsed
    raise ValueError("unknown type")


def friendly(value: Any) -> Any:
    """sops stores JSON integers as type:float; an integral float comes back as an int (8080, not 8080.0)."""
    if (
        isinstance(value, float)
        and value.is_integer()
        and abs(value) <= 2**53
        and not (value == 0 and math.copysign(1.0, value) < 0)
    ):
        return int(value)
    return value


def parse_rfc3339(text: str) -> dt.datetime | None:
    """Go ``time.Parse(time.RFC3339Nano, …)``, at microsecond precision."""
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        return None
    zone = m[8]
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        delta = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = dt.UTC if not delta else dt.timezone(sign * delta)
    frac = (m[7] or ".0")[1:7].ljust(6, "0")
    try:
        return dt.datetime(
            int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), int(frac), tzinfo=tz
        )
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class EncValue:
    """The parts of an ``ENC[AES256_GCM,…]`` string."""

    data: bytes
    iv: bytes
    tag: bytes
    kind: str


def parse_enc(text: str) -> EncValue | None:
    """Split an ``ENC[…]`` string on its fixed field names; None if it is not one."""
    if not text.startswith("ENC[AES256_GCM,") or not text.endswith("]"):
        return None
    fields = text[len("ENC[AES256_GCM,") : -1].split(",")
    if len(fields) != 4:
        return None
    names = ("data:", "iv:", "tag:", "type:")
    if not all(f.startswith(n) for f, n in zip(fields, names, strict=True)):
        return None
    try:
        data, iv, tag = (
            base64.b64decode(f[len(n) :], validate=True) for f, n in zip(fields[:3], names[:3], strict=True)
        )
    except (binascii.Error, ValueError):
        return None
    return EncValue(data, iv, tag, fields[3][len("type:") :])


def encrypt_scalar(value: Any, key: bytes, aad: str, *, kind: str | None = None) -> str:
    """``ENC[AES256_GCM,…]`` for a typed leaf (an empty string stays empty, as in sops);
    ``kind`` overrides the type name (``comment``)."""
    if isinstance(value, str) and value == "":
        return ""
    raw = to_bytes(value)
    iv = os.urandom(IV_SIZE)
    sealed = AESGCM(key).encrypt(iv, raw, aad.encode("utf-8"))
    b64 = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b64(sealed[:-16]).decode()},iv:{b64(iv).decode()},"
        f"tag:{b64(sealed[-16:]).decode()},type:{kind or type_name(value)}]"
    )
