"""Test doubles for the keeper tests: a fake clock and a fake rotating token endpoint.

``RotatingProvider`` behaves like oidc-provider with ``rotateRefreshToken``: every refresh
returns a new refresh token, and replaying a rotated-out one returns ``invalid_grant`` and
revokes the whole grant (RFC 9700 reuse detection) — so a double refresh is detectable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
from collections.abc import Callable
from typing import Any

from reconciler.domain.tokens import ClientConfig, TokenResponse
from reconciler.errors import GrantError, LinkctlError, ResponseLost
from reconciler.secrets import Secret
from reconciler.store.base import LinkWrite, Store


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


def response(
    access: str = "at-1", refresh: str | None = "rt-1", *, expires_in: float | None = 3600, at: float = 0.0
) -> TokenResponse:
    """A token response with readable fake tokens."""
    return TokenResponse(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if refresh is not None else None,
        token_type="Bearer",
        expires_in=expires_in,
        scope="read",
        received_at=at,
    )


@dataclasses.dataclass
class Call:
    kind: str
    link: str
    token: str | None


class RotatingProvider:
    """A fake token endpoint with refresh-token rotation and reuse detection (thread-safe)."""

    def __init__(self, *, expires_in: float | None = 60, rotate: bool = True) -> None:
        self.expires_in = expires_in
        self.rotate = rotate
        self.valid: dict[str, str] = {}  # link -> the one live refresh token
        self.revoked: set[str] = set()  # links whose grant died (reuse detected)
        self.calls: list[Call] = []
        self.faults: list[Callable[[str], Any]] = []  # one-shot: raise, or return "lost"
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.revocations: list[tuple[str, str]] = []
        self.revoke_error: LinkctlError | None = None

    def authorize(self, link: str) -> TokenResponse:
        """First tokens of a link (as the code flow would give them)."""
        with self._lock:
            n = next(self._counter)
            rt = f"rt-{link}-{n}"
            self.valid[link] = rt
            self.revoked.discard(link)
            return response(f"at-{link}-{n}", rt, expires_in=self.expires_in)

    def refresh(self, config: ClientConfig, refresh_token: Secret) -> TokenResponse:
        with self._lock:
            token = refresh_token.reveal()
            self.calls.append(Call("refresh", config.link, token))
            fault = self.faults.pop(0) if self.faults else None
            lost = fault is not None and fault(config.link) == "after"  # a raising fault fails first
            if config.link in self.revoked or self.valid.get(config.link) != token:
                self.revoked.add(config.link)  # reuse of a rotated-out token kills the grant
                raise GrantError(
                    f"token refresh for link {config.link!r}: HTTP 400 invalid_grant",
                    oauth_error="invalid_grant",
                    status_code=400,
                )
            n = next(self._counter)
            new_rt = f"rt-{config.link}-{n}" if self.rotate else token
            self.valid[config.link] = new_rt
            result = response(
                f"at-{config.link}-{n}", new_rt if self.rotate else None, expires_in=self.expires_in
            )
        if lost:
            raise ResponseLost(f"token refresh for link {config.link!r}: no response arrived (ReadTimeout)")
        return result

    def client_credentials(self, config: ClientConfig) -> TokenResponse:
        with self._lock:
            self.calls.append(Call("client_credentials", config.link, None))
            if self.faults:
                self.faults.pop(0)(config.link)
            n = next(self._counter)
            return response(f"cc-{config.link}-{n}", None, expires_in=self.expires_in)

    def revoke(self, config: ClientConfig, token: Secret, *, token_type_hint: str = "refresh_token") -> None:
        with self._lock:
            if self.revoke_error is not None:
                raise self.revoke_error
            self.revocations.append((config.link, token_type_hint))
            if token_type_hint == "refresh_token":
                self.revoked.add(config.link)

    def refresh_count(self, link: str | None = None) -> int:
        return sum(1 for c in self.calls if c.kind == "refresh" and (link is None or c.link == link))


def fail_before(error: LinkctlError) -> Callable[[str], Any]:
    """A fault that fails the request before the provider processes it."""

    def fault(link: str) -> Any:
        raise error

    return fault


def lose_response() -> Callable[[str], Any]:
    """A fault where the provider processes the refresh (rotates) but the answer is lost."""
    return lambda link: "after"


def link_write(
    name: str, *, grant: str = "authorization_code", provider: str = "custom", **spec: Any
) -> LinkWrite:
    """A LinkWrite following the stored-spec contract."""
    full: dict[str, Any] = {
        "provider": provider,
        "clientId": f"client-{name}",
        "clientSecret": {"$secret": "clientSecret"},
        "scopes": ["read"],
        "grant": grant,
        "clientAuth": "client_secret_basic",
        "tokenEndpoint": "http://127.0.0.1:9/token",
        "revocationEndpoint": "http://127.0.0.1:9/revoke",
        "redirectUri": "http://127.0.0.1:9/callback",
        **spec,
    }
    return LinkWrite(
        name=name,
        provider=provider,
        spec=full,
        spec_hash=hashlib.sha256(repr(sorted(full.items())).encode()).hexdigest(),
        secrets={"clientSecret": Secret(f"secret-{name}")},
        secret_fingerprints={"clientSecret": f"fp-{name}"},
        source_file="links/test.yaml",
        source_line=1,
    )


def add_links(store: Store, *writes: LinkWrite) -> None:
    """Create links through the store's write transaction."""
    with store.write(expected_serial=None, actor="test") as tx:
        for write in writes:
            tx.put_link(write)
