"""``Secret``: a string that never shows itself by accident.

Every client secret and token is wrapped in a ``Secret`` the moment it is read
(from a SOPS file, an environment variable, a file, the store or a provider
response). ``str()``, ``repr()``, f-strings, logging and JSON encoding all see
``'***'``; only :meth:`Secret.reveal` returns the value, and only code that
sends it to a provider or encrypts it for the store calls that.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
# Parameter keys whose values are credentials (client_secret, client_assertion, password,
# refresh_token, assertion, api_token, ...): validation wants them encrypted, and no cache
# may hold a plaintext one.
SECRET_LOOKING_KEY = re.compile(r"secret|password|token|assertion", re.IGNORECASE)
PARAM_FIELDS = ("tokenParams", "authorizeParams")


class Secret:
    """A sensitive string; ``reveal()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the plaintext; call only where it is sent or encrypted."""
        return self._value

    def fingerprint(self, key: bytes, *context: str) -> str:
        """A keyed HMAC-SHA256 of the value (hex): detects changes without storing it."""
        import hmac  # hmac and hashlib load OpenSSL's hashes: not needed to read a token

        # Each context part, a NUL, then the value (one join: a plan fingerprints 10,000 secrets).
        message = "\x00".join((*context, self._value)).encode()
        return hmac.digest(key, message, "sha256").hex()

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        import hashlib

        return hash(("Secret", hashlib.sha256(self._value.encode()).digest()))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values must not be pickled")


def reveal(value: str | Secret) -> str:
    """The plaintext of a value that may be sealed (a ``Secret``) or plain; only for requests."""
    return value.reveal() if isinstance(value, Secret) else value
