"""The pages in a real browser: Debian's chromium under Playwright, a real ``linkctl serve``, the oracle.

The seed product's order of work, end to end: links declared in git and applied; an
admin logs in with an admin API key, sees the list (the links needing attention first,
visibly marked), opens a link, copies its redirect URL with the copy button, presses
Authorize, signs in and consents on the oidc-provider oracle's own pages, and lands back
on the link page with status healthy; then presses Revoke, and the oracle says the
refresh token is dead. Screenshots of the list and the link page are saved
(``LINKCTL_SCREENSHOTS`` names the folder, e.g. ``docs/screenshots`` to refresh the
committed ones; otherwise the test's tmp_path).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.oracle import OidcServer
from tests.support.oracle_links import introspect_active, open_store, state_env
from tests.support.server import create_key, serve

LINKS = """\
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata: {{name: crm}}
spec:
  provider: custom
  issuer: {issuer}
  clientId: {client_id}
  clientAuth: client_secret_basic
  clientSecret: {{fromEnv: CRM_SECRET}}
  scopes: [openid, offline_access, api:read]
  authorizeParams: {{prompt: consent}}
---
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata: {{name: billing}}
spec:
  provider: custom
  authorizationEndpoint: https://billing.example/oauth/authorize
  tokenEndpoint: https://billing.example/oauth/token
  scopes: [invoices:read, offline_access]
"""


def _apply(env: dict[str, str], tmp: Path, base_url: str, oracle: OidcServer) -> Any:
    registered = oracle.register_client(redirect_uris=(f"{base_url}/oauth/callback/crm",))
    assert registered.client_secret is not None
    links = tmp / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(
        "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: acme}\n"
        f"spec:\n  baseUrl: {base_url}\n  allowInsecureLoopback: true\n"
    )
    (links / "links.yaml").write_text(LINKS.format(issuer=oracle.issuer, client_id=registered.client_id))
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "links"],  # relative: sources read links/...
        env={**env, "CRM_SECRET": registered.client_secret.reveal()},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr
    return registered


def test_log_in_authorize_at_the_provider_and_revoke(
    chromium: Any, oidc_server: OidcServer, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("LINKCTL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    env = state_env(tmp_path)
    key = create_key(env, "--admin", "--links", "*", "--name", "browser-test")
    with serve(env) as served:
        registered = _apply(env, tmp_path, served.base_url, oidc_server)
        context = chromium.new_context(viewport={"width": 1280, "height": 800})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.base_url)
        page = context.new_page()
        errors: list[str] = []
        # Errors of our pages only (the oracle's own pages load things from elsewhere).
        ours = served.base_url + "/"
        page.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and str(m.location.get("url", "")).startswith(ours)
                else None
            ),
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(15_000)
        try:
            # Not logged in: every page sends the browser to /login.
            page.goto(served.base_url + "/links/crm")
            assert page.url.startswith(served.base_url + "/login?next=")
            page.fill("#key", key)
            page.click("button[type=submit]")
            page.wait_for_url(served.base_url + "/links/crm")
            page.goto(served.base_url + "/")

            # The list: both links need attention; the one needing authorization comes first.
            rows = page.locator("#links tbody tr")
            assert rows.count() == 2
            assert rows.nth(0).get_attribute("data-link") == "crm"
            assert "needs authorization" in rows.nth(0).inner_text()
            assert "pending credentials" in rows.nth(1).inner_text()
            assert page.locator("#links tr.attention .flag").count() == 2
            first = rows.nth(0).inner_text()
            assert "links/links.yaml:1" in first and "managed in git" in first
            assert "2 need attention" in page.inner_text("#summary")

            # The link: redirect URL first, copied by its button.
            page.click("#links a:text-is('crm')")
            page.wait_for_url(served.base_url + "/links/crm")
            redirect = f"{served.base_url}/oauth/callback/crm"
            assert page.inner_text("#redirect-url") == redirect
            page.click("#copy-redirect")
            page.wait_for_selector("#copy-redirect[data-copied=yes]")
            assert page.evaluate("navigator.clipboard.readText()") == redirect

            # Authorize: the oracle's own sign-in and consent pages, then back to the link page.
            page.click("#authorize")
            page.wait_for_url(re.compile(re.escape(oidc_server.issuer) + r"/interaction/"))
            page.fill("input[name=login]", "alice")
            page.fill("input[name=password]", "any")
            page.click("button[type=submit]")
            page.wait_for_selector("button:has-text('Continue')")
            page.click("button:has-text('Continue')")
            page.wait_for_url(served.base_url + "/links/crm?done=authorized")
            assert page.inner_text("#status") == "healthy"
            assert "Authorized" in page.inner_text("#notice")
            assert "grant.authorized" in page.inner_text("#events")
            assert page.locator("#authorize").inner_text() == "Re-authorize"
            page.screenshot(path=str(shots / "link-page.png"), full_page=True)
            page.click("text=Application links >> nth=0")
            assert "healthy" in page.locator("#links tbody tr[data-link=crm]").inner_text()
            page.screenshot(path=str(shots / "links-list.png"), full_page=True)
            page.click("#links a:text-is('crm')")
            page.wait_for_url(served.base_url + "/links/crm")

            with open_store(env) as store:
                grant = store.get_grant("crm", with_tokens=True)
                assert grant is not None and grant.refresh_token is not None
                refresh_token = grant.refresh_token
            assert introspect_active(oidc_server, registered, refresh_token)

            # Revoke: through the keeper's lease path; the provider forgets the token.
            page.click("#revoke")
            page.wait_for_url(served.base_url + "/links/crm?done=revoked")
            assert page.inner_text("#status") == "needs authorization"
            assert not introspect_active(oidc_server, registered, refresh_token)
            page.goto(served.base_url + "/")
            assert "needs authorization" in page.locator("#links tbody tr").nth(0).inner_text()
            assert errors == [], errors  # no CSP violation, no script error
        finally:
            context.close()
