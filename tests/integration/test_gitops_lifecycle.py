"""The whole life of a link through the CLI, against a real authorization server.

Declare it in a file → apply → authorize (code + PKCE on the loopback redirect) →
`token` → rotate via `token --min-valid` → prune it from git → apply --prune
revokes its refresh token at the provider (RFC 7009) before deleting it.
Secrets never reach any output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from reconciler.secrets import Secret
from reconciler.settings import Settings
from reconciler.store import open_store
from tests.conftest import ROOT
from tests.support.oracle import OidcServer
from tests.support.oracle_links import introspect_active


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_declare_apply_authorize_token_prune(
    oracle: OidcServer, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    registered = oracle.register_client(redirect_uris=(f"{base}/oauth/callback/tracker",))
    assert registered.client_secret is not None
    secret = registered.client_secret.reveal()
    links = tmp_path / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(
        f"apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {{name: test}}\n"
        f"spec:\n  baseUrl: {base}\n  allowInsecureLoopback: true\n"
    )
    (links / "tracker.yaml").write_text(
        "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata: {name: tracker}\nspec:\n"
        f"  provider: custom\n  issuer: {oracle.issuer}\n  clientId: {registered.client_id}\n"
        f"  clientAuth: {registered.auth_method}\n  clientSecret: {{fromEnv: TRACKER_SECRET}}\n"
        "  scopes: [openid, offline_access, api:read]\n  authorizeParams: {prompt: consent}\n"
    )
    env = {**os.environ, **isolated_env, "TRACKER_SECRET": secret, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    outputs: list[str] = []

    def linkctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True, timeout=60
        )
        outputs.append(done.stdout + done.stderr)
        assert not check or done.returncode == 0, done.stderr
        return done

    linkctl("apply", str(links))
    assert linkctl("redirect-url", "tracker").stdout.strip() == f"{base}/oauth/callback/tracker"

    authorize = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "authorize", "tracker", "--no-browser", "--timeout", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert authorize.stdout is not None
        url = authorize.stdout.readline().strip()
        callback = oracle.login_and_consent(url)
        assert httpx.get(callback, timeout=10).status_code == 200
        out, err = authorize.communicate(timeout=30)
    finally:
        if authorize.poll() is None:
            authorize.kill()
    outputs.append(url + out + err)
    assert authorize.returncode == 0, err

    listing = json.loads(linkctl("list", "-o", "json").stdout)["links"]
    assert [(v["name"], v["status"], v["has_refresh_token"]) for v in listing] == [
        ("tracker", "healthy", True)
    ]

    first = linkctl("token", "tracker").stdout.strip()
    time.sleep(2.5)  # less than 58 s left of the 60 s token
    rotated = linkctl("token", "tracker", "--min-valid", "58").stdout.strip()
    assert first and rotated and first != rotated  # --min-valid above what is left forced a refresh
    too_long = linkctl("token", "tracker", "--min-valid", "999999", check=False)
    assert too_long.returncode == 8 and "tokens live 60 s" in too_long.stderr  # beyond the TTL: refused

    # A new scope: the plan and then list/show say a new consent is needed; the grant keeps working.
    tracker = links / "tracker.yaml"
    tracker.write_text(tracker.read_text().replace("api:read]", "api:read, api:write]"))
    planned = linkctl("plan", str(links)).stdout
    assert "needs re-authorization for new scopes: api:write" in planned
    change = json.loads(linkctl("plan", str(links), "-o", "json").stdout)["changes"][0]
    assert change["action"] == "update" and change["reauthorize_scopes"] == ["api:write"]
    linkctl("apply", str(links))
    view = json.loads(linkctl("show", "tracker", "-o", "json").stdout)
    assert view["status"] == "healthy" and view["reauthorize_scopes"] == ["api:write"]
    assert "needs re-authorization for new scopes: api:write" in linkctl("list").stdout
    assert "reauthorize scopes: api:write" in linkctl("show", "tracker").stdout
    time.sleep(2.5)
    still = linkctl("token", "tracker", "--min-valid", "58").stdout.strip()
    assert still and still != rotated  # refreshed with the grant consented before

    settings = Settings.from_env(isolated_env)
    with open_store(settings) as store:
        grant = store.get_grant("tracker", with_tokens=True)
        cached = store.get_provider_metadata(oracle.issuer)  # discovery is cached across processes
    assert cached is not None and cached[0]["issuer"] == oracle.issuer
    assert grant is not None and grant.refresh_token is not None
    refresh_token: Secret = grant.refresh_token
    assert introspect_active(oracle, registered, refresh_token)

    (links / "tracker.yaml").unlink()
    assert "orphan" in linkctl("plan", str(links)).stdout
    # The last link goes: only the Instance is left, so the deletion must be asked for explicitly.
    refused = linkctl("apply", str(links), "--prune", check=False)
    assert refused.returncode == 3
    assert "refusing to prune: the inputs declare no link" in refused.stderr
    plan = linkctl("plan", str(links), "--prune", "--allow-empty-prune").stdout
    assert "- delete tracker (custom)\n      revokes its tokens at the provider, then deletes it" in plan
    pruned = linkctl("apply", str(links), "--prune", "--allow-empty-prune")
    assert "revoked the tokens of deleted link tracker" in pruned.stderr
    assert not introspect_active(oracle, registered, refresh_token)
    assert json.loads(linkctl("list", "-o", "json").stdout)["links"] == []

    everything = "\n".join(outputs)
    for value in (secret, refresh_token.reveal()):
        assert value not in everything
    # Access tokens appear only as `linkctl token`'s own output, never elsewhere.
    others = "\n".join(o for o in outputs if o.strip() not in (first, rotated))
    assert first not in others and rotated not in others
