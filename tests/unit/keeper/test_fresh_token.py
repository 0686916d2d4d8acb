"""``fresh_token`` (linkctl token) and ``revoke_grant`` (prune) against the real store."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from reconciler import keeper
from reconciler.domain.grants import GrantStatus
from reconciler.errors import (
    ConflictError,
    GrantError,
    NeedsAuthorization,
    ProviderConfigError,
    ProviderUnavailable,
    TokenLifetimeTooShort,
    TransientProviderError,
    UnknownLink,
)
from reconciler.store.base import Store
from reconciler.store.grants import Grant
from tests.support.fakes import FakeClock, RotatingProvider, add_links, link_write


def _authorize(store: Store, provider: RotatingProvider, clock: FakeClock, name: str = "a") -> None:
    add_links(store, link_write(name))
    store.save_authorization(
        name, dataclasses.replace(provider.authorize(name), received_at=clock()), clock_now=clock()
    )


def _never(*_: object) -> keeper.TokenClientLike:
    raise AssertionError("no HTTP client may be built for a fresh token")


def test_fresh_token_is_returned_without_a_request(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    _authorize(store, provider, clock)
    grant = keeper.fresh_token(store, "a", min_valid=30, client=_never, clock=clock)
    assert grant.access_token is not None and provider.refresh_count() == 0


def test_min_valid_forces_a_refresh(store: Store, provider: RotatingProvider, clock: FakeClock) -> None:
    _authorize(store, provider, clock)
    before = store.get_grant("a", with_tokens=True)
    clock.advance(5)  # 55 s left of 60: asking for 58 refreshes
    grant = keeper.fresh_token(store, "a", min_valid=58, client=provider, clock=clock)
    assert provider.refresh_count() == 1 and grant.access_token != before.access_token  # type: ignore[union-attr]
    # The new token's whole life is 60 s: asking for 3600 s is refused from the recorded
    # lifetime, without another refresh (refreshing again would only repeat it).
    with pytest.raises(TokenLifetimeTooShort, match="live 60 s") as info:
        keeper.fresh_token(store, "a", min_valid=3600, client=provider, clock=clock)
    assert info.value.exit_code == 8 and info.value.lifetime == 60
    assert provider.refresh_count() == 1


def test_one_refresh_shows_the_lifetime_is_too_short(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("cc", grant="client_credentials"))  # no token yet: lifetime unknown
    with pytest.raises(TokenLifetimeTooShort, match="shorter than --min-valid 3600"):
        keeper.fresh_token(store, "cc", min_valid=3600, client=provider, clock=clock)
    with pytest.raises(TokenLifetimeTooShort):
        keeper.fresh_token(store, "cc", min_valid=3600, client=provider, clock=clock)
    # One request showed it; the second call sent none.
    assert [c.kind for c in provider.calls] == ["client_credentials"]
    grant = store.get_grant("cc")
    assert grant is not None and grant.lease_owner is None


def _fresh_token_while_another_process_refreshes(
    open_store: Callable[[], Store], provider: RotatingProvider, *, min_valid: float
) -> Grant:
    """``fresh_token`` for link "a" (1 s left) while another process holds the lease and refreshes."""
    clock = time.time
    store = open_store()
    add_links(store, link_write("a"))
    store.save_authorization(
        "a", dataclasses.replace(provider.authorize("a"), received_at=clock() - 59), clock_now=clock()
    )
    held = store.acquire_lease("a", owner="other", ttl=30, now=clock())
    assert held is not None and held.refresh_token is not None

    def other_process() -> None:
        time.sleep(0.3)
        s = open_store()
        response = provider.refresh(keeper.client_config(s, s.get_link("a")), held.refresh_token)  # type: ignore[arg-type]
        s.commit_tokens(
            "a",
            owner="other",
            expected_version=held.token_version,
            response=dataclasses.replace(response, received_at=clock()),
            now=clock(),
            next_refresh_at=None,
        )
        s.close()

    thread = threading.Thread(target=other_process)
    thread.start()
    try:
        return keeper.fresh_token(store, "a", min_valid=min_valid, client=provider)
    finally:
        thread.join()


def test_waits_for_the_lease_holder_and_returns_its_token(
    open_store: Callable[[], Store], provider: RotatingProvider
) -> None:
    grant = _fresh_token_while_another_process_refreshes(open_store, provider, min_valid=30)
    assert provider.refresh_count() == 1  # only the holder refreshed
    assert grant.access_token is not None and grant.access_token.reveal() == f"at-a-{2}"


def test_a_token_another_process_refreshed_meanwhile_is_accepted_even_if_shorter_than_min_valid(
    open_store: Callable[[], Store], provider: RotatingProvider
) -> None:
    """One refresh in flight: a caller asking for more than any token lives does not refresh again."""
    # Tokens live 60 s: by the time the caller reads it, the holder's token has a hair less.
    grant = _fresh_token_while_another_process_refreshes(open_store, provider, min_valid=60)
    assert provider.refresh_count() == 1, "the caller refreshed again instead of taking the holder's token"
    assert grant.access_token is not None and grant.access_token.reveal() == "at-a-2"


def test_gives_up_when_the_lease_stays_held(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    _authorize(store, provider, clock)
    clock.advance(59)
    assert store.acquire_lease("a", owner="other", ttl=30, now=clock()) is not None
    with pytest.raises(ConflictError, match="held the refresh lease"):
        keeper.fresh_token(
            store, "a", min_valid=30, client=provider, clock=clock, sleep=clock.sleep, wait_timeout=5
        )


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (GrantError("invalid_grant"), GrantError, GrantStatus.NEEDS_AUTHORIZATION),
        (ProviderConfigError("invalid_client"), ProviderConfigError, GrantStatus.CONFIGURATION_ERROR),
    ],
)
def test_parked_links_raise_a_clear_status(
    store: Store, provider: RotatingProvider, clock: FakeClock, error: Exception, expected: type, status: str
) -> None:
    _authorize(store, provider, clock)
    clock.advance(61)
    provider.faults.append(lambda _link: (_ for _ in ()).throw(error))
    with pytest.raises(expected, match="cannot refresh link 'a'"):
        keeper.fresh_token(store, "a", min_valid=30, client=provider, clock=clock)
    assert store.get_grant("a").status == status  # type: ignore[union-attr]
    with pytest.raises(expected, match="link 'a'"):
        keeper.fresh_token(store, "a", min_valid=30, client=provider, clock=clock)
    assert provider.refresh_count() == 1  # no second attempt on a parked link


def test_never_authorized_link(store: Store, provider: RotatingProvider, clock: FakeClock) -> None:
    add_links(store, link_write("a"))
    with pytest.raises(GrantError, match="needs authorization") as info:
        keeper.fresh_token(store, "a", min_valid=30, client=provider, clock=clock)
    assert isinstance(info.value, NeedsAuthorization) and info.value.exit_code == 5


def test_unknown_link_has_its_own_exit_code(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    with pytest.raises(UnknownLink, match="no link named 'nope'") as info:
        keeper.fresh_token(store, "nope", min_valid=30, client=provider, clock=clock)
    assert info.value.exit_code == 6 and info.value.as_json()["error"] == "unknown_link"


def test_transient_failure_is_raised_with_retry_after(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    _authorize(store, provider, clock)
    clock.advance(61)
    provider.faults.append(lambda _link: (_ for _ in ()).throw(TransientProviderError("503", retry_after=9)))
    with pytest.raises(TransientProviderError) as info:
        keeper.fresh_token(store, "a", min_valid=30, client=provider, clock=clock)
    assert info.value.retry_after == 9
    assert isinstance(info.value, ProviderUnavailable) and info.value.exit_code == 7
    assert info.value.as_json() == {
        "error": "provider_unavailable",
        "message": info.value.message,
        "hint": None,
        "exit_code": 7,
        "retry_after": 9,
    }


def test_client_credentials_token_on_demand(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("cc", grant="client_credentials"))
    grant = keeper.fresh_token(store, "cc", min_valid=30, client=provider, clock=clock)
    assert grant.access_token is not None and grant.access_token.reveal().startswith("cc-cc-")


def test_revoke_grant(store: Store, provider: RotatingProvider, clock: FakeClock) -> None:
    _authorize(store, provider, clock)
    result = keeper.revoke_grant(store, "a", provider, clock=clock)
    assert result.revoked and result.revoked_tokens == ("refresh_token", "access_token")
    assert store.get_grant("a").status == GrantStatus.NEEDS_AUTHORIZATION  # type: ignore[union-attr]


def test_revoke_failure_is_reported(store: Store, provider: RotatingProvider, clock: FakeClock) -> None:
    _authorize(store, provider, clock)
    provider.revoke_error = TransientProviderError("revocation: HTTP 503")
    result = keeper.revoke_grant(store, "a", provider, clock=clock)
    assert result.failed and result.error is not None and "503" in result.error
    assert store.get_grant("a").lease_owner is None  # type: ignore[union-attr]


def test_revoke_without_endpoint(store: Store, provider: RotatingProvider, clock: FakeClock) -> None:
    add_links(store, link_write("ms", revocationEndpoint=None))
    result = keeper.revoke_grant(store, "ms", provider, clock=clock)
    assert not result.attempted and not result.failed and "no revocation endpoint" in (result.reason or "")


def test_prepared_revocation_abandoned_leaves_the_grant_untouched(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    # Apply takes the lease and reads the tokens before its transaction; if the transaction
    # fails, the grant must be exactly as it was (nothing revoked, nothing marked).
    _authorize(store, provider, clock)
    before = store.get_grant("a", with_tokens=True)
    pending = keeper.prepare_revocation(store, "a", provider, clock=clock)
    assert isinstance(pending, keeper.PendingRevocation)
    assert [hint for hint, _ in pending.tokens] == ["refresh_token", "access_token"]
    assert store.acquire_lease("a", owner="keeper-x", ttl=30, now=clock()) is None  # no rotation can race
    pending.abandon(store)
    after = store.get_grant("a", with_tokens=True)
    assert after is not None and before is not None
    assert (after.status, after.token_version, after.refresh_token, after.lease_owner) == (
        before.status,
        before.token_version,
        before.refresh_token,
        None,
    )
    assert "a" not in provider.revoked


def test_rename_is_refused_while_a_refresh_is_in_flight(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    # Token writes find their grant by link name: a rename under an in-flight refresh would
    # make its rotated refresh token impossible to commit (invariant 4).
    _authorize(store, provider, clock)
    assert store.acquire_lease("a", owner="keeper-x", ttl=30, now=time.time()) is not None
    with pytest.raises(ConflictError, match="in flight"), store.write(expected_serial=None, actor="t") as tx:
        tx.rename_link("a", "b")
    assert store.get_link("a") is not None and store.get_link("b") is None
    store.release_lease("a", owner="keeper-x")
    with store.write(expected_serial=None, actor="t") as tx:
        tx.rename_link("a", "b")
    grant = store.get_grant("b", with_tokens=True)
    assert grant is not None and grant.refresh_token is not None


def test_revocation_takes_over_the_lease_of_a_dead_process(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    # A kill -9 of an apply (or keeper) leaves its lease; waiting for it to expire would make
    # the next apply fail to revoke. A same-host holder whose pid is gone is reaped at once.
    import os
    import socket
    import subprocess
    import sys

    _authorize(store, provider, clock)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = f"revoke:{socket.gethostname()}:{int(done.stdout)}:deadbeef"
    assert keeper.holder_is_dead(dead) and not keeper.holder_is_dead(
        f"x:{socket.gethostname()}:{os.getpid()}:a"
    )
    assert not keeper.holder_is_dead("keeper:another-host:1:abc")
    assert store.acquire_lease("a", owner=dead, ttl=120, now=time.time()) is not None
    pending = keeper.prepare_revocation(store, "a", provider, wait_timeout=2)
    assert isinstance(pending, keeper.PendingRevocation)
    pending.abandon(store)


class _Offline:
    """A client that fails the test if anything would reach the provider."""

    def with_endpoints(self, *_: object, **__: object) -> object:
        raise AssertionError("discovery ran for a link that has no tokens")

    def revoke(self, *_: object, **__: object) -> object:
        raise AssertionError("a revocation was sent for a link that has no tokens")


def test_never_authorized_link_is_not_discovered(store: Store, clock: FakeClock) -> None:
    add_links(store, link_write("ms", revocationEndpoint=None, issuer="https://login.example.invalid/v2.0"))
    result = keeper.prepare_revocation(store, "ms", _Offline(), clock=clock)  # type: ignore[arg-type]
    assert isinstance(result, keeper.RevocationResult)
    assert result.reason == "no tokens" and not result.attempted and not result.failed


def test_revokes_on_delete_needs_tokens_and_an_endpoint(
    store: Store, provider: RotatingProvider, clock: FakeClock
) -> None:
    add_links(store, link_write("never"), link_write("local", revokeOnDelete=False))
    _authorize(store, provider, clock, "a")
    for name in ("local",):
        store.save_authorization(
            name, dataclasses.replace(provider.authorize(name), received_at=clock()), clock_now=clock()
        )
    links = {link.name: link for link in store.list_links()}
    assert keeper.revokes_on_delete(store, links["a"])
    assert not keeper.revokes_on_delete(store, links["never"])  # no grant, no tokens
    assert not keeper.revokes_on_delete(store, links["local"])  # revokeOnDelete: false
