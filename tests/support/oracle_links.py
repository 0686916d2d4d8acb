"""Oracle-backed helpers: a store env, links at the oracle authorized through it, running linkctl."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from reconciler.oauth import flows
from reconciler.oauth.client import ClientConfig, TokenClient, TokenResponse
from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store.base import LinkWrite, Store
from reconciler.store.sqlite import SQLiteStore
from tests.conftest import ROOT
from tests.support.oracle import OidcServer, OracleClient

LeasedStore = SQLiteStore  # leases are mixed in (SQLiteLeases)


def state_env(tmp: Path) -> dict[str, str]:
    """Environment naming a fresh store and key under ``tmp``."""
    key = base64.b64encode(hashlib.sha256(str(tmp).encode()).digest()).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINKCTL_", "SOPS_"))}
    env.update(
        HOME=str(tmp),
        LINKCTL_STATE=f"sqlite:///{tmp / 'state.db'}",
        LINKCTL_STATE_KEY=key,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def open_store(env: dict[str, str]) -> Store:
    """Open the store of ``env`` (with the lease mixin)."""
    return LeasedStore.open(Settings.from_env(env), notice=lambda _: None)


def linkctl(*args: str) -> list[str]:
    """argv running ``linkctl``."""
    return [sys.executable, "-m", "reconciler", *args]


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run linkctl to completion."""
    return subprocess.run(linkctl(*args), env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start linkctl in the background."""
    return subprocess.Popen(
        linkctl(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def link_for(
    server: OidcServer, registered: OracleClient, name: str, *, grant: str = "authorization_code"
) -> LinkWrite:
    """A LinkWrite (stored-spec contract) pointing at the oracle."""
    scopes = ["openid", "offline_access", "api:read"] if grant != "client_credentials" else ["api:read"]
    spec: dict[str, Any] = {
        "provider": "custom",
        "clientId": registered.client_id,
        "clientSecret": {"$secret": "clientSecret"},
        "scopes": scopes,
        "grant": grant,
        "clientAuth": registered.auth_method,
        "tokenEndpoint": server.token_endpoint,
        "authorizationEndpoint": f"{server.issuer}/auth",
        "revocationEndpoint": f"{server.issuer}/token/revocation",
        "redirectUri": registered.redirect_uris[0] if registered.redirect_uris else None,
        "authorizeParams": {"prompt": "consent"},
    }
    assert registered.client_secret is not None
    return LinkWrite(
        name=name,
        provider="custom",
        spec=spec,
        spec_hash=hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest(),
        secrets={"clientSecret": registered.client_secret},
        secret_fingerprints={"clientSecret": "fp"},
        source_file="links/it.yaml",
        source_line=1,
    )


def authorize(server: OidcServer, client: TokenClient, config: ClientConfig) -> TokenResponse:
    """The code flow with PKCE, driven through the oracle's login and consent pages."""
    request = flows.build_authorization_request(config, require_iss=True)
    callback = server.login_and_consent(request.url)
    code = flows.parse_callback(callback, request)
    return client.exchange_code(
        config, code=code, code_verifier=request.pkce.verifier.reveal(), redirect_uri=request.redirect_uri
    )


def add_authorized_links(
    server: OidcServer, store: Store, names: Sequence[str], client: TokenClient
) -> OracleClient:
    """Register one client, create the links and authorize each (first tokens saved)."""
    from reconciler.keeper import client_config

    registered = server.register_client()
    with store.write(expected_serial=None, actor="test") as tx:
        for name in names:
            tx.put_link(link_for(server, registered, name))
    for name in names:
        link = store.get_link(name)
        assert link is not None
        response = authorize(server, client, client_config(store, link))
        assert response.refresh_token is not None
        store.save_authorization(name, response, clock_now=response.received_at)
    return registered


def introspect_active(server: OidcServer, registered: OracleClient, token: Secret) -> bool:
    """RFC 7662 introspection (does not trigger reuse detection, unlike a refresh)."""
    return bool(_refresh_token_call(server, registered, "token/introspection", token).json().get("active"))


def revoke_refresh_token(server: OidcServer, registered: OracleClient, token: Secret) -> None:
    """RFC 7009 revocation of a refresh token at the oracle, as the provider's admin would."""
    _refresh_token_call(server, registered, "token/revocation", token)


def _refresh_token_call(
    server: OidcServer, registered: OracleClient, path: str, token: Secret
) -> httpx.Response:
    assert registered.client_secret is not None
    answer = httpx.post(
        f"{server.issuer}/{path}",
        data={"token": token.reveal(), "token_type_hint": "refresh_token"},
        auth=(registered.client_id, registered.client_secret.reveal()),
        timeout=10,
    )
    answer.raise_for_status()
    return answer
