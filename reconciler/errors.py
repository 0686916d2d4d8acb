"""The exception hierarchy; each class carries the exit code the CLI returns for it.

Catch by what the caller should do, not by where the error came from::

    LinkctlError                      exit 1: anything linkctl reports (base class)
    ├── ConfigError                   exit 3: the declared files are wrong; fix them
    │   └── InvalidConfiguration      exit 3: carries many Diagnostics (validate)
    ├── ConflictError                 exit 4: someone else holds the lock, or the plan is stale
    │   ├── LockTimeout
    │   └── StalePlan
    ├── StateError                    exit 1: the store cannot be opened/read (wrong key, bad URL)
    ├── CryptoError                   exit 3: a SOPS/age file cannot be decrypted or verified
    └── ProviderError                 exit 1: an OAuth provider answered with an error
        ├── TransientProviderError    retry later (network, 5xx, 429)
        │   └── ResponseLost          sent, but no answer: the refresh token may be consumed
        ├── GrantError                the link needs re-authorization (invalid_grant)
        └── ProviderConfigError       client registration is wrong (invalid_client, ...)

Messages never contain secret values: callers pass names and locations, not values.
Rendering happens once, at the edge (``reconciler.cli``, ``reconciler.server``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_INVALID = 3
EXIT_CONFLICT = 4


class LinkctlError(Exception):
    """Base class of every error linkctl reports to a user."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(LinkctlError):
    """The declared configuration is wrong; ``location`` says where (file:line:col)."""

    exit_code = EXIT_INVALID

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


class ConflictError(LinkctlError):
    """Another writer got there first; retry later or re-plan."""

    exit_code = EXIT_CONFLICT


class LockTimeout(ConflictError):
    """The state lock stayed held past the timeout."""


class StalePlan(ConflictError):
    """A saved plan was computed against an older state serial."""


class StateError(LinkctlError):
    """The store cannot be opened, read or decrypted."""


class StoreNotReady(StateError):
    """Opening the store without writing was asked for, but it needs a write first."""


class CryptoError(LinkctlError):
    """A SOPS or age file cannot be decrypted or fails its integrity check."""

    exit_code = EXIT_INVALID


class ProviderError(LinkctlError):
    """An OAuth provider refused or failed a request."""

    error_class = "provider_error"

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


class TransientProviderError(ProviderError):
    """Network trouble, 5xx or 429: retry with backoff (honour ``retry_after``)."""

    error_class = "transient"


class ResponseLost(TransientProviderError):
    """The request was sent but its response never arrived (timeout, dropped connection).

    The provider may have rotated the refresh token already; the keeper records
    this so a following ``invalid_grant`` is explained precisely.
    """


class GrantError(ProviderError):
    """The grant is gone (``invalid_grant``): an admin must authorize the link again."""

    error_class = "needs_authorization"


class ProviderConfigError(ProviderError):
    """The client registration is wrong (``invalid_client``, expired secret, ...)."""

    error_class = "configuration_error"
