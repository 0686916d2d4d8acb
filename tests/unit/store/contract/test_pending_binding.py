"""Store contract: a pending authorization bound to an admin session and a link, on every backend.

The row keeps the session hash it was started with; a take by another session, by a
caller naming another link, or by a session for a CLI-started row (bound to none) leaves
it untouched (``refused`` says which, no verifier), so the rightful take still works once.
"""

from __future__ import annotations

import pytest

from reconciler.secrets import Secret
from reconciler.store.base import LinkWrite, Store

MINE, THEIRS = "a" * 64, "b" * 64


def _put(store: Store, state: str, *, session: str | None) -> None:
    store.put_pending_authorization(
        "crm",
        state=state,
        code_verifier=Secret("verifier-" + state),
        redirect_uri="https://linkctl.example/oauth/callback/crm",
        issuer=None,
        require_iss=False,
        created_at=1_000.0,
        expires_at=1_600.0,
        session_hash=session,
    )


@pytest.fixture
def with_link(store: Store) -> Store:
    with store.write(expected_serial=None, actor="test") as tx:
        tx.put_link(
            LinkWrite(
                name="crm",
                provider="custom",
                spec={},
                spec_hash="h",
                secrets={},
                secret_fingerprints={},
                source_file=None,
                source_line=None,
            )
        )
    return store


@pytest.mark.parametrize(
    ("bind", "refused"),
    [
        ({"session_hash": THEIRS}, "session"),
        ({"link": "other"}, "link"),
        ({"link": "other", "session_hash": MINE}, "link"),
    ],
)
def test_a_mismatched_take_leaves_the_row(with_link: Store, bind: dict[str, str], refused: str) -> None:
    _put(with_link, "s1", session=MINE)
    taken = with_link.consume_pending_authorization("s1", now=1_001.0, **bind)
    assert taken is not None and taken.refused == refused and taken.code_verifier.reveal() == ""
    assert not taken.consumed_before and taken.session_hash == MINE
    rightful = with_link.consume_pending_authorization("s1", now=1_002.0, link="crm", session_hash=MINE)
    assert rightful is not None and rightful.refused is None
    assert rightful.code_verifier.reveal() == "verifier-s1" and not rightful.consumed_before
    again = with_link.consume_pending_authorization("s1", now=1_003.0, link="crm", session_hash=MINE)
    assert again is not None and again.consumed_before and again.code_verifier.reveal() == ""


def test_a_cli_row_is_not_taken_by_a_session_but_by_the_cli(with_link: Store) -> None:
    _put(with_link, "s2", session=None)
    by_session = with_link.consume_pending_authorization("s2", now=1_001.0, session_hash=MINE)
    assert by_session is not None and by_session.refused == "session" and by_session.session_hash is None
    by_cli = with_link.consume_pending_authorization("s2", now=1_002.0)
    assert by_cli is not None and by_cli.refused is None and by_cli.code_verifier.reveal() == "verifier-s2"
