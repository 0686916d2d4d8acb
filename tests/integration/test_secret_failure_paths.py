"""No plaintext secret on the failure paths of `keeper` and `token`.

A provider that rejects the refresh token (invalid_grant after a real revocation at the
oracle) or answers 5xx: whatever linkctl prints (with and without ``--debug``), stores
as the last error, shows in ``list``/``show``/``state events``, or writes to the store
files must not contain a refresh token, an access token or the client secret.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from reconciler.oauth.client import TokenClient
from tests.support.oracle import OidcServer
from tests.support.oracle_links import add_authorized_links, open_store, revoke_refresh_token, run, state_env


def _store_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("state.db*")))


def test_keeper_and_token_failures_never_show_or_store_a_token(
    oracle: OidcServer, client: TokenClient, tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    store = open_store(env)
    names = ["kept", "tok", "flaky"]
    registered = add_authorized_links(oracle, store, names, client)
    secrets: list[str] = []
    for name in names:
        grant = store.get_grant(name, with_tokens=True)
        assert grant is not None and grant.refresh_token is not None and grant.access_token is not None
        secrets += [grant.refresh_token.reveal(), grant.access_token.reveal()]
    assert registered.client_secret is not None
    secrets.append(registered.client_secret.reveal())
    refresh = {name: store.get_grant(name, with_tokens=True).refresh_token for name in names}  # type: ignore[union-attr]
    store.close()
    for name in ("kept", "tok"):
        token = refresh[name]
        assert token is not None
        revoke_refresh_token(oracle, registered, token)
    db = sqlite3.connect(tmp_path / "state.db")  # make "kept" due for the keeper now
    with db:
        db.execute(
            # due_at is what the store's due query reads (written by the store's rule on its writes)
            "UPDATE grants SET next_refresh_at = 0, due_at = 0"
            " WHERE link_uid = (SELECT uid FROM links WHERE name = 'kept')"
        )
    db.close()

    outputs = []
    keeper_run = run(env, "--debug", "keeper", "--once")
    assert keeper_run.returncode != 0, keeper_run.stdout + keeper_run.stderr
    outputs.append(keeper_run)
    rejected = run(env, "token", "tok", "--min-valid", "60")
    assert rejected.returncode != 0 and "linkctl authorize tok" in rejected.stderr, rejected.stderr
    outputs.append(rejected)
    outputs.append(run(env, "--debug", "token", "tok", "--min-valid", "60"))
    oracle.fault("unavailable", times=2)
    outputs.append(run(env, "token", "flaky", "--min-valid", "60"))
    outputs.append(run(env, "--debug", "token", "flaky", "--min-valid", "60"))
    assert all(o.returncode != 0 for o in outputs[-2:]), [o.stderr for o in outputs[-2:]]
    for args in (["list"], ["list", "-o", "json"], ["state", "events"]):
        outputs.append(run(env, *args))
    for name in names:
        outputs.append(run(env, "show", name))
        outputs.append(run(env, "show", name, "-o", "json"))
    shown = run(env, "show", "kept")
    assert "needs_authorization" in shown.stdout or "needs authorization" in shown.stdout, shown.stdout

    texts = [o.stdout + o.stderr for o in outputs]
    for secret in secrets:
        assert not any(secret in text for text in texts), "a token or client secret in linkctl's output"
        assert secret.encode() not in _store_bytes(tmp_path), "a token or client secret in the store files"
    store = open_store(env)
    for name in names:
        grant = store.get_grant(name)
        assert grant is not None and grant.last_error, f"{name}: the failure was not recorded"
        assert not any(secret in grant.last_error for secret in secrets)
    store.close()
