"""A real OAuth 2.0 / OIDC server (npm oidc-provider) for the integration tests.

:func:`start_oidc_server` starts ``tests/oracles/server.js`` with node on a free
loopback port and yields an :class:`OidcServer` (tests/integration/conftest.py wraps it in
the ``oidc_server`` and ``oracle`` fixtures):

- ``issuer``, ``port``, ``control`` (URLs);
- ``register_client(auth_method=..., grant_types=..., redirect_uris=..., scope=...)`` ->
  :class:`OracleClient` (RFC 7591 dynamic registration; the secret comes back as a ``Secret``);
- ``client_config(client, link=..., grant=..., scopes=..., authorize_params=...)`` -> a
  ``ClientConfig`` pointing at this server (endpoints declared, issuer set);
  ``register_machine_client()`` / ``machine_config(client)``: the same for the
  client-credentials grant;
- ``fault(kind, target="token", times=1, retry_after=None, delay_ms=None)`` arms a one-shot
  fault in front of an endpoint (kinds: unavailable, rate_limited, server_error_html, drop,
  drop_after, delay_after); ``reset()`` clears faults and logs;
- ``requests()`` (token-endpoint requests seen: grant_type, auth_method, client_id, status)
  and ``events()`` (grant errors with oidc-provider's real reason);
- ``login_and_consent(authorization_url, login="alice")`` drives the devInteractions login
  and consent forms and returns the final redirect URL (code, state, iss) without anything
  listening there; ``approve_device(user_code)`` / ``deny_device(user_code)`` do the same
  for the device flow.

``start_oidc_server(**env)`` is the context manager behind it, for tests that need other
settings (e.g. ``ORACLE_ACCESS_TOKEN_TTL="2"``). Needs ``node`` and
``tests/oracles/node_modules`` (``npm ci --prefix tests/oracles``): skipped locally, fails
under CI=true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html.parser
import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from reconciler.oauth.client import ClientConfig
from reconciler.secrets import Secret
from tests.conftest import ROOT, require, require_tool

ORACLES = ROOT / "tests" / "oracles"
DEFAULT_REDIRECT = "http://127.0.0.1:8765/callback"
DEFAULT_SCOPE = "openid offline_access api:read api:write"


@dataclasses.dataclass(frozen=True)
class OracleClient:
    """A client registered at the oracle; ``client_secret`` is None for public clients."""

    client_id: str
    client_secret: Secret | None
    auth_method: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    metadata: Mapping[str, Any]


class _Forms(html.parser.HTMLParser):
    """Collects <form> actions and their <input> fields (enough for devInteractions pages)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(
                {"action": values.get("action", ""), "method": values.get("method", "get"), "fields": {}}
            )
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1]["fields"][values["name"]] = values.get("value", "")


