"""The exception hierarchy; each class carries the exit code the CLI returns for it.

Catch by what the caller should do, not by where the error came from::

    LinkctlError                      exit 1: anything linkctl reports (base class)
    ├── UsageError                    exit 64: the command line is wrong (flag, argument, value)
    ├── ConfigError                   exit 3: the declared files are wrong; fix them
    │   └── InvalidConfiguration      exit 3: carries many Diagnostics (validate)
    ├── ConflictError                 exit 4: someone else holds the lock, or the plan is stale
    │   ├── LockTimeout
    │   └── StalePlan
    ├── StateError                    exit 1: the store cannot be opened/read (wrong key, bad URL)
    │   └── UnknownLink               exit 6: ``token``: no link of that name in the store
    ├── TokenLifetimeTooShort         exit 8: ``token --min-valid S`` above the provider's token lifetime
    ├── CryptoError                   exit 3: a SOPS/age file cannot be decrypted or verified
    └── ProviderError                 exit 1: an OAuth provider answered with an error
        ├── TransientProviderError    retry later (network, 5xx, 429)
        │   ├── ResponseLost          sent, but no answer: the refresh token may be consumed
        │   └── ProviderUnavailable   exit 7: ``token``: the provider failed; retry later
        ├── AuthorizationStateError   a callback's state is unknown, already used or expired
        ├── GrantError                the link needs re-authorization (invalid_grant)
        │   └── NeedsAuthorization    exit 5: ``token``: run ``linkctl authorize`` first
        └── ProviderConfigError       client registration is wrong (invalid_client, ...)

The ``token`` codes (5-8) are raised only by ``linkctl token`` so that scripts can act on
them; every other command keeps the codes above. ``error_code`` is the stable string
``-o json`` prints as ``error``.

A usage error (unknown flag, missing argument, bad choice, a ``--min-valid`` of nan)
exits 64 (``EX_USAGE`` of sysexits), never 2: 2 means "changes present", and
``plan --detailed-exitcode || [ $? = 2 ]`` must not pass on a typo.

Messages never contain secret values: callers pass names and locations, not values.
Rendering happens once, at the edge (``reconciler.cli``, ``reconciler.server``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_INVALID = 3
EXIT_CONFLICT = 4
EXIT_NEEDS_AUTHORIZATION = 5
EXIT_UNKNOWN_LINK = 6
EXIT_PROVIDER_UNAVAILABLE = 7
EXIT_TOKEN_LIFETIME_TOO_SHORT = 8
EXIT_USAGE = 64  # sysexits.h EX_USAGE; argparse's own 2 would read as "changes present"


class LinkctlError(Exception):
    """Base class of every error linkctl reports to a user."""

    exit_code = EXIT_ERROR
    error_code = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def as_json(self) -> dict[str, object]:
        """The error as ``-o json`` prints it: stable code, message, hint, exit code (no secrets)."""
        return {
            "error": self.error_code,
            "message": self.message,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class UsageError(LinkctlError):
    """The command line itself is wrong (flag, argument or value): nothing was run."""

    exit_code = EXIT_USAGE
    error_code = "usage_error"


class ConfigError(LinkctlError):
    """The declared configuration is wrong; ``location`` says where (file:line:col)."""

    exit_code = EXIT_INVALID
    error_code = "invalid_configuration"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.file = file
        self.line = line
        self.column = column
        self.path = path

    @property
    def location(self) -> str:
        """``file:line:col`` as far as known."""
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = f" (at {self.path})" if self.path else ""
        return f"{self.location}: error: {self.message}{where}"


class InvalidConfiguration(ConfigError):
    """Validation found errors; ``diagnostics`` holds all of them (warnings too)."""

    def __init__(self, diagnostics: list[object]) -> None:
        errors = [d for d in diagnostics if getattr(d, "severity", "error") == "error"]
        super().__init__(f"{len(errors)} error(s) in the declared configuration")
        self.diagnostics = diagnostics

    def __str__(self) -> str:
        return self.message

    def as_json(self) -> dict[str, object]:
        """Also every diagnostic in its documented JSON form (file, line, column, hint)."""
        found = [d.to_json() for d in self.diagnostics if hasattr(d, "to_json")]
        return {**super().as_json(), "diagnostics": found}


class ConflictError(LinkctlError):
    """Another writer got there first; retry later or re-plan."""

    exit_code = EXIT_CONFLICT
    error_code = "conflict"


class LockTimeout(ConflictError):
    """The state lock stayed held past the timeout."""


class StalePlan(ConflictError):
    """A saved plan was computed against an older state serial."""


class StateError(LinkctlError):
    """The store cannot be opened, read or decrypted."""

    error_code = "state_error"


class UnknownLink(StateError):
    """``linkctl token`` was asked for a link the store does not hold."""

    exit_code = EXIT_UNKNOWN_LINK
    error_code = "unknown_link"


class TokenLifetimeTooShort(LinkctlError):
    """The provider's access tokens live shorter than ``--min-valid``: refreshing cannot help."""

    exit_code = EXIT_TOKEN_LIFETIME_TOO_SHORT
    error_code = "token_lifetime_too_short"

    def __init__(self, message: str, *, lifetime: float, min_valid: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.lifetime = lifetime
        self.min_valid = min_valid

    def as_json(self) -> dict[str, object]:
        """Also says how long the provider's tokens live, and what was asked for."""
        return {**super().as_json(), "token_lifetime": round(self.lifetime), "min_valid": self.min_valid}


class StoreNotReady(StateError):
    """Opening the store without writing was asked for, but it needs a write first."""


class CryptoError(LinkctlError):
    """A SOPS or age file cannot be decrypted or fails its integrity check."""

    exit_code = EXIT_INVALID
    error_code = "crypto_error"


class ProviderError(LinkctlError):
    """An OAuth provider refused or failed a request."""

    error_class = "provider_error"
    error_code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        oauth_error: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.oauth_error = oauth_error
        self.status_code = status_code
        self.retry_after = retry_after

    def as_json(self) -> dict[str, object]:
        """Also the provider's OAuth error code and ``Retry-After``, when it sent them."""
        data = super().as_json()
        if self.oauth_error:
            data["oauth_error"] = self.oauth_error
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data


class TransientProviderError(ProviderError):
    """Network trouble, 5xx or 429: retry with backoff (honour ``retry_after``)."""

    error_class = "transient"
    error_code = "provider_unavailable"


class ResponseLost(TransientProviderError):
    """The request was sent but its response never arrived (timeout, dropped connection).

    The provider may have rotated the refresh token already; the keeper records
    this so a following ``invalid_grant`` is explained precisely.
    """


class ProviderUnavailable(TransientProviderError):
    """``linkctl token``: the provider could not be reached or failed (5xx, 429); retry later."""

    exit_code = EXIT_PROVIDER_UNAVAILABLE


class AuthorizationStateError(ProviderError):
    """A callback's ``state`` names no pending authorization: unknown, already finished or expired."""

    error_code = "authorization_state"


class GrantError(ProviderError):
    """The grant is gone (``invalid_grant``): an admin must authorize the link again."""

    error_class = "needs_authorization"
    error_code = "needs_authorization"


class NeedsAuthorization(GrantError):
    """``linkctl token``: the link has no usable grant; an admin must run ``linkctl authorize``."""

    exit_code = EXIT_NEEDS_AUTHORIZATION


class ProviderConfigError(ProviderError):
    """The client registration is wrong (``invalid_client``, expired secret, ...)."""

    error_class = "configuration_error"
    error_code = "provider_configuration_error"