@dataclasses.dataclass
class OidcServer:
    """A running oidc-provider oracle (see the module docstring)."""

    issuer: str
    port: int
    process: subprocess.Popen[str]
    log_path: Path

    @property
    def control(self) -> str:
        """Base URL of the oracle's control endpoints."""
        return f"{self.issuer}/__oracle"

    @property
    def token_endpoint(self) -> str:
        """The token endpoint URL."""
        return f"{self.issuer}/token"

    def log(self) -> str:
        """The server's stderr so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")

    # -- clients ---------------------------------------------------------------------
    def register_client(
        self,
        *,
        auth_method: str = "client_secret_basic",
        grant_types: Sequence[str] = ("authorization_code", "refresh_token"),
        redirect_uris: Sequence[str] = (DEFAULT_REDIRECT,),
        scope: str = DEFAULT_SCOPE,
        application_type: str = "web",
        **extra: Any,
    ) -> OracleClient:
        """Register a client by RFC 7591 dynamic registration."""
        response_types = ["code"] if "authorization_code" in grant_types else []
        metadata = {
            "token_endpoint_auth_method": auth_method,
            "grant_types": list(grant_types),
            "response_types": response_types,
            "redirect_uris": list(redirect_uris) if response_types else [],
            "scope": scope,
            "application_type": application_type,
            **extra,
        }
        response = httpx.post(f"{self.issuer}/reg", json=metadata, timeout=10)
        assert response.status_code == 201, response.text
        data = response.json()
        secret = data.pop("client_secret", None)
        return OracleClient(
            client_id=data["client_id"],
            client_secret=Secret(secret) if secret else None,
            auth_method=auth_method,
            redirect_uris=tuple(redirect_uris),
            grant_types=tuple(grant_types),
            metadata={k: v for k, v in data.items() if "token" not in k},
        )

    def register_machine_client(self) -> OracleClient:
        """Register a client for the client-credentials grant only (scope ``api:read``, no redirect)."""
        return self.register_client(grant_types=("client_credentials",), redirect_uris=(), scope="api:read")

    def machine_config(self, client: OracleClient) -> ClientConfig:
        """A client-credentials ClientConfig for a client from :meth:`register_machine_client`."""
        return self.client_config(client, grant="client_credentials", scopes=("api:read",))

    def client_config(
        self,
        client: OracleClient,
        *,
        link: str = "oracle-link",
        grant: str = "authorization_code",
        scopes: Sequence[str] = ("openid", "offline_access", "api:read"),
        authorize_params: Mapping[str, str] | None = None,
        client_auth: str | None = None,
        redirect_uri: str | None = None,
        token_endpoint: str | None = None,
    ) -> ClientConfig:
        """A ClientConfig for ``client`` at this server (prompt=consent so refresh tokens come)."""
        return ClientConfig(
            link=link,
            provider="custom",
            client_id=client.client_id,
            client_secret=client.client_secret,
            client_auth=client_auth or client.auth_method,
            token_endpoint=token_endpoint or self.token_endpoint,
            authorization_endpoint=f"{self.issuer}/auth",
            revocation_endpoint=f"{self.issuer}/token/revocation",
            device_authorization_endpoint=f"{self.issuer}/device/auth",
            issuer=self.issuer,
            scopes=tuple(scopes),
            authorize_params=dict({"prompt": "consent"} if authorize_params is None else authorize_params),
            redirect_uri=redirect_uri or (client.redirect_uris[0] if client.redirect_uris else None),
            grant=grant,
        )

    # -- faults and logs -------------------------------------------------------------
    def fault(
        self,
        kind: str,
        *,
        target: str = "token",
        times: int = 1,
        retry_after: str | int | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """Arm a one-shot fault in front of an endpoint."""
        body: dict[str, Any] = {"kind": kind, "target": target, "times": times}
        if retry_after is not None:
            body["retryAfter"] = str(retry_after)
        if delay_ms is not None:
            body["delayMs"] = delay_ms
        response = httpx.post(f"{self.control}/fault", json=body, timeout=10)
        assert response.status_code == 200, response.text

    def reset(self) -> None:
        """Disarm faults and clear the request/event logs."""
        httpx.post(f"{self.control}/reset", json={}, timeout=10).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Token-endpoint requests seen since the last reset (no token values)."""
        data: list[dict[str, Any]] = httpx.get(f"{self.control}/requests", timeout=10).json()
        return data

    def events(self) -> list[dict[str, Any]]:
        """Grant errors with their real reasons since the last reset."""
        data: list[dict[str, Any]] = httpx.get(f"{self.control}/events", timeout=10).json()
        return data

    # -- the user's side ---------------------------------------------------------------
    def login_and_consent(self, authorization_url: str, *, login: str = "alice") -> str:
        """Log in and consent through devInteractions; return the redirect to the client."""
        with httpx.Client(timeout=10, follow_redirects=False) as browser:
            final = self._drive(browser, "GET", authorization_url, None, login=login, user_code=None)
        assert final is not None, "the provider never redirected back to the client"
        return final

    def approve_device(self, user_code: str, *, login: str = "alice") -> None:
        """Enter ``user_code`` at the verification page, log in and consent."""
        with httpx.Client(timeout=10, follow_redirects=False) as browser:
            self._drive(browser, "GET", f"{self.issuer}/device", None, login=login, user_code=user_code)

    def deny_device(self, user_code: str) -> None:
        """Enter ``user_code`` and press "Abort" on the confirmation page."""
        with httpx.Client(timeout=10, follow_redirects=False) as browser:
            page = browser.get(f"{self.issuer}/device")
            form = self._form(page.text)
            fields = {**form["fields"], "user_code": user_code}
            page = browser.post(urljoin(str(page.url), form["action"]), data=fields)
            confirm = self._form(page.text)
            fields = {**confirm["fields"], "abort": "yes"}
            fields.pop("confirm", None)
            browser.post(urljoin(str(page.url), confirm["action"]), data=fields)

    @staticmethod
    def _form(page: str) -> dict[str, Any]:
        parser = _Forms()
        parser.feed(page)
        forms = [f for f in parser.forms if f["method"].lower() == "post"]
        assert forms, f"no form on the page: {page[:300]}"
        return forms[0]

    def _drive(
        self,
        browser: httpx.Client,
        method: str,
        url: str,
        data: dict[str, str] | None,
        *,
        login: str,
        user_code: str | None,
    ) -> str | None:
        # Follow 303s by hand: interaction cookies are path-scoped and the last redirect
        # goes to the client's redirect_uri, where nothing listens.
        for _ in range(30):
            response = browser.request(method, url, data=data)
            if response.is_redirect:
                location = urljoin(url, response.headers["location"])
                if not location.startswith(self.issuer + "/"):
                    return location
                method, url, data = "GET", location, None
                continue
            assert response.status_code == 200, f"{response.status_code} at {url}: {response.text[:500]}"
            parser = _Forms()
            parser.feed(response.text)
            forms = [f for f in parser.forms if f["method"].lower() == "post"]
            if not forms:
                return None  # e.g. the device flow's success page
            form = forms[0]
            fields = dict(form["fields"])
            if fields.get("prompt") == "login":
                fields.update(login=login, password="any")
            if "user_code" in fields and user_code is not None and not fields["user_code"]:
                fields["user_code"] = user_code
            method, url, data = "POST", urljoin(url, form["action"]), fields
        raise AssertionError("too many interaction steps")


def _wait_for_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


@contextlib.contextmanager
def start_oidc_server(**env: str) -> Iterator[OidcServer]:
    """Start the oracle (extra ``ORACLE_*`` settings as keyword arguments); stop it afterwards."""
    node = require_tool("node")
    require(
        (ORACLES / "node_modules" / "oidc-provider").is_dir(),
        "tests/oracles/node_modules is missing: run `npm ci --prefix tests/oracles`",
    )
    with tempfile.NamedTemporaryFile("w+", prefix="oidc-oracle-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    # oidc-provider's in-memory LRU keeps 1,000 entries by default and then forgets the oldest
    # grants and consumed refresh tokens: a reused token it forgot looks like a plain
    # invalid_grant, not a reuse, and a long run loses live grants. Tests remember everything.
    env = {"ORACLE_STORAGE_SIZE": "1000000", **env}
    process_env = {**os.environ, "ORACLE_PORT": "0", "ORACLE_HOST": "127.0.0.1", **env}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [node, str(ORACLES / "server.js")],
            cwd=ORACLES,
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    try:
        line = _wait_for_line(process, 15)
        assert line, f"the oracle did not start: {log_path.read_text(errors='replace')}"
        info = json.loads(line)
        server = OidcServer(issuer=info["issuer"], port=info["port"], process=process, log_path=log_path)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (
                    httpx.get(f"{server.issuer}/.well-known/openid-configuration", timeout=2).status_code
                    == 200
                ):
                    break
            assert time.monotonic() < deadline, f"discovery never answered 200: {server.log()}"
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log_path.unlink(missing_ok=True)


def reset_around(server: OidcServer) -> Iterator[OidcServer]:
    """Yield ``server`` with faults and logs cleared before and after (the body of a fixture)."""
    server.reset()
    yield server
    server.reset()
